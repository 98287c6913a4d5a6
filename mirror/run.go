package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/stackcopy/stackcopy/capture"
	"github.com/stackcopy/stackcopy/netstack"
	"github.com/stackcopy/stackcopy/relay"
	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/session"
	"github.com/stackcopy/stackcopy/transfer"
)

// Run replays the capture files cfg.Loops times, or with cfg.Live mirrors
// live traffic until ctx ends (then sessions get one turn's grace). For
// files, ctx ending stops the replay early ("interrupted").
//
// It returns a summary whenever sessions were replayed, also with an
// error; a nil summary means nothing was replayed (bad input, a host
// that cannot be set up). Every goroutine, timer, route and registration
// it made is gone when it returns. log may be nil.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Summary, error) {
	return run(ctx, cfg, log, nil)
}

// run is Run, watched by mon (nil: not watched; see RunMonitored).
func run(ctx context.Context, cfg Config, log *slog.Logger, mon *Monitor) (*Summary, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// A given device is Run's to close, also when Run fails before the
	// stack takes it over.
	stackHasDevice := false
	defer func() {
		if cfg.Device != nil && !stackHasDevice {
			cfg.Device.Close()
		}
	}()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Check the inputs before touching the host: a typo should not leave a
	// TUN behind or need root.
	if !cfg.Live {
		for _, path := range cfg.Inputs {
			src, err := capture.OpenFile(path)
			if err != nil {
				return nil, err
			}
			src.Close()
		}
	}
	for _, t := range cfg.Transfers {
		if !t.Target.Addr().Is4() {
			return nil, fmt.Errorf("-x: target %v: only IPv4 targets are replayed in this version", t.Target)
		}
	}
	var key relay.Key
	if len(cfg.Intercepts) > 0 {
		var err error
		if key, err = relay.LoadKey(cfg.KeyFile, cfg.KeyEnv); err != nil {
			return nil, fmt.Errorf("-s: %w", err)
		}
	}
	cmp, err := openComparison(&cfg)
	if err != nil {
		return nil, err
	}
	if cmp != nil {
		defer cmp.close() // finish closes it too; this covers the early returns
	}
	var sampler *transfer.Sampler
	if cfg.Percent < 100 {
		var err error
		if sampler, err = transfer.NewSampler(cfg.Percent); err != nil {
			return nil, fmt.Errorf("-r: %w", err)
		}
	}

	eg, err := openEgress(&cfg, log)
	if err != nil {
		return nil, err
	}
	stackHasDevice = true // from here on, even when New fails
	st, err := netstack.New(stackConfig(&cfg, eg), eg.dev, log)
	if err != nil {
		return nil, err // the stack closed the device
	}
	var wg sync.WaitGroup
	if eg.answers != nil {
		wg.Go(func() {
			// Ends when st.Close closes the device.
			if err := st.DeliverFrom(eg.answers); !errors.Is(err, os.ErrClosed) {
				log.Warn("TUN reader stopped", "err", err)
			}
		})
	}
	var (
		rc *relay.Client
		d  *dialer
	)
	defer func() {
		if d != nil {
			d.close() // before rc.Close: unregistrations still running use it
		}
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
	if len(cfg.Intercepts) > 0 {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		rc, err = relay.Dial(dctx, cfg.Intercepts, key, relay.ClientConfig{
			Channels: cfg.Channels,
			// Every packet of one read of the relay channel, injected at once.
			OnPackets: func(pkts [][]byte) { st.Inject(pkts) },
			Logger:    log,
		})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("-s: %w", err)
		}
	}
	routes := eg.routes
	if cfg.NoRoutes {
		routes = nil
	}
	d = newDialer(st, routes, rc)

	// In live mode the signal ends the capture; sessions then get a grace
	// period to finish their turn before they are aborted.
	rctx, rcancel := context.WithCancel(context.Background())
	defer rcancel()
	if !cfg.Live {
		stop := context.AfterFunc(ctx, rcancel)
		defer stop()
	}
	rcfg := replayConfig(&cfg, sampler)
	if cmp != nil {
		rcfg.Compare = cmp.col
	}
	rp := replay.New(rctx, rcfg, withReasons(d.dial), log)

	sum := &Summary{Inputs: cfg.Inputs, Loops: cfg.Loops, Live: cfg.Live, TUN: eg.routes != nil}
	start := time.Now()
	w := &watched{start: start, live: cfg.Live, copies: uint64(max(cfg.Copies, 1)), rp: rp, st: st, rc: rc, routes: eg.routes}
	if cmp != nil {
		w.cmp = cmp.col
	}
	var sink session.Sink = rp
	// Idle sessions' memory: given back once traffic stops (trimmer).
	trimCtx, stopTrim := context.WithCancel(rctx)
	var trimwg sync.WaitGroup
	trimwg.Go(func() {
		trimWhenQuiet(trimCtx, func() uint64 {
			s := st.Stats()
			return s.SegmentsSent + s.SegmentsReceived
		})
	})
	defer func() {
		stopTrim()
		trimwg.Wait()
	}()
	var prewg sync.WaitGroup
	if !cfg.Live {
		// Count the files' sessions beside the replay (progress total,
		// never-started sessions, SYNs not matching -x); rcancel stops it.
		perSession := func(k session.SessionKey) uint64 {
			n := uint64(max(cfg.Copies, 1))
			if _, ok := cfg.Baseline.Match(k.Server); ok && cmp != nil {
				n++
			}
			return n
		}
		w.pre = &prepass{}
		w.sink = &countingSink{next: rp, cfg: &cfg, keep: rcfg.Keep, perSession: perSession}
		sink = w.sink
		prewg.Go(func() { _ = w.pre.count(rctx, &cfg, rcfg.Keep, perSession) })
		defer func() {
			rcancel() // an early return must not wait for the whole count
			prewg.Wait()
		}()
	}
	mon.attach(w)
	defer mon.detach()
	var readErr error
	if cfg.Live {
		readErr = mirrorLive(ctx, &cfg, rp, sum, log, w)
		// Sessions get one turn's grace to finish; then what is left is aborted.
		grace := time.AfterFunc(cfg.TurnWait+2*time.Second, rcancel)
		defer grace.Stop()
	} else {
		for loop := 0; loop < cfg.Loops && readErr == nil && ctx.Err() == nil; loop++ {
			rp.Rebase()
			for _, path := range cfg.Inputs {
				if readErr = replayFile(ctx, path, &cfg, sink, sum, log); readErr != nil {
					break
				}
			}
		}
	}
	rp.CloseInput()
	rp.Wait()
	sum.Elapsed = time.Since(start)
	sum.Replay = rp.Stats()
	sum.Stack = st.Stats()
	if w.pre != nil {
		if !cfg.Live && ctx.Err() != nil {
			rcancel() // the pre-pass too: an interrupted run reports what it knows
		}
		prewg.Wait()
		sum.NotMatching = w.pre.unmatched.Load()
		if w.pre.done.Load() {
			sum.CaptureSessions = w.pre.sessions.Load()
			if total, reached := w.pre.players.Load(), w.sink.players.Load(); total > reached {
				sum.NeverStarted = total - reached
			}
		}
	}
	if eg.routes != nil {
		sum.Routes = eg.routes.Routes()
		sum.TUNTxDrops, sum.TUNRxDrops = eg.routes.Drops()
	}
	if rc != nil {
		s := rc.Stats()
		sum.Relay = &s
	}
	if cmp != nil {
		if err := cmp.finish(sum, log); err != nil && readErr == nil {
			readErr = err
		}
		if sum.CompareInvalid != "" && readErr == nil {
			readErr = errors.New("--compare: " + sum.CompareInvalid)
		}
	}
	if readErr != nil {
		return sum, readErr
	}
	if e := d.routeErr.Load(); e != nil {
		return sum, *e
	}
	if !cfg.Live && ctx.Err() != nil {
		// Not an error: the summary says what was cut and what never
		// started, and the command exits 3 (work was lost).
		sum.Interrupted = true
		return sum, nil
	}
	if !cfg.Live && sum.Replay.Sessions == 0 {
		return sum, fmt.Errorf("no session to replay: the capture has no TCP session with a SYN matching -x")
	}
	return sum, nil
}

