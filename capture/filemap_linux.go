package capture

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// mapWindow is how much of a capture file is mapped at once. Records are
// at most maxPacket (+ a pcapng block's framing), so a window always holds
// a whole one; the window is what a counting pass adds to the resident
// set while it runs.
const mapWindow = 4 << 20

// fileMap reads a regular file through a sliding read-only mapping. It
// serves the counting pass (FileSource.LengthsOnly), which looks only at
// each record's headers: a mapping lets it skip a large record's payload
// without the kernel copying it, a fault per record instead of 64 KiB
// copied. Replay itself reads (FileSource.take): it copies every payload
// anyway, and on a virtual machine mapping a page costs more than copying
// it. Nothing handed out of a FileSource points into the mapping, so the
// mapping can move and be unmapped at any time.
//
// A file that shrinks under a mapping faults (SIGBUS) when the lost pages
// are touched; FileSource.Next reads under debug.SetPanicOnFault and turns
// that into an error.
type fileMap struct {
	f    *os.File
	size int64  // the file's size as last seen
	base int64  // file offset of win[0], page aligned
	win  []byte // the mapping; nil: none yet
}

// mapFile maps f if it is a regular file the kernel can map; nil
// otherwise (pipes, character devices, special file systems), and the
// caller reads instead.
func mapFile(f *os.File) *fileMap {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
		return nil
	}
	m := &fileMap{f: f, size: fi.Size()}
	if m.remap(0, 1) != nil {
		return nil
	}
	return m
}

// at returns the n bytes at off, valid until the next call. When the
// file ends first it returns how many bytes there were, and io.EOF (none)
// or io.ErrUnexpectedEOF.
func (m *fileMap) at(off int64, n int) ([]byte, int, error) {
	end := off + int64(n)
	if short, err := m.skip(off, int64(n)); err != nil {
		if short == 0 && err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		return nil, int(short), err
	}
	if off < m.base || end > m.base+int64(len(m.win)) {
		if err := m.remap(off, n); err != nil {
			return nil, 0, err
		}
	}
	return m.win[off-m.base : end-m.base], 0, nil
}

// skip checks that n bytes follow off, like at without touching them.
func (m *fileMap) skip(off, n int64) (short int64, err error) {
	if off+n <= m.size {
		return 0, nil
	}
	// Pick up a file that grew since it was opened (a capture still
	// being written), as reading it would.
	fi, err := m.f.Stat()
	if err != nil {
		return 0, err
	}
	m.size = fi.Size()
	if off+n > m.size {
		return max(m.size-off, 0), io.ErrUnexpectedEOF
	}
	return 0, nil
}

func (m *fileMap) remap(off int64, n int) error {
	m.unmap()
	base := off &^ int64(os.Getpagesize()-1)
	length := min(max(mapWindow, off+int64(n)-base), m.size-base)
	win, err := unix.Mmap(int(m.f.Fd()), base, int(length), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	m.win, m.base = win, base
	return nil
}

func (m *fileMap) unmap() {
	if m.win != nil {
		_ = unix.Munmap(m.win)
		m.win = nil
	}
}
