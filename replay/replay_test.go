package replay_test

// These tests replay session events through real kernel TCP on 127.0.0.1:
// the DialFunc ignores the forged source address (recording it) and dials
// small recording servers. Assertions are on bytes, counters and the order
// of server-side facts; where timing is the point the bounds are generous.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/session"
	"github.com/stackcopy/stackcopy/transfer"
)

const (
	// bound is how long a test waits for something that should happen
	// soon; it only costs time when a test fails.
	bound = 15 * time.Second
	// promptly bounds how long ending everything may take after a cancel.
	promptly = 3 * time.Second
)

var (
	errPortInUse = fmt.Errorf("test: %w", replay.ErrPortInUse)
	errReset     = fmt.Errorf("test: %w", replay.ErrReset)
	errRefused   = fmt.Errorf("test: %w", replay.ErrRefused)
	errTimeout   = fmt.Errorf("test: %w", replay.ErrTimeout)
)

// ---------------------------------------------------------------------------
// Recording target server.

// serverOpts says how a test server behaves on each connection. Requests
// are '\n'-terminated lines unless raw.
type serverOpts struct {
	answer     int           // bytes answered per request line; 0: never answers
	delay      time.Duration // before each answer
	greet      int           // bytes of greeting sent first (server-first protocols)
	greetDelay time.Duration
	parts      int           // each answer is written in this many parts (default 1)
	partDelay  time.Duration // between the parts
	resetAfter int           // reset (SO_LINGER 0 + close) after this many request lines
	resetDelay time.Duration // between reading that line and the reset
	raw        bool          // no line parsing, never answers
	gate       chan struct{} // if set, reading starts only once it is closed
	slowReads  int           // the first reads are small and slow
	rcvBuf     int           // SO_RCVBUF of accepted connections
}

// How a server connection ended, as the server saw it.
const (
	endFIN         = "fin"          // read returned io.EOF
	endRST         = "rst"          // read returned ECONNRESET
	endServerReset = "server-reset" // the server reset it (resetAfter)
	endOpen        = ""             // not ended (yet)
	endErrPrefix   = "error: "      // anything else
	answerByte     = 'a'            // answers are runs of it
	greetByte      = 'g'            // greetings are runs of it
	slowReadSize   = 4 << 10        // size of a slow read
	slowReadPause  = 5 * time.Millisecond
	serverReadSize = 64 << 10
)

type server struct {
	opts serverOpts
	ln   net.Listener
	addr netip.AddrPort
	quit chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  []*sconn
}

type chunk struct {
	at  time.Time
	off int
	n   int
}

type sconn struct {
	srv      *server
	c        *net.TCPConn
	lines    chan struct{}
	readDone chan struct{}
	done     chan struct{} // reader and answerer finished

	mu      sync.Mutex
	data    []byte
	chunks  []chunk
	answers []time.Time // when the write of each answer's last part began
	greetAt time.Time   // when the greeting's write began
	end     string
	endAt   time.Time
}

// record is a snapshot of what a server connection saw.
type record struct {
	data    []byte
	chunks  []chunk
	answers []time.Time
	greetAt time.Time
	end     string
	endAt   time.Time
}

func newServer(t *testing.T, o serverOpts) *server {
	t.Helper()
	var lc net.ListenConfig
	if o.rcvBuf > 0 {
		lc.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, o.rcvBuf)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{opts: o, ln: ln, addr: ln.Addr().(*net.TCPAddr).AddrPort(), quit: make(chan struct{})}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		s.close()
		if !waitChan(waitGroupDone(&s.wg), bound) {
			t.Errorf("server goroutines still running %v after close", bound)
		}
	})
	return s
}

func (s *server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		sc := &sconn{srv: s, c: c.(*net.TCPConn), lines: make(chan struct{}, 1<<16),
			readDone: make(chan struct{}), done: make(chan struct{})}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns = append(s.conns, sc)
		s.wg.Add(2)
		s.mu.Unlock()
		go sc.read()
		go sc.answer()
	}
}

// close stops accepting and resets every connection, unblocking replayer
// writes to a server that does not read.
func (s *server) close() {
	s.once.Do(func() {
		close(s.quit)
		s.ln.Close()
		s.mu.Lock()
		s.closed = true
		conns := slices.Clone(s.conns)
		s.mu.Unlock()
		for _, sc := range conns {
			sc.c.SetLinger(0)
			sc.c.Close()
		}
	})
}

func (sc *sconn) setEnd(end string, at time.Time) {
	sc.mu.Lock()
	sc.end, sc.endAt = end, at
	sc.mu.Unlock()
}

func (sc *sconn) read() {
	defer sc.srv.wg.Done()
	defer close(sc.readDone)
	defer close(sc.lines)
	o := &sc.srv.opts
	if o.gate != nil {
		select {
		case <-o.gate:
		case <-sc.srv.quit:
		}
	}
	buf := make([]byte, serverReadSize)
	nreq := 0
	for reads := 0; ; reads++ {
		b := buf
		if reads < o.slowReads {
			b = buf[:slowReadSize]
			time.Sleep(slowReadPause)
		}
		n, err := sc.c.Read(b)
		now := time.Now()
		if n > 0 {
			sc.mu.Lock()
			sc.chunks = append(sc.chunks, chunk{now, len(sc.data), n})
			sc.data = append(sc.data, b[:n]...)
			sc.mu.Unlock()
			if !o.raw {
				for _, c := range b[:n] {
					if c != '\n' {
						continue
					}
					nreq++
					if o.resetAfter > 0 && nreq == o.resetAfter {
						sleep(o.resetDelay, sc.srv.quit)
						sc.c.SetLinger(0)
						sc.c.Close()
						sc.setEnd(endServerReset, time.Now())
						return
					}
					if o.answer > 0 {
						sc.lines <- struct{}{}
					}
				}
			}
		}
		if err != nil {
			switch {
			case err == io.EOF:
				sc.setEnd(endFIN, now)
			case errors.Is(err, syscall.ECONNRESET):
				sc.setEnd(endRST, now)
			default:
				sc.setEnd(endErrPrefix+err.Error(), now)
			}
			return
		}
	}
}

func (sc *sconn) answer() {
	defer sc.srv.wg.Done()
	defer close(sc.done)
	o := &sc.srv.opts
	if o.greet > 0 {
		sleep(o.greetDelay, sc.srv.quit)
		sc.mu.Lock()
		sc.greetAt = time.Now()
		sc.mu.Unlock()
		sc.c.Write(bytes.Repeat([]byte{greetByte}, o.greet))
	}
	ans := bytes.Repeat([]byte{answerByte}, o.answer)
	parts := max(o.parts, 1)
	for range sc.lines {
		sleep(o.delay, sc.srv.quit)
		for p := range parts {
			if p > 0 {
				sleep(o.partDelay, sc.srv.quit)
			}
			if p == parts-1 {
				sc.mu.Lock()
				sc.answers = append(sc.answers, time.Now())
				sc.mu.Unlock()
			}
			sc.c.Write(ans[len(ans)*p/parts : len(ans)*(p+1)/parts]) // fails once the client is gone: fine
		}
	}
	<-sc.readDone
	sc.mu.Lock()
	end := sc.end
	sc.mu.Unlock()
	if end != endServerReset {
		sc.c.Close() // after the answers: the client drains them, then sees our FIN
	}
}

func (sc *sconn) record() record {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return record{
		data: slices.Clone(sc.data), chunks: slices.Clone(sc.chunks), answers: slices.Clone(sc.answers),
		greetAt: sc.greetAt, end: sc.end, endAt: sc.endAt,
	}
}

func (s *server) snapshot() []*sconn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.conns)
}

