package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// memoryLimit is the peak RSS a --speed 0 replay of any number of short
// sessions must stay under: the reader runs only a bounded window ahead of
// the dials, so memory does not grow with the capture.
const memoryLimit = 256 << 20

// memory replays captures of short sessions (100k and 1M; -quick 10k and
// 100k) at --speed 0 to the http sink and reports stackcopy's peak RSS
// (VmHWM) for each, with PASS/MISS against memoryLimit.
func (b *bench) memory(ctx context.Context) (result, error) {
	var res result
	sizes := []int{100_000, 1_000_000}
	if b.cfg.quick {
		sizes = []int{10_000, 100_000}
	}
	for _, n := range sizes {
		pcap := filepath.Join(b.dir, fmt.Sprintf("memory-%d.pcap", n))
		t0 := time.Now()
		if err := writeMemoryPcap(pcap, n); err != nil {
			return res, err
		}
		fi, err := os.Stat(pcap)
		if err != nil {
			return res, err
		}
		b.logf("memory: %d sessions written in %.1fs (%s)", n, time.Since(t0).Seconds(), sizeStr(fi.Size()))
		if err := b.waitHTTPIdle(ctx, 0); err != nil {
			return res, err
		}
		// About 5k sessions/s on 2 cores, and slack.
		timeout := 2*time.Minute + time.Duration(n/2000)*time.Second
		r, peak, err := b.runStackcopyPeak(ctx, timeout, fmt.Sprintf("memory-%d", n), pcap, httpPort, "--speed", "0")
		// The capture is large and no other workload reads it.
		_ = os.Remove(pcap)
		if err != nil {
			return res, err
		}
		done := r.stats.Replay.Completed
		res.rows = append(res.rows, row{
			workload: fmt.Sprintf("peak RSS, %s sessions, --speed 0", countStr(n)),
			sc:       fmt.Sprintf("%.0f MiB", mib(peak)),
			target:   fmt.Sprintf("<%d MiB", memoryLimit>>20),
			verdict:  verdict(peak < memoryLimit && done == uint64(n) && r.exitCode == 0),
		})
		rate := float64(n) / r.stats.Seconds
		res.details = append(res.details, fmt.Sprintf("memory %d: VmHWM %.1f MiB, %.1fs (%.0f sessions/s), cpu %.1fs, %s, exit %d",
			n, mib(peak), r.stats.Seconds, rate, r.cpu.Seconds(), r.stats.outcomes(), r.exitCode))
		if p := r.problem(uint64(n)); p != "" {
			res.details = append(res.details, "  memory: "+p)
		}
		b.logf("memory %d: VmHWM %.1f MiB, %.1fs, %d/%d completed", n, mib(peak), r.stats.Seconds, done, n)
	}
	res.details = append(res.details,
		"memory: each session is a handshake, one ~100-byte request, its 200-byte answer and both FINs, 10 µs apart in the capture;",
		"  peak = stackcopy's VmHWM (/proc/PID/status), sampled every 100 ms until it exits")
	return res, nil
}

// countStr writes 100000 as 100k and 1000000 as 1M.
func countStr(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// runStackcopyPeak is runStackcopy that also returns the process's peak
// RSS. VmHWM only grows, so the last sample before the exit is the peak
// but for what the last 100 ms added.
func (b *bench) runStackcopyPeak(ctx context.Context, timeout time.Duration, name, pcap string, port int, extra ...string) (*scRun, int64, error) {
	statsPath := fmt.Sprintf("%s/%s.stats.json", b.dir, name)
	_ = os.Remove(statsPath)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := startRole(b.replay, b.cfg.stackcopy, b.stackcopyArgs(pcap, port, statsPath, extra...)...)
	if err != nil {
		return nil, 0, err
	}
	var peak int64
	c.Sample(rctx, 100*time.Millisecond, func() {
		if b, err := c.PeakRSS(); err == nil {
			peak = max(peak, b)
		}
	})
	_ = c.WaitContext(rctx, roleGrace)
	r := &scRun{exitCode: c.ExitCode(), cpu: exitCPU(c), wall: c.Wall(), stdout: c.Stdout(), stderr: c.Log()}
	if rctx.Err() != nil {
		return r, peak, fmt.Errorf("stackcopy %s: still running after %v (peak RSS so far %.0f MiB), stopped: %s%s",
			name, timeout, mib(peak), firstLines(r.stdout, 8), outputTail(r.stderr))
	}
	if peak == 0 {
		return r, 0, fmt.Errorf("stackcopy %s: exited before its RSS could be sampled", name)
	}
	if err := readStats(statsPath, &r.stats); err != nil {
		return r, peak, fmt.Errorf("stackcopy %s (exit status %d): %w%s", name, r.exitCode, err, outputTail(r.stderr))
	}
	return r, peak, nil
}

// writeMemoryPcap writes n short sessions, 10 µs apart, 8 packets each:
// SYN, SYN-ACK, ACK, the request, the answer (acknowledging it), the
// client's FIN, the server's FIN, the last ACK. Client ports repeat only
// after 100 addresses × 45 000 ports (see clientAddr, which n ≤ 4.5M keeps
// below 65535).
func writeMemoryPcap(path string, n int) error {
	if n > 4_500_000 {
		return fmt.Errorf("memory pcap: %d sessions: at most 4.5M have distinct client ports", n)
	}
	return writeSessionsPcap(path, n, 10*time.Microsecond, memorySession)
}

func memorySession(s *tcpSession, req, ans []byte) error {
	if err := s.handshake(); err != nil {
		return err
	}
	if err := s.clientData(req); err != nil {
		return err
	}
	if err := s.p.packet(s.server, s.client, s.sseq, s.cseq, fACK|fPSH, ans); err != nil {
		return err
	}
	s.sseq += uint32(len(ans))
	if err := s.p.packet(s.client, s.server, s.cseq, s.sseq, fACK|fFIN, nil); err != nil {
		return err
	}
	s.cseq++
	if err := s.p.packet(s.server, s.client, s.sseq, s.cseq, fACK|fFIN, nil); err != nil {
		return err
	}
	s.sseq++
	return s.p.packet(s.client, s.server, s.cseq, s.sseq, fACK, nil)
}
