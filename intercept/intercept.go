package intercept

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stackcopy/stackcopy/relay"
)

// Mode selects the Source.
type Mode string

const (
	// ModeNFQueue reads the target's answers from an NFQUEUE on the target.
	ModeNFQueue Mode = "nfqueue"
	// ModeCapture captures them with AF_PACKET on an assistant host.
	ModeCapture Mode = "capture"
)

// KeyEnv is the environment variable the relay key is read from when no
// key file is given.
const KeyEnv = "STACKCOPY_RELAY_KEY"

// Defaults of Config.
const (
	DefaultQueueLen      = 4096
	DefaultStatsInterval = 10 * time.Second
	DefaultHold          = 2 * time.Minute
	DefaultCaptureBuffer = 32 << 20
	// maxHeld bounds the hold table (about 64 bytes an entry).
	maxHeld = 1 << 20
)

// Config configures Run. The zero value of a field means its default.
type Config struct {
	Mode Mode

	// NFQUEUE.
	Queue    uint16 // queue number, as in the iptables rule's --queue-num
	QueueLen uint32 // packets the kernel queues for us at most (default 4096)
	// FailOpen sets NFQA_CFG_F_FAIL_OPEN: when the queue is full the
	// kernel accepts packets instead of dropping them, so the target stays
	// reachable under overload, but those answers leave unrelayed (a leak).
	// It does not cover intercept not running: that is the rule's
	// --queue-bypass.
	FailOpen bool

	// Capture.
	Interface     string // required
	Filter        string // pcap syntax, required, e.g. "tcp and src port 80"
	CaptureBuffer int    // socket receive buffer in bytes (default 32 MiB)
	// AllowForwarding starts a capture even though the interface forwards
	// IPv4: the captured answers would then also reach the real clients.
	AllowForwarding bool

	// Both.
	Pass        []netip.Addr // answers to these addresses are never relayed nor dropped
	FullPayload bool         // relay whole packets, not headers and length
	Listen      string       // address for mirrors, e.g. ":36524"
	KeyFile     string       // relay key file; "" reads $STACKCOPY_RELAY_KEY
	// StatsInterval is the period of the stats log line (default 10 s;
	// negative: only at exit).
	StatsInterval time.Duration
	// Hold is how long answers to a forged client are still dropped after
	// its mirror stopped owning it (the mirror disconnected or unregistered
	// it), counted from the last such answer (default 2 min; negative:
	// off). Destinations that had an answer relayed or that a mirror
	// released are held; others are never dropped.
	Hold time.Duration
}

func (c *Config) fill() error {
	if c.Mode == "" {
		c.Mode = ModeNFQueue
		if c.Interface != "" {
			c.Mode = ModeCapture
		}
	}
	switch c.Mode {
	case ModeNFQueue:
		if c.Interface != "" || c.Filter != "" {
			return errors.New("an interface or filter was given, but the mode is nfqueue")
		}
	case ModeCapture:
		if c.Interface == "" {
			return errors.New("capture needs an interface (-i)")
		}
		if strings.TrimSpace(c.Filter) == "" {
			return errors.New("capture needs a filter (-F), e.g. 'tcp and src port 80'")
		}
	default:
		return fmt.Errorf("unknown mode %q (want nfqueue or capture)", c.Mode)
	}
	if c.QueueLen == 0 {
		c.QueueLen = DefaultQueueLen
	}
	if c.CaptureBuffer == 0 {
		c.CaptureBuffer = DefaultCaptureBuffer
	}
	if c.Listen == "" {
		c.Listen = ":" + strconv.Itoa(relay.DefaultPort)
	}
	if c.StatsInterval == 0 {
		c.StatsInterval = DefaultStatsInterval
	}
	if c.Hold == 0 {
		c.Hold = DefaultHold
	}
	return nil
}

