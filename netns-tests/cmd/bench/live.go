package main

// The live workload: live mirroring in the traditional architecture (see
// README.md, "Deployment: live mirroring, traditional") at increasing
// request rates, in a lab of its own:
//
//	client 198.18.1.10 ── online 198.18.1.1 (nginx :80, stackcopy live,
//	                      198.18.2.1          raw egress, ip_forward)
//	                          │
//	                      target 198.18.2.2 (nginx :80, the same file;
//	                                         intercept on NFQUEUE 0 for
//	                                         --sport 80; 198.18.1.0/24 via
//	                                         the online host)
//
// Per step a load role in the client namespace sends requests at a fixed
// rate over keep-alive connections for liveStepDur; the online nginx's
// access log counts what was served, the target nginx's what the target
// received. The target serves the same file as the online host, as a test
// instance of the same service would: its answers are as long as the
// captured ones, so each of stackcopy's turns ends when the whole answer
// is back. (With a target whose answers are shorter, such as the
// recorder's, every turn also waits stackcopy's 20 ms of silence, which
// caps a keep-alive session at about 45 requests/s.)
// stackcopy runs afresh for each step (its --stats-json is written at exit);
// intercept runs throughout. There is no kernel-side equivalent of live
// mirroring, so no comparison column.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/benchrole"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// Live lab addresses (a lab of their own, so they may repeat the others').
const (
	liveClient = "198.18.1.10/24"
	liveOnline = "198.18.1.1/24"
	liveMirror = "198.18.2.1/24" // the online host's side towards the target
	liveTarget = "198.18.2.2/24"
	liveNet    = "198.18.1.0/24"
)

// liveRates are the steps, up to the first with loss or that the load
// generator cannot reach.
var liveRates = []int{250, 500, 1000, 2000, 4000, 8000, 16000}

const (
	liveStepDur = 5 * time.Second
	liveConns   = 20
)

// tcpcopy 1.3's CPU in this lab (keep-alive, traditional architecture),
// as the performance issue measured it side by side: the live targets.
const (
	tcpcopyPerRequest         = 17.5
	tcpcopyInterceptPerAnswer = 16.0
)

// liveStep is one rate step.
type liveStep struct {
	profile   string // stackcopy's --cpuprofile
	rate      int
	achieved  float64
	loadFail  int
	served    int
	mirrored  int
	lost      int
	scCPU     time.Duration
	icCPU     time.Duration
	counted   bool          // perf counted system calls this step
	scSys     uint64        // stackcopy's system calls this step
	icSys     uint64        // intercept's
	sysErr    string        // why the system calls were not counted
	answers   uint64        // relayed by intercept this step (its stats line)
	drain     time.Duration // load end → last mirrored request seen
	loadSecs  float64       // the load's duration
	noStats   string        // why stackcopy's stats are missing
	capDrops  uint64        // stackcopy's capture drops
	icDrops   uint64        // intercept's kernel (NFQUEUE) drops, this step
	sessions  uint64
	completed uint64
	loadErrs  []string
	// With a comparison (liveCompare): relay bytes stackcopy received
	// this step, and the comparison's counts.
	relayBytes uint64
	compare    *liveCompareStats
}

// liveCompareStats is the comparison's part of stackcopy's --stats-json.
type liveCompareStats struct {
	Requests  int64 `json:"requests"`
	Compared  int64 `json:"compared"`
	Identical int64 `json:"identical"`
	Different int64 `json:"different"`
	Missing   int64 `json:"missing"`
}

func (s liveStep) scPerReq() float64 {
	if s.mirrored == 0 {
		return 0
	}
	return float64(s.scCPU.Microseconds()) / float64(s.mirrored)
}

// syscalls is the step's system calls per mirrored request (stackcopy)
// and per relayed answer (intercept), or why they were not counted.
func (s liveStep) syscalls() string {
	if s.sysErr != "" {
		return "syscalls not counted: " + s.sysErr
	}
	if s.mirrored == 0 || s.answers == 0 {
		return "syscalls: nothing mirrored"
	}
	return fmt.Sprintf("syscalls %.1f/req (stackcopy), %.1f/answer (intercept)", float64(s.scSys)/float64(s.mirrored), float64(s.icSys)/float64(s.answers))
}

func (s liveStep) icPerAnswer() float64 {
	if s.answers == 0 {
		return 0
	}
	return float64(s.icCPU.Microseconds()) / float64(s.answers)
}

