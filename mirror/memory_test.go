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

func TestTrimmer(t *testing.T) {
	var tr trimmer
	const big = trimMin + 10<<20
	steps := []struct {
		activity, held uint64
		want           bool
		why            string
	}{
		{1, big, false, "traffic moved"},
		{1, big, false, "quiet for one tick only"},
		{1, big, true, "quiet for two ticks, much held"},
		{1, big, false, "no new memory since the trim"}, // floor is set below
		{2, 2 * big, false, "traffic again"},
		{2, 2 * big, false, "one quiet tick"},
		{2, 2 * big, true, "quiet again, held grew by half"},
		{3, trimMin - 1, false, "traffic"},
		{3, trimMin - 1, false, "one quiet tick"},
		{3, trimMin - 1, false, "quiet, but too little held to be worth a GC"},
	}
	for i, s := range steps {
		if got := tr.tick(s.activity, s.held); got != s.want {
			t.Fatalf("step %d (%s): trim %v, want %v", i, s.why, got, s.want)
		}
		if s.want {
			tr.floor = s.held
		}
	}
	if tr.floor != 2*big {
		t.Errorf("floor %d", tr.floor)
	}
}
