package session

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/capture"
)

// A client and a server of the lab's range, and a capture's start time.
var (
	cli = netip.MustParseAddrPort("198.18.0.10:40000")
	srv = netip.MustParseAddrPort("198.18.1.1:80")
	t0  = time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC)
)

type recEvent struct {
	k  SessionKey
	ev Event
}

type recorder struct{ evs []recEvent }

func (r *recorder) Event(k SessionKey, ev Event) { r.evs = append(r.evs, recEvent{k, ev}) }

// summary renders events compactly, joining consecutive data events (how a
// run of bytes is split into events is not part of the contract).
func (r *recorder) summary() []string {
	var out []string
	var data []byte
	flush := func() {
		if data != nil {
			out = append(out, "data:"+string(data))
			data = nil
		}
	}
	for _, e := range r.evs {
		switch e.ev.Kind {
		case EvData:
			data = append(data, e.ev.Data...)
			continue
		}
		flush()
		switch e.ev.Kind {
		case EvTurn:
			out = append(out, fmt.Sprintf("turn:%d", e.ev.ServerBytes))
		case EvGap, EvServerClose:
			out = append(out, e.ev.Kind.String()+":"+e.ev.Reason)
		case EvServerData:
			if e.ev.Reason != "" {
				out = append(out, "hole")
			}
			out = append(out, "srv:"+string(e.ev.Data))
		default:
			out = append(out, e.ev.Kind.String())
		}
	}
	flush()
	return out
}

// conv drives one captured connection through a tracker.
type conv struct {
	t          *testing.T
	tr         *Tracker
	rec        *recorder
	cli, srv   netip.AddrPort
	cisn, sisn uint32
	now        time.Time
}

func newConv(t *testing.T, cfg TrackerConfig) *conv {
	rec := &recorder{}
	if cfg.IsServer == nil {
		cfg.IsServer = func(ap netip.AddrPort) bool { return ap == srv }
	}
	return &conv{t: t, tr: NewTracker(cfg, rec), rec: rec, cli: cli, srv: srv, cisn: 1000, sisn: 90000, now: t0}
}

func (c *conv) tick() time.Time {
	c.now = c.now.Add(time.Millisecond)
	return c.now
}

// c2s sends client bytes at stream offset off.
func (c *conv) c2s(off int, data string, flags capture.TCPFlags) {
	c.tr.Add(capture.Segment{Time: c.tick(), Src: c.cli, Dst: c.srv, Seq: c.cisn + 1 + uint32(off), Ack: c.sisn + 1, Flags: flags | capture.FlagACK, Payload: []byte(data)})
}

// s2c sends server bytes at server offset off, acknowledging client offset ack.
func (c *conv) s2c(off int, data string, ack int, flags capture.TCPFlags) {
	c.tr.Add(capture.Segment{Time: c.tick(), Src: c.srv, Dst: c.cli, Seq: c.sisn + 1 + uint32(off), Ack: c.cisn + 1 + uint32(ack), Flags: flags | capture.FlagACK, Payload: []byte(data)})
}

func (c *conv) syn() {
	c.tr.Add(capture.Segment{Time: c.tick(), Src: c.cli, Dst: c.srv, Seq: c.cisn, Flags: capture.FlagSYN})
}

func (c *conv) open() {
	c.syn()
	c.tr.Add(capture.Segment{Time: c.tick(), Src: c.srv, Dst: c.cli, Seq: c.sisn, Ack: c.cisn + 1, Flags: capture.FlagSYN | capture.FlagACK})
	c.c2s(0, "", 0)
}

func (c *conv) want(want ...string) {
	c.t.Helper()
	if got := c.rec.summary(); !slices.Equal(got, want) {
		c.t.Errorf("events\n got %q\nwant %q", got, want)
	}
}

func (c *conv) stats(want TrackerStats) {
	c.t.Helper()
	if got := c.tr.Stats(); got != want {
		c.t.Errorf("stats\n got %+v\nwant %+v", got, want)
	}
}

// TestTrackerServerData: with ServerData the server's bytes come out in
// order and once each (a retransmission, also one overlapping new bytes,
// adds only what is new), a hole is marked, and turns are as without it.
func TestTrackerServerData(t *testing.T) {
	c := newConv(t, TrackerConfig{ServerData: true})
	c.open()
	c.c2s(0, "GET", 0)
	c.s2c(0, "one", 3, 0)
	c.s2c(0, "one", 3, 0)   // retransmission
	c.s2c(2, "e+two", 3, 0) // overlaps: "+two" is new
	c.c2s(3, "PUT", 0)
	c.s2c(10, "late", 6, 0) // "xxx" at 7..9 was never captured
	c.c2s(6, "END", capture.FlagFIN)
	c.want("open", "data:GET", "srv:one", "srv:+two", "turn:7", "data:PUT", "hole", "srv:late", "turn:7", "data:END", "fin")

	// Without it: the same turns, no server bytes.
	c = newConv(t, TrackerConfig{})
	c.open()
	c.c2s(0, "GET", 0)
	c.s2c(0, "one", 3, 0)
	c.c2s(3, "PUT", 0)
	c.want("open", "data:GET", "turn:3", "data:PUT")
}

func TestTrackerInOrder(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.open()
	c.c2s(0, "hello", capture.FlagPSH)
	c.c2s(5, " world", capture.FlagPSH)
	c.s2c(0, "", 11, 0)
	c.c2s(11, "", capture.FlagFIN)
	c.s2c(0, "", 12, capture.FlagFIN)
	c.c2s(12, "", 0) // last ACK: absorbed by the ended session
	c.want("open", "data:hello world", "fin", "server-close:server FIN")
	c.stats(TrackerStats{Sessions: 1, Ignored: 1})
}

func TestTrackerServerClosesFirst(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.open()
	c.c2s(0, "GET /", capture.FlagPSH)
	c.s2c(0, "200 OK", 5, capture.FlagFIN)
	c.c2s(5, "", capture.FlagFIN)
	c.want("open", "data:GET /", "server-close:server FIN", "turn:6", "fin")
	c.stats(TrackerStats{Sessions: 1})
}

