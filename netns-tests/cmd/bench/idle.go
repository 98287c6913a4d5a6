package main

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// memSample is one memory measurement with count idle sessions open.
type memSample struct {
	count      int
	rss        int64 // median VmRSS of the client process
	slabDelta  int64 // machine-wide Slab growth since before the start
	unrecDelta int64 // SUnreclaim part of it
	ready      time.Duration
	stopTook   time.Duration
	stopped    bool // exited within the grace period after SIGTERM
	exitCode   int
	summary    []string
	net        string // drops and TCP counters while the sessions opened
	leftover   string // target connections the client left open after it exited
}

func (m memSample) String() string {
	s := fmt.Sprintf("%d sessions: VmRSS %.1f MiB, Slab %+.1f MiB (SUnreclaim %+.1f MiB), all open after %.1fs, exited %.1fs after SIGTERM (status %d)",
		m.count, mib(m.rss), mib(m.slabDelta), mib(m.unrecDelta), m.ready.Seconds(), m.stopTook.Seconds(), m.exitCode)
	if !m.stopped {
		s += " (did not exit: killed)"
	}
	return s + "\n      " + m.net
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// idle measures memory per idle session: stackcopy at 1 and at N sessions
// (VmRSS), then the kernel client at 1 and N connections (VmRSS plus the
// machine's Slab growth beyond the stackcopy run's, which is the target's
// own sockets).
func (b *bench) idle(ctx context.Context) (result, error) {
	var res result
	n := b.cfg.idleN
	pcapN := filepath.Join(b.dir, "idle.pcap")
	pcap1 := filepath.Join(b.dir, "idle-1.pcap")
	if err := writeIdlePcap(pcapN, n, b.cfg.idleFin); err != nil {
		return res, err
	}
	if err := writeIdlePcap(pcap1, 1, b.cfg.idleFin); err != nil {
		return res, err
	}
	target := netip.AddrPortFrom(targetAddr(), httpPort)
	var srcs []string
	for _, a := range kernelClients() {
		srcs = append(srcs, a.String())
	}
	// stackcopy must keep the sessions open well past the measurement:
	// they close at the captured FINs (idleFin); -t above that.
	scStart := func(pcap string) func() (*lab.Proc, error) {
		return func() (*lab.Proc, error) {
			stats := filepath.Join(b.dir, "idle.stats.json")
			return startRole(b.replay, b.cfg.stackcopy, b.stackcopyArgs(pcap, httpPort, stats, "--speed", "1", "-t", "120")...)
		}
	}
	kStart := func(count int) func() (*lab.Proc, error) {
		return func() (*lab.Proc, error) {
			return startRole(b.replay, b.self, "-role", "idle", "-connect", target.String(), "-n", strconv.Itoa(count),
				"-src", strings.Join(srcs, ","), "-hold", "3m", "-timeout", "1m")
		}
	}
	var notes []string
	// Kernel runs last: the kernel client leaves TIME_WAIT sockets behind
	// (it closes first), which would shrink the Slab during a later run.
	sc1, err := b.measureMem(ctx, "stackcopy", 1, scStart(pcap1))
	if err != nil {
		return res, err
	}
	scN, err := b.measureMem(ctx, "stackcopy", n, scStart(pcapN))
	if err != nil {
		return res, err
	}
	k1, err := b.measureMem(ctx, "kernel", 1, kStart(1))
	if err != nil {
		return res, err
	}
	kN, err := b.measureMem(ctx, "kernel", n, kStart(n))
	if err != nil {
		return res, err
	}
	for _, m := range []memSample{sc1, scN, k1, kN} {
		if m.leftover != "" {
			notes = append(notes, m.leftover)
		}
	}
	for _, m := range []memSample{sc1, scN} {
		if !m.stopped || m.stopTook > 5*time.Second {
			notes = append(notes, fmt.Sprintf("  stackcopy with %d sessions took %.1fs to exit after SIGTERM (killed: %v)", m.count, m.stopTook.Seconds(), !m.stopped))
		}
		notes = append(notes, m.summary...)
	}
	per := float64(n - 1)
	scPer := float64(scN.rss-sc1.rss) / per
	kRSSPer := float64(kN.rss-k1.rss) / per
	kSlabPer := float64(kN.slabDelta-scN.slabDelta) / float64(n)
	kPer := kRSSPer + kSlabPer
	res.rows = append(res.rows, row{
		workload: fmt.Sprintf("idle memory at %d sessions", n),
		sc:       fmt.Sprintf("%.2f KiB/sess", scPer/1024),
		kernel:   fmt.Sprintf("%.2f KiB/sess", kPer/1024),
		ratio:    ratioStr(scPer, kPer),
		target:   "sc<=12KiB",
		verdict:  verdict(scPer <= 12*1024),
	})
	res.details = append(res.details,
		fmt.Sprintf("idle: stackcopy (RSS%d − RSS1)/%d = %.2f KiB; kernel client (RSS%d − RSS1)/%d = %.2f KiB + (Slab growth kernel run − Slab growth stackcopy run)/%d = %.2f KiB",
			n, n-1, scPer/1024, n, n-1, kRSSPer/1024, n, kSlabPer/1024),
		"  (Slab is machine-wide: the stackcopy run's growth is the target's own sockets; other activity on the machine adds noise)",
		"  stackcopy "+sc1.String(),
		"  stackcopy "+scN.String(),
		"  kernel    "+k1.String(),
		"  kernel    "+kN.String())
	res.details = append(res.details, dedupe(notes)...)
	return res, nil
}

// measureMem starts a client holding count idle sessions, waits until the
// target has answered all of them and they are still open, samples the
// client's VmRSS and the machine's Slab three times, then stops it.
func (b *bench) measureMem(ctx context.Context, who string, count int, start func() (*lab.Proc, error)) (memSample, error) {
	m := memSample{count: count}
	if err := b.waitHTTPIdle(ctx, 0); err != nil {
		return m, err
	}
	// Sockets of the previous run are freed lazily (RCU, TIME_WAIT):
	// start from a Slab that stopped moving.
	settleSlab(ctx)
	before, err := meminfo("Slab", "SUnreclaim")
	if err != nil {
		return m, err
	}
	n0, err := b.snapshot(ctx)
	if err != nil {
		return m, err
	}
	t0 := time.Now()
	c, err := start()
	if err != nil {
		return m, err
	}
	// Every return ends the client; the measured stop is below.
	defer c.StopWithin(5 * time.Second)
	w := watchNetDev(c)
	err = poll(ctx, 60*time.Second, 50*time.Millisecond, fmt.Sprintf("%d idle sessions of %s on the target", count, who), func() (bool, error) {
		select {
		case <-c.Done():
			return false, fmt.Errorf("%s exited early (status %d): %s%s", c, c.ExitCode(), firstLines(c.Stdout(), 8), outputTail(c.Log()))
		default:
		}
		st, err := readStatus(b.httpStatus)
		return err == nil && st.IdleOpen >= int64(count), err
	})
	if err != nil {
		return m, err
	}
	m.ready = time.Since(t0)
	time.Sleep(2 * time.Second)
	var rss, slab, unrec []int64
	for i := range 3 {
		if i > 0 {
			time.Sleep(time.Second)
		}
		r, err := c.RSS()
		if err != nil {
			return m, err
		}
		mi, err := meminfo("Slab", "SUnreclaim")
		if err != nil {
			return m, err
		}
		rss = append(rss, r)
		slab = append(slab, mi["Slab"]-before["Slab"])
		unrec = append(unrec, mi["SUnreclaim"]-before["SUnreclaim"])
	}
	st, err := readStatus(b.httpStatus)
	if err != nil {
		return m, err
	}
	if st.IdleOpen < int64(count) {
		return m, fmt.Errorf("%s: only %d of %d sessions still open on the target after sampling", who, st.IdleOpen, count)
	}
	m.rss, m.slabDelta, m.unrecDelta = medianInt(rss), medianInt(slab), medianInt(unrec)
	n1, err := b.snapshot(ctx)
	if err != nil {
		return m, err
	}
	m.net = n1.since(n0, b.replayIf, b.targetIf)
	if tun, ok := w.get(tunName); ok && who == "stackcopy" {
		m.net = "TUN " + tunName + " " + tun.String() + ", " + m.net
	}
	m.stopTook, m.stopped, err = c.StopWithin(20 * time.Second)
	if err != nil {
		return m, err
	}
	m.exitCode = c.ExitCode()
	if who == "stackcopy" {
		r := scRun{stdout: c.Stdout()}
		m.summary = r.summaryLines()
	}
	b.logf("idle %s %d: VmRSS %.1f MiB, Slab %+.1f MiB, exit after SIGTERM %.1fs", who, count, mib(m.rss), mib(m.slabDelta), m.stopTook.Seconds())
	if err := b.waitHTTPIdle(ctx, 0); err != nil {
		m.leftover = fmt.Sprintf("  %s with %d sessions, after it exited on SIGTERM: %v", who, count, err)
		b.logf("idle %s %d: %v", who, count, err)
	}
	return m, nil
}

// settleSlab waits (at most 10 s) until the machine's Slab moved less than
// 256 KiB in half a second.
func settleSlab(ctx context.Context) {
	prev, err := meminfo("Slab")
	if err != nil {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(500 * time.Millisecond)
		cur, err := meminfo("Slab")
		if err != nil {
			return
		}
		if d := cur["Slab"] - prev["Slab"]; d < 256<<10 && d > -256<<10 {
			return
		}
		prev = cur
	}
}

func medianInt(xs []int64) int64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
