package replay

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/session"
)

// Framer follows one protocol in both directions of a session and counts
// answer units: each client request answered, or a server message the
// client waits for (a greeting). The protocol packages (respframe,
// mcframe, myframe, pgframe, h2frame) implement it. Client and Server may
// run at the same time on two goroutines; Answers and Err on any.
type Framer interface {
	Client(p []byte)
	Server(p []byte)
	Answers() int
	Err() error
}

// Protocol is one protocol the replayer can frame.
type Protocol struct {
	Name string
	New  func() Framer
	// Detect looks at a session's first client bytes, DetectServer at its
	// first server bytes (server-first protocols); either may be nil.
	Detect       func(client []byte) bool
	DetectServer func(server []byte) bool
	// Ports are the usual server ports, for sessions whose first bytes
	// say nothing (or were not captured).
	Ports []uint16
	// NoJoin says a session seen mid-stream cannot be replayed at all
	// (HTTP/2: no connection preface, no HPACK state): such sessions of
	// this protocol (forced, or by port) are skipped and counted.
	NoJoin bool
	// Stateless says the protocol carries no connection state a framer
	// needs (no handshake: Redis, memcached), so a session seen mid-stream
	// can be framed from the turn boundary it joins at, once its first
	// bytes there are what Detect recognises as the start of a request:
	// the framer confirms the tracker's boundary is a message boundary.
	Stateless bool
	// Renumber, when set, makes a session's rewriter of client bytes for a
	// protocol whose server numbers what its client then names (MySQL's
	// prepared statements); it adds each number it replaced to renumbered,
	// each it found no partner for to unknown. Its Framer must implement
	// Numbering.
	Renumber func(renumbered, unknown *atomic.Uint64) Renumberer
}

// Numbering is implemented by the Framer of a protocol whose server
// numbers things for the session that its client names later (MySQL's
// prepared statement ids). The capture side's framer tells production's
// numbers, the player's framer the target's.
type Numbering interface {
	// Numbered appends the numbers the server gave since the last call, in
	// order (0 for a request it refused); ok is false once some were lost.
	Numbered(dst []uint32) (ids []uint32, ok bool)
}

// Renumberer rewrites a session's client bytes so that they name the
// target's numbers where the capture names production's. One player's
// goroutine uses it.
type Renumberer interface {
	// Production and Target are told each side's numbers, in order.
	Production(ids []uint32, ok bool)
	Target(ids []uint32, ok bool)
	// Rewrite returns the bytes to write in place of p; it may keep the
	// end of p back until the next call, or Flush.
	Rewrite(p []byte) []byte
	Flush() []byte
}

// joinable reports whether a session seen mid-stream on server port port
// may be replayed from a turn boundary.
func (r *Replayer) joinable(port uint16) bool {
	for _, pr := range r.cfg.Protocols {
		if pr.NoJoin && (r.cfg.Protocol == pr.Name || (r.cfg.Protocol == "" && slices.Contains(pr.Ports, port))) {
			return false
		}
	}
	return true
}

// Names Config.Protocol takes besides those of Config.Protocols.
const (
	// ProtocolHTTP1 names the sessions the built-in HTTP/1 framing follows.
	ProtocolHTTP1 = "http1"
	// ProtocolNone turns framing off: turns end by size and silence.
	ProtocolNone = "none"
)

// captured is a session's capture-side framing, shared by its copies: it
// sees the captured client and server bytes in capture order (on the
// capture reader's goroutine) and tells each turn how many answers
// production had given before the client went on.
type captured struct {
	decided atomic.Bool              // set once proto is final
	proto   atomic.Pointer[Protocol] // nil: not framed
	// The rest is the capture reader's alone.
	f     Framer
	off   bool // decided, and not framed
	holed bool // the capture missed server bytes: its answers cannot be counted
	// joined: seen mid-stream; only a Stateless protocol whose Detect
	// recognises the first bytes at the join may frame it.
	joined bool
	// Server bytes that came first and named no protocol (an HTTP/2
	// server's SETTINGS sent before the client's preface): kept until the
	// client's first bytes decide, then framed.
	early []byte
	// held is a turn before the client's first bytes while undecided: it is
	// queued once the decision tells how many answers it waits for.
	held *heldTurn
	// cmp is the session's comparison (nil: none); cmpDecided once it was
	// told the protocol.
	cmp        *compare.Conn
	cmpDecided bool
	// asking is the client's request production has not begun to answer
	// (order.go); nil when not ordering or none is pending. after: the
	// players' dials wait until every request numbered up to it, all that
	// production answered before the SYN, is done.
	asking *orderRef
	after  uint64
}

type heldTurn struct {
	ev session.Event
	at time.Time
}

// decision is the protocol decided for the session, for its players.
func (c *captured) decision() (pr *Protocol, decided bool) {
	if !c.decided.Load() {
		return nil, false
	}
	return c.proto.Load(), true
}