func TestTrackerDuplicates(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.open()
	c.syn() // SYN retransmission
	c.c2s(0, "hello", 0)
	c.c2s(0, "hello", 0)
	c.c2s(0, "hel", 0)
	c.c2s(3, "lo world", 0) // partial retransmission
	c.want("open", "data:hello world")
	c.stats(TrackerStats{Sessions: 1, Duplicates: 3, Retransmits: 5 + 3 + 2, Open: 1})
}

func TestTrackerOutOfOrder(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.open()
	c.c2s(10, "KLMNOPQRST", 0)
	c.c2s(25, "Z", 0)
	c.c2s(20, "UVWXY", 0)
	c.want("open")
	c.c2s(0, "ABCDEFGHIJ", 0)
	c.want("open", "data:ABCDEFGHIJKLMNOPQRSTUVWXYZ")
	c.stats(TrackerStats{Sessions: 1, OutOfOrder: 3, Open: 1})
}

func TestTrackerOverlap(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.open()
	c.c2s(10, "klmno", 0)
	c.c2s(20, "uvwxy", 0)
	// Covers both buffered pieces and the holes around them; its copy of
	// the buffered bytes differs, and the first-seen bytes win.
	c.c2s(5, "fghijKLMNOpqrstUVWXYz", 0)
	c.c2s(0, "abcdefg", 0)
	c.want("open", "data:abcdefghijklmnopqrstuvwxyz")
	st := c.tr.Stats()
	if st.Conflicts != 1 || st.Retransmits != 5+5+2 || st.OutOfOrder != 3 {
		t.Errorf("stats %+v", st)
	}
	// A repeat of delivered bytes that differs is a conflict too.
	c.c2s(24, "Y!", 0)
	if st := c.tr.Stats(); st.Conflicts != 2 {
		t.Errorf("conflicts %d, want 2", st.Conflicts)
	}
}

func TestTrackerSuperSegment(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.open()
	big := strings.Repeat("0123456789", 6500) // a GRO/TSO segment far above the MTU
	c.c2s(1000, big[1000:], 0)
	c.c2s(0, big[:1500], 0) // overlaps the super-segment
	c.want("open", "data:"+big)
}

func TestTrackerSeqWraparound(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.cisn = 0xffffff00
	c.sisn = 0xfffffff0
	c.open()
	var want []byte
	for i := 0; i < 10; i++ {
		want = append(want, bytes.Repeat([]byte{byte('a' + i)}, 100)...)
	}
	c.c2s(0, string(want[:200]), 0)
	c.c2s(400, string(want[400:]), 0) // beyond 2^32, ahead of a hole across it
	c.s2c(0, "response", 200, 0)
	c.c2s(200, string(want[200:400]), 0)
	c.c2s(1000, "", capture.FlagFIN)
	c.s2c(8, "", 1001, capture.FlagFIN)
	c.want("open", "data:"+string(want[:200]), "turn:8", "data:"+string(want[200:]), "fin", "server-close:server FIN")
	c.stats(TrackerStats{Sessions: 1, OutOfOrder: 1})
}

type countSink struct {
	n     int64
	kinds []EventKind
}

func (s *countSink) Event(_ SessionKey, ev Event) {
	s.n += int64(len(ev.Data))
	if ev.Kind != EvData {
		s.kinds = append(s.kinds, ev.Kind)
	}
}

