package replay

import (
	"sync/atomic"
	"time"
)

// turnBounds are the upper bounds of the turn latency histogram's
// buckets: from half a millisecond (a target on the same switch) to ten
// seconds (past any --turn-wait worth setting). A read-only table.
var turnBounds = [...]time.Duration{
	500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
	5 * time.Second, 10 * time.Second,
}

// Histogram is a snapshot of a latency histogram: Counts[i] counts the
// observations at most Bounds[i] seconds and above the bound before
// (not cumulative); the last count is those above every bound.
type Histogram struct {
	Bounds     []float64 `json:"bounds_seconds"`
	Counts     []uint64  `json:"counts"`
	Count      uint64    `json:"count"`
	SumSeconds float64   `json:"sum_seconds"`
}

// latencyHist counts observations into turnBounds' buckets with atomic
// adds: every answered turn of every session lands here, from many
// goroutines, and a scrape reads it without stopping them.
type latencyHist struct {
	counts [len(turnBounds) + 1]atomic.Uint64
	sumNs  atomic.Int64
}

func (h *latencyHist) observe(d time.Duration) {
	i := 0
	for i < len(turnBounds) && d > turnBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(int64(d))
}

func (h *latencyHist) snapshot() Histogram {
	s := Histogram{Bounds: make([]float64, len(turnBounds)), Counts: make([]uint64, len(h.counts))}
	for i, b := range turnBounds {
		s.Bounds[i] = b.Seconds()
	}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
		s.Count += s.Counts[i]
	}
	s.SumSeconds = time.Duration(h.sumNs.Load()).Seconds()
	return s
}
