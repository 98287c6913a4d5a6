package relay

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stackcopy/stackcopy/internal/quietio"
)

// ClientConfig configures the mirror's side.
type ClientConfig struct {
	// Channels is the number of parallel connections to each intercept
	// (tcpcopy -C; default 1). Each forged client is bound to one of them
	// by a hash of its address, so its responses stay in order.
	Channels int
	// OnPackets receives the relayed responses as whole IP packets, in
	// the order the intercept sent them: all the packets of the frames one
	// read of the connection brought in (up to batchArena bytes), in one
	// call, so the stack can inject them at once. Header-only packets
	// arrive rebuilt at their original length with a zero-filled payload.
	// It is called from one goroutine per channel, concurrently, and
	// neither pkts nor the packets may be retained after it returns (the
	// stack's inject copies). nil discards.
	OnPackets func(pkts [][]byte)
	Logger    *slog.Logger // nil: discard

	// HandshakeTimeout bounds connecting and the handshake (default 5 s).
	HandshakeTimeout time.Duration
	// IdleTimeout drops a connection on which nothing arrived for this
	// long (default 30 s). Keepalive pings go out at a third of it, so a
	// healthy idle intercept always answers in time.
	IdleTimeout time.Duration
}

// Reconnect backoff: doubled after every failed attempt, jittered so many
// mirrors do not reconnect in lockstep after an intercept restart.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Client is the mirror's end of the relay: connections to one or more
// intercepts, the registrations that tell them which forged clients are
// ours, and the packets they send back.
type Client struct {
	cfg      ClientConfig
	key      Key
	log      *slog.Logger
	ctx      context.Context // lifetime: cancelled by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	channels []*channel // intercept-major: channels[i*Channels+k]
	seed     maphash.Seed
	closing  sync.Once

	// mu guards live, the source of truth for what every intercept must
	// know. A reconnected channel re-registers from it; lock order is
	// Client.mu before channel.mu.
	mu   sync.Mutex
	live map[netip.AddrPort]netip.AddrPort // forged client → target

	reconnects   atomic.Uint64
	authFailures atomic.Uint64
	packets      atomic.Uint64
	headerOnly   atomic.Uint64
	bytes        atomic.Uint64
	held         heldReport
}

// ClientStats are the Client's counters. Counts since Dial unless marked
// "now".
type ClientStats struct {
	Channels     int    // configured connections: intercepts × Channels
	Connected    int    // now: connections up
	Registered   int    // now: live forged clients
	Reconnects   uint64 // connections re-established after a loss
	AuthFailures uint64 // handshakes that failed on a key mismatch
	Packets      uint64 // packets handed to OnPackets
	HeaderOnly   uint64 // of which rebuilt from headers
	Bytes        uint64 // bytes received from intercepts, framing included
	// HeldByIntercept counts registrations an intercept reported it had
	// been holding answers for: it was dropping answers to that forged
	// client for an earlier owner (an earlier stackcopy run that left it
	// in the intercept's --hold table) until we registered it. Those
	// addresses are ours now, but the target may still have the earlier
	// run's connections on them: their answers and resets reach our
	// stack, and a replayed SYN may meet a connection still open.
	HeldByIntercept uint64
	// HeldAnswers is how many answers those intercepts had held for them.
	HeldAnswers uint64
}