// mirrorRate is what the target received per second of load plus drain.
func (s liveStep) mirrorRate() float64 {
	if d := s.loadSecs + s.drain.Seconds(); d > 0 {
		return float64(s.mirrored) / d
	}
	return 0
}

// clean: nothing lost, something served, and the load reached 95% of
// the rate offered. A ladder stops at the first step that is not.
func (s liveStep) clean() bool {
	return s.lost == 0 && s.served > 0 && s.achieved >= 0.95*float64(s.rate)
}

// keptUp: nothing lost and the mirror finished within 1 s of the load.
func (s liveStep) keptUp() bool { return s.lost == 0 && s.served > 0 && s.drain <= time.Second }

// lossless is the highest clean step.
func lossless(steps []liveStep) (liveStep, bool) {
	var best liveStep
	ok := false
	for _, st := range steps {
		if st.clean() {
			best, ok = st, true
		}
	}
	return best, ok
}

// stepAt is the step run at rate.
func stepAt(steps []liveStep, rate int) (liveStep, bool) {
	for _, s := range steps {
		if s.rate == rate {
			return s, true
		}
	}
	return liveStep{}, false
}

func (s liveStep) String() string {
	drops := fmt.Sprintf("capture drops %d", s.capDrops)
	if s.noStats != "" {
		drops = "capture drops ? (" + s.noStats + ")"
	}
	offered := fmt.Sprintf("%6d req/s offered", s.rate)
	if s.rate == 0 {
		offered = "   unpaced run    "
	}
	line := fmt.Sprintf("  %s  %7.0f achieved  served %6d  mirrored %6d  lost %5d  drain %4.1fs (mirror %5.0f req/s)  stackcopy %5.0f µs/req  intercept %5.0f µs/answer (%d answers)  %s, nfqueue drops %d",
		offered, s.achieved, s.served, s.mirrored, s.lost, s.drain.Seconds(), s.mirrorRate(), s.scPerReq(), s.icPerAnswer(), s.answers, drops, s.icDrops)
	if s.counted {
		line += "; " + s.syscalls()
	}
	return line
}

// liveScStats is the part of stackcopy's --stats-json the workload reads.
type liveScStats struct {
	Drops  uint64 `json:"capture_drops"`
	Replay struct {
		Sessions, Completed uint64
	}
	Relay *struct {
		Bytes uint64
	} `json:"relay"`
	Compare *liveCompareStats `json:"compare"`
}

// liveLab is the workload's lab.
type liveLab struct {
	l                      *lab.Lab
	client, online, target *lab.Host
	onlineIf               string // the online host's interface towards the clients (captured)
	mirrorIf               string // the online host's interface towards the target
	keyFile                string
	targetAccess           string // target nginx's access log (liveTargetNginx)
	targetLog              string // target recorder's log (liveTargetRecorder)
	access                 string
	icpt                   *lab.Proc
	relayAddr              netip.Addr // where intercept listens (-s)
	scExtra                []string   // more stackcopy flags for every step
	load                   loadShape  // how the client offers its requests
}

// loadShape is how the liveload role offers requests: by default at the
// step's rate for liveStepDur over liveConns keep-alive connections.
type loadShape struct {
	short bool // a new connection per request (Connection: close)
	count int  // > 0: this many requests, unpaced, by liveConns workers
}

// args are the liveload role's flags for this shape at rate.
func (ls loadShape) args(rate int) []string {
	a := []string{"-rate", strconv.Itoa(rate), "-duration", liveStepDur.String(), "-conns", strconv.Itoa(liveConns)}
	if ls.count > 0 {
		a = []string{"-count", strconv.Itoa(ls.count), "-conns", strconv.Itoa(liveConns)}
	}
	if ls.short {
		a = append(a, "-short")
	}
	return a
}

// liveTargetServer is what serves liveTarget:80 in the live lab.
type liveTargetServer int

const (
	// liveTargetNginx serves the online host's file, as a test instance
	// of the same service would (the live workload).
	liveTargetNginx liveTargetServer = iota
	// liveTargetRecorder is the recorder (b.cfg.recorder, -mode http),
	// which logs each request's size and digests (the lossy workload).
	liveTargetRecorder
)

