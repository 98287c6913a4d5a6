// Command intercept catches a test server's answers to stackcopy's forged
// clients, on the target (NFQUEUE) or on an assistant host (AF_PACKET),
// and relays them to the stackcopy that replays those clients.
//
// The command owns its flags, its pid file and its log (internal/cliflag);
// the work is intercept.Run's. It imports intercept, relay (the key's
// default port) and internal/cliflag, nothing of the mirror side.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"

	"github.com/stackcopy/stackcopy/intercept"
	"github.com/stackcopy/stackcopy/internal/cliflag"
	"github.com/stackcopy/stackcopy/internal/cores"
	"github.com/stackcopy/stackcopy/internal/cpuprof"
	"github.com/stackcopy/stackcopy/relay"
)

var version = "dev" // set with -ldflags "-X main.version=..."

// Exit codes. Documented in --help.
const (
	exitOK    = 0
	exitFatal = 1
	exitUsage = 2
)

var errHelp = errors.New("help requested")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "doctor" {
		return doctor(args[1:], stdout, stderr)
	}
	o, err := parseFlags(args, stdout)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "intercept: %v\n", err)
		fmt.Fprintln(stderr, "Try 'intercept --help' for more information.")
		return exitUsage
	}
	if o.version {
		fmt.Fprintln(stdout, "intercept", version)
		return exitOK
	}
	log, closeLog, err := cliflag.NewLogger(o.logFile, stderr, slog.LevelInfo, o.verbose)
	if err != nil {
		fmt.Fprintf(stderr, "intercept: -l: %v\n", err)
		return exitFatal
	}
	defer closeLog()
	fail := func(err error) int {
		if o.logFile != "" {
			log.Error("intercept failed", "err", err)
		}
		fmt.Fprintf(stderr, "intercept: %v\n", err)
		return exitFatal
	}
	if o.pidFile != "" {
		remove, err := cliflag.WritePIDFile(o.pidFile)
		if err != nil {
			return fail(err)
		}
		defer func() {
			if err := remove(); err != nil {
				log.Warn("removing the pid file", "err", err)
			}
		}()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cores.Apply(o.cores)
	if o.cpuProfile != "" {
		stopProfile, err := cpuprof.Start(o.cpuProfile)
		if err != nil {
			return fail(err)
		}
		defer func() {
			if err := stopProfile(); err != nil {
				log.Warn("writing the CPU profile", "err", err)
			}
		}()
	}
	if o.metricsAddr != "" {
		stopMetrics, err := serveMetrics(o, &log)
		if err != nil {
			return fail(err)
		}
		defer stopMetrics()
	}
	if err := intercept.Run(ctx, o.cfg, log); err != nil {
		return fail(err)
	}
	return exitOK
}

type options struct {
	cfg         intercept.Config
	cpuProfile  string
	cores       int    // --cores; 0: every core
	metricsAddr string // --metrics: serve Prometheus /metrics here
	logFile     string
	pidFile     string
	verbose     int
	version     bool
}

const usageHead = `Usage: intercept [--mode nfqueue] [-q QUEUE] [options]
       intercept -i IFACE -F FILTER [options]

Catches the test server's answers to stackcopy's forged clients before they
reach the real clients, and relays each one to the stackcopy that replays
its destination. stackcopy connects here (TCP, port 36524), proves it holds
the same pre-shared key, and registers every forged client ip:port before
its session starts. An answer to a registered client is relayed and
dropped; an answer to an address on the pass-list (-x), or to anything no
stackcopy registered (real users), is let through untouched.

Traditional deployment, on the target (NFQUEUE): queue the server's
outgoing packets, then run intercept with the same queue number:

  iptables -I OUTPUT -p tcp --sport 80 -j NFQUEUE --queue-num 0
  intercept --key-file /etc/stackcopy/relay.key -q 0 -x 198.18.7.7

Advanced deployment, on an assistant host (AF_PACKET): the target routes
the forged client prefix to the assistant, which captures and, with IP
forwarding off, lets its kernel discard the answers:

  target:    ip route add 198.18.1.0/24 via 198.18.4.2
  assistant: sysctl -w net.ipv4.ip_forward=0
  assistant: intercept --key-file /etc/stackcopy/relay.key -i eth0 -F 'tcp and src port 80'

The key: a file readable only by its owner (--key-file; generate one with
head -c 32 /dev/urandom | base64 > relay.key; chmod 600 relay.key), or the
environment variable STACKCOPY_RELAY_KEY. Never on the command line.

Options:
`

