package relay

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stackcopy/stackcopy/internal/quietio"
)

// ServerConfig configures intercept's side. Only Key is required.
type ServerConfig struct {
	Key    Key
	Logger *slog.Logger // nil: discard

	// QueueLen bounds the packets waiting for one mirror (default 8192).
	// When a mirror's queue is full, responses to it are dropped and
	// counted: the forged clients' retransmissions recover them, while a
	// blocked capture loop would stall every mirror.
	QueueLen int
	// BatchLen is how many packets make a Responses frame go out at once
	// (default 64).
	BatchLen int
	// FlushDelay is how long a partial batch waits for more packets.
	// Default (0) or negative: send as soon as the connection is free,
	// batching only what queues up during the previous write. Every answer
	// relayed is part of a forged connection's round trip, so a hold adds
	// straight to its RTT, and throughput under loss falls with the RTT.
	FlushDelay time.Duration
	// HandshakeTimeout bounds the handshake (default 3 s): a mirror needs
	// one round trip; a peer that sends nothing holds a slot until then.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the connections in their handshake, so a flood
	// of connects costs a bounded number of goroutines (default 256).
	// Connections beyond it are closed at once, unread. The last quarter
	// is kept for sources with no handshake in progress.
	MaxHandshakes int
	// MaxHandshakesPerSource bounds the handshakes one source (an IPv4
	// address, an IPv6 /64) has in progress (default 8): one flooding
	// host cannot take the slots mirrors need. A mirror opens one
	// connection per channel, so keep it at least its --channels.
	MaxHandshakesPerSource int
	// RejectLogInterval is the period of the rejection summary line
	// (default 10 s): the first few connections refused in an interval
	// are logged one by one, the rest summed up in one line at its end.
	RejectLogInterval time.Duration
	// IdleTimeout closes a mirror connection that sent nothing, not even
	// its keepalive, for this long, and bounds every write (default 30 s).
	IdleTimeout time.Duration
	// OnRelease, if set, is told the forged clients a mirror stopped
	// owning (it unregistered them or disconnected), outside the router's
	// lock, never concurrently with itself or OnRegister.
	// Answers to them may still come (a SYN-ACK to a handshake the mirror
	// gave up on, a late retransmission) and must not leak to the real
	// clients: the caller keeps dropping them for a while.
	OnRelease func(clients []netip.AddrPort)
	// OnRegister, if set, is told the forged clients a mirror registered,
	// in order with OnRelease (calls never overlap), outside the router's
	// lock: the caller stops holding answers to them (they are relayed
	// now) and may report, with NotifyHeld, those it was holding for an
	// earlier owner. clients is valid only during the call.
	OnRegister func(clients []netip.AddrPort)
}

const (
	defaultQueueLen         = 8192
	defaultBatchLen         = 64
	defaultHandshakeTimeout = 5 * time.Second // the client's: connect and handshake
	defaultIdleTimeout      = 30 * time.Second
	// maxQueueBytes bounds one mirror's queue in bytes, whatever the
	// packet count: full 64 KiB packets would otherwise let QueueLen hold
	// half a gigabyte.
	maxQueueBytes = 16 * MaxFrameSize
	// maxPendingHeld bounds the Held notices waiting for one mirror;
	// further ones are dropped (they are hints, not answers).
	maxPendingHeld = 1 << 16
)

// Server relays captured responses to the mirrors that registered their
// destinations. Create it with NewServer, run it with Serve, feed it with
// Deliver from any number of capture goroutines.
type Server struct {
	cfg     ServerConfig
	log     *slog.Logger
	router  router
	adm     *admission
	rejects *rejectLog

	// regMu orders OnRegister and OnRelease calls as the router applied
	// them: a release after a registration of one address must reach the
	// caller after it, or the caller would stop holding an abandoned one.
	regMu sync.Mutex

	rejected     atomic.Uint64
	heldNotices  atomic.Uint64
	authFailures atomic.Uint64
	mirrors      atomic.Int64
	delivered    atomic.Uint64
	dropped      atomic.Uint64
	unknown      atomic.Uint64
	malformed    atomic.Uint64
	bytes        atomic.Uint64
}

