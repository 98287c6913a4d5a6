package replay_test

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/transfer"
)

// quietConn takes every write and sends nothing until the client's FIN or
// RST, after which the target is gone. It says when it has something to
// read, as the netstack's connections do, so no goroutine waits on it.
type quietConn struct {
	mu     sync.Mutex
	notify func()
	ended  bool
}

func (c *quietConn) Write(b []byte) (int, error) { return len(b), nil }
func (c *quietConn) Close() error                { return nil }
func (c *quietConn) Discard() (int, error) {
	return 0, errors.New("quietConn: drained on demand only")
}
func (c *quietConn) CloseWrite() error { c.end(); return nil }
func (c *quietConn) Abort()            { c.end() }

func (c *quietConn) end() {
	c.mu.Lock()
	c.ended = true
	f := c.notify
	c.mu.Unlock()
	if f != nil {
		f()
	}
}

func (c *quietConn) TryDiscardTo(io.Writer) (int, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return 0, false, io.EOF
	}
	return 0, true, nil
}

func (c *quietConn) OnReadable(f func()) func() {
	c.mu.Lock()
	c.notify = f
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.notify = nil
		c.mu.Unlock()
	}
}

func (c *quietConn) Readable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ended
}

// TestIdleSessionsHoldNoGoroutine: a session waiting for its capture's next
// event parks without a goroutine (10,000 idle sessions would otherwise
// hold 10,000 goroutine stacks); the end of the input wakes every one, and
// each ends completed.
func TestIdleSessionsHoldNoGoroutine(t *testing.T) {
	const n = 500
	ts, err := transfer.ParseTransfers("80-127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	cfg := replay.DefaultConfig()
	cfg.Transfers = ts
	cfg.TurnWait = 50 * time.Millisecond
	cfg.Idle = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := replay.New(ctx, cfg, func(context.Context, netip.AddrPort, netip.AddrPort) (replay.Conn, error) {
		return &quietConn{}, nil
	}, nil)
	// After New: its workers (workers.go) are the replayer's, not the
	// sessions'.
	before := runtime.NumGoroutine()
	for i := range n {
		feed(r, key(i), open(), data("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	}
	waitFor(t, "every session to send its request", func() bool { return r.Stats().BytesSent == n*27 })
	waitFor(t, "the idle sessions to park", func() bool { return runtime.NumGoroutine()-before < 10 })
	r.CloseInput()
	if !waitReplay(r, bound) {
		t.Fatalf("sessions still running %v after the input ended; stats %+v", bound, r.Stats())
	}
	if st := r.Stats(); st.Sessions != n || st.Completed != n {
		t.Fatalf("stats %+v: want %d sessions, all completed", st, n)
	}
}