const usageTail = `
intercept runs on one core unless --cores (or $GOMAXPROCS) says otherwise:
that bounds what it takes from the host, and on one core Go hands packets
between goroutines more cheaply (a quarter less CPU per answer in make
bench); raise it when one core is saturated (kernel drops in the stats).

NFQUEUE and failure: without a program reading the queue, the kernel drops
what the rule queues, so the target's port goes dark while intercept is
not running. Add --queue-bypass to the iptables rule to let packets through
instead while nobody reads the queue (then answers to forged clients leak
to the real clients until intercept is back). --fail-open is for overload:
packets that find the queue full (--queue-len) are accepted instead of
dropped; they leave unrelayed and are not counted anywhere.

--full-payload: by default only the IP and TCP headers of each answer and
its length are relayed (the kernel copies 128 bytes of each packet), and
stackcopy zero-fills the payload; this keeps the relay light, and the
replay only needs the answer's size. --full-payload relays every answer
whole: relay traffic as large as the target's answers (a 1 Gbit/s download
becomes 1 Gbit/s of relay traffic), more CPU and memory per packet, but
stackcopy sees the real bytes, e.g. to compare answers.

Answers that arrive after their stackcopy disconnected or ended the session
(retransmissions, late FINs, a SYN-ACK to a handshake it gave up on) are
still dropped for --hold after the last one, so they do not leak; 0 turns
this off. A stackcopy that registers a held address ends its hold: the
answers are its own from then on, and it is told how many were held (the
target may still have the earlier run's connection on that address).

The relay port admits at most 8 handshakes in progress per source address
(IPv6: per /64) and 256 in all, a quarter of them kept for addresses with
none in progress, each for 3 s at most; connections beyond are reset
unread. A few rejections per 10 s are logged in full, the rest in one
line per 10 s: how many, from how many addresses, the busiest ones, why.

Every --stats-interval a line "intercept stats" reports: relayed, passed,
unknown, held, other packets, mirrors and clients, relay drops, kernel
drops. The same line, "intercept stopped", ends a run. --metrics serves
the same counters to Prometheus (intercept_*), refreshed every second.

Exit status: 0 stopped by SIGINT or SIGTERM; 1 intercept could not run or
failed; 2 bad usage.
`

// durationFlag accepts plain seconds ("120") or a Go duration ("2m").

