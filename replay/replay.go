// Package replay turns the session events of a capture into real TCP
// connections to the target: one goroutine per session dials from the
// (possibly rewritten) captured client address, writes the client's bytes
// turn by turn, drains and counts the target's answers, and replays the
// client's FIN or RST.
//
// replay sees connections only through its Conn contract and dials through
// the function it is given, so it does not know the stack: it imports
// session, transfer and httpframe, and must not import netstack, wire,
// relay, capture, mirror or intercept.
package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/httpframe"
	"github.com/stackcopy/stackcopy/session"
	"github.com/stackcopy/stackcopy/transfer"
)

// Conn is what the replayer needs of a forged connection. *stack.Conn
// satisfies it.
type Conn interface {
	io.WriteCloser
	// Discard waits for the target's next bytes and consumes them,
	// returning how many; io.EOF after the target's FIN.
	Discard() (int, error)
	CloseWrite() error // replays the client's FIN
	Abort()            // replays the client's RST
}

// answerTap is implemented by connections that can show the target's bytes
// to a writer as they are consumed (*stack.Conn): HTTP framing needs them,
// counting does not. The writer must not block.
type answerTap interface {
	DiscardTo(w io.Writer) (int, error)
}

// readNotifier is implemented by connections that say when the target's
// bytes may have arrived (the netstack's, through mirror): the player then
// drains on demand, in a goroutine that lives while bytes come, instead
// of one parked per session for its whole life.
type readNotifier interface {
	// TryDiscardTo is DiscardTo without waiting: wouldBlock when nothing
	// came since.
	TryDiscardTo(w io.Writer) (n int, wouldBlock bool, err error)
	// OnReadable calls f, which must not block, whenever bytes, the FIN
	// or an error may have arrived, until stop.
	OnReadable(f func()) (stop func())
	// Readable reports whether TryDiscardTo has something to return.
	Readable() bool
}

// corker is implemented by connections that can hold back a segment
// shorter than the MSS (the netstack's, TCP_CORK): the player corks a run
// of large writes that are already due (corkMin).
type corker interface{ SetCork(on bool) }

// corkMin is the smallest write the player corks: more than one
// full-sized segment, so a record the capture merged (GRO, a pcap written
// from a host with offloads), whose production segment boundaries are
// gone anyway. Smaller writes keep their own segments.
const corkMin = 2048

// DialFunc opens a connection from the forged src to dst. A zero src port
// asks for any free port.
type DialFunc func(ctx context.Context, src, dst netip.AddrPort) (Conn, error)

// Errors a DialFunc and a Conn wrap (errors.Is) when they apply, so the
// replayer counts failures by cause without importing the stack: the
// caller that builds the DialFunc maps its stack's errors onto these.
var (
	// ErrReset: the target reset the connection.
	ErrReset = errors.New("connection reset by target")
	// ErrRefused: the target answered the SYN with a RST.
	ErrRefused = errors.New("connection refused by target")
	// ErrTimeout: the handshake or a retransmission gave up.
	ErrTimeout = errors.New("timed out")
	// ErrPortInUse: the forged 4-tuple is still taken; a copy (-n) then
	// tries the next port of its range.
	ErrPortInUse = errors.New("forged client port in use")
	// ErrUnreachable: no route to the target, or an ICMP error said so.
	ErrUnreachable = errors.New("target unreachable")
	// ErrRelayDown: the forged address could not be registered with an
	// intercept (not connected, or it did not confirm in time), so the
	// session was not started: its answers would have leaked.
	ErrRelayDown = errors.New("relay to intercept down")
)

// Config says what to replay where, and how.
type Config struct {
	// Transfers maps captured server addresses to targets (tcpcopy -x).
	Transfers transfer.Transfers
	// Pool rewrites client addresses (tcpcopy -c); nil keeps them.
	Pool *transfer.ClientPool
	// Speed scales the captured pace: 2 replays twice as fast; 0 sends each
	// turn as soon as the target answered the previous one.
	Speed float64
	// NoWait sends the next turn without waiting for the target's answer
	// (tcpcopy -W).
	NoWait bool
	// NoOrder opens each session at its captured time even when requests
	// production answered before its SYN are still unanswered by the
	// target. By default, when pacing (Speed > 0) and waiting for answers,
	// a session's dial waits for those answers (their first bytes), for at
	// most TurnWait (order.go). It needs the captured server's bytes
	// (session.TrackerConfig.ServerData); without them nothing waits.
	NoOrder bool
	// TurnWait bounds how long a turn waits for the target's answer before
	// it is sent anyway (counted in Stats.TurnsUnanswered).
	TurnWait time.Duration
	// Quiet is how long the target must be silent before a shorter answer
	// than the captured one counts as complete.
	Quiet time.Duration
	// NoHTTPFraming turns off HTTP/1.x turn ends. By default a session
	// whose first bytes are an HTTP/1.x request line has both directions
	// framed (mirror/replay/httpframe): a turn is answered when every
	// request sent has its complete final response, whatever its size
	// compared with the captured one, with no quiet spell. Sessions that
	// are not HTTP, answers the framer cannot follow (zero-filled payloads
	// from a header-only relay, a body until close, a protocol switch)
	// fall back to size and Quiet.
	NoHTTPFraming bool
	// Protocols are the protocols framed besides HTTP/1: a session's is
	// decided on its first bytes (either direction), else by the server
	// port. Its turns then end when the target has given as many answers
	// as the capture shows before the turn, whatever their sizes (see
	// Framer). The capture reader must report server bytes
	// (session.TrackerConfig.ServerData) for this.
	Protocols []Protocol
	// Protocol forces one protocol for every session: a Name of
	// Protocols, ProtocolHTTP1, or ProtocolNone (no framing at all). ""
	// detects it per session.
	Protocol string
	// Idle ends a session that made no progress for this long (tcpcopy -t).
	Idle time.Duration
	// DialTimeout bounds the handshake.
	DialTimeout time.Duration
	// MaxHandshakes bounds the handshakes in flight. Thousands of sessions
	// starting at once (--speed 0, a burst in the capture) otherwise starve
	// the stack's own goroutines on a small machine: measured with 6 000
	// simultaneous sessions on 2 cores, ACKs were processed so late that
	// gVisor retransmitted spuriously (1 163 RTOs, every one a duplicate at
	// the target) and answers missed --turn-wait.
	MaxHandshakes int
	// QueueBytes bounds the captured bytes held in memory per session;
	// beyond it they go to the session's spill file.
	QueueBytes int
	// SpillDir is where spill files are made (unlinked at once); "" is the
	// system's temporary directory.
	SpillDir string
	// SpillMax bounds the bytes all spill files hold together; 0 turns
	// spilling off.
	SpillMax int64
	// ShedWhenFull says what happens to a session whose queue is full when
	// no spill space is left: true ends that session (counted in
	// Stats.Overflowed) so the capture reader never waits, as a live capture
	// needs; false makes the reader wait, as a capture file allows.
	ShedWhenFull bool
	// Keep samples sessions (tcpcopy -r); nil keeps all.
	Keep func(client netip.AddrPort) bool
	// Admit is asked before each new session; false sheds it (counted), as
	// the memory limit (-m) does before it is crossed. It is called on the
	// capture reader's goroutine without the replayer's lock, so it may
	// also wait (a capture file's -m slows the reader). nil admits all.
	Admit func() bool
	// AdmitWaits makes a refusal of Admit wait instead of shed, as a
	// capture file allows: the reader asks again every 10 ms while other
	// sessions are ahead of it (see Window), and admits when none is.
	AdmitWaits bool
	// Window bounds the sessions (copies counted) that hold captured work
	// they have not done yet: waiting for their dial, with events queued,
	// or acting on one. A new session waits for room, so a capture
	// file's reader never runs more than Window sessions ahead of the
	// replay (window.go). 0: no bound, as live capture needs (it must
	// never wait; -m sheds there instead).
	Window int
	// WindowBytes bounds the captured bytes queued in memory across
	// sessions: past it new sessions wait, and so does the reader on a
	// session that already has bytes queued, until they are written.
	// 0: no bound.
	WindowBytes int64
	// Copies replays each session this many times (tcpcopy -n).
	Copies int
	// CopyPorts is the client port range copies after the first take their
	// ports from, in turn per client address. The default, 1024-32767, lies
	// below the ephemeral ranges of Linux (32768-60999) and of Windows and
	// IANA (49152-65535), so a copy does not take the port a real client
	// will use next, and a copy's 4-tuple repeats only once the range wraps.
	CopyPorts [2]uint16
	// PortOffset shifts captured client ports (tcpcopy -f), so several
	// instances replaying the same capture do not collide.
	PortOffset int
	// Compare, when set, is shown every session's bytes: the captured
	// client's and server's on the capture side, and the answers of the
	// target (the first copy) and of the baseline; it pairs and compares
	// the answers. nil compares nothing. The capture reader must report
	// server bytes (session.TrackerConfig.ServerData).
	Compare *compare.Collector
	// Baseline maps a captured server to a second target every session is
	// also replayed to, from a port of CopyPorts: a copy of production's
	// build whose answers tell noise (timestamps, generated ids) from
	// change. Empty: no baseline.
	Baseline transfer.Transfers
}

