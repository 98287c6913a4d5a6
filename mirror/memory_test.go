package mirror

import (
	"testing"
	"time"
)

// TestMemoryGateCountsYoungSessions: live, sessions admitted in a burst
// show in RSS only later. The gate used to compare the last RSS sample
// (every 100 ms) plus one reserve with the limit, so a burst admitted
// thousands between two samples (-m 300 peaked at 542 MB). Now each
// session admitted in the last 250 ms counts sessionCost, so the burst
// stops before what it will grow into crosses the limit.
func TestMemoryGateCountsYoungSessions(t *testing.T) {
	const (
		rss     = 100 << 20
		reserve = 4 << 20
		limit   = 200 << 20
	)
	g := newMemoryGate(limit, reserve, func() uint64 { return rss })
	n := 0
	for g.admit() {
		n++
		if n > 1e6 {
			t.Fatal("the gate never refused")
		}
	}
	want := (limit - rss - reserve - sessionCost) / sessionCost
	if n < want || n > want+1 {
		t.Errorf("admitted %d sessions in a burst, want %d: what they grow into must fit under the limit", n, want)
	}
	if projected := uint64(rss + reserve + n*sessionCost); projected > limit {
		t.Errorf("projected %d MiB over the %d MiB limit", projected>>20, limit>>20)
	}
	// Once they had time to show in RSS (which here did not grow), room
	// is back.
	time.Sleep(memoryYoung + 2*memoryYoungBucketDur)
	if !g.admit() {
		t.Error("refused after the young sessions aged")
	}
}

// TestMemoryGateOverLimit refuses while RSS itself is over.
func TestMemoryGateOverLimit(t *testing.T) {
	g := newMemoryGate(100<<20, 0, func() uint64 { return 120 << 20 })
	if g.admit() {
		t.Error("admitted over the limit")
	}
}