// waitConns waits until n connections were accepted and all of them ended,
// and returns their records in accept order. It fails the test if more
// than n were accepted.
func (s *server) waitConns(t *testing.T, n int) []record {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		conns := s.snapshot()
		ended := 0
		for _, sc := range conns {
			select {
			case <-sc.done:
				ended++
			default:
			}
		}
		if len(conns) >= n && ended == len(conns) {
			if len(conns) != n {
				t.Errorf("server accepted %d connections, want %d", len(conns), n)
			}
			recs := make([]record, len(conns))
			for i, sc := range conns {
				recs[i] = sc.record()
			}
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("server: %d connections accepted, %d ended, want %d ended within %v", len(conns), ended, n, bound)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitBytes waits until the first connection received at least n bytes.
func (s *server) waitBytes(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("server to receive %d bytes", n), func() bool {
		conns := s.snapshot()
		return len(conns) > 0 && len(conns[0].record().data) >= n
	})
}

// arrival returns when the byte at offset off reached the server.
func (r record) arrival(t *testing.T, off int) time.Time {
	t.Helper()
	for _, c := range r.chunks {
		if off >= c.off && off < c.off+c.n {
			return c.at
		}
	}
	t.Fatalf("server never received byte %d (got %d bytes)", off, len(r.data))
	return time.Time{}
}

// requestStarts returns the offsets where each request line begins.
func (r record) requestStarts() []int {
	starts := []int{}
	for off := 0; off < len(r.data); {
		starts = append(starts, off)
		i := bytes.IndexByte(r.data[off:], '\n')
		if i < 0 {
			break
		}
		off += i + 1
	}
	return starts
}

func sleep(d time.Duration, quit <-chan struct{}) {
	if d <= 0 {
		return
	}
	select {
	case <-time.After(d):
	case <-quit:
	}
}

// ---------------------------------------------------------------------------
// DialFunc over kernel TCP.

type dialCall struct{ src, dst netip.AddrPort }

type dialer struct {
	// busy reports whether a forged source is taken: the dial then fails
	// with an error wrapping errPortInUse.
	busy   func(src netip.AddrPort) bool
	sndBuf int
	hold   time.Duration // a slow handshake: wait this long (or for ctx) first
	tap    bool          // connections show answers (DiscardTo), as *netstack.Conn does: HTTP framing on

	inFlight, maxInFlight atomic.Int64
	live                  atomic.Int64 // dials whose ctx was not done yet

	mu    sync.Mutex
	calls []dialCall
}

func (d *dialer) dial(ctx context.Context, src, dst netip.AddrPort) (replay.Conn, error) {
	d.mu.Lock()
	d.calls = append(d.calls, dialCall{src, dst})
	d.mu.Unlock()
	if ctx.Err() == nil {
		d.live.Add(1)
	}
	n := d.inFlight.Add(1)
	defer d.inFlight.Add(-1)
	for {
		m := d.maxInFlight.Load()
		if n <= m || d.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	if d.busy != nil && src.Port() != 0 && d.busy(src) {
		return nil, fmt.Errorf("bind %v: %w", src, errPortInUse)
	}
	d.mu.Lock()
	hold := d.hold // under mu: a test may change it between dials
	d.mu.Unlock()
	if hold > 0 {
		select {
		case <-time.After(hold):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp4", dst.String())
	if err != nil {
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("%w: %w", errRefused, err)
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
			return nil, fmt.Errorf("%w: %w", errTimeout, err)
		}
		return nil, err
	}
	tc := c.(*net.TCPConn)
	if d.sndBuf > 0 {
		if err := tc.SetWriteBuffer(d.sndBuf); err != nil {
			tc.Close()
			return nil, err
		}
	}
	if d.tap {
		return &tapConn{tcpConn{c: tc, buf: make([]byte, 32<<10)}}, nil
	}
	return &tcpConn{c: tc, buf: make([]byte, 32<<10)}, nil
}

func (d *dialer) snapshot() []dialCall {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// tcpConn adapts *net.TCPConn to replay.Conn.
type tcpConn struct {
	c   *net.TCPConn
	buf []byte
}

func (c *tcpConn) Write(b []byte) (int, error) {
	n, err := c.c.Write(b)
	return n, classifyErr(err)
}

func (c *tcpConn) Close() error      { return c.c.Close() }
func (c *tcpConn) CloseWrite() error { return classifyErr(c.c.CloseWrite()) }

func (c *tcpConn) Abort() {
	c.c.SetLinger(0)
	c.c.Close()
}

func (c *tcpConn) Discard() (int, error) {
	n, err := c.c.Read(c.buf)
	if err == io.EOF {
		return n, io.EOF
	}
	return n, classifyErr(err)
}

// tapConn also shows the answers it discards, like *netstack.Conn.
type tapConn struct{ tcpConn }

func (c *tapConn) DiscardTo(w io.Writer) (int, error) {
	n, err := c.Discard()
	if n > 0 {
		w.Write(c.buf[:n])
	}
	return n, err
}

func classifyErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("%w: %w", errReset, err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: %w", errTimeout, err)
	}
	return err
}

// ---------------------------------------------------------------------------
// Harness.

type harness struct {
	srv    *server
	dialer *dialer
	r      *replay.Replayer
	cancel context.CancelFunc
}

// newHarness starts a server and a replayer sending the captured server
// 198.18.1.1:80 (any IP, port 80) to it. mod adjusts the test defaults.
func newHarness(t *testing.T, so serverOpts, d *dialer, mod func(*replay.Config)) *harness {
	t.Helper()
	srv := newServer(t, so)
	if d == nil {
		d = &dialer{}
	}
	r, cancel := newReplayer(t, srv.addr, d, mod, srv.close)
	return &harness{srv: srv, dialer: d, r: r, cancel: cancel}
}

func newReplayer(t *testing.T, target netip.AddrPort, d *dialer, mod func(*replay.Config), abort func()) (*replay.Replayer, context.CancelFunc) {
	t.Helper()
	ts, err := transfer.ParseTransfers(fmt.Sprintf("80-127.0.0.1:%d", target.Port()))
	if err != nil {
		t.Fatal(err)
	}
	cfg := replay.DefaultConfig()
	cfg.Transfers = ts
	cfg.TurnWait = 5 * time.Second
	cfg.Idle = 10 * time.Second
	cfg.DialTimeout = 5 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := replay.New(ctx, cfg, d.dial, nil)
	t.Cleanup(func() {
		// Unstick whatever a failed test left running, boundedly.
		cancel()
		if abort != nil {
			abort()
		}
		go r.CloseInput() // may block behind a full queue until its session ends
		if !waitReplay(r, bound) {
			t.Errorf("replayer sessions still running %v after cleanup", bound)
		}
	})
	return r, cancel
}

func (h *harness) wait(t *testing.T) replay.Stats {
	t.Helper()
	if !waitReplay(h.r, bound) {
		t.Fatalf("Wait did not return within %v; stats %+v", bound, h.r.Stats())
	}
	return h.r.Stats()
}

func waitReplay(r *replay.Replayer, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		r.Wait()
		close(done)
	}()
	return waitChan(done, d)
}

func waitChan(c <-chan struct{}, d time.Duration) bool {
	select {
	case <-c:
		return true
	case <-time.After(d):
		return false
	}
}

func waitGroupDone(wg *sync.WaitGroup) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		wg.Wait()
		close(c)
	}()
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", bound, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Events.

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

var capturedServer = netip.MustParseAddrPort("198.18.1.1:80")

func key(i int) session.SessionKey {
	return session.SessionKey{
		Client: netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), uint16(20000+i)),
		Server: capturedServer,
	}
}

func open() session.Event          { return session.Event{Kind: session.EvOpen, Time: t0} }
func data(s string) session.Event  { return dataB([]byte(s)) }
func dataB(b []byte) session.Event { return session.Event{Kind: session.EvData, Time: t0, Data: b} }
func turn(n int) session.Event     { return session.Event{Kind: session.EvTurn, Time: t0, ServerBytes: n} }
func fin() session.Event           { return session.Event{Kind: session.EvFin, Time: t0} }
func rst() session.Event           { return session.Event{Kind: session.EvRst, Time: t0} }
func gap(why string) session.Event { return session.Event{Kind: session.EvGap, Time: t0, Reason: why} }
func srvClose(r string) session.Event {
	return session.Event{Kind: session.EvServerClose, Time: t0, Reason: r}
}

// at sets an event's capture time to t0+d.
func at(ev session.Event, d time.Duration) session.Event {
	ev.Time = t0.Add(d)
	return ev
}

