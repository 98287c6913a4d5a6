// Command stackcopy replays captured TCP sessions to a test server through
// a userspace TCP stack that forges the original client addresses.
package main

import (
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
	sum, err := replayRun(ctx, cfg, stderr)
	if sum != nil {
		sum.print(stdout)
		if cfg.statsJSON != "" {
			if werr := sum.writeJSON(cfg.statsJSON); werr != nil {
				fmt.Fprintf(stderr, "stackcopy: %v\n", werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "stackcopy: %v\n", err)
		return exitFatal
	}
	if !sum.allCompleted() {
		return exitPartial
	}
	return exitOK
}
