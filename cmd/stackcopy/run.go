package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stackcopy/stackcopy/capture"
	"github.com/stackcopy/stackcopy/hostnet"
	"github.com/stackcopy/stackcopy/netstack"
	"github.com/stackcopy/stackcopy/relay"
	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/session"
	"github.com/stackcopy/stackcopy/transfer"
	"github.com/stackcopy/stackcopy/wire"
)

func newLogger(cfg *config, stderr io.Writer) (*slog.Logger, func(), error) {
	w, closeLog := stderr, func() {}
	if cfg.logFile != "" {
		f, err := os.OpenFile(cfg.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, nil, fmt.Errorf("-l: %w", err)
		}
		w, closeLog = f, func() { f.Close() }
	}
	level := slog.LevelWarn
	switch {
	case cfg.verbose == 1:
		level = slog.LevelInfo
	case cfg.verbose >= 2:
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), closeLog, nil
}

// egress is where forged packets leave and how answers come back.
type egress struct {
	dev    wire.Device
	tun    *wire.TUN       // TUN loop: the kernel routes answers into it
	routes *hostnet.Device // routes added for forged clients (TUN only)
}

func openEgress(cfg *config, log *slog.Logger) (*egress, error) {
	switch cfg.output {
	case "tun":
		tun, err := wire.OpenTUN(cfg.tunName)
		if err != nil {
			return nil, err
		}
		dev, err := hostnet.Setup(tun.Name(), cfg.mtu, cfg.txqueuelen)
		if err != nil {
			tun.Close()
			return nil, err
		}
		for _, t := range cfg.transfers {
			if err := hostnet.Preflight(tun.Name(), t.Target.Addr(), !cfg.noRoutes); err != nil {
				tun.Close()
				return nil, err
			}
		}
		return &egress{dev: tun, tun: tun, routes: dev}, nil
	case "raw":
		w, err := wire.OpenRaw()
		if err != nil {
			return nil, err
		}
		return &egress{dev: w}, nil
	}
	// -o IFACE[@MAC]: link-layer injection towards the next hop.
	iface, macText, _ := strings.Cut(cfg.output, "@")
	var mac net.HardwareAddr
	var err error
	if macText != "" {
		if mac, err = net.ParseMAC(macText); err != nil {
			return nil, fmt.Errorf("-o %s: next-hop MAC: %w", cfg.output, err)
		}
	} else if mac, err = wire.ResolveNextHop(iface, cfg.transfers[0].Target.Addr()); err != nil {
		return nil, err
	}
	log.Info("link-layer egress", "interface", iface, "next_hop", mac)
	w, err := wire.OpenAFPacket(iface, mac)
	if err != nil {
		return nil, err
	}
	return &egress{dev: w}, nil
}

// rssBytes reads the process's resident set size.
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// memoryGate admits new sessions while the process stays clear of limit:
// tcpcopy's -m exits when crossed; here sessions are shed (and counted)
// before it is. RSS is sampled at most every 100 ms.
type memoryGate struct {
	limit   uint64
	reserve uint64 // headroom kept for sessions already admitted
	last    atomic.Int64
	rss     atomic.Uint64
}

func (g *memoryGate) admit() bool {
	now := time.Now().UnixNano()
	if now-g.last.Load() > int64(100*time.Millisecond) {
		g.last.Store(now)
		g.rss.Store(rssBytes())
	}
	return g.rss.Load()+g.reserve < g.limit
}

// unregisterDelay keeps a finished session's forged address registered
// with the intercepts for a while: the target's last ACKs and
// retransmissions must still be caught, or they would leak to the real
// client.
const unregisterDelay = 30 * time.Second

// relayedConn unregisters its forged address from the intercepts once,
// some time after the session ended.
type relayedConn struct {
	*netstack.Conn
	once       sync.Once
	unregister func()
}

func (c *relayedConn) done() { c.once.Do(func() { time.AfterFunc(unregisterDelay, c.unregister) }) }

func (c *relayedConn) Close() error { c.done(); return c.Conn.Close() }
func (c *relayedConn) Abort()       { c.done(); c.Conn.Abort() }