// stackConfig is the forged clients' TCP behaviour.
func stackConfig(cfg *Config, eg *egress) netstack.Config {
	sc := netstack.DefaultConfig()
	sc.MTU = uint32(cfg.MTU)
	sc.MSS = cfg.MSS
	sc.CongestionControl = cfg.CongestionControl
	sc.RACK = cfg.RACK
	sc.MinRTO = cfg.MinRTO
	sc.FlightMinRTO = cfg.FlightMinRTO
	sc.TimeWait = cfg.TimeWait
	sc.QuickACK = cfg.QuickACK
	sc.SendBufferMax = cfg.SendBuffer
	sc.SendBuffer = min(sc.SendBuffer, cfg.SendBuffer)
	switch {
	case cfg.GSO == "host":
		sc.GSO = netstack.GSOHost
	case cfg.GSO == "off" || !eg.kernelGSO:
		// Wires that cut super-packets in userspace gain nothing from
		// merging first, and auto keeps gVisor's own MSS segments there.
		sc.GSO = netstack.GSOOff
	case cfg.GSO == "coalesce":
		sc.GSO = netstack.GSOCoalesce
	default:
		// auto on a TUN: gVisor builds super-packets, the kernel cuts them
		// (with third_party/gvisor's recovery fixes, host GSO recovers
		// losses as well as MSS segments do).
		sc.GSO = netstack.GSOHost
	}
	return sc
}