// Dial connects to every intercept in addrs ("host", "host:port",
// "[v6]:port"; an element may hold a comma-separated list, as tcpcopy's
// -s does) with cfg.Channels connections each. It returns once every
// connection has completed its handshake. A key mismatch or a peer that
// is not a relay fails at once; unreachable intercepts are retried until
// ctx ends. ctx bounds only this first connection: afterwards lost
// connections are re-established in the background until Close.
func Dial(ctx context.Context, addrs []string, key Key, cfg ClientConfig) (*Client, error) {
	if len(key.secret) < MinKeyLen {
		return nil, errors.New("relay: client needs a key (LoadKey)")
	}
	targets, err := parseAddrs(addrs)
	if err != nil {
		return nil, err
	}
	if cfg.Channels <= 0 {
		cfg.Channels = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = defaultHandshakeTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = defaultIdleTimeout
	}
	c := &Client{
		cfg:  cfg,
		key:  key,
		log:  cfg.Logger,
		live: make(map[netip.AddrPort]netip.AddrPort),
		seed: maphash.MakeSeed(),
	}
	c.held.log = cfg.Logger
	c.ctx, c.cancel = context.WithCancel(context.Background())
	// Every channel reports its first outcome here, so a key mismatch on
	// any intercept fails Dial at once, even while another is still
	// unreachable.
	ready := make(chan readiness, len(targets)*cfg.Channels)
	for _, addr := range targets {
		for k := range cfg.Channels {
			ch := &channel{
				c:       c,
				addr:    addr,
				slot:    k,
				ready:   ready,
				wake:    make(chan struct{}, 1),
				ackWake: make(chan struct{}),
			}
			c.channels = append(c.channels, ch)
			c.wg.Go(ch.run)
		}
	}
	for pending := len(c.channels); pending > 0; pending-- {
		select {
		case r := <-ready:
			if r.err != nil {
				c.Close()
				return nil, fmt.Errorf("relay: %w", r.err)
			}
		case <-ctx.Done():
			c.Close()
			for _, ch := range c.channels {
				if last := ch.lastError(); last != nil {
					return nil, fmt.Errorf("relay: intercept %s: %w (%w)", ch.addr, last, ctx.Err())
				}
			}
			return nil, fmt.Errorf("relay: connecting to intercepts: %w", ctx.Err())
		}
	}
	return c, nil
}

// readiness is a channel's first outcome: connected (nil) or a permanent
// error.
type readiness struct{ err error }

// parseAddrs splits and normalises intercept addresses, adding the
// default port where none is given.
func parseAddrs(addrs []string) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	for _, list := range addrs {
		for _, s := range strings.Split(list, ",") {
			a, err := normalizeAddr(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("relay: intercept address %q: %w", s, err)
			}
			if seen[a] {
				return nil, fmt.Errorf("relay: intercept %s is listed twice", a)
			}
			seen[a] = true
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("relay: no intercept address")
	}
	return out, nil
}

func normalizeAddr(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty")
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return net.JoinHostPort(a.String(), strconv.Itoa(DefaultPort)), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Contains(s, ":") {
			return "", err
		}
		return net.JoinHostPort(s, strconv.Itoa(DefaultPort)), nil
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", fmt.Errorf("bad port %q", port)
	}
	if host == "" {
		return "", errors.New("no host")
	}
	return s, nil
}

// ErrNotRegistered is what Register's errors wrap when an intercept did
// not take the registration (not connected, or it did not confirm in
// time): the session must not start, or its answers would leak.
var ErrNotRegistered = errors.New("an intercept did not take the registration")

// Register tells every intercept that responses to client (a forged
// client address) belong to this mirror, which replays it towards target.
// Call it before the stack sends the client's SYN, so the route is in
// place when the target's SYN-ACK is caught. A channel that is down
// learns it when it reconnects.
func (c *Client) Register(client, target netip.AddrPort) error {
	client, target = canonAddr(client), canonAddr(target)
	if err := checkAddr(client); err != nil {
		return fmt.Errorf("relay: register client: %w", err)
	}
	if err := checkAddr(target); err != nil {
		return fmt.Errorf("relay: register target: %w", err)
	}
	c.mu.Lock()
	c.live[client] = target
	chans := c.channelsFor(client)
	fences := make([]uint64, len(chans))
	for i, ch := range chans {
		fences[i] = ch.enqueue(op{client: client, target: target})
	}
	c.mu.Unlock()
	// Wait until every intercept applied it: a SYN-ACK caught before that
	// would be let through to the real client.
	deadline := time.Now().Add(c.cfg.HandshakeTimeout)
	for i, ch := range chans {
		if fences[i] == 0 {
			return fmt.Errorf("relay: register %v: intercept %s is not connected: %w", client, ch.addr, ErrNotRegistered)
		}
		if err := ch.waitFence(fences[i], deadline); err != nil {
			return fmt.Errorf("relay: register %v: intercept %s: %w (%w)", client, ch.addr, err, ErrNotRegistered)
		}
	}
	return nil
}

