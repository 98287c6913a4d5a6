package capture

// Source is where segments come from: a capture file (FileSource) or live
// interfaces (LiveSource). The engine's one read loop (mirror) reads
// either through it.
//
// Next returns the next IPv4 TCP segment, io.EOF at the end of a file, or
// the error that stopped the source (sticky). Next is for one goroutine.
// A source whose Next can block for good (live capture) must let Close,
// called from another goroutine, end a blocked Next with an error wrapping
// net.ErrClosed; a file's Next never blocks for long, and its owner closes
// it only after the last Next.
type Source interface {
	Next() (Segment, error)
	Close() error
	// Counts returns the counters so far; safe to call from another
	// goroutine than Next's for a live source.
	Counts() Counts
}

// Counts is what every source counts: the packets it read, by kind, and
// the packets lost before it could read them.
type Counts struct {
	SourceStats
	// Drops are packets that passed the kernel filter but were lost
	// because the ring was full (live); a file loses none.
	Drops uint64
}

var _ Source = (*FileSource)(nil)

// Counts implements Source.
func (s *FileSource) Counts() Counts { return Counts{SourceStats: s.stats} }