func (b *bench) live(ctx context.Context) (res result, err error) {
	if err := resolveBinaries(&b.cfg.intercept); err != nil {
		return res, err
	}
	budget := 6 * time.Minute
	if b.cfg.tcpcopy != "" {
		budget += 3 * time.Minute // the peer's steps
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	ll, err := b.liveSetup(ctx, "bench-live", liveTargetNginx)
	if err != nil {
		return res, fmt.Errorf("live lab setup: %w", err)
	}
	defer b.closeLab("live lab", ll.l)
	steps, err := b.ladder("live", liveRates, func(rate int) (liveStep, error) { return b.liveStep(ctx, ll, rate, false) })
	if err != nil {
		return res, err
	}
	res.details = append(res.details, fmt.Sprintf("live mirroring, traditional (nginx + stackcopy live -o raw on the online host; nginx + intercept -q 0 on the target), %d keep-alive connections, %s per step:", liveConns, liveStepDur))
	for _, st := range steps {
		res.details = append(res.details, st.String())
	}
	last := steps[len(steps)-1]
	switch {
	case last.lost != 0:
		res.details = append(res.details, fmt.Sprintf("  stopped at %d req/s: %d of %d served requests not mirrored", last.rate, last.lost, last.served))
	case last.achieved < 0.95*float64(last.rate):
		res.details = append(res.details, fmt.Sprintf("  stopped at %d req/s: the load generator reached only %.0f req/s", last.rate, last.achieved))
	}
	s, ok := lossless(steps)
	if !ok {
		res.details = append(res.details, "live mirroring: no rate with 0 lost (no kernel-side comparison: the kernel has no live mirroring)")
		res.rows = append(res.rows, row{workload: "live mirroring (0-loss rate)", sc: "none", kernel: "n/a", ratio: "-", verdict: "FAIL"})
		return res, nil
	}
	kept := "none"
	for _, st := range steps {
		if st.keptUp() {
			kept = fmt.Sprintf("%d req/s", st.rate)
		}
	}
	res.details = append(res.details, fmt.Sprintf("  the mirror kept up (nothing lost, drained within 1 s of the load) up to %s", kept))
	bound := ""
	if s.rate == liveRates[len(liveRates)-1] {
		bound = " (the highest rate tried: no loss seen)"
	}
	res.details = append(res.details, fmt.Sprintf("live mirroring: highest rate with 0 lost = %d req/s%s; stackcopy %.0f µs/request; intercept %.0f µs/answer (no kernel-side comparison: the kernel has no live mirroring)",
		s.rate, bound, s.scPerReq(), s.icPerAnswer()))
	res.details = append(res.details, fmt.Sprintf("  stackcopy CPU by stage at %d req/s (whole run, start and drain included): %s", s.rate, stageLine(s.profile, 0, "")))
	// System calls: one more step at the same rate with perf counting.
	sys, err := b.liveStep(ctx, ll, s.rate, true)
	if err != nil {
		return res, fmt.Errorf("%d req/s, counting system calls: %w", s.rate, err)
	}
	res.details = append(res.details, fmt.Sprintf("  at %d req/s, one more step with perf stat counting raw_syscalls:sys_enter over the load and drain: %s; %d of %d mirrored (CPU with the count attached: stackcopy %.0f µs/req, intercept %.0f µs/answer)",
		s.rate, sys.syscalls(), sys.mirrored, sys.served, sys.scPerReq(), sys.icPerAnswer()))
	res.rows = append(res.rows,
		row{workload: "live mirroring (0-loss rate)", sc: fmt.Sprintf("%d req/s", s.rate), kernel: "n/a (none)", ratio: "-", target: fmt.Sprintf("%d/%d", s.mirrored, s.served), verdict: "ok"},
		row{workload: "  kept up (drain ≤ 1 s) up to", sc: kept, kernel: "n/a", ratio: "-"},
		// No tcpcopy peer runs here: the targets are tcpcopy 1.3's keep-alive
		// figures as the performance issue recorded them in this lab.
		row{workload: "  stackcopy CPU per request", sc: fmt.Sprintf("%.0f µs", s.scPerReq()), kernel: "n/a", ratio: "-",
			target: fmt.Sprintf("<=%.1fµs*", tcpcopyPerRequest), verdict: verdict(s.scPerReq() <= tcpcopyPerRequest)},
		row{workload: "  intercept CPU per answer", sc: fmt.Sprintf("%.0f µs", s.icPerAnswer()), kernel: "n/a", ratio: "-",
			target: fmt.Sprintf("<=%.0fµs*", tcpcopyInterceptPerAnswer), verdict: verdict(s.icPerAnswer() <= tcpcopyInterceptPerAnswer)})
	res.details = append(res.details, fmt.Sprintf("  * targets: tcpcopy 1.3 and its intercept in this lab, keep-alive, as recorded in the performance issue (%.1f µs per request, %.0f µs per answer); with -tcpcopy the peer's own figures follow below",
		tcpcopyPerRequest, tcpcopyInterceptPerAnswer))
	details, rows, err := b.liveCompare(ctx, ll)
	if err != nil {
		return res, fmt.Errorf("live comparison: %w", err)
	}
	res.details = append(res.details, details...)
	res.rows = append(res.rows, rows...)
	if b.cfg.tcpcopy == "" {
		res.details = append(res.details, "  no tcpcopy peer: build one with netns-tests/tcpcopy-peer/build.sh DIR and run make bench TCPCOPY=DIR")
		return res, nil
	}
	if err := resolveBinaries(&b.cfg.tcpcopy, &b.cfg.tcIntercept); err != nil {
		return res, err
	}
	details, rows, err = b.tcpcopyPeer(ctx, steps)
	res.details = append(res.details, details...)
	res.rows = append(res.rows, rows...)
	if err != nil {
		return res, fmt.Errorf("tcpcopy peer: %w", err)
	}
	return res, nil
}

// closeLab closes l and logs a failure.
func (b *bench) closeLab(what string, l *lab.Lab) {
	if err := l.Close(); err != nil {
		b.logf("%s: %v", what, err)
	}
}

// ladder runs step at each of rates in turn, up to the first rate that
// loses requests, serves none, or that the load generator cannot reach,
// and logs each step under label.
func (b *bench) ladder(label string, rates []int, step func(rate int) (liveStep, error)) ([]liveStep, error) {
	var steps []liveStep
	for _, rate := range rates {
		st, err := step(rate)
		if err != nil {
			return steps, fmt.Errorf("%s at %d req/s: %w", label, rate, err)
		}
		b.logf("%s %s", label, strings.TrimSpace(st.String()))
		for _, e := range st.loadErrs {
			b.logf("%s   load error: %s", label, e)
		}
		steps = append(steps, st)
		if !st.clean() {
			break
		}
	}
	return steps, nil
}

// liveSetup builds the live lab (named name) and starts intercept, nginx
// on the online host and the given server on the target. On an error it
// closes what it built.
func (b *bench) liveSetup(ctx context.Context, name string, server liveTargetServer) (ll *liveLab, err error) {
	l, err := lab.New(name)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.closeLab(name, l)
			ll = nil
		}
	}()
	ll = &liveLab{l: l}
	if ll.client, err = l.Host("client"); err != nil {
		return ll, err
	}
	if ll.online, err = l.Host("online"); err != nil {
		return ll, err
	}
	if ll.target, err = l.Host("target"); err != nil {
		return ll, err
	}
	if _, ll.onlineIf, err = l.Link(ll.client, netip.MustParsePrefix(liveClient), ll.online, netip.MustParsePrefix(liveOnline)); err != nil {
		return ll, err
	}
	// Traditional: the target routes the (real) client prefix back to the
	// online host, which forwards; intercept keeps the answers from leaving.
	if ll.mirrorIf, _, err = l.ForwardPath(ll.online, netip.MustParsePrefix(liveMirror), ll.target, netip.MustParsePrefix(liveTarget), netip.MustParsePrefix(liveNet)); err != nil {
		return ll, err
	}
	targetAddr := netip.MustParsePrefix(liveTarget).Addr()
	for _, step := range []error{
		ll.online.Sysctl("net.core.somaxconn", "16384"),
		ll.target.Sysctl("net.core.somaxconn", "16384"),
	} {
		if step != nil {
			return ll, step
		}
	}
	if ll.keyFile, err = l.WriteKey("relay.key"); err != nil {
		return ll, err
	}
	ll.relayAddr = targetAddr

	if err := ll.target.IPTables("-I", "OUTPUT", "-p", "tcp", "--sport", "80", "-j", "NFQUEUE", "--queue-num", "0"); err != nil {
		return ll, err
	}
	if ll.icpt, err = ll.target.Start(b.cfg.intercept, "--key-file", ll.keyFile, "-q", "0", "--stats-interval", "1s"); err != nil {
		return ll, err
	}
	if err := poll(ctx, 15*time.Second, 50*time.Millisecond, "intercept to start", func() (bool, error) {
		return strings.Contains(ll.icpt.Log(), "intercept ready"), nil
	}); err != nil {
		return ll, fmt.Errorf("%w; intercept log: %s", err, outputTail(ll.icpt.Log()))
	}

	if err := ll.serveAnswer(server == liveTargetNginx); err != nil {
		return ll, err
	}
	serverName := "nginx"
	switch server {
	case liveTargetNginx:
	case liveTargetRecorder:
		serverName = "recorder"
		if ll.targetLog, err = startRecorder(ll.target, b.cfg.recorder, netip.AddrPortFrom(targetAddr, 80)); err != nil {
			return ll, err
		}
	default:
		return ll, fmt.Errorf("live lab: unknown target server %d", server)
	}
	b.logf("%s lab %s: client %s ── online %s/%s (%s: nginx, stackcopy live) ── target %s (%s, intercept on NFQUEUE 0)",
		name, l.Prefix(), liveClient, liveOnline, liveMirror, ll.onlineIf, liveTarget, serverName)
	return ll, nil
}