// ServerStats are the Server's counters. Counts since NewServer unless
// marked "now".
type ServerStats struct {
	AuthFailures      uint64 // handshakes that failed: wrong key, garbage, timeout
	Rejected          uint64 // connections closed unread: too many handshakes in progress, from their source or in all
	Handshakes        int    // now: connections in their handshake
	HeldNotices       uint64 // forged clients a mirror was told an intercept had been holding answers for (NotifyHeld)
	MirrorsConnected  int    // now: authenticated mirror connections
	RegisteredClients int    // now: forged client addresses with an owner
	Delivered         uint64 // packets written to a mirror's connection
	Dropped           uint64 // packets for a known mirror lost: its queue was full or its connection closed
	Unknown           uint64 // packets to a destination no mirror registered
	Malformed         uint64 // packets Deliver could not parse as unfragmented IPv4/IPv6 TCP
	Bytes             uint64 // bytes written to mirrors, framing included
}

// NewServer checks cfg and fills in defaults.
func NewServer(cfg ServerConfig) (*Server, error) {
	if len(cfg.Key.secret) < MinKeyLen {
		return nil, errors.New("relay: server needs a key (LoadKey)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = defaultQueueLen
	}
	if cfg.BatchLen <= 0 {
		cfg.BatchLen = defaultBatchLen
	}
	cfg.BatchLen = min(cfg.BatchLen, maxEntries)
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = defaultServerHandshakeTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = defaultIdleTimeout
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = defaultMaxHandshakes
	}
	if cfg.MaxHandshakesPerSource <= 0 {
		cfg.MaxHandshakesPerSource = defaultMaxHandshakesPerSource
	}
	cfg.MaxHandshakesPerSource = min(cfg.MaxHandshakesPerSource, cfg.MaxHandshakes)
	if cfg.RejectLogInterval <= 0 {
		cfg.RejectLogInterval = defaultRejectLogInterval
	}
	return &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		router:  router{routes: make(map[netip.AddrPort]route)},
		adm:     newAdmission(cfg.MaxHandshakes, cfg.MaxHandshakesPerSource),
		rejects: newRejectLog(cfg.Logger, time.Now()),
	}, nil
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		AuthFailures:      s.authFailures.Load(),
		Rejected:          s.rejected.Load(),
		Handshakes:        s.adm.inProgress(),
		HeldNotices:       s.heldNotices.Load(),
		MirrorsConnected:  int(s.mirrors.Load()),
		RegisteredClients: s.router.len(),
		Delivered:         s.delivered.Load(),
		Dropped:           s.dropped.Load(),
		Unknown:           s.unknown.Load(),
		Malformed:         s.malformed.Load(),
		Bytes:             s.bytes.Load(),
	}
}

// Deliver routes one captured response packet (an IP packet, from the IP
// header on) to the mirror that registered its destination. full sends the
// whole packet; otherwise only its IP and TCP headers travel and the
// mirror zero-fills the payload. A packet captured shorter than its IP
// total length is sent header-only either way. pkt is copied; Deliver
// never blocks. It reports false when no mirror registered the
// destination (or the packet is not TCP over IPv4/IPv6): the caller may
// let such a packet through instead of dropping it.
func (s *Server) Deliver(pkt []byte, full bool) bool {
	h, _ := ParsePacketHeader(pkt) // the zero header is not relayable
	return s.DeliverParsed(pkt, h, full)
}

// DeliverParsed is Deliver for a packet whose headers the caller already
// parsed: h must be what ParsePacketHeader returned for pkt.
func (s *Server) DeliverParsed(pkt []byte, h PacketHeader, full bool) bool {
	if !h.Relayable() || h.hdrLen > len(pkt) {
		s.malformed.Add(1)
		return false
	}
	m := s.router.lookup(h.Dst)
	if m == nil {
		s.unknown.Add(1)
		return false
	}
	var data []byte
	switch {
	case full && len(pkt) >= h.totalLen:
		data = pkt[:h.totalLen] // drop link-layer padding
	default:
		full = false
		data = pkt[:h.hdrLen]
	}
	if !m.q.push(data, h.totalLen, full) {
		s.dropped.Add(1)
	}
	return true
}

// Owns reports whether a connected mirror registered dst.
func (s *Server) Owns(dst netip.AddrPort) bool {
	return s.router.lookup(dst) != nil
}

// NotifyHeld tells the mirror that owns client that answers to it had
// been held (answers of them) for an earlier owner until it registered
// it. It never blocks; it reports false if no mirror owns client, the
// mirror does not understand the notice (an older release), or too many
// notices wait for it.
func (s *Server) NotifyHeld(client netip.AddrPort, answers uint64) bool {
	m := s.router.lookup(client)
	if m == nil || m.features&featureHeld == 0 {
		return false
	}
	if !m.held.push(HeldNotice{Client: client, Answers: uint32(min(answers, 1<<32-1))}) {
		return false
	}
	s.heldNotices.Add(1)
	return true
}