func feed(r *replay.Replayer, k session.SessionKey, evs ...session.Event) {
	for _, ev := range evs {
		r.Event(k, ev)
	}
}

// sentBytes sums the client bytes of evs.
func sentBytes(evs []session.Event) uint64 {
	n := 0
	for _, ev := range evs {
		n += len(ev.Data)
	}
	return uint64(n)
}

func clientBytes(evs []session.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		b.Write(ev.Data)
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// Stats checks.

var outcomeFields = []string{"Completed", "ClientResets", "TargetResets", "Refused", "TimedOut", "Gaps", "Overflowed", "Interrupted", "Failed"}

// expectStats checks the named counters; outcome counters not named must
// be 0, and the outcomes must sum to Sessions.
func expectStats(t *testing.T, st replay.Stats, want map[string]uint64) {
	t.Helper()
	v := reflect.ValueOf(st)
	want = maps.Clone(want)
	for _, f := range outcomeFields {
		if _, ok := want[f]; !ok {
			want[f] = 0
		}
	}
	bad := false
	for _, name := range slices.Sorted(maps.Keys(want)) {
		f := v.FieldByName(name)
		if !f.IsValid() {
			t.Fatalf("replay.Stats has no field %s", name)
		}
		if got := f.Uint(); got != want[name] {
			t.Errorf("Stats.%s = %d, want %d", name, got, want[name])
			bad = true
		}
	}
	checkOutcomes(t, st)
	if bad {
		t.Logf("stats: %+v", st)
	}
}

func checkOutcomes(t *testing.T, st replay.Stats) {
	t.Helper()
	sum := st.Completed + st.ClientResets + st.TargetResets + st.Refused + st.TimedOut + st.Gaps + st.Overflowed + st.Interrupted + st.Failed
	if sum != st.Sessions {
		t.Errorf("outcome counters sum to %d, Sessions = %d: %+v", sum, st.Sessions, st)
	}
	// Every session that did not complete, and every one shed, has
	// exactly one named reason.
	var reasons uint64
	for name, n := range st.Reasons {
		if name == "" || !slices.Contains(replay.ReasonNames(), name) {
			t.Errorf("reason %q is not one of %v", name, replay.ReasonNames())
		}
		reasons += n
	}
	if want := st.Sessions - st.Completed - st.ClientResets + st.Shed; reasons != want {
		t.Errorf("reasons %v sum to %d, want %d (sessions that did not complete, and shed ones): %+v", st.Reasons, reasons, want, st)
	}
}

// ---------------------------------------------------------------------------
// Tests.

// TestTurns replays three keep-alive request/answer turns: each request
// waits for the previous answer, unless NoWait.
func TestTurns(t *testing.T) {
	t.Parallel()
	const answer = 1000
	reqs := []string{"GET /one HTTP/1.1\n", "GET /two/is/longer HTTP/1.1\n", "GET /3 HTTP/1.1\n"}
	evs := []session.Event{open(), data(reqs[0]), turn(answer), data(reqs[1]), turn(answer), data(reqs[2]), turn(answer), fin()}
	for _, tc := range []struct {
		name   string
		noWait bool
		delay  time.Duration
		turns  uint64
	}{
		{"wait for each answer", false, 100 * time.Millisecond, 3},
		{"NoWait", true, 300 * time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, serverOpts{answer: answer, delay: tc.delay}, nil, func(c *replay.Config) { c.NoWait = tc.noWait })
			k := key(1)
			feed(h.r, k, evs...)
			st := h.wait(t)
			rec := h.srv.waitConns(t, 1)[0]

			if got, want := string(rec.data), strings.Join(reqs, ""); got != want {
				t.Fatalf("server received %q, want %q", got, want)
			}
			if len(rec.answers) != 3 {
				t.Fatalf("server answered %d times, want 3", len(rec.answers))
			}
			starts := rec.requestStarts()
			for i := 1; i < 3; i++ {
				req := rec.arrival(t, starts[i])
				after := req.After(rec.answers[i-1])
				if !tc.noWait && !after {
					t.Errorf("request %d arrived %v before answer %d was written", i+1, rec.answers[i-1].Sub(req), i)
				}
				if tc.noWait && after {
					t.Errorf("NoWait: request %d arrived %v after answer %d was written, want before", i+1, req.Sub(rec.answers[i-1]), i)
				}
			}
			if rec.end != endFIN {
				t.Errorf("server saw end %q, want FIN", rec.end)
			} else if !tc.noWait && !rec.endAt.After(rec.answers[2]) {
				t.Errorf("FIN arrived before the last answer was written")
			}
			expectStats(t, st, map[string]uint64{
				"Sessions": 1, "Completed": 1, "Turns": tc.turns, "TurnsUnanswered": 0,
				"BytesSent": sentBytes(evs), "BytesReceived": 3 * answer, "PortsRemapped": 0,
			})
			calls := h.dialer.snapshot()
			if len(calls) != 1 || calls[0].src != k.Client || calls[0].dst != h.srv.addr {
				t.Errorf("dials %v, want one from %v to %v", calls, k.Client, h.srv.addr)
			}
		})
	}
}

// TestTurnWait: a target that never answers holds each turn for TurnWait.
func TestTurnWait(t *testing.T) {
	t.Parallel()
	const turnWait = 400 * time.Millisecond
	h := newHarness(t, serverOpts{}, nil, func(c *replay.Config) { c.TurnWait = turnWait })
	evs := []session.Event{open(), data("one\n"), turn(500), data("two\n"), fin()}
	start := time.Now()
	feed(h.r, key(1), evs...)
	st := h.wait(t)
	rec := h.srv.waitConns(t, 1)[0]
	if string(rec.data) != "one\ntwo\n" {
		t.Fatalf("server received %q", rec.data)
	}
	// TurnWait runs from the first request's write, which follows start:
	// a lower bound on the second request's arrival whatever the load.
	if d := rec.arrival(t, 4).Sub(start); d < turnWait {
		t.Errorf("second request arrived %v after the session started, before TurnWait (%v)", d, turnWait)
	}
	if rec.end != endFIN {
		t.Errorf("server saw end %q, want FIN", rec.end)
	}
	expectStats(t, st, map[string]uint64{"Sessions": 1, "Completed": 1, "Turns": 1, "TurnsUnanswered": 1, "BytesSent": 8, "BytesReceived": 0})
}

// TestShortAnswer: an answer shorter than the captured one completes the
// turn after Quiet, not after TurnWait.
func TestShortAnswer(t *testing.T) {
	t.Parallel()
	const turnWait = 8 * time.Second
	h := newHarness(t, serverOpts{answer: 10}, nil, func(c *replay.Config) {
		c.TurnWait = turnWait
		c.Quiet = 50 * time.Millisecond
	})
	evs := []session.Event{open(), data("one\n"), turn(100000), data("two\n"), turn(100000), fin()}
	start := time.Now()
	feed(h.r, key(1), evs...)
	st := h.wait(t)
	if el := time.Since(start); el >= turnWait {
		t.Errorf("session took %v, at least TurnWait %v", el, turnWait)
	}
	rec := h.srv.waitConns(t, 1)[0]
	if string(rec.data) != "one\ntwo\n" || len(rec.answers) != 2 {
		t.Fatalf("server received %q, answered %d times", rec.data, len(rec.answers))
	}
	if req2 := rec.arrival(t, 4); !req2.After(rec.answers[0]) {
		t.Errorf("second request arrived before the first answer was written")
	} else if d := req2.Sub(rec.answers[0]); d >= turnWait/2 {
		t.Errorf("second request arrived %v after the short answer: waited for TurnWait, not Quiet", d)
	}
	if rec.end != endFIN || !rec.endAt.After(rec.answers[1]) {
		t.Errorf("server saw end %q at %v, want FIN after the second answer", rec.end, rec.endAt)
	}
	expectStats(t, st, map[string]uint64{"Sessions": 1, "Completed": 1, "Turns": 2, "TurnsUnanswered": 0, "BytesSent": 8, "BytesReceived": 20})
}