// Unregister tells every intercept that client is no longer ours. Call it
// when the session has ended, late answers included.
func (c *Client) Unregister(client netip.AddrPort) {
	client = canonAddr(client)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.live[client]; !ok {
		return
	}
	delete(c.live, client)
	for _, ch := range c.channelsFor(client) {
		ch.enqueue(op{unregister: true, client: client})
	}
}

// channelsFor returns the channel each intercept uses for client.
func (c *Client) channelsFor(client netip.AddrPort) []*channel {
	k := bucket(c.seed, client, c.cfg.Channels)
	out := make([]*channel, 0, len(c.channels)/c.cfg.Channels)
	for i := k; i < len(c.channels); i += c.cfg.Channels {
		out = append(out, c.channels[i])
	}
	return out
}

// bucket spreads clients over n channels. maphash mixes every input bit
// into the low bits; FNV-1a modulo a small n did not, and put clients
// whose address and port move together on one channel.
func bucket(seed maphash.Seed, client netip.AddrPort, n int) int {
	if n == 1 {
		return 0
	}
	return int(maphash.Comparable(seed, client) % uint64(n))
}

// Stats returns a snapshot of the counters.
func (c *Client) Stats() ClientStats {
	st := ClientStats{
		Channels:     len(c.channels),
		Reconnects:   c.reconnects.Load(),
		AuthFailures: c.authFailures.Load(),
		Packets:      c.packets.Load(),
		HeaderOnly:   c.headerOnly.Load(),
		Bytes:        c.bytes.Load(),
	}
	st.HeldByIntercept, st.HeldAnswers = c.held.counts()
	for _, ch := range c.channels {
		ch.mu.Lock()
		if ch.up {
			st.Connected++
		}
		ch.mu.Unlock()
	}
	c.mu.Lock()
	st.Registered = len(c.live)
	c.mu.Unlock()
	return st
}

// Close drops every connection and returns once all goroutines ended.
func (c *Client) Close() error {
	c.closing.Do(func() {
		c.cancel()
		c.wg.Wait()
		c.held.close()
	})
	return nil
}

// op is one pending registration change.
type op struct {
	unregister     bool
	client, target netip.AddrPort
	fence          uint64 // registrations: the ping token that proves it applied
}

// channel is one connection slot to one intercept, re-established
// whenever it is lost.
type channel struct {
	c        *Client
	addr     string
	slot     int              // which hash bucket of clients it carries
	ready    chan<- readiness // shared with Dial, which reads one report per channel
	reported bool             // owned by run
	wake     chan struct{}

	mu      sync.Mutex
	up      bool
	ops     []op // waiting for the writer; discarded when the connection drops
	lastErr error
	fence   uint64        // last fence token handed out
	acked   uint64        // largest token the intercept answered
	ackWake chan struct{} // closed and replaced when acked grows or the connection drops
}

// waitFence waits until the intercept answered token, the connection
// dropped, or deadline passed.
func (ch *channel) waitFence(token uint64, deadline time.Time) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		ch.mu.Lock()
		acked, up, wake := ch.acked, ch.up, ch.ackWake
		ch.mu.Unlock()
		if acked >= token {
			return nil
		}
		if !up {
			return errors.New("connection lost before the registration was confirmed")
		}
		select {
		case <-wake:
		case <-t.C:
			return errors.New("registration not confirmed in time")
		}
	}
}

// ack records the token of a pong and wakes fence waiters.
func (ch *channel) ack(token uint64) {
	ch.mu.Lock()
	if token > ch.acked && token <= ch.fence {
		ch.acked = token
		close(ch.ackWake)
		ch.ackWake = make(chan struct{})
	}
	ch.mu.Unlock()
}

// enqueue queues a registration change if the channel is up; a down
// channel re-registers from Client.live when it comes back. It returns the
// fence token of a registration (0: the channel is down). Called with
// Client.mu held.
func (ch *channel) enqueue(o op) uint64 {
	ch.mu.Lock()
	if !ch.up {
		ch.mu.Unlock()
		return 0
	}
	if !o.unregister {
		ch.fence++
		o.fence = ch.fence
	}
	ch.ops = append(ch.ops, o)
	signal := len(ch.ops) == 1
	ch.mu.Unlock()
	if signal {
		ch.signal()
	}
	return o.fence
}

