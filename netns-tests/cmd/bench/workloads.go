package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/benchrole"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ratioStr(a, b float64) string {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func sizeStr(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d B", n)
}

// tcpCounters are the /proc/net/{snmp,netstat} counters worth reporting
// when they grow during a run (loss, drops, backlog overflows).
func tcpCounters() []string {
	return []string{"Tcp.RetransSegs", "TcpExt.TCPLossProbes", "TcpExt.TCPFastRetrans", "TcpExt.TCPSlowStartRetrans",
		"TcpExt.TCPTimeouts", "TcpExt.TCPSpuriousRTOs", "TcpExt.TCPDSACKRecv", "TcpExt.TCPSACKReorder",
		"TcpExt.ListenOverflows", "TcpExt.ListenDrops", "TcpExt.SyncookiesSent", "TcpExt.TCPBacklogDrop",
		"TcpExt.TCPRcvQDrop", "TcpExt.PruneCalled", "TcpExt.RcvPruned", "TcpExt.TCPOFODrop", "TcpExt.TCPZeroWindowDrop",
		"TcpExt.TCPDSACKOldSent", "TcpExt.TCPDSACKOfoSent"}
}

// netSnapshot is the drop and TCP counters of both hosts at one moment.
type netSnapshot struct {
	replay, target map[string]uint64
	replayIf       linkStats
	targetIf       linkStats
	softnet        uint64
}

func (b *bench) snapshot(ctx context.Context) (netSnapshot, error) {
	var s netSnapshot
	var err error
	if s.replay, err = netCounters(ctx, b.replay); err != nil {
		return s, err
	}
	if s.target, err = netCounters(ctx, b.target); err != nil {
		return s, err
	}
	if s.replayIf, err = readLinkStats(ctx, b.replay, b.replayIf); err != nil {
		return s, err
	}
	if s.targetIf, err = readLinkStats(ctx, b.target, b.targetIf); err != nil {
		return s, err
	}
	s.softnet, err = softnetDrops()
	return s, err
}

// since describes what grew from s0 to s.
func (s netSnapshot) since(s0 netSnapshot, replayIf, targetIf string) string {
	return fmt.Sprintf("replay %s %s, target %s %s, softnet backlog drops %d; TCP counters: replay %s; target %s",
		replayIf, s.replayIf.sub(s0.replayIf), targetIf, s.targetIf.sub(s0.targetIf), s.softnet-s0.softnet,
		counterDelta(s0.replay, s.replay, tcpCounters()...), counterDelta(s0.target, s.target, tcpCounters()...))
}

// clientRole runs a kernel client role of the bench in the replay
// namespace and returns its printed result and rusage.
func (b *bench) clientRole(ctx context.Context, timeout time.Duration, role string, args ...string) (benchrole.ClientResult, *lab.Proc, error) {
	var res benchrole.ClientResult
	rctx, cancel := context.WithTimeout(ctx, timeout+15*time.Second)
	defer cancel()
	all := append([]string{"-role", role}, args...)
	all = append(all, "-timeout", timeout.String())
	c, err := startRole(b.replay, b.self, all...)
	if err != nil {
		return res, nil, err
	}
	if err := c.WaitContext(rctx, roleGrace); err != nil {
		return res, c, err
	}
	if err := json.Unmarshal([]byte(c.Stdout()), &res); err != nil {
		return res, c, fmt.Errorf("%s: result %q: %w", c, c.Stdout(), err)
	}
	return res, c, nil
}