// Run serves mirrors on cfg.Listen and relays the answers the source
// catches, until ctx is done (SIGINT, SIGTERM). It returns nil after a
// clean shutdown and an error if it could not start or a part failed.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.fill(); err != nil {
		return err
	}
	key, err := relay.LoadKey(cfg.KeyFile, KeyEnv)
	if err != nil {
		return err
	}
	if cfg.Mode == ModeCapture && !cfg.AllowForwarding {
		if err := checkForwarding(cfg.Interface, log); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen for mirrors: %w", err)
	}
	var src Source
	switch cfg.Mode {
	case ModeNFQueue:
		copyRange := uint32(headerCopyLen)
		if cfg.FullPayload {
			copyRange = 0
		}
		src, err = OpenNFQueue(NFQueueConfig{
			Queue:     cfg.Queue,
			QueueLen:  cfg.QueueLen,
			CopyRange: copyRange,
			FailOpen:  cfg.FailOpen,
			Logger:    log,
		})
	case ModeCapture:
		snaplen := headerSnaplen
		if cfg.FullPayload {
			snaplen = 0
		}
		src, err = OpenCapture(CaptureConfig{
			Interface:   cfg.Interface,
			Filter:      cfg.Filter,
			Snaplen:     snaplen,
			BufferBytes: cfg.CaptureBuffer,
		})
	}
	if err != nil {
		ln.Close()
		return err
	}
	return serve(ctx, cfg, key, ln, src, log)
}

// Bytes of each packet a source keeps when only headers are relayed:
// IPv4 (up to 60) or IPv6 (40) plus TCP (up to 60), and for a capture the
// link header (Ethernet and two VLAN tags).
const (
	headerCopyLen = 128
	headerSnaplen = 256
)

// serve runs the relay server on ln and the packet loop on src until ctx
// is done, then shuts both down: the loop first, so answers already read
// are still relayed, then the source, then the server.
func serve(ctx context.Context, cfg Config, key relay.Key, ln net.Listener, src Source, log *slog.Logger) error {
	var cl *classifier
	srv, err := relay.NewServer(relay.ServerConfig{Key: key, Logger: log,
		OnRelease:  func(clients []netip.AddrPort) { cl.release(clients) },
		OnRegister: func(clients []netip.AddrPort) { cl.registered(clients) }})
	if err != nil {
		ln.Close()
		src.Close()
		return err
	}
	// Before Serve: OnRelease needs the classifier.
	cl = newClassifier(cfg, srv.DeliverParsed)
	cl.owns = srv.Owns
	cl.notifyHeld = srv.NotifyHeld
	loopCtx, stopLoop := context.WithCancel(ctx)
	defer stopLoop()
	srvCtx, stopServer := context.WithCancel(context.Background())
	defer stopServer()

	var wg sync.WaitGroup
	var serveErr error
	wg.Go(func() {
		serveErr = srv.Serve(srvCtx, ln)
		stopLoop() // the server failed for good, or we are shutting down
	})

	st := &stats{cl: cl, src: src, srv: srv, log: log}
	statsDone := make(chan struct{})
	if cfg.StatsInterval > 0 {
		wg.Go(func() { st.every(cfg.StatsInterval, statsDone) })
	}

	attrs := []any{"mode", string(cfg.Mode), "listen", ln.Addr().String(), "full_payload", cfg.FullPayload, "pass", len(cfg.Pass)}
	switch cfg.Mode {
	case ModeNFQueue:
		attrs = append(attrs, "queue", cfg.Queue, "queue_len", cfg.QueueLen, "fail_open", cfg.FailOpen)
	case ModeCapture:
		attrs = append(attrs, "interface", cfg.Interface, "filter", cfg.Filter)
	}
	log.Info("intercept ready", append(attrs, "cores", runtime.GOMAXPROCS(0))...)

	loopErr := loop(loopCtx, src, cl, log)
	srcErr := src.Close()
	close(statsDone)
	stopServer()
	wg.Wait()
	st.log.Info("intercept stopped", st.attrs()...)

	switch {
	case loopErr != nil:
		return loopErr
	case serveErr != nil:
		return serveErr // the relay's, which says so
	case srcErr != nil:
		return srcErr
	}
	return nil
}

// loop decides every packet of src until ctx is done or src fails.
func loop(ctx context.Context, src Source, cl *classifier, log *slog.Logger) error {
	var lastWarn time.Time
	for {
		p, err := src.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		c := cl.classify(p.Data)
		if !p.NeedsVerdict() {
			continue
		}
		if err := p.SetVerdict(c.Verdict()); err != nil {
			if now := time.Now(); now.Sub(lastWarn) >= 10*time.Second {
				lastWarn = now
				log.Warn("intercept: verdict failed (counted; further failures within 10 s are not logged)", "class", c.String(), "err", err)
			}
		}
	}
}

