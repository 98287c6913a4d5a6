package session

import (
	"bytes"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/stackcopy/stackcopy/capture"
)

// SessionKey names a session by its captured addresses.
type SessionKey struct {
	Client, Server netip.AddrPort
}

func (k SessionKey) String() string { return k.Client.String() + "->" + k.Server.String() }

// EventKind says what an Event reports.
type EventKind uint8

const (
	// EvOpen: the client's SYN was captured, or (TrackerConfig.JoinMidStream)
	// a flow seen mid-stream reached a turn boundary; the session starts.
	EvOpen EventKind = iota + 1
	// EvData: the next client bytes, in order, each byte exactly once.
	EvData
	// EvTurn: the captured server answered (ServerBytes) before the client
	// went on; the replayer should wait for the target's answer. It comes
	// before the EvData, EvFin or EvRst that followed the answer, placed by
	// the server's ACK rather than by capture order, so it never separates
	// a request from bytes the server had already received when answering.
	// A server-first protocol's banner gives an EvTurn before any EvData.
	EvTurn
	// EvFin: the client half-closed after all its bytes. Terminal unless
	// the server's FIN is still to come (then EvServerClose may follow).
	EvFin
	// EvRst: the client reset the connection. Terminal.
	EvRst
	// EvGap: the capture misses client bytes (Reason says where), so the
	// stream cannot be replayed faithfully past this point. Terminal.
	EvGap
	// EvServerClose: the captured server sent FIN (Reason "server FIN") or
	// RST ("server RST", terminal). Informational: the replayer follows
	// what the real target does.
	EvServerClose
	// EvServerData (only with TrackerConfig.ServerData): the captured
	// server's next bytes, in order, each byte once. Reason
	// ReasonServerHole says the capture missed server bytes just before
	// Data. Informational: a replayer that frames the protocol counts the
	// answers production gave before each turn.
	EvServerData
)

var eventNames = [...]string{"?", "open", "data", "turn", "fin", "rst", "gap", "server-close", "server-data"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", k)
}

// Event is one thing that happened to a session.
type Event struct {
	Kind EventKind
	Time time.Time // capture time of the segment that produced it
	// Data (EvData, EvServerData) is read-only for the sink and stays
	// valid: the tracker never writes to memory it has handed out.
	Data []byte
	// ServerBytes (EvTurn) counts the captured server payload bytes that
	// the client waited for, by server sequence number, so retransmissions
	// count once and bytes the capture missed still count.
	ServerBytes int
	Reason      string // EvGap, EvServerClose, EvServerData
	// Joined (EvOpen) says the session was seen mid-stream and opens at a
	// turn boundary (JoinMidStream), not at its SYN.
	Joined bool
}

