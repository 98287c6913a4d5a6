// Package cpuprof writes a CPU profile of a whole run to a file, for the
// commands' --cpuprofile flag (make bench splits stackcopy's by stage).
package cpuprof

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// Start begins profiling into path; stop ends it and closes the file.
func Start(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		return nil
	}, nil
}