// classifier sorts packets into classes and relays the Relayed ones. It
// belongs to the packet loop's goroutine; its counters may be read from
// any.
type classifier struct {
	pass    map[netip.Addr]struct{}
	deliver func(pkt []byte, h relay.PacketHeader, full bool) bool
	// owns says whether a mirror registered a destination; nil: none do.
	owns func(netip.AddrPort) bool
	// notifyHeld tells the mirror that registered a destination how many
	// answers to it were held for an earlier owner; nil: nobody is told.
	notifyHeld func(dst netip.AddrPort, answers uint64) bool
	full       bool

	// held remembers, per forged client, when an answer to it was last
	// relayed (or held), on clock, and how many were held; see Config.Hold.
	hold      time.Duration
	held      map[netip.AddrPort]holdEntry
	maxHeld   int
	clock     func() time.Duration
	lastSweep time.Duration

	// changes holds forged clients mirrors let go of or registered (see
	// relay.ServerConfig.OnRelease and OnRegister), in the order the relay
	// applied them, from the relay's goroutines, until the packet loop
	// applies them to held. One ordered list: a release must not overtake
	// the registration before it.
	relMu   sync.Mutex
	changes []ownerChange
	relN    atomic.Int32 // len(changes), read without the lock on every packet

	counts       [Other + 1]atomic.Uint64
	heldSize     atomic.Int64
	heldOverflow atomic.Uint64
	// reclaimed counts registrations that ended a hold on answers to their
	// address which had held some; heldNotified those whose mirror was told.
	reclaimed, heldNotified atomic.Uint64
}

// holdEntry is one forged client in the hold table.
type holdEntry struct {
	last time.Duration // when an answer to it was last relayed or held, or when it was released
	held uint64        // answers held since it was last relayed or registered
}

// ownerChange is a forged client a mirror registered or let go of.
type ownerChange struct {
	dst        netip.AddrPort
	registered bool
}

func newClassifier(cfg Config, deliver func([]byte, relay.PacketHeader, bool) bool) *classifier {
	start := time.Now()
	c := &classifier{
		pass:    make(map[netip.Addr]struct{}, len(cfg.Pass)),
		deliver: deliver,
		full:    cfg.FullPayload,
		hold:    max(cfg.Hold, 0),
		held:    make(map[netip.AddrPort]holdEntry),
		maxHeld: maxHeld,
		clock:   func() time.Duration { return time.Since(start) },
	}
	for _, a := range cfg.Pass {
		c.pass[a.Unmap()] = struct{}{}
	}
	return c
}

// classify decides one packet, relays it if a mirror owns its
// destination, and counts it.
func (c *classifier) classify(pkt []byte) Class {
	class := c.decide(pkt)
	c.counts[class].Add(1)
	return class
}

func (c *classifier) decide(pkt []byte) Class {
	h, dst, ok := tcpDestination(pkt)
	if !ok {
		return Other
	}
	if _, ok := c.pass[dst.Addr()]; ok {
		return Passed
	}
	relayed := c.deliver(pkt, h, c.full)
	if !relayed && c.owns != nil && c.owns(dst) {
		// A mirror owns dst but the relay could not take the packet (it
		// does not parse as one, e.g. a BIG TCP length): drop it, never
		// let an answer to a forged client through.
		return Held
	}
	if c.hold == 0 {
		if relayed {
			return Relayed
		}
		return Unknown
	}
	now := c.clock()
	if c.relN.Load() > 0 {
		c.takeChanges(now)
	}
	if now-c.lastSweep >= min(c.hold, 10*time.Second) {
		c.sweep(now)
	}
	if relayed {
		c.remember(dst, now)
		return Relayed
	}
	if e, ok := c.held[dst]; ok && now-e.last < c.hold {
		c.held[dst] = holdEntry{last: now, held: e.held + 1}
		return Held
	}
	return Unknown
}

// release queues clients a mirror stopped owning, so answers to them are
// held even if none was relayed before: the mirror may have gone between
// its SYN and the SYN-ACK. Safe for concurrent use.
func (c *classifier) release(clients []netip.AddrPort) {
	c.queueChanges(clients, false)
}

// registered queues clients a mirror registered: the hold on them ends,
// as their answers are that mirror's now. A new stackcopy run may register
// addresses an earlier one left held; it gets its answers, and is told.
// Safe for concurrent use.
func (c *classifier) registered(clients []netip.AddrPort) {
	c.queueChanges(clients, true)
}