// upload: one session uploading cfg.uploadBytes, stackcopy vs kernel,
// interleaved; throughput from the sink's accept → EOF time for both.
func (b *bench) upload(ctx context.Context) (result, error) {
	var res result
	size := b.cfg.uploadBytes
	pcap := filepath.Join(b.dir, "upload.pcap")
	t0 := time.Now()
	if err := writeUploadPcap(pcap, size); err != nil {
		return res, err
	}
	b.logf("wrote %s (%s upload) in %.1fs", filepath.Base(pcap), sizeStr(size), time.Since(t0).Seconds())

	// Check the capture on stackcopy itself before measuring: a small
	// capture of the same shape must replay completely.
	small := filepath.Join(b.dir, "upload-check.pcap")
	if err := writeUploadPcap(small, 1<<20+12345); err != nil {
		return res, err
	}
	if r, err := b.runStackcopy(ctx, time.Minute, "upload-check", small, uploadPort, "--speed", "0"); err != nil {
		return res, fmt.Errorf("capture check: %w", err)
	} else if p := r.problem(1); p != "" || r.stats.Replay.BytesSent != 1<<20+12345 {
		return res, fmt.Errorf("capture check: stackcopy replayed %d of %d bytes: %s", r.stats.Replay.BytesSent, 1<<20+12345, p)
	}
	if _, err := b.sinkRecord(ctx, 1<<20+12345); err != nil {
		return res, fmt.Errorf("capture check: %w", err)
	}

	target := netip.AddrPortFrom(targetAddr(), uploadPort).String()
	var scG, kG, scRetr, kRetr []float64
	var scLine, kLine, netLines, notes []string
	var lastSC *scRun
	timeout := 30*time.Second + time.Duration(size/(20<<20))*time.Second // ≥ 20 MiB/s
	for i := 1; i <= b.cfg.runs; i++ {
		// stackcopy
		s0, err := b.snapshot(ctx)
		if err != nil {
			return res, err
		}
		r, err := b.runStackcopy(ctx, timeout, fmt.Sprintf("upload-%d", i), pcap, uploadPort, "--speed", "0")
		if err != nil {
			return res, err
		}
		lastSC = r
		rec, err := b.sinkRecord(ctx, size)
		s1, serr := b.snapshot(ctx)
		if serr != nil {
			return res, serr
		}
		netLines = append(netLines, fmt.Sprintf("  run %d stackcopy: %s, %s", i, r.tunLine(), s1.since(s0, b.replayIf, b.targetIf)))
		if p := r.problem(1); p != "" {
			notes = append(notes, fmt.Sprintf("  stackcopy upload run %d: %s", i, p))
		}
		if err != nil {
			notes = append(notes, fmt.Sprintf("  stackcopy upload run %d: %v", i, err))
		} else {
			g := float64(rec.Bytes) * 8 / rec.Seconds / 1e9
			scG = append(scG, g)
			scRetr = append(scRetr, float64(r.stats.Stack.Retransmits))
			scLine = append(scLine, fmt.Sprintf("%.2f (%.2fs, %d retransmits, cpu %.2fs)", g, rec.Seconds, r.stats.Stack.Retransmits, r.cpu.Seconds()))
			b.logf("upload run %d stackcopy: %.2f Gbit/s, %d retransmits", i, g, r.stats.Stack.Retransmits)
		}

		// kernel
		kr, c, err := b.clientRole(ctx, timeout, "upload", "-connect", target, "-bytes", strconv.FormatInt(size, 10))
		if err != nil {
			return res, err
		}
		rec, err = b.sinkRecord(ctx, size)
		s2, serr := b.snapshot(ctx)
		if serr != nil {
			return res, serr
		}
		netLines = append(netLines, fmt.Sprintf("  run %d kernel:    %s", i, s2.since(s1, b.replayIf, b.targetIf)))
		if kr.Answer != uploadAnswer {
			notes = append(notes, fmt.Sprintf("  kernel upload run %d: answer %q", i, kr.Answer))
		}
		if err != nil {
			notes = append(notes, fmt.Sprintf("  kernel upload run %d: %v", i, err))
		} else {
			g := float64(rec.Bytes) * 8 / rec.Seconds / 1e9
			retr := s2.replay["Tcp.RetransSegs"] - s1.replay["Tcp.RetransSegs"]
			kG = append(kG, g)
			kRetr = append(kRetr, float64(retr))
			kLine = append(kLine, fmt.Sprintf("%.2f (%.2fs, %d retransmits, cpu %.2fs)", g, rec.Seconds, retr, exitCPU(c).Seconds()))
			b.logf("upload run %d kernel:    %.2f Gbit/s, %d retransmits", i, g, retr)
		}
	}
	sc, k := median(scG), median(kG)
	rw := row{
		workload: fmt.Sprintf("upload %s (median of %d)", sizeStr(size), b.cfg.runs),
		sc:       fmt.Sprintf("%.2f Gbit/s", sc),
		kernel:   fmt.Sprintf("%.2f Gbit/s", k),
		ratio:    ratioStr(sc, k),
		target:   ">=0.8x",
		verdict:  verdict(len(scG) == b.cfg.runs && len(kG) == b.cfg.runs && sc >= 0.8*k),
	}
	res.rows = append(res.rows, rw, row{
		workload: "  retransmissions (median)",
		sc:       fmt.Sprintf("%.0f", median(scRetr)),
		kernel:   fmt.Sprintf("%.0f", median(kRetr)),
	})
	res.details = append(res.details,
		"upload: Gbit/s = bytes × 8 / (target sink's accept → client EOF time); runs interleaved stackcopy, kernel, ...",
		"  stackcopy runs: "+strings.Join(scLine, ", "),
		"  kernel runs:    "+strings.Join(kLine, ", "))
	if lastSC != nil {
		res.details = append(res.details, fmt.Sprintf("  stackcopy CPU by stage (run %d, per MiB): %s", b.cfg.runs, stageLine(lastSC.profile, size>>20, "MiB")))
	}
	res.details = append(res.details, netLines...)
	res.details = append(res.details, notes...)
	return res, nil
}

