// Command bench measures stackcopy side by side with kernel TCP in a
// two-namespace lab and prints one table:
//
//	replay host 198.18.2.1/24 ──veth── target 198.18.2.2/24
//	(stackcopy, or the kernel      (the bench's own sink/http servers;
//	 TCP client roles)              routes 198.18.1.0/24 and 198.18.3.0/24
//	                                back via 198.18.2.1)
//
// Each stackcopy figure is measured against the same workload done by a
// kernel TCP client in the replay namespace over the same veth to the same
// target server, in the same run:
//
//   - upload: one session uploading 1 GiB (stackcopy --speed 0 replaying a
//     synthesized capture vs a kernel client writing the same bytes); the
//     target's sink measures accept → EOF for both. Median of -runs,
//     interleaved.
//   - short: 3000 short HTTP-like sessions all at once; sessions/s and CPU
//     per session from the process's rusage. Median of -runs, interleaved.
//   - idle: memory per idle session at 10,000 sessions: stackcopy's VmRSS
//     at 10,000 minus at 1 session; for the kernel client its VmRSS delta
//     plus the machine's Slab growth beyond what the stackcopy run caused
//     (the target's own sockets).
//   - live: live mirroring in the traditional architecture (nginx +
//     stackcopy live on an online host, nginx + intercept on the
//     target) at 250..16000 requests/s; the highest rate with nothing lost
//     and the CPU per request and per relayed answer (live.go). No kernel
//     comparison.
//   - liveshort: the same lab with a connection per request: CPU per
//     mirrored request at paced rates, and how much longer 10,000 short
//     requests take the online clients with the mirror than without
//     (liveshort.go).
//   - lossy: a 128 MiB HTTP upload over a path with 5% random loss both
//     ways at the target, in the live lab with the recorder as the target
//     (lossy.go): curl on the online host straight to the target (what
//     kernel TCP achieves over that path) vs the same upload mirrored live
//     by stackcopy; MB/s until the target has the whole body (sha256
//     checked), RTOs, retransmits, spill peak and capture drops. Median of
//     -runs, interleaved.
//   - memory: stackcopy's peak RSS replaying 100k and 1M short sessions
//     at --speed 0 (memory.go), against 256 MiB. No kernel comparison.
//
// The bench re-executes itself in the namespaces for its helper roles
// (-role sink|http|upload|short|idle|liveload), so it needs nothing but
// stackcopy (intercept for live and lossy, the recorder and curl for
// lossy).
// It needs root. Run it as `make bench`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// config is the bench's command line.
type config struct {
	stackcopy string
	recorder  string
	intercept string
	// tcpcopy and tcIntercept are TCPCopy's binaries, for the live
	// workload's side-by-side peer; empty: no peer.
	tcpcopy, tcIntercept string
	only                 map[string]bool
	scFlags              []string // added to every stackcopy run (-stackcopy-flags), for A/B runs
	quick                bool
	runs                 int

	uploadBytes int64
	lossyBytes  int64
	shortN      int
	idleN       int
	idleFin     time.Duration
	budget      time.Duration
}

