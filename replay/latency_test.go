package replay

import (
	"testing"
	"time"
)

func TestLatencyHistogram(t *testing.T) {
	var h latencyHist
	for _, d := range []time.Duration{100 * time.Microsecond, 500 * time.Microsecond, 3 * time.Millisecond, time.Minute} {
		h.observe(d)
	}
	s := h.snapshot()
	// 100 µs and 500 µs in the first bucket (≤ 0.5 ms), 3 ms in ≤ 5 ms,
	// a minute above every bound.
	want := map[int]uint64{0: 2, 3: 1, len(s.Bounds): 1}
	for i, c := range s.Counts {
		if c != want[i] {
			t.Errorf("bucket %d (≤ %v s): %d, want %d", i, append(s.Bounds, 0)[i], c, want[i])
		}
	}
	if s.Count != 4 || s.SumSeconds < 60.0036 || s.SumSeconds > 60.0037 {
		t.Errorf("count %d, sum %v", s.Count, s.SumSeconds)
	}
}
