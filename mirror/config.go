// Package mirror is stackcopy's engine: it reads captured or live TCP
// sessions (capture), cuts them into turns (session), replays each as a
// real connection from the forged client address (replay) through the
// userspace stack (netstack) onto a wire (wire: a TUN with routes and
// preflight from hostnet, a raw or AF_PACKET socket, or a ready-made
// device), with answers coming back from the TUN or relayed by intercept
// (relay). Run is the whole job; Config is every knob it has, with the
// one set of defaults (DefaultConfig) and validation (Config.Validate)
// the command line takes them from.
//
// mirror owns the wiring between those packages: the read loop, the dial
// function with its route and relay registrations, the mapping of the
// stack's errors onto replay's, and the summary. Nothing but cmd/ may
// import mirror.
package mirror

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/stackcopy/stackcopy/capture"
	"github.com/stackcopy/stackcopy/netstack"
	"github.com/stackcopy/stackcopy/transfer"
	"github.com/stackcopy/stackcopy/wire"
)

// Config is everything Run needs. Start from DefaultConfig. Error texts
// name the stackcopy flag a field comes from, since that is where users
// set them.
type Config struct {
	// Transfers maps captured servers to targets (-x). Required.
	Transfers transfer.Transfers
	// Pool rewrites client addresses (-c); nil keeps them.
	Pool *transfer.ClientPool
	// Percent of sessions replayed (-r), sampled by client address.
	Percent int

	// Inputs are capture files, or with Live interfaces ("any": all) (-i).
	Inputs []string
	// Live captures on the Inputs interfaces until Run's context ends.
	Live bool
	// Filter replaces the kernel filter built from Transfers (live, -F).
	Filter string
	// CaptureBuffer is the live capture ring per interface, in bytes
	// (--capture-buffer, MiB on the command line): how long a burst the
	// kernel can hold while stackcopy is busy before it drops.
	CaptureBuffer int
	// JoinMidStream replays sessions whose SYN was not captured from their
	// next turn boundary (-O=false).
	JoinMidStream bool
	// Loops passes over the capture files (--loop).
	Loops int

	// Speed divides the captured gaps; 0 replays as fast as the target
	// answers (--speed). Live traffic is never paced.
	Speed float64
	// Idle ends a session with no progress for this long (-t).
	Idle time.Duration
	// TurnWait bounds the wait for an answer before the next turn (--turn-wait).
	TurnWait time.Duration
	// NoWait sends turns without waiting for answers (-W).
	NoWait bool
	// NoOrder opens sessions at their captured time even when the target
	// has not yet answered requests production answered before their SYN
	// (--no-order; replay.Config.NoOrder).
	NoOrder bool
	// HTTPTurns ends HTTP/1.x turns when the response is complete (--http-turns).
	HTTPTurns bool
	// Protocol forces the protocol turns are framed by (--protocol): "" or
	// "auto" detects it per session from its first bytes and port, "none"
	// frames nothing (turns end by size and silence), else one of
	// ProtocolNames.
	Protocol string
	// MaxHandshakes bounds the handshakes in flight (--max-handshakes).
	MaxHandshakes int
	// Copies replays each session this many times (-n), the copies after
	// the first from ports taken in turn from CopyPorts (--copy-ports).
	Copies    int
	CopyPorts [2]uint16
	// PortOffset shifts captured client ports (-f).
	PortOffset int
	// MemoryLimit in bytes: new sessions are shed before the process's RSS
	// crosses it (-m); 0 is none.
	MemoryLimit uint64
	// SpillDir holds the unlinked spill files of sessions that fall behind
	// (--spill-dir); SpillMax bounds their bytes together, 0 or less
	// spills nothing (--spill-max).
	SpillDir string
	SpillMax int64

	// Output is the egress when Device is nil: "tun", "raw" or
	// IFACE[@NEXT-HOP-MAC] (-o).
	Output string
	// Device, when set, is the wire the stack writes to instead of one
	// Output opens (tests, embedding); Run closes it. If it is also a
	// wire.Reader, answers are read from it as from a TUN.
	Device wire.Device
	// TUNName is the TUN created for Output "tun" (--tun), with TxQueueLen
	// (--txqueuelen); NoRoutes leaves routing the forged clients into it
	// to the user (--no-routes).
	TUNName    string
	TxQueueLen int
	NoRoutes   bool

	// MTU towards the target (-M); MSS, when not 0, is what the forged
	// clients advertise (-D).
	MTU int
	MSS int
	// CongestionControl is "reno" or "cubic" (--cc); RACK turns RACK loss
	// detection on (--rack); MinRTO floors the retransmission timeout
	// (--min-rto), FlightMinRTO floors it while more than one full-sized
	// segment is unacknowledged (--flight-min-rto); SendBuffer caps each
	// session's send buffer (--send-buffer); QuickACK acknowledges the
	// target's data at once instead of delaying the ACK as a Linux client
	// does (--quick-ack); TimeWait is how long a forged client that closed
	// first keeps its 4-tuple (--time-wait).
	CongestionControl string
	RACK              bool
	MinRTO            time.Duration
	FlightMinRTO      time.Duration
	TimeWait          time.Duration
	SendBuffer        int
	QuickACK          bool
	// GSO is "auto", "host", "coalesce" or "off" (--gso); auto is host
	// on a TUN and off on raw and AF_PACKET wires.
	GSO string

	// Intercepts relay the target's answers back (-s), over Channels
	// connections each (-C), authenticated with the key in KeyFile
	// (--key-file) or else in the environment variable KeyEnv.
	Intercepts []string
	Channels   int
	KeyFile    string
	KeyEnv     string

	// Compare pairs every replayed request's answer from the target with
	// production's from the capture and reports the differences at the
	// end (--compare). CompareJSON and CompareHTML, when set, also write
	// the report to those files (--compare-json, --compare-html) and turn
	// comparing on, as Baseline does.
	Compare     bool
	CompareJSON string
	CompareHTML string
	// Baseline replays every session a second time, to a copy of
	// production's build (--baseline): fields that differ between
	// production and the baseline are noise, not regressions.
	Baseline transfer.Transfers
	// CompareIgnore are ignore rules (--compare-ignore, see
	// compare.ParseRule); CompareRules is a file of more (--compare-rules).
	CompareIgnore []string
	CompareRules  string
	// CompareSamples bounds the samples kept per group (--compare-samples);
	// CompareBody is the largest body compared structurally, larger ones
	// by length and hash (--compare-body).
	CompareSamples int
	CompareBody    int
	// CompareUnordered compares JSON arrays as multisets
	// (--compare-unordered-arrays); CompareSecrets keeps passwords, cookies
	// and authorization headers in the report's samples
	// (--compare-show-secrets).
	CompareUnordered bool
	CompareSecrets   bool
}