// sinkRecord waits (at most 10 s) for the upload sink's record of a
// connection that ended after the previous call, and checks its size.
func (b *bench) sinkRecord(ctx context.Context, want int64) (benchrole.ConnRecord, error) {
	var recs []benchrole.ConnRecord
	err := poll(ctx, 10*time.Second, 20*time.Millisecond, "the upload sink's record", func() (bool, error) {
		st, err := readStatus(b.uploadStatus)
		if err != nil {
			return false, err
		}
		if st.Open > 0 {
			return false, nil
		}
		recs, err = readRecords(b.uploadLog)
		return err == nil && len(recs) > 0, err
	})
	if err != nil {
		return benchrole.ConnRecord{}, err
	}
	last := recs[len(recs)-1]
	// Consume: the next call waits for a new record.
	if err := os.Truncate(b.uploadLog, 0); err != nil {
		return last, err
	}
	if len(recs) != 1 {
		return last, fmt.Errorf("sink saw %d connections, want 1: %+v", len(recs), recs)
	}
	if !last.OK || last.Bytes != want {
		return last, fmt.Errorf("sink received %d of %d bytes (ok=%v %s)", last.Bytes, want, last.OK, last.Err)
	}
	return last, nil
}

// short: N short sessions at once, stackcopy vs kernel, interleaved.
func (b *bench) short(ctx context.Context) (result, error) {
	var res result
	n := b.cfg.shortN
	pcap := filepath.Join(b.dir, "short.pcap")
	if err := writeShortPcap(pcap, n); err != nil {
		return res, err
	}
	target := netip.AddrPortFrom(targetAddr(), httpPort).String()
	type side struct {
		rate, cpu []float64
		completed []int
		runs, net []string
	}
	var sc, k side
	var notes []string
	measure := func(s *side, name string, fn func() (secs float64, cpu time.Duration, completed int, err error)) error {
		if err := b.waitHTTPIdle(ctx, 0); err != nil {
			return err
		}
		st0, err := readStatus(b.httpStatus)
		if err != nil {
			return err
		}
		n0, err := b.snapshot(ctx)
		if err != nil {
			return err
		}
		secs, cpu, completed, err := fn()
		if err != nil {
			return err
		}
		if err := b.waitHTTPIdle(ctx, 0); err != nil {
			notes = append(notes, fmt.Sprintf("  %s: %v", name, err))
		}
		st1, err := readStatus(b.httpStatus)
		if err != nil {
			return err
		}
		n1, err := b.snapshot(ctx)
		if err != nil {
			return err
		}
		rate := float64(n) / secs
		us := float64(cpu.Microseconds()) / float64(n)
		s.rate = append(s.rate, rate)
		s.cpu = append(s.cpu, us)
		s.completed = append(s.completed, completed)
		srvDone := st1.Completed - st0.Completed
		s.runs = append(s.runs, fmt.Sprintf("%.0f/s %.0fµs (%.2fs, cpu %.2fs, %d completed, target completed %d, failed %d)",
			rate, us, secs, cpu.Seconds(), completed, srvDone, st1.Failed-st0.Failed))
		s.net = append(s.net, n1.since(n0, b.replayIf, b.targetIf))
		b.logf("short %s: %.0f sessions/s, %.0f µs CPU/session, %d/%d completed", name, rate, us, completed, n)
		return nil
	}
	var shortStages string
	for i := 1; i <= b.cfg.runs; i++ {
		err := measure(&sc, fmt.Sprintf("run %d stackcopy", i), func() (float64, time.Duration, int, error) {
			r, err := b.runStackcopy(ctx, 3*time.Minute, fmt.Sprintf("short-%d", i), pcap, httpPort, "--speed", "0")
			if err != nil {
				return 0, 0, 0, err
			}
			shortStages = fmt.Sprintf("  stackcopy CPU by stage (run %d, per session): %s", i, stageLine(r.profile, int64(n), "session"))
			if p := r.problem(uint64(n)); p != "" {
				notes = append(notes, fmt.Sprintf("  stackcopy short run %d: %s", i, p))
			}
			notes = append(notes, r.summaryLines()...)
			notes = append(notes, fmt.Sprintf("    stackcopy short run %d: %s", i, r.tunLine()))
			return r.stats.Seconds, r.cpu, int(r.stats.Replay.Completed), nil
		})
		if err != nil {
			return res, err
		}
		err = measure(&k, fmt.Sprintf("run %d kernel", i), func() (float64, time.Duration, int, error) {
			kr, c, err := b.clientRole(ctx, 2*time.Minute, "short", "-connect", target, "-n", strconv.Itoa(n))
			if err != nil {
				return 0, 0, 0, err
			}
			if kr.Failed > 0 {
				notes = append(notes, fmt.Sprintf("  kernel short run %d: %d failed: %s", i, kr.Failed, strings.Join(kr.Errors, " | ")))
			}
			return kr.Seconds, exitCPU(c), kr.Completed, nil
		})
		if err != nil {
			return res, err
		}
	}
	scRate, kRate := median(sc.rate), median(k.rate)
	scCPU, kCPU := median(sc.cpu), median(k.cpu)
	minInt := func(xs []int) int { return slices.Min(xs) }
	res.rows = append(res.rows,
		row{
			workload: fmt.Sprintf("short sessions %d (median of %d)", n, b.cfg.runs),
			sc:       fmt.Sprintf("%.0f sess/s", scRate),
			kernel:   fmt.Sprintf("%.0f sess/s", kRate),
			ratio:    ratioStr(scRate, kRate),
			target:   ">=0.8x",
			verdict:  verdict(scRate >= 0.8*kRate),
		},
		row{
			workload: "  CPU per session (median)",
			sc:       fmt.Sprintf("%.0f µs", scCPU),
			kernel:   fmt.Sprintf("%.0f µs", kCPU),
			ratio:    ratioStr(scCPU, kCPU),
			target:   "<=1.3x",
			verdict:  verdict(scCPU <= 1.3*kCPU),
		},
		row{
			workload: "  sessions completed (worst run)",
			sc:       fmt.Sprintf("%d/%d", minInt(sc.completed), n),
			kernel:   fmt.Sprintf("%d/%d", minInt(k.completed), n),
			target:   "all",
			verdict:  verdict(minInt(sc.completed) == n && minInt(k.completed) == n),
		})
	res.details = append(res.details,
		"short: sessions/s = N / wall (stackcopy: --stats-json seconds; kernel client: its own elapsed, N goroutines at once);",
		"  CPU = the process's rusage user+sys / N; kernel client session: connect, request, whole answer, FIN, server's FIN, close")
	for i := range sc.runs {
		res.details = append(res.details,
			fmt.Sprintf("  run %d stackcopy: %s", i+1, sc.runs[i]),
			fmt.Sprintf("         %s", sc.net[i]),
			fmt.Sprintf("  run %d kernel:    %s", i+1, k.runs[i]),
			fmt.Sprintf("         %s", k.net[i]))
	}
	if shortStages != "" {
		res.details = append(res.details, shortStages)
	}
	res.details = append(res.details, dedupe(notes)...)
	return res, nil
}

// dedupe drops repeated lines, keeping the first of each.
func dedupe(lines []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range lines {
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return out
}

// waitHTTPIdle waits (at most 20 s) until the http sink has at most max
// open connections; past that it resets them (SIGUSR1) and waits 10 s more.
func (b *bench) waitHTTPIdle(ctx context.Context, max int64) error {
	cond := func() (bool, error) {
		st, err := readStatus(b.httpStatus)
		return err == nil && st.Open <= max, err
	}
	err := poll(ctx, 20*time.Second, 50*time.Millisecond, "the http sink's connections to close", cond)
	if err == nil {
		return nil
	}
	st, _ := readStatus(b.httpStatus)
	_ = syscall.Kill(b.httpSink.PID, syscall.SIGUSR1)
	if err2 := poll(ctx, 10*time.Second, 50*time.Millisecond, "the http sink's connections to reset", cond); err2 != nil {
		return err2
	}
	return fmt.Errorf("%d connections still open on the target 20s after the run; reset them", st.Open)
}
