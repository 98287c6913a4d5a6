package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	check "github.com/stackcopy/stackcopy/internal/doctor"
	"github.com/stackcopy/stackcopy/mirror"
	"github.com/stackcopy/stackcopy/transfer"
)

const doctorUsage = `Usage: stackcopy doctor -x TRANSFER -i CAPTURE|IFACE [-o EGRESS] [-s INTERCEPTS --key-file FILE] [run flags...]

Checks, without changing anything, what a stackcopy run with these flags
needs from this host: capabilities, the TUN driver and name, routes to the
targets, net.ipv4.ip_forward, rp_filter, the capture interfaces and their
offloads, the -F filter, the relay key and its mode, a real authenticated
handshake with every intercept (-s), and the spill directory. Prints one
line per check (ok, info, warn, FAIL) with the command that fixes it.

Put "doctor" in front of the command line of a run: flags the doctor does
not look at are accepted and ignored.

Exit status: 0 nothing found that would stop the run (warnings allowed);
1 a FAIL line: the run would fail, or leak answers to real clients; 2 bad
usage.

Options:
`

// doctor is `stackcopy doctor`: the run's host-facing flags, checked.
func doctor(args []string, stdout, stderr io.Writer) int {
	m, timeout, err := parseDoctorFlags(args, stdout)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "stackcopy doctor: %v\n", err)
		fmt.Fprintln(stderr, "Try 'stackcopy doctor --help' for more information.")
		return exitUsage
	}
	m.DialTimeout = timeout
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := check.CheckMirror(ctx, m)
	if err := rep.Write(stdout); err != nil {
		fmt.Fprintf(stderr, "stackcopy doctor: %v\n", err)
		return exitFatal
	}
	if rep.Failed() {
		return exitFatal
	}
	return exitOK
}

func parseDoctorFlags(args []string, helpOut io.Writer) (check.Mirror, time.Duration, error) {
	def := mirror.DefaultConfig()
	fs := pflag.NewFlagSet("stackcopy doctor", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	// A run's other flags (--speed 0, -n 3, ...) are no concern of the
	// doctor; accepting them lets an operator prefix a working command
	// line with "doctor".
	fs.ParseErrorsAllowlist.UnknownFlags = true
	var (
		m                   check.Mirror
		transfers, clients  string
		spillMax            = int(def.SpillMax >> 20)
		timeout             = 5 * time.Second
		help                bool
		discardStr          string
		discardInt, discCnt int
	)
	fs.StringVarP(&transfers, "transfer", "x", "", "what a run replays where: [onlineIP:]onlinePort-targetIP:targetPort[,...]")
	fs.StringSliceVarP(&m.Inputs, "input", "i", nil, "capture file(s), or interfaces to capture on live")
	fs.StringVarP(&m.Output, "output", "o", def.Output, "egress: tun, raw or IFACE[@NEXT-HOP-MAC]")
	fs.StringVarP(&m.Filter, "filter", "F", "", "live: pcap filter (checked with tcpdump)")
	fs.StringSliceVarP(&m.Intercepts, "intercepts", "s", nil, "intercepts ip[:port] to do the relay handshake with")
	fs.StringVar(&m.KeyFile, "key-file", "", "relay key file; default: the "+def.KeyEnv+" environment variable")
	fs.StringVar(&m.TUN, "tun", def.TUNName, "name of the TUN device a run creates")
	fs.BoolVar(&m.NoRoutes, "no-routes", def.NoRoutes, "a run does not route forged clients into the TUN")
	fs.StringVarP(&clients, "clients", "c", "", "client pool (for the return-route hint)")
	fs.StringVar(&m.SpillDir, "spill-dir", def.SpillDir, "spill directory to check")
	fs.IntVar(&spillMax, "spill-max", spillMax, "with 0 the spill directory is not checked")
	fs.DurationVar(&timeout, "relay-timeout", timeout, "doctor only: how long to wait for each intercept's handshake")
	// Flags that take a value and share a letter with nothing above are
	// declared so their values are not mistaken for arguments.
	fs.StringVarP(&discardStr, "log", "l", "", "ignored by the doctor")
	fs.StringVarP(&discardStr, "pid-file", "P", "", "ignored by the doctor")
	fs.IntVarP(&discardInt, "channels", "C", 1, "ignored by the doctor (one handshake per intercept is enough)")
	fs.CountVarP(&discCnt, "verbose", "v", "ignored by the doctor")
	fs.BoolVarP(&help, "help", "h", false, "this help")
	if err := fs.Parse(args); err != nil {
		return m, 0, err
	}
	if help {
		fmt.Fprint(helpOut, doctorUsage)
		fmt.Fprint(helpOut, fs.FlagUsages())
		return m, 0, errHelp
	}
	if transfers == "" {
		return m, 0, errors.New("-x/--transfer is required: the targets decide which routes and sysctls matter")
	}
	xs, err := transfer.ParseTransfers(transfers)
	if err != nil {
		return m, 0, fmt.Errorf("-x: %w", err)
	}
	for _, t := range xs {
		m.Targets = append(m.Targets, t.Target.Addr())
	}
	if clients != "" {
		pool, err := transfer.ParseClientPool(clients, m.Targets...)
		if err != nil {
			return m, 0, fmt.Errorf("-c: %w", err)
		}
		m.Pool = pool.Addrs()
	}
	if len(m.Inputs) == 0 {
		return m, 0, errors.New("-i/--input is required: a capture file, or the interfaces a live run captures on")
	}
	if m.Live, err = mirror.LiveInputs(m.Inputs); err != nil {
		return m, 0, fmt.Errorf("-i: %w", err)
	}
	if m.Output != "tun" && len(m.Intercepts) == 0 {
		return m, 0, fmt.Errorf("-o %s: the target's answers can only come back through intercept: give -s", m.Output)
	}
	if spillMax == 0 {
		m.SpillDir = ""
	}
	m.KeyEnv = def.KeyEnv
	if timeout <= 0 {
		return m, 0, fmt.Errorf("--relay-timeout: %v, want > 0", timeout)
	}
	return m, timeout, nil
}
