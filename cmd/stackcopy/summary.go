package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/stackcopy/stackcopy/capture"
	"github.com/stackcopy/stackcopy/netstack"
	"github.com/stackcopy/stackcopy/relay"
	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/session"
)

// summary is what stackcopy reports at the end, as text and as JSON.
type summary struct {
	inputs  []string
	loops   int
	live    bool
	start   time.Time
	elapsed time.Duration
	routes  int

	tunTxDrops, tunRxDrops uint64
	captureDrops           uint64             // live: packets the kernel lost before we read them
	relay                  *relay.ClientStats // with -s

	capture capture.SourceStats
	tracker session.TrackerStats
	replay  replay.Stats
	stack   netstack.Stats
}

func (s *summary) addPass(c capture.SourceStats, t session.TrackerStats) {
	s.capture.Packets += c.Packets
	s.capture.TCP += c.TCP
	s.capture.NonTCP += c.NonTCP
	s.capture.IPv6 += c.IPv6
	s.capture.Fragments += c.Fragments
	s.capture.Malformed += c.Malformed
	s.capture.Truncated += c.Truncated
	s.tracker.Sessions += t.Sessions
	s.tracker.MidStream += t.MidStream
	s.tracker.Joined += t.Joined
	s.tracker.Gaps += t.Gaps
	s.tracker.Duplicates += t.Duplicates
	s.tracker.OutOfOrder += t.OutOfOrder
	s.tracker.Retransmits += t.Retransmits
	s.tracker.Conflicts += t.Conflicts
	s.tracker.Ignored += t.Ignored
}

// allCompleted: every session the replayer was given ended as captured.
func (s *summary) allCompleted() bool {
	r := s.replay
	return r.Completed+r.ClientResets == r.Sessions && r.Sessions > 0
}

func (s *summary) print(w io.Writer) {
	r, c, t, st := s.replay, s.capture, s.tracker, s.stack
	if s.live {
		fmt.Fprintf(w, "stackcopy: mirrored live traffic on %s for %.2fs\n", strings.Join(s.inputs, ", "), s.elapsed.Seconds())
	} else {
		fmt.Fprintf(w, "stackcopy: replayed %s (%d pass%s) in %.2fs\n", strings.Join(s.inputs, ", "), s.loops, plural(s.loops, "es"), s.elapsed.Seconds())
	}
	fmt.Fprintf(w, "  sessions  %d replayed: %d completed, %d client-reset, %d target-reset, %d refused, %d timed-out, %d capture-gap, %d overflowed, %d failed\n",
		r.Sessions, r.Completed, r.ClientResets, r.TargetResets, r.Refused, r.TimedOut, r.Gaps, r.Overflowed, r.Failed)
	fmt.Fprintf(w, "  skipped   %d mid-stream (no SYN captured; %d more joined at a turn boundary, -O=false), %d not matching -x, %d sampled out (-r), %d shed (-m), %d IPv6 segments, %d fragments\n",
		t.MidStream, t.Joined, r.Unmatched, r.SampledOut, r.Shed, c.IPv6, c.Fragments)
	fmt.Fprintf(w, "  bytes     %d client bytes sent, %d response bytes received\n", r.BytesSent, r.BytesReceived)
	if r.SpilledBytes > 0 {
		fmt.Fprintf(w, "  spill     %d client bytes went through spill files (at most %d at once)\n", r.SpilledBytes, r.SpillPeak)
	}
	fmt.Fprintf(w, "  turns     %d waited for the target's answer (%d ended by HTTP framing), %d sent unanswered after --turn-wait\n", r.Turns, r.TurnsFramed, r.TurnsUnanswered)
	fmt.Fprintf(w, "  stack     %d segments sent, %d retransmitted, %d RTO timeouts, %d ports remapped, %d forged clients routed, %d wire write errors\n",
		st.SegmentsSent, st.Retransmits, st.Timeouts, r.PortsRemapped, s.routes, st.WriteErrors)
	fmt.Fprintf(w, "  tun       %d answers dropped by the kernel (txqueue full), %d forged packets refused\n", s.tunTxDrops, s.tunRxDrops)
	if s.relay != nil {
		fmt.Fprintf(w, "  relay     %d answers relayed (%d header-only), %d/%d channels up, %d reconnects\n",
			s.relay.Packets, s.relay.HeaderOnly, s.relay.Connected, s.relay.Channels, s.relay.Reconnects)
	}
	if s.live {
		fmt.Fprintf(w, "  kernel    %d captured packets dropped before stackcopy read them\n", s.captureDrops)
	}
	fmt.Fprintf(w, "  capture   %d packets, %d TCP, %d other, %d malformed, %d cut by snaplen; %d duplicate, %d out-of-order, %d conflicting segments\n",
		c.Packets, c.TCP, c.NonTCP, c.Malformed, c.Truncated, t.Duplicates, t.OutOfOrder, t.Conflicts)
}

func plural(n int, suffix string) string {
	if n == 1 {
		return ""
	}
	return suffix
}

// summaryJSON is the --stats-json document.
type summaryJSON struct {
	Inputs  []string             `json:"inputs"`
	Loops   int                  `json:"loops"`
	Seconds float64              `json:"seconds"`
	Routes  int                  `json:"routes"`
	TUN     tunJSON              `json:"tun"`
	Live    bool                 `json:"live"`
	Drops   uint64               `json:"capture_drops"`
	Relay   *relay.ClientStats   `json:"relay,omitempty"`
	Replay  replay.Stats         `json:"replay"`
	Capture capture.SourceStats  `json:"capture"`
	Tracker session.TrackerStats `json:"tracker"`
	Stack   netstack.Stats       `json:"stack"`
}

type tunJSON struct {
	TxDrops uint64 `json:"tx_drops"`
	RxDrops uint64 `json:"rx_drops"`
}

func (s *summary) writeJSON(path string) error {
	b, err := json.MarshalIndent(summaryJSON{
		Inputs: s.inputs, Loops: s.loops, Seconds: s.elapsed.Seconds(), Routes: s.routes,
		TUN:  tunJSON{s.tunTxDrops, s.tunRxDrops},
		Live: s.live, Drops: s.captureDrops, Relay: s.relay,
		Replay: s.replay, Capture: s.capture, Tracker: s.tracker, Stack: s.stack,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("--stats-json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--stats-json: %w", err)
	}
	return nil
}