// detect decides the protocol on a session's first payload, in either
// direction: a forced protocol, else the first bytes, else the port.
func (r *Replayer) detect(c *captured, port uint16, p []byte, server bool) {
	if c.f != nil || c.off {
		return
	}
	pick := func(pr *Protocol) {
		c.f = pr.New()
		c.proto.Store(pr)
		c.decided.Store(true)
		if len(c.early) > 0 {
			c.f.Server(c.early)
		}
		c.early = nil
	}
	off := func() {
		c.off, c.early = true, nil
		c.decided.Store(true)
	}
	if c.joined {
		// Mid-stream: the first client bytes at the join must start a
		// request of a protocol that needs no connection state.
		for i := range r.cfg.Protocols {
			pr := &r.cfg.Protocols[i]
			if !server && pr.Stateless && pr.Detect != nil && (r.cfg.Protocol == "" || r.cfg.Protocol == pr.Name) && pr.Detect(p) {
				pick(pr)
				return
			}
		}
		off()
		return
	}
	if r.cfg.Protocol != "" {
		i := slices.IndexFunc(r.cfg.Protocols, func(pr Protocol) bool { return pr.Name == r.cfg.Protocol })
		if i >= 0 {
			pick(&r.cfg.Protocols[i])
		} else {
			off() // forced to one the replayer frames itself, or none
		}
		return
	}
	// By the first bytes; where several protocols' look alike ("get k" is
	// memcached, or Redis inline), the port decides between them.
	var byBytes *Protocol
	for i := range r.cfg.Protocols {
		pr := &r.cfg.Protocols[i]
		if (!server && pr.Detect != nil && pr.Detect(p)) || (server && pr.DetectServer != nil && pr.DetectServer(p)) {
			if byBytes == nil || slices.Contains(pr.Ports, port) {
				byBytes = pr
			}
		}
	}
	if byBytes != nil {
		pick(byBytes)
		return
	}
	if server {
		// Server bytes no protocol claims as a greeting: the client's
		// first bytes will tell (kept within earlyLimit).
		if len(c.early)+len(p) <= earlyLimit {
			c.early = append(c.early, p...)
			return
		}
	}
	for i := range r.cfg.Protocols {
		if pr := &r.cfg.Protocols[i]; slices.Contains(pr.Ports, port) {
			pick(pr)
			return
		}
	}
	off()
}

// undecided reports whether the session's protocol is still open: server
// bytes came, the client has not spoken yet.
func (c *captured) undecided() bool { return c.f == nil && !c.off }

// answers is what a turn must wait for: the answers the capture shows
// completed so far, or -1 when the capture side cannot tell.
func (c *captured) answers() int {
	if c.f == nil || c.holed || c.f.Err() != nil {
		return -1
	}
	return c.f.Answers()
}

// numbers takes the numbers production gave since the last turn, for a
// protocol with renumbering (nil otherwise); ok is false once the capture
// side could not follow them all.
func (c *captured) numbers() (ids []uint32, ok bool) {
	pr := c.proto.Load()
	if c.f == nil || pr == nil || pr.Renumber == nil {
		return nil, true
	}
	nf, isN := c.f.(Numbering)
	if !isN {
		return nil, false
	}
	ids, ok = nf.Numbered(nil)
	return ids, ok && !c.holed
}

// earlyLimit bounds the target bytes a session keeps while its protocol is
// not decided yet (a server-first greeting that arrives before the
// captured one was read).
const earlyLimit = 64 << 10

// targetSide is a player's framing of the target's conversation. The
// target may speak before the protocol is decided (a greeting right after
// the handshake): its first bytes are kept until then.
type targetSide struct {
	mu    sync.Mutex
	f     Framer
	off   atomic.Bool // decided: not framed (or the early bytes overflowed); read without mu by server
	early []byte      // target bytes seen before the decision
}

// decide starts framing with pr (nil: none), replaying the early bytes.
func (t *targetSide) decide(pr *Protocol) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f != nil || t.off.Load() {
		return
	}
	if pr == nil {
		t.off.Store(true)
		t.early = nil
		return
	}
	t.f = pr.New()
	if len(t.early) > 0 {
		t.f.Server(t.early)
	}
	t.early = nil
}

// server shows the target's bytes to the framer, or keeps them until the
// protocol is decided.
func (t *targetSide) server(p []byte) {
	if t.off.Load() {
		return // most sessions: no lock per answer chunk
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.f != nil:
		t.f.Server(p)
	case t.off.Load():
	case len(t.early)+len(p) > earlyLimit:
		t.off.Store(true)
		t.early = nil
	default:
		t.early = append(t.early, p...)
	}
}

// framer returns the decided framer, or nil.
func (t *targetSide) framer() Framer {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.f
}

// renumber rewrites the client's bytes b to name the target's numbers,
// told the ones the target gave since the last write first.
func (s *player) renumber(b []byte) []byte {
	var ok bool
	s.numBuf, ok = s.tgtNums.Numbered(s.numBuf[:0])
	s.renum.Target(s.numBuf, ok)
	return s.renum.Rewrite(b)
}

// flushClient writes the client bytes a renumbering kept back, before the
// client's stream ends.
func (s *player) flushClient(conn Conn) error {
	if s.renum == nil {
		return nil
	}
	b := s.renum.Flush()
	if len(b) == 0 {
		return nil
	}
	if f := s.tgt.framer(); f != nil {
		f.Client(b)
	}
	return s.write(conn, b)
}
