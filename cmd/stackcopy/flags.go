package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/stackcopy/stackcopy/internal/cliflag"
	"github.com/stackcopy/stackcopy/internal/cores"
	"github.com/stackcopy/stackcopy/mirror"
	"github.com/stackcopy/stackcopy/transfer"
)

var version = "dev" // set with -ldflags "-X main.version=..."

var errHelp = errors.New("help requested")

// config is the command line: the engine's configuration and what only
// the command does with flags.
type config struct {
	engine mirror.Config

	onlySYN    bool // -O, tcpcopy's spelling of engine.JoinMidStream (inverted)
	spillMiB   int  // --spill-max, in the flag's unit
	memoryMiB  int  // -m, in the flag's unit
	statsJSON  string
	logFile    string
	verbose    int
	version    bool
	pprofAddr  string
	cpuProfile string
	pidFile    string
	cores      int // --cores; 0: every core

	metricsAddr   string        // --metrics: serve Prometheus /metrics here
	metricsLinger time.Duration // keep serving after the run, for a last scrape
	statsInterval time.Duration // not a terminal: a stats line this often (0: none)
	progress      bool          // on a terminal: the live progress line
}

const usageHead = `Usage: stackcopy -x TRANSFER -i CAPTURE|IFACE [options]

Replays every TCP session of a pcap/pcapng capture, or mirrors live traffic
captured on network interfaces, to a test server. Each
session is a real TCP connection opened by a userspace TCP stack (gVisor)
from the session's original client address, so the target sees the real
client IPs, real handshakes, windows, SACK and retransmissions, and any
upload size. Packets leave through a TUN device; stackcopy routes the forged
client addresses into it so the target's answers come back to the stack.

Examples:
  # replay web traffic captured on port 80 to a test server
  stackcopy -x 80-198.18.2.2:80 -i capture.pcap

  # port 8080 on the target, twice the captured pace, three passes
  stackcopy -x 80-198.18.2.2:8080 -i capture.pcap --speed 2 --loop 3

  # only traffic that went to 198.18.1.1:6379; clients folded onto a pool
  stackcopy -x 198.18.1.1:6379-198.18.2.3:6379 -c 198.18.5.x -i redis.pcapng

  # as fast as the target answers, half of the sessions, no turn waiting
  stackcopy -x 80-198.18.2.2:80 -i capture.pcap --speed 0 -r 50 -W

  # live, traditional: capture on eth0, answers relayed by intercept on the
  # target (key in STACKCOPY_RELAY_KEY or --key-file), raw egress, 3 copies
  stackcopy -x 80-198.18.2.2:80 -i eth0 -s 198.18.2.2 -o raw -n 3

  # live, advanced: answers caught by intercept on an assistant host
  stackcopy -x 80-198.18.2.2:80 -i eth0 -s 198.18.2.3:36524 -C 2 -o eth0

Options:
`