// Serve accepts mirror connections on ln until ctx is cancelled, then
// closes ln and every connection and returns nil once all its goroutines
// have finished. It returns the listener's error if accepting fails for
// good.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer func() {
		cancel() // whatever ended Serve ends the connections and the log ticker
		wg.Wait()
	}()
	rejects := s.rejects
	wg.Go(func() {
		t := time.NewTicker(s.cfg.RejectLogInterval)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				rejects.flush(now)
			case <-ctx.Done():
				rejects.flush(time.Now())
				return
			}
		}
	})
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("relay: accept: %w", err)
			}
			// Out of file descriptors and the like: wait and retry, as
			// net/http does, rather than give up on every mirror.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("relay: accept failed; retrying", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		src := sourceOf(conn.RemoteAddr())
		if reason, ok := s.adm.acquire(src); !ok {
			s.rejected.Add(1)
			rejects.note(src, conn.RemoteAddr().String(), reason, nil)
			abort(conn)
			continue
		}
		wg.Go(func() { s.serveConn(ctx, conn, src, rejects) })
	}
}

// abort closes a connection refused before its handshake with a reset:
// the peer learns at once, and no TIME_WAIT socket is left behind per
// connection of a flood.
func abort(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// serveConn authenticates one connection and, if it is a mirror, serves it
// until it fails or ctx ends.
func (s *Server) serveConn(ctx context.Context, conn net.Conn, src netip.Addr, rejects *rejectLog) {
	remote := conn.RemoteAddr().String()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()

	conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	features, err := serverHandshake(conn, s.cfg.Key, rand.Reader)
	if err != nil {
		// The slot is freed once the failure is counted and logged, so
		// no handshake is in progress (Stats) with its outcome untold.
		defer s.adm.release(src)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("handshake not completed within %v: %w", s.cfg.HandshakeTimeout, err)
		}
		s.authFailures.Add(1)
		rejects.note(src, remote, rejectHandshake, err)
		return
	}
	s.adm.release(src)
	conn.SetDeadline(time.Time{})

	m := &mirror{
		conn:     conn,
		remote:   remote,
		features: features,
		owned:    make(map[netip.AddrPort]struct{}),
		done:     make(chan struct{}),
		pong:     make(chan struct{}, 1),
	}
	m.held.wake = make(chan struct{}, 1)
	m.q.init(s.cfg.QueueLen, s.cfg.BatchLen)
	s.mirrors.Add(1)
	s.log.Info("relay: mirror connected", "remote", remote)

	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.writeLoop(m); err != nil {
			m.setErr(err)
		}
		conn.Close() // ends the read loop
	})
	err = s.readLoop(m)
	m.setErr(err)
	close(m.done)
	conn.Close()
	wg.Wait()

	s.regMu.Lock()
	released := s.router.drop(m)
	owned := len(released)
	if s.cfg.OnRelease != nil && owned > 0 {
		s.cfg.OnRelease(released)
	}
	s.regMu.Unlock()
	lost := m.q.close()
	s.dropped.Add(uint64(lost))
	s.mirrors.Add(-1)
	if ctx.Err() == nil {
		s.log.Info("relay: mirror disconnected", "remote", remote, "reason", m.err, "clients", owned, "queued_dropped", lost)
	}
}

// mirror is one authenticated mirror connection on the server.
type mirror struct {
	conn     net.Conn
	remote   string
	features byte // asked for in the handshake
	q        sendQueue
	held     heldQueue
	owned    map[netip.AddrPort]struct{} // guarded by router.mu
	done     chan struct{}               // closed when the read loop ended
	pong     chan struct{}               // a ping waits for its pong
	// pongTok is the largest ping token seen. Pings are fences: a mirror
	// waits for the pong of a ping it sent after its registrations, which
	// proves they were applied (frames are read in order). Pongs may be
	// merged, so the largest token answers all smaller ones.
	pongTok atomic.Uint64

	errOnce sync.Once
	err     error
}

// setErr keeps the first reason the connection ended.
func (m *mirror) setErr(err error) {
	m.errOnce.Do(func() { m.err = err })
}