// DefaultConfig returns the defaults documented in --help.
func DefaultConfig() Config {
	return Config{
		TurnWait:      2 * time.Second,
		Quiet:         20 * time.Millisecond,
		Idle:          120 * time.Second,
		DialTimeout:   10 * time.Second,
		QueueBytes:    4 << 20,
		SpillMax:      2 << 30,
		MaxHandshakes: 128,
		CopyPorts:     [2]uint16{1024, 32767},
	}
}

// Stats counts sessions by outcome and bytes moved. Every session the
// replayer was given ends in exactly one of the outcome counters.
type Stats struct {
	Sessions        uint64 // sessions opened (SYN captured, matched by -x)
	Unmatched       uint64 // sessions whose server matched no -x entry
	SampledOut      uint64 // sessions left out by Keep (-r)
	Shed            uint64 // sessions refused by Admit (memory limit -m)
	Completed       uint64 // all client bytes delivered, ended as captured
	ClientResets    uint64 // all bytes before the client's RST delivered, RST replayed
	TargetResets    uint64 // the target reset or closed before all bytes were delivered
	Refused         uint64 // the target refused the connection
	TimedOut        uint64 // handshake or idle timeout (-t)
	Gaps            uint64 // the capture missed client bytes: aborted, not replayed wrong
	Overflowed      uint64 // fell behind by more than the memory queue and spill space: aborted (ShedWhenFull)
	Interrupted     uint64 // cut short or never started because the replay was stopped (ctx ended)
	Failed          uint64 // other dial or write errors
	BytesSent       uint64 // client bytes written to targets
	BytesReceived   uint64 // response bytes drained from targets
	Turns           uint64 // turns that waited for the target's answer
	TurnsUnanswered uint64 // turns sent after TurnWait without an answer
	TurnsFramed     uint64 // turns whose answer protocol framing (HTTP/1 or another) found complete
	// OpensHeld counts sessions whose dial waited for the target's answers
	// to requests production answered before the session's SYN (order.go);
	// OpensUnordered those of them that gave up after TurnWait.
	OpensHeld      uint64
	OpensUnordered uint64
	PortsRemapped  uint64 // captured client port busy: the stack chose another
	SpilledBytes   uint64 // client bytes that went through a spill file
	SpillPeak      int64  // most bytes held in spill files at once
	// Unjoinable counts sessions seen mid-stream whose protocol cannot be
	// joined (HTTP/2): skipped, not replayed.
	Unjoinable uint64
	// Protocols breaks sessions and turns down by the protocol each
	// session was framed as ("http1", Protocols' names, or "other").
	Protocols map[string]ProtocolStats `json:"protocols,omitempty"`
	// Reasons names why each session that did not complete ended, and the
	// sessions shed by Admit: one count per reason name (Reason*), so
	// the outcome counters above add up to it.
	Reasons map[string]uint64 `json:"reasons,omitempty"`
	// TurnLatency is, for every turn whose answer came (by framing, size
	// or silence), the time from the turn's first client byte written to
	// the answer's end as the replayer saw it (a turn that ended by
	// silence includes the Quiet spell).
	TurnLatency Histogram `json:"turn_latency"`
}

// Replayer implements session.Sink.
type Replayer struct {
	cfg  Config
	dial DialFunc
	log  *slog.Logger
	ctx  context.Context

	mu       sync.Mutex
	sessions map[session.SessionKey][]*player // the copies (-n) of each live session
	wg       sync.WaitGroup
	dialing  chan struct{} // a token per handshake in flight
	spill    *spillBudget  // nil: spilling off
	win      *window       // how far the reader may run ahead
	order    *order        // nil: sessions open at their captured time (NoOrder)
	// drains runs the sessions' drain bursts (workers.go).
	drains   *workers
	queues   queueArrays           // players' first queue storage
	copyPort map[netip.Addr]uint16 // next -n copy port per client address (under mu)

	// Pacing: capture time base and wall-clock base (see due).
	base0 time.Time
	wall0 time.Time

	protos protoTable

	s struct {
		unjoinable                                                                              atomic.Uint64
		sessions, unmatched, sampled, shed, sent, received, turns, unanswered, framed, remapped atomic.Uint64
		opensHeld, opensUnordered                                                               atomic.Uint64
		outcomes                                                                                [numOutcomes]atomic.Uint64 // indexed by outcome
		reasons                                                                                 [numReasons]atomic.Uint64  // indexed by reason
		turnLatency                                                                             latencyHist
	}
}

// New makes a replayer. ctx ends every session early when cancelled.
func New(ctx context.Context, cfg Config, dial DialFunc, log *slog.Logger) *Replayer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	def := DefaultConfig()
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = def.QueueBytes
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = def.Quiet
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = def.DialTimeout
	}
	if cfg.TurnWait <= 0 {
		cfg.TurnWait = def.TurnWait
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = def.MaxHandshakes
	}
	if cfg.CopyPorts[0] == 0 || cfg.CopyPorts[1] < cfg.CopyPorts[0] {
		cfg.CopyPorts = def.CopyPorts
	}
	r := &Replayer{cfg: cfg, dial: dial, log: log, ctx: ctx, sessions: make(map[session.SessionKey][]*player),
		dialing: make(chan struct{}, cfg.MaxHandshakes), copyPort: make(map[netip.Addr]uint16)}
	r.queues.free = make(chan []queued, queueArraysKept)
	if cfg.SpillMax > 0 {
		r.spill = &spillBudget{dir: cfg.SpillDir, max: cfg.SpillMax}
	}
	r.win = newWindow(max(cfg.Window, 0), max(cfg.WindowBytes, 0))
	if cfg.Speed > 0 && !cfg.NoWait && !cfg.NoOrder {
		r.order = newOrder()
	}
	r.drains = startWorkers(ctx, runtime.GOMAXPROCS(0), (*player).drainBurst)
	return r
}

// Rebase restarts the pacing clock: the next event is due now. Call it at
// the start of each loop over a capture.
func (r *Replayer) Rebase() {
	r.mu.Lock()
	r.base0 = time.Time{}
	r.mu.Unlock()
}

// lookahead is how far the capture reader may run ahead of the replay
// clock, so sessions have their next events queued before they are due
// without the whole capture being read into memory.
const lookahead = 500 * time.Millisecond