func (ch *channel) signal() {
	select {
	case ch.wake <- struct{}{}:
	default:
	}
}

func (ch *channel) lastError() error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.lastErr
}

// permanent reports errors retrying cannot fix while Dial waits.
func permanent(err error) bool {
	return errors.Is(err, ErrAuth) || errors.Is(err, ErrProtocol)
}

func (ch *channel) run() {
	ctx, c := ch.c.ctx, ch.c
	backoff := minBackoff
	connected := false
	lastLogged := ""
	c.log.Info("relay: connecting to intercept", "intercept", ch.addr, "channel", ch.slot)
	for {
		conn, err := ch.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			ch.mu.Lock()
			ch.lastErr = err
			ch.mu.Unlock()
			if errors.Is(err, ErrAuth) {
				c.authFailures.Add(1)
			}
			if !connected && permanent(err) {
				ch.report(err)
			}
			// Warn when the reason changes; an intercept that stays down
			// for minutes would otherwise log every few seconds per channel.
			level := slog.LevelDebug
			if msg := err.Error(); msg != lastLogged {
				level, lastLogged = slog.LevelWarn, msg
			}
			c.log.Log(ctx, level, "relay: cannot connect to intercept; retrying", "intercept", ch.addr, "channel", ch.slot, "err", err, "in", backoff)
			if !sleep(ctx, jitter(backoff)) {
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff, lastLogged = minBackoff, ""
		if connected {
			c.reconnects.Add(1)
			c.log.Info("relay: reconnected to intercept", "intercept", ch.addr, "channel", ch.slot)
		} else {
			c.log.Info("relay: connected to intercept", "intercept", ch.addr, "channel", ch.slot)
		}
		connected = true
		err = ch.serve(ctx, conn) // reports readiness once the channel is up
		ch.report(err)            // no-op unless serve failed before reporting
		if ctx.Err() != nil {
			return
		}
		ch.mu.Lock()
		ch.lastErr = err
		ch.mu.Unlock()
		c.log.Warn("relay: connection to intercept lost; reconnecting", "intercept", ch.addr, "channel", ch.slot, "err", err)
		if !sleep(ctx, jitter(minBackoff)) {
			return
		}
	}
}

// report delivers the first outcome to Dial; later ones are dropped. The
// ready channel has room for one report per channel, so this never
// blocks.
func (ch *channel) report(err error) {
	if ch.reported {
		return
	}
	ch.reported = true
	ch.ready <- readiness{err: err}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + mrand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (ch *channel) connect(ctx context.Context) (net.Conn, error) {
	timeout := ch.c.cfg.HandshakeTimeout
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", ch.addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(time.Now().Add(timeout))
	if err := clientHandshake(conn, ch.c.key, rand.Reader); err != nil {
		conn.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("handshake not completed within %v: %w", timeout, err)
		}
		return nil, fmt.Errorf("intercept %s: %w", ch.addr, err)
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// serve runs one authenticated connection until it fails or the client
// closes. Everything this channel carries is registered again first: the
// intercept forgot it when the previous connection closed.
func (ch *channel) serve(ctx context.Context, conn net.Conn) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	c := ch.c
	c.mu.Lock()
	ch.mu.Lock()
	ch.up = true
	ch.ops = ch.ops[:0]
	for client, target := range c.live {
		if bucket(c.seed, client, c.cfg.Channels) == ch.slot {
			ch.ops = append(ch.ops, op{client: client, target: target})
		}
	}
	ch.mu.Unlock()
	c.mu.Unlock()
	ch.signal()
	// Only now may Dial return: a Register right after it must find the
	// channel up.
	ch.report(nil)

	done := make(chan struct{})
	var werr error
	var wg sync.WaitGroup
	wg.Go(func() {
		werr = ch.writeLoop(conn, done)
		conn.Close() // ends the read loop
	})
	rerr := ch.readLoop(conn)

	ch.mu.Lock()
	ch.up = false
	ch.ops = nil
	close(ch.ackWake) // fence waiters see the drop
	ch.ackWake = make(chan struct{})
	ch.mu.Unlock()
	close(done)
	conn.Close()
	wg.Wait()
	if werr != nil {
		return werr
	}
	return rerr
}

func (ch *channel) readLoop(conn net.Conn) error {
	c := ch.c
	br := bufio.NewReaderSize(quietio.New(conn), 256<<10)
	fr := frameReader{r: br}
	b := packetBatch{deliver: c.cfg.OnPackets, packets: &c.packets, headerOnly: &c.headerOnly}
	// Packets already decoded go out before anything can block or fail.
	defer b.flush()
	var entries []relayed
	var notices []HeldNotice
	for {
		if !frameBuffered(br) {
			b.flush() // the read's frames are done: deliver before waiting
		}
		conn.SetReadDeadline(time.Now().Add(c.cfg.IdleTimeout))
		t, p, err := fr.next(clientExpects)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("nothing from the intercept for %v", c.cfg.IdleTimeout)
			}
			return err
		}
		c.bytes.Add(uint64(frameHeaderLen + len(p)))
		if t == typeHeld {
			if notices, err = decodeHeld(p, notices); err != nil {
				return err
			}
			c.held.note(ch.addr, notices)
			continue
		}
		if t != typeResponses {
			// A pong: the intercept has applied every registration sent
			// before the ping it answers.
			ch.ack(binary.BigEndian.Uint64(p))
			continue
		}
		if entries, err = decodeResponses(p, entries); err != nil {
			return err
		}
		for _, r := range entries {
			b.add(r)
		}
	}
}