const usageTail = `
Turns: a session's client bytes are cut into turns wherever the captured
server spoke in between. A turn is sent only after the target answered the
previous one (for HTTP/1.x: its response is complete, parsed; otherwise as
many bytes as the captured answer, or a shorter answer followed by 20 ms of
silence; or --turn-wait passed), so request/response
protocols are not pipelined and server-first protocols (SMTP, MySQL) wait
for the target's greeting. -W turns this off.

The target host must route the forged client addresses back to this host,
e.g. on the target: ip route add 198.18.1.0/24 via <this host>. This host
needs net.ipv4.ip_forward=1; stackcopy checks and names the fix.

Falling behind: a session whose target takes its bytes slower than the
client sent them keeps 4 MiB in memory and the rest in a spill file
(--spill-dir, unlinked, --spill-max in all), so one slow session never
holds up the capture of the others. Past --spill-max a live session is
shed (reset, counted as overflowed); a capture file is read slower instead.
A file replayed with --speed 0 does not spill unless --spill-max is given:
the reader just waits.

Live mode: when -i names interfaces (or "any"), stackcopy captures with
AF_PACKET and a kernel filter built from -x (or -F), mirrors sessions as they
happen (sessions already open when it starts: see -O below), and runs
until SIGINT/SIGTERM; then sessions get one turn to finish. With -s the
target's answers come back through intercept (see 'intercept --help'); with
-o raw or -o IFACE they can only come back that way. Live, stackcopy runs
on one core unless --cores (or $GOMAXPROCS) says otherwise: that bounds
what mirroring takes from the online service, and on one core Go hands
packets between goroutines more cheaply (a third less CPU per request in
make bench, keeping up at 16,000 requests/s); raise it when one core is
saturated (capture drops, sessions shed).

Replaying capture files, while its live heap is under 32 MiB, stackcopy's
garbage collector waits for 32 MiB of new allocations (Go's default is the
live heap's size, at least 4 MiB); $GOGC, or -m, keeps Go's default, as
live mirroring does.

Sessions seen mid-stream: by default (-O, as in tcpcopy) only sessions
whose SYN was captured are replayed; the others are skipped and counted.
-O=false also replays them from their next turn boundary: the first client
bytes after the server answered everything the client had sent open a new
connection to the target. This suits request/response protocols (HTTP/1.1
keep-alive, redis, memcached); the target misses the connection's earlier
requests and any state they set up (login, SELECT), and an interim answer
such as HTTP's "100 Continue" can make the session start in the middle of
a request body. The summary counts these sessions as joined.

Comparison (--compare, --compare-json, --compare-html): every request
replayed is paired with production's answer (the captured server's bytes)
and the target's, message by message for HTTP/1, HTTP/2, Redis,
memcached, MySQL and PostgreSQL (other protocols: whole answers, by
length and hash), and compared field by field: status, headers (Date and
the like ignored), JSON bodies by structure, reply types and values,
result-set columns and rows, error codes. Requests are grouped by endpoint
(method and path template, command, statement fingerprint); the report
counts identical and different answers per group and field, answers only
one side gave, and production's and the target's latency. --baseline
replays the same traffic to a second copy of production's build: fields
that differ between production and that copy (timestamps, generated ids)
are reported as noise, not as changes. Live, the intercept must relay
whole answers (intercept --full-payload).

tcpcopy's -a is --speed and -T is --loop; -O means the same as in tcpcopy;
-R, -U, -k, -L, -g, -d are not needed or not supported.

Watching a run: on a terminal a progress line (sessions done of the
total, rate, bytes, turns, lag behind the captured schedule, ETA; live:
rates, open sessions, kernel drops, relay state) is redrawn every second;
otherwise a "stats" line goes to the log every --stats-interval. SIGUSR1
prints the current stats at once. --metrics serves Prometheus metrics
(stackcopy_*) from the same counters.

Signals: SIGINT, SIGTERM and SIGHUP stop the run the same way: a replay of
files stops reading and ends its sessions (counted as interrupted, the rest
as never started); live mirroring stops capturing and gives sessions one
turn to finish. The summary, --stats-json and the pid file's removal follow.

Exit status:
  0  every session asked for was replayed and completed
  1  stackcopy could not do its job (setup, input, target, relay)
  2  bad usage: flags, or an output path (--stats-json, -l, -P, --tun)
     that cannot be used, found before any work starts
  3  work was lost: sessions did not complete (any reason in the
     summary), were shed by -m, or never started because a signal
     interrupted the replay
`