func main() {
	// Helper roles run inside the lab namespaces: bench -role NAME flags...
	if len(os.Args) > 2 && (os.Args[1] == "-role" || os.Args[1] == "--role") {
		os.Exit(runRole(os.Args[2], os.Args[3:]))
	}
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	c := &config{}
	fs.StringVar(&c.stackcopy, "stackcopy", "bin/stackcopy", "stackcopy binary")
	fs.StringVar(&c.recorder, "recorder", "bin/recorder", "recorder binary (the lossy workload's online and target servers)")
	fs.StringVar(&c.intercept, "intercept", "bin/intercept", "intercept binary (the live and lossy workloads)")
	fs.StringVar(&c.tcpcopy, "tcpcopy", "", "TCPCopy's tcpcopy binary: the live and liveshort workloads also run TCPCopy side by side (needs -tcpcopy-intercept; see netns-tests/tcpcopy-peer/build.sh)")
	fs.StringVar(&c.tcIntercept, "tcpcopy-intercept", "", "TCPCopy's intercept binary, for -tcpcopy")
	only := fs.String("only", "", "run only these workloads: upload, short, idle, live, liveshort, lossy, memory (comma-separated)")
	scFlags := fs.String("stackcopy-flags", "", "flags added to every stackcopy run, space-separated (e.g. \"--gso host\"), to compare settings")
	fs.BoolVar(&c.quick, "quick", false, "smaller sizes for a smoke run: 64 MiB upload, 300 short sessions, 1000 idle sessions, 32 MiB lossy upload")
	fs.IntVar(&c.runs, "runs", 3, "runs per side for upload, short and lossy (interleaved; the median is printed)")
	fs.DurationVar(&c.budget, "budget", 24*time.Minute, "stop everything after this long (the memory workload alone replays 1.1M sessions: about 5 minutes)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: bench [flags]   (as root; `make bench`)\n\n"+
			"Measures stackcopy against kernel TCP in a network-namespace lab.\n"+
			"Internal: bench -role sink|http|upload|short|idle|liveload ... runs a helper role.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.runs < 1 || c.runs > 9 {
		return nil, fmt.Errorf("-runs %d: want 1..9", c.runs)
	}
	if (c.tcpcopy == "") != (c.tcIntercept == "") {
		return nil, errors.New("-tcpcopy and -tcpcopy-intercept go together")
	}
	c.scFlags = strings.Fields(*scFlags)
	c.only = map[string]bool{}
	if *only != "" {
		for _, w := range strings.Split(*only, ",") {
			switch w = strings.TrimSpace(w); w {
			case "upload", "short", "idle", "live", "liveshort", "lossy", "memory":
				c.only[w] = true
			default:
				return nil, fmt.Errorf("-only %q: want upload, short, idle, live, liveshort, lossy or memory", w)
			}
		}
	}
	c.uploadBytes, c.shortN, c.idleN, c.idleFin, c.lossyBytes = 1<<30, 3000, 10000, 40*time.Second, 128<<20
	if c.quick {
		c.uploadBytes, c.shortN, c.idleN, c.lossyBytes = 64<<20, 300, 1000, 32<<20
	}
	return c, nil
}

func (c *config) wants(w string) bool { return len(c.only) == 0 || c.only[w] }

// Lab addresses. Only 198.18.0.0/15 is used.
const (
	replayPrefix = "198.18.2.1/24"
	targetPrefix = "198.18.2.2/24"
	clientsNet   = "198.18.1.0/24" // forged (captured) clients, routed back to the replay host
	kernelNet    = "198.18.3.0/24" // the kernel idle client's source addresses
	uploadPort   = 9000
	httpPort     = 9080
)

func targetAddr() netip.Addr { return netip.MustParsePrefix(targetPrefix).Addr() }

// kernelClients are the kernel idle client's 100 source addresses.
func kernelClients() []netip.Addr {
	out := make([]netip.Addr, 100)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{198, 18, 3, byte(10 + i)})
	}
	return out
}

// bench is one run of the benchmark.
type bench struct {
	cfg      *config
	self     string
	progress io.Writer

	lab            *lab.Lab
	dir            string
	replay, target *lab.Host
	replayIf       string
	targetIf       string

	uploadLog    string
	uploadStatus string
	httpStatus   string
	httpSink     *lab.Proc
}

// row is one line of the result table.
type row struct {
	workload, sc, kernel, ratio, target, verdict string
}

// result is what one workload reports.
type result struct {
	rows    []row
	details []string
}