// TestTrackerBeyond4GiB runs a stream past 2^32 bytes, with reordering at
// the wrap of the 32-bit sequence space (the payload is shared, so this
// costs no memory).
func TestTrackerBeyond4GiB(t *testing.T) {
	sink := &countSink{}
	tr := NewTracker(TrackerConfig{IsServer: func(ap netip.AddrPort) bool { return ap == srv }}, sink)
	isn := uint32(0x7fff0000)
	tr.Add(capture.Segment{Time: t0, Src: cli, Dst: srv, Seq: isn, Flags: capture.FlagSYN})
	const seg = 1 << 20
	payload := make([]byte, seg)
	total := int64(5<<30 + 12345)
	var off int64
	for off < total {
		n := min(int64(seg), total-off)
		p := payload[:n]
		if off == 4<<30 { // swap two segments around the second sequence wrap
			q := min(int64(seg), total-off-n)
			tr.Add(capture.Segment{Time: t0, Src: cli, Dst: srv, Seq: isn + 1 + uint32(off+n), Flags: capture.FlagACK, Payload: payload[:q]})
			tr.Add(capture.Segment{Time: t0, Src: cli, Dst: srv, Seq: isn + 1 + uint32(off), Flags: capture.FlagACK, Payload: p})
			off += n + q
			continue
		}
		tr.Add(capture.Segment{Time: t0, Src: cli, Dst: srv, Seq: isn + 1 + uint32(off), Flags: capture.FlagACK, Payload: p})
		off += n
	}
	tr.Add(capture.Segment{Time: t0, Src: cli, Dst: srv, Seq: isn + 1 + uint32(total), Flags: capture.FlagACK | capture.FlagFIN})
	// The server's ACK of everything, taken modulo 2^32, is no hole.
	tr.Add(capture.Segment{Time: t0, Src: srv, Dst: cli, Seq: 1, Ack: isn + 1 + uint32(total) + 1, Flags: capture.FlagACK})
	if sink.n != total || !slices.Equal(sink.kinds, []EventKind{EvOpen, EvFin}) {
		t.Errorf("delivered %d of %d bytes, events %v", sink.n, total, sink.kinds)
	}
	if st := tr.Stats(); st.OutOfOrder != 1 || st.Gaps != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestTrackerHoleByServerACK(t *testing.T) {
	t.Run("immediate", func(t *testing.T) {
		c := newConv(t, TrackerConfig{HoleGrace: -1})
		c.open()
		c.c2s(0, strings.Repeat("a", 100), 0)
		c.c2s(200, strings.Repeat("c", 100), 0) // buffered behind the hole
		c.s2c(0, "", 300, 0)                    // server got bytes 100-199, the capture did not
		c.c2s(100, strings.Repeat("b", 100), 0) // too late: the session ended
		c.want("open", "data:"+strings.Repeat("a", 100),
			"gap:hole of 100 bytes at client stream offset 100 (acknowledged by the server, missing from the capture)")
		c.stats(TrackerStats{Sessions: 1, Gaps: 1, OutOfOrder: 1, Ignored: 1})
	})
	t.Run("filled-within-grace", func(t *testing.T) {
		// Capture points can record the server's ACK before the data.
		c := newConv(t, TrackerConfig{})
		c.open()
		c.c2s(0, "aaaa", 0)
		c.s2c(0, "", 8, 0)
		c.c2s(4, "bbbb", 0)
		c.want("open", "data:aaaabbbb")
		c.stats(TrackerStats{Sessions: 1, Open: 1})
	})
	t.Run("grace-expires", func(t *testing.T) {
		c := newConv(t, TrackerConfig{HoleGrace: 50 * time.Millisecond})
		c.open()
		c.c2s(0, "aaaa", 0)
		c.s2c(0, "", 8, 0)
		c.now = c.now.Add(time.Second)
		c.s2c(0, "", 8, 0)
		c.want("open", "data:aaaa", "gap:hole of 4 bytes at client stream offset 4 (acknowledged by the server, missing from the capture)")
	})
	t.Run("grace-expires-by-Expire", func(t *testing.T) {
		c := newConv(t, TrackerConfig{HoleGrace: 50 * time.Millisecond})
		c.open()
		c.c2s(0, "aaaa", 0)
		c.s2c(0, "", 8, 0)
		if n := c.tr.Expire(c.now.Add(time.Second), time.Hour); n != 0 {
			t.Errorf("expired %d", n)
		}
		c.want("open", "data:aaaa", "gap:hole of 4 bytes at client stream offset 4 (acknowledged by the server, missing from the capture)")
	})
	t.Run("fin-ack-is-no-hole", func(t *testing.T) {
		c := newConv(t, TrackerConfig{HoleGrace: -1})
		c.open()
		c.c2s(0, "data", capture.FlagFIN)
		c.s2c(0, "", 5, 0) // acknowledges the FIN
		c.want("open", "data:data", "fin")
		c.stats(TrackerStats{Sessions: 1, Open: 1})
	})
	t.Run("missed-fin-is-no-hole", func(t *testing.T) {
		c := newConv(t, TrackerConfig{HoleGrace: -1})
		c.open()
		c.c2s(0, "data", 0)
		c.s2c(0, "", 5, capture.FlagFIN) // acknowledges a FIN the capture lacks
		c.tr.Flush()
		c.want("open", "data:data", "server-close:server FIN")
		c.stats(TrackerStats{Sessions: 1})
	})
	t.Run("fin-ack-with-missing-data", func(t *testing.T) {
		c := newConv(t, TrackerConfig{HoleGrace: -1})
		c.open()
		c.c2s(0, "ab", 0)
		c.c2s(4, "", capture.FlagFIN)
		c.s2c(0, "", 5, 0)
		c.want("open", "data:ab", "gap:hole of 2 bytes at client stream offset 2 (acknowledged by the server, missing from the capture)")
	})
}

func TestTrackerFlushHoles(t *testing.T) {
	t.Run("buffered", func(t *testing.T) {
		c := newConv(t, TrackerConfig{})
		c.open()
		c.c2s(0, "0123456789", 0)
		c.c2s(20, "klmno", 0)
		c.tr.Flush()
		c.want("open", "data:0123456789", "gap:hole of 10 bytes at client stream offset 10 (5 bytes buffered after it)")
		c.stats(TrackerStats{Sessions: 1, Gaps: 1, OutOfOrder: 1})
	})
	t.Run("before-fin", func(t *testing.T) {
		c := newConv(t, TrackerConfig{})
		c.open()
		c.c2s(0, "0123456789", 0)
		c.c2s(20, "", capture.FlagFIN)
		c.tr.Flush()
		c.want("open", "data:0123456789", "gap:hole of 10 bytes at client stream offset 10, before the client FIN")
	})
	t.Run("complete", func(t *testing.T) {
		c := newConv(t, TrackerConfig{})
		c.open()
		c.c2s(0, "0123456789", 0)
		c.tr.Flush()
		c.want("open", "data:0123456789")
		c.stats(TrackerStats{Sessions: 1})
	})
}

func TestTrackerFinOrdering(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.open()
	c.c2s(5, "world", capture.FlagFIN) // FIN with the last data, ahead of the first
	c.c2s(10, "", capture.FlagFIN)     // FIN retransmission
	c.want("open")
	c.c2s(0, "hello", 0)
	c.c2s(10, "!!", 0) // data after the FIN: dropped
	c.want("open", "data:helloworld", "fin")
	c.stats(TrackerStats{Sessions: 1, OutOfOrder: 1, Duplicates: 1, Open: 1})
}

func TestTrackerRST(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.open()
	c.c2s(0, "abc", 0)
	c.c2s(10, "zzz", 0) // stuck behind a hole: not delivered
	c.c2s(3, "", capture.FlagRST)
	c.c2s(3, "def", 0)
	c.s2c(0, "", 6, 0)
	c.want("open", "data:abc", "rst")
	c.stats(TrackerStats{Sessions: 1, OutOfOrder: 1, Ignored: 2})
}

func TestTrackerServerRST(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.open()
	c.c2s(0, "abc", 0)
	c.s2c(0, "", 3, capture.FlagRST)
	c.c2s(3, "def", 0)
	c.want("open", "data:abc", "server-close:server RST")
	c.stats(TrackerStats{Sessions: 1, Ignored: 1})
}

func TestTrackerServerFirst(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.open()
	c.s2c(0, "220 smtp.example ESMTP\r\n", 0, capture.FlagPSH)
	c.s2c(0, "220 smtp.example ESMTP\r\n", 0, capture.FlagPSH) // retransmitted banner
	c.c2s(0, "EHLO x\r\n", capture.FlagPSH)
	c.s2c(24, "250 ok\r\n", 8, capture.FlagPSH)
	c.c2s(8, "QUIT\r\n", capture.FlagPSH)
	c.want("open", "turn:24", "data:EHLO x\r\n", "turn:8", "data:QUIT\r\n")
}

func TestTrackerKeepAliveTurns(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.open()
	off, soff := 0, 0
	req := func(s string) { c.c2s(off, s, capture.FlagPSH); off += len(s) }
	resp := func(parts ...string) {
		for _, p := range parts {
			c.s2c(soff, p, off, capture.FlagPSH)
			soff += len(p)
		}
	}
	req("GET /1 HTTP/1.1\r\n\r\n")
	resp(strings.Repeat("a", 1448), strings.Repeat("b", 552))
	c.s2c(0, strings.Repeat("a", 1448), off, 0) // server retransmission: counted once
	c.c2s(off, "", 0)                           // pure ACK: no turn
	req("GET /2 HTTP/1.1\r\n")
	req("\r\n") // one request in two segments: one turn
	resp(strings.Repeat("c", 300))
	req("GET /3 HTTP/1.1\r\n\r\n")
	resp(strings.Repeat("d", 10), strings.Repeat("e", 20))
	c.c2s(off, "", capture.FlagFIN)
	c.want("open", "data:GET /1 HTTP/1.1\r\n\r\n", "turn:2000", "data:GET /2 HTTP/1.1\r\n\r\n", "turn:300",
		"data:GET /3 HTTP/1.1\r\n\r\n", "turn:30", "fin")
}

// TestTrackerTurnAnchoredByACK: the capture has the server's answer before
// the last request segment it answers. The turn must come after that
// segment, or the replayer would wait for an answer to half a request.
func TestTrackerTurnAnchoredByACK(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.open()
	c.c2s(0, "GET / HT", 0)
	c.s2c(0, "HTTP/1.1 200 OK\r\n\r\n", 18, 0)
	c.c2s(8, "TP/1.1\r\n\r\n", 0)
	c.c2s(18, "GET /2", 0)
	c.want("open", "data:GET / HTTP/1.1\r\n\r\n", "turn:19", "data:GET /2")
	if st := c.tr.Stats(); st.Gaps != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestTrackerPortReuse(t *testing.T) {
	t.Run("after-close", func(t *testing.T) {
		c := newConv(t, TrackerConfig{})
		c.open()
		c.c2s(0, "one", capture.FlagFIN)
		c.s2c(0, "", 4, capture.FlagFIN)
		c.cisn = 500000
		c.open()
		c.c2s(0, "two", 0)
		c.want("open", "data:one", "fin", "server-close:server FIN", "open", "data:two")
		c.stats(TrackerStats{Sessions: 2, Open: 1})
	})
	t.Run("half-closed", func(t *testing.T) {
		c := newConv(t, TrackerConfig{})
		c.open()
		c.c2s(0, "one", capture.FlagFIN)
		c.cisn = 500000
		c.open()
		c.c2s(0, "two", 0)
		c.want("open", "data:one", "fin", "open", "data:two")
		c.stats(TrackerStats{Sessions: 2, Open: 1})
	})
	t.Run("mid-session", func(t *testing.T) {
		c := newConv(t, TrackerConfig{})
		c.open()
		c.c2s(0, "one", 0)
		c.cisn = 500000
		c.open()
		c.c2s(0, "two", 0)
		c.want("open", "data:one", "gap:port reused mid-session", "open", "data:two")
		c.stats(TrackerStats{Sessions: 2, Gaps: 1, Open: 1})
	})
	t.Run("late-syn-retransmit", func(t *testing.T) {
		c := newConv(t, TrackerConfig{})
		c.open()
		c.c2s(0, "one", capture.FlagFIN)
		c.s2c(0, "", 4, capture.FlagFIN)
		c.syn() // the old SYN, late: not a new session
		c.want("open", "data:one", "fin", "server-close:server FIN")
		c.stats(TrackerStats{Sessions: 1, Duplicates: 1})
	})
}

func TestTrackerMidStreamAndIgnored(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.c2s(0, "no syn", 0)
	c.c2s(6, "seen", 0)
	c.s2c(0, "reply", 10, 0)
	c.tr.Add(capture.Segment{Time: c.tick(), Src: netip.MustParseAddrPort("198.18.9.9:1"), Dst: netip.MustParseAddrPort("198.18.9.8:2"), Flags: capture.FlagSYN})
	c.tr.Add(capture.Segment{Time: c.tick(), Src: netip.MustParseAddrPort("198.18.9.9:1"), Dst: srv, Flags: capture.FlagRST})
	c.want()
	c.stats(TrackerStats{MidStream: 1, Ignored: 5})
	// A SYN later on the same key does start a session.
	c.open()
	c.want("open")
}

// keepAlive drives a keep-alive HTTP flow whose SYN the capture missed:
// the capture starts at client offset 1000 and server offset 5000.
type keepAlive struct {
	*conv
	off, soff int
}

func newKeepAlive(t *testing.T, cfg TrackerConfig) *keepAlive {
	return &keepAlive{conv: newConv(t, cfg), off: 1000, soff: 5000}
}

func (k *keepAlive) req(s string) { k.c2s(k.off, s, capture.FlagPSH); k.off += len(s) }

func (k *keepAlive) resp(s string) { k.s2c(k.soff, s, k.off, capture.FlagPSH); k.soff += len(s) }

func (k *keepAlive) ack() { k.c2s(k.off, "", 0) }

func req(n int) string { return fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: x\r\n\r\n", n) }

// TestTrackerJoinMidStream: a keep-alive flow seen from the middle of its
// first request is joined at the second request, which is replayed whole,
// with the server's answers as turns from there.
func TestTrackerJoinMidStream(t *testing.T) {
	c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
	c.req(req(1)[10:]) // the tail of a request: never replayed
	c.resp("HTTP/1.1 200 OK\r\n\r\none")
	c.ack()
	c.req(req(2))
	joinedAt := c.now
	c.resp(strings.Repeat("a", 1448))
	c.resp(strings.Repeat("b", 52))
	c.ack()
	c.req(req(3))
	c.resp("three")
	c.c2s(c.off, "", capture.FlagFIN)
	c.s2c(c.soff, "", c.off+1, capture.FlagFIN)
	c.c2s(c.off+1, "", 0) // the last ACK: absorbed by the ended session
	c.want("open", "data:"+req(2), "turn:1500", "data:"+req(3), "turn:5", "fin", "server-close:server FIN")
	c.stats(TrackerStats{Joined: 1, Ignored: 4})
	if ev := c.rec.evs[0].ev; ev.Kind != EvOpen || !ev.Time.Equal(joinedAt) {
		t.Errorf("first event %v at %v, want open at %v (the joining segment)", ev.Kind, ev.Time, joinedAt)
	}
}

// TestTrackerJoinDefaultOff: the same flow without JoinMidStream is skipped.
func TestTrackerJoinDefaultOff(t *testing.T) {
	c := newKeepAlive(t, TrackerConfig{})
	c.req(req(1))
	c.resp("one")
	c.req(req(2))
	c.resp("two")
	c.c2s(c.off, "", capture.FlagFIN)
	c.want()
	c.stats(TrackerStats{MidStream: 1, Ignored: 5})
}

func TestTrackerJoinNeedsAnswer(t *testing.T) {
	t.Run("acks-only", func(t *testing.T) {
		c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
		c.req(req(1))
		c.s2c(c.soff, "", c.off, 0) // the server acknowledges, says nothing
		c.req(req(2))
		c.s2c(c.soff, "", c.off, 0)
		c.req(req(3))
		c.want()
		c.stats(TrackerStats{MidStream: 1, Ignored: 5})
	})
	t.Run("answer-to-part", func(t *testing.T) {
		// The server spoke while the client was mid-request (an interim
		// answer it sent before receiving everything): no boundary.
		c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
		c.req("POST / HTTP/1.1\r\n")
		c.s2c(c.soff, "early", c.off-3, 0)
		c.soff += 5
		c.req("Content-Length: 0\r\n\r\n")
		c.want()
		c.resp("answer")
		c.req(req(2))
		c.want("open", "data:"+req(2))
		c.stats(TrackerStats{Joined: 1, Ignored: 4, Open: 1})
	})
	t.Run("server-first", func(t *testing.T) {
		// A banner the client has nothing to answer with yet: the
		// client's first bytes after it start a turn (SMTP's EHLO).
		c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
		c.ack()
		c.resp("220 ready\r\n")
		c.req("EHLO x\r\n")
		c.want("open", "data:EHLO x\r\n")
		c.stats(TrackerStats{Joined: 1, Ignored: 2, Open: 1})
	})
}

func TestTrackerJoinRetransmissionsAndReordering(t *testing.T) {
	t.Run("client-retransmits-answered-request", func(t *testing.T) {
		c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
		r1 := req(1)
		c.req(r1)
		c.resp("one")
		c.c2s(c.off-len(r1), r1, capture.FlagPSH) // spurious retransmission: the boundary stays
		c.c2s(c.off-5, r1[len(r1)-5:], 0)
		c.req(req(2))
		c.want("open", "data:"+req(2))
		c.stats(TrackerStats{Joined: 1, Ignored: 4, Open: 1})
	})
	t.Run("retransmission-covers-boundary", func(t *testing.T) {
		// A retransmission coalesced with new bytes: the bytes from the
		// boundary on are the next request.
		c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
		r1 := req(1)
		c.req(r1)
		c.resp("one")
		c.c2s(c.off-4, r1[len(r1)-4:]+req(2), capture.FlagPSH)
		c.off += len(req(2))
		c.want("open", "data:"+req(2))
		c.stats(TrackerStats{Joined: 1, Ignored: 2, Open: 1})
	})
	t.Run("server-retransmits-old-answer", func(t *testing.T) {
		// A retransmitted answer carries the ACK of the moment it was
		// resent, here in the middle of request 2: no boundary there.
		c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
		c.req(req(1))
		c.resp("one")
		r2 := req(2)
		c.req(r2[:9]) // joined here: the answer came before
		c.want("open", "data:"+r2[:9])

		c = newKeepAlive(t, TrackerConfig{JoinMidStream: true})
		c.req(req(1))
		c.s2c(c.soff, "one", c.off-3, 0) // answered before the end arrived
		c.soff += 3
		c.req(r2[:9])
		c.s2c(c.soff-3, "one", c.off, 0) // retransmission acknowledging exactly what was sent
		c.req(r2[9:])
		c.want()
		c.resp("two")
		c.req(req(3))
		c.want("open", "data:"+req(3))
		c.stats(TrackerStats{Joined: 1, Ignored: 6, Open: 1})
	})
	t.Run("out-of-order-after-boundary", func(t *testing.T) {
		// Request 2's second segment overtakes its first: joining at the
		// first would lose the second (nothing is buffered while waiting),
		// so the flow waits for the next boundary.
		c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
		c.req(req(1))
		c.resp("one")
		r2 := req(2)
		c.c2s(c.off+10, r2[10:], capture.FlagPSH)
		c.c2s(c.off, r2[:10], 0)
		c.off += len(r2)
		c.want()
		c.resp("two")
		c.req(req(3))
		c.resp("three")
		c.req(req(4))
		c.want("open", "data:"+req(3), "turn:5", "data:"+req(4))
		c.stats(TrackerStats{Joined: 1, Ignored: 5, Open: 1})
	})
	t.Run("server-ack-beyond-capture", func(t *testing.T) {
		// The server acknowledges client bytes the capture has not shown:
		// the boundary before them is void.
		c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
		c.req(req(1))
		c.resp("one")
		c.off += len(req(2)) // request 2: missed entirely
		c.s2c(c.soff, "", c.off, 0)
		c.req(req(3))
		c.want()
		c.resp("three")
		c.req(req(4))
		c.want("open", "data:"+req(4))
	})
}

// TestTrackerJoinMissingFirstSegment: the capture lacks the first segment
// after a boundary; the flow joins at the following boundary, never in the
// middle of the request.
func TestTrackerJoinMissingFirstSegment(t *testing.T) {
	c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
	c.req(req(1))
	c.resp("one")
	r2 := req(2)
	c.off += 8 // r2[:8] never captured
	c.req(r2[8:])
	c.resp("two")
	c.req(req(3))
	c.resp("three")
	c.c2s(c.off, "", capture.FlagFIN)
	c.want("open", "data:"+req(3), "turn:5", "fin")
	c.stats(TrackerStats{Joined: 1, Ignored: 4, Open: 1})
}

func TestTrackerJoinGivenUp(t *testing.T) {
	for _, tt := range []struct {
		name string
		end  func(c *keepAlive)
	}{
		{"client-fin", func(c *keepAlive) { c.c2s(c.off, "", capture.FlagFIN) }},
		{"client-rst", func(c *keepAlive) { c.c2s(c.off, "", capture.FlagRST) }},
		{"server-fin", func(c *keepAlive) { c.s2c(c.soff, "", c.off, capture.FlagFIN) }},
		{"server-rst", func(c *keepAlive) { c.s2c(c.soff, "", c.off, capture.FlagRST) }},
		{"server-fin-with-answer", func(c *keepAlive) { c.s2c(c.soff, "bye", c.off, capture.FlagFIN) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
			c.req(req(1))
			c.resp("one")
			tt.end(c)
			c.req(req(2)) // at the boundary, too late
			c.resp("two")
			c.req(req(3))
			c.want()
			c.stats(TrackerStats{MidStream: 1, Ignored: 6}) // every segment
			if s := c.tr.sessions[SessionKey{cli, srv}]; s == nil || s.state != stSkip {
				t.Errorf("flow not remembered as skipped: %+v", s)
			}
		})
	}
	t.Run("first-segment-fin", func(t *testing.T) {
		c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
		c.c2s(c.off, "", capture.FlagFIN)
		c.resp("late")
		c.req(req(2))
		c.want()
		c.stats(TrackerStats{MidStream: 1, Ignored: 3})
	})
	t.Run("syn-replaces", func(t *testing.T) {
		c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
		c.req(req(1))
		c.cisn = 700000
		c.open()
		c.c2s(0, "new", 0)
		c.want("open", "data:new")
		c.stats(TrackerStats{Sessions: 1, MidStream: 1, Ignored: 1, Open: 1})
	})
}

// TestTrackerJoinCounters: each flow counts once: a SYN session, a joined
// flow, a flow never reaching a boundary, a given-up flow.
func TestTrackerJoinCounters(t *testing.T) {
	c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
	c.open()
	c.c2s(0, "syn session", 0)
	c.cli = netip.MustParseAddrPort("198.18.0.11:40001") // joins
	c.req(req(1))
	c.resp("one")
	c.req(req(2))
	c.cli = netip.MustParseAddrPort("198.18.0.12:40002") // never answered
	c.req(req(1))
	c.req(req(2))
	c.cli = netip.MustParseAddrPort("198.18.0.13:40003") // given up
	c.req(req(1))
	c.c2s(c.off, "", capture.FlagRST)
	c.stats(TrackerStats{Sessions: 1, Joined: 1, MidStream: 2, Ignored: 6, Open: 2})
	c.tr.Flush()
	c.stats(TrackerStats{Sessions: 1, Joined: 1, MidStream: 2, Ignored: 6})
}

// TestTrackerJoinExpireAndSweep: waiting flows are dropped by Expire (they
// are no sessions: not counted as expired), forgotten by the tombstone
// sweep after tombTTL of silence, and kept while they are active.
func TestTrackerJoinExpireAndSweep(t *testing.T) {
	t.Run("expire", func(t *testing.T) {
		c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
		c.req(req(1))
		if n := c.tr.Expire(c.now.Add(2*time.Minute), time.Minute); n != 0 {
			t.Errorf("expired %d sessions, want 0", n)
		}
		if n := len(c.tr.sessions) + c.tr.ended.len(); n != 0 {
			t.Errorf("%d entries left", n)
		}
		c.stats(TrackerStats{MidStream: 1, Ignored: 1})
	})
	t.Run("sweep", func(t *testing.T) {
		c := newKeepAlive(t, TrackerConfig{JoinMidStream: true})
		c.req(req(1))
		c.resp("one")
		// Active for longer than tombTTL: kept, and joins.
		for range 3 {
			c.now = c.now.Add(tombTTL / 2)
			c.ack()
		}
		c.req(req(2))
		c.want("open", "data:"+req(2))
		c.c2s(c.off, "", capture.FlagFIN)
		c.s2c(c.soff, "", c.off+1, capture.FlagFIN)
		// A quiet waiting flow and the ended one are forgotten.
		c.cli = netip.MustParseAddrPort("198.18.0.12:40002")
		c.req(req(1))
		c.now = c.now.Add(2 * tombTTL)
		c.cli = netip.MustParseAddrPort("198.18.0.13:40003")
		c.req(req(1))
		if n := len(c.tr.sessions) + c.tr.ended.len(); n != 1 {
			t.Errorf("%d entries after the tombstone TTL, want 1", n)
		}
		if len(c.tr.fifo) > 2 {
			t.Errorf("%d tombstones queued", len(c.tr.fifo))
		}
	})
}

func TestTrackerMaxPending(t *testing.T) {
	c := newConv(t, TrackerConfig{MaxPending: 100})
	c.open()
	c.c2s(0, "x", 0)
	c.c2s(10, strings.Repeat("y", 60), 0)
	c.c2s(70, strings.Repeat("z", 60), 0)
	c.want("open", "data:x", "gap:out-of-order buffer exceeded: 120 bytes buffered behind a hole of 9 bytes at client stream offset 1")
	c.stats(TrackerStats{Sessions: 1, Gaps: 1, OutOfOrder: 2})
}

func TestTrackerFastOpen(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.tr.Add(capture.Segment{Time: c.tick(), Src: cli, Dst: srv, Seq: c.cisn, Flags: capture.FlagSYN, Payload: []byte("early")})
	c.tr.Add(capture.Segment{Time: c.tick(), Src: cli, Dst: srv, Seq: c.cisn, Flags: capture.FlagSYN, Payload: []byte("early")})
	c.c2s(5, " data", 0)
	c.want("open", "data:early data")
	c.stats(TrackerStats{Sessions: 1, Duplicates: 1, Retransmits: 5, Open: 1})
}

func TestTrackerExpire(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	c.open()
	c.c2s(0, "abc", 0)
	c.cli = netip.MustParseAddrPort("198.18.0.11:40001")
	c.open()
	c.c2s(0, "abc", 0)
	c.c2s(10, "xyz", 0)
	c.cli = netip.MustParseAddrPort("198.18.0.12:40002")
	c.c2s(0, "mid-stream", 0)
	if n := c.tr.Expire(c.now, time.Minute); n != 0 {
		t.Fatalf("expired %d sessions too early", n)
	}
	if n := c.tr.Expire(c.now.Add(2*time.Minute), time.Minute); n != 2 {
		t.Fatalf("expired %d sessions, want 2", n)
	}
	c.want("open", "data:abc", "open", "data:abc", "gap:hole of 7 bytes at client stream offset 3 (3 bytes buffered after it); session idle for 2m0.001s")
	c.stats(TrackerStats{Sessions: 2, Gaps: 1, OutOfOrder: 1, MidStream: 1, Ignored: 1, Expired: 2})
	if n := len(c.tr.sessions) + c.tr.ended.len(); n != 0 {
		t.Errorf("%d entries left", n)
	}
}

func TestTrackerForgetsEndedSessions(t *testing.T) {
	c := newConv(t, TrackerConfig{})
	for i := range 100 {
		c.cli = netip.AddrPortFrom(cli.Addr(), uint16(10000+i))
		c.open()
		c.c2s(0, "x", capture.FlagFIN)
		c.s2c(0, "", 2, capture.FlagFIN)
	}
	if n := len(c.tr.sessions) + c.tr.ended.len(); c.tr.Stats().Open != 0 || n != 100 {
		t.Fatalf("open %d, entries %d", c.tr.Stats().Open, n)
	}
	c.now = c.now.Add(2 * tombTTL)
	c.cli = cli
	c.open()
	if n := len(c.tr.sessions) + c.tr.ended.len(); n != 1 {
		t.Errorf("%d entries after the tombstone TTL, want 1", n)
	}
}

// TestTrackerDataIsolated: a sink that appends to or keeps Data must not
// disturb later events.
func TestTrackerDataIsolated(t *testing.T) {
	var got [][]byte
	tr := NewTracker(TrackerConfig{IsServer: func(ap netip.AddrPort) bool { return ap == srv }}, SinkFunc(func(_ SessionKey, ev Event) {
		if ev.Kind == EvData {
			if cap(ev.Data) != len(ev.Data) {
				t.Errorf("data has spare capacity %d", cap(ev.Data)-len(ev.Data))
			}
			_ = append(ev.Data, "XXXX"...)
			got = append(got, ev.Data)
		}
	}))
	tr.Add(capture.Segment{Src: cli, Dst: srv, Seq: 1, Flags: capture.FlagSYN})
	tr.Add(capture.Segment{Src: cli, Dst: srv, Seq: 2, Flags: capture.FlagACK, Payload: []byte("abcd")})
	tr.Add(capture.Segment{Src: srv, Dst: cli, Seq: 10, Ack: 4, Flags: capture.FlagACK, Payload: []byte("r")}) // turn inside the next delivery
	tr.Add(capture.Segment{Src: cli, Dst: srv, Seq: 6, Flags: capture.FlagACK, Payload: []byte("efgh")})
	tr.Add(capture.Segment{Src: cli, Dst: srv, Seq: 4, Flags: capture.FlagACK, Payload: []byte("cdef")})
	if len(got) != 2 || string(got[0]) != "abcd" || string(got[1]) != "efgh" {
		t.Errorf("data %q", got)
	}
}

// FuzzTracker feeds random segments of one connection (plus noise) and
// checks the events against the truth the segments were cut from.
func FuzzTracker(f *testing.F) {
	f.Add(uint32(1000), []byte{0, 0, 10, 1, 5, 10, 2, 3, 4})
	f.Add(uint32(0xffffff00), []byte{1, 200, 50, 0, 0, 255, 3, 0, 0, 2, 7, 7, 0, 250, 6})
	f.Add(uint32(7), []byte{4, 0, 0, 0, 0, 100, 5, 3, 3, 0, 100, 100, 6, 0, 0})
	f.Add(uint32(8), []byte{0, 0, 12, 0x13, 3, 5, 0, 3, 20, 0x13, 8, 7, 0, 8, 10}) // joined mid-stream
	f.Fuzz(func(t *testing.T, isn uint32, ops []byte) {
		rng := rand.New(rand.NewPCG(uint64(isn), 1))
		truth := make([]byte, 1024)
		for i := range truth {
			truth[i] = byte(rng.IntN(256))
		}
		srvISN := isn * 7
		sink := &checkSink{t: t}
		tr := NewTracker(TrackerConfig{
			IsServer:      func(ap netip.AddrPort) bool { return ap == srv },
			MaxPending:    300,
			HoleGrace:     time.Duration(int(isn%3)-1) * time.Millisecond,
			JoinMidStream: isn&8 != 0,
		}, sink)
		now := t0
		seen := make(map[int]bool)
		conflicts := false
		for len(ops) >= 3 {
			op, a, b := ops[0], int(ops[1])*4, int(ops[2])
			ops = ops[3:]
			now = now.Add(time.Duration(op%4) * time.Millisecond)
			seg := capture.Segment{Time: now, Src: cli, Dst: srv, Seq: isn + 1 + uint32(a), Ack: srvISN + 1, Flags: capture.FlagACK}
			end := min(a+b, len(truth))
			switch op % 8 {
			case 0, 1: // client data
				if a < end {
					seg.Payload = slices.Clone(truth[a:end])
					for i := a; i < end; i++ {
						seen[i] = true
					}
				}
			case 2: // client data with a FIN
				if a < end {
					seg.Payload = slices.Clone(truth[a:end])
					for i := a; i < end; i++ {
						seen[i] = true
					}
				}
				seg.Flags |= capture.FlagFIN
			case 3: // server data or ACK
				seg = capture.Segment{Time: now, Src: srv, Dst: cli, Seq: srvISN + 1 + uint32(b*3), Ack: isn + 1 + uint32(a), Flags: capture.FlagACK}
				if op&0x10 != 0 {
					seg.Payload = make([]byte, b%40)
				}
				if op&0x20 != 0 {
					seg.Flags |= capture.FlagFIN
				}
			case 4: // SYN, sometimes with a new ISN
				seg = capture.Segment{Time: now, Src: cli, Dst: srv, Seq: isn, Flags: capture.FlagSYN}
				if op&0x10 != 0 {
					seg.Seq = isn + uint32(a)<<20
					conflicts = true // a new session's offsets differ from the truth's
				}
			case 5: // SYN-ACK
				seg = capture.Segment{Time: now, Src: srv, Dst: cli, Seq: srvISN, Ack: isn + 1, Flags: capture.FlagSYN | capture.FlagACK}
			case 6: // a RST, noise, or conflicting data
				switch op & 0x70 {
				case 0x10:
					seg.Flags |= capture.FlagRST
				case 0x20, 0x40:
					seg.Src = netip.MustParseAddrPort("198.18.0.99:1")
				case 0x30:
					seg.Payload = make([]byte, b)
					conflicts = true
				}
			case 7: // a wild sequence number, rarely
				if op&0x70 == 0x70 {
					seg.Seq = uint32(a) << 22
					seg.Payload = make([]byte, b%16)
					conflicts = true
				}
			}
			tr.Add(seg)
		}
		tr.Flush()
		if tr.Stats().Open != 0 {
			t.Fatalf("open sessions after Flush: %+v", tr.Stats())
		}
		joined := tr.Stats().Joined > 0
		for _, s := range sink.sessions {
			// A joined session starts somewhere in the truth.
			if !conflicts && !joined && !bytes.Equal(s.data, truth[:min(len(s.data), len(truth))]) ||
				!conflicts && joined && !bytes.Contains(truth, s.data) {
				t.Fatalf("delivered %d bytes that differ from the truth", len(s.data))
			}
			if !conflicts && len(s.data) > len(seen) {
				t.Fatalf("delivered %d bytes, only %d distinct bytes captured", len(s.data), len(seen))
			}
		}
	})
}

type fuzzSession struct {
	data  []byte
	ended bool // a terminal event was seen
	fin   bool
}

// checkSink checks event order invariants as events arrive.
type checkSink struct {
	t        *testing.T
	cur      *fuzzSession
	sessions []*fuzzSession
}

func (c *checkSink) Event(k SessionKey, ev Event) {
	t := c.t
	if ev.Kind == EvOpen {
		if c.cur != nil && !c.cur.ended && !c.cur.fin {
			t.Fatalf("new session while the previous one is open")
		}
		c.cur = &fuzzSession{}
		c.sessions = append(c.sessions, c.cur)
		return
	}
	s := c.cur
	if s == nil {
		t.Fatalf("%v before open", ev.Kind)
	}
	if s.ended {
		t.Fatalf("%v after the session ended", ev.Kind)
	}
	switch ev.Kind {
	case EvData:
		if s.fin || len(ev.Data) == 0 || cap(ev.Data) != len(ev.Data) {
			t.Fatalf("bad data event (fin %v, len %d cap %d)", s.fin, len(ev.Data), cap(ev.Data))
		}
		s.data = append(s.data, ev.Data...)
	case EvTurn:
		if ev.ServerBytes <= 0 || s.fin {
			t.Fatalf("bad turn %d (fin %v)", ev.ServerBytes, s.fin)
		}
	case EvFin:
		if s.fin {
			t.Fatal("second fin")
		}
		s.fin = true
	case EvRst, EvGap:
		if s.fin && ev.Kind == EvGap {
			t.Fatal("gap after fin")
		}
		s.ended = true
	case EvServerClose:
		if ev.Reason == "server RST" {
			s.ended = true
		}
	default:
		t.Fatalf("unknown event %v", ev.Kind)
	}
}

// BenchmarkTrackerAdd: interleaved in-order sessions with request/response
// turns, the common case per captured packet.
func BenchmarkTrackerAdd(b *testing.B) {
	const sessions = 1000
	tr := NewTracker(TrackerConfig{IsServer: func(ap netip.AddrPort) bool { return ap.Port() == 80 }}, SinkFunc(func(SessionKey, Event) {}))
	payload := make([]byte, 1448)
	keys := make([]netip.AddrPort, sessions)
	for i := range keys {
		keys[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 40000)
		tr.Add(capture.Segment{Time: t0, Src: keys[i], Dst: srv, Seq: 0, Flags: capture.FlagSYN})
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		k := keys[i%sessions]
		round := uint32(i / sessions)
		if i%4 == 3 {
			tr.Add(capture.Segment{Time: t0, Src: srv, Dst: k, Seq: 1 + round*100, Ack: 1 + round*1448, Flags: capture.FlagACK, Payload: payload[:100]})
			continue
		}
		tr.Add(capture.Segment{Time: t0, Src: k, Dst: srv, Seq: 1 + round*1448, Ack: 1, Flags: capture.FlagACK, Payload: payload})
	}
}

// TestTombsFamilies: IPv4 keys are packed apart from IPv6 ones; both are
// remembered, found, refreshed from the previous generation and forgotten.
func TestTombsFamilies(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k4 := SessionKey{Client: netip.MustParseAddrPort("198.18.0.1:40000"), Server: netip.MustParseAddrPort("198.18.1.1:80")}
	k6 := SessionKey{Client: netip.MustParseAddrPort("[2001:2::1]:40000"), Server: netip.MustParseAddrPort("[2001:2::2]:80")}
	k4in6 := SessionKey{Client: netip.MustParseAddrPort("[::ffff:198.18.0.1]:40000"), Server: netip.MustParseAddrPort("[::ffff:198.18.1.1]:80")}
	var tb tombs
	tb.add(k4, 4, t0)
	tb.add(k6, 6, t0)
	if isn, ok := tb.find(k4, t0); !ok || isn != 4 {
		t.Errorf("v4: %d %v", isn, ok)
	}
	if isn, ok := tb.find(k6, t0); !ok || isn != 6 {
		t.Errorf("v6: %d %v", isn, ok)
	}
	if _, ok := tb.find(k4in6, t0); ok {
		t.Error("a v4-mapped IPv6 key found the IPv4 session")
	}
	// One generation later both are in the previous one; finding moves
	// them back, so they survive the next turnover too.
	t1 := t0.Add(tombTTL)
	tb.age(t1)
	if _, ok := tb.find(k4, t1); !ok {
		t.Error("v4 lost after one generation")
	}
	t2 := t1.Add(tombTTL)
	tb.age(t2)
	if _, ok := tb.find(k4, t2); !ok {
		t.Error("v4 refreshed, then lost")
	}
	if _, ok := tb.find(k6, t2); ok {
		t.Error("v6 not refreshed, still found after two generations")
	}
	tb.forget(k4)
	if tb.len() != 0 {
		t.Errorf("%d keys left", tb.len())
	}
}
