package replay

import (
	"fmt"
	"os"
	"sync/atomic"
)

// spillBudget is the disk space all sessions' spill files may use together.
// A live capture must never wait for one slow session: the kernel ring
// would overflow and every session would lose packets. So a session whose
// memory queue is full writes further bytes to its spill file, and only
// when the budget is spent is something given up (see Config.ShedWhenFull).
type spillBudget struct {
	dir  string
	max  int64
	used atomic.Int64 // bytes written and not yet read back
	peak atomic.Int64
	sum  atomic.Uint64 // bytes ever spilled
}

// take reserves n bytes, or reports that the budget is spent.
func (b *spillBudget) take(n int) bool {
	for {
		u := b.used.Load()
		if u+int64(n) > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+int64(n)) {
			b.sum.Add(uint64(n))
			for p := b.peak.Load(); u+int64(n) > p && !b.peak.CompareAndSwap(p, u+int64(n)); p = b.peak.Load() {
			}
			return true
		}
	}
}

func (b *spillBudget) give(n int64) { b.used.Add(-n) }

// spilled and highest report the bytes ever spilled and the most held at
// once; a nil budget (spilling off) reports 0.
func (b *spillBudget) spilled() uint64 {
	if b == nil {
		return 0
	}
	return b.sum.Load()
}

func (b *spillBudget) highest() int64 {
	if b == nil {
		return 0
	}
	return b.peak.Load()
}

// spillFile is one session's overflow: bytes appended by the capture side
// and read back in the same order by the session. Items in the session
// queue carry their offset, so reads need no cursor and the file can be
// rewound whenever nothing unread is left in it.
type spillFile struct {
	f      *os.File
	end    int64 // next write offset
	unread int64 // bytes written and not yet read back
}

// openSpill creates an unlinked temporary file: nothing is left behind on
// disk when stackcopy dies, however it dies.
func openSpill(dir string) (*spillFile, error) {
	f, err := os.CreateTemp(dir, "stackcopy-spill-*")
	if err != nil {
		return nil, fmt.Errorf("spill file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("spill file: %w", err)
	}
	return &spillFile{f: f}, nil
}

// write appends p and returns its offset.
func (sf *spillFile) write(p []byte) (int64, error) {
	off := sf.end
	if _, err := sf.f.WriteAt(p, off); err != nil {
		return 0, fmt.Errorf("spill file: %w", err)
	}
	sf.end += int64(len(p))
	sf.unread += int64(len(p))
	return off, nil
}

// read returns n bytes written at off. It may run concurrently with write:
// the ranges never overlap because the file is only rewound when nothing
// unread is left (see consumed).
func (sf *spillFile) read(off int64, n int) ([]byte, error) {
	p := make([]byte, n)
	if _, err := sf.f.ReadAt(p, off); err != nil {
		return nil, fmt.Errorf("spill file: reading %d bytes at %d: %w", n, off, err)
	}
	return p, nil
}

// consumed marks n bytes read back; with nothing unread the file is
// rewound and truncated, so a long session that falls behind now and then
// does not grow its file forever.
func (sf *spillFile) consumed(n int) {
	sf.unread -= int64(n)
	if sf.unread == 0 && sf.end > 0 {
		sf.end = 0
		// A failed truncate only keeps disk blocks until the session ends.
		_ = sf.f.Truncate(0)
	}
}

func (sf *spillFile) close() { sf.f.Close() }