// replayRun replays the capture files cfg.loops times, or mirrors live
// traffic until ctx ends. It returns a summary whenever sessions were
// replayed, also with an error.
func replayRun(ctx context.Context, cfg *config, stderr io.Writer) (*summary, error) {
	log, closeLog, err := newLogger(cfg, stderr)
	if err != nil {
		return nil, err
	}
	defer closeLog()

	// Check the inputs before touching the host: a typo should not leave a
	// TUN behind or need root.
	if !cfg.live {
		for _, path := range cfg.inputs {
			src, err := capture.OpenFile(path)
			if err != nil {
				return nil, err
			}
			src.Close()
		}
	}
	for _, t := range cfg.transfers {
		if !t.Target.Addr().Is4() {
			return nil, fmt.Errorf("-x: target %v: only IPv4 targets are replayed in this version", t.Target)
		}
	}
	var key relay.Key
	if len(cfg.intercepts) > 0 {
		if key, err = relay.LoadKey(cfg.keyFile, keyEnv); err != nil {
			return nil, fmt.Errorf("-s: %w", err)
		}
	}
	if cfg.pidFile != "" {
		if err := os.WriteFile(cfg.pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("-P: %w", err)
		}
		defer os.Remove(cfg.pidFile)
	}

	eg, err := openEgress(cfg, log)
	if err != nil {
		return nil, err
	}
	scfg := netstack.DefaultConfig()
	scfg.MTU = uint32(cfg.mtu)
	scfg.MSS = cfg.mss
	scfg.CongestionControl = cfg.cc
	scfg.RACK = cfg.rack
	scfg.MinRTO = cfg.minRTO
	scfg.SendBufferMax = cfg.sendBuf
	scfg.SendBuffer = min(scfg.SendBuffer, cfg.sendBuf)
	switch {
	case cfg.gso == "host":
		scfg.GSO = netstack.GSOHost
	case cfg.gso == "off" || eg.tun == nil:
		// Raw wires cut super-packets in userspace: merging first gains nothing.
		scfg.GSO = netstack.GSOOff
	default:
		scfg.GSO = netstack.GSOCoalesce
	}
	st, err := netstack.New(scfg, eg.dev, log)
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	if eg.tun != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Ends when the TUN is closed by st.Close.
			if err := st.DeliverFrom(eg.tun); !errors.Is(err, os.ErrClosed) {
				log.Warn("TUN reader stopped", "err", err)
			}
		}()
	}
	var rc *relay.Client
	defer func() {
		if rc != nil {
			rc.Close()
		}
		st.Close()
		wg.Wait()
		if eg.routes != nil {
			if err := eg.routes.Close(); err != nil {
				log.Warn("route cleanup", "err", err)
			}
		}
	}()
	if len(cfg.intercepts) > 0 {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		rc, err = relay.Dial(dctx, cfg.intercepts, key, relay.ClientConfig{
			Channels: cfg.channels,
			OnPacket: func(pkt []byte) { st.Inject([][]byte{pkt}) },
			Logger:   log,
		})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("-s: %w", err)
		}
	}

	var routeErr atomic.Pointer[error]
	dial := func(ctx context.Context, src, dst netip.AddrPort) (replay.Conn, error) {
		if eg.routes != nil && !cfg.noRoutes {
			if err := eg.routes.Route(src.Addr()); err != nil {
				routeErr.CompareAndSwap(nil, &err)
				return nil, err
			}
		}
		if rc == nil {
			c, err := st.DialFrom(ctx, src, dst)
			if err != nil {
				return nil, err
			}
			return c, nil
		}
		var local netip.AddrPort
		c, err := st.DialFromWith(ctx, src, dst, netstack.DialOptions{BeforeConnect: func(l netip.AddrPort) error {
			local = l
			return rc.Register(l, dst)
		}})
		unregister := func() { rc.Unregister(local) }
		if err != nil {
			if local.IsValid() {
				time.AfterFunc(unregisterDelay, unregister)
			}
			return nil, err
		}
		return &relayedConn{Conn: c, unregister: unregister}, nil
	}

	rcfg := replay.DefaultConfig()
	rcfg.Transfers = cfg.transfers
	rcfg.Pool = cfg.pool
	rcfg.Speed = cfg.speed
	if cfg.live {
		rcfg.Speed = 0 // events arrive at the captured pace already
	}
	rcfg.NoWait = cfg.noWait
	rcfg.NoHTTPFraming = !cfg.httpTurns
	rcfg.TurnWait = cfg.turnWait
	rcfg.Idle = cfg.timeout
	rcfg.MaxHandshakes = cfg.handshakes
	rcfg.Copies = cfg.copies
	rcfg.PortOffset = cfg.portOffset
	rcfg.CopyPorts = cfg.copyPorts
	rcfg.SpillDir = cfg.spillDir
	rcfg.SpillMax = int64(cfg.spillMiB) << 20
	// A live capture must not wait for one slow session: the kernel ring
	// would overflow for all of them. A file can be read later.
	rcfg.ShedWhenFull = cfg.live
	rcfg.Errors = replay.Errors{PortInUse: netstack.ErrPortInUse, Reset: netstack.ErrReset, Refused: netstack.ErrRefused, Timeout: netstack.ErrTimeout}
	if cfg.percent < 100 {
		sampler, err := transfer.NewSampler(cfg.percent)
		if err != nil {
			return nil, fmt.Errorf("-r: %w", err)
		}
		rcfg.Keep = sampler.Keep
	}
	if cfg.memoryMiB > 0 {
		// The reserve covers what admitted sessions may still grow into:
		// an uploading session can hold its whole send buffer.
		g := &memoryGate{limit: uint64(cfg.memoryMiB) << 20, reserve: uint64(cfg.sendBuf)}
		rcfg.Admit = g.admit
	}
	// In live mode the signal ends the capture; sessions then get a grace
	// period to finish their turn before they are aborted.
	rctx, rcancel := context.WithCancel(context.Background())
	defer rcancel()
	if !cfg.live {
		stop := context.AfterFunc(ctx, rcancel)
		defer stop()
	}
	rp := replay.New(rctx, rcfg, dial, log)

	sum := &summary{inputs: cfg.inputs, loops: cfg.loops, live: cfg.live, start: time.Now()}
	var readErr error
	if cfg.live {
		readErr = mirrorLive(ctx, cfg, rp, sum, log)
		// Sessions get one turn's grace to finish; then what is left is aborted.
		time.AfterFunc(cfg.turnWait+2*time.Second, rcancel)
	} else {
		for loop := 0; loop < cfg.loops && readErr == nil && ctx.Err() == nil; loop++ {
			rp.Rebase()
			for _, path := range cfg.inputs {
				if readErr = readCapture(ctx, path, cfg.transfers, !cfg.onlySYN, rp, sum); readErr != nil {
					break
				}
			}
		}
	}
	rp.CloseInput()
	rp.Wait()
	sum.elapsed = time.Since(sum.start)
	sum.replay = rp.Stats()
	sum.stack = st.Stats()
	if eg.routes != nil {
		sum.routes = eg.routes.Routes()
		sum.tunTxDrops, sum.tunRxDrops = eg.routes.Drops()
	}
	if rc != nil {
		s := rc.Stats()
		sum.relay = &s
	}
	if readErr != nil {
		return sum, readErr
	}
	if e := routeErr.Load(); e != nil {
		return sum, *e
	}
	if !cfg.live && ctx.Err() != nil {
		return sum, errors.New("interrupted")
	}
	if !cfg.live && sum.replay.Sessions == 0 {
		return sum, fmt.Errorf("no session to replay: the capture has no TCP session with a SYN matching -x")
	}
	return sum, nil
}

