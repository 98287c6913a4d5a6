package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/stackcopy/stackcopy/internal/cliflag"
	"github.com/stackcopy/stackcopy/transfer"
)

var version = "dev" // set with -ldflags "-X main.version=..."

var errHelp = errors.New("help requested")

type config struct {
	transfers  transfer.Transfers
	pool       *transfer.ClientPool
	percent    int
	inputs     []string
	output     string
	tunName    string
	noRoutes   bool
	speed      float64
	loops      int
	timeout    time.Duration
	turnWait   time.Duration
	noWait     bool
	httpTurns  bool
	mtu        int
	cc         string
	rack       bool
	gso        string
	minRTO     time.Duration
	sendBuf    int
	statsJSON  string
	logFile    string
	verbose    int
	version    bool
	txqueuelen int
	pprofAddr  string
	handshakes int

	live       bool     // -i names interfaces: mirror live traffic
	filter     string   // -F: pcap filter for live capture
	intercepts []string // -s
	channels   int      // -C
	keyFile    string
	copies     int // -n
	portOffset int // -f
	memoryMiB  int // -m
	spillDir   string
	spillMiB   int
	copyPorts  [2]uint16
	pidFile    string
	mss        int  // -D
	onlySYN    bool // -O: false also joins sessions seen mid-stream at their next turn boundary
}

// keyEnv holds the relay key when --key-file is not given.
const keyEnv = "STACKCOPY_RELAY_KEY"

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
-o raw or -o IFACE they can only come back that way.

Sessions seen mid-stream: by default (-O, as in tcpcopy) only sessions
whose SYN was captured are replayed; the others are skipped and counted.
-O=false also replays them from their next turn boundary: the first client
bytes after the server answered everything the client had sent open a new
connection to the target. This suits request/response protocols (HTTP/1.1
keep-alive, redis, memcached); the target misses the connection's earlier
requests and any state they set up (login, SELECT), and an interim answer
such as HTTP's "100 Continue" can make the session start in the middle of
a request body. The summary counts these sessions as joined.

tcpcopy's -a is --speed and -T is --loop; -O means the same as in tcpcopy;
-R, -U, -k, -L, -g, -d are not needed or not supported.