// due returns when an event captured at t must be acted on.
func (r *Replayer) due(t time.Time) time.Time {
	if r.cfg.Speed <= 0 {
		return time.Time{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.base0.IsZero() {
		r.base0, r.wall0 = t, time.Now()
	}
	return r.wall0.Add(time.Duration(float64(t.Sub(r.base0)) / r.cfg.Speed))
}

// Event implements session.Sink. It blocks while the session's queue is full
// and, when pacing, until the event is nearly due.
func (r *Replayer) Event(k session.SessionKey, ev session.Event) {
	if ev.Kind == session.EvServerData {
		// Only counted, by the capture side: nothing is due, and it need
		// not wait for the pacing clock (one per captured answer segment).
		r.serverData(k, ev)
		return
	}
	at := r.due(ev.Time)
	if !at.IsZero() {
		if d := time.Until(at) - lookahead; d > 0 {
			select {
			case <-time.After(d):
			case <-r.ctx.Done():
			}
		}
	}
	var (
		target   netip.AddrPort
		matched  bool
		kept     bool
		admitted = true
	)
	if ev.Kind == session.EvOpen {
		// Decided before the lock: the window and Admit may wait, and
		// players that end (which makes room) take the lock.
		target, matched = r.cfg.Transfers.Match(k.Server)
		kept = matched && (r.cfg.Keep == nil || r.cfg.Keep(k.Client))
		if kept {
			r.win.wait(r.ctx, max(r.cfg.Copies, 1))
			admitted = r.admit()
		}
	}
	r.mu.Lock()
	copies := r.sessions[k]
	if ev.Kind == session.EvOpen {
		for _, old := range copies {
			// A new SYN on the key: the tracker sends the old session
			// nothing more, so end it as if its capture ended.
			defer old.push(session.Event{Kind: evEndOfInput}, time.Time{}, -1)
		}
		if len(copies) > 0 && copies[0].cap.cmp != nil {
			copies[0].cap.cmp.EndClient()
			copies[0].cap.cmp.End(compare.Production)
		}
		delete(r.sessions, k)
		if !matched {
			r.mu.Unlock()
			r.s.unmatched.Add(1)
			return
		}
		if !kept {
			r.mu.Unlock()
			r.s.sampled.Add(1)
			return
		}
		if !admitted {
			r.mu.Unlock()
			r.s.shed.Add(1)
			r.s.reasons[reasonShed].Add(1)
			return
		}
		if ev.Joined && !r.joinable(k.Server.Port()) {
			r.mu.Unlock()
			r.s.unjoinable.Add(1)
			r.log.Info("session seen mid-stream skipped: its protocol cannot be joined", "client", k.Client, "server", k.Server)
			return
		}
		n := max(r.cfg.Copies, 1)
		copies = make([]*player, n)
		cap := &captured{}
		cap.joined = ev.Joined
		if r.cfg.Protocol == ProtocolNone {
			cap.off = true
			cap.decided.Store(true)
		}
		if r.order != nil {
			cap.after = r.order.last()
		}
		for i := range copies {
			copies[i] = r.newSession(k, target, i)
			copies[i].cap = cap
		}
		if r.cfg.Compare != nil {
			cap.cmp = r.cfg.Compare.Open(k.Client, k.Server)
			copies[0].side, copies[0].cmp = compare.Target, cap.cmp
			if bt, ok := r.cfg.Baseline.Match(k.Server); ok {
				// From a copy port: the forged client's own 4-tuple
				// differs only in the target, which an intercept's
				// registration does not tell apart.
				b := r.newSession(k, bt, max(r.cfg.Copies, 1))
				b.cap, b.baseline = cap, true
				b.side, b.cmp = compare.Baseline, cap.cmp
				copies = append(copies, b)
			} else {
				cap.cmp.End(compare.Baseline) // no baseline for this server
			}
		}
		r.sessions[k] = copies
		r.mu.Unlock()
		for _, s := range copies {
			r.s.sessions.Add(1)
			r.wg.Add(1)        // Done in end: parked sessions count too
			s.push(ev, at, -1) // before run: the open is there when it starts
			go s.run()
		}
		return
	}
	r.mu.Unlock()
	if len(copies) == 0 {
		return // unmatched, or already ended
	}
	// The capture side of framing runs here, on the capture reader's
	// goroutine, in capture order; copies share it.
	answers := -1
	var ref *orderRef
	c := copies[0].cap
	if c.held != nil {
		// The turn before the client's first bytes: once those bytes
		// decided the protocol (and the early server bytes were framed),
		// it knows how many answers to wait for.
		if ev.Kind == session.EvData {
			r.detect(c, k.Server.Port(), ev.Data, false)
		}
		h := c.held
		c.held = nil
		n := c.answers()
		nums, numsOK := c.numbers()
		for _, s := range copies {
			s.pushTurn(h.ev, h.at, n, nums, numsOK)
		}
	}
	switch ev.Kind {
	case session.EvData:
		r.detect(c, k.Server.Port(), ev.Data, false)
		if c.f != nil {
			c.f.Client(ev.Data)
		}
		if r.order != nil && c.asking == nil {
			// A request begins: numbered when production answers it.
			ref = r.order.request(len(copies))
			c.asking = ref
		}
		if c.cmp != nil {
			r.decideCompare(c, ev.Data)
			c.cmp.Client(ev.Data, ev.Time)
		}
	case session.EvFin, session.EvRst:
		if c.cmp != nil {
			c.cmp.EndClient()
			if ev.Kind == session.EvRst {
				c.cmp.End(compare.Production) // nothing answers a reset client
			}
		}
	case session.EvServerClose:
		if c.cmp != nil {
			c.cmp.End(compare.Production)
		}
	case session.EvGap:
		if c.cmp != nil {
			// The client's stream has a hole: nothing after it can be
			// cut into requests, and the player gives the session up.
			c.cmp.EndClient()
			c.cmp.Fail(compare.Production, "capture gap: "+ev.Reason)
		}
	case session.EvTurn:
		if c.undecided() && !c.decided.Load() {
			c.held = &heldTurn{ev: ev, at: at}
			return
		}
		answers = c.answers()
		nums, numsOK := c.numbers()
		for _, s := range copies {
			s.pushTurn(ev, at, answers, nums, numsOK)
		}
		return
	}
	for _, s := range copies {
		s.pushItem(queued{ev: ev, at: at, answers: answers, numbersOK: true, ref: ref})
	}
}

// serverData frames captured server bytes on the capture side of their
// session (shared by its copies); the players get nothing.
func (r *Replayer) serverData(k session.SessionKey, ev session.Event) {
	r.mu.Lock()
	copies := r.sessions[k]
	r.mu.Unlock()
	if len(copies) == 0 {
		return // unmatched, or already ended
	}
	c := copies[0].cap
	if c.asking != nil {
		r.order.answered(c.asking)
		c.asking = nil
	}
	if ev.Reason != "" {
		c.holed = true // production's answers can no longer be counted
	}
	r.detect(c, k.Server.Port(), ev.Data, true)
	if c.f != nil {
		c.f.Server(ev.Data)
	}
	if c.cmp != nil {
		if ev.Reason != "" {
			c.cmp.Fail(compare.Production, "capture missed production's bytes: "+ev.Reason)
			return
		}
		c.cmp.Server(compare.Production, ev.Data, ev.Time)
	}
}

// decideCompare names the session's protocol to the comparison once the
// capture side decided it: a framed protocol by its name, HTTP/1 (framed
// by the player, not the capture side) by its first request line, else
// none, which compares whole streams by bytes.
func (r *Replayer) decideCompare(c *captured, client []byte) {
	if c.cmpDecided {
		return
	}
	switch pr, decided := c.decision(); {
	case pr != nil:
		c.cmp.Decide(pr.Name)
	case !decided && c.undecided():
		return // server bytes only so far: the client's will tell
	case httpframe.Sniff(client):
		c.cmp.Decide(ProtocolHTTP1)
	default:
		c.cmp.Decide("")
	}
	c.cmpDecided = true
}

// CloseInput says the capture is over: sessions without a captured ending
// finish their last turn and close.
func (r *Replayer) CloseInput() {
	r.mu.Lock()
	groups := make([][]*player, 0, len(r.sessions))
	for _, copies := range r.sessions {
		groups = append(groups, copies)
	}
	r.mu.Unlock()
	for _, copies := range groups {
		if c := copies[0].cap; c.held != nil {
			// A greeting turn whose client never spoke: it still waits.
			h := c.held
			c.held = nil
			for _, s := range copies {
				s.push(h.ev, h.at, -1)
			}
		}
		for _, s := range copies {
			s.push(session.Event{Kind: evEndOfInput}, time.Time{}, -1)
		}
		if c := copies[0].cap; c.cmp != nil {
			c.cmp.EndClient()
			c.cmp.End(compare.Production)
		}
	}
}

// Wait blocks until every session has ended.
func (r *Replayer) Wait() { r.wg.Wait() }

// Stats returns the counters so far.
func (r *Replayer) Stats() Stats {
	o := &r.s.outcomes
	return Stats{
		Sessions: r.s.sessions.Load(), Unmatched: r.s.unmatched.Load(), SampledOut: r.s.sampled.Load(), Shed: r.s.shed.Load(),
		Completed: o[outCompleted].Load(), ClientResets: o[outClientReset].Load(), TargetResets: o[outTargetReset].Load(),
		Refused: o[outRefused].Load(), TimedOut: o[outTimedOut].Load(), Gaps: o[outGap].Load(),
		Overflowed: o[outOverflow].Load(), Failed: o[outFailed].Load(), Interrupted: o[outInterrupted].Load(),
		BytesSent: r.s.sent.Load(), BytesReceived: r.s.received.Load(), Turns: r.s.turns.Load(),
		TurnsUnanswered: r.s.unanswered.Load(), TurnsFramed: r.s.framed.Load(), PortsRemapped: r.s.remapped.Load(),
		OpensHeld: r.s.opensHeld.Load(), OpensUnordered: r.s.opensUnordered.Load(),
		SpilledBytes: r.spill.spilled(), SpillPeak: r.spill.highest(),
		Protocols: r.protos.stats(), Unjoinable: r.s.unjoinable.Load(),
		Reasons: r.reasonCounts(), TurnLatency: r.s.turnLatency.snapshot(),
	}
}

// reasonCounts returns the non-zero reason counters by name (nil: none).
func (r *Replayer) reasonCounts() map[string]uint64 {
	var m map[string]uint64
	for i := range r.s.reasons {
		if n := r.s.reasons[i].Load(); n > 0 {
			if m == nil {
				m = make(map[string]uint64)
			}
			m[reason(i).String()] = n
		}
	}
	return m
}

// nextCopyPort hands out -n copy ports in turn per client address,
// starting PortOffset into the range, so instances told apart by -f do not
// start on the same copy ports either. Called with r.mu held.
func (r *Replayer) nextCopyPort(a netip.Addr) uint16 {
	lo, hi := r.cfg.CopyPorts[0], r.cfg.CopyPorts[1]
	p, ok := r.copyPort[a]
	if !ok || p < lo || p > hi {
		p = uint16(int(lo) + r.cfg.PortOffset%(int(hi)-int(lo)+1))
	}
	next := p + 1
	if p == hi {
		next = lo
	}
	r.copyPort[a] = next
	return p
}

// Replayer-internal event kinds.
const (
	evEndOfInput session.EventKind = 255 // the capture ended
	evOverflow   session.EventKind = 254 // the session fell too far behind (Reason says how)
)

type queued struct {
	ev      session.Event
	at      time.Time
	answers int // EvTurn: answers the capture shows before the turn; -1 unknown
	// EvTurn: the numbers production gave since the turn before
	// (Numbering), and whether the capture side lost none.
	numbers   []uint32
	numbersOK bool
	// spillLen > 0: ev.Data is in the spill file at spillOff.
	spillOff int64
	spillLen int
	// ref: EvData that begins a captured request (order.go); the player
	// completes it once.
	ref *orderRef
}

// queueArrays is a bounded free list of the players' queue arrays.
// Mirroring keep-alive traffic live, a player parks after each request and
// wakes for the next with one or two events queued: a backing array
// allocated for each was a tenth of the replay's CPU at 16,000 requests/s
// (growslice, and the collector behind it). A parking player gives its
// array back here, so idle sessions still hold none, and a waking one
// takes one. The list is bounded (queueArraysKept) and starts empty, so a
// burst of new sessions allocates as before and what it leaves is the
// collector's: a sync.Pool, or arrays made ahead, kept ten thousand idle
// sessions' worth in the process's memory (0.7 KiB each, make bench idle).
type queueArrays struct{ free chan []queued }

// queueArraysKept bounds the free list: the players awake at once.
const queueArraysKept = 256

// get returns an empty array from the list, or nil.
func (p *queueArrays) get() []queued {
	select {
	case a := <-p.free:
		return a
	default:
		return nil
	}
}

// put gives back a (an empty queue's head), cleared; past the bound it is
// dropped.
func (p *queueArrays) put(a []queued) {
	clear(a[:cap(a)])
	select {
	case p.free <- a:
	default:
	}
}

// enqueueLocked appends item to the queue. An empty queue at the end of
// its array (every element before was popped and cleared) starts again at
// the array's head, or in one from the free list.
func (s *player) enqueueLocked(item queued) {
	if cap(s.q) == 0 {
		if s.qa == nil {
			s.qa = s.r.queues.get()
		}
		s.q = s.qa
	}
	room := cap(s.q)
	s.q = append(s.q, item)
	if cap(s.q) != room {
		s.qa = s.q[:0] // append moved the queue to a new array: its head
	}
}

// releaseQueueLocked empties the queue and gives its array back.
func (s *player) releaseQueueLocked() {
	s.q = nil
	if s.qa != nil {
		s.r.queues.put(s.qa)
		s.qa = nil
	}
}

type player struct {
	r      *Replayer
	key    session.SessionKey
	copy   int // 0 for the session as captured, 1.. for -n copies
	src    netip.AddrPort
	target netip.AddrPort

	mu        sync.Mutex
	cond      *sync.Cond
	q         []queued
	qa        []queued // the head of q's array (empty), while not parked
	bytes     int
	closed    bool // run has returned: push drops
	cancelled bool // the replayer's context ended
	conn      Conn // set once dialed, for cancel
	spill     *spillFile
	overflow  atomic.Bool // shed for falling behind: push drops, the outcome is outOverflow
	ahead     bool        // holds work the reader gave it (window.go)
	shedWhy   reason      // why it was shed (under mu, set with overflow)
	dialed    bool        // the handshake completed (the player's goroutine only)
	// asked is the request written last whose answer has not begun: the
	// drain completes it on the target's next bytes.
	asked atomic.Pointer[orderRef]

	// Parking (park): a player with nothing queued has no goroutine; the
	// next push, its idle timer or cancel starts one (wake). parked and
	// idleTimer are under mu; idleSince, stopCancel and the loop state
	// (play) belong to whichever goroutine runs the player, one at a time,
	// handed over under mu.
	parked     bool
	idleTimer  *time.Timer
	idleSince  time.Time // the queue ran empty here (zero: not waiting)
	stopCancel func() bool
	play       playState

	// HTTP framing, decided on the first client bytes (sniffed). reqs is fed
	// by run before each write; resps by the drain as answers are consumed.
	sniffed bool
	reqs    *httpframe.Requests
	resps   atomic.Pointer[httpframe.Responses]

	// Framing of the other protocols: cap is the capture side (shared by
	// the copies), tgt the target side, fed by run before each write and
	// by the drain as answers are consumed. proto is the decided protocol's
	// name once run saw it ("" until then, or when not framed).
	cap   *captured
	tgt   targetSide
	proto string         // the protocol's name once decided
	pc    *protoCounters // its counters

	// Comparison: cmp is the session's, shown this player's answers as
	// side (the first copy's as the target's, the baseline player's as the
	// baseline's); nil for the other copies and when not comparing.
	// baseline: this player replays to the baseline target. outcome is
	// what count decided, for finish to tell the comparison.
	cmp      *compare.Conn
	side     compare.Side
	baseline bool
	outcome  outcome

	// renum rewrites the client's bytes of a protocol with renumbering
	// (MySQL's statement ids), told the target's numbers by tgtNums (the
	// target-side framer); set by decide. The player's goroutine only.
	renum   Renumberer
	tgtNums Numbering
	numBuf  []uint32

	// h2 is the flow control of an HTTP/2 session (h2flow.go), set by
	// run's first write; nil for other sessions.
	h2 atomic.Pointer[h2flow]

	// On-demand draining (startDrain): the connection's notifier, its
	// stop, and whether a burst runs.
	notifier   readNotifier
	stopNotify func()
	draining   atomic.Bool

	// Written by the drain goroutine, read by run.
	rcvd     atomic.Uint64
	lastRcv  atomic.Int64 // unix nanos of the last answer byte
	rcvErr   error        // set before rcvDone is closed
	rcvDone  chan struct{}
	progress chan struct{} // poked on every answer read
}

// playState is where the event loop stands between events; it outlives
// the goroutine when the player parks.
type playState struct {
	conn           Conn      // set once the drain started (s.conn is set at the dial)
	mark           turnStart // where the target's answers stood at the current turn's first write
	wrote          bool      // the current turn has written bytes
	pendingTurn    int       // captured answer size the next data must wait for
	pendingAnswers int       // answers the capture shows before the next data, -1 unknown
	waitTurn       bool
	corked         bool      // a run of due writes is corked (corkMin)
	ref            *orderRef // taken from the queue, not yet written (asked)
}

func (r *Replayer) newSession(k session.SessionKey, target netip.AddrPort, copy int) *player {
	addr := k.Client.Addr()
	if r.cfg.Pool != nil {
		addr = r.cfg.Pool.Map(addr)
	}
	port := k.Client.Port()
	if r.cfg.PortOffset != 0 {
		// Keep shifted ports in the unprivileged range, as tcpcopy -f does.
		port = uint16(1024 + (int(port)-1024+r.cfg.PortOffset+64512)%64512)
	}
	if copy > 0 {
		port = r.nextCopyPort(addr)
	}
	src := netip.AddrPortFrom(addr, port)
	s := &player{r: r, key: k, copy: copy, src: src, target: target, rcvDone: make(chan struct{}), progress: make(chan struct{}, 1)}
	s.cond = sync.NewCond(&s.mu)
	// Ahead from the start: its open is on the way, and it has a dial to do.
	s.ahead = true
	r.win.add(1, 0)
	return s
}

// push queues an event for the session. Bytes beyond QueueBytes go to the
// spill file while spill space lasts; after that the session is shed
// (ShedWhenFull) or the caller waits for room.
// answers (EvTurn) is the count of answers the capture shows before the
// turn, -1 when unknown.
func (s *player) push(ev session.Event, at time.Time, answers int) {
	s.pushItem(queued{ev: ev, at: at, answers: answers, numbersOK: true})
}

// pushTurn is push with the numbers production gave before an EvTurn.
func (s *player) pushTurn(ev session.Event, at time.Time, answers int, numbers []uint32, numbersOK bool) {
	s.pushItem(queued{ev: ev, at: at, answers: answers, numbers: numbers, numbersOK: numbersOK})
}

func (s *player) pushItem(item queued) {
	ev := item.ev
	var abort Conn
	kept := false
	defer func() {
		if !kept {
			s.r.order.complete(item.ref) // this copy will never write it
		}
		if abort != nil {
			abort.Abort() // outside the lock, as cancel does
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.overflow.Load() {
		return
	}
	n := len(ev.Data)
	full := n > 0 && s.bytes > 0 && s.bytes+n > s.r.cfg.QueueBytes
	if full && s.r.spill != nil {
		err := s.spillLocked(item)
		if err == nil {
			kept = true
			return
		}
		if s.r.cfg.ShedWhenFull {
			s.shedWhy = reasonSpillError
			switch {
			case errors.Is(err, errSpillFull):
				s.shedWhy = reasonSpillFull
			case errors.Is(err, syscall.ENOSPC):
				s.shedWhy = reasonSpillNoSpace
			}
			abort = s.shedLocked(err.Error())
			return
		}
	} else if full && s.r.cfg.ShedWhenFull {
		s.shedWhy = reasonFellBehind
		abort = s.shedLocked(fmt.Sprintf("more than %d bytes queued (spilling is off)", s.r.cfg.QueueBytes))
		return
	}
	// Past the window's bytes the reader waits for this session's own
	// queue to drain (it drains without the reader), rather than spill:
	// a file can be read again later.
	winFull := func() bool { return n > 0 && s.bytes > 0 && !s.r.cfg.ShedWhenFull && s.r.win.bytesFull(n) }
	for (full || winFull()) && !s.closed {
		s.cond.Wait()
		full = s.bytes > 0 && s.bytes+n > s.r.cfg.QueueBytes
	}
	if s.closed {
		return
	}
	s.enqueueLocked(item)
	kept = true
	s.bytes += n
	s.r.win.add(0, int64(n))
	s.setAheadLocked(true)
	s.cond.Broadcast()
	s.wakeLocked()
}

// errSpillFull is why a session could not spill: the budget is spent.
var errSpillFull = errors.New("spill space spent")

// spillLocked writes the event's bytes to the spill file and queues a
// reference to them.
func (s *player) spillLocked(item queued) error {
	ev := item.ev
	b := s.r.spill
	if !b.take(len(ev.Data)) {
		return fmt.Errorf("%d bytes queued and %w (--spill-max %d)", s.bytes, errSpillFull, b.max)
	}
	if s.spill == nil {
		sf, err := openSpill(b.dir)
		if err != nil {
			b.give(int64(len(ev.Data)))
			return err
		}
		s.spill = sf
	}
	off, err := s.spill.write(ev.Data)
	if err != nil {
		b.give(int64(len(ev.Data)))
		return err
	}
	n := len(ev.Data)
	item.ev.Data = nil
	item.spillOff, item.spillLen = off, n
	s.enqueueLocked(item)
	s.setAheadLocked(true)
	s.cond.Broadcast()
	s.wakeLocked()
	return nil
}

// shedLocked gives the session up: what is queued is dropped, and the
// connection it returns (nil before the dial) is to be aborted once the
// lock is released, so the target sees a client that went away rather than
// a stream with bytes missing.
func (s *player) shedLocked(reason string) Conn {
	s.overflow.Store(true)
	s.dropQueueLocked()
	s.enqueueLocked(queued{ev: session.Event{Kind: evOverflow, Reason: reason}})
	s.setAheadLocked(true)
	s.cond.Broadcast()
	s.wakeLocked()
	return s.conn
}

// dropQueueLocked empties the queue and gives its spill space back.
func (s *player) dropQueueLocked() {
	for _, q := range s.q {
		s.r.order.complete(q.ref)
	}
	s.releaseQueueLocked()
	s.r.win.add(0, -int64(s.bytes))
	s.bytes = 0
	if s.spill != nil {
		s.r.spill.give(s.spill.unread)
		s.spill.unread = 0
	}
}

// next takes the next queued event; ok false when nothing is queued.
func (s *player) next() (queued, bool, error) {
	s.mu.Lock()
	if len(s.q) == 0 {
		s.mu.Unlock()
		return queued{}, false, nil
	}
	return s.popLocked()
}

// popLocked takes the first queued event and unlocks mu. Spilled bytes are
// read back outside the lock, so the capture side can go on queueing
// meanwhile.
func (s *player) popLocked() (queued, bool, error) {
	q := s.q[0]
	s.q[0] = queued{}
	s.q = s.q[1:]
	s.bytes -= len(q.ev.Data)
	s.r.win.add(0, -int64(len(q.ev.Data)))
	s.cond.Broadcast()
	sf := s.spill
	s.mu.Unlock()
	if q.spillLen == 0 {
		return q, true, nil
	}
	// The file is only rewound when nothing unread is left in it, and this
	// item is unread until consumed below: the bytes at spillOff stay put.
	data, err := sf.read(q.spillOff, q.spillLen)
	s.mu.Lock()
	if !s.overflow.Load() {
		sf.consumed(q.spillLen)
		s.r.spill.give(int64(q.spillLen))
	}
	s.mu.Unlock()
	if err != nil {
		return queued{}, false, err
	}
	q.ev.Data = data
	return q, true, nil
}

// nextDue reports whether the next queued event is client data whose time
// has come: the write now is one of a run written back to back.
func (s *player) nextDue() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.q) == 0 {
		return false
	}
	q := &s.q[0]
	return q.ev.Kind == session.EvData && (q.at.IsZero() || !q.at.After(time.Now()))
}

// cancel runs when the replayer's context ends: it wakes the session
// wherever it waits and aborts its connection, which also unblocks a write
// to a target that stopped reading.
func (s *player) cancel() {
	s.mu.Lock()
	s.cancelled = true
	c := s.conn
	s.cond.Broadcast()
	s.wakeLocked()
	s.mu.Unlock()
	if c != nil {
		c.Abort()
	}
}

func (s *player) finish() {
	if s.cmp != nil {
		// After the drain ended: every answer the target gave is in.
		if s.outcome == outCompleted {
			s.cmp.End(s.side)
		} else {
			s.cmp.Fail(s.side, s.outcome.String())
		}
	}
	s.mu.Lock()
	s.closed = true
	s.setAheadLocked(false)
	s.dropQueueLocked()
	if s.spill != nil {
		s.spill.close()
		s.spill = nil
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

type outcome int

const (
	outCompleted outcome = iota
	outClientReset
	outTargetReset
	outRefused
	outTimedOut
	outGap
	outOverflow
	outInterrupted
	outFailed
	numOutcomes
)

// outcomeNames are the outcomes as the summary, the metrics and the logs
// name them, in outcome order (a read-only table).
var outcomeNames = [numOutcomes]string{"completed", "client-reset", "target-reset", "refused", "timed-out", "capture-gap", "overflowed", "interrupted", "failed"}

// String names the outcome as the summary does.
func (o outcome) String() string {
	if o < 0 || o >= numOutcomes {
		return outcomeNames[outFailed]
	}
	return outcomeNames[o]
}

// OutcomeCount is how many sessions ended one way.
type OutcomeCount struct {
	Name  string
	Count uint64
}

// ByOutcome lists the sessions by outcome, every outcome named as the
// summary names it, in the summary's order.
func (s Stats) ByOutcome() []OutcomeCount {
	counts := [numOutcomes]uint64{s.Completed, s.ClientResets, s.TargetResets, s.Refused, s.TimedOut, s.Gaps, s.Overflowed, s.Interrupted, s.Failed}
	out := make([]OutcomeCount, numOutcomes)
	for i, n := range counts {
		out[i] = OutcomeCount{outcomeNames[i], n}
	}
	return out
}

// reason names why a session did not complete: finer than its outcome,
// so an operator sees "refused" or "relay-down", not "failed". The names
// are the keys of Stats.Reasons (summary, JSON, metrics' label).
type reason int

const (
	reasonNone          reason = iota // completed or client reset: no reason
	reasonRefused                     // the target answered the SYN with a RST
	reasonUnreachable                 // no route, or ICMP unreachable
	reasonTargetReset                 // the target reset or closed before all client bytes were delivered
	reasonRelayDown                   // the forged address could not be registered with an intercept
	reasonNoSYNACK                    // the handshake timed out: no SYN-ACK (with intercepts: maybe held by one)
	reasonTargetTimeout               // established, then the target stopped acknowledging
	reasonIdle                        // no captured activity for -t
	reasonGap                         // the capture missed client bytes
	reasonSpillFull                   // fell behind and --spill-max was spent
	reasonSpillNoSpace                // fell behind and --spill-dir's disk is full
	reasonSpillError                  // fell behind and the spill file failed otherwise
	reasonFellBehind                  // fell behind with spilling off
	reasonShed                        // refused by Admit (-m) before it started
	reasonInterrupted                 // cut short by the end of the replay (signal)
	reasonNeverStarted                // the replay ended before its handshake
	reasonPortInUse                   // no free forged port
	reasonOther                       // anything else (logged at -vv)
	numReasons
)

var reasonNames = [numReasons]string{
	reasonNone: "", reasonRefused: "refused", reasonUnreachable: "unreachable", reasonTargetReset: "target-reset",
	reasonRelayDown: "relay-down", reasonNoSYNACK: "no-syn-ack", reasonTargetTimeout: "target-timeout",
	reasonIdle: "idle-timeout", reasonGap: "capture-gap", reasonSpillFull: "spill-full",
	reasonSpillNoSpace: "spill-no-space", reasonSpillError: "spill-error", reasonFellBehind: "fell-behind",
	reasonShed: "shed-memory", reasonInterrupted: "interrupted", reasonNeverStarted: "never-started",
	reasonPortInUse: "port-in-use", reasonOther: "other",
}

// String is the reason's name.
func (r reason) String() string {
	if r < 0 || r >= numReasons {
		return reasonNames[reasonOther]
	}
	return reasonNames[r]
}

// ReasonNames lists every reason name Stats.Reasons may hold, in a fixed
// order (for metrics that expose zeros, and for documentation).
func ReasonNames() []string {
	return slices.Clone(reasonNames[reasonRefused:])
}

// why names the reason of outcome o, caused by err, for this player.
func (s *player) why(o outcome, err error) reason {
	switch o {
	case outCompleted, outClientReset:
		return reasonNone
	case outRefused:
		return reasonRefused
	case outTargetReset:
		return reasonTargetReset
	case outGap:
		return reasonGap
	case outOverflow:
		s.mu.Lock()
		w := s.shedWhy
		s.mu.Unlock()
		if w == reasonNone {
			w = reasonFellBehind
		}
		return w
	case outInterrupted:
		if !s.dialed {
			return reasonNeverStarted
		}
		return reasonInterrupted
	case outTimedOut:
		switch {
		case !s.dialed:
			return reasonNoSYNACK
		case errors.Is(err, errIdle):
			return reasonIdle
		}
		return reasonTargetTimeout
	}
	switch {
	case errors.Is(err, ErrUnreachable):
		return reasonUnreachable
	case errors.Is(err, ErrRelayDown):
		return reasonRelayDown
	case errors.Is(err, ErrPortInUse):
		return reasonPortInUse
	}
	return reasonOther
}

// errIdle: no captured activity for -t.
var errIdle = errors.New("no captured activity")

func (s *player) count(o outcome, err error) {
	if s.overflow.Load() {
		// Shed for falling behind: whatever the connection did after the
		// abort is a consequence, not the cause.
		o = outOverflow
	}
	if o < 0 || o >= numOutcomes {
		o = outFailed
	}
	s.outcome = o
	s.r.s.outcomes[o].Add(1)
	why := s.why(o, err)
	if why != reasonNone {
		s.r.s.reasons[why].Add(1)
	}
	if err != nil {
		s.r.log.Debug("session ended", "client", s.key.Client, "forged", s.src, "target", s.target, "outcome", o.String(), "reason", why.String(), "err", err)
	}
}

// failure explains a failed write or close: when the target already reset
// or closed the connection, that is the cause, not the local error.
func (s *player) failure(err error) (outcome, error) {
	if s.targetClosed() && s.rcvErr != nil {
		return s.classify(s.rcvErr), s.rcvErr
	}
	return s.classify(err), err
}

func (s *player) classify(err error) outcome {
	switch {
	case errors.Is(err, ErrRefused):
		return outRefused
	case s.r.ctx.Err() != nil:
		// The replay was stopped: a dial cut short (gVisor reports it as a
		// timeout) or a write to an aborted connection is its consequence.
		return outInterrupted
	case errors.Is(err, ErrReset), errors.Is(err, io.EOF), errors.Is(err, io.ErrClosedPipe):
		return outTargetReset
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return outTimedOut
	}
	return outFailed
}

func (s *player) waitUntil(at time.Time) {
	if at.IsZero() {
		return
	}
	if d := time.Until(at); d > 0 {
		select {
		case <-time.After(d):
		case <-s.r.ctx.Done():
		}
	}
}

// run starts the session, on the goroutine Event started: its open, the
// dial, then the event loop, which may park the player and go on later on
// another goroutine (wake). The outcome is counted once.
func (s *player) run() {
	growStack() // the dial goes into gVisor's connect path, as deep as a send
	s.stopCancel = context.AfterFunc(s.r.ctx, s.cancel)
	if s.open() && s.loop() {
		return // parked
	}
	s.end()
}

// idle is how long a session may wait for the capture's next event.
func (s *player) idle() time.Duration {
	if s.r.cfg.Idle <= 0 {
		return 24 * time.Hour
	}
	return s.r.cfg.Idle
}

// open waits for the session's open, dials and starts the drain; false if
// the session ended there (counted).
func (s *player) open() bool {
	first, ok, _ := s.next() // Event queued the open first; it carries no bytes: never spilled
	if !ok || first.ev.Kind != session.EvOpen {
		s.count(outFailed, errors.New("session without open"))
		return false
	}
	s.waitUntil(first.at)
	if o := s.r.order; o != nil && s.cap.after > 0 {
		held, expired := o.await(s.r.ctx, s.cap.after, s.r.cfg.TurnWait)
		if held {
			s.r.s.opensHeld.Add(1)
		}
		if expired {
			s.r.s.opensUnordered.Add(1)
			s.r.log.Debug("session opened before the target answered what production had answered before its SYN",
				"client", s.key.Client, "server", s.key.Server, "waited", s.r.cfg.TurnWait)
		}
	}
	conn, err := s.dial()
	if err != nil {
		s.count(s.classify(err), err)
		return false
	}
	s.dialed = true
	s.mu.Lock()
	s.conn = conn
	cancelled := s.cancelled
	s.mu.Unlock()
	if cancelled {
		conn.Abort()
		s.count(outInterrupted, s.r.ctx.Err())
		return false
	}
	s.startDrain(conn)
	s.play = playState{conn: conn, pendingAnswers: -1}
	return true
}

// end closes an ended session, once: the connection (after its drain, so
// the counters are final at Wait), the outcome to the comparison, the
// replayer's books.
func (s *player) end() {
	if s.play.conn != nil { // the drain started: it ends with the connection
		s.play.conn.Close()
		<-s.rcvDone
	}
	s.r.order.complete(s.play.ref)
	s.play.ref = nil
	s.r.order.complete(s.asked.Swap(nil))
	s.stopCancel()
	s.finish()
	s.r.forget(s)
	s.r.wg.Done()
}

// forget drops an ended player from the sessions, if its key still holds
// this generation.
func (r *Replayer) forget(s *player) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur := r.sessions[s.key]; slices.Contains(cur, s) {
		rest := slices.DeleteFunc(slices.Clone(cur), func(x *player) bool { return x == s })
		if len(rest) == 0 {
			delete(r.sessions, s.key)
		} else {
			r.sessions[s.key] = rest
		}
	}
}

// take returns the next queued event. With nothing queued it parks the
// player (parked: the caller's goroutine returns and holds nothing; a
// long-idle session costs no goroutine stack), unless the session has
// waited idle for one or is cancelled (ok false).
func (s *player) take(idle time.Duration) (q queued, ok, parked bool, err error) {
	s.mu.Lock()
	if len(s.q) == 0 {
		// Waiting for the capture's next event: not ahead of the reader.
		s.setAheadLocked(false)
		now := time.Now()
		if s.idleSince.IsZero() {
			s.idleSince = now
		}
		if s.cancelled || now.Sub(s.idleSince) >= idle {
			s.mu.Unlock()
			return queued{}, false, false, nil
		}
		s.parked = true
		s.releaseQueueLocked() // idle sessions keep no queue array
		s.idleTimer = time.AfterFunc(idle-now.Sub(s.idleSince), s.wake)
		s.mu.Unlock()
		return queued{}, false, true, nil
	}
	s.idleSince = time.Time{}
	q, ok, err = s.popLocked()
	return q, ok, false, err
}

// wakeLocked goes on with a parked player on a goroutine of its own: an
// event was queued, the idle time ran out, or the replay is cancelled.
func (s *player) wakeLocked() {
	if !s.parked {
		return
	}
	s.parked = false
	s.idleTimer.Stop() // a no-op when the timer is what woke it
	go s.resume()
}

func (s *player) wake() {
	s.mu.Lock()
	s.wakeLocked()
	s.mu.Unlock()
}

func (s *player) resume() {
	growStack()
	if !s.loop() {
		s.end()
	}
}

// loop replays queued events until the session ends (false, counted) or
// nothing is queued (true: parked).
func (s *player) loop() (parked bool) {
	cfg := &s.r.cfg
	idle := s.idle()
	p := &s.play
	conn := p.conn
	ck, _ := conn.(corker)
	for {
		q, ok, parked, err := s.take(idle)
		if parked {
			return true
		}
		if err != nil {
			conn.Abort()
			s.count(outFailed, err)
			s.r.log.Error("session aborted", "client", s.key.Client, "server", s.key.Server, "err", err)
			return false
		}
		if s.r.ctx.Err() != nil {
			conn.Abort()
			s.count(outInterrupted, s.r.ctx.Err())
			return false
		}
		if !ok {
			conn.Abort()
			s.count(outTimedOut, fmt.Errorf("%w for %v", errIdle, idle))
			return false
		}
		ev := q.ev
		switch ev.Kind {
		case session.EvTurn:
			p.waitTurn, p.pendingTurn, p.pendingAnswers = true, ev.ServerBytes, q.answers
			s.decide() // a server-first greeting: decided on its bytes
			if s.renum != nil {
				s.renum.Production(q.numbers, q.numbersOK)
			}
		case session.EvData:
			p.ref = q.ref // completed by the drain once written, or by end
			if p.waitTurn {
				s.awaitAnswer(p.mark, p.pendingTurn, p.pendingAnswers)
				p.waitTurn = false
				p.wrote = false
			}
			s.waitUntil(q.at)
			if s.r.ctx.Err() != nil {
				conn.Abort()
				s.count(outInterrupted, s.r.ctx.Err())
				return false
			}
			if !s.sniffed {
				s.sniffed = true
				s.decide()
				if _, ok := conn.(answerTap); ok && s.proto == "" && !cfg.NoHTTPFraming && cfg.Protocol != ProtocolNone && httpframe.Sniff(ev.Data) {
					s.reqs = new(httpframe.Requests)
					s.resps.Store(httpframe.NewResponses(s.reqs))
					s.label(ProtocolHTTP1)
				}
				s.label("other")
			}
			if !q.at.IsZero() {
				s.pc.lagged(time.Since(q.at))
			}
			if !p.wrote {
				p.mark = s.turnStart()
				p.wrote = true
			}
			if s.reqs != nil {
				// Before the write: the target may answer before it returns.
				s.reqs.Write(ev.Data)
			}
			if p.ref != nil {
				// Before the write, as the framer: the answer may come
				// before it returns. The request before, if the target
				// has not begun to answer it, holds no one back any more:
				// its turn was answered, or waited enough.
				s.r.order.complete(s.asked.Swap(p.ref))
				p.ref = nil
			}
			// A run: large writes due back to back (corkMin); what is due
			// next is looked at once per write while corked.
			run := ck != nil && len(ev.Data) >= corkMin && !s.flowControlled()
			if run && !p.corked && s.nextDue() {
				ck.SetCork(true)
				p.corked = true
			}
			if err := s.writeClient(conn, ev.Data); err != nil { // h2flow.go
				s.count(s.failure(err))
				return false
			}
			if p.corked && !(run && s.nextDue()) {
				// The run ends: what the cork held goes now, before the
				// player waits for anything.
				ck.SetCork(false)
				p.corked = false
			}
			if s.cmp != nil {
				s.cmp.Sent(s.side, len(ev.Data), time.Now())
			}
		case session.EvFin:
			if p.waitTurn {
				// The client closed after it got its answer: so do we, or
				// the target sees a client that gave up early.
				s.awaitAnswer(p.mark, p.pendingTurn, p.pendingAnswers)
			}
			s.waitUntil(q.at)
			if err := s.flushClient(conn); err != nil {
				s.count(s.failure(err))
				return false
			}
			if err := conn.CloseWrite(); err != nil {
				s.count(s.failure(err))
				return false
			}
			s.count(s.awaitClose(conn, idle), nil)
			return false
		case session.EvRst:
			if p.waitTurn {
				s.awaitAnswer(p.mark, p.pendingTurn, p.pendingAnswers)
			}
			s.waitUntil(q.at)
			conn.Abort()
			s.count(outClientReset, nil)
			return false
		case evOverflow:
			conn.Abort()
			s.count(outOverflow, errors.New(ev.Reason))
			s.r.log.Warn("session aborted: fell behind the capture", "client", s.key.Client, "server", s.key.Server, "reason", ev.Reason)
			return false
		case session.EvGap:
			conn.Abort()
			s.count(outGap, errors.New(ev.Reason))
			s.r.log.Warn("session aborted: capture gap", "client", s.key.Client, "server", s.key.Server, "reason", ev.Reason)
			return false
		case session.EvServerClose:
			// The target's own close decides; the captured one is
			// informational, except that after a captured server RST the
			// tracker sends nothing more: end like a capture that ended.
			if ev.Reason != session.ReasonServerRST {
				break
			}
			fallthrough
		case evEndOfInput:
			// The capture ended without the client closing: let the last
			// turn be answered, then close as a polite client would.
			switch {
			case p.waitTurn:
				s.awaitAnswer(p.mark, p.pendingTurn, p.pendingAnswers)
			case p.wrote:
				s.awaitAnswer(p.mark, 1, -1)
			}
			if err := s.flushClient(conn); err != nil {
				s.count(s.failure(err))
				return false
			}
			conn.CloseWrite()
			s.count(s.awaitClose(conn, min(idle, cfg.TurnWait+time.Second)), nil)
			return false
		}
		if s.targetClosed() && s.rcvErr != nil && !errors.Is(s.rcvErr, io.EOF) {
			// The target reset while we still had events to replay.
			s.count(s.classify(s.rcvErr), s.rcvErr)
			return false
		}
	}
}

func (s *player) dial() (Conn, error) {
	select {
	case s.r.dialing <- struct{}{}:
	case <-s.r.ctx.Done():
		return nil, s.r.ctx.Err()
	}
	defer func() { <-s.r.dialing }()
	if err := s.r.ctx.Err(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(s.r.ctx, s.r.cfg.DialTimeout)
	defer cancel()
	conn, err := s.r.dial(ctx, s.src, s.target)
	inUse := func(err error) bool {
		return errors.Is(err, ErrPortInUse)
	}
	// A copy (-n) whose port is taken tries the next ones in its range: a
	// port the stack picked could be a real client's next one.
	for try := 0; s.copy > 0 && try < 64 && inUse(err); try++ {
		s.r.mu.Lock()
		s.src = netip.AddrPortFrom(s.src.Addr(), s.r.nextCopyPort(s.src.Addr()))
		s.r.mu.Unlock()
		conn, err = s.r.dial(ctx, s.src, s.target)
	}
	if inUse(err) {
		// The captured 4-tuple is still taken (TIME_WAIT, a loop over the
		// same capture, -c folding clients): keep the address, let the
		// stack pick a free port.
		s.r.s.remapped.Add(1)
		conn, err = s.r.dial(ctx, netip.AddrPortFrom(s.src.Addr(), 0), s.target)
	}
	return conn, err
}

func (s *player) write(c Conn, b []byte) error {
	for len(b) > 0 {
		n, err := c.Write(b)
		s.r.s.sent.Add(uint64(n))
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// drain reads and counts everything the target sends. gVisor only opens
// its receive window as the application reads, so a replayer that stops
// reading would stall the target.
func (s *player) drain(c Conn) {
	tap, _ := c.(answerTap)
	sink := answerSink{s}
	for {
		var n int
		var err error
		if tap != nil {
			n, err = tap.DiscardTo(sink)
		} else {
			n, err = c.Discard()
		}
		if s.drained(n, err) {
			return
		}
	}
}

// startDrain drains the target's bytes: on demand when the connection
// notifies (drainBurst), else in a goroutine of its own for the
// session's life.
func (s *player) startDrain(c Conn) {
	rn, ok := c.(readNotifier)
	if !ok {
		go s.drain(c)
		return
	}
	s.notifier = rn
	// No burst until stopNotify is set (a notification may come at once);
	// the kick after reads whatever came meanwhile.
	s.draining.Store(true)
	s.stopNotify = rn.OnReadable(s.kickDrain)
	s.draining.Store(false)
	s.kickDrain()
}

// kickDrain starts a burst unless one runs; the stack calls it, it must
// not block.
func (s *player) kickDrain() {
	if s.draining.CompareAndSwap(false, true) {
		s.r.drains.do(s)
	}
}

// drainBurst reads what the target sent until nothing is left, then ends;
// the next notification starts the next burst. Once the connection ended
// (rcvDone) draining stays set: no burst follows.
func (s *player) drainBurst() {
	sink := answerSink{s}
	for {
		for {
			n, wouldBlock, err := s.notifier.TryDiscardTo(sink)
			if wouldBlock || (n == 0 && err == nil) {
				break
			}
			if s.drained(n, err) {
				s.stopNotify()
				return
			}
		}
		s.draining.Store(false)
		// A notification between the last read and the Store found the
		// burst still running and was dropped: look once more.
		if !s.notifier.Readable() || !s.draining.CompareAndSwap(false, true) {
			return
		}
	}
}

// drained accounts for n bytes the target sent, or the error that ended
// the connection (then it closes rcvDone and reports true).
func (s *player) drained(n int, err error) bool {
	if n > 0 {
		// Load first: a swap is a locked instruction on every read, and
		// asked is nil unless ordering (paced replays).
		if s.asked.Load() != nil {
			s.r.order.complete(s.asked.Swap(nil)) // the target began to answer it
		}
		// lastRcv first: awaitAnswer reads rcvd, then lastRcv.
		s.lastRcv.Store(time.Now().UnixNano())
		s.rcvd.Add(uint64(n))
		s.r.s.received.Add(uint64(n))
		if h := s.h2.Load(); h != nil {
			h.answered() // window updates the answers call for (h2flow.go)
		}
		select {
		case s.progress <- struct{}{}:
		default:
		}
	}
	if err == nil {
		return false
	}
	if r := s.resps.Load(); r != nil && errors.Is(err, io.EOF) {
		r.EOF() // completes an answer whose body ran until close
	}
	s.rcvErr = err
	close(s.rcvDone)
	return true
}

// answerSink shows the target's bytes to the session's HTTP framer, if it
// has one by the time they are consumed: the framer is set up before the
// first request is written, so no answer to it can slip past.
type answerSink struct{ s *player }

func (a answerSink) Write(p []byte) (int, error) {
	if r := a.s.resps.Load(); r != nil {
		r.Write(p)
	}
	if a.s.cmp != nil {
		a.s.cmp.Server(a.s.side, p, time.Now())
	}
	a.s.tgt.server(p)
	return len(p), nil
}

// turnStart is where the target's answers stood when a turn's first bytes
// were written.
type turnStart struct {
	rcvd           uint64
	interim, final int
	at             time.Time // the turn's first write
}

func (s *player) turnStart() turnStart {
	t := turnStart{rcvd: s.rcvd.Load(), at: time.Now()}
	if r := s.resps.Load(); r != nil {
		t.interim, t.final = r.Interim(), r.Final()
	}
	return t
}

// httpAnswered asks the HTTP framing whether the turn that started at m is
// answered. known is false when framing cannot tell (not HTTP, a side
// went opaque, a body that runs until close): the caller falls back to
// size and silence.
func (s *player) httpAnswered(m turnStart) (answered, known bool) {
	r := s.resps.Load()
	if r == nil || r.Opaque() || s.reqs.Opaque() || r.UntilClose() {
		return false, false
	}
	if !s.reqs.Idle() {
		// The turn ended inside a request, as a client does after
		// "Expect: 100-continue": an interim answer lets it go on, and so
		// does a final one (a refusal).
		return r.Interim() > m.interim || r.Final() > m.final, true
	}
	n := s.reqs.Complete()
	return n > 0 && r.Final() >= n && r.Idle(), true
}

// awaitAnswer waits until the target answered the turn that started at
// m: by HTTP framing when the session has it, else want bytes (the
// captured answer's size), or at least one byte and then a quiet spell; or
// the target closed, or TurnWait passed.
func (s *player) awaitAnswer(m turnStart, want, answers int) {
	cfg := &s.r.cfg
	if cfg.NoWait {
		return
	}
	s.r.s.turns.Add(1)
	s.label("other")
	s.pc.turns.Add(1)
	end := s.awaitEnd(m, want, answers)
	s.pc.ends[end].Add(1)
	if end <= endQuiet && !m.at.IsZero() {
		s.r.s.turnLatency.observe(time.Since(m.at))
	}
	switch end {
	case endFramed:
		s.r.s.framed.Add(1)
	case endTurnWait:
		s.r.s.unanswered.Add(1)
		s.r.log.Info("turn sent after --turn-wait without the answer", "client", s.key.Client, "server", s.key.Server,
			"protocol", s.proto, "why", s.unframedWhy(answers), "captured_answers", answers, "captured_bytes", want)
	}
}

// awaitEnd waits for the turn's answer and says how the wait ended: by
// the protocol's framing when both sides follow it (the target gave as
// many answers as the capture shows before the turn), else by HTTP/1
// framing, else by size and silence; or the target closed, or TurnWait
// passed.
func (s *player) awaitEnd(m turnStart, want, answers int) turnEnd {
	cfg := &s.r.cfg
	if want <= 0 {
		want = 1
	}
	limit := time.NewTimer(cfg.TurnWait)
	defer limit.Stop()
	f := s.tgt.framer()
	for {
		var quiet <-chan time.Time
		if f != nil && answers >= 0 && f.Err() == nil {
			if f.Answers() >= answers {
				return endFramed
			}
		} else if answered, known := s.httpAnswered(m); answered {
			return endFramed
		} else if !known {
			got := s.rcvd.Load() - m.rcvd
			if got >= uint64(want) {
				return endSize
			}
			if got > 0 {
				since := time.Since(time.Unix(0, s.lastRcv.Load()))
				if since >= cfg.Quiet {
					return endQuiet
				}
				quiet = time.After(cfg.Quiet - since)
			}
		}
		select {
		case <-s.progress:
		case <-quiet:
		case <-s.rcvDone:
			return endClosed
		case <-limit.C:
			return endTurnWait
		case <-s.r.ctx.Done():
			return endStopped
		}
	}
}

// decide starts the target side's framing once the capture side decided
// the session's protocol (on its first bytes, before they were queued).
func (s *player) decide() {
	if s.proto != "" || s.cap == nil {
		return
	}
	pr, decided := s.cap.decision()
	if !decided {
		return
	}
	s.tgt.decide(pr)
	if pr != nil {
		s.label(pr.Name)
		if nf, ok := s.tgt.framer().(Numbering); ok && pr.Renumber != nil {
			s.renum, s.tgtNums = pr.Renumber(&s.pc.renumbered, &s.pc.unknownIDs), nf
		}
	}
}

// label names the session's protocol for the counters, once.
func (s *player) label(name string) {
	if s.proto != "" {
		return
	}
	s.proto = name
	s.pc = s.r.protos.get(name)
	s.pc.sessions.Add(1)
}

// unframedWhy says why a turn could not end by framing, for the log.
func (s *player) unframedWhy(answers int) string {
	f := s.tgt.framer()
	switch {
	case f == nil && s.reqs == nil:
		return "protocol not framed"
	case f == nil:
		return "HTTP/1 answer incomplete or not followed"
	case answers < 0:
		return "the capture's answers could not be counted"
	case f.Err() != nil:
		return "framing the target's answers: " + f.Err().Error()
	}
	return fmt.Sprintf("the target gave %d of the %d answers the capture shows", f.Answers(), answers)
}

// targetClosed reports whether the target's FIN (or an error) ended the
// drain; rcvErr is then final.
func (s *player) targetClosed() bool {
	select {
	case <-s.rcvDone:
		return true
	default:
		return false
	}
}

// awaitClose waits for the target to close after the client's FIN and
// reports how the session ended.
func (s *player) awaitClose(c Conn, idle time.Duration) outcome {
	t := time.NewTimer(idle)
	defer t.Stop()
	select {
	case <-s.rcvDone:
		if s.rcvErr != nil && !errors.Is(s.rcvErr, io.EOF) {
			// A RST after every client byte and FIN was delivered is how
			// many servers end a session; the replay itself was complete.
			if o := s.classify(s.rcvErr); o != outTargetReset {
				return o
			}
		}
		return outCompleted
	case <-t.C:
		// Everything was delivered; the target just kept the session open.
		c.Abort()
		return outCompleted
	case <-s.r.ctx.Done():
		c.Abort()
		return outInterrupted
	}
}