// TestSplitAnswer: an answer written in parts closer together than Quiet
// is awaited whole, and its captured size ends the turn without waiting
// for Quiet.
func TestSplitAnswer(t *testing.T) {
	t.Parallel()
	const answer, quiet = 1000, 3 * time.Second
	h := newHarness(t, serverOpts{answer: answer, parts: 3, partDelay: 150 * time.Millisecond}, nil,
		func(c *replay.Config) { c.Quiet = quiet })
	evs := []session.Event{open(), data("one\n"), turn(answer), data("two\n"), turn(answer), fin()}
	feed(h.r, key(1), evs...)
	st := h.wait(t)
	rec := h.srv.waitConns(t, 1)[0]
	if string(rec.data) != "one\ntwo\n" || len(rec.answers) != 2 {
		t.Fatalf("server received %q, answered %d times", rec.data, len(rec.answers))
	}
	if req2 := rec.arrival(t, 4); !req2.After(rec.answers[0]) {
		t.Errorf("second request arrived before the last part of the first answer was written")
	} else if d := req2.Sub(rec.answers[0]); d >= quiet/2 {
		t.Errorf("second request arrived %v after the whole answer: waited for Quiet (%v) though all captured bytes came", d, quiet)
	}
	if rec.end != endFIN || !rec.endAt.After(rec.answers[1]) {
		t.Errorf("server saw end %q, want FIN after the last part of the second answer", rec.end)
	}
	expectStats(t, st, map[string]uint64{"Sessions": 1, "Completed": 1, "Turns": 2, "TurnsUnanswered": 0, "BytesSent": 8, "BytesReceived": 2 * answer})
}

// TestServerFirst: a greeting turn right after EvOpen holds the client's
// first bytes until the target greeted.
func TestServerFirst(t *testing.T) {
	t.Parallel()
	const greet, answer = 40, 25
	h := newHarness(t, serverOpts{greet: greet, greetDelay: 150 * time.Millisecond, answer: answer}, nil, nil)
	evs := []session.Event{open(), turn(greet), data("EHLO x\n"), turn(answer), data("QUIT\n"), turn(answer), fin()}
	feed(h.r, key(1), evs...)
	st := h.wait(t)
	rec := h.srv.waitConns(t, 1)[0]
	if string(rec.data) != "EHLO x\nQUIT\n" || len(rec.answers) != 2 {
		t.Fatalf("server received %q, answered %d times", rec.data, len(rec.answers))
	}
	if rec.greetAt.IsZero() || !rec.arrival(t, 0).After(rec.greetAt) {
		t.Errorf("client's first bytes arrived before the greeting was written")
	}
	if !rec.arrival(t, 7).After(rec.answers[0]) {
		t.Errorf("second request arrived before the first answer was written")
	}
	expectStats(t, st, map[string]uint64{"Sessions": 1, "Completed": 1, "Turns": 3, "TurnsUnanswered": 0,
		"BytesSent": sentBytes(evs), "BytesReceived": greet + 2*answer})
}

// TestClientEnds replays the client's FIN, RST and capture gaps.
func TestClientEnds(t *testing.T) {
	t.Parallel()
	const answer = 300
	part1 := strings.Repeat("0123456789abcdef", 512) // 8 KiB, no newline
	part2 := strings.Repeat("x", 3000) + "\n"
	for _, tc := range []struct {
		name        string
		evs         []session.Event
		end         string // what the server saw
		afterAnswer bool   // the end arrived after the (only) answer was written
		answers     int
		want        map[string]uint64
	}{
		{
			name: "FIN after pending turn", evs: []session.Event{open(), data("req\n"), turn(answer), fin()},
			end: endFIN, afterAnswer: true, answers: 1,
			want: map[string]uint64{"Completed": 1, "Turns": 1, "BytesReceived": answer},
		},
		{
			name: "RST after pending turn", evs: []session.Event{open(), data("req\n"), turn(answer), rst()},
			end: endRST, afterAnswer: true, answers: 1,
			want: map[string]uint64{"ClientResets": 1, "Turns": 1},
		},
		{
			name: "RST", evs: []session.Event{open(), data(part1), data(part2), rst()},
			end:  endRST,
			want: map[string]uint64{"ClientResets": 1, "Turns": 0},
		},
		{
			name: "gap", evs: []session.Event{open(), data(part1), data(part2), gap("hole of 1448 bytes at client offset 11193")},
			end:  endRST,
			want: map[string]uint64{"Gaps": 1, "Turns": 0},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, serverOpts{answer: answer, delay: 200 * time.Millisecond}, nil, nil)
			feed(h.r, key(1), tc.evs...)
			st := h.wait(t)
			rec := h.srv.waitConns(t, 1)[0]
			if got, want := string(rec.data), clientBytes(tc.evs); got != want {
				t.Errorf("server received %d bytes, want %d intact", len(got), len(want))
			}
			if rec.end != tc.end {
				t.Errorf("server saw end %q, want %q", rec.end, tc.end)
			}
			if tc.afterAnswer {
				if len(rec.answers) != tc.answers {
					t.Fatalf("server answered %d times, want %d", len(rec.answers), tc.answers)
				}
				if !rec.endAt.After(rec.answers[0]) {
					t.Errorf("client's %s arrived %v before the answer was written", tc.end, rec.answers[0].Sub(rec.endAt))
				}
			}
			want := maps.Clone(tc.want)
			want["Sessions"] = 1
			want["BytesSent"] = sentBytes(tc.evs)
			expectStats(t, st, want)
		})
	}
}

// TestRefused: a closed target port counts as Refused.
func TestRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	d := &dialer{}
	r, _ := newReplayer(t, addr, d, nil, nil)
	feed(r, key(1), open(), data("hello\n"), turn(10), data("more\n"), fin())
	if !waitReplay(r, bound) {
		t.Fatalf("Wait did not return")
	}
	expectStats(t, r.Stats(), map[string]uint64{"Sessions": 1, "Refused": 1, "BytesSent": 0})
	if calls := d.snapshot(); len(calls) != 1 || calls[0].dst != addr {
		t.Errorf("dials %v, want one to %v", calls, addr)
	}
}

// TestTargetReset: the target resets while the session still has events
// to replay: the session counts as TargetResets, whichever event notices.
func TestTargetReset(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		resetDelay time.Duration
		queued     []session.Event // fed at once after open
		later      []session.Event // fed once the server has reset
	}{
		{
			name:   "next request written after reset",
			queued: []session.Event{data("one\n"), turn(10), data("two\n"), turn(10), data("three\n"), fin()},
		},
		{
			// The reset comes while the FIN waits for the answer.
			name:       "FIN after reset",
			resetDelay: 100 * time.Millisecond,
			queued:     []session.Event{data("one\n"), turn(10), fin()},
		},
		{
			name:   "reset while waiting for events",
			queued: []session.Event{data("one\n")},
			later:  []session.Event{turn(10), fin()},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, serverOpts{answer: 10, resetAfter: 1, resetDelay: tc.resetDelay}, nil, nil)
			k := key(1)
			feed(h.r, k, open())
			feed(h.r, k, tc.queued...)
			if tc.later != nil {
				h.srv.waitConns(t, 1)
				waitFor(t, "the replayer to see the reset", func() bool { return h.r.TargetEnded(k) })
				feed(h.r, k, tc.later...)
			}
			st := h.wait(t)
			rec := h.srv.waitConns(t, 1)[0]
			if string(rec.data) != "one\n" || rec.end != endServerReset {
				t.Errorf("server received %q, end %q", rec.data, rec.end)
			}
			expectStats(t, st, map[string]uint64{"Sessions": 1, "TargetResets": 1, "BytesReceived": 0})
		})
	}
}

// TestIdleTimeout: events stop without an end and without CloseInput.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, serverOpts{}, nil, func(c *replay.Config) { c.Idle = 300 * time.Millisecond })
	feed(h.r, key(1), open(), data("GET / HTTP/1.1\n"))
	st := h.wait(t)
	rec := h.srv.waitConns(t, 1)[0]
	if string(rec.data) != "GET / HTTP/1.1\n" || rec.end != endRST {
		t.Errorf("server received %q, end %q; want the request, then RST", rec.data, rec.end)
	}
	expectStats(t, st, map[string]uint64{"Sessions": 1, "TimedOut": 1, "BytesSent": 15})
}

