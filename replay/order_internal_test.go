package replay

import (
	"context"
	"testing"
	"time"
)

// TestOrderLedger: requests done out of order, by every copy, before or
// after production answered them; low moves only over an unbroken run.
func TestOrderLedger(t *testing.T) {
	o := newOrder()
	a, b, c := o.request(2), o.request(1), o.request(1)
	o.answered(a) // 1
	o.answered(b) // 2
	o.complete(c) // done before production answered it
	o.answered(c) // 3
	o.complete(b)
	if o.low != 0 || len(o.done) != 2 {
		t.Fatalf("low %d, done %v: want 0 and {2, 3} while 1 waits", o.low, o.done)
	}
	o.complete(a)
	if o.low != 0 {
		t.Fatalf("low %d after one of a's two copies, want 0", o.low)
	}
	o.complete(a)
	if o.low != 3 || len(o.done) != 0 {
		t.Fatalf("low %d, done %v: want 3, {}", o.low, o.done)
	}
	if held, expired := o.await(context.Background(), 3, time.Hour); held || expired {
		t.Errorf("await of done requests: held %v, expired %v", held, expired)
	}
	o.complete(nil) // no request: nothing
}

// TestOrderAwait: a wait ends when the request is done, gives up after
// its bound (and then no later wait is held by that request), or ends with
// its context.
func TestOrderAwait(t *testing.T) {
	o := newOrder()
	stuck, later := o.request(1), o.request(1)
	o.answered(stuck)
	o.answered(later)
	go func() {
		time.Sleep(20 * time.Millisecond)
		o.complete(later)
	}()
	start := time.Now()
	held, expired := o.await(context.Background(), 2, 100*time.Millisecond)
	if !held || !expired || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("held %v, expired %v after %v: want a wait that gives up after 100ms", held, expired, time.Since(start))
	}
	if held, _ := o.await(context.Background(), 2, time.Hour); held {
		t.Error("a request given up on still holds the next wait")
	}
	o.complete(stuck) // late: a no-op
	if o.low != 2 || len(o.done) != 0 {
		t.Errorf("low %d, done %v: want 2, {}", o.low, o.done)
	}

	next := o.request(1)
	o.answered(next)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if held, expired := o.await(ctx, 3, time.Hour); !held || expired {
		t.Errorf("cancelled wait: held %v, expired %v; want held, not expired", held, expired)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		o.complete(next)
	}()
	if held, expired := o.await(context.Background(), 3, time.Hour); !held || expired || o.low != 3 {
		t.Errorf("wait for a request done meanwhile: held %v, expired %v, low %d", held, expired, o.low)
	}
}

// TestOrderDoneBounded: behind a request that is never done, the numbers
// done after it are held only up to orderDoneCap; then low skips it.
func TestOrderDoneBounded(t *testing.T) {
	o := newOrder()
	stuck := o.request(1)
	o.answered(stuck)
	for range orderDoneCap + 1 {
		r := o.request(1)
		o.answered(r)
		o.complete(r)
	}
	if o.low != orderDoneCap+2 || len(o.done) != 0 {
		t.Errorf("low %d with %d done held: want %d, 0 once the cap was passed", o.low, len(o.done), orderDoneCap+2)
	}
}
