// Command recorder is the lab's recording target server: it accepts TCP
// connections, speaks minimal HTTP/1.1 or SMTP (or nothing, in raw mode)
// and logs per request the byte count and SHA-256 of exactly what arrived,
// as JSON lines. See package recorder.
//
//	recorder -listen 198.18.2.2:80 -mode http -log /tmp/lab/rec.jsonl -delay 50ms
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/stackcopy/stackcopy/netns-tests/recorder"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "recorder:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "", "address to listen on, e.g. 198.18.2.2:80 (required)")
	mode := flag.String("mode", "http", "protocol: http, smtp or raw")
	logPath := flag.String("log", "-", "JSON-lines record log (appended; - for stdout)")
	delay := flag.Duration("delay", 0, "wait before each answer (and before checking for pipelined bytes)")
	greetDelay := flag.Duration("greet-delay", 0, "smtp: wait before the 220 banner")
	flag.Parse()
	if *listen == "" || flag.NArg() > 0 {
		flag.Usage()
		return fmt.Errorf("-listen is required and no arguments are taken")
	}
	m, err := recorder.ParseMode(*mode)
	if err != nil {
		return err
	}
	logw, err := recorder.OpenLog(*logPath)
	if err != nil {
		return err
	}
	defer logw.Close()

	lg := slog.New(slog.NewTextHandler(os.Stderr, nil))
	srv, err := recorder.New(recorder.Config{Mode: m, Delay: *delay, GreetDelay: *greetDelay, Log: logw, Logger: lg})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	lg.Info("recorder listening", "addr", ln.Addr().String(), "mode", m, "log", *logPath)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return srv.Serve(ctx, ln)
}
