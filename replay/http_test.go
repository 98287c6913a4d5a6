package replay_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/session"
)

// httpTarget is a raw HTTP/1.1 server for the framing tests: it answers
// each request with a chunked body written in parts, and notes when the
// client's next bytes were already there before the last part went out (the
// replayer did not wait for the whole answer).
type httpTarget struct {
	addr      netip.AddrPort
	parts     int
	partDelay time.Duration
	partSize  int
	requests  atomic.Int64
	early     atomic.Int64
}

func newHTTPTarget(t *testing.T, parts, partSize int, partDelay time.Duration) *httpTarget {
	t.Helper()
	h := &httpTarget{parts: parts, partDelay: partDelay, partSize: partSize}
	h.addr = serveTCP(t, h.serve)
	return h
}

// serveTCP accepts loopback connections and serves each on its own
// goroutine until the test ends; the cleanup waits for them all.
func serveTCP(t *testing.T, serve func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return netip.MustParseAddrPort(ln.Addr().String())
}

func (h *httpTarget) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(bound))
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		h.requests.Add(1)
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
			return
		}
		for i := range h.parts {
			time.Sleep(h.partDelay)
			if i == h.parts-1 {
				// Anything of the next request here already means the
				// client did not wait for this answer's end.
				c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				if _, err := br.Peek(1); err == nil {
					h.early.Add(1)
				}
			}
			if _, err := fmt.Fprintf(c, "%x\r\n%s\r\n", h.partSize, strings.Repeat("b", h.partSize)); err != nil {
				return
			}
		}
		if _, err := io.WriteString(c, "0\r\n\r\n"); err != nil {
			return
		}
	}
}

// httpSession is three keep-alive GETs whose captured answers were 10
// bytes each: far shorter than the target's.
func httpSession() []session.Event {
	get := func(p string) session.Event { return data("GET " + p + " HTTP/1.1\r\nHost: t\r\n\r\n") }
	return []session.Event{open(), get("/1"), turn(10), get("/2"), turn(10), get("/3"), turn(10), fin()}
}

// TestHTTPFramingWaitsForTheWholeAnswer: the target answers longer than
// the capture and in parts with pauses longer than Quiet. HTTP framing
// waits for each answer's last chunk; without it the size and quiet rules
// send the next request while the answer is still coming.
func TestHTTPFramingWaitsForTheWholeAnswer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		tap, off  bool
		wantEarly bool
	}{
		{name: "framed", tap: true},
		{name: "framing off", tap: true, off: true, wantEarly: true},
		{name: "no tap", wantEarly: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			target := newHTTPTarget(t, 3, 100, 150*time.Millisecond)
			r, _ := newReplayer(t, target.addr, &dialer{tap: tc.tap}, func(c *replay.Config) {
				c.Quiet = 20 * time.Millisecond
				c.NoHTTPFraming = tc.off
			}, nil)
			feed(r, key(1), httpSession()...)
			r.CloseInput()
			if !waitReplay(r, bound) {
				t.Fatal("Wait did not return")
			}
			st := r.Stats()
			if target.requests.Load() != 3 {
				t.Fatalf("target got %d requests, want 3", target.requests.Load())
			}
			early := target.early.Load()
			switch {
			case tc.wantEarly && early == 0:
				t.Errorf("no request came early without framing: the test does not tell the cases apart")
			case !tc.wantEarly && early != 0:
				t.Errorf("%d requests came before the previous answer was complete", early)
			}
			wantFramed := uint64(3)
			if tc.wantEarly {
				wantFramed = 0
			}
			if st.TurnsFramed != wantFramed || st.Completed != 1 {
				t.Errorf("stats %+v: want %d framed turns, the session completed", st, wantFramed)
			}
		})
	}
}

// TestHTTPFramingShortAnswers: the target answers shorter than the capture
// and then stays silent. With framing each turn ends at the answer's end;
// the quiet rule is set longer than TurnWait here, so without framing every
// turn would run into TurnWait and be counted unanswered.
func TestHTTPFramingShortAnswers(t *testing.T) {
	t.Parallel()
	target := newHTTPTarget(t, 1, 4, 0)
	r, _ := newReplayer(t, target.addr, &dialer{tap: true}, func(c *replay.Config) {
		c.Quiet = 10 * time.Second
		c.TurnWait = 5 * time.Second
	}, nil)
	evs := httpSession()
	for i := range evs {
		if evs[i].Kind == session.EvTurn {
			evs[i].ServerBytes = 5000
		}
	}
	feed(r, key(1), evs...)
	r.CloseInput()
	if !waitReplay(r, bound) {
		t.Fatal("Wait did not return")
	}
	st := r.Stats()
	if st.TurnsFramed != 3 || st.TurnsUnanswered != 0 || st.Completed != 1 || target.requests.Load() != 3 {
		t.Errorf("stats %+v, %d requests at the target: want 3 framed turns, none unanswered, 3 requests", st, target.requests.Load())
	}
	// Every answered turn is timed once.
	if h := st.TurnLatency; h.Count != 3 || h.SumSeconds <= 0 || len(h.Counts) != len(h.Bounds)+1 {
		t.Errorf("turn latency %+v: want 3 turns timed", h)
	}
}

// TestHTTPFramingFallsBack: an answer the framer cannot follow (not HTTP)
// falls back to the size and quiet rules: the session still completes and
// no turn counts as framed.
func TestHTTPFramingFallsBack(t *testing.T) {
	t.Parallel()
	srv := newServer(t, serverOpts{answer: 50})
	r, _ := newReplayer(t, srv.addr, &dialer{tap: true}, nil, srv.close)
	feed(r, key(1), open(), data("GET /a HTTP/1.1\n"), turn(50), data("GET /b HTTP/1.1\n"), turn(50), fin())
	r.CloseInput()
	if !waitReplay(r, bound) {
		t.Fatal("Wait did not return")
	}
	recs := srv.waitConns(t, 1)
	if string(recs[0].data) != "GET /a HTTP/1.1\nGET /b HTTP/1.1\n" {
		t.Errorf("target got %q", recs[0].data)
	}
	expectStats(t, r.Stats(), map[string]uint64{"Sessions": 1, "Completed": 1, "Turns": 2, "TurnsFramed": 0, "TurnsUnanswered": 0})
}