// readCapture feeds one pass over a capture file to the replayer; join is
// -O=false (join sessions seen mid-stream at a turn boundary).
func readCapture(ctx context.Context, path string, ts transfer.Transfers, join bool, sink session.Sink, sum *summary) error {
	src, err := capture.OpenFile(path)
	if err != nil {
		return err
	}
	defer src.Close()
	tr := session.NewTracker(session.TrackerConfig{IsServer: ts.IsServer, JoinMidStream: join}, sink)
	for ctx.Err() == nil {
		seg, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tr.Flush()
			sum.addPass(src.Stats(), tr.Stats())
			return err
		}
		tr.Add(seg)
	}
	tr.Flush()
	sum.addPass(src.Stats(), tr.Stats())
	return nil
}

// mirrorLive captures on the interfaces until ctx ends, feeding the
// tracker and expiring idle sessions once a second.
func mirrorLive(ctx context.Context, cfg *config, sink session.Sink, sum *summary, log *slog.Logger) error {
	src, err := capture.OpenLive(capture.LiveConfig{Interfaces: cfg.inputs, Transfers: cfg.transfers, Filter: cfg.filter})
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { src.Close() })
	defer stop()
	log.Info("mirroring live traffic", "interfaces", cfg.inputs, "transfers", cfg.transfers)
	tr := session.NewTracker(session.TrackerConfig{IsServer: cfg.transfers.IsServer, JoinMidStream: !cfg.onlySYN}, sink)
	segs := make(chan capture.Segment, 4096)
	errc := make(chan error, 1)
	go func() {
		defer close(segs)
		for {
			seg, err := src.Next()
			if err != nil {
				errc <- err
				return
			}
			segs <- seg
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	report := time.Now()
	for {
		select {
		case seg, ok := <-segs:
			if !ok {
				err := <-errc
				tr.Flush()
				ls := src.Stats()
				sum.addPass(ls.SourceStats, tr.Stats())
				sum.captureDrops = ls.Drops
				src.Close()
				if ctx.Err() != nil {
					return nil // the signal ended the capture: the normal way out
				}
				return err
			}
			tr.Add(seg)
		case now := <-tick.C:
			tr.Expire(now, cfg.timeout)
			if now.Sub(report) >= 10*time.Second {
				report = now
				ls := src.Stats()
				log.Info("capture", "packets", ls.Packets, "tcp", ls.TCP, "kernel_drops", ls.Drops, "sessions", tr.Stats().Sessions)
			}
		}
	}
}