func run(cfg *config, stdout, stderr io.Writer) error {
	if err := lab.CheckRoot(); err != nil {
		return fmt.Errorf("needs root (network namespaces, veth, TUN): %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("own executable: %w", err)
	}
	if err := resolveBinaries(&cfg.stackcopy); err != nil {
		return fmt.Errorf("-stackcopy: %w", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), cfg.budget)
	defer cancel()
	l, err := lab.New("bench")
	if err != nil {
		return err
	}
	defer func() {
		if err := l.Close(); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
		}
	}()
	b := &bench{cfg: cfg, self: self, progress: stderr, lab: l, dir: l.Dir()}
	start := time.Now()
	if err := b.setup(); err != nil {
		return fmt.Errorf("lab setup: %w", err)
	}
	var results []result
	var failed []string
	for _, w := range []struct {
		name string
		fn   func(context.Context) (result, error)
	}{{"upload", b.upload}, {"short", b.short}, {"idle", b.idle}, {"live", b.live}, {"liveshort", b.liveShort}, {"lossy", b.lossy}, {"memory", b.memory}} {
		if !cfg.wants(w.name) {
			continue
		}
		b.logf("== %s", w.name)
		res, err := w.fn(ctx)
		if err != nil {
			failed = append(failed, w.name)
			res.rows = append(res.rows, row{workload: w.name, sc: "ERROR", verdict: "FAIL"})
			res.details = append(res.details, fmt.Sprintf("%s: %v", w.name, err))
			b.logf("%s: %v", w.name, err)
		}
		results = append(results, res)
	}
	printTable(stdout, cfg, results, time.Since(start))
	if len(failed) > 0 {
		return fmt.Errorf("workloads failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// resolveBinaries makes each program path absolute (the lab runs them from
// other directories) and checks that the program is there.
func resolveBinaries(paths ...*string) error {
	for _, p := range paths {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("%s: %w", *p, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("%w (run make build)", err)
		}
		*p = abs
	}
	return nil
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "bench: "+format+"\n", args...)
}

// setup builds the lab: hosts, veth, routes, sysctls, kernel client
// addresses, and starts the two target servers.
func (b *bench) setup() error {
	hosts, err := b.lab.NewHosts("replay", "target")
	if err != nil {
		return err
	}
	b.replay, b.target = hosts[0], hosts[1]
	if b.replayIf, b.targetIf, err = b.lab.ForwardPath(b.replay, netip.MustParsePrefix(replayPrefix), b.target, netip.MustParsePrefix(targetPrefix),
		netip.MustParsePrefix(clientsNet), netip.MustParsePrefix(kernelNet)); err != nil {
		return err
	}
	// Both sides face the same target: a backlog that takes 10,000
	// connections at once.
	for _, kv := range [][2]string{{"net.core.somaxconn", "16384"}, {"net.ipv4.tcp_max_syn_backlog", "16384"}} {
		if err := b.target.Sysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	// The kernel idle client's addresses: 198.18.3.10-109/32 on the replay
	// veth (not the forged prefix 198.18.1.0/24, which stackcopy routes into
	// its TUN).
	var kc []netip.Prefix
	for _, a := range kernelClients() {
		kc = append(kc, netip.PrefixFrom(a, 32))
	}
	if err := b.replay.AddAddrs(b.replayIf, kc...); err != nil {
		return err
	}

	b.uploadLog = filepath.Join(b.dir, "upload-sink.jsonl")
	b.uploadStatus = filepath.Join(b.dir, "upload-sink.status")
	b.httpStatus = filepath.Join(b.dir, "http-sink.status")
	life := (b.cfg.budget + time.Minute).String()
	uploadListen := netip.AddrPortFrom(targetAddr(), uploadPort)
	httpListen := netip.AddrPortFrom(targetAddr(), httpPort)
	if _, err := b.target.StartServer(uploadListen, b.self, "-role", "sink", "-listen", uploadListen.String(), "-log", b.uploadLog, "-status", b.uploadStatus, "-life", life); err != nil {
		return err
	}
	if b.httpSink, err = b.target.StartServer(httpListen, b.self, "-role", "http", "-listen", httpListen.String(), "-status", b.httpStatus, "-life", life); err != nil {
		return err
	}
	b.logf("lab %s: replay %s (%s) ── target %s (%s); kernel clients 198.18.3.10-109 on %s",
		b.lab.Prefix(), replayPrefix, b.replayIf, targetPrefix, b.targetIf, b.replayIf)
	return nil
}

// printTable writes the result table and the details.
func printTable(w io.Writer, cfg *config, results []result, took time.Duration) {
	const format = "%-34s %-17s %-17s %-8s %-11s %s\n"
	fmt.Fprintln(w)
	fmt.Fprintf(w, format, "workload", "stackcopy", "kernel TCP", "ratio", "target", "")
	for _, r := range results {
		for _, x := range r.rows {
			fmt.Fprintf(w, format, x.workload, x.sc, x.kernel, x.ratio, x.target, x.verdict)
		}
	}
	fmt.Fprintln(w)
	for _, r := range results {
		for _, d := range r.details {
			fmt.Fprintln(w, d)
		}
	}
	fmt.Fprintf(w, "\nbench took %.0fs (quick=%v, runs=%d)\n", took.Seconds(), cfg.quick, cfg.runs)
}