func parseFlags(args []string, helpOut io.Writer) (*config, error) {
	def := mirror.DefaultConfig()
	c := &config{engine: def}
	e := &c.engine
	fs := pflag.NewFlagSet("stackcopy", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	var transfers, clients, baseline string
	fs.StringVarP(&transfers, "transfer", "x", "", "what to replay where: [onlineIP:]onlinePort-targetIP:targetPort[,...]")
	fs.StringSliceVarP(&e.Inputs, "input", "i", nil, "capture file(s) to replay (pcap or pcapng; Ethernet, Linux SLL/SLL2 or raw IP), or interfaces to capture on live (any = all)")
	fs.StringVarP(&e.Output, "output", "o", def.Output, "egress: tun, raw (IP_HDRINCL socket), or IFACE[@NEXT-HOP-MAC] (link layer)")
	fs.StringVarP(&e.Filter, "filter", "F", "", "live: pcap filter that replaces the one built from -x (compiled by tcpdump)")
	captureMiB := fs.Int("capture-buffer", def.CaptureBuffer>>20, "live: capture ring per interface in MiB: the burst the kernel holds while stackcopy is busy (drops are counted and logged)")
	fs.StringSliceVarP(&e.Intercepts, "intercepts", "s", nil, "intercept addresses ip[:port] (default port 36524) that relay the target's answers")
	fs.IntVarP(&e.Channels, "channels", "C", def.Channels, "connections to each intercept")
	fs.StringVar(&e.KeyFile, "key-file", "", "relay key file (mode 0600); default: the "+def.KeyEnv+" environment variable")
	fs.IntVarP(&e.Copies, "copies", "n", def.Copies, "replay each session this many times, each copy from a distinct 4-tuple")
	fs.IntVarP(&e.PortOffset, "port-offset", "f", def.PortOffset, "shift captured client ports by this much (several instances on one capture)")
	fs.IntVarP(&c.memoryMiB, "memory", "m", int(def.MemoryLimit>>20), "memory limit in MiB: new sessions are shed (counted) before it is crossed; 0 = none")
	fs.StringVar(&e.SpillDir, "spill-dir", def.SpillDir, "where a session that falls behind the capture keeps its further bytes (unlinked files; not tmpfs, or they take memory)")
	fs.IntVar(&c.spillMiB, "spill-max", int(def.SpillMax>>20), "MiB all spill files may hold; past it a live session that falls behind is shed (counted), a capture file is read slower; 0 = no spilling (default for files with --speed 0)")
	var copyPorts string
	fs.StringVar(&copyPorts, "copy-ports", fmt.Sprintf("%d-%d", def.CopyPorts[0], def.CopyPorts[1]), "client ports -n copies take in turn (below the usual ephemeral ranges, so copies do not take real clients' ports)")
	fs.StringVarP(&c.pidFile, "pid-file", "P", "", "write the process ID to this file")
	fs.IntVarP(&e.MSS, "mss", "D", def.MSS, "MSS the forged clients advertise (default: from the MTU)")
	fs.BoolVarP(&c.onlySYN, "only-syn", "O", !def.JoinMidStream, "replay only sessions whose SYN was captured; -O=false also joins the others at their next turn boundary")
	fs.StringVar(&e.TUNName, "tun", def.TUNName, "name of the TUN device to create")
	fs.BoolVar(&e.NoRoutes, "no-routes", def.NoRoutes, "do not route forged client addresses into the TUN (you route them)")
	fs.StringVarP(&clients, "clients", "c", "", "rewrite client addresses onto this pool: IP,IP,... or a.b.c.x (.1-.254)")
	fs.IntVarP(&e.Percent, "percentage", "r", def.Percent, "replay this percentage of sessions (stable hash of client ip:port)")
	fs.Float64VarP(&e.Speed, "speed", "a", def.Speed, "pace: captured gaps divided by this; 0 = as fast as the target answers")
	fs.IntVarP(&e.Loops, "loop", "T", def.Loops, "replay the capture this many times")
	fs.VarP(cliflag.Duration{D: &e.Idle}, "timeout", "t", "end a session with no progress for this long (seconds or 90s, 2m)")
	fs.Var(cliflag.Duration{D: &e.TurnWait}, "turn-wait", "longest wait for the target's answer before the next turn is sent anyway")
	fs.BoolVarP(&e.NoWait, "no-wait", "W", def.NoWait, "send each turn without waiting for the target's answer")
	fs.BoolVar(&e.NoOrder, "no-order", def.NoOrder, "open each session at its captured time; by default, when pacing, a session opens once the target began to answer what production had answered before its SYN (at most --turn-wait)")
	fs.BoolVar(&e.HTTPTurns, "http-turns", def.HTTPTurns, "HTTP/1.x sessions: a turn is answered when the target's response is complete (parsed), not by size and silence")
	fs.StringVar(&e.Protocol, "protocol", def.Protocol, "protocol turns are framed by: "+strings.Join(mirror.ProtocolNames(), ", ")+" (auto: per session, from its first bytes and port)")
	fs.IntVarP(&e.MTU, "mtu", "M", def.MTU, "MTU towards the target (the MSS follows)")
	fs.StringVar(&e.CongestionControl, "cc", def.CongestionControl, "congestion control of the forged clients: reno or cubic")
	fs.BoolVar(&e.RACK, "rack", def.RACK, "RACK loss detection (--rack=false for classic dupack recovery)")
	fs.StringVar(&e.GSO, "gso", def.GSO, "segmentation: auto (host on a TUN, off otherwise), host (stack sends 64 KiB super-packets for the kernel or the wire to cut), coalesce (stack sends MSS segments, runs merged for the kernel to cut), off")
	fs.Var(cliflag.Duration{D: &e.MinRTO}, "min-rto", "floor of the forged clients' retransmission timeout (what a lone segment waits, as a target may delay its ACK)")
	fs.Var(cliflag.Duration{D: &e.FlightMinRTO}, "flight-min-rto", "floor of that timeout while more than one full-sized segment is unacknowledged (the target ACKs those at once); 0: --min-rto everywhere")
	fs.Var(cliflag.Duration{D: &e.TimeWait}, "time-wait", "how long a forged client that closed first keeps its 4-tuple, answering the target's retransmitted FIN (memory: about 8 KiB per session closed in that time)")
	fs.BoolVar(&e.QuickACK, "quick-ack", def.QuickACK, "acknowledge the target's data at once (default: delay the ACK up to 40 ms, as a Linux client does, so the next request carries it)")
	fs.IntVar(&e.SendBuffer, "send-buffer", def.SendBuffer, "largest send buffer per session in bytes (memory per uploading session)")
	fs.IntVar(&e.MaxHandshakes, "max-handshakes", def.MaxHandshakes, "handshakes in flight at once (a burst of new sessions waits its turn)")
	fs.IntVar(&e.TxQueueLen, "txqueuelen", def.TxQueueLen, "TUN transmit queue length")
	fs.BoolVar(&e.Compare, "compare", def.Compare, "compare the target's answers with production's (from the capture), message by message, and print what changed at the end")
	fs.StringVar(&e.CompareJSON, "compare-json", "", "write the comparison report as JSON to this file (implies --compare)")
	fs.StringVar(&e.CompareHTML, "compare-html", "", "write the comparison report as one self-contained HTML page to this file (implies --compare)")
	fs.StringVar(&baseline, "baseline", "", "also replay every session to a copy of production's build, HOST:PORT (or per online port, in -x syntax): what differs between production and it is noise, not a regression (implies --compare)")
	fs.StringArrayVar(&e.CompareIgnore, "compare-ignore", nil, "ignore rule, repeatable: header:NAME, json:PATH, field:GLOB or regex:RE, optionally scoped to groups as GROUP-GLOB::RULE")
	fs.StringVar(&e.CompareRules, "compare-rules", "", "file of ignore rules, one per line ('#' comments)")
	fs.IntVar(&e.CompareSamples, "compare-samples", def.CompareSamples, "samples kept per group in the comparison report")
	fs.IntVar(&e.CompareBody, "compare-body", def.CompareBody, "bodies and values up to this many bytes are compared by content (JSON by structure), longer ones by length and hash")
	fs.BoolVar(&e.CompareUnordered, "compare-unordered-arrays", def.CompareUnordered, "compare JSON arrays regardless of the order of their elements")
	fs.BoolVar(&e.CompareSecrets, "compare-show-secrets", def.CompareSecrets, "keep Authorization, Cookie and Set-Cookie values and passwords in the report's samples (redacted by default)")
	fs.StringVar(&c.pprofAddr, "pprof", "", "serve Go profiling (net/http/pprof) on this address, e.g. 127.0.0.1:6060")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof; make bench splits it by stage)")
	fs.IntVar(&c.cores, "cores", 0, "cores to run on at once (GOMAXPROCS); default: 1 live (see below), every core for capture files, or $GOMAXPROCS when set")
	fs.StringVar(&c.statsJSON, "stats-json", "", "also write the summary as JSON to this file (created before work starts)")
	fs.StringVar(&c.metricsAddr, "metrics", "", "serve Prometheus metrics on http://ADDR/metrics, e.g. 127.0.0.1:9464")
	fs.Var(cliflag.Duration{D: &c.metricsLinger}, "metrics-linger", "keep serving --metrics this long after the run, so a last scrape sees the final counts")
	c.statsInterval = 10 * time.Second
	fs.Var(cliflag.Duration{D: &c.statsInterval}, "stats-interval", "when stderr is not a terminal, log a stats line this often (0: never; SIGUSR1: at once)")
	fs.BoolVar(&c.progress, "progress", true, "on a terminal, show a live progress line on stderr")
	fs.StringVarP(&c.logFile, "log", "l", "", "log to this file instead of stderr")
	fs.CountVarP(&c.verbose, "verbose", "v", "more logging (-vv for per-session debug)")
	fs.BoolVarP(&c.version, "version", "V", false, "print the version")
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
	if c.version {
		return c, nil
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (captures go with -i)", fs.Arg(0))
	}
	var err error
	if transfers != "" {
		if e.Transfers, err = transfer.ParseTransfers(transfers); err != nil {
			return nil, fmt.Errorf("-x: %w", err)
		}
	}
	if baseline != "" {
		if e.Baseline, err = parseBaseline(baseline, e.Transfers); err != nil {
			return nil, fmt.Errorf("--baseline: %w", err)
		}
	}
	if clients != "" && len(e.Transfers) > 0 {
		var targets []netip.Addr
		for _, t := range e.Transfers {
			targets = append(targets, t.Target.Addr())
		}
		if e.Pool, err = transfer.ParseClientPool(clients, targets...); err != nil {
			return nil, fmt.Errorf("-c: %w", err)
		}
	}
	if e.Live, err = mirror.LiveInputs(e.Inputs); err != nil {
		return nil, fmt.Errorf("-i: %w", err)
	}
	if !fs.Changed("cores") && e.Live {
		c.cores = cores.Default(1)
	}
	if err := cores.Check(c.cores); err != nil {
		return nil, err
	}
	if e.CopyPorts, err = parsePortRange(copyPorts); err != nil {
		return nil, fmt.Errorf("--copy-ports: %w", err)
	}
	switch {
	case c.memoryMiB < 0:
		return nil, fmt.Errorf("-m: %d MiB is negative", c.memoryMiB)
	case c.spillMiB < 0:
		return nil, fmt.Errorf("--spill-max: %d MiB is negative", c.spillMiB)
	}
	if !e.Live && e.Speed == 0 && !fs.Changed("spill-max") {
		// Unpaced replay of a file: nothing is early or late, so the
		// reader waits for a slow session rather than copying the capture
		// to disk a second time (a 512 MiB upload went 440 MB into its
		// spill file). Paced replay spills, so one slow session does not
		// delay the others' captured timing.
		c.spillMiB = 0
	}
	e.SpillMax = int64(c.spillMiB) << 20
	e.CaptureBuffer = min(*captureMiB, 1<<30) << 20 // Validate judges it; min keeps the shift from wrapping
	e.MemoryLimit = uint64(c.memoryMiB) << 20
	e.JoinMidStream = !c.onlySYN
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// parseBaseline parses --baseline: HOST:PORT for every online server of
// -x, or a list in -x syntax (online-baseline) to give each its own.
func parseBaseline(s string, xs transfer.Transfers) (transfer.Transfers, error) {
	if strings.Contains(s, "-") {
		return transfer.ParseTransfers(s)
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("%q: want HOST:PORT, or ONLINE-HOST:PORT[,...] as -x", s)
	}
	out := make(transfer.Transfers, 0, len(xs))
	for _, x := range xs {
		out = append(out, transfer.Transfer{Online: x.Online, Target: ap})
	}
	return out, nil
}

// parsePortRange parses LO-HI (1..65535, LO <= HI).
func parsePortRange(s string) ([2]uint16, error) {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		return [2]uint16{}, fmt.Errorf("%q: want LO-HI, e.g. 1024-32767", s)
	}
	var r [2]uint16
	for i, p := range []string{lo, hi} {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return [2]uint16{}, fmt.Errorf("%q: %q is not a port 1..65535", s, p)
		}
		r[i] = uint16(n)
	}
	if r[0] > r[1] {
		return [2]uint16{}, fmt.Errorf("%q: the range is empty", s)
	}
	return r, nil
}