// serveAnswer starts the online host's nginx serving the live workload's
// 280-byte answer and, withTarget, a target nginx serving the same file,
// as a test instance of the same service would; it notes their access
// logs and returns once they listen.
func (ll *liveLab) serveAnswer(withTarget bool) error {
	ng, err := lab.ServeFiles(ll.online, netip.AddrPortFrom(netip.MustParsePrefix(liveOnline).Addr(), 80), map[string][]byte{"a.txt": []byte(strings.Repeat("answer ", 40))})
	if err != nil {
		return err
	}
	ll.access = ng.Config.AccessLog()
	if !withTarget {
		return nil
	}
	tng, err := lab.StartNginx(ll.target, netip.AddrPortFrom(netip.MustParsePrefix(liveTarget).Addr(), 80), ng.Config.Root)
	if err != nil {
		return err
	}
	ll.targetAccess = tng.Config.AccessLog()
	return nil
}

// startRecorder starts the recorder (-mode http) on h and returns its log
// once it listens.
func startRecorder(h *lab.Host, bin string, listen netip.AddrPort) (string, error) {
	logPath := filepath.Join(h.Lab().Dir(), fmt.Sprintf("recorder-%s-%d.jsonl", h.Label(), listen.Port()))
	if _, err := h.StartServer(listen, bin, "-listen", listen.String(), "-mode", "http", "-log", logPath); err != nil {
		return "", err
	}
	return logPath, nil
}

