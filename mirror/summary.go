package mirror

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/stackcopy/stackcopy/capture"
	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/netstack"
	"github.com/stackcopy/stackcopy/relay"
	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/session"
)

// Summary is what a Run did, printed as text (WriteText) and as the
// --stats-json document (WriteJSON). Both formats are parsed by scripts
// and the lab: their lines and keys do not change.
type Summary struct {
	Inputs  []string
	Loops   int
	Live    bool
	Elapsed time.Duration
	Routes  int // forged client addresses routed into the TUN

	TUNTxDrops, TUNRxDrops uint64
	CaptureDrops           uint64             // live: packets the kernel lost before they were read
	Relay                  *relay.ClientStats // with intercepts

	Capture capture.SourceStats
	Tracker session.TrackerStats
	Replay  replay.Stats
	Stack   netstack.Stats

	// With comparing: the counts, the whole report (--compare-json and
	// --compare-html have it; the command prints its text), and why the
	// comparison cannot be trusted, if it cannot ("": it can).
	Compare        *compare.Stats
	Comparison     *compare.Report
	CompareInvalid string
}

// addPass adds one pass over a source.
func (s *Summary) addPass(c capture.Counts, t session.TrackerStats) {
	s.Capture.Add(c.SourceStats)
	s.CaptureDrops += c.Drops
	s.Tracker.Add(t)
}

// AllCompleted says every session the replayer was given ended as
// captured (and there was one).
func (s *Summary) AllCompleted() bool {
	r := s.Replay
	return r.Completed+r.ClientResets == r.Sessions && r.Sessions > 0
}