func (s *Server) readLoop(m *mirror) error {
	fr := frameReader{r: bufio.NewReaderSize(quietio.New(m.conn), 64<<10)}
	var regs []registration
	var clients []netip.AddrPort
	for {
		m.conn.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		t, p, err := fr.next(serverExpects)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("nothing received for %v", s.cfg.IdleTimeout)
			}
			return err
		}
		switch t {
		case typeRegister:
			if regs, err = decodeRegister(p, regs); err != nil {
				return err
			}
			s.regMu.Lock()
			s.router.register(m, regs)
			if s.cfg.OnRegister != nil {
				clients = clients[:0]
				for _, r := range regs {
					clients = append(clients, r.Client)
				}
				s.cfg.OnRegister(clients)
			}
			s.regMu.Unlock()
			s.log.Debug("relay: registered", "remote", m.remote, "clients", len(regs))
		case typeUnregister:
			if clients, err = decodeUnregister(p, clients); err != nil {
				return err
			}
			s.regMu.Lock()
			if released := s.router.unregister(m, clients); s.cfg.OnRelease != nil && len(released) > 0 {
				s.cfg.OnRelease(released)
			}
			s.regMu.Unlock()
		case typePing:
			tok := binary.BigEndian.Uint64(p)
			for {
				cur := m.pongTok.Load()
				if tok <= cur || m.pongTok.CompareAndSwap(cur, tok) {
					break
				}
			}
			select {
			case m.pong <- struct{}{}:
			default:
			}
		}
	}
}