func parseFlags(args []string, helpOut io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := pflag.NewFlagSet("intercept", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	var (
		mode, bind, pass string
		port             int
		queue            int
		queueLen         int
		captureBufMiB    int
	)
	hold := intercept.DefaultHold
	statsEvery := intercept.DefaultStatsInterval
	fs.StringVar(&mode, "mode", "", "source: nfqueue (on the target) or capture (AF_PACKET on an assistant); default capture with -i, else nfqueue")
	fs.IntVarP(&queue, "queue-num", "q", 0, "nfqueue: queue number, as in the rule's --queue-num")
	fs.IntVar(&queueLen, "queue-len", intercept.DefaultQueueLen, "nfqueue: packets the kernel holds for a verdict at most")
	fs.BoolVar(&c.FailOpen, "fail-open", false, "nfqueue: accept (unrelayed) instead of drop packets that find the queue full")
	fs.StringVarP(&c.Interface, "interface", "i", "", "capture: interface the target's answers arrive on")
	fs.StringVarP(&c.Filter, "filter", "F", "", "capture: pcap filter for the answers, required, e.g. 'tcp and src port 80'")
	fs.IntVar(&captureBufMiB, "capture-buffer", intercept.DefaultCaptureBuffer>>20, "capture: socket receive buffer in MiB")
	fs.BoolVar(&c.AllowForwarding, "allow-forwarding", false, "capture: run although the interface forwards (the answers then reach the real clients too)")
	fs.StringVarP(&pass, "pass", "x", "", "pass-list: IP,IP,... whose answers are never relayed nor dropped")
	fs.BoolVar(&c.FullPayload, "full-payload", false, "relay whole packets instead of headers and length (see below)")
	fs.IntVarP(&port, "port", "p", relay.DefaultPort, "TCP port stackcopy connects to")
	fs.StringVarP(&bind, "bind", "b", "", "address to listen on for stackcopy (default: all)")
	fs.StringVar(&c.KeyFile, "key-file", "", "file holding the relay key (default: $"+intercept.KeyEnv+")")
	fs.Var(cliflag.Duration{D: &hold}, "hold", "keep dropping answers to a forged client this long after its stackcopy left")
	fs.Var(cliflag.Duration{D: &statsEvery}, "stats-interval", "period of the stats log line (0: only at exit)")
	fs.StringVar(&o.metricsAddr, "metrics", "", "serve Prometheus metrics (intercept_*) on http://ADDR/metrics, e.g. 127.0.0.1:9465")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	fs.IntVar(&o.cores, "cores", cores.Default(1), "cores to run on at once (GOMAXPROCS; 0: every core); default 1, or $GOMAXPROCS when set (see below)")
	fs.StringVarP(&o.logFile, "log", "l", "", "log to this file instead of stderr")
	fs.StringVarP(&o.pidFile, "pid-file", "P", "", "write the process ID to this file")
	fs.CountVarP(&o.verbose, "verbose", "v", "debug logging (registrations)")
	fs.BoolVarP(&o.version, "version", "V", false, "print the version")
	help := fs.BoolP("help", "h", false, "this help")

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *help {
		fmt.Fprint(helpOut, usageHead)
		fmt.Fprint(helpOut, fs.FlagUsages())
		fmt.Fprint(helpOut, usageTail)
		return nil, errHelp
	}
	if o.version {
		return o, nil
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	if err := cores.Check(o.cores); err != nil {
		return nil, err
	}
	switch mode {
	case "":
		c.Mode = intercept.ModeNFQueue
		if c.Interface != "" {
			c.Mode = intercept.ModeCapture
		}
	case string(intercept.ModeNFQueue), string(intercept.ModeCapture):
		c.Mode = intercept.Mode(mode)
	default:
		return nil, fmt.Errorf("--mode: %q, want nfqueue or capture", mode)
	}
	switch c.Mode {
	case intercept.ModeCapture:
		if c.Interface == "" {
			return nil, errors.New("-i/--interface is required with --mode capture")
		}
		if strings.TrimSpace(c.Filter) == "" {
			return nil, errors.New("-F/--filter is required with -i, e.g. -F 'tcp and src port 80'")
		}
		if fs.Changed("queue-num") || fs.Changed("queue-len") || c.FailOpen {
			return nil, errors.New("-q, --queue-len and --fail-open are for nfqueue mode, not capture (-i)")
		}
		if captureBufMiB < 1 || captureBufMiB > 4096 {
			return nil, fmt.Errorf("--capture-buffer: %d MiB out of range 1..4096", captureBufMiB)
		}
		c.CaptureBuffer = captureBufMiB << 20
	case intercept.ModeNFQueue:
		if c.Filter != "" {
			return nil, errors.New("-F/--filter is for capture mode (-i); in nfqueue mode the iptables rule selects the packets")
		}
		if c.AllowForwarding || fs.Changed("capture-buffer") {
			return nil, errors.New("--allow-forwarding and --capture-buffer are for capture mode (-i)")
		}
		if queue < 0 || queue > 65535 {
			return nil, fmt.Errorf("-q/--queue-num: %d out of range 0..65535", queue)
		}
		if queueLen < 1 || queueLen > 1<<20 {
			return nil, fmt.Errorf("--queue-len: %d out of range 1..1048576", queueLen)
		}
		c.Queue, c.QueueLen = uint16(queue), uint32(queueLen)
	}
	if pass != "" {
		for _, s := range strings.Split(pass, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("-x/--pass: %q is not an IP address", strings.TrimSpace(s))
			}
			c.Pass = append(c.Pass, a.Unmap())
		}
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("-p/--port: %d out of range 1..65535", port)
	}
	if bind != "" {
		a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(bind, "["), "]"))
		if err != nil {
			return nil, fmt.Errorf("-b/--bind: %q is not an IP address", bind)
		}
		bind = a.String()
	}
	c.Listen = net.JoinHostPort(bind, strconv.Itoa(port))
	c.Hold = hold
	if hold == 0 {
		c.Hold = -1 // off
	}
	c.StatsInterval = statsEvery
	if statsEvery == 0 {
		c.StatsInterval = -1 // only at exit
	}
	return o, nil
}

// serveMetrics serves /metrics on o.metricsAddr. Run's counters reach it
// through its stats lines (intercept.StatsTap): Run then reports every
// second, and the tap forwards the lines to *log only every
// --stats-interval, as without --metrics. stop closes the server and
// waits for it.
func serveMetrics(o *options, log **slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", o.metricsAddr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	tap := intercept.NewStatsTap(o.cfg.StatsInterval) // negative: only the final line
	*log = slog.New(tap.Handler((*log).Handler()))
	o.cfg.StatsInterval = time.Second
	reg := prometheus.NewRegistry()
	reg.MustRegister(intercept.NewCollector(tap), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	return func() {
		srv.Close()
		wg.Wait()
	}, nil
}
