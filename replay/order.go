package replay

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Sessions are replayed independently, each at its captured pace. But
// production's sessions were not independent: a client that opened a
// connection after another connection's answer may depend on what that
// answer's request did on the server (mariadb-slap's workers log in to
// the schema its control connection created; a browser fetches with the
// cookie a login answer set). When the target answers later than
// production did, a session opened at its captured time would overtake
// the request it depended on.
//
// order keeps that happens-before for opens: a session's dial waits until
// the target has begun to answer every request production answered before
// the SYN, for at most TurnWait. Requests are numbered in the order
// production answered them, as the capture reader sees the answers; a new
// session waits until every number up to the last one assigned before its
// SYN is done. A session that is not open holds nothing on the target
// (no lock, no transaction), so its wait cannot hold up what it waits for.
//
// Requests of open sessions do not wait: two ways were tried and both
// deadlocked a replay of pgbench's transactions (see ARCHITECTURE.md).
//
// A request is done, for one copy of its session, when the target's first
// answer bytes after it arrive, or when that copy will never get one (it
// ended, was shed, went on to its next request); for all copies together
// when each is done.
type order struct {
	mu       sync.Mutex
	assigned uint64              // the last number given to an answered request
	low      uint64              // every number ≤ low is done
	done     map[uint64]struct{} // numbers above low that are done
	wake     chan struct{}       // closed when low moves; nil while no one waits
}

// orderDoneCap bounds the numbers held done above a request that stays
// unanswered (a session idle after a turn its target never answered): past
// it, low skips to the oldest done one, so memory stays bounded and later
// opens stop waiting for the stuck request.
const orderDoneCap = 1 << 16

// orderRef is one captured request, shared by its session's copies.
type orderRef struct {
	left atomic.Int32 // copies not done with it
	seq  uint64       // under order.mu: 0 until production answered it
}

func newOrder() *order { return &order{done: make(map[uint64]struct{})} }

// request is a new captured request for a session replayed n times.
func (o *order) request(n int) *orderRef {
	r := new(orderRef)
	r.left.Store(int32(n))
	return r
}

// answered numbers a request production answered: the capture reader saw
// its first answer bytes.
func (o *order) answered(r *orderRef) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.assigned++
	r.seq = o.assigned
	if r.left.Load() == 0 {
		// Every copy was done before production answered. complete may
		// mark it too, once it has the lock: marking twice is harmless.
		o.doneLocked(r.seq)
	}
}

// last is the number of the last request production answered so far: a
// session opened now waits for it and every one before.
func (o *order) last() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.assigned
}

// complete says one copy is done with r; nil is no request.
func (o *order) complete(r *orderRef) {
	if r == nil || r.left.Add(-1) != 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if r.seq != 0 {
		o.doneLocked(r.seq)
	}
}

// doneLocked marks seq done. In order (the usual case) it moves low
// without looking at the others.
func (o *order) doneLocked(seq uint64) {
	switch {
	case seq <= o.low:
		return // skipped by a wait that gave up, or marked already
	case seq == o.low+1:
		o.low = seq
	default:
		o.done[seq] = struct{}{}
		if len(o.done) <= orderDoneCap {
			return
		}
		// Past the cap: what holds low back is skipped, up to the oldest
		// number done.
		oldest := seq
		for k := range o.done {
			oldest = min(oldest, k)
		}
		o.low = oldest - 1
	}
	o.walkLocked()
}

// skipLocked counts every number up to to as done: a wait gave up on
// them.
func (o *order) skipLocked(to uint64) {
	if to <= o.low {
		return
	}
	o.low = to
	for k := range o.done {
		if k <= to {
			delete(o.done, k)
		}
	}
	o.walkLocked()
}

// walkLocked moves low on over the done numbers that follow it, and wakes
// the waiters.
func (o *order) walkLocked() {
	for {
		if _, ok := o.done[o.low+1]; !ok {
			break
		}
		delete(o.done, o.low+1)
		o.low++
	}
	if o.wake != nil {
		close(o.wake)
		o.wake = nil
	}
}

// await waits until every request numbered up to seq is done, for at most
// bound. held says it had to wait; expired that it gave up, and then the
// requests it waited for no longer hold anyone back.
func (o *order) await(ctx context.Context, seq uint64, bound time.Duration) (held, expired bool) {
	var timer *time.Timer
	for {
		o.mu.Lock()
		if o.low >= seq {
			o.mu.Unlock()
			if timer != nil {
				timer.Stop()
			}
			return held, false
		}
		if o.wake == nil {
			o.wake = make(chan struct{})
		}
		w := o.wake
		o.mu.Unlock()
		if timer == nil {
			held = true
			timer = time.NewTimer(bound)
		}
		select {
		case <-w:
		case <-timer.C:
			o.mu.Lock()
			o.skipLocked(seq)
			o.mu.Unlock()
			return true, true
		case <-ctx.Done():
			timer.Stop()
			return true, false
		}
	}
}