// writeLoop is the only writer on a mirror connection: batches of
// responses and pongs.
func (s *Server) writeLoop(m *mirror) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	qc := quietio.New(m.conn)
	var backing net.Buffers // reused; WriteBuffers consumes the slice header it is called with
	var frames []queuedFrame
	var notices []HeldNotice
	flush := func() error {
		frames = m.q.take(frames[:0])
		if len(frames) == 0 {
			return nil
		}
		backing = backing[:0]
		n, size := 0, 0
		for _, f := range frames {
			backing = append(backing, f.b)
			n += f.packets
			size += len(f.b)
		}
		m.conn.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
		_, err := qc.WriteBuffers(backing)
		m.q.recycle(frames)
		if err != nil {
			s.dropped.Add(uint64(n))
			return fmt.Errorf("writing responses: %w", err)
		}
		s.delivered.Add(uint64(n))
		s.bytes.Add(uint64(size))
		return nil
	}
	for {
		select {
		case <-m.done:
			return nil
		case <-m.held.wake:
			notices = m.held.take(notices[:0])
			if len(notices) == 0 {
				continue
			}
			m.conn.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
			n, err := qc.Write(appendHeldFrames(nil, notices))
			s.bytes.Add(uint64(n))
			if err != nil {
				return fmt.Errorf("writing held notices: %w", err)
			}
		case <-m.pong:
			var p [pingLen]byte
			binary.BigEndian.PutUint64(p[:], m.pongTok.Load())
			m.conn.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
			n, err := qc.Write(appendFrame(nil, typePong, p[:]))
			s.bytes.Add(uint64(n))
			if err != nil {
				return fmt.Errorf("writing pong: %w", err)
			}
		case <-m.q.wake:
			if s.cfg.FlushDelay > 0 && !m.q.batchReady() {
				if !armed {
					timer.Reset(s.cfg.FlushDelay)
					armed = true
				}
				continue
			}
			if err := flush(); err != nil {
				return err
			}
		case <-timer.C:
			armed = false
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// heldQueue holds the Held notices waiting for one mirror.
type heldQueue struct {
	mu      sync.Mutex
	pending []HeldNotice
	wake    chan struct{}
}

// push queues n; false if maxPendingHeld wait already.
func (q *heldQueue) push(n HeldNotice) bool {
	q.mu.Lock()
	if len(q.pending) >= maxPendingHeld {
		q.mu.Unlock()
		return false
	}
	q.pending = append(q.pending, n)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// take moves the waiting notices to dst.
func (q *heldQueue) take(dst []HeldNotice) []HeldNotice {
	q.mu.Lock()
	defer q.mu.Unlock()
	dst = append(dst, q.pending...)
	q.pending = q.pending[:0]
	return dst
}

// sendQueue holds one mirror's responses as ready-made Responses frames,
// so the writer sends them with one writev and Deliver only appends bytes.
type sendQueue struct {
	mu       sync.Mutex
	frames   []queuedFrame // sealed, oldest first
	open     []byte        // frame being filled; nil if none
	openN    int           // packets in open
	packets  int           // queued packets, open frame included
	bytes    int           // queued bytes
	closed   bool
	spare    [][]byte
	wake     chan struct{} // a packet arrived in an empty queue, or a batch filled
	limit    int
	batchLen int
}

type queuedFrame struct {
	b       []byte
	packets int
}

func (q *sendQueue) init(limit, batchLen int) {
	q.limit, q.batchLen = limit, batchLen
	q.wake = make(chan struct{}, 1)
}

// push appends one packet entry; false if the queue is full or closed.
func (q *sendQueue) push(data []byte, origLen int, full bool) bool {
	n := responseEntryLen(len(data), full)
	q.mu.Lock()
	if q.closed || q.packets >= q.limit || q.bytes+n > maxQueueBytes {
		q.mu.Unlock()
		return false
	}
	if q.open != nil && len(q.open)-frameHeaderLen+n > MaxFrameSize {
		q.seal()
	}
	if q.open == nil {
		var b []byte
		if k := len(q.spare); k > 0 {
			b, q.spare = q.spare[k-1][:0], q.spare[:k-1]
		}
		q.open = append(b, 0, 0, 0, 0, 0, 0) // frame header and entry count
	}
	q.open = appendResponseEntry(q.open, data, origLen, full)
	q.openN++
	q.packets++
	q.bytes += n
	signal := q.packets == 1
	if q.openN >= q.batchLen {
		q.seal()
		signal = true
	}
	q.mu.Unlock()
	if signal {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// seal finishes the open frame. Called with mu held.
func (q *sendQueue) seal() {
	putFrameHeader(q.open, typeResponses)
	q.open[4], q.open[5] = byte(q.openN>>8), byte(q.openN)
	q.frames = append(q.frames, queuedFrame{b: q.open, packets: q.openN})
	q.open, q.openN = nil, 0
}

// batchReady reports whether a full frame waits.
func (q *sendQueue) batchReady() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.frames) > 0
}

// take moves every queued packet, the open frame included, to dst.
func (q *sendQueue) take(dst []queuedFrame) []queuedFrame {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.open != nil {
		q.seal()
	}
	dst = append(dst, q.frames...)
	clear(q.frames)
	q.frames = q.frames[:0]
	q.packets, q.bytes = 0, 0
	return dst
}

// recycle keeps a few written frame buffers for reuse.
func (q *sendQueue) recycle(frames []queuedFrame) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, f := range frames {
		if len(q.spare) < 4 && cap(f.b) <= 2*MaxFrameSize {
			q.spare = append(q.spare, f.b[:0])
		}
	}
}

// close refuses further packets and reports how many were still queued.
func (q *sendQueue) close() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	n := q.packets
	q.frames, q.open, q.spare = nil, nil, nil
	q.packets, q.bytes, q.openN = 0, 0, 0
	return n
}

// router maps forged client addresses to the mirror connection that
// registered them. The last registration wins: a mirror that reconnected
// takes its clients back before the server noticed the old connection
// died. An unregistration or a closing connection removes only what that
// connection still owns.
type router struct {
	mu     sync.RWMutex
	routes map[netip.AddrPort]route
}

type route struct {
	m      *mirror
	target netip.AddrPort // where the mirror replays this client; for logs and later filters
}

func (r *router) lookup(client netip.AddrPort) *mirror {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.routes[client].m
}

func (r *router) register(m *mirror, regs []registration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, reg := range regs {
		if old := r.routes[reg.Client].m; old != nil && old != m {
			delete(old.owned, reg.Client)
		}
		r.routes[reg.Client] = route{m: m, target: reg.Target}
		m.owned[reg.Client] = struct{}{}
	}
}

// unregister removes the routes m owns among clients and returns them.
func (r *router) unregister(m *mirror, clients []netip.AddrPort) []netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	var released []netip.AddrPort
	for _, c := range clients {
		if r.routes[c].m == m {
			delete(r.routes, c)
			delete(m.owned, c)
			released = append(released, c)
		}
	}
	return released
}

// drop removes every route m owns and returns them.
func (r *router) drop(m *mirror) []netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	released := make([]netip.AddrPort, 0, len(m.owned))
	for c := range m.owned {
		delete(r.routes, c)
		released = append(released, c)
	}
	m.owned = nil
	return released
}

func (r *router) len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.routes)
}