// TestInputEnds: sessions without a captured client end finish their last
// turn and close politely when the input ends (CloseInput) or the capture
// shows the server reset; a captured server FIN is informational. A pending
// greeting turn is the last turn too, as it is before a captured FIN.
func TestInputEnds(t *testing.T) {
	t.Parallel()
	const answer = 100
	for _, tc := range []struct {
		name       string
		evs        []session.Event
		closeInput bool
		reqs       int
		greet      int
	}{
		{"CloseInput after a turn", []session.Event{open(), data("one\n"), turn(answer), data("two\n")}, true, 2, 0},
		{"CloseInput after open only", []session.Event{open()}, true, 0, 0},
		{"captured server RST", []session.Event{open(), data("one\n"), turn(answer), data("two\n"), srvClose(session.ReasonServerRST)}, false, 2, 0},
		{"captured server FIN", []session.Event{open(), data("one\n"), srvClose(session.ReasonServerFIN), turn(answer), fin()}, false, 1, 0},
		{"captured FIN after a greeting turn", []session.Event{open(), turn(40), fin()}, false, 0, 40},
		{"CloseInput after a greeting turn", []session.Event{open(), turn(40)}, true, 0, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, serverOpts{answer: answer, delay: 200 * time.Millisecond, greet: tc.greet, greetDelay: 150 * time.Millisecond}, nil, nil)
			feed(h.r, key(1), tc.evs...)
			if tc.closeInput {
				h.r.CloseInput()
			}
			st := h.wait(t)
			rec := h.srv.waitConns(t, 1)[0]
			if got, want := string(rec.data), clientBytes(tc.evs); got != want {
				t.Fatalf("server received %q, want %q", got, want)
			}
			if len(rec.answers) != tc.reqs {
				t.Fatalf("server answered %d times, want %d", len(rec.answers), tc.reqs)
			}
			starts := rec.requestStarts()
			for i := 1; i < tc.reqs; i++ {
				if !rec.arrival(t, starts[i]).After(rec.answers[i-1]) {
					t.Errorf("request %d arrived before answer %d was written", i+1, i)
				}
			}
			if rec.end != endFIN {
				t.Errorf("server saw end %q, want FIN", rec.end)
			} else if tc.reqs > 0 && !rec.endAt.After(rec.answers[tc.reqs-1]) {
				t.Errorf("FIN arrived before the last answer was written")
			} else if tc.greet > 0 && !rec.endAt.After(rec.greetAt) {
				t.Errorf("FIN arrived %v before the greeting was written", rec.greetAt.Sub(rec.endAt))
			}
			expectStats(t, st, map[string]uint64{"Sessions": 1, "Completed": 1, "BytesSent": sentBytes(tc.evs),
				"BytesReceived": uint64(tc.reqs*answer + tc.greet), "TurnsUnanswered": 0})
		})
	}
}

// TestSelection: sessions whose server matches no -x entry, and sessions
// the sampler leaves out, are counted and never dialed.
func TestSelection(t *testing.T) {
	t.Parallel()
	t.Run("unmatched", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, serverOpts{}, nil, nil)
		k := session.SessionKey{Client: key(1).Client, Server: netip.MustParseAddrPort("198.18.1.1:81")}
		feed(h.r, k, open(), data("x\n"), turn(5), data("y\n"), fin())
		st := h.wait(t)
		expectStats(t, st, map[string]uint64{"Sessions": 0, "Unmatched": 1, "SampledOut": 0, "BytesSent": 0})
		if calls := h.dialer.snapshot(); len(calls) != 0 {
			t.Errorf("dialed %v for an unmatched session", calls)
		}
	})
	for _, percent := range []int{0, 50, 100} {
		t.Run(fmt.Sprintf("sample %d%%", percent), func(t *testing.T) {
			t.Parallel()
			sampler, err := transfer.NewSampler(percent)
			if err != nil {
				t.Fatal(err)
			}
			const n = 64
			h := newHarness(t, serverOpts{}, nil, func(c *replay.Config) { c.Keep = sampler.Keep })
			var kept []netip.AddrPort
			for i := range n {
				k := key(i)
				if sampler.Keep(k.Client) {
					kept = append(kept, k.Client)
				}
				feed(h.r, k, open(), data("x\n"), fin())
			}
			if percent == 50 && (len(kept) == 0 || len(kept) == n) {
				t.Fatalf("sampler kept %d of %d sessions at 50%%", len(kept), n)
			}
			st := h.wait(t)
			h.srv.waitConns(t, len(kept))
			expectStats(t, st, map[string]uint64{"Sessions": uint64(len(kept)), "Completed": uint64(len(kept)),
				"SampledOut": uint64(n - len(kept)), "Unmatched": 0, "BytesSent": 2 * uint64(len(kept))})
			var dialed []netip.AddrPort
			for _, c := range h.dialer.snapshot() {
				dialed = append(dialed, c.src)
			}
			slices.SortFunc(dialed, netip.AddrPort.Compare)
			if !slices.Equal(dialed, kept) {
				t.Errorf("dialed from %v, want exactly the kept sessions %v", dialed, kept)
			}
		})
	}
}

// TestSourceAddress: -c maps client addresses through the pool, keeping
// the port; a busy forged port is retried with port 0 and counted.
func TestSourceAddress(t *testing.T) {
	t.Parallel()
	const busyPort = 4444
	d := &dialer{busy: func(src netip.AddrPort) bool { return src.Port() == busyPort }}
	srv := newServer(t, serverOpts{})
	pool, err := transfer.ParseClientPool("10.77.0.x", srv.addr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	r, _ := newReplayer(t, srv.addr, d, func(c *replay.Config) { c.Pool = pool }, srv.close)
	k1 := session.SessionKey{Client: netip.MustParseAddrPort("192.0.2.10:4444"), Server: capturedServer}
	k2 := session.SessionKey{Client: netip.MustParseAddrPort("192.0.2.99:5555"), Server: capturedServer}
	feed(r, k1, open(), data("one\n"), fin())
	feed(r, k2, open(), data("two\n"), fin())
	if !waitReplay(r, bound) {
		t.Fatal("Wait did not return")
	}
	srv.waitConns(t, 2)
	m1, m2 := pool.Map(k1.Client.Addr()), pool.Map(k2.Client.Addr())
	for _, m := range []netip.Addr{m1, m2} {
		if !slices.Contains(pool.Addrs(), m) {
			t.Fatalf("pool mapped to %v, not in the pool", m)
		}
	}
	want := []dialCall{
		{netip.AddrPortFrom(m1, busyPort), srv.addr},
		{netip.AddrPortFrom(m1, 0), srv.addr},
		{netip.AddrPortFrom(m2, 5555), srv.addr},
	}
	got := d.snapshot()
	sortCalls := func(cs []dialCall) {
		slices.SortFunc(cs, func(a, b dialCall) int { return a.src.Compare(b.src) })
	}
	sortCalls(got)
	sortCalls(want)
	if !slices.Equal(got, want) {
		t.Errorf("dials %v, want %v", got, want)
	}
	expectStats(t, r.Stats(), map[string]uint64{"Sessions": 2, "Completed": 2, "PortsRemapped": 1, "BytesSent": 8})
}

// TestMaxHandshakes: at most MaxHandshakes dials are in flight at once;
// the others wait their turn and every session still completes.
func TestMaxHandshakes(t *testing.T) {
	t.Parallel()
	const n, limit = 12, 3
	d := &dialer{hold: 30 * time.Millisecond}
	h := newHarness(t, serverOpts{answer: 5}, d, func(c *replay.Config) { c.MaxHandshakes = limit })
	for i := range n {
		feed(h.r, key(i), open(), data("req\n"), turn(5), fin())
	}
	st := h.wait(t)
	h.srv.waitConns(t, n)
	if got := d.maxInFlight.Load(); got != limit {
		t.Errorf("%d dials in flight at most, want MaxHandshakes = %d", got, limit)
	}
	expectStats(t, st, map[string]uint64{"Sessions": n, "Completed": n, "Turns": n, "BytesSent": 4 * n, "BytesReceived": 5 * n})
}

// pacedArrival replays one session whose second request was captured d
// after the first, as the server's connection number conn (from 0), and
// returns when that request arrived, relative to the first Event call. The
// replayer's pacing clock starts no earlier, so a paced arrival is never
// before the scaled capture offset, however loaded the machine.
func pacedArrival(t *testing.T, h *harness, k session.SessionKey, conn int, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	feed(h.r, k, at(open(), 0), at(data("a\n"), 0), at(data("b\n"), d), at(fin(), d))
	rec := h.srv.waitConns(t, conn+1)[conn]
	if string(rec.data) != "a\nb\n" {
		t.Fatalf("server received %q", rec.data)
	}
	return rec.arrival(t, 2).Sub(start)
}

// TestPacing: Speed scales the captured pace; 0 does not pace.
func TestPacing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		speed    float64
		captured time.Duration
		min, max time.Duration // bounds on the second request's arrival
	}{
		{"speed 1", 1, 400 * time.Millisecond, 400 * time.Millisecond, 0},
		{"speed 4", 4, 1600 * time.Millisecond, 400 * time.Millisecond, 1200 * time.Millisecond},
		{"speed 0", 0, 3 * time.Second, 0, 1500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, serverOpts{}, nil, func(c *replay.Config) { c.Speed = tc.speed })
			got := pacedArrival(t, h, key(1), 0, tc.captured)
			if got < tc.min || (tc.max > 0 && got >= tc.max) {
				t.Errorf("request captured %v into the session arrived %v after it started at speed %v, want in [%v, %v)",
					tc.captured, got, tc.speed, tc.min, tc.max)
			}
			st := h.wait(t)
			expectStats(t, st, map[string]uint64{"Sessions": 1, "Completed": 1, "BytesSent": 4})
		})
	}
}