// replayConfig is how sessions are replayed.
func replayConfig(cfg *Config, sampler *transfer.Sampler) replay.Config {
	rc := replay.DefaultConfig()
	rc.Transfers = cfg.Transfers
	rc.Pool = cfg.Pool
	rc.Speed = cfg.Speed
	if cfg.Live {
		rc.Speed = 0 // events arrive at the captured pace already
	}
	rc.NoWait = cfg.NoWait
	rc.NoOrder = cfg.NoOrder
	rc.NoHTTPFraming = !cfg.HTTPTurns
	rc.Protocols = protocols()
	if cfg.Protocol != "auto" {
		rc.Protocol = cfg.Protocol
	}
	rc.TurnWait = cfg.TurnWait
	rc.Idle = cfg.Idle
	rc.MaxHandshakes = cfg.MaxHandshakes
	rc.Copies = cfg.Copies
	rc.PortOffset = cfg.PortOffset
	rc.CopyPorts = cfg.CopyPorts
	rc.SpillDir = cfg.SpillDir
	rc.SpillMax = max(cfg.SpillMax, 0)
	// A live capture must not wait for one slow session: the kernel ring
	// would overflow for all of them. A file can be read later.
	rc.ShedWhenFull = cfg.Live
	rc.Baseline = cfg.Baseline
	if sampler != nil {
		rc.Keep = sampler.Keep
	}
	limitMemory(cfg, &rc) // memory.go
	return rc
}

// trackerConfig is how sessions are followed. The captured server's bytes
// are reported only when a protocol may be framed or answers are
// compared: they are what the replayer counts production's answers in,
// and production's side of the comparison.
func trackerConfig(cfg *Config) session.TrackerConfig {
	return session.TrackerConfig{
		IsServer:      cfg.Transfers.IsServer,
		JoinMidStream: cfg.JoinMidStream,
		ServerData: cfg.Comparing() ||
			cfg.Protocol != replay.ProtocolNone && cfg.Protocol != replay.ProtocolHTTP1 && len(protocols()) > 0,
	}
}

// replayFile feeds one pass over a capture file to sink.
func replayFile(ctx context.Context, path string, cfg *Config, sink session.Sink, sum *Summary, log *slog.Logger) error {
	src, err := capture.OpenFile(path)
	if err != nil {
		return err
	}
	defer src.Close()
	ts, err := pump(ctx, src, sink, pumpConfig{
		tracker: trackerConfig(cfg),
		ahead:   64,
	}, log)
	sum.addPass(src.Counts(), ts)
	return err
}

// mirrorLive captures on the interfaces until ctx ends, expiring idle
// sessions once a second.
func mirrorLive(ctx context.Context, cfg *Config, sink session.Sink, sum *Summary, log *slog.Logger, w *watched) error {
	src, err := capture.OpenLive(capture.LiveConfig{Interfaces: cfg.Inputs, Transfers: cfg.Transfers, Filter: cfg.Filter, BufferBytes: cfg.CaptureBuffer})
	if err != nil {
		return err
	}
	defer src.Close()
	w.liveSrc.Store(src)
	// The signal ends the capture: Close wakes the blocked Next.
	stop := context.AfterFunc(ctx, func() { src.Close() })
	defer stop()
	log.Info("mirroring live traffic", "interfaces", cfg.Inputs, "transfers", cfg.Transfers, "cores", runtime.GOMAXPROCS(0))
	ts, err := pump(ctx, src, sink, pumpConfig{
		tracker: trackerConfig(cfg),
		ahead:   4096,
		idle:    cfg.Idle,
		report:  10 * time.Second,
	}, log)
	sum.addPass(src.Counts(), ts)
	return err
}

// withReasons gives the replayer the causes it names (replay.Reasons) for
// dial errors the dialer passes through as they are: no route to the
// target, and an intercept that could not take the registration.
func withReasons(dial replay.DialFunc) replay.DialFunc {
	return func(ctx context.Context, src, dst netip.AddrPort) (replay.Conn, error) {
		c, err := dial(ctx, src, dst)
		switch {
		case err == nil:
		case errors.Is(err, netstack.ErrUnreachable):
			err = fmt.Errorf("%w (%w)", err, replay.ErrUnreachable)
		case errors.Is(err, relay.ErrNotRegistered):
			err = fmt.Errorf("%w (%w)", err, replay.ErrRelayDown)
		}
		return c, err
	}
}