func (c *classifier) queueChanges(clients []netip.AddrPort, registered bool) {
	if c.hold == 0 {
		return
	}
	c.relMu.Lock()
	if room := c.maxHeld - len(c.changes); len(clients) > room {
		if !registered {
			c.heldOverflow.Add(uint64(len(clients) - max(room, 0)))
		}
		// A registration left out only costs the notice: the relay
		// routes its answers before the hold table is looked at.
		clients = clients[:max(room, 0)]
	}
	for _, dst := range clients {
		c.changes = append(c.changes, ownerChange{dst: dst, registered: registered})
	}
	c.relN.Store(int32(len(c.changes)))
	c.relMu.Unlock()
}

// takeChanges applies the queued changes to the hold table, in order: a
// released client is held as if an answer to it had just been relayed; a
// registered one leaves the table, and its mirror hears how many answers
// were held for its address, if any.
func (c *classifier) takeChanges(now time.Duration) {
	c.relMu.Lock()
	changes := c.changes
	c.changes = nil
	c.relN.Store(0)
	c.relMu.Unlock()
	for _, ch := range changes {
		if !ch.registered {
			c.remember(ch.dst, now)
			continue
		}
		e, ok := c.held[ch.dst]
		if !ok {
			continue
		}
		delete(c.held, ch.dst)
		c.heldSize.Add(-1)
		if e.held > 0 && now-e.last < c.hold {
			c.reclaimed.Add(1)
			if c.notifyHeld != nil && c.notifyHeld(ch.dst, e.held) {
				c.heldNotified.Add(1)
			}
		}
	}
}

// remember notes that dst was relayed (or released) at now.
func (c *classifier) remember(dst netip.AddrPort, now time.Duration) {
	if _, ok := c.held[dst]; !ok {
		if len(c.held) >= c.maxHeld {
			c.heldOverflow.Add(1)
			return
		}
		c.heldSize.Add(1)
	}
	c.held[dst] = holdEntry{last: now}
}

// sweep forgets destinations not seen for longer than the hold.
func (c *classifier) sweep(now time.Duration) {
	c.lastSweep = now
	for dst, e := range c.held {
		if now-e.last >= c.hold {
			delete(c.held, dst)
		}
	}
	c.heldSize.Store(int64(len(c.held)))
}

// stats logs the counters.
type stats struct {
	cl  *classifier
	src Source
	srv *relay.Server
	log *slog.Logger
}

func (s *stats) every(d time.Duration, done <-chan struct{}) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			s.log.Info("intercept stats", s.attrs()...)
		}
	}
}

func (s *stats) attrs() []any {
	ss := s.src.Stats()
	rs := s.srv.Stats()
	c := &s.cl.counts
	return []any{
		"packets", ss.Packets,
		"relayed", c[Relayed].Load(),
		"passed", c[Passed].Load(),
		"unknown", c[Unknown].Load(),
		"held", c[Held].Load(),
		"other", c[Other].Load(),
		"mirrors", rs.MirrorsConnected,
		"clients", rs.RegisteredClients,
		"relay_delivered", rs.Delivered,
		"relay_dropped", rs.Dropped,
		"auth_failures", rs.AuthFailures,
		"kernel_drops", ss.KernelDrops,
		"verdict_errors", ss.VerdictErrors,
		"skipped", ss.Skipped,
		"hold_table", s.cl.heldSize.Load(),
		"hold_overflow", s.cl.heldOverflow.Load(),
		"hold_reclaimed", s.cl.reclaimed.Load(),
		"relay_rejected", rs.Rejected,
	}
}

// checkForwarding refuses to capture on an interface that forwards IPv4:
// the assistant would pass the target's answers on to the real clients.
// IPv6 forwarding only earns a warning (forged clients are IPv4 so far).
func checkForwarding(iface string, log *slog.Logger) error {
	for _, v := range []string{"ipv4", "ipv6"} {
		path := "/proc/sys/net/" + v + "/conf/" + iface + "/forwarding"
		b, err := os.ReadFile(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // no such interface (OpenCapture says so) or no IPv6
			}
			return fmt.Errorf("forwarding check: %w", err)
		}
		if val := strings.TrimSpace(string(b)); val != "0" {
			if v == "ipv6" {
				log.Warn("intercept: the interface forwards IPv6: answers to IPv6 forged clients would also reach the real clients; run: sysctl -w net.ipv6.conf.all.forwarding=0",
					"interface", iface)
				continue
			}
			return fmt.Errorf("%s forwards ipv4 (%s is %s): the captured answers would also reach the real clients; run: sysctl -w net.ipv4.ip_forward=0 (or --allow-forwarding)",
				iface, path, val)
		}
	}
	return nil
}
