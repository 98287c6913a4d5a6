package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/stackcopy/stackcopy/internal/cliflag"
	"github.com/stackcopy/stackcopy/mirror"
)

// isTerminal says whether w is a terminal (the live progress line is
// drawn only there; elsewhere a stats line goes to the log).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// logs are the command's two loggers on one destination (-l or stderr):
// log at the -v level, and stats, which always writes, so the periodic
// stats line shows without -v.
type logs struct {
	log, stats *slog.Logger
	close      func() error
}

func openLogs(path string, stderr io.Writer, verbose int) (*logs, error) {
	w, closeLog := stderr, func() error { return nil }
	if path != "" {
		// As cliflag.NewLogger: appended, so runs and rotators can share it.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, err
		}
		w, closeLog = f, f.Close
	}
	return &logs{
		log:   slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: cliflag.Level(slog.LevelWarn, verbose)})),
		stats: slog.New(slog.NewTextHandler(w, nil)),
		close: closeLog,
	}, nil
}

// checkOutputs finds, before any work, the output paths that cannot be
// written: a replay of hours must not end in "no such directory". The
// --stats-json file is created now and written at the end.
func checkOutputs(cfg *config) (statsFile *os.File, err error) {
	for _, p := range []struct{ flag, path string }{{"-P", cfg.pidFile}, {"-l", cfg.logFile}} {
		if p.path == "" {
			continue
		}
		if err := dirWritable(p.path); err != nil {
			return nil, fmt.Errorf("%s %s: %w", p.flag, p.path, err)
		}
	}
	if cfg.statsJSON != "" {
		f, err := os.OpenFile(cfg.statsJSON, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("--stats-json: %w", err)
		}
		statsFile = f
	}
	if err := checkTUNName(cfg); err != nil {
		if statsFile != nil {
			statsFile.Close()
			os.Remove(statsFile.Name())
		}
		return nil, err
	}
	return statsFile, nil
}

// dirWritable checks that path's directory exists and is a directory.
func dirWritable(path string) error {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("directory %s: %w", dir, errors.Unwrap(err))
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return unix.Access(dir, unix.W_OK)
}

// checkTUNName refuses a --tun name that an interface other than a TUN
// already has: the kernel's answer to TUNSETIFF is then only "invalid
// argument".
func checkTUNName(cfg *config) error {
	e := &cfg.engine
	if e.Live && e.Output != "tun" || e.Device != nil || e.TUNName == "" {
		return nil
	}
	sys := "/sys/class/net/" + e.TUNName
	if _, err := os.Stat(sys); err != nil {
		return nil // free: stackcopy creates it
	}
	if _, err := os.Stat(sys + "/tun_flags"); err == nil {
		return nil // a TUN: stackcopy takes it over
	}
	kind := "an interface"
	if l, err := netlink.LinkByName(e.TUNName); err == nil && l.Type() != "" {
		kind = "a " + l.Type() + " interface" // veth, bridge, dummy...
	}
	return fmt.Errorf("--tun %s: the name is taken by %s that is not a TUN; choose another --tun name (or remove it: ip link del %s)", e.TUNName, kind, e.TUNName)
}

// serveMetrics serves /metrics (and, with pprof, the profiles) on ln
// until stop is called; stop waits for the server to end.
func serveMetrics(ln net.Listener, mon *mirror.Monitor, pprof bool) (stop func()) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(mirror.NewCollector(mon),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if pprof {
		mux.Handle("/debug/pprof/", http.DefaultServeMux)
	}
	return serve(ln, mux)
}

// serve runs an HTTP server on ln; stop closes it and waits for it.
func serve(ln net.Listener, h http.Handler) (stop func()) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	return func() {
		srv.Close()
		wg.Wait()
	}
}

// watch shows the run's progress until ctx ends: on a terminal a line
// redrawn every second on tty; otherwise a stats line in the log every
// interval (0: none). SIGUSR1 prints the current stats at once either
// way. The returned function stops it and waits, clearing the line.
func watch(mon *mirror.Monitor, tty io.Writer, statsLog *slog.Logger, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer signal.Stop(usr1)
		every := interval
		if tty != nil {
			every = time.Second
		}
		var tick <-chan time.Time
		if every > 0 {
			t := time.NewTicker(every)
			defer t.Stop()
			tick = t.C
		}
		var prev, start mirror.Snapshot
		drawn := false
		for {
			select {
			case <-ctx.Done():
				if drawn {
					fmt.Fprint(tty, "\r\033[K")
				}
				return
			case <-tick:
				cur := mon.Snapshot()
				if !cur.Running {
					continue
				}
				if tty != nil {
					fmt.Fprintf(tty, "\r\033[Kstackcopy: %s", mirror.ProgressLine(cur, prev))
					drawn = true
				} else {
					logStats(statsLog, "stats", cur, prev)
				}
				prev = cur
			case <-usr1:
				cur := mon.Snapshot()
				if tty != nil {
					// Above the progress line, which the next tick redraws.
					fmt.Fprintf(tty, "\r\033[Kstackcopy: %s\n", mirror.ProgressLine(cur, start))
				}
				logStats(statsLog, "stats (SIGUSR1)", cur, start)
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// logStats writes one stats line: the progress text, and the main
// counters as attributes for log parsers.
func logStats(log *slog.Logger, msg string, cur, prev mirror.Snapshot) {
	r := cur.Replay
	log.Info(msg, "progress", mirror.ProgressLine(cur, prev),
		"sessions", r.Sessions, "ended", cur.Ended(), "completed", r.Completed, "not_completed", cur.NotCompleted(),
		"shed", r.Shed, "bytes_sent", r.BytesSent, "bytes_received", r.BytesReceived, "turns", r.Turns)
}
