package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/stackcopy/stackcopy/hostnet"
	"github.com/stackcopy/stackcopy/mirror"
	"github.com/stackcopy/stackcopy/mirror/replay"
	"github.com/stackcopy/stackcopy/stack"
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

// replayOffline replays the capture files cfg.loops times through a TUN.
// It returns a summary whenever sessions were replayed, also with an error.
func replayOffline(ctx context.Context, cfg *config, stderr io.Writer) (*summary, error) {
	log, closeLog, err := newLogger(cfg, stderr)
	if err != nil {
		return nil, err
	}
	defer closeLog()

	// Check the inputs before touching the host: a typo should not leave a
	// TUN behind or need root.
	for _, path := range cfg.inputs {
		src, err := mirror.OpenFile(path)
		if err != nil {
			return nil, err
		}
		src.Close()
	}
	for _, t := range cfg.transfers {
		if !t.Target.Addr().Is4() {
			return nil, fmt.Errorf("-x: target %v: only IPv4 targets are replayed in this version", t.Target)
		}
	}

	tun, err := stack.OpenTUN(cfg.tunName)
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
	scfg := stack.DefaultConfig()
	scfg.MTU = uint32(cfg.mtu)
	scfg.CongestionControl = cfg.cc
	scfg.RACK = cfg.rack
	switch cfg.gso {
	case "host":
		scfg.GSO = stack.GSOHost
	case "coalesce":
		scfg.GSO = stack.GSOCoalesce
	case "off":
		scfg.GSO = stack.GSOOff
	}
	scfg.MinRTO = cfg.minRTO
	scfg.SendBufferMax = cfg.sendBuf
	scfg.SendBuffer = min(scfg.SendBuffer, cfg.sendBuf)
	st, err := stack.New(scfg, tun, log)
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Ends when the TUN is closed by st.Close.
		if err := st.DeliverFrom(tun); !errors.Is(err, os.ErrClosed) {
			log.Warn("TUN reader stopped", "err", err)
		}
	}()
	defer func() {
		st.Close()
		wg.Wait()
		if err := dev.Close(); err != nil {
			log.Warn("route cleanup", "err", err)
		}
	}()

	var routeErr error
	var routeMu sync.Mutex
	dial := func(ctx context.Context, src, dst netip.AddrPort) (replay.Conn, error) {
		if !cfg.noRoutes {
			if err := dev.Route(src.Addr()); err != nil {
				routeMu.Lock()
				routeErr = err
				routeMu.Unlock()
				return nil, err
			}
		}
		c, err := st.DialFrom(ctx, src, dst)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	rcfg := replay.DefaultConfig()
	rcfg.Transfers = cfg.transfers
	rcfg.Pool = cfg.pool
	rcfg.Speed = cfg.speed
	rcfg.NoWait = cfg.noWait
	rcfg.TurnWait = cfg.turnWait
	rcfg.Idle = cfg.timeout
	rcfg.MaxHandshakes = cfg.handshakes
	rcfg.Errors = replay.Errors{PortInUse: stack.ErrPortInUse, Reset: stack.ErrReset, Refused: stack.ErrRefused, Timeout: stack.ErrTimeout}
	if cfg.percent < 100 {
		sampler, err := mirror.NewSampler(cfg.percent)
		if err != nil {
			return nil, fmt.Errorf("-r: %w", err)
		}
		rcfg.Keep = sampler.Keep
	}
	rp := replay.New(ctx, rcfg, dial, log)

	sum := &summary{inputs: cfg.inputs, loops: cfg.loops, start: time.Now()}
	var readErr error
	for loop := 0; loop < cfg.loops && readErr == nil && ctx.Err() == nil; loop++ {
		rp.Rebase()
		for _, path := range cfg.inputs {
			if readErr = readCapture(ctx, path, cfg.transfers, rp, sum); readErr != nil {
				break
			}
		}
	}
	rp.CloseInput()
	rp.Wait()
	sum.elapsed = time.Since(sum.start)
	sum.replay = rp.Stats()
	sum.stack = st.Stats()
	sum.routes = dev.Routes()
	sum.tunTxDrops, sum.tunRxDrops = dev.Drops()
	if readErr != nil {
		return sum, readErr
	}
	if routeErr != nil {
		return sum, routeErr
	}
	if ctx.Err() != nil {
		return sum, errors.New("interrupted")
	}
	if sum.replay.Sessions == 0 {
		return sum, fmt.Errorf("no session to replay: the capture has no TCP session with a SYN matching -x")
	}
	return sum, nil
}

// readCapture feeds one pass over a capture file to the replayer.
func readCapture(ctx context.Context, path string, ts mirror.Transfers, sink mirror.Sink, sum *summary) error {
	src, err := mirror.OpenFile(path)
	if err != nil {
		return err
	}
	defer src.Close()
	tr := mirror.NewTracker(mirror.TrackerConfig{
		IsServer: func(a netip.AddrPort) bool { _, ok := ts.Match(a); return ok },
	}, sink)
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
