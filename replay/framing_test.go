package replay_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/session"
)

// lineFramer frames a toy line protocol: every client line is a request,
// every server line an answer unit (a greeting line included). It stands
// in for the protocol packages, which have their own tests.
type lineFramer struct {
	mu      sync.Mutex
	answers atomic.Int64
}

func (f *lineFramer) Client([]byte) {}
func (f *lineFramer) Server(p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers.Add(int64(bytes.Count(p, []byte("\n"))))
}
func (f *lineFramer) Answers() int { return int(f.answers.Load()) }
func (f *lineFramer) Err() error   { return nil }

var lineProtocol = replay.Protocol{
	Name:         "line",
	New:          func() replay.Framer { return new(lineFramer) },
	Detect:       func(p []byte) bool { return bytes.HasPrefix(p, []byte("REQ")) },
	DetectServer: func(p []byte) bool { return bytes.HasPrefix(p, []byte("HELLO")) },
}

// lineTarget answers each request line with one long line written in two
// parts, a pause longer than Quiet between them, and notes requests that
// arrived before the previous answer was complete. With greet it says
// HELLO first, at once, as a server-first protocol does.
type lineTarget struct {
	addr     netip.AddrPort
	greet    bool
	pause    time.Duration
	requests atomic.Int64
	early    atomic.Int64
}

func newLineTarget(t *testing.T, greet bool, pause time.Duration) *lineTarget {
	t.Helper()
	lt := &lineTarget{greet: greet, pause: pause}
	lt.addr = serveTCP(t, lt.serve)
	return lt
}

func (lt *lineTarget) serve(c net.Conn) {
	defer c.Close()
	if lt.greet {
		fmt.Fprint(c, "HELLO from a target that talks longer than production\n")
	}
	br := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(bound))
		if _, err := br.ReadString('\n'); err != nil {
			return
		}
		lt.requests.Add(1)
		fmt.Fprint(c, "OK "+strings.Repeat("x", 300))
		time.Sleep(lt.pause)
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := br.Peek(1); err == nil {
			lt.early.Add(1) // the next request did not wait for this answer's end
		}
		fmt.Fprint(c, "\n")
	}
}

func srvData(s string) session.Event {
	return session.Event{Kind: session.EvServerData, Time: t0, Data: []byte(s)}
}

// lineSession is a captured session whose answers were 3 bytes each: far
// shorter than the target's, which also come in two parts.
func lineSession(greeting string) []session.Event {
	evs := []session.Event{open()}
	if greeting != "" {
		evs = append(evs, srvData(greeting), turn(len(greeting)))
	}
	return append(evs, data("REQ 1\n"), srvData("A\n"), turn(2), data("REQ 2\n"), srvData("B\n"), turn(2), data("REQ 3\n"), srvData("C\n"), turn(2), fin())
}

// TestProtocolFramingCountsAnswers: with the protocol framed, each turn
// waits until the target gave as many answers as the capture shows before
// it, whatever their sizes; without framing the captured sizes send the
// next request while the answer is still coming. A server-first greeting
// that arrives before the protocol is decided still counts.
func TestProtocolFramingCountsAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		greeting  string // the captured server's first line, if it spoke first
		protocols []replay.Protocol
		force     string
		wantEarly bool
	}{
		{name: "framed", protocols: []replay.Protocol{lineProtocol}},
		{name: "framed server-first", greeting: "HELLO\n", protocols: []replay.Protocol{lineProtocol}},
		// The server spoke first with bytes no protocol claims (as an
		// HTTP/2 server's SETTINGS before the client's preface): the
		// client's first bytes decide, and the turn before them still
		// waits for the greeting by framing.
		{name: "server-first, decided by the client", greeting: "WELCOME\n", protocols: []replay.Protocol{lineProtocol}},
		{name: "not detected", protocols: nil, wantEarly: true},
		{name: "forced none", protocols: []replay.Protocol{lineProtocol}, force: replay.ProtocolNone, wantEarly: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			target := newLineTarget(t, tc.greeting != "", 150*time.Millisecond)
			r, _ := newReplayer(t, target.addr, &dialer{tap: true}, func(c *replay.Config) {
				c.Quiet = 20 * time.Millisecond
				c.Protocols = tc.protocols
				c.Protocol = tc.force
			}, nil)
			feed(r, key(1), lineSession(tc.greeting)...)
			r.CloseInput()
			if !waitReplay(r, bound) {
				t.Fatal("Wait did not return")
			}
			st := r.Stats()
			if target.requests.Load() != 3 || st.Completed != 1 {
				t.Fatalf("target got %d requests, stats %+v: want 3 and a completed session", target.requests.Load(), st)
			}
			early := target.early.Load()
			switch {
			case tc.wantEarly && early == 0:
				t.Errorf("no request came early without framing: the test does not tell the cases apart")
			case !tc.wantEarly && early != 0:
				t.Errorf("%d requests came before the previous answer was complete", early)
			}
			turns := uint64(3)
			if tc.greeting != "" {
				turns = 4
			}
			ps, ok := st.Protocols["line"]
			switch {
			case tc.wantEarly && ok:
				t.Errorf("a session counted as line protocol: %+v", st.Protocols)
			case !tc.wantEarly && (!ok || ps.Sessions != 1 || ps.Turns != turns || ps.Framed != turns || ps.TurnWait != 0):
				t.Errorf("protocol stats %+v: want 1 session, %d turns all framed", st.Protocols, turns)
			case !tc.wantEarly && st.TurnsFramed != turns:
				t.Errorf("TurnsFramed %d, want %d", st.TurnsFramed, turns)
			}
		})
	}
}