// frameBuffered reports whether a whole frame waits in br, so reading it
// does not block.
func frameBuffered(br *bufio.Reader) bool {
	n := br.Buffered()
	if n < frameHeaderLen {
		return false
	}
	h, err := br.Peek(frameHeaderLen)
	if err != nil {
		return false
	}
	return n-frameHeaderLen >= int(h[1])<<16|int(h[2])<<8|int(h[3])
}

// batchArena bounds the bytes of one OnPackets batch: a frame full of
// header-only entries rebuilt at 64 KiB each would otherwise ask for
// gigabytes. It holds at least one packet of any size.
const batchArena = MaxFrameSize

// packetBatch gathers rebuilt packets for one OnPackets call. The packets
// are copied into one arena whose capacity never changes, so earlier
// packets stay valid while later ones are added, and the frame buffer
// can be reused for the next frame.
type packetBatch struct {
	deliver             func([][]byte)
	packets, headerOnly *atomic.Uint64

	arena []byte
	pkts  [][]byte
	nHdr  uint64
}

// add rebuilds r into the arena, first delivering what is there if r
// does not fit.
func (b *packetBatch) add(r relayed) {
	if b.arena == nil {
		b.arena = make([]byte, 0, batchArena)
	}
	if len(b.arena)+r.OrigLen > cap(b.arena) {
		b.flush()
	}
	start := len(b.arena)
	free := b.arena[start:cap(b.arena)]
	pkt := r.rebuild(free)
	if r.Full {
		pkt = free[:copy(free, pkt)]
	} else {
		b.nHdr++
	}
	b.arena = b.arena[:start+len(pkt)]
	b.pkts = append(b.pkts, pkt)
}

// flush hands the batch to OnPackets and empties it.
func (b *packetBatch) flush() {
	if len(b.pkts) == 0 {
		return
	}
	if b.deliver != nil {
		b.deliver(b.pkts)
	}
	b.packets.Add(uint64(len(b.pkts)))
	b.headerOnly.Add(b.nHdr)
	clear(b.pkts) // the packets are the caller's no longer
	b.pkts, b.arena, b.nHdr = b.pkts[:0], b.arena[:0], 0
}

