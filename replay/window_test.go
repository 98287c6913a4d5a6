package replay_test

import (
	"context"
	"io"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/session"
	"github.com/stackcopy/stackcopy/transfer"
)

// memConn is a target in memory: it answers each write with the same
// number of bytes and closes after the client's FIN.
type memConn struct {
	mu     sync.Mutex
	cond   *sync.Cond
	owed   int
	closed bool // FIN or abort seen: Discard returns io.EOF once nothing is owed
}

func newMemConn() *memConn {
	c := &memConn{}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *memConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.owed += len(b)
	c.cond.Broadcast()
	c.mu.Unlock()
	return len(b), nil
}

func (c *memConn) Discard() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.owed == 0 && !c.closed {
		c.cond.Wait()
	}
	if n := c.owed; n > 0 {
		c.owed = 0
		return n, nil
	}
	return 0, io.EOF
}

func (c *memConn) end() {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
}

func (c *memConn) CloseWrite() error { c.end(); return nil }
func (c *memConn) Close() error      { c.end(); return nil }
func (c *memConn) Abort()            { c.end() }

// windowPeaks are the most goroutines, queued bytes and players ahead
// seen while feeding.
type windowPeaks struct {
	goroutines, ahead int
	bytes             int64
}

// windowRun feeds n sessions (open, 1 KiB, FIN) at --speed 0 as fast as
// the replayer takes them, with dials that take 200 µs, and returns the
// peaks seen while feeding, and the stats.
func windowRun(t *testing.T, n int, mod func(*replay.Config)) (peak windowPeaks, st replay.Stats) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	target := netip.MustParseAddrPort("127.0.0.1:80")
	tr, err := transfer.ParseTransfers("80-" + target.String())
	if err != nil {
		t.Fatal(err)
	}
	cfg := replay.DefaultConfig()
	cfg.Transfers = tr
	cfg.TurnWait = time.Second
	mod(&cfg)
	dial := func(ctx context.Context, _, _ netip.AddrPort) (replay.Conn, error) {
		time.Sleep(200 * time.Microsecond)
		return newMemConn(), ctx.Err()
	}
	r := replay.New(ctx, cfg, dial, nil)
	base := runtime.NumGoroutine()
	data := make([]byte, 1024)
	t0 := time.Unix(1700000000, 0)
	for i := range n {
		k := session.SessionKey{
			Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(10 + i%100)}), uint16(20000+i/100)),
			Server: netip.MustParseAddrPort("198.18.1.1:80"),
		}
		at := t0.Add(time.Duration(i) * time.Microsecond)
		r.Event(k, session.Event{Kind: session.EvOpen, Time: at})
		r.Event(k, session.Event{Kind: session.EvData, Time: at, Data: data})
		r.Event(k, session.Event{Kind: session.EvFin, Time: at})
		if i%64 == 0 {
			w := r.Window()
			peak.goroutines = max(peak.goroutines, runtime.NumGoroutine()-base)
			peak.bytes = max(peak.bytes, w.Bytes)
			peak.ahead = max(peak.ahead, w.Ahead)
		}
	}
	r.CloseInput()
	done := make(chan struct{})
	go func() { r.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("replay did not end within a minute")
	}
	return peak, r.Stats()
}

// TestWindowBoundsSessionsAhead: at --speed 0 the reader used to make a
// player (and its goroutine) for every session of the capture before
// the dials caught up: 100k sessions took 1.03 GB. With a window, at
// most Window players are ahead at once, and every session still
// completes. Each player has a session goroutine and, once dialed, a
// drain; a player leaves the window as it finishes, so the players that
// just left still have goroutines on their way out: up to 3×Window
// goroutines (a slack of 16 over 2×Window failed under load, with 147).
func TestWindowBoundsSessionsAhead(t *testing.T) {
	const n, window = 5000, 64
	unbounded, _ := windowRun(t, n, func(*replay.Config) {})
	peak, st := windowRun(t, n, func(c *replay.Config) { c.Window = window })
	t.Logf("goroutines beyond the start: %d without a window, %d with Window %d (at most %d players ahead)", unbounded.goroutines, peak.goroutines, window, peak.ahead)
	if st.Sessions != n || st.Completed != n {
		t.Fatalf("stats %+v: want %d sessions, all completed", st, n)
	}
	if peak.ahead > window {
		t.Errorf("%d players ahead at once with Window %d", peak.ahead, window)
	}
	if peak.goroutines > 3*window {
		t.Errorf("%d goroutines at once with Window %d: want at most %d", peak.goroutines, window, 3*window)
	}
	if unbounded.goroutines < 4*window {
		t.Logf("without a window only %d goroutines piled up: the dials kept up on this machine", unbounded.goroutines)
	}
}

// TestWindowBoundsBytes: the bytes queued across sessions stay within
// WindowBytes and what each session ahead may take before it waits (one
// event: a session's first bytes are always taken).
func TestWindowBoundsBytes(t *testing.T) {
	const n, window, maxBytes = 3000, 256, 32 << 10
	peak, st := windowRun(t, n, func(c *replay.Config) { c.Window, c.WindowBytes = window, maxBytes })
	if st.Completed != n {
		t.Fatalf("stats %+v: want all %d completed", st, n)
	}
	if peak.bytes > maxBytes+1024 {
		t.Errorf("%d bytes queued at once: want at most WindowBytes %d + one event", peak.bytes, maxBytes)
	}
}

// TestAdmitWaits: a capture file's -m makes the reader wait instead of
// shedding; a gate that never admits cannot stall it once nothing is
// ahead (only the reader could free memory then).
func TestAdmitWaits(t *testing.T) {
	var asked atomic.Int64
	until := time.Now().Add(100 * time.Millisecond)
	_, st := windowRun(t, 500, func(c *replay.Config) {
		c.Window, c.AdmitWaits = 64, true
		c.Admit = func() bool { asked.Add(1); return time.Now().After(until) }
	})
	if st.Shed != 0 || st.Completed != 500 {
		t.Errorf("stats %+v: want 0 shed, 500 completed", st)
	}
	_, st = windowRun(t, 50, func(c *replay.Config) {
		c.Window, c.AdmitWaits = 64, true
		c.Admit = func() bool { return false }
	})
	if st.Shed != 0 || st.Completed != 50 {
		t.Errorf("gate never admitting: stats %+v: want 0 shed, 50 completed", st)
	}
	_, st = windowRun(t, 50, func(c *replay.Config) { c.Admit = func() bool { return false } })
	if st.Shed != 50 {
		t.Errorf("live (no AdmitWaits): %d shed, want 50", st.Shed)
	}
}