// TestRebase: after Rebase a second pass over the same capture times is
// paced again instead of being all overdue.
func TestRebase(t *testing.T) {
	t.Parallel()
	const captured = 400 * time.Millisecond
	h := newHarness(t, serverOpts{}, nil, func(c *replay.Config) { c.Speed = 1 })
	h.r.Rebase()
	if got := pacedArrival(t, h, key(1), 0, captured); got < captured {
		t.Errorf("first pass: second request arrived %v after the start, want at least %v", got, captured)
	}
	h.r.Rebase()
	if got := pacedArrival(t, h, key(2), 1, captured); got < captured {
		t.Errorf("second pass after Rebase: second request arrived %v after the start, want at least %v", got, captured)
	}
	st := h.wait(t)
	expectStats(t, st, map[string]uint64{"Sessions": 2, "Completed": 2, "BytesSent": 8})
}

// stalledTarget makes a harness whose raw target reads nothing until gate
// is closed, with small socket buffers on both sides so that little hides
// in the kernel, and a random payload of n bytes to upload to it.
func stalledTarget(t *testing.T, n int, seed byte, so serverOpts, mod func(*replay.Config)) (*harness, []byte, chan struct{}) {
	t.Helper()
	payload := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(payload)
	gate := make(chan struct{})
	so.raw, so.gate, so.rcvBuf = true, gate, 32<<10
	return newHarness(t, so, &dialer{sndBuf: 32 << 10}, mod), payload, gate
}

// feedStream feeds a session that sends payload in chunks and closes, from
// a goroutine, counting the bytes pushed; the channel closes when the last
// event was taken.
func feedStream(r *replay.Replayer, k session.SessionKey, payload []byte, chunk int, pushed *atomic.Int64) <-chan struct{} {
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		r.Event(k, open())
		for off := 0; off < len(payload); off += chunk {
			r.Event(k, dataB(payload[off:min(off+chunk, len(payload))]))
			if pushed != nil {
				pushed.Add(int64(min(chunk, len(payload)-off)))
			}
		}
		r.Event(k, fin())
	}()
	return fed
}

// expectWhole checks that the harness server got exactly one connection,
// carrying payload and ending with the client's FIN.
func (h *harness) expectWhole(t *testing.T, payload []byte) {
	t.Helper()
	rec := h.srv.waitConns(t, 1)[0]
	if len(rec.data) != len(payload) || sha256.Sum256(rec.data) != sha256.Sum256(payload) {
		t.Errorf("server received %d bytes, sha256 %x; want %d bytes, sha256 %x", len(rec.data), sha256.Sum256(rec.data), len(payload), sha256.Sum256(payload))
	}
	if rec.end != endFIN {
		t.Errorf("server saw end %q, want FIN", rec.end)
	}
}

// TestBackpressure: with a small queue, no spill space and a target that
// does not read, Event blocks instead of dropping or buffering without
// bound (the mode for capture files).
func TestBackpressure(t *testing.T) {
	t.Parallel()
	const (
		total = 5 << 20
		chunk = 16 << 10
		queue = 64 << 10
	)
	h, payload, gate := stalledTarget(t, total, 1, serverOpts{slowReads: 64},
		func(c *replay.Config) { c.QueueBytes, c.SpillMax = queue, 0 })
	k := key(1)

	var pushed atomic.Int64
	fed := feedStream(h.r, k, payload, chunk, &pushed)

	maxQueued := 0
	poll := func() {
		if q, ok := h.r.QueuedBytes(k); ok && q > maxQueued {
			maxQueued = q
		}
	}
	// The target is not reading: the feeder must stall.
	last, since := int64(-1), time.Now()
	deadline := time.Now().Add(bound)
	for {
		poll()
		select {
		case <-fed:
			t.Fatalf("all %d bytes were accepted while the target did not read", total)
		default:
		}
		if p := pushed.Load(); p != last {
			last, since = p, time.Now()
		} else if time.Since(since) > 300*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("feeder never stalled")
		}
		time.Sleep(time.Millisecond)
	}
	if last > 1<<20 {
		t.Errorf("%d bytes accepted while the target did not read; want about QueueBytes plus socket buffers", last)
	}
	close(gate)
	for !waitChan(fed, time.Millisecond) {
		poll()
		if time.Now().After(deadline) {
			t.Fatalf("feeder still blocked after %v", bound)
		}
	}
	if maxQueued > queue {
		t.Errorf("session queued %d bytes, QueueBytes is %d", maxQueued, queue)
	}
	st := h.wait(t)
	h.expectWhole(t, payload)
	expectStats(t, st, map[string]uint64{"Sessions": 1, "Completed": 1, "BytesSent": total})
}

// TestSpill: a session whose target does not read queues QueueBytes in
// memory and the rest in its spill file, so the capture side never waits;
// once the target reads, every byte arrives in order.
func TestSpill(t *testing.T) {
	t.Parallel()
	const (
		total = 5 << 20
		chunk = 16 << 10
		queue = 64 << 10
	)
	dir := t.TempDir()
	h, payload, gate := stalledTarget(t, total, 4, serverOpts{},
		func(c *replay.Config) { c.QueueBytes, c.SpillDir, c.SpillMax = queue, dir, 64<<20 })
	k := key(1)
	maxQueued := 0
	fed := feedStream(h.r, k, payload, chunk, nil)
	if !waitChan(fed, bound) {
		close(gate)
		t.Fatalf("the feeder waited for a target that does not read; spilling should have taken the bytes")
	}
	if q, ok := h.r.QueuedBytes(k); ok && q > queue {
		maxQueued = q
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("spill directory holds %d entries (err %v), want none: spill files are unlinked at once", len(ents), err)
	}
	spilled := h.r.Stats()
	close(gate)
	st := h.wait(t)
	h.expectWhole(t, payload)
	if maxQueued > 0 {
		t.Errorf("session held %d bytes in memory, QueueBytes is %d", maxQueued, queue)
	}
	// The target's and the dialer's socket buffers take a few hundred KiB
	// at most; everything else had to go through the spill file.
	if spilled.SpilledBytes < total-(1<<20) || spilled.SpillPeak <= 0 {
		t.Errorf("spilled %d bytes (peak %d) while the target did not read, want at least %d", spilled.SpilledBytes, spilled.SpillPeak, total-(1<<20))
	}
	expectStats(t, st, map[string]uint64{"Sessions": 1, "Completed": 1, "BytesSent": total})
}