// liveStep runs stackcopy live for one rate step; extra are more
// stackcopy flags. With countSys, perf counts both processes' system
// calls: a separate step, as counting costs each call a little CPU.
func (b *bench) liveStep(ctx context.Context, ll *liveLab, rate int, countSys bool, extra ...string) (liveStep, error) {
	st := liveStep{rate: rate}
	statsPath := filepath.Join(ll.l.Dir(), fmt.Sprintf("live-%d-%d.json", rate, time.Now().UnixNano()))
	st.profile = strings.TrimSuffix(statsPath, ".json") + ".cpu.prof"
	args := append([]string{"-v", "--stats-json", statsPath, "--cpuprofile", st.profile,
		"-x", "198.18.1.1:80-198.18.2.2:80", "-i", ll.onlineIf, "-s", ll.relayAddr.String(),
		"--key-file", ll.keyFile, "-o", "raw"}, ll.scExtra...)
	args = append(args, b.cfg.scFlags...)
	sc, err := ll.online.Start(b.cfg.stackcopy, append(args, extra...)...)
	if err != nil {
		return st, err
	}
	defer sc.Stop()
	if err := poll(ctx, 20*time.Second, 50*time.Millisecond, "stackcopy to capture", func() (bool, error) {
		select {
		case <-sc.Done():
			return false, errors.New("stackcopy exited")
		default:
		}
		return strings.Contains(sc.Log(), "mirroring live traffic"), nil
	}); err != nil {
		return st, fmt.Errorf("%w; stackcopy log: %s", err, outputTail(sc.Log()))
	}
	// Let the relay channel come up before the first answer.
	time.Sleep(500 * time.Millisecond)

	ic0, rel0 := interceptStats(ll.icpt.Log())
	sc0, err1 := sc.CPU()
	icCPU0, err2 := ll.icpt.CPU()
	if err := errors.Join(err1, err2); err != nil {
		return st, err
	}
	var scCount, icCount *syscallCount
	st.counted = countSys
	if countSys {
		scCount, err1 = countSyscalls(sc.PID)
		icCount, err2 = countSyscalls(ll.icpt.PID)
		if err := errors.Join(err1, err2); err != nil {
			st.sysErr = err.Error()
		}
	}
	// On an early return; stop is a no-op once stopped, or on nil.
	defer scCount.stop()
	defer icCount.stop()

	if err := b.loadAndDrain(ctx, ll, &st); err != nil {
		return st, err
	}
	sc1, err1 := sc.CPU()
	icCPU1, err2 := ll.icpt.CPU()
	var serr1, serr2 error
	st.scSys, serr1 = scCount.stop()
	st.icSys, serr2 = icCount.stop()
	if err := errors.Join(serr1, serr2); err != nil && st.sysErr == "" {
		st.sysErr = err.Error()
	}
	if err := errors.Join(err1, err2); err != nil {
		return st, err
	}
	st.scCPU, st.icCPU = sc1-sc0, icCPU1-icCPU0
	// intercept logs its stats every second.
	time.Sleep(1100 * time.Millisecond)
	ic1, rel1 := interceptStats(ll.icpt.Log())
	st.icDrops, st.answers = ic1-ic0, rel1-rel0

	// stackcopy writes its stats at exit; one still busy with a backlog
	// when the stop grace ends is killed and writes none.
	if err := sc.Stop(); err != nil {
		b.logf("live: stackcopy stop: %v", err)
	}
	raw, err := os.ReadFile(statsPath)
	if err != nil {
		st.noStats = "stackcopy killed at stop, no stats"
		b.logf("live: %d req/s: stackcopy wrote no stats (%v); log:%s", rate, err, outputTail(sc.Log()))
		return st, nil
	}
	var ss liveScStats
	if err := json.Unmarshal(raw, &ss); err != nil {
		return st, fmt.Errorf("%s: %w", statsPath, err)
	}
	st.capDrops, st.sessions, st.completed = ss.Drops, ss.Replay.Sessions, ss.Replay.Completed
	if ss.Relay != nil {
		st.relayBytes = ss.Relay.Bytes
	}
	st.compare = ss.Compare
	return st, nil
}

