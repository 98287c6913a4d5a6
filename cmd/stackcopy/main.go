// Command stackcopy replays captured TCP sessions to a test server through
// a userspace TCP stack that forges the original client addresses. The
// engine is package mirror; this command turns flags into its Config and
// owns what belongs to a process: logging, the pid file, profiling,
// signals, the printed summary and the exit status.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof" // served only with --pprof
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/stackcopy/stackcopy/internal/cliflag"
	"github.com/stackcopy/stackcopy/internal/cores"
	"github.com/stackcopy/stackcopy/internal/cpuprof"
	"github.com/stackcopy/stackcopy/internal/heapfloor"
	"github.com/stackcopy/stackcopy/mirror"
)

// Exit codes. Documented in --help.
const (
	exitOK      = 0
	exitFatal   = 1 // could not do the job: setup, input or target failure
	exitUsage   = 2 // bad flags
	exitPartial = 3 // work was lost: sessions did not complete, were shed (-m) or never started (a signal)
)

// gcHeadroom is the garbage collector's least headroom (heapfloor) when
// replaying capture files: up to this much garbage may wait for a
// collection while the live heap is smaller (docs/memory.md).
const gcHeadroom = 32 << 20

// floorsHeap reports whether the run gets the GC headroom floor: replay
// of capture files only. Live, stackcopy shares the online host with the
// real service: its footprint stays Go's default (live mirroring's CPU
// did not change with the floor). With -m the gate reads RSS: garbage
// the floor lets grow would count against the limit. ($GOGC is
// heapfloor's own check.)
func floorsHeap(cfg *config) bool {
	return !cfg.engine.Live && cfg.engine.MemoryLimit == 0
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "doctor" {
		return doctor(args[1:], stdout, stderr)
	}
	cfg, err := parseFlags(args, stdout)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "stackcopy: %v\n", err)
		fmt.Fprintln(stderr, "Try 'stackcopy --help' for more information.")
		return exitUsage
	}
	if cfg.version {
		fmt.Fprintln(stdout, "stackcopy", version)
		return exitOK
	}
	// Every output is checked (the --stats-json file created) before any
	// work: a replay of hours must not end in "no such directory".
	statsFile, err := checkOutputs(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "stackcopy: %v\n", err)
		return exitUsage
	}
	wroteStats := false
	if statsFile != nil {
		defer func() {
			statsFile.Close()
			if !wroteStats {
				os.Remove(statsFile.Name()) // no summary: no empty document either
			}
		}()
	}
	// SIGHUP (a closed terminal, a service manager) stops the run as
	// SIGTERM does: summary, JSON and pid file removal included.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	mon := &mirror.Monitor{}
	cores.Apply(cfg.cores)
	if floorsHeap(cfg) {
		defer heapfloor.Start(gcHeadroom).Stop()
	}
	if cfg.cpuProfile != "" {
		stopProfile, err := cpuprof.Start(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "stackcopy: %v\n", err)
			return exitUsage
		}
		defer func() {
			if err := stopProfile(); err != nil {
				fmt.Fprintf(stderr, "stackcopy: %v\n", err)
			}
		}()
	}
	if cfg.pprofAddr != "" {
		ln, err := net.Listen("tcp", cfg.pprofAddr)
		if err != nil {
			fmt.Fprintf(stderr, "stackcopy: --pprof: %v\n", err)
			return exitUsage
		}
		defer serve(ln, http.DefaultServeMux)()
	}
	if cfg.metricsAddr != "" {
		ln, err := net.Listen("tcp", cfg.metricsAddr)
		if err != nil {
			fmt.Fprintf(stderr, "stackcopy: --metrics: %v\n", err)
			return exitUsage
		}
		stopMetrics := serveMetrics(ln, mon, false)
		defer func() {
			if cfg.metricsLinger > 0 {
				// The final counts stay scrapeable a while (Monitor keeps
				// them); a signal ends the wait.
				lctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
				select {
				case <-time.After(cfg.metricsLinger):
				case <-lctx.Done():
				}
				cancel()
			}
			stopMetrics()
		}()
	}
	sum, err := start(ctx, cfg, mon, stderr)
	if sum != nil {
		sum.WriteText(stdout)
		if sum.Comparison != nil {
			fmt.Fprintln(stdout)
			if werr := sum.Comparison.WriteText(stdout); werr != nil {
				fmt.Fprintf(stderr, "stackcopy: comparison: %v\n", werr)
			}
		}
		if statsFile != nil {
			if werr := writeStats(sum, statsFile); werr != nil {
				fmt.Fprintf(stderr, "stackcopy: %v\n", werr)
			}
			wroteStats = true
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "stackcopy: %v\n", err)
		return exitFatal
	}
	if sum.Interrupted {
		fmt.Fprintf(stderr, "stackcopy: interrupted by a signal: %d sessions cut short, %d never started\n",
			sum.Replay.Reasons["interrupted"], sum.Reasons()["never-started"])
	}
	if !sum.AllCompleted() {
		return exitPartial
	}
	return exitOK
}

// start sets up logging, the pid file and the progress display, then
// runs the engine.
func start(ctx context.Context, cfg *config, mon *mirror.Monitor, stderr io.Writer) (*mirror.Summary, error) {
	lg, err := openLogs(cfg.logFile, stderr, cfg.verbose)
	if err != nil {
		return nil, fmt.Errorf("-l: %w", err)
	}
	defer lg.close()
	log := lg.log
	if cfg.pidFile != "" {
		remove, err := cliflag.WritePIDFile(cfg.pidFile)
		if err != nil {
			return nil, fmt.Errorf("-P: %w", err)
		}
		defer func() {
			if err := remove(); err != nil {
				log.Warn("pid file", "err", err)
			}
		}()
	}
	var tty io.Writer
	if cfg.progress && isTerminal(stderr) {
		tty = stderr
	}
	defer watch(mon, tty, lg.stats, cfg.statsInterval)()
	return mirror.RunMonitored(ctx, cfg.engine, log, mon)
}

// writeStats writes the --stats-json document into f (created at start).
func writeStats(sum *mirror.Summary, f *os.File) error {
	var b bytes.Buffer
	if err := sum.WriteJSON(&b); err != nil {
		return fmt.Errorf("--stats-json: %w", err)
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		return fmt.Errorf("--stats-json: %w", err)
	}
	return nil
}