// Sink receives events synchronously from Add, Flush and Expire, in capture
// order for each session. It must not call back into the Tracker.
type Sink interface {
	Event(k SessionKey, ev Event)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(k SessionKey, ev Event)

func (f SinkFunc) Event(k SessionKey, ev Event) { f(k, ev) }

// TrackerConfig configures a Tracker.
type TrackerConfig struct {
	// IsServer reports whether an address is a captured (online) server;
	// segments to it are client->server, segments from it server->client.
	IsServer func(netip.AddrPort) bool
	// MaxPending bounds the out-of-order client bytes buffered per session
	// behind a hole; past it the session ends with EvGap. Default 4 MiB.
	MaxPending int
	// HoleGrace is how long (in capture time) client bytes the server has
	// acknowledged may stay missing before they are declared a gap: capture
	// points can record the server's ACK before the data it acknowledges.
	// 0 means DefaultHoleGrace; negative means at once.
	HoleGrace time.Duration
	// JoinMidStream opens flows whose SYN was not captured at their next
	// turn boundary instead of skipping them (tcpcopy's -O=false). While
	// such a flow waits it costs a few sequence numbers, no payload.
	//
	// The boundary is a heuristic built for request/response protocols
	// (HTTP/1.1 keep-alive, redis, memcached): the server sent new payload
	// acknowledging everything the client had sent (it answered a complete
	// request), and the client's next payload starts exactly there. The
	// session then opens as if its SYN had been seen just before that byte.
	// The heuristic is wrong when an answer does not close a request: an
	// HTTP "100 Continue" (or any interim reply) followed by the body makes
	// the session start mid-body; a server that pushes unsolicited data
	// (pub/sub, server-first chatter) or a client that pipelines can do
	// the same. It is also blind to protocol state built up before the
	// join (authentication, SELECT in redis, a TLS session): the target
	// gets requests without their connection's prelude.
	//
	// A flow is not joined while the evidence is ambiguous: client bytes
	// beyond the boundary seen before the bytes at it (reordering, or the
	// capture missed them), a server ACK beyond what the client was seen
	// sending, or a retransmitted server answer all make it wait for the
	// next boundary. A client or server FIN or RST gives the flow up.
	JoinMidStream bool
	// ServerData makes the tracker also report the captured server's bytes
	// (EvServerData), for a sink that frames the protocol.
	ServerData bool
}

const (
	DefaultMaxPending = 4 << 20
	DefaultHoleGrace  = 200 * time.Millisecond

	// tombTTL is how long (capture time) an ended or skipped session's key
	// is remembered after its last segment, so that late ACKs and
	// retransmitted FINs are not mistaken for new mid-stream sessions. A flow
	// waiting to join is forgotten the same way after tombTTL of silence.
	tombTTL = 60 * time.Second
	// maxTombs bounds the ended sessions' keys remembered, per address
	// family (see tombs).
	maxTombs = 256 << 10
)

// TrackerStats counts what the tracker saw.
type TrackerStats struct {
	// Every flow the tracker saw counts in exactly one of Sessions,
	// Joined and MidStream; the sessions replayed are Sessions + Joined.
	Sessions  uint64 // sessions opened by a client SYN
	MidStream uint64 // flows whose SYN was not captured and that were not (or not yet) joined: skipped
	// Joined counts flows whose SYN was not captured that were opened at a
	// turn boundary (TrackerConfig.JoinMidStream). They are not counted in
	// Sessions, and no longer in MidStream, which counted them while they
	// waited.
	Joined      uint64
	Gaps        uint64 // sessions ended by EvGap
	Duplicates  uint64 // client segments with no new bytes, incl. SYN and FIN retransmissions
	OutOfOrder  uint64 // client segments that arrived ahead of missing bytes
	Retransmits uint64 // client payload bytes seen more than once
	Conflicts   uint64 // client segments whose repeated bytes differ from the first copy
	Ignored     uint64 // segments of no tracked session (not to/from a server, skipped or ended sessions)
	Expired     uint64 // sessions ended by Expire
	Open        int    // sessions being tracked now
}

// Add adds o's counts to s (one more pass over a capture); Open becomes
// o's, the latest pass's.
func (s *TrackerStats) Add(o TrackerStats) {
	s.Sessions += o.Sessions
	s.MidStream += o.MidStream
	s.Joined += o.Joined
	s.Gaps += o.Gaps
	s.Duplicates += o.Duplicates
	s.OutOfOrder += o.OutOfOrder
	s.Retransmits += o.Retransmits
	s.Conflicts += o.Conflicts
	s.Ignored += o.Ignored
	s.Expired += o.Expired
	s.Open = o.Open
}

// Tracker groups captured segments into sessions and reassembles each
// client's byte stream. Per session it emits EvOpen, then EvData and EvTurn
// as the stream goes, then one of EvFin, EvRst, EvGap (or EvServerClose for
// a server RST); a session whose input just stops gets nothing more, and the
// caller knows from Flush or Expire. It is not safe for concurrent use.
//
// Ended sessions drop their buffers at once but their keys are remembered
// for a minute of capture time (tombTTL), so late ACKs and retransmissions
// are counted as Ignored instead of opening mid-stream sessions.
type Tracker struct {
	cfg      TrackerConfig
	sink     Sink
	sessions map[SessionKey]*session
	// fifo holds skipped sessions (mid-stream, waiting to join) in the
	// order they went quiet, so forgetting them costs O(1) per segment.
	fifo []tomb
	// ended are the keys of ended sessions, kept apart and packed: a
	// capture of short sessions ends tens of thousands a second, and a
	// whole session (450 bytes with its map entry and fifo slot) per key
	// for a minute took 450 MB at 1M sessions in 10 s of capture.
	ended  tombs
	nextID uint64
	open   int
	stats  TrackerStats
}

type tomb struct {
	key SessionKey
	s   *session
	at  time.Time
}

type sessState uint8

const (
	stOpen   sessState = iota
	stSkip             // mid-stream: no SYN captured (or given up waiting to join)
	stClosed           // ended; absorbs late segments
	stJoin             // mid-stream, waiting for a turn boundary to join at
)

type session struct {
	state sessState
	id    uint64 // creation order, to make Flush deterministic
	isn   uint32
	base  uint32 // client sequence number of stream offset 0 (isn+1)

	// Client stream, in 64-bit offsets so streams past 4 GiB work.
	next     int64   // bytes delivered
	ooo      []chunk // buffered bytes beyond next: sorted, disjoint
	oooBytes int
	last     []byte // the latest delivered bytes, to check retransmissions against
	lastOff  int64
	finOff   int64 // offset of the client FIN, -1 until seen
	finDone  bool  // EvFin emitted

	ackHigh   int64 // highest client offset the server acknowledged
	holeSince time.Time
	holeSeen  bool

	marks []turnMark // pending turns, sorted by offset

	srvKnown bool
	srvBase  uint32 // server sequence number of server offset 0
	srvHigh  int64  // end of the highest server byte seen
	srvFin   bool

	// While waiting to join (stJoin): sequence numbers only, no payload.
	cliEnd   uint32 // end of the client bytes seen sent or acknowledged
	answered bool   // the server sent new payload acknowledging exactly cliEnd
	srvNext  uint32 // end of the server bytes seen, valid with srvKnown

	lastSeen time.Time
}

type chunk struct {
	off  int64
	data []byte
}

func (c chunk) end() int64 { return c.off + int64(len(c.data)) }

// turnMark says: before client byte off is delivered, the server sent bytes.
type turnMark struct {
	off   int64
	bytes int
}

// NewTracker returns a tracker reporting to sink. cfg.IsServer is required.
func NewTracker(cfg TrackerConfig, sink Sink) *Tracker {
	if cfg.IsServer == nil || sink == nil {
		panic("mirror: NewTracker needs TrackerConfig.IsServer and a Sink")
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.HoleGrace == 0 {
		cfg.HoleGrace = DefaultHoleGrace
	}
	return &Tracker{cfg: cfg, sink: sink, sessions: make(map[SessionKey]*session)}
}

// Stats returns the counters so far.
func (t *Tracker) Stats() TrackerStats {
	st := t.stats
	st.Open = t.open
	return st
}

// Add processes one captured segment, in capture order. It takes ownership
// of seg.Payload: EvData events may hand out sub-slices of it.
func (t *Tracker) Add(seg capture.Segment) {
	t.sweep(seg.Time)
	switch {
	case t.cfg.IsServer(seg.Dst):
		t.client(SessionKey{Client: seg.Src, Server: seg.Dst}, seg)
	case t.cfg.IsServer(seg.Src):
		t.server(SessionKey{Client: seg.Dst, Server: seg.Src}, seg)
	default:
		t.stats.Ignored++
	}
}

// Flush ends the input. Sessions missing client bytes get EvGap; the others
// get nothing more. The tracker is empty afterwards.
func (t *Tracker) Flush() {
	open := make([]SessionKey, 0, len(t.sessions))
	for k, s := range t.sessions {
		if s.state == stOpen {
			open = append(open, k)
		}
	}
	sort.Slice(open, func(i, j int) bool { return t.sessions[open[i]].id < t.sessions[open[j]].id })
	for _, k := range open {
		s := t.sessions[k]
		if reason := s.holeReason(); reason != "" {
			t.stats.Gaps++
			t.emit(k, Event{Kind: EvGap, Time: s.lastSeen, Reason: reason})
		}
	}
	clear(t.sessions)
	t.fifo = nil
	t.ended = tombs{}
	t.open = 0
}

// Expire ends sessions that saw no segment for longer than idle before now
// (capture time) and returns how many. An expired session missing client
// bytes gets EvGap; otherwise it ends silently (the replayer has its own
// idle timeout). Expire is also the clock for HoleGrace: a session whose
// acknowledged-but-missing bytes are older than the grace gets EvGap even
// when no further segment of it arrives. Live capture calls it periodically.
func (t *Tracker) Expire(now time.Time, idle time.Duration) int {
	n := 0
	for k, s := range t.sessions {
		if now.Sub(s.lastSeen) <= idle {
			if s.state == stOpen && s.holeSeen {
				t.checkHole(k, s, now)
			}
			continue
		}
		if s.state == stOpen {
			n++
			t.open--
			t.stats.Expired++
			if reason := s.holeReason(); reason != "" {
				t.stats.Gaps++
				t.emit(k, Event{Kind: EvGap, Time: now, Reason: reason + "; session idle for " + now.Sub(s.lastSeen).String()})
			}
		}
		delete(t.sessions, k)
	}
	return n
}

func (t *Tracker) emit(k SessionKey, ev Event) { t.sink.Event(k, ev) }

// sweep forgets ended and skipped sessions quiet for tombTTL.
func (t *Tracker) sweep(now time.Time) {
	t.ended.age(now)
	for len(t.fifo) > 0 {
		e := t.fifo[0]
		if now.Sub(e.at) < tombTTL {
			return
		}
		t.fifo[0] = tomb{}
		t.fifo = t.fifo[1:]
		cur := t.sessions[e.key]
		if cur != e.s || cur.state == stOpen {
			continue // replaced or expired meanwhile
		}
		if now.Sub(cur.lastSeen) < tombTTL {
			t.fifo = append(t.fifo, tomb{key: e.key, s: cur, at: cur.lastSeen})
			continue
		}
		delete(t.sessions, e.key)
	}
}

func (t *Tracker) bury(k SessionKey, s *session) {
	t.fifo = append(t.fifo, tomb{key: k, s: s, at: s.lastSeen})
}

// end closes a session, keeping only what identifies its late segments
// (its key and ISN, in t.ended).
func (t *Tracker) end(k SessionKey, s *session) {
	t.open--
	s.state = stClosed
	s.ooo, s.oooBytes, s.last, s.marks = nil, 0, nil, nil
	if t.sessions[k] == s {
		delete(t.sessions, k)
	}
	t.ended.add(k, s.isn, s.lastSeen)
}

func (t *Tracker) gap(k SessionKey, s *session, now time.Time, reason string) {
	t.stats.Gaps++
	t.emit(k, Event{Kind: EvGap, Time: now, Reason: reason})
	t.end(k, s)
}

// client handles a client->server segment.
func (t *Tracker) client(k SessionKey, seg capture.Segment) {
	s := t.sessions[k]
	now := seg.Time
	if s == nil {
		if isn, ok := t.ended.find(k, now); ok {
			syn := seg.Flags&(capture.FlagSYN|capture.FlagACK) == capture.FlagSYN
			switch {
			case syn && seg.Seq == isn:
				t.stats.Duplicates++
				return
			case !syn:
				t.stats.Ignored++ // a late segment of the ended session
				return
			}
			t.ended.forget(k) // a new SYN on the key: a new session
		}
	}
	if seg.Flags&capture.FlagSYN != 0 {
		if seg.Flags&capture.FlagACK != 0 { // a SYN-ACK towards a server: not a session of ours
			t.stats.Ignored++
			return
		}
		t.clientSYN(k, s, seg)
		return
	}
	if s == nil {
		t.stats.Ignored++
		if seg.Flags&capture.FlagRST != 0 {
			return // a stray reset is not a session worth remembering
		}
		t.stats.MidStream++
		s = &session{state: stSkip, lastSeen: now}
		if t.cfg.JoinMidStream && seg.Flags&capture.FlagFIN == 0 {
			s.state, s.cliEnd = stJoin, seg.Seq+uint32(len(seg.Payload))
		}
		t.sessions[k] = s
		t.bury(k, s)
		return
	}
	if s.state == stJoin {
		s.lastSeen = now
		t.clientWaiting(k, s, seg)
		return
	}
	if s.state != stOpen {
		t.stats.Ignored++
		s.lastSeen = now
		return
	}
	s.lastSeen = now
	if seg.Flags&capture.FlagRST != 0 {
		t.emitTurns(k, s, s.next, now)
		t.emit(k, Event{Kind: EvRst, Time: now})
		t.end(k, s)
		return
	}
	t.clientData(k, s, seg)
	t.checkHole(k, s, now)
}

func (t *Tracker) clientSYN(k SessionKey, s *session, seg capture.Segment) {
	now := seg.Time
	if s != nil {
		switch {
		case s.state == stOpen && seg.Seq == s.isn:
			s.lastSeen = now
			if len(seg.Payload) == 0 {
				t.stats.Duplicates++
				return
			}
			t.clientData(k, s, seg) // a retransmitted SYN with data (TCP Fast Open)
			t.checkHole(k, s, now)
			return
		case s.state == stClosed && seg.Seq == s.isn:
			t.stats.Duplicates++
			s.lastSeen = now
			return
		case s.state == stOpen && !s.finDone:
			reason := "port reused mid-session"
			if r := s.holeReason(); r != "" {
				reason = r + "; port reused"
			}
			t.gap(k, s, now, reason)
		case s.state == stOpen:
			// Half-closed with the client side complete: nothing more
			// is owed to it.
			t.end(k, s)
		}
		// Ended and skipped sessions are just replaced.
	}
	t.nextID++
	s = &session{state: stOpen, id: t.nextID, isn: seg.Seq, base: seg.Seq + 1, finOff: -1, lastSeen: now}
	if t.ended.len() > 0 {
		t.ended.forget(k) // the previous session on the key (gap, end above)
	}
	t.sessions[k] = s
	t.open++
	t.stats.Sessions++
	t.emit(k, Event{Kind: EvOpen, Time: now})
	if len(seg.Payload) > 0 || seg.Flags&capture.FlagFIN != 0 {
		t.clientData(k, s, seg)
	}
}

// seqLess reports whether sequence number a comes before b (RFC 1982).
func seqLess(a, b uint32) bool { return int32(a-b) < 0 }

// clientWaiting handles a client segment of a flow waiting to join: it joins
// when the segment's payload starts at a turn boundary (a segment that also
// repeats bytes before it counts: they were acknowledged), and otherwise
// only moves the client's end, which cancels a boundary behind it.
func (t *Tracker) clientWaiting(k SessionKey, s *session, seg capture.Segment) {
	end := seg.Seq + uint32(len(seg.Payload))
	switch {
	case seg.Flags&(capture.FlagFIN|capture.FlagRST) != 0:
		s.state = stSkip // given up: stays counted as mid-stream
	case s.answered && len(seg.Payload) > 0 && !seqLess(s.cliEnd, seg.Seq) && seqLess(s.cliEnd, end):
		t.join(k, s, seg)
		return
	case seqLess(s.cliEnd, end):
		s.cliEnd, s.answered = end, false
	}
	t.stats.Ignored++
}

// serverWaiting handles a server segment of a flow waiting to join. Only
// new server payload can mark a boundary: a retransmitted answer carries the
// ACK of the moment it was resent, possibly in the middle of the next
// request. The first server segment seen counts as new (nothing tells).
func (t *Tracker) serverWaiting(s *session, seg capture.Segment) {
	t.stats.Ignored++
	switch {
	case seg.Flags&(capture.FlagFIN|capture.FlagRST) != 0:
		s.state = stSkip // given up: stays counted as mid-stream
		return
	case seg.Flags&capture.FlagSYN != 0:
		return
	}
	hasAck := seg.Flags&capture.FlagACK != 0
	if hasAck && seqLess(s.cliEnd, seg.Ack) {
		// The client sent bytes the capture has not shown (yet): any
		// boundary seen so far lies before them.
		s.cliEnd, s.answered = seg.Ack, false
	}
	end := seg.Seq + uint32(len(seg.Payload))
	if s.srvKnown && !seqLess(s.srvNext, end) {
		return // a pure ACK or a retransmission: no new answer
	}
	s.srvKnown, s.srvNext = true, end
	if len(seg.Payload) > 0 && hasAck && seg.Ack == s.cliEnd {
		s.answered = true
	}
}

// join opens a waiting flow at the turn boundary its segment starts at, as
// if the client's SYN had taken the sequence number before it, and
// processes the segment as client data. Server payload after what was seen
// becomes turns from there.
func (t *Tracker) join(k SessionKey, s *session, seg capture.Segment) {
	now, base, srvNext := seg.Time, s.cliEnd, s.srvNext
	t.nextID++
	*s = session{state: stOpen, id: t.nextID, isn: base - 1, base: base, finOff: -1, lastSeen: now,
		srvKnown: true, srvBase: srvNext}
	t.open++
	t.stats.MidStream--
	t.stats.Joined++
	t.emit(k, Event{Kind: EvOpen, Time: now, Joined: true})
	t.clientData(k, s, seg) // bytes before base are trimmed as before the stream
	t.checkHole(k, s, now)
}

// offset converts a client sequence number to a stream offset, choosing the
// one within 2 GiB of what was delivered.
func (s *session) offset(seq uint32) int64 {
	return s.next + int64(int32(seq-(s.base+uint32(s.next))))
}

func (t *Tracker) clientData(k SessionKey, s *session, seg capture.Segment) {
	now := seg.Time
	seq := seg.Seq
	if seg.Flags&capture.FlagSYN != 0 {
		seq++ // SYN data starts after the SYN's sequence number
	}
	off := s.offset(seq)
	p := seg.Payload
	if seg.Flags&capture.FlagFIN != 0 {
		fin := off + int64(len(p))
		switch {
		case s.finOff < 0:
			if fin >= s.next {
				s.finOff = fin
				t.trimAfterFin(s)
			}
		case s.finOff != fin:
			t.stats.Conflicts++
		case len(p) == 0:
			t.stats.Duplicates++
		}
	}
	if off < 0 { // before the stream began: bogus
		if int64(len(p)) <= -off {
			p = nil
		} else {
			p, off = p[-off:], 0
		}
	}
	if s.finOff >= 0 && off+int64(len(p)) > s.finOff { // nothing follows a FIN
		p = p[:max(0, s.finOff-off)]
	}
	if len(p) > 0 && t.insert(k, s, off, p, now) {
		return // ended by a gap
	}
	if s.next == s.finOff && !s.finDone {
		t.emitTurns(k, s, math.MaxInt64, now) // whatever the server said came before the FIN
		s.finDone = true
		t.emit(k, Event{Kind: EvFin, Time: now})
		if s.srvFin {
			t.end(k, s)
		}
	}
}

// trimAfterFin drops buffered bytes beyond the FIN: they cannot be part of
// the stream, and the capture contradicts itself.
func (t *Tracker) trimAfterFin(s *session) {
	for i := len(s.ooo) - 1; i >= 0 && s.ooo[i].end() > s.finOff; i-- {
		t.stats.Conflicts++
		c := &s.ooo[i]
		if c.off >= s.finOff {
			s.oooBytes -= len(c.data)
			s.ooo = s.ooo[:i]
			continue
		}
		s.oooBytes -= int(c.end() - s.finOff)
		c.data = c.data[:s.finOff-c.off]
	}
}

// insert adds client bytes at off and delivers what became contiguous. It
// reports whether the session ended.
func (t *Tracker) insert(k SessionKey, s *session, off int64, p []byte, now time.Time) bool {
	if off < s.next {
		n := min(int64(len(p)), s.next-off)
		t.stats.Retransmits += uint64(n)
		if s.differs(off, p[:n]) {
			t.stats.Conflicts++
		}
		p, off = p[n:], off+n
		if len(p) == 0 {
			t.stats.Duplicates++
			return false
		}
	}
	if off == s.next && len(s.ooo) == 0 {
		t.deliver(k, s, p, now)
		return false
	}
	end := off + int64(len(p))
	i := sort.Search(len(s.ooo), func(i int) bool { return s.ooo[i].end() > off })
	added, conflict := 0, false
	cur := off
	for j := i; j < len(s.ooo) && s.ooo[j].off < end; j++ {
		c := s.ooo[j]
		if c.off > cur {
			s.ooo = slices.Insert(s.ooo, j, chunk{cur, p[cur-off : c.off-off]})
			added += int(c.off - cur)
			j++
		}
		lo, hi := max(cur, c.off), min(end, c.end())
		t.stats.Retransmits += uint64(hi - lo)
		if !bytes.Equal(p[lo-off:hi-off], c.data[lo-c.off:hi-c.off]) {
			conflict = true
		}
		cur = hi
	}
	if cur < end {
		j := sort.Search(len(s.ooo), func(j int) bool { return s.ooo[j].off > cur })
		s.ooo = slices.Insert(s.ooo, j, chunk{cur, p[cur-off:]})
		added += int(end - cur)
	}
	if conflict {
		t.stats.Conflicts++
	}
	if added == 0 {
		t.stats.Duplicates++
		return false
	}
	s.oooBytes += added
	if off > s.next {
		t.stats.OutOfOrder++
	}
	n := 0
	for ; n < len(s.ooo) && s.ooo[n].off == s.next; n++ {
		s.oooBytes -= len(s.ooo[n].data)
		t.deliver(k, s, s.ooo[n].data, now)
	}
	s.ooo = slices.Delete(s.ooo, 0, n)
	if s.oooBytes > t.cfg.MaxPending {
		t.gap(k, s, now, fmt.Sprintf("out-of-order buffer exceeded: %d bytes buffered behind a hole of %d bytes at client stream offset %d",
			s.oooBytes, s.ooo[0].off-s.next, s.next))
		return true
	}
	return false
}

// differs reports whether repeated bytes at off differ from what was
// delivered. Only the latest delivery is kept for this, so older repeats
// go unchecked: keeping whole windows would cost too much per session.
func (s *session) differs(off int64, p []byte) bool {
	lo, hi := max(off, s.lastOff), min(off+int64(len(p)), s.lastOff+int64(len(s.last)))
	return lo < hi && !bytes.Equal(p[lo-off:hi-off], s.last[lo-s.lastOff:hi-s.lastOff])
}

// deliver emits p, which starts at s.next, cutting it where turns fall.
func (t *Tracker) deliver(k SessionKey, s *session, p []byte, now time.Time) {
	s.last, s.lastOff = p, s.next
	for len(p) > 0 {
		t.emitTurns(k, s, s.next, now)
		n := len(p)
		if len(s.marks) > 0 && s.marks[0].off < s.next+int64(n) {
			n = int(s.marks[0].off - s.next)
		}
		// The capacity limit keeps a sink that appends from overwriting
		// the bytes of the next event.
		t.emit(k, Event{Kind: EvData, Time: now, Data: p[:n:n]})
		s.next += int64(n)
		p = p[n:]
	}
}

func (t *Tracker) emitTurns(k SessionKey, s *session, upTo int64, now time.Time) {
	for len(s.marks) > 0 && s.marks[0].off <= upTo {
		t.emit(k, Event{Kind: EvTurn, Time: now, ServerBytes: s.marks[0].bytes})
		s.marks = slices.Delete(s.marks, 0, 1)
	}
}

// server handles a server->client segment.
func (t *Tracker) server(k SessionKey, seg capture.Segment) {
	s := t.sessions[k]
	if s != nil && s.state == stJoin {
		s.lastSeen = seg.Time
		t.serverWaiting(s, seg)
		return
	}
	if s == nil || s.state != stOpen {
		t.stats.Ignored++
		if s != nil {
			s.lastSeen = seg.Time
		} else {
			t.ended.find(k, seg.Time) // keeps an ended session's key while it is active
		}
		return
	}
	now := seg.Time
	s.lastSeen = now
	if seg.Flags&capture.FlagSYN != 0 {
		if seg.Flags&capture.FlagACK != 0 && seg.Ack == s.base && !s.srvKnown {
			s.srvKnown, s.srvBase = true, seg.Seq+1
		}
		return
	}
	acked := int64(-1)
	if seg.Flags&capture.FlagACK != 0 {
		acked = s.offset(seg.Ack)
		switch {
		case s.finOff >= 0 && acked > s.finOff:
			// finOff+1 acknowledges the FIN, which takes a sequence
			// number but is no byte; more cannot be acknowledged.
			acked = s.finOff
		case s.finOff < 0 && acked == s.next+1 && len(s.ooo) == 0:
			acked = s.next // most likely a FIN the capture missed; no data lost
		}
		s.ackHigh = max(s.ackHigh, acked)
	}
	if len(seg.Payload) > 0 {
		t.serverData(k, s, seg, acked)
	}
	if seg.Flags&capture.FlagRST != 0 {
		t.emit(k, Event{Kind: EvServerClose, Time: now, Reason: ReasonServerRST})
		t.end(k, s)
		return
	}
	if seg.Flags&capture.FlagFIN != 0 && !s.srvFin {
		s.srvFin = true
		t.emit(k, Event{Kind: EvServerClose, Time: now, Reason: ReasonServerFIN})
		if s.finDone {
			t.end(k, s)
			return
		}
	}
	t.checkHole(k, s, now)
}

// serverData records server payload as a turn. The turn is anchored at the
// client offset the server had acknowledged when it answered, not at the
// capture position: when capture order and the real order differ, the
// replayer must not wait for an answer before sending the bytes that caused
// it.
func (t *Tracker) serverData(k SessionKey, s *session, seg capture.Segment, acked int64) {
	if !s.srvKnown { // SYN-ACK not captured: count from here
		s.srvKnown, s.srvBase = true, seg.Seq
	}
	off := s.srvHigh + int64(int32(seg.Seq-(s.srvBase+uint32(s.srvHigh))))
	end := off + int64(len(seg.Payload))
	if end <= s.srvHigh {
		return // retransmission
	}
	if t.cfg.ServerData {
		// Only what extends the stream; bytes behind a hole are not
		// reassembled (a framer of the server's side then stops, and the
		// replayer falls back to counting bytes).
		ev := Event{Kind: EvServerData, Time: seg.Time, Data: seg.Payload[max(s.srvHigh-off, 0):]}
		if off > s.srvHigh {
			ev.Reason = ReasonServerHole
		}
		t.emit(k, ev)
	}
	n := int(end - s.srvHigh) // includes server bytes the capture missed
	s.srvHigh = end
	at := max(acked, s.next) // an answer to bytes already delivered waits for the next ones
	if s.finDone {
		return // no client bytes follow, so no turn to cut
	}
	if m := len(s.marks); m > 0 && s.marks[m-1].off >= at {
		s.marks[m-1].bytes += n
		return
	}
	s.marks = append(s.marks, turnMark{off: at, bytes: n})
}

// checkHole ends the session when the server has acknowledged client bytes
// the capture lacks for longer than HoleGrace. After the client's FIN was
// delivered nothing is missing: an ACK beyond it (seen before the FIN, so
// not clamped to it) contradicts the capture but loses no byte.
func (t *Tracker) checkHole(k SessionKey, s *session, now time.Time) {
	if s.state != stOpen || s.finDone || s.ackHigh <= s.next {
		s.holeSeen = false
		return
	}
	if !s.holeSeen {
		s.holeSeen, s.holeSince = true, now
	}
	if t.cfg.HoleGrace < 0 || now.Sub(s.holeSince) >= t.cfg.HoleGrace {
		t.gap(k, s, now, s.holeReason())
	}
}

// holeReason describes the first missing client bytes, or returns "".
func (s *session) holeReason() string {
	switch {
	case s.finDone:
		return ""
	case s.ackHigh > s.next:
		end := s.ackHigh
		if len(s.ooo) > 0 {
			end = min(end, s.ooo[0].off)
		}
		return fmt.Sprintf("hole of %d bytes at client stream offset %d (acknowledged by the server, missing from the capture)", end-s.next, s.next)
	case len(s.ooo) > 0:
		return fmt.Sprintf("hole of %d bytes at client stream offset %d (%d bytes buffered after it)", s.ooo[0].off-s.next, s.next, s.oooBytes)
	case s.finOff > s.next:
		return fmt.Sprintf("hole of %d bytes at client stream offset %d, before the client FIN", s.finOff-s.next, s.next)
	}
	return ""
}

// Reasons carried by EvServerClose.
const (
	ReasonServerRST  = "server RST" // terminal: no more events for the session
	ReasonServerFIN  = "server FIN"
	ReasonServerHole = "server bytes missing" // EvServerData: the capture lost server bytes before these
)

// tombs remembers ended sessions' keys and ISNs for at least tombTTL of
// capture time after their last segment, in two generations: keys are
// added to and refreshed into the current one; every tombTTL the previous
// one is dropped. No queue and no time per key. IPv4 keys are packed in
// 12 bytes (about 27 bytes a key in the map, 7 MiB at maxTombs; 40-byte
// keys took 19 MiB, a sixth of a --speed 0 replay's live heap).
type tombs struct {
	v4 tombGen[tombKey4]
	v6 tombGen[tombKey6]
}

// tombKey4 and tombKey6 are SessionKeys packed without pointers
// (netip.Addr holds one).
type tombKey4 struct {
	c, s   [4]byte
	cp, sp uint16
}

type tombKey6 struct {
	c, s   [16]byte
	cp, sp uint16
}

func (tb *tombs) add(k SessionKey, isn uint32, now time.Time) {
	if k4, ok := packKey4(k); ok {
		tb.v4.add(k4, isn, now)
	} else {
		tb.v6.add(packKey6(k), isn, now)
	}
}

// find returns the ISN of an ended session on k and keeps its key for
// another tombTTL, as a late segment of it was just seen.
func (tb *tombs) find(k SessionKey, now time.Time) (uint32, bool) {
	if k4, ok := packKey4(k); ok {
		return tb.v4.find(k4, now)
	}
	return tb.v6.find(packKey6(k), now)
}

func (tb *tombs) forget(k SessionKey) {
	if k4, ok := packKey4(k); ok {
		tb.v4.forget(k4)
	} else {
		tb.v6.forget(packKey6(k))
	}
}

func (tb *tombs) age(now time.Time) {
	tb.v4.age(now)
	tb.v6.age(now)
}

func (tb *tombs) len() int { return tb.v4.len() + tb.v6.len() }

func packKey4(k SessionKey) (tombKey4, bool) {
	c, s := k.Client.Addr(), k.Server.Addr()
	if !c.Is4() || !s.Is4() {
		return tombKey4{}, false
	}
	return tombKey4{c: c.As4(), s: s.As4(), cp: k.Client.Port(), sp: k.Server.Port()}, true
}

func packKey6(k SessionKey) tombKey6 {
	return tombKey6{c: k.Client.Addr().As16(), s: k.Server.Addr().As16(), cp: k.Client.Port(), sp: k.Server.Port()}
}

// tombGen is the two generations of one key type.
type tombGen[K comparable] struct {
	cur, prev map[K]uint32 // key → ISN
	since     time.Time    // capture time cur was started
}

func (g *tombGen[K]) add(pk K, isn uint32, now time.Time) {
	g.age(now)
	if len(g.cur) >= maxTombs/2 {
		// More sessions end per tombTTL than the table holds (a capture of
		// 100k short sessions a second): generations turn over sooner. A
		// late segment of a forgotten session is then counted mid-stream,
		// never replayed.
		g.prev, g.cur, g.since = g.cur, nil, now
	}
	if g.cur == nil {
		g.cur = make(map[K]uint32)
	}
	delete(g.prev, pk)
	g.cur[pk] = isn
}

func (g *tombGen[K]) find(pk K, now time.Time) (uint32, bool) {
	if len(g.cur) == 0 && len(g.prev) == 0 {
		return 0, false
	}
	if isn, ok := g.cur[pk]; ok {
		return isn, true
	}
	isn, ok := g.prev[pk]
	if ok {
		delete(g.prev, pk)
		g.add(pk, isn, now)
	}
	return isn, ok
}

func (g *tombGen[K]) forget(pk K) {
	delete(g.cur, pk)
	delete(g.prev, pk)
}

// age starts a new generation every tombTTL: a key then stays between
// tombTTL and twice that after its last segment.
func (g *tombGen[K]) age(now time.Time) {
	switch d := now.Sub(g.since); {
	case g.since.IsZero():
		g.since = now
	case d >= 2*tombTTL:
		g.cur, g.prev, g.since = nil, nil, now
	case d >= tombTTL:
		g.prev, g.cur, g.since = g.cur, nil, now
	}
}

func (g *tombGen[K]) len() int { return len(g.cur) + len(g.prev) }