// TestShedWhenFull: with the spill space spent, a live capture sheds the
// session that fell behind (counted, its connection reset, no wrong bytes)
// and never waits; another session goes on untouched.
func TestShedWhenFull(t *testing.T) {
	t.Parallel()
	const (
		total = 4 << 20
		chunk = 16 << 10
		queue = 64 << 10
	)
	h, payload, gate := stalledTarget(t, total, 7, serverOpts{}, func(c *replay.Config) {
		c.QueueBytes, c.SpillDir, c.SpillMax, c.ShedWhenFull = queue, t.TempDir(), 256<<10, true
	})
	slow, other := key(1), key(2)
	fed := feedStream(h.r, slow, payload, chunk, nil)
	if !waitChan(fed, bound) {
		close(gate)
		t.Fatalf("the feeder waited for a target that does not read; the session should have been shed")
	}
	close(gate)
	feed(h.r, other, open(), data("after\n"), fin())
	st := h.wait(t)
	// The shed session's connection is reset, possibly before the server
	// accepted it (then the kernel never hands it over): wait for the
	// other one, then look at whatever was accepted.
	otherDone := func() bool {
		for _, sc := range h.srv.snapshot() {
			if r := sc.record(); string(r.data) == "after\n" && r.end == endFIN {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(bound); !otherDone() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	var shed, kept int
	for _, sc := range h.srv.snapshot() {
		rec := sc.record()
		switch {
		case string(rec.data) == "after\n" && rec.end == endFIN:
			kept++
		case len(rec.data) < total && bytes.Equal(rec.data, payload[:len(rec.data)]) && rec.end != endFIN:
			shed++
		default:
			t.Errorf("a connection got %d bytes, end %q: want the shed session to end without FIN after a prefix of its bytes", len(rec.data), rec.end)
		}
	}
	if shed > 1 || kept != 1 {
		t.Errorf("%d shed and %d intact connections, want at most 1 and 1", shed, kept)
	}
	expectStats(t, st, map[string]uint64{"Sessions": 2, "Completed": 1, "Overflowed": 1})
	if st.SpillPeak > 256<<10 {
		t.Errorf("spill peak %d, above SpillMax %d", st.SpillPeak, 256<<10)
	}
}

// TestManySessions replays 200 concurrent two-turn sessions.
func TestManySessions(t *testing.T) {
	t.Parallel()
	const n, answer = 200, 64
	h := newHarness(t, serverOpts{answer: answer}, nil, nil)
	evs := make([][]session.Event, n)
	var sent uint64
	for i := range n {
		evs[i] = []session.Event{open(), data(fmt.Sprintf("req %d a\n", i)), turn(answer), data(fmt.Sprintf("req %d b\n", i)), turn(answer), fin()}
		sent += sentBytes(evs[i])
	}
	// Interleave the sessions, as a capture does.
	for step := range evs[0] {
		for i := range n {
			h.r.Event(key(i), evs[i][step])
		}
	}
	st := h.wait(t)
	recs := h.srv.waitConns(t, n)
	seen := make(map[int]bool)
	for _, rec := range recs {
		var i int
		if _, err := fmt.Sscanf(string(rec.data), "req %d a\n", &i); err != nil || i < 0 || i >= n || seen[i] {
			t.Errorf("server connection received %q", rec.data)
			continue
		}
		seen[i] = true
		if want := fmt.Sprintf("req %d a\nreq %d b\n", i, i); string(rec.data) != want {
			t.Errorf("session %d: server received %q, want %q", i, rec.data, want)
			continue
		}
		if len(rec.answers) != 2 || rec.end != endFIN {
			t.Errorf("session %d: %d answers, end %q", i, len(rec.answers), rec.end)
			continue
		}
		if starts := rec.requestStarts(); !rec.arrival(t, starts[1]).After(rec.answers[0]) {
			t.Errorf("session %d: second request arrived before the first answer was written", i)
		}
	}
	expectStats(t, st, map[string]uint64{"Sessions": n, "Completed": n, "Turns": 2 * n, "TurnsUnanswered": 0,
		"BytesSent": sent, "BytesReceived": 2 * n * answer})
}

// TestCancel: cancelling the replayer's context ends every session
// promptly, wherever it is blocked.
func TestCancel(t *testing.T) {
	t.Parallel()

	// A session waiting for its next captured event (no end, no
	// CloseInput: the capture reader was interrupted).
	t.Run("idle session", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, serverOpts{}, nil, func(c *replay.Config) { c.Idle = time.Minute })
		feed(h.r, key(1), open(), data("one\n"))
		h.srv.waitBytes(t, 4)
		h.cancel()
		if !waitReplay(h.r, promptly) {
			t.Fatalf("Wait did not return within %v of cancel: a session waiting for events ignores ctx", promptly)
		}
		checkOutcomes(t, h.r.Stats())
	})

	// A session blocked writing to a target that stopped reading.
	t.Run("blocked write", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, serverOpts{raw: true, gate: make(chan struct{}), rcvBuf: 32 << 10}, &dialer{sndBuf: 32 << 10}, nil)
		k := key(1)
		fed := make(chan struct{})
		go func() {
			defer close(fed)
			h.r.Event(k, open())
			block := make([]byte, 64<<10)
			for range 64 { // 4 MiB: far more than the queue and socket buffers
				h.r.Event(k, dataB(block))
			}
			h.r.Event(k, fin())
		}()
		waitFor(t, "the session to block writing", func() bool {
			return len(h.srv.snapshot()) == 1 && h.r.Stats().BytesSent > 0
		})
		time.Sleep(100 * time.Millisecond)
		h.cancel()
		if !waitReplay(h.r, promptly) {
			t.Fatalf("Wait did not return within %v of cancel: a write blocked on a target that does not read ignores ctx", promptly)
		}
		if !waitChan(fed, promptly) {
			t.Errorf("Event still blocked %v after cancel", promptly)
		}
		checkOutcomes(t, h.r.Stats())
	})

	// A session waiting for an answer: it ends and sends nothing more.
	t.Run("waiting for answer", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, serverOpts{}, nil, func(c *replay.Config) { c.TurnWait = time.Minute })
		feed(h.r, key(1), open(), data("one\n"), turn(10), data("two\n"), turn(10), data("three\n"), fin())
		h.srv.waitBytes(t, 4)
		time.Sleep(50 * time.Millisecond)
		h.cancel()
		if !waitReplay(h.r, promptly) {
			t.Fatalf("Wait did not return within %v of cancel", promptly)
		}
		rec := h.srv.waitConns(t, 1)[0]
		if string(rec.data) != "one\n" {
			t.Errorf("after cancel the target still received the queued turns: got %q, want %q", rec.data, "one\n")
		}
		st := h.r.Stats()
		checkOutcomes(t, st)
		if st.Completed != 0 {
			t.Errorf("a cancelled session counted as Completed: %+v", st)
		}
	})

	// Sessions waiting for a handshake slot behind a slow handshake.
	t.Run("queued handshake", func(t *testing.T) {
		t.Parallel()
		d := &dialer{hold: time.Minute}
		h := newHarness(t, serverOpts{}, d, func(c *replay.Config) { c.MaxHandshakes = 1 })
		for i := range 3 {
			feed(h.r, key(i), open(), data("x\n"), fin())
		}
		waitFor(t, "a dial in flight", func() bool { return d.inFlight.Load() >= 1 })
		h.cancel()
		if !waitReplay(h.r, promptly) {
			t.Fatalf("Wait did not return within %v of cancel", promptly)
		}
		// A queued session may still call the DialFunc, but only with
		// the cancelled context (the token and ctx.Done race in dial).
		if n := d.live.Load(); n != 1 {
			t.Errorf("%d dials with a live context, want 1: the queued sessions must not dial after cancel", n)
		}
		st := h.r.Stats()
		checkOutcomes(t, st)
		if st.Sessions != 3 || st.Completed != 0 {
			t.Errorf("stats %+v: want 3 sessions, none Completed", st)
		}
	})

	// The capture reader blocked in Event by pacing.
	t.Run("paced Event", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, serverOpts{}, nil, func(c *replay.Config) { c.Speed = 1 })
		k := key(1)
		feed(h.r, k, at(open(), 0), at(data("one\n"), 0))
		fed := make(chan struct{})
		go func() {
			defer close(fed)
			feed(h.r, k, at(data("later\n"), time.Hour), at(fin(), time.Hour))
		}()
		h.srv.waitBytes(t, 4)
		if waitChan(fed, 100*time.Millisecond) {
			t.Fatalf("Event of an event due in an hour returned at once")
		}
		h.cancel()
		if !waitChan(fed, promptly) {
			t.Fatalf("Event still blocked %v after cancel", promptly)
		}
		if !waitReplay(h.r, promptly) {
			t.Fatalf("Wait did not return within %v of cancel", promptly)
		}
		checkOutcomes(t, h.r.Stats())
	})
}