// WriteText prints the summary for people.
func (s *Summary) WriteText(w io.Writer) {
	r, c, t, st := s.Replay, s.Capture, s.Tracker, s.Stack
	if s.Live {
		fmt.Fprintf(w, "stackcopy: mirrored live traffic on %s for %.2fs\n", strings.Join(s.Inputs, ", "), s.Elapsed.Seconds())
	} else {
		fmt.Fprintf(w, "stackcopy: replayed %s (%d pass%s) in %.2fs\n", strings.Join(s.Inputs, ", "), s.Loops, plural(s.Loops, "es"), s.Elapsed.Seconds())
	}
	fmt.Fprintf(w, "  sessions  %d replayed: %d completed, %d client-reset, %d target-reset, %d refused, %d timed-out, %d capture-gap, %d overflowed, %d failed\n",
		r.Sessions, r.Completed, r.ClientResets, r.TargetResets, r.Refused, r.TimedOut, r.Gaps, r.Overflowed, r.Failed)
	fmt.Fprintf(w, "  skipped   %d mid-stream (no SYN captured; %d more joined at a turn boundary, -O=false; %d of those not joinable: HTTP/2), %d not matching -x, %d sampled out (-r), %d shed (-m), %d IPv6 segments, %d fragments\n",
		t.MidStream, t.Joined, r.Unjoinable, r.Unmatched, r.SampledOut, r.Shed, c.IPv6, c.Fragments)
	fmt.Fprintf(w, "  bytes     %d client bytes sent, %d response bytes received\n", r.BytesSent, r.BytesReceived)
	if r.SpilledBytes > 0 {
		fmt.Fprintf(w, "  spill     %d client bytes went through spill files (at most %d at once)\n", r.SpilledBytes, r.SpillPeak)
	}
	fmt.Fprintf(w, "  turns     %d waited for the target's answer (%d ended by protocol framing), %d sent unanswered after --turn-wait\n", r.Turns, r.TurnsFramed, r.TurnsUnanswered)
	names := slices.Sorted(maps.Keys(r.Protocols))
	for _, name := range names {
		p := r.Protocols[name]
		fmt.Fprintf(w, "  protocol  %s: %d sessions, %d turns: %d by framing, %d by size, %d by silence, %d target closed, %d after --turn-wait",
			name, p.Sessions, p.Turns, p.Framed, p.BySize, p.ByQuiet, p.ByClose, p.TurnWait)
		if p.Writes > 0 {
			fmt.Fprintf(w, "; behind the captured schedule: at most %.1f ms, typically under %.0f ms", p.LagMaxMs, p.LagP50Ms)
		}
		if p.WindowUpdates > 0 || p.DataHeld > 0 {
			// HTTP/2 flow control (replay/h2flow.go).
			fmt.Fprintf(w, "; flow control: %d window updates added, %d DATA frames held for the target's window (%d sent after --turn-wait without it)",
				p.WindowUpdates, p.DataHeld, p.WindowWait)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  stack     %d segments sent, %d retransmitted, %d RTO timeouts, %d ports remapped, %d forged clients routed, %d wire write errors\n",
		st.SegmentsSent, st.Retransmits, st.Timeouts, r.PortsRemapped, s.Routes, st.WriteErrors)
	fmt.Fprintf(w, "  tun       %d answers dropped by the kernel (txqueue full), %d forged packets refused\n", s.TUNTxDrops, s.TUNRxDrops)
	if s.Relay != nil {
		fmt.Fprintf(w, "  relay     %d answers relayed (%d header-only), %d/%d channels up, %d reconnects\n",
			s.Relay.Packets, s.Relay.HeaderOnly, s.Relay.Connected, s.Relay.Channels, s.Relay.Reconnects)
	}
	if s.Live {
		fmt.Fprintf(w, "  kernel    %d captured packets dropped before stackcopy read them\n", s.CaptureDrops)
	}
	fmt.Fprintf(w, "  capture   %d packets, %d TCP, %d other, %d malformed, %d cut by snaplen; %d duplicate, %d out-of-order, %d conflicting segments\n",
		c.Packets, c.TCP, c.NonTCP, c.Malformed, c.Truncated, t.Duplicates, t.OutOfOrder, t.Conflicts)
	if cs := s.Compare; cs != nil {
		fmt.Fprintf(w, "  compare   %d requests, %d compared: %d identical, %d different, %d noise only; %d without an answer on one side\n",
			cs.Requests, cs.Compared, cs.Identical, cs.Different, cs.Noise, cs.Missing)
		if s.CompareInvalid != "" {
			fmt.Fprintf(w, "  compare   NOT VALID: %s\n", s.CompareInvalid)
		}
	}
}

func plural(n int, suffix string) string {
	if n == 1 {
		return ""
	}
	return suffix
}

// SummaryJSON is the --stats-json document: programs that read it (the
// lab, scripts) decode into it instead of keeping copies of its shape.
type SummaryJSON struct {
	Inputs  []string             `json:"inputs"`
	Loops   int                  `json:"loops"`
	Seconds float64              `json:"seconds"`
	Routes  int                  `json:"routes"`
	TUN     TUNJSON              `json:"tun"`
	Live    bool                 `json:"live"`
	Drops   uint64               `json:"capture_drops"`
	Relay   *relay.ClientStats   `json:"relay,omitempty"`
	Replay  replay.Stats         `json:"replay"`
	Capture capture.SourceStats  `json:"capture"`
	Tracker session.TrackerStats `json:"tracker"`
	Stack   netstack.Stats       `json:"stack"`
	// Compare: the comparison's counts, with --compare (the report itself
	// is --compare-json).
	Compare        *compare.Stats `json:"compare,omitempty"`
	CompareInvalid string         `json:"compare_invalid,omitempty"`
}

type TUNJSON struct {
	TxDrops uint64 `json:"tx_drops"`
	RxDrops uint64 `json:"rx_drops"`
}

// WriteJSON writes the --stats-json document, indented, with a final
// newline.
func (s *Summary) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(SummaryJSON{
		Inputs: s.Inputs, Loops: s.Loops, Seconds: s.Elapsed.Seconds(), Routes: s.Routes,
		TUN:  TUNJSON{s.TUNTxDrops, s.TUNRxDrops},
		Live: s.Live, Drops: s.CaptureDrops, Relay: s.Relay,
		Replay: s.Replay, Capture: s.Capture, Tracker: s.Tracker, Stack: s.Stack,
		Compare: s.Compare, CompareInvalid: s.CompareInvalid,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
