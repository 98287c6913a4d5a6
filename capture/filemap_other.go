//go:build !linux

package capture

import "os"

// fileMap is Linux's mapped reading (filemap_linux.go); elsewhere files
// are read.
type fileMap struct{}

func mapFile(*os.File) *fileMap { return nil }

func (*fileMap) at(int64, int) ([]byte, int, error) { panic("capture: no mapped files on this system") }

func (*fileMap) skip(int64, int64) (int64, error) { panic("capture: no mapped files on this system") }

func (*fileMap) unmap() {}
