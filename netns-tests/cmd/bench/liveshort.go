package main

// The liveshort workload: live mirroring of short connections, one
// request per connection (the client asks "Connection: close", so the
// online nginx closes each connection after its answer), in the live
// workload's lab (live.go), traditional deployment:
//
//   - a ladder of paced rates (liveShortRates connections/s for
//     liveStepDur), up to the first with a request lost: CPU per mirrored
//     request of stackcopy and of its intercept;
//   - the online clients' runs: liveShortBurst short requests sent as fast
//     as the online nginx answers them, liveShortRuns times with no mirror
//     and as many with stackcopy mirroring, interleaved. All processes share this machine's two cores,
//     as the online service's do, so the run's length is what the real
//     clients feel of the mirror's cost.
//
// With a TCPCopy peer (-tcpcopy), the same ladder and run follow in the
// peer's lab (tcpcopy.go): TCPCopy, then stackcopy in the same deployment
// (its intercept on the assistant), and the rows compare the two.

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// liveShortRates are the paced steps, in connections (= requests) per
// second.
var liveShortRates = []int{500, 1000, 2000}

// liveShortBurst is the online clients' run: this many short requests,
// by liveConns clients at once.
const liveShortBurst = 10000

// TCPCopy 1.3's figures for short connections in this lab, as the
// performance issue recorded them (124–128 µs per request, the clients'
// run 4.9–5.5 s against 2.8 s with no mirror): the targets when no peer
// runs.
const (
	tcpcopyShortPerRequest  = 126.0
	tcpcopyShortRunSlowdown = 5.2 / 2.8
)

// liveShortRuns is how many clients' runs are made with no mirror and as
// many with it, interleaved: one run takes about a second, and a second
// on two shared cores is noisy.
const liveShortRuns = 3

// shortRun is the online clients' runs.
type shortRun struct {
	bare     []float64  // seconds with no mirror
	mirrored []liveStep // with the mirror; loadSecs is each run's length
}

func (r shortRun) bareSecs() float64 { return median(r.bare) }

func (r shortRun) mirrorSecs() float64 {
	var secs []float64
	for _, m := range r.mirrored {
		secs = append(secs, m.loadSecs)
	}
	return median(secs)
}

// slowdown is the median mirrored run against the median run with no
// mirror.
func (r shortRun) slowdown() float64 {
	if b := r.bareSecs(); b > 0 {
		return r.mirrorSecs() / b
	}
	return 0
}

// lost and served are the mirrored runs' totals.
func (r shortRun) lost() (lost, served int) {
	for _, m := range r.mirrored {
		lost += m.lost
		served += m.served
	}
	return lost, served
}

// String lists every run.
func (r shortRun) String() string {
	var bare, mir []string
	for _, b := range r.bare {
		bare = append(bare, fmt.Sprintf("%.2f", b))
	}
	for _, m := range r.mirrored {
		mir = append(mir, fmt.Sprintf("%.2f", m.loadSecs))
	}
	lost, served := r.lost()
	return fmt.Sprintf("%s s with no mirror, %s s mirrored (medians %.2f and %.2f s: %.2fx); %d of %d mirrored",
		strings.Join(bare, "/"), strings.Join(mir, "/"), r.bareSecs(), r.mirrorSecs(), r.slowdown(), served-lost, served)
}

func (s liveStep) icPerRequest() float64 {
	if s.mirrored == 0 {
		return 0
	}
	return float64(s.icCPU.Microseconds()) / float64(s.mirrored)
}