// loadAndDrain offers the client's load (ll.load at st.rate), then waits
// for the mirror to drain, and records the load, what the online host
// served and what reached the target.
func (b *bench) loadAndDrain(ctx context.Context, ll *liveLab, st *liveStep) error {
	served0, err := countLines(ll.access)
	if err != nil {
		return err
	}
	recs0, err := countLines(ll.targetAccess)
	if err != nil {
		return err
	}
	lr, err := b.runLoad(ctx, ll, st.rate)
	if err != nil {
		return err
	}
	st.achieved, st.loadFail, st.loadErrs, st.loadSecs = lr.Rate, lr.Failed, lr.Errors, lr.Seconds

	// nginx logs a request when it answered it; give it a moment.
	time.Sleep(200 * time.Millisecond)
	served1, err := countLines(ll.access)
	if err != nil {
		return err
	}
	st.served = served1 - served0
	// Wait for the mirror to drain: every served request at the target, or
	// no progress for 3 s (bounded at 20 s: what is not there by then
	// counts as lost).
	var recs1 int
	loadEnd := time.Now()
	lastChange, prev := time.Now(), -1
	deadline := time.Now().Add(20 * time.Second)
	for {
		if recs1, err = countLines(ll.targetAccess); err != nil {
			return err
		}
		if recs1-recs0 >= st.served || time.Now().After(deadline) || time.Since(lastChange) > 3*time.Second || ctx.Err() != nil {
			break
		}
		if recs1 != prev {
			prev, lastChange = recs1, time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
	st.mirrored = recs1 - recs0
	st.lost = st.served - st.mirrored
	st.drain = max(lastChange.Sub(loadEnd), 0)
	return nil
}

// runLoad runs the liveload role in the client namespace, shaped by
// ll.load, and returns its result.
func (b *bench) runLoad(ctx context.Context, ll *liveLab, rate int) (benchrole.LiveLoadResult, error) {
	var lr benchrole.LiveLoadResult
	onlineAddr := netip.MustParsePrefix(liveOnline).Addr()
	timeout := liveStepDur + 10*time.Second
	if ll.load.count > 0 {
		timeout = time.Minute
	}
	rctx, cancel := context.WithTimeout(ctx, timeout+15*time.Second)
	defer cancel()
	args := append([]string{"-role", "liveload", "-connect", netip.AddrPortFrom(onlineAddr, 80).String(), "-timeout", timeout.String()}, ll.load.args(rate)...)
	load, err := startRole(ll.client, b.self, args...)
	if err != nil {
		return lr, err
	}
	if err := load.WaitContext(rctx, roleGrace); err != nil {
		return lr, err
	}
	if err := json.Unmarshal([]byte(load.Stdout()), &lr); err != nil {
		return lr, fmt.Errorf("%s: result %q: %w", load, load.Stdout(), err)
	}
	return lr, nil
}

// liveCompareRate is the rate the comparison's cost is measured at: well
// inside what the mirror keeps up with on this machine.
const liveCompareRate = 2000

// liveCompare measures what comparing costs live, in the same lab, one
// step each: intercept relaying headers only and stackcopy not comparing
// (the default), then intercept relaying whole answers (--full-payload)
// and stackcopy comparing every answer with production's (--compare).
func (b *bench) liveCompare(ctx context.Context, ll *liveLab) ([]string, []row, error) {
	plain, err := b.liveStep(ctx, ll, liveCompareRate, false)
	if err != nil {
		return nil, nil, err
	}
	if err := ll.icpt.Stop(); err != nil {
		b.logf("live compare: intercept stop: %v", err)
	}
	if ll.icpt, err = ll.target.Start(b.cfg.intercept, "--key-file", ll.keyFile, "-q", "0", "--stats-interval", "1s", "--full-payload"); err != nil {
		return nil, nil, err
	}
	if err := poll(ctx, 15*time.Second, 50*time.Millisecond, "intercept --full-payload to start", func() (bool, error) {
		return strings.Contains(ll.icpt.Log(), "intercept ready"), nil
	}); err != nil {
		return nil, nil, err
	}
	cmp, err := b.liveStep(ctx, ll, liveCompareRate, false, "--compare")
	if err != nil {
		return nil, nil, err
	}
	perReq := func(st liveStep) float64 {
		if st.mirrored == 0 {
			return 0
		}
		return float64(st.relayBytes) / float64(st.mirrored)
	}
	cs := liveCompareStats{}
	if cmp.compare != nil {
		cs = *cmp.compare
	}
	details := []string{
		fmt.Sprintf("live comparison at %d req/s (same lab; 280-byte answers): one step with the default header-only relay, one with intercept --full-payload and stackcopy --compare:", liveCompareRate),
		"  header-only, no comparison: " + strings.TrimSpace(plain.String()) + fmt.Sprintf("; relay %.0f bytes/request", perReq(plain)),
		"  full answers, --compare:    " + strings.TrimSpace(cmp.String()) + fmt.Sprintf("; relay %.0f bytes/request", perReq(cmp)),
		fmt.Sprintf("  compared %d of %d requests: %d identical, %d different, %d missing an answer", cs.Compared, cs.Requests, cs.Identical, cs.Different, cs.Missing),
	}
	verdict := "ok"
	if cmp.lost != 0 || cs.Compared == 0 || cs.Different != 0 {
		verdict = "FAIL" // the same file on both sides: every answer identical
	}
	rows := []row{
		{workload: fmt.Sprintf("live --compare at %d req/s: lost", liveCompareRate), sc: fmt.Sprintf("%d/%d", cmp.lost, cmp.served), kernel: "n/a", ratio: "-", target: fmt.Sprintf("%d identical", cs.Identical), verdict: verdict},
		{workload: "  relay bytes per request", sc: fmt.Sprintf("%.0f", perReq(cmp)), kernel: fmt.Sprintf("%.0f header-only", perReq(plain)), ratio: ratioStr(perReq(cmp), perReq(plain)), verdict: "-"},
		{workload: "  stackcopy CPU per request", sc: fmt.Sprintf("%.0f µs", cmp.scPerReq()), kernel: fmt.Sprintf("%.0f µs no compare", plain.scPerReq()), ratio: ratioStr(cmp.scPerReq(), plain.scPerReq()), verdict: "-"},
		{workload: "  intercept CPU per answer", sc: fmt.Sprintf("%.0f µs", cmp.icPerAnswer()), kernel: fmt.Sprintf("%.0f µs header-only", plain.icPerAnswer()), ratio: ratioStr(cmp.icPerAnswer(), plain.icPerAnswer()), verdict: "-"},
	}
	return details, rows, nil
}

// countLines counts complete lines of a file (0 if it does not exist).
func countLines(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strings.Count(string(b), "\n"), nil
}

var icStatsRE = regexp.MustCompile(`intercept stats.* relayed=(\d+) .* kernel_drops=(\d+)`)

// interceptStats is kernel_drops and relayed of intercept's last stats
// line (cumulative).
func interceptStats(log string) (kernelDrops, relayed uint64) {
	m := icStatsRE.FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		return 0, 0
	}
	last := m[len(m)-1]
	relayed, _ = strconv.ParseUint(last[1], 10, 64)
	kernelDrops, _ = strconv.ParseUint(last[2], 10, 64)
	return kernelDrops, relayed
}

// roleLiveLoad sends GET /a.txt at -rate requests/s for -duration over
// -conns keep-alive connections, each paced on its own schedule (a late
// request goes out at once, no later than the end plus 2 s). It reconnects
// when the server closes. With -short each request asks the server to
// close (a connection per request); with -count N the workers send N
// requests in all as fast as they are answered, unpaced. Bounded by
// -timeout.
func roleLiveLoad(args []string) error {
	fs := flag.NewFlagSet("liveload", flag.ContinueOnError)
	target := fs.String("connect", "", "server address")
	rate := fs.Int("rate", 100, "requests per second, all connections together")
	dur := fs.Duration("duration", 5*time.Second, "send for this long")
	conns := fs.Int("conns", 20, "keep-alive connections (workers)")
	short := fs.Bool("short", false, "a new connection per request (Connection: close)")
	count := fs.Int("count", 0, "send this many requests unpaced instead of -rate for -duration")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *count < 0 || *conns < 1 || (*count == 0 && (*rate < 1 || *dur <= 0)) {
		return errors.New("-conns must be positive, and so must -count, or -rate and -duration")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	interval := time.Duration(float64(time.Second) * float64(*conns) / float64(*rate))
	start := time.Now().Add(50 * time.Millisecond)
	end := start.Add(*dur)
	hardEnd := end.Add(2 * time.Second)
	if *count > 0 {
		interval, end, hardEnd = 0, start.Add(*timeout), start.Add(*timeout)
	}
	connHdr := ""
	if *short {
		connHdr = "Connection: close\r\n"
	}
	var issued atomic.Int64
	var mu sync.Mutex
	var res benchrole.LiveLoadResult
	var lastDone time.Time
	var wg sync.WaitGroup
	for w := range *conns {
		wg.Go(func() {
			var c net.Conn
			var br *bufio.Reader
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			fail := func(err error) {
				mu.Lock()
				res.Failed++
				if len(res.Errors) < 5 {
					res.Errors = append(res.Errors, err.Error())
				}
				mu.Unlock()
				if c != nil {
					c.Close()
					c = nil
				}
			}
			d := net.Dialer{}
			offset := interval * time.Duration(w) / time.Duration(*conns)
			for i := 0; ; i++ {
				at := start.Add(offset + time.Duration(i)*interval)
				if !at.Before(end) || time.Now().After(hardEnd) || ctx.Err() != nil {
					return
				}
				if *count > 0 && issued.Add(1) > int64(*count) {
					return
				}
				if wait := time.Until(at); wait > 0 {
					time.Sleep(wait)
				}
				if c == nil {
					var err error
					if c, err = d.DialContext(ctx, "tcp4", *target); err != nil {
						c = nil
						fail(err)
						continue
					}
					br = bufio.NewReader(c)
				}
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				req := fmt.Sprintf("GET /a.txt?c=%d&i=%d HTTP/1.1\r\nHost: 198.18.1.1\r\nUser-Agent: stackcopy-bench\r\n%s\r\n", w, i, connHdr)
				if _, err := io.WriteString(c, req); err != nil {
					fail(err)
					continue
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					fail(err)
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					fail(fmt.Errorf("status %d, %v", resp.StatusCode, err))
					continue
				}
				mu.Lock()
				res.Completed++
				lastDone = time.Now()
				mu.Unlock()
				if resp.Close {
					c.Close()
					c = nil
				}
			}
		})
	}
	wg.Wait()
	took := max(lastDone.Sub(start), *dur)
	if *count > 0 {
		took = lastDone.Sub(start)
	}
	res.Seconds = took.Seconds()
	if took > 0 {
		res.Rate = float64(res.Completed) / took.Seconds()
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}