Exit status: 0 every session completed; 3 some sessions did not complete
(see the summary); 1 stackcopy could not do its job; 2 bad usage.
`

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := pflag.NewFlagSet("stackcopy", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	var transfers, clients string
	c.timeout = 120 * time.Second
	c.turnWait = 2 * time.Second
	fs.StringVarP(&transfers, "transfer", "x", "", "what to replay where: [onlineIP:]onlinePort-targetIP:targetPort[,...]")
	fs.StringSliceVarP(&c.inputs, "input", "i", nil, "capture file(s) to replay (pcap or pcapng; Ethernet, Linux SLL/SLL2 or raw IP), or interfaces to capture on live (any = all)")
	fs.StringVarP(&c.output, "output", "o", "tun", "egress: tun, raw (IP_HDRINCL socket), or IFACE[@NEXT-HOP-MAC] (link layer)")
	fs.StringVarP(&c.filter, "filter", "F", "", "live: pcap filter that replaces the one built from -x (compiled by tcpdump)")
	fs.StringSliceVarP(&c.intercepts, "intercepts", "s", nil, "intercept addresses ip[:port] (default port 36524) that relay the target's answers")
	fs.IntVarP(&c.channels, "channels", "C", 1, "connections to each intercept")
	fs.StringVar(&c.keyFile, "key-file", "", "relay key file (mode 0600); default: the "+keyEnv+" environment variable")
	fs.IntVarP(&c.copies, "copies", "n", 1, "replay each session this many times, each copy from a distinct 4-tuple")
	fs.IntVarP(&c.portOffset, "port-offset", "f", 0, "shift captured client ports by this much (several instances on one capture)")
	fs.IntVarP(&c.memoryMiB, "memory", "m", 0, "memory limit in MiB: new sessions are shed (counted) before it is crossed; 0 = none")
	fs.StringVar(&c.spillDir, "spill-dir", defaultSpillDir(), "where a session that falls behind the capture keeps its further bytes (unlinked files; not tmpfs, or they take memory)")
	fs.IntVar(&c.spillMiB, "spill-max", 2048, "MiB all spill files may hold; past it a live session that falls behind is shed (counted), a capture file is read slower; 0 = no spilling (default for files with --speed 0)")
	var copyPorts string
	fs.StringVar(&copyPorts, "copy-ports", "1024-32767", "client ports -n copies take in turn (below the usual ephemeral ranges, so copies do not take real clients' ports)")
	fs.StringVarP(&c.pidFile, "pid-file", "P", "", "write the process ID to this file")
	fs.IntVarP(&c.mss, "mss", "D", 0, "MSS the forged clients advertise (default: from the MTU)")
	fs.BoolVarP(&c.onlySYN, "only-syn", "O", true, "replay only sessions whose SYN was captured; -O=false also joins the others at their next turn boundary")
	fs.StringVar(&c.tunName, "tun", "stackcopy0", "name of the TUN device to create")
	fs.BoolVar(&c.noRoutes, "no-routes", false, "do not route forged client addresses into the TUN (you route them)")
	fs.StringVarP(&clients, "clients", "c", "", "rewrite client addresses onto this pool: IP,IP,... or a.b.c.x (.1-.254)")
	fs.IntVarP(&c.percent, "percentage", "r", 100, "replay this percentage of sessions (stable hash of client ip:port)")
	fs.Float64VarP(&c.speed, "speed", "a", 1, "pace: captured gaps divided by this; 0 = as fast as the target answers")
	fs.IntVarP(&c.loops, "loop", "T", 1, "replay the capture this many times")
	fs.VarP(cliflag.Duration{D: &c.timeout}, "timeout", "t", "end a session with no progress for this long (seconds or 90s, 2m)")
	fs.Var(cliflag.Duration{D: &c.turnWait}, "turn-wait", "longest wait for the target's answer before the next turn is sent anyway")
	fs.BoolVarP(&c.noWait, "no-wait", "W", false, "send each turn without waiting for the target's answer")
	fs.BoolVar(&c.httpTurns, "http-turns", true, "HTTP/1.x sessions: a turn is answered when the target's response is complete (parsed), not by size and silence")
	fs.IntVarP(&c.mtu, "mtu", "M", 1500, "MTU towards the target (the MSS follows)")
	fs.StringVar(&c.cc, "cc", "reno", "congestion control of the forged clients: reno or cubic")
	fs.BoolVar(&c.rack, "rack", true, "RACK loss detection (--rack=false for classic dupack recovery)")
	fs.StringVar(&c.gso, "gso", "coalesce", "segmentation: coalesce (stack sends MSS segments, runs merged for the kernel to cut), host (stack sends 64 KiB super-packets: fast, poor loss recovery), off")
	c.minRTO = 200 * time.Millisecond
	fs.Var(cliflag.Duration{D: &c.minRTO}, "min-rto", "floor of the forged clients' retransmission timeout")
	fs.IntVar(&c.sendBuf, "send-buffer", 4<<20, "largest send buffer per session in bytes (memory per uploading session)")
	fs.IntVar(&c.handshakes, "max-handshakes", 128, "handshakes in flight at once (a burst of new sessions waits its turn)")
	fs.IntVar(&c.txqueuelen, "txqueuelen", 10000, "TUN transmit queue length")
	fs.StringVar(&c.pprofAddr, "pprof", "", "serve Go profiling (net/http/pprof) on this address, e.g. 127.0.0.1:6060")
	fs.StringVar(&c.statsJSON, "stats-json", "", "also write the summary as JSON to this file")
	fs.StringVarP(&c.logFile, "log", "l", "", "log to this file instead of stderr")
	fs.CountVarP(&c.verbose, "verbose", "v", "more logging (-vv for per-session debug)")
	fs.BoolVarP(&c.version, "version", "V", false, "print the version")
	help := fs.BoolP("help", "h", false, "this help")

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *help {
		fmt.Fprint(stderr, usageHead)
		fmt.Fprint(stderr, fs.FlagUsages())
		fmt.Fprint(stderr, usageTail)
		return nil, errHelp
	}
	if c.version {
		return c, nil
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (captures go with -i)", fs.Arg(0))
	}
	if transfers == "" {
		return nil, errors.New("-x/--transfer is required, e.g. -x 80-198.18.2.2:80")
	}
	ts, err := transfer.ParseTransfers(transfers)
	if err != nil {
		return nil, fmt.Errorf("-x: %w", err)
	}
	c.transfers = ts
	if len(c.inputs) == 0 {
		return nil, errors.New("-i/--input is required: a pcap or pcapng file to replay, or an interface to mirror")
	}

	if clients != "" {
		var targets []netip.Addr
		for _, t := range ts {
			targets = append(targets, t.Target.Addr())
		}
		if c.pool, err = transfer.ParseClientPool(clients, targets...); err != nil {
			return nil, fmt.Errorf("-c: %w", err)
		}
	}
	switch {
	case c.percent < 1 || c.percent > 100:
		return nil, fmt.Errorf("-r: %d is not a percentage from 1 to 100", c.percent)
	case c.speed < 0:
		return nil, fmt.Errorf("--speed: %v is negative (0 means as fast as the target answers)", c.speed)
	case c.loops < 1:
		return nil, fmt.Errorf("--loop: %d, want at least 1", c.loops)
	case c.mtu < 576 || c.mtu > 65535:
		return nil, fmt.Errorf("-M: MTU %d out of range 576..65535", c.mtu)
	case c.cc != "reno" && c.cc != "cubic":
		return nil, fmt.Errorf("--cc: %q, want reno or cubic", c.cc)
	case c.handshakes < 1:
		return nil, fmt.Errorf("--max-handshakes: %d, want at least 1", c.handshakes)
	case c.sendBuf < 16<<10:
		return nil, fmt.Errorf("--send-buffer: %d bytes is below 16 KiB", c.sendBuf)
	case len(c.tunName) == 0 || len(c.tunName) > 15 || strings.ContainsAny(c.tunName, "/ "):
		return nil, fmt.Errorf("--tun: %q is not a valid interface name (1-15 characters)", c.tunName)
	}
	if c.gso != "coalesce" && c.gso != "host" && c.gso != "off" {
		return nil, fmt.Errorf("--gso: %q, want coalesce, host or off", c.gso)
	}
	if c.live, err = classifyInputs(c.inputs); err != nil {
		return nil, fmt.Errorf("-i: %w", err)
	}
	switch {
	case c.filter != "" && !c.live:
		return nil, errors.New("-F: a capture filter applies to live capture (-i IFACE), not to files")
	case c.output != "tun" && len(c.intercepts) == 0:
		return nil, fmt.Errorf("-o %s: the target's answers can only come back through intercept: give -s", c.output)
	case c.output == "":
		return nil, errors.New("-o: empty egress")
	case c.channels < 1 || c.channels > 64:
		return nil, fmt.Errorf("-C: %d channels, want 1..64", c.channels)
	case c.copies < 1 || c.copies > 1023:
		return nil, fmt.Errorf("-n: %d copies, want 1..1023", c.copies)
	case c.portOffset < 0 || c.portOffset > 64511:
		return nil, fmt.Errorf("-f: port offset %d, want 0..64511", c.portOffset)
	case c.memoryMiB < 0:
		return nil, fmt.Errorf("-m: %d MiB is negative", c.memoryMiB)
	case c.spillMiB < 0:
		return nil, fmt.Errorf("--spill-max: %d MiB is negative", c.spillMiB)
	case c.mss != 0 && (c.mss < 88 || c.mss > c.mtu-40):
		return nil, fmt.Errorf("-D: MSS %d, want 88..%d (MTU - 40)", c.mss, c.mtu-40)
	}
	if !c.live && c.speed == 0 && !fs.Changed("spill-max") {
		// Unpaced replay of a file: nothing is early or late, so the
		// reader waits for a slow session rather than copying the capture
		// to disk a second time (a 512 MiB upload went 440 MB into its
		// spill file). Paced replay spills, so one slow session does not
		// delay the others' captured timing.
		c.spillMiB = 0
	}
	if c.spillMiB > 0 {
		// Found out now, not when the first session falls behind.
		f, err := os.CreateTemp(c.spillDir, "stackcopy-spill-check-*")
		if err != nil {
			return nil, fmt.Errorf("--spill-dir: %w (or --spill-max 0 to spill nothing)", err)
		}
		f.Close()
		os.Remove(f.Name())
	}
	if c.copyPorts, err = parsePortRange(copyPorts); err != nil {
		return nil, fmt.Errorf("--copy-ports: %w", err)
	}
	if c.live && c.loops != 1 {
		return nil, errors.New("--loop: live traffic cannot be looped")
	}
	return c, nil
}

// defaultSpillDir is $TMPDIR if set, else /var/tmp, which is on disk where
// /tmp is often tmpfs (memory), else the system's temporary directory.
func defaultSpillDir() string {
	if d := os.Getenv("TMPDIR"); d != "" {
		return d
	}
	if st, err := os.Stat("/var/tmp"); err == nil && st.IsDir() {
		return "/var/tmp"
	}
	return os.TempDir()
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

// classifyInputs says whether -i names capture files (false) or network
// interfaces (true); mixing both is an error.
func classifyInputs(inputs []string) (live bool, err error) {
	files, ifaces := 0, 0
	for _, in := range inputs {
		if st, err := os.Stat(in); err == nil && !st.IsDir() {
			files++
			continue
		}
		if in == "any" {
			ifaces++
			continue
		}
		if _, err := net.InterfaceByName(in); err == nil {
			ifaces++
			continue
		}
		if strings.ContainsAny(in, "/.") {
			files++ // a path: opening it will say what is wrong
			continue
		}
		return false, fmt.Errorf("%s: neither a capture file nor a network interface", in)
	}
	if files > 0 && ifaces > 0 {
		return false, errors.New("capture files and interfaces cannot be mixed")
	}
	return ifaces > 0, nil
}