// TestProtocolFramingFallsBackWhenCaptureHoled: production's answers
// cannot be counted past a hole in the captured server bytes; the turns
// then end by size and silence, never by a wrong count.
func TestProtocolFramingFallsBackWhenCaptureHoled(t *testing.T) {
	t.Parallel()
	target := newLineTarget(t, false, 0)
	r, _ := newReplayer(t, target.addr, &dialer{tap: true}, func(c *replay.Config) {
		c.Quiet = 20 * time.Millisecond
		c.Protocols = []replay.Protocol{lineProtocol}
	}, nil)
	hole := srvData("B\n")
	hole.Reason = session.ReasonServerHole
	feed(r, key(1), open(), data("REQ 1\n"), srvData("A\n"), turn(2), data("REQ 2\n"), hole, turn(2), data("REQ 3\n"), fin())
	r.CloseInput()
	if !waitReplay(r, bound) {
		t.Fatal("Wait did not return")
	}
	st := r.Stats()
	ps := st.Protocols["line"]
	if target.requests.Load() != 3 || ps.Turns != 2 || ps.Framed != 1 || ps.BySize+ps.ByQuiet != 1 {
		t.Errorf("%d requests, protocol stats %+v: want 3 requests, 2 turns: 1 framed, 1 by size or silence", target.requests.Load(), st.Protocols)
	}
}

// TestUnjoinableProtocolSkipped: a session seen mid-stream whose protocol
// cannot be joined (HTTP/2 has no preface or HPACK state mid-stream) is
// skipped and counted, never dialed; one that can is replayed.
func TestUnjoinableProtocolSkipped(t *testing.T) {
	t.Parallel()
	target := newLineTarget(t, false, 0)
	noJoin := lineProtocol
	noJoin.NoJoin = true
	d := &dialer{tap: true}
	r, _ := newReplayer(t, target.addr, d, func(c *replay.Config) {
		c.Protocols = []replay.Protocol{noJoin}
		c.Protocol = "line"
	}, nil)
	joined := open()
	joined.Joined = true
	feed(r, key(1), joined, data("REQ 1\n"), fin())
	r.CloseInput()
	if !waitReplay(r, bound) {
		t.Fatal("Wait did not return")
	}
	if st := r.Stats(); st.Unjoinable != 1 || st.Sessions != 0 || len(d.snapshot()) != 0 {
		t.Errorf("stats %+v, %d dials: want the session skipped as unjoinable, not dialed", st, len(d.snapshot()))
	}

	r, _ = newReplayer(t, target.addr, d, func(c *replay.Config) { c.Protocols = []replay.Protocol{lineProtocol} }, nil)
	feed(r, key(2), joined, data("REQ 1\n"), fin())
	r.CloseInput()
	if !waitReplay(r, bound) {
		t.Fatal("Wait did not return")
	}
	if st := r.Stats(); st.Unjoinable != 0 || st.Completed != 1 {
		t.Errorf("stats %+v: want the joinable session replayed", st)
	}
}

// TestJoinedSessionFramedAtMessageBoundary: a session seen mid-stream is
// framed from its join point only by a stateless protocol whose framer
// recognises the first bytes there as a request; otherwise (bytes in the
// middle of a message, or a protocol with connection state) it is replayed
// unframed, by size and silence.
func TestJoinedSessionFramedAtMessageBoundary(t *testing.T) {
	t.Parallel()
	stateless := lineProtocol
	stateless.Stateless = true
	for _, tc := range []struct {
		name       string
		proto      replay.Protocol
		first      string
		wantFramed bool
	}{
		{"stateless, at a request", stateless, "REQ 1\n", true},
		{"stateless, mid-message", stateless, "middle of something\n", false},
		{"with connection state", lineProtocol, "REQ 1\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			target := newLineTarget(t, false, 0)
			r, _ := newReplayer(t, target.addr, &dialer{tap: true}, func(c *replay.Config) {
				c.Quiet = 20 * time.Millisecond
				c.Protocols = []replay.Protocol{tc.proto}
			}, nil)
			joined := open()
			joined.Joined = true
			feed(r, key(1), joined, data(tc.first), srvData("A\n"), turn(2), data("REQ 2\n"), srvData("B\n"), turn(2), data("REQ 3\n"), fin())
			r.CloseInput()
			if !waitReplay(r, bound) {
				t.Fatal("Wait did not return")
			}
			st := r.Stats()
			framed := st.Protocols["line"].Framed
			if st.Completed != 1 || target.requests.Load() != 3 || (framed == 2) != tc.wantFramed || (!tc.wantFramed && framed != 0) {
				t.Errorf("stats %+v, %d requests: want the session completed, turns framed: %v", st, target.requests.Load(), tc.wantFramed)
			}
		})
	}
}
