package replay

import (
	"testing"

	"github.com/stackcopy/stackcopy/session"
)

// TestQueueArraysReused: a player that parks gives its queue's array back
// (cleared), the next player to wake takes that same array instead of
// allocating one, an array that grew is tracked from its new head, and
// the free list keeps at most queueArraysKept arrays.
func TestQueueArraysReused(t *testing.T) {
	r := &Replayer{}
	r.queues.free = make(chan []queued, queueArraysKept)
	item := queued{ev: session.Event{Kind: session.EvData, Data: []byte("GET / HTTP/1.1\r\n\r\n")}}
	pop := func(s *player) {
		s.q[0] = queued{}
		s.q = s.q[1:]
	}

	a := &player{r: r}
	a.enqueueLocked(item)
	if len(a.q) != 1 || a.qa == nil {
		t.Fatalf("after one event: queue %d long, head %v; want 1 and an array", len(a.q), a.qa)
	}
	first := &a.q[0]
	pop(a)
	a.enqueueLocked(item) // empty at its array's end: starts at the head again
	if &a.q[0] != first {
		t.Errorf("an emptied queue took a new array instead of its own")
	}
	pop(a)
	a.releaseQueueLocked() // parks
	if a.q != nil || a.qa != nil || len(r.queues.free) != 1 {
		t.Fatalf("a parked player holds q %v, head %v; %d arrays free: want none held, one free", a.q, a.qa, len(r.queues.free))
	}

	b := &player{r: r}
	b.enqueueLocked(item)
	if &b.q[0] != first {
		t.Errorf("a waking player allocated an array with one free")
	}
	b.enqueueLocked(item) // grows: the array is the new one's head
	b.enqueueLocked(item)
	if cap(b.qa) != cap(b.q) || &b.qa[:1][0] != &b.q[0] {
		t.Errorf("after growing, the head (cap %d) is not the queue's array (cap %d)", cap(b.qa), cap(b.q))
	}
	b.releaseQueueLocked()
	got := <-r.queues.free
	for i, q := range got[:cap(got)] {
		if q.ev.Data != nil {
			t.Fatalf("a freed array still holds element %d's bytes", i)
		}
	}

	for range queueArraysKept + 10 {
		r.queues.put(make([]queued, 0, 1))
	}
	if n := len(r.queues.free); n != queueArraysKept {
		t.Errorf("%d arrays kept, want at most %d", n, queueArraysKept)
	}
}