// writeLoop is the only writer on the connection: registration changes,
// batched as they queue up, and keepalive pings.
func (ch *channel) writeLoop(conn net.Conn, done <-chan struct{}) error {
	c := ch.c
	ticker := time.NewTicker(c.cfg.IdleTimeout / 3)
	defer ticker.Stop()
	var ops []op
	var buf []byte
	var regs []registration
	var unregs []netip.AddrPort
	var sent, pinged uint64 // largest fence written, and pinged for
	qc := quietio.New(conn)
	write := func(b []byte) error {
		conn.SetWriteDeadline(time.Now().Add(c.cfg.IdleTimeout))
		_, err := qc.Write(b)
		return err
	}
	for {
		select {
		case <-done:
			return nil
		case <-ticker.C:
			var p [pingLen]byte
			binary.BigEndian.PutUint64(p[:], sent) // a keepalive is also a fence for what was sent
			if err := write(appendFrame(buf[:0], typePing, p[:])); err != nil {
				return fmt.Errorf("writing ping: %w", err)
			}
		case <-ch.wake:
			ch.mu.Lock()
			ops, ch.ops = ch.ops, ops[:0]
			ch.mu.Unlock()
			if len(ops) == 0 {
				continue
			}
			// Consecutive changes of one kind share frames; order between
			// kinds is kept, so register-unregister-register ends
			// registered.
			buf = buf[:0]
			for i := 0; i < len(ops); {
				j := i
				if ops[i].unregister {
					unregs = unregs[:0]
					for ; j < len(ops) && ops[j].unregister; j++ {
						unregs = append(unregs, ops[j].client)
					}
					buf = appendUnregisterFrames(buf, unregs)
				} else {
					regs = regs[:0]
					for ; j < len(ops) && !ops[j].unregister; j++ {
						regs = append(regs, registration{Client: ops[j].client, Target: ops[j].target})
						sent = max(sent, ops[j].fence)
					}
					buf = appendRegisterFrames(buf, regs)
				}
				i = j
			}
			if sent > pinged {
				var p [pingLen]byte
				binary.BigEndian.PutUint64(p[:], sent)
				buf = appendFrame(buf, typePing, p[:])
				pinged = sent
			}
			if err := write(buf); err != nil {
				return fmt.Errorf("writing registrations: %w", err)
			}
		}
	}
}

func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// heldInterval is the least time between two warnings about held
// answers: a new run whose 2000 addresses an intercept held gets 2000
// notices in a burst, which must make a line, not 2000.
const heldInterval = 10 * time.Second

// heldReport counts the Held notices of every channel and warns about
// them: the first at once, the rest summed up at most every heldInterval.
type heldReport struct {
	log *slog.Logger

	mu                 sync.Mutex
	clients, answers   uint64              // since Dial
	pendingN, pendingA uint64              // not yet in a warning
	intercepts         map[string]struct{} // of the pending ones
	last               time.Time           // of the last warning
	timer              *time.Timer         // flushes the pending ones; nil if none is due
	closed             bool
}

func (h *heldReport) counts() (clients, answers uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.clients, h.answers
}

func (h *heldReport) note(intercept string, notices []HeldNotice) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range notices {
		h.clients++
		h.answers += uint64(n.Answers)
		h.pendingN++
		h.pendingA += uint64(n.Answers)
	}
	if h.intercepts == nil {
		h.intercepts = make(map[string]struct{})
	}
	if len(h.intercepts) < 16 {
		h.intercepts[intercept] = struct{}{}
	}
	if h.closed || h.timer != nil {
		return
	}
	if wait := heldInterval - time.Since(h.last); wait > 0 {
		h.timer = time.AfterFunc(wait, h.flush)
		return
	}
	h.warnLocked()
}

func (h *heldReport) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.timer = nil
	if !h.closed && h.pendingN > 0 {
		h.warnLocked()
	}
}

// close logs what is pending and stops the timer.
func (h *heldReport) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
	if h.pendingN > 0 {
		h.warnLocked()
	}
}

func (h *heldReport) warnLocked() {
	names := make([]string, 0, len(h.intercepts))
	for a := range h.intercepts {
		names = append(names, a)
	}
	slices.Sort(names)
	h.log.Warn("relay: an intercept was holding answers to forged clients we registered, for an earlier stackcopy run that left them in its --hold table; they come to us now, but the target may still have that run's connections open on these addresses: sessions on them can time out or be reset (wait for the intercept's --hold to pass after a run, or replay from other addresses)",
		"clients", h.pendingN, "held_answers", h.pendingA, "intercepts", strings.Join(names, ","), "total_clients", h.clients)
	h.pendingN, h.pendingA, h.last = 0, 0, time.Now()
	clear(h.intercepts)
}
