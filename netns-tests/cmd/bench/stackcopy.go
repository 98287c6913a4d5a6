package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// scStats is the part of stackcopy's --stats-json the bench reads.
type scStats struct {
	Seconds float64 `json:"seconds"`
	Replay  struct {
		Sessions, Completed, Refused, Gaps, Failed uint64
		ClientResets                               uint64 `json:"client_resets"`
		TargetResets                               uint64 `json:"target_resets"`
		TimedOut                                   uint64 `json:"timed_out"`
		BytesSent                                  uint64 `json:"bytes_sent"`
		BytesReceived                              uint64 `json:"bytes_received"`
		TurnsUnanswered                            uint64 `json:"turns_unanswered"`
		PortsRemapped                              uint64 `json:"ports_remapped"`
	} `json:"replay"`
	Stack struct {
		Retransmits, Timeouts uint64
		SegmentsSent          uint64 `json:"segments_sent"`
		FastRetransmits       uint64 `json:"fast_retransmits"`
		WriteErrors           uint64 `json:"write_errors"`
	} `json:"stack"`
}

// outcomes is a one-line account of how the sessions ended.
func (s *scStats) outcomes() string {
	r := s.Replay
	return fmt.Sprintf("%d sessions: %d completed, %d client-reset, %d target-reset, %d refused, %d timed-out, %d gap, %d failed",
		r.Sessions, r.Completed, r.ClientResets, r.TargetResets, r.Refused, r.TimedOut, r.Gaps, r.Failed)
}

// tunName is stackcopy's default TUN device.
const tunName = "stackcopy0"

// scRun is one finished stackcopy run.
type scRun struct {
	stats    scStats
	exitCode int
	cpu      time.Duration
	wall     time.Duration
	stdout   string
	stderr   string
	tun      linkStats // stackcopy's TUN, last seen while it ran
	tunSeen  bool
	profile  string // its --cpuprofile
}

// tunLine reports the TUN's drop counters as last seen.
func (r *scRun) tunLine() string {
	if !r.tunSeen {
		return "TUN stackcopy0 not seen"
	}
	return "TUN stackcopy0 " + r.tun.String()
}

// summaryLines picks the stack, skipped and any drop lines of stackcopy's
// printed summary.
func (r *scRun) summaryLines() []string {
	var out []string
	for _, l := range strings.Split(r.stdout, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "stack ") || strings.HasPrefix(t, "skipped ") || strings.HasPrefix(t, "tun ") || strings.Contains(t, "drop") {
			out = append(out, "    stackcopy: "+t)
		}
	}
	return out
}

// problem describes anything abnormal about the run, or "".
func (r *scRun) problem(wantSessions uint64) string {
	var p []string
	if r.exitCode != 0 {
		p = append(p, fmt.Sprintf("exit status %d", r.exitCode))
	}
	if r.stats.Replay.Completed != wantSessions || r.stats.Replay.Sessions != wantSessions {
		p = append(p, r.stats.outcomes())
	}
	if s := strings.TrimSpace(r.stderr); s != "" {
		p = append(p, "stderr: "+firstLines(s, 5))
	}
	return strings.Join(p, "; ")
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], fmt.Sprintf("… (%d more lines)", len(lines)-n))
	}
	return strings.Join(lines, " | ")
}

// stackcopyArgs are the arguments of a replay of pcap to the target port.
func (b *bench) stackcopyArgs(pcap string, port int, statsPath string, extra ...string) []string {
	args := []string{"-x", fmt.Sprintf("80-%s:%d", targetAddr(), port), "-i", pcap, "--stats-json", statsPath}
	args = append(args, b.cfg.scFlags...)
	return append(args, extra...)
}

// runStackcopy replays pcap in the replay namespace and waits for it, at
// most timeout (then SIGTERM, SIGKILL 10 s later).
func (b *bench) runStackcopy(ctx context.Context, timeout time.Duration, name, pcap string, port int, extra ...string) (*scRun, error) {
	statsPath := fmt.Sprintf("%s/%s.stats.json", b.dir, name)
	_ = os.Remove(statsPath)
	prof := fmt.Sprintf("%s/%s.cpu.prof", b.dir, name)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := startRole(b.replay, b.cfg.stackcopy, b.stackcopyArgs(pcap, port, statsPath, append([]string{"--cpuprofile", prof}, extra...)...)...)
	if err != nil {
		return nil, err
	}
	w := watchNetDev(c)
	// A failed run is judged by its exit status and stats below.
	_ = c.WaitContext(rctx, roleGrace)
	<-w.done
	r := &scRun{exitCode: c.ExitCode(), cpu: exitCPU(c), wall: c.Wall(), stdout: c.Stdout(), stderr: c.Log(), profile: prof}
	r.tun, r.tunSeen = w.get(tunName)
	if rctx.Err() != nil {
		return r, fmt.Errorf("stackcopy %s: still running after %v, stopped: %s%s", name, timeout, firstLines(r.stdout, 8), outputTail(r.stderr))
	}
	if err := readStats(statsPath, &r.stats); err != nil {
		return r, fmt.Errorf("stackcopy %s (exit status %d): %w%s", name, r.exitCode, err, outputTail(r.stderr))
	}
	return r, nil
}

func readStats(path string, s *scStats) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--stats-json: %w", err)
	}
	if err := json.Unmarshal(b, s); err != nil {
		return fmt.Errorf("--stats-json %s: %w", path, err)
	}
	return nil
}
