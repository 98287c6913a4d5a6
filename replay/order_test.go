package replay_test

import (
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/replay"
)

// TestOpenOrder: production answered session A's request before session B
// opened; the target answers A's request 400 ms late. Paced, B's dial
// waits for the target's answer to A (for at most TurnWait); with NoOrder,
// or when TurnWait runs out first, B opens at its captured time, before it.
func TestOpenOrder(t *testing.T) {
	t.Parallel()
	const late = 400 * time.Millisecond
	for _, tc := range []struct {
		name             string
		noOrder          bool
		turnWait         time.Duration
		ordered          bool
		held, unordered  uint64
		minOpen, maxOpen time.Duration // B's accept after A's request arrived
	}{
		{name: "ordered", turnWait: 5 * time.Second, ordered: true, held: 1, minOpen: late},
		{name: "NoOrder", noOrder: true, turnWait: 5 * time.Second, maxOpen: late},
		{name: "TurnWait runs out", turnWait: 150 * time.Millisecond, held: 1, unordered: 1, minOpen: 150 * time.Millisecond, maxOpen: late},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, serverOpts{answer: 10, delay: late}, nil, func(c *replay.Config) {
				c.Speed = 1
				c.NoOrder = tc.noOrder
				c.TurnWait = tc.turnWait
			})
			ra, rb, st := replayAB(t, h, false)
			expectStats(t, st, map[string]uint64{"Sessions": 2, "Completed": 2, "OpensHeld": tc.held, "OpensUnordered": tc.unordered})
			// B's first byte follows its dial at once (its turn is due).
			opened := rb.arrival(t, 0).Sub(ra.arrival(t, 0))
			if tc.ordered && rb.arrival(t, 0).Before(ra.answers[0]) {
				t.Errorf("B's request arrived %v before the target's answer to A", ra.answers[0].Sub(rb.arrival(t, 0)))
			}
			if opened < tc.minOpen || (tc.maxOpen > 0 && opened >= tc.maxOpen) {
				t.Errorf("B's request arrived %v after A's, want in [%v, %v)", opened, tc.minOpen, tc.maxOpen)
			}
		})
	}
}

// TestRequestsNotHeld: session B was open before production answered A's
// request, and sent its own request after that answer. B's request is not
// held for the target's late answer to A: only opens wait (order.go),
// since a session inside a transaction that waited for another's answer
// could wait for its own lock.
func TestRequestsNotHeld(t *testing.T) {
	t.Parallel()
	const late = 400 * time.Millisecond
	h := newHarness(t, serverOpts{answer: 10, delay: late}, nil, func(c *replay.Config) { c.Speed = 1 })
	ra, rb, st := replayAB(t, h, true)
	expectStats(t, st, map[string]uint64{"Sessions": 2, "Completed": 2, "OpensHeld": 0, "OpensUnordered": 0})
	if got := rb.arrival(t, 0).Sub(ra.arrival(t, 0)); got >= late {
		t.Errorf("B's request arrived %v after A's: held for the target's answer to A", got)
	}
}

// replayAB replays two sessions: A's request, which production answered
// at 5 ms; B's, at 50 ms, in a session B opened at 50 ms or (bFirst)
// before A. It returns what the server saw of A and of B, and the stats.
func replayAB(t *testing.T, h *harness, bFirst bool) (ra, rb record, st replay.Stats) {
	t.Helper()
	a, b := key(1), key(2)
	if bFirst {
		h.r.Event(b, at(open(), 0))
	}
	h.r.Event(a, at(open(), 0))
	h.r.Event(a, at(data("a\n"), 0))
	h.r.Event(a, at(srvData("0123456789"), 5*time.Millisecond))
	if !bFirst {
		h.r.Event(b, at(open(), 50*time.Millisecond))
	}
	h.r.Event(b, at(data("b\n"), 50*time.Millisecond))
	h.r.Event(b, at(turn(10), 60*time.Millisecond))
	h.r.Event(b, at(fin(), 60*time.Millisecond))
	h.r.Event(a, at(turn(10), 900*time.Millisecond))
	h.r.Event(a, at(fin(), 900*time.Millisecond))
	recs := h.srv.waitConns(t, 2)
	h.r.CloseInput()
	st = h.wait(t)
	ra, rb = recs[0], recs[1]
	if string(ra.data) != "a\n" {
		ra, rb = rb, ra
	}
	if string(ra.data) != "a\n" || string(rb.data) != "b\n" || len(ra.answers) != 1 {
		t.Fatalf("server saw %q (%d answers) and %q", ra.data, len(ra.answers), rb.data)
	}
	return ra, rb, st
}