// TestReopenedKey: a new EvOpen for a key whose session has no captured
// end (a second --loop pass, a second input file) supersedes it; the old
// session must still end by CloseInput at the latest, not linger until
// Idle (how it ends, FIN or RST, is the replayer's choice).
func TestReopenedKey(t *testing.T) {
	t.Parallel()
	// Idle outlasts the check but lets a failed run clean up.
	h := newHarness(t, serverOpts{answer: 10}, nil, func(c *replay.Config) { c.Idle = 8 * time.Second })
	k := key(1)
	feed(h.r, k, open(), data("first\n"))
	h.srv.waitBytes(t, 6)
	feed(h.r, k, open(), data("second\n"), turn(10), fin())
	h.r.CloseInput()
	if !waitReplay(h.r, promptly*2) {
		t.Fatalf("Wait did not return within %v of CloseInput; stats %+v (the superseded session is unreachable by CloseInput)", promptly*2, h.r.Stats())
	}
	recs := h.srv.waitConns(t, 2) // in accept order: the first session's first
	if string(recs[0].data) != "first\n" || recs[0].end == endOpen {
		t.Errorf("superseded session: server received %q, end %q", recs[0].data, recs[0].end)
	}
	if string(recs[1].data) != "second\n" || recs[1].end != endFIN || len(recs[1].answers) != 1 || !recs[1].endAt.After(recs[1].answers[0]) {
		t.Errorf("new session: server received %q, end %q, want FIN after the answer", recs[1].data, recs[1].end)
	}
	st := h.r.Stats()
	checkOutcomes(t, st)
	if st.Sessions != 2 || st.Completed < 1 || st.TimedOut != 0 {
		t.Errorf("stats %+v: want 2 sessions, the new one Completed, none timed out", st)
	}
}

// TestCopiesOffsetAdmit: -n 3 replays each session three times, the first
// from the captured port shifted by -f, the others from the copy port range
// in turn, skipping a busy one; Admit sheds sessions and counts them.
func TestCopiesOffsetAdmit(t *testing.T) {
	t.Parallel()
	d := &dialer{busy: func(src netip.AddrPort) bool { return src.Port() == 1125 }}
	srv := newServer(t, serverOpts{answer: 3})
	admitted := 0
	r, _ := newReplayer(t, srv.addr, d, func(c *replay.Config) {
		c.Copies, c.PortOffset = 3, 100
		c.Admit = func() bool { admitted++; return admitted <= 1 } // the second session is shed
	}, srv.close)
	k1 := session.SessionKey{Client: netip.MustParseAddrPort("192.0.2.10:4000"), Server: capturedServer}
	k2 := session.SessionKey{Client: netip.MustParseAddrPort("192.0.2.11:4000"), Server: capturedServer}
	feed(r, k1, open(), data("req\n"), turn(3), data("again\n"), fin())
	feed(r, k2, open(), data("shed\n"), fin())
	r.CloseInput()
	if !waitReplay(r, bound) {
		t.Fatal("Wait did not return")
	}
	recs := srv.waitConns(t, 3)
	for _, rec := range recs {
		if string(rec.data) != "req\nagain\n" || rec.end != endFIN {
			t.Errorf("a copy delivered %q, end %q; want every copy to replay the whole session", rec.data, rec.end)
		}
	}
	var ports []uint16
	for _, c := range d.snapshot() {
		if c.src.Addr() != k1.Client.Addr() {
			t.Errorf("dial from %v, want the captured address %v", c.src, k1.Client.Addr())
		}
		ports = append(ports, c.src.Port())
	}
	slices.Sort(ports)
	// Copy ports start -f (100) into the range: 1124 and 1125 go to the two
	// copies in some order; 1125 is busy, so that copy moves on to 1126. No
	// copy falls back to a stack-chosen port.
	if !slices.Equal(ports, []uint16{1124, 1125, 1126, 4100}) {
		t.Errorf("dialed from ports %v, want the captured port shifted by -f, then copy ports 1124, 1125 (busy), 1126", ports)
	}
	expectStats(t, r.Stats(), map[string]uint64{"Sessions": 3, "Completed": 3, "Shed": 1, "BytesSent": 30})
}

// TestReasons: every session that did not complete is counted under a
// named reason, and sessions cut by the end of the replay are
// "interrupted" (or "never-started" before their handshake), not failed.
// Before, these were bare outcome counts and a cancelled session was
// Failed.
func TestReasons(t *testing.T) {
	t.Parallel()
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().(*net.TCPAddr).AddrPort()
		ln.Close()
		r, _ := newReplayer(t, addr, &dialer{}, nil, nil)
		feed(r, key(1), open(), data("hello\n"), fin())
		if !waitReplay(r, bound) {
			t.Fatal("Wait did not return")
		}
		if got := r.Stats().Reasons; got["refused"] != 1 || len(got) != 1 {
			t.Errorf("reasons %v, want refused: 1", got)
		}
	})
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, serverOpts{}, nil, func(c *replay.Config) { c.Idle = 200 * time.Millisecond })
		feed(h.r, key(1), open(), data("GET / HTTP/1.1\n"))
		st := h.wait(t)
		if st.Reasons["idle-timeout"] != 1 {
			t.Errorf("reasons %v, want idle-timeout: 1", st.Reasons)
		}
	})
	t.Run("interrupted and never started", func(t *testing.T) {
		t.Parallel()
		// Session 1 is connected and waits for events; session 2's
		// handshake is still held when the replay is stopped.
		d := &dialer{}
		h := newHarness(t, serverOpts{}, d, func(c *replay.Config) { c.Idle = time.Minute })
		feed(h.r, key(1), open(), data("one\n"))
		h.srv.waitBytes(t, 4)
		d.mu.Lock()
		d.hold = time.Minute
		d.mu.Unlock()
		feed(h.r, key(2), open(), data("two\n"))
		waitFor(t, "the second dial", func() bool { return len(d.snapshot()) == 2 })
		h.cancel()
		if !waitReplay(h.r, promptly) {
			t.Fatal("Wait did not return")
		}
		st := h.r.Stats()
		checkOutcomes(t, st)
		if st.Interrupted != 2 || st.Failed != 0 {
			t.Errorf("interrupted %d, failed %d; want 2 interrupted, 0 failed", st.Interrupted, st.Failed)
		}
		if st.Reasons["interrupted"] != 1 || st.Reasons["never-started"] != 1 {
			t.Errorf("reasons %v, want interrupted: 1, never-started: 1", st.Reasons)
		}
	})
	t.Run("shed", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, serverOpts{}, nil, func(c *replay.Config) { c.Admit = func() bool { return false } })
		feed(h.r, key(1), open(), data("one\n"), fin())
		st := h.wait(t)
		if st.Shed != 1 || st.Reasons["shed-memory"] != 1 {
			t.Errorf("shed %d, reasons %v; want 1 and shed-memory: 1", st.Shed, st.Reasons)
		}
	})
}
