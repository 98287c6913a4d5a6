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
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only with --pprof
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/stackcopy/stackcopy/internal/cliflag"
	"github.com/stackcopy/stackcopy/mirror"
)

// Exit codes. Documented in --help.
const (
	exitOK      = 0
	exitFatal   = 1 // could not do the job: setup, input or target failure
	exitUsage   = 2 // bad flags
	exitPartial = 3 // ran, but some sessions did not complete
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "doctor" {
		return doctor(args[1:], stdout, stderr)
	}
	cfg, err := parseFlags(args, stderr)
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.pprofAddr != "" {
		ln, err := net.Listen("tcp", cfg.pprofAddr)
		if err != nil {
			fmt.Fprintf(stderr, "stackcopy: --pprof: %v\n", err)
			return exitUsage
		}
		srv := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}
	sum, err := start(ctx, cfg, stderr)
	if sum != nil {
		sum.WriteText(stdout)
		if sum.Comparison != nil {
			fmt.Fprintln(stdout)
			if werr := sum.Comparison.WriteText(stdout); werr != nil {
				fmt.Fprintf(stderr, "stackcopy: comparison: %v\n", werr)
			}
		}
		if cfg.statsJSON != "" {
			if werr := writeStats(sum, cfg.statsJSON); werr != nil {
				fmt.Fprintf(stderr, "stackcopy: %v\n", werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "stackcopy: %v\n", err)
		return exitFatal
	}
	if !sum.AllCompleted() {
		return exitPartial
	}
	return exitOK
}

// start sets up logging and the pid file, then runs the engine.
func start(ctx context.Context, cfg *config, stderr io.Writer) (*mirror.Summary, error) {
	log, closeLog, err := cliflag.NewLogger(cfg.logFile, stderr, slog.LevelWarn, cfg.verbose)
	if err != nil {
		return nil, fmt.Errorf("-l: %w", err)
	}
	defer closeLog()
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
	return mirror.Run(ctx, cfg.engine, log)
}

// writeStats writes the --stats-json file.
func writeStats(sum *mirror.Summary, path string) error {
	var b bytes.Buffer
	if err := sum.WriteJSON(&b); err != nil {
		return fmt.Errorf("--stats-json: %w", err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("--stats-json: %w", err)
	}
	return nil
}