// Comparing says whether Run compares answers.
func (c Config) Comparing() bool {
	return c.Compare || c.CompareJSON != "" || c.CompareHTML != "" || len(c.Baseline) > 0
}

// DefaultConfig returns the defaults --help documents. It is the one
// place they are written down.
func DefaultConfig() Config {
	return Config{
		Percent:           100,
		Loops:             1,
		Speed:             1,
		Idle:              120 * time.Second,
		TurnWait:          2 * time.Second,
		HTTPTurns:         true,
		Protocol:          "auto",
		MaxHandshakes:     128,
		Copies:            1,
		CopyPorts:         [2]uint16{1024, 32767},
		SpillDir:          defaultSpillDir(),
		SpillMax:          2048 << 20,
		Output:            "tun",
		TUNName:           "stackcopy0",
		TxQueueLen:        10000,
		MTU:               1500,
		CongestionControl: "reno",
		RACK:              true,
		MinRTO:            200 * time.Millisecond,
		FlightMinRTO:      20 * time.Millisecond,
		TimeWait:          netstack.DefaultConfig().TimeWait,
		SendBuffer:        4 << 20,
		GSO:               "auto",
		CaptureBuffer:     capture.DefaultLiveBuffer,
		Channels:          1,
		KeyEnv:            "STACKCOPY_RELAY_KEY",
		CompareSamples:    3,
		CompareBody:       1 << 20,
	}
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

// Validate reports the first setting Run cannot work with. It also
// checks that spill files can be made in SpillDir (when spilling is on):
// found out now, not when the first session falls behind.
func (c Config) Validate() error {
	if err := checkProtocol(c.Protocol); err != nil {
		return err
	}
	switch {
	case len(c.Transfers) == 0:
		return errors.New("-x/--transfer is required, e.g. -x 80-198.18.2.2:80")
	case len(c.Inputs) == 0:
		return errors.New("-i/--input is required: a pcap or pcapng file to replay, or an interface to mirror")
	case c.Percent < 1 || c.Percent > 100:
		return fmt.Errorf("-r: %d is not a percentage from 1 to 100", c.Percent)
	case c.Speed < 0:
		return fmt.Errorf("--speed: %v is negative (0 means as fast as the target answers)", c.Speed)
	case c.Loops < 1:
		return fmt.Errorf("--loop: %d, want at least 1", c.Loops)
	case c.MTU < 576 || c.MTU > 65535:
		return fmt.Errorf("-M: MTU %d out of range 576..65535", c.MTU)
	case c.CongestionControl != "reno" && c.CongestionControl != "cubic":
		return fmt.Errorf("--cc: %q, want reno or cubic", c.CongestionControl)
	case c.Live && (c.CaptureBuffer < 1<<20 || c.CaptureBuffer > 4<<30):
		return fmt.Errorf("--capture-buffer: %d MiB, want 1 to 4096", c.CaptureBuffer>>20)
	case c.MaxHandshakes < 1:
		return fmt.Errorf("--max-handshakes: %d, want at least 1", c.MaxHandshakes)
	case c.SendBuffer < 16<<10:
		return fmt.Errorf("--send-buffer: %d bytes is below 16 KiB", c.SendBuffer)
	case len(c.TUNName) == 0 || len(c.TUNName) > 15 || strings.ContainsAny(c.TUNName, "/ "):
		return fmt.Errorf("--tun: %q is not a valid interface name (1-15 characters)", c.TUNName)
	case c.GSO != "auto" && c.GSO != "host" && c.GSO != "coalesce" && c.GSO != "off":
		return fmt.Errorf("--gso: %q, want auto, host, coalesce or off", c.GSO)
	case c.Filter != "" && !c.Live:
		return errors.New("-F: a capture filter applies to live capture (-i IFACE), not to files")
	case c.Device == nil && c.Output != "tun" && len(c.Intercepts) == 0:
		return fmt.Errorf("-o %s: the target's answers can only come back through intercept: give -s", c.Output)
	case c.Device == nil && c.Output == "":
		return errors.New("-o: empty egress")
	case c.Channels < 1 || c.Channels > 64:
		return fmt.Errorf("-C: %d channels, want 1..64", c.Channels)
	case c.Copies < 1 || c.Copies > 1023:
		return fmt.Errorf("-n: %d copies, want 1..1023", c.Copies)
	case c.CopyPorts[0] == 0 || c.CopyPorts[0] > c.CopyPorts[1]:
		return fmt.Errorf("--copy-ports: %d-%d: the range is empty", c.CopyPorts[0], c.CopyPorts[1])
	case c.PortOffset < 0 || c.PortOffset > 64511:
		return fmt.Errorf("-f: port offset %d, want 0..64511", c.PortOffset)
	case c.MSS != 0 && (c.MSS < 88 || c.MSS > c.MTU-40):
		return fmt.Errorf("-D: MSS %d, want 88..%d (MTU - 40)", c.MSS, c.MTU-40)
	case c.Live && c.Loops != 1:
		return errors.New("--loop: live traffic cannot be looped")
	case c.TimeWait < 0:
		return fmt.Errorf("--time-wait: %v is negative", c.TimeWait)
	case c.CompareSamples < 0:
		return fmt.Errorf("--compare-samples: %d is negative", c.CompareSamples)
	case c.CompareBody < 0:
		return fmt.Errorf("--compare-body: %d is negative", c.CompareBody)
	}
	for _, b := range c.Baseline {
		if b.Target.Addr().IsValid() && !b.Target.Addr().Is4() {
			return fmt.Errorf("--baseline: target %v: only IPv4 targets are replayed in this version", b.Target)
		}
		if _, ok := c.Transfers.Match(b.Online); !ok && b.Online.Addr().IsValid() {
			return fmt.Errorf("--baseline: %v is not an online server of -x", b.Online)
		}
	}
	if _, err := c.compareRules(); err != nil {
		return err
	}
	if c.SpillMax > 0 {
		f, err := os.CreateTemp(c.SpillDir, "stackcopy-spill-check-*")
		if err != nil {
			return fmt.Errorf("--spill-dir: %w (or --spill-max 0 to spill nothing)", err)
		}
		f.Close()
		os.Remove(f.Name())
	}
	return nil
}

// LiveInputs says whether inputs name capture files (false) or network
// interfaces (true), for Config.Live; mixing both is an error.
func LiveInputs(inputs []string) (live bool, err error) {
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