func (b *bench) liveShort(ctx context.Context) (res result, err error) {
	if err := resolveBinaries(&b.cfg.intercept); err != nil {
		return res, err
	}
	budget := 5 * time.Minute
	if b.cfg.tcpcopy != "" {
		budget += 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	ll, err := b.liveSetup(ctx, "bench-liveshort", liveTargetNginx)
	if err != nil {
		return res, fmt.Errorf("liveshort lab setup: %w", err)
	}
	defer b.closeLab("liveshort lab", ll.l)
	if err := ll.client.Sysctl("net.ipv4.ip_local_port_range", "1024 65000"); err != nil {
		return res, err
	}
	steps, run, err := b.shortSteps(ctx, "liveshort", ll, func(rate int) (liveStep, error) { return b.liveStep(ctx, ll, rate, false) })
	if err != nil {
		return res, err
	}
	res.details = append(res.details, fmt.Sprintf("live mirroring of short connections (a connection per request), traditional (as the live workload), %d clients, %s per step:", liveConns, liveStepDur))
	for _, st := range steps {
		res.details = append(res.details, st.String()+fmt.Sprintf("; intercept %.0f µs/request", st.icPerRequest()))
	}
	res.details = append(res.details, fmt.Sprintf("  online clients' runs, %d short requests each as fast as answered, %d with no mirror and %d with stackcopy, interleaved: %s",
		liveShortBurst, liveShortRuns, liveShortRuns, run))
	best, ok := lossless(steps)
	if !ok {
		res.rows = append(res.rows, row{workload: "live short conns (0-loss rate)", sc: "none", kernel: "n/a", ratio: "-", verdict: "FAIL"})
		return res, nil
	}
	sys, err := b.liveStep(ctx, ll, best.rate, true)
	if err != nil {
		return res, fmt.Errorf("%d conn/s, counting system calls: %w", best.rate, err)
	}
	res.details = append(res.details, fmt.Sprintf("  at %d conn/s, one more step with perf stat counting raw_syscalls:sys_enter: %s; %d of %d mirrored",
		best.rate, sys.syscalls(), sys.mirrored, sys.served))
	res.details = append(res.details, fmt.Sprintf("  stackcopy CPU by stage at %d conn/s (whole run, start and drain included): %s", best.rate, stageLine(best.profile, int64(best.mirrored), "request")))
	lostVerdict := "ok"
	lost, served := run.lost()
	if lost != 0 {
		lostVerdict = "FAIL"
	}
	res.rows = append(res.rows,
		row{workload: "live short conns (0-loss rate)", sc: fmt.Sprintf("%d conn/s", best.rate), kernel: "n/a (none)", ratio: "-", target: fmt.Sprintf("%d/%d", best.mirrored, best.served), verdict: "ok"},
		row{workload: "  stackcopy CPU per request", sc: fmt.Sprintf("%.0f µs", best.scPerReq()), kernel: "n/a", ratio: "-",
			target: fmt.Sprintf("<=%.0fµs*", tcpcopyShortPerRequest), verdict: verdict(best.scPerReq() <= tcpcopyShortPerRequest)},
		row{workload: "  intercept CPU per request", sc: fmt.Sprintf("%.0f µs", best.icPerRequest()), kernel: "n/a", ratio: "-", verdict: "-"},
		row{workload: fmt.Sprintf("  clients' run, %d requests", liveShortBurst), sc: fmt.Sprintf("%.2f s", run.mirrorSecs()), kernel: fmt.Sprintf("%.2f s no mirror", run.bareSecs()), ratio: ratioStr(run.mirrorSecs(), run.bareSecs()),
			target: fmt.Sprintf("<=%.2fx*", tcpcopyShortRunSlowdown*1.1), verdict: verdict(run.slowdown() <= tcpcopyShortRunSlowdown*1.1)},
		row{workload: "  clients' runs mirrored, lost", sc: fmt.Sprintf("%d/%d", lost, served), kernel: "n/a", ratio: "-", target: "0", verdict: lostVerdict},
	)
	res.details = append(res.details, fmt.Sprintf("  * targets: TCPCopy 1.3 in this lab as recorded in the performance issue (%.0f µs per short request; its clients' run 4.9–5.5 s against 2.8 s with no mirror, so ≤ 110%% of its %.2fx); with -tcpcopy the peer's own figures follow below",
		tcpcopyShortPerRequest, tcpcopyShortRunSlowdown))
	if b.cfg.tcpcopy == "" {
		res.details = append(res.details, "  no tcpcopy peer: build one with netns-tests/tcpcopy-peer/build.sh DIR and run make bench TCPCOPY=DIR")
		return res, nil
	}
	if err := resolveBinaries(&b.cfg.tcpcopy, &b.cfg.tcIntercept); err != nil {
		return res, err
	}
	details, rows, err := b.shortPeer(ctx)
	res.details = append(res.details, details...)
	res.rows = append(res.rows, rows...)
	if err != nil {
		return res, fmt.Errorf("tcpcopy peer, short connections: %w", err)
	}
	return res, nil
}

// shortSteps runs the short-connection ladder and the online clients'
// runs (with no mirror, then with the mirror step runs) in ll, and leaves
// ll's load at paced short connections.
func (b *bench) shortSteps(ctx context.Context, label string, ll *liveLab, step func(rate int) (liveStep, error)) ([]liveStep, shortRun, error) {
	var run shortRun
	ll.load = loadShape{short: true}
	steps, err := b.ladder(label, liveShortRates, step)
	if err != nil {
		return nil, run, err
	}
	ll.load.count = liveShortBurst
	defer func() { ll.load.count = 0 }()
	for range liveShortRuns {
		bare, err := b.runLoad(ctx, ll, 0)
		if err != nil {
			return nil, run, fmt.Errorf("%s, clients' run with no mirror: %w", label, err)
		}
		if bare.Completed != liveShortBurst {
			return nil, run, fmt.Errorf("%s, clients' run with no mirror: %d of %d requests answered; %v", label, bare.Completed, liveShortBurst, bare.Errors)
		}
		run.bare = append(run.bare, bare.Seconds)
		m, err := step(0)
		if err != nil {
			return nil, run, fmt.Errorf("%s, clients' run: %w", label, err)
		}
		run.mirrored = append(run.mirrored, m)
	}
	b.logf("%s clients' runs: %s", label, run)
	return steps, run, nil
}

// shortPeer runs the short-connection ladder and the clients' run with
// TCPCopy and then with stackcopy in TCPCopy's deployment, and compares
// them.
func (b *bench) shortPeer(ctx context.Context) ([]string, []row, error) {
	tl, err := b.tcpcopySetup(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("tcpcopy lab setup: %w", err)
	}
	defer b.closeLab("tcpcopy lab", tl.l)
	if err := tl.client.Sysctl("net.ipv4.ip_local_port_range", "1024 65000"); err != nil {
		return nil, nil, err
	}
	peer, peerRun, err := b.shortSteps(ctx, "liveshort tcpcopy", &tl.liveLab, func(rate int) (liveStep, error) { return b.tcpcopyStep(ctx, tl, rate) })
	if err != nil {
		return nil, nil, err
	}
	if err := b.advancedIntercept(ctx, tl); err != nil {
		return nil, nil, err
	}
	adv, advRun, err := b.shortSteps(ctx, "liveshort advanced", &tl.liveLab, func(rate int) (liveStep, error) { return b.liveStep(ctx, &tl.liveLab, rate, false) })
	if err != nil {
		return nil, nil, err
	}
	details := []string{
		"tcpcopy peer, short connections, side by side (the live workload's peer lab): CPU per mirrored request of the mirror and of its intercept (µs), requests lost",
		"     rate |  tcpcopy  interc.   lost |  stackcopy interc.  lost",
	}
	cell := func(steps []liveStep, rate int) string {
		s, ok := stepAt(steps, rate)
		if !ok {
			return fmt.Sprintf("%7s %7s %6s", "-", "-", "-")
		}
		return fmt.Sprintf("%7.0f %7.0f %6d", s.scPerReq(), s.icPerRequest(), s.lost)
	}
	for _, rate := range liveShortRates {
		details = append(details, fmt.Sprintf("   %6d | %s | %s", rate, cell(peer, rate), cell(adv, rate)))
	}
	details = append(details,
		fmt.Sprintf("  online clients' runs, %d short requests each, with TCPCopy: %s", liveShortBurst, peerRun),
		fmt.Sprintf("  the same with stackcopy: %s", advRun))
	// Like for like at the highest rate stackcopy mirrored everything
	// that the peer also ran (whether or not the peer lost requests: the
	// target is TCPCopy's cost, with none lost).
	s, ok := lossless(adv)
	if !ok {
		return details, nil, fmt.Errorf("stackcopy lost requests at every rate in TCPCopy's deployment")
	}
	p, found := stepAt(peer, s.rate)
	if !found {
		p = peer[len(peer)-1]
		details = append(details, fmt.Sprintf("  TCPCopy stopped before %d conn/s: compared with its last step, %d conn/s", s.rate, p.rate))
	}
	// The clients' runs: each mirror's median slowdown against the runs
	// with no mirror in its own lab, interleaved with its own, so drift
	// between the two labs' runs cancels.
	sc, tc := advRun.slowdown(), peerRun.slowdown()
	scLost, scServed := advRun.lost()
	tcLost, tcServed := peerRun.lost()
	rows := []row{
		{workload: fmt.Sprintf("  short CPU/request vs tcpcopy @%d/s", s.rate), sc: fmt.Sprintf("%.0f µs", s.scPerReq()), kernel: fmt.Sprintf("tcpcopy %.0f µs", p.scPerReq()),
			ratio: ratioStr(s.scPerReq(), p.scPerReq()), target: "<=1.0x", verdict: verdict(s.scPerReq() <= p.scPerReq())},
		{workload: "  short, lost vs tcpcopy", sc: fmt.Sprintf("%d/%d", s.lost, s.served), kernel: fmt.Sprintf("tcpcopy %d/%d", p.lost, p.served), ratio: "-", target: "0", verdict: verdict(s.lost == 0)},
		{workload: "  short intercept CPU/request", sc: fmt.Sprintf("%.0f µs", s.icPerRequest()), kernel: fmt.Sprintf("tcpcopy %.0f µs", p.icPerRequest()),
			ratio: ratioStr(s.icPerRequest(), p.icPerRequest()), target: "<=1.0x", verdict: verdict(s.icPerRequest() <= p.icPerRequest())},
		{workload: "  clients' runs, lost vs tcpcopy", sc: fmt.Sprintf("%d/%d", scLost, scServed), kernel: fmt.Sprintf("tcpcopy %d/%d", tcLost, tcServed),
			ratio: "-", target: "0", verdict: verdict(scLost == 0)},
		{workload: "  clients' run vs with tcpcopy", sc: fmt.Sprintf("%.2f s", advRun.mirrorSecs()), kernel: fmt.Sprintf("tcpcopy %.2f s", peerRun.mirrorSecs()),
			ratio: ratioStr(sc, tc), target: "<=1.10x", verdict: verdict(sc > 0 && tc > 0 && sc <= 1.1*tc)},
	}
	details = append(details, fmt.Sprintf("  clients' run slowdown against no mirror (medians): stackcopy %.2fx, TCPCopy %.2fx (the row's ratio is theirs)", sc, tc))
	return details, rows, nil
}
