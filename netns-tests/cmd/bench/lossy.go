package main

// The lossy workload: one HTTP upload of cfg.lossyBytes over a path that
// drops 5% of the packets at random in both directions at the target, in
// the live lab (liveSetup) with the recorder as the target server:
//
//	client 198.18.1.10 ── online 198.18.1.1 (recorder :8080, stackcopy live
//	                      198.18.2.1          -o raw; GSO off towards the target)
//	                          │
//	                      target 198.18.2.2 (recorder :80; iptables: 5% of
//	                                         --dport 80 dropped on INPUT and of
//	                                         --sport 80 on OUTPUT, before the
//	                                         NFQUEUE rule of intercept)
//
// Side by side, interleaved, -runs times each:
//
//   - kernel: curl on the online host uploads the file straight to the
//     target's recorder: what Linux TCP achieves over that lossy path.
//     MB/s from curl's time_total; RTOs and retransmits are the online
//     namespace's TcpExtTCPTimeouts and TcpRetransSegs (the counters nstat
//     shows), read before and after.
//   - stackcopy: the real client uploads the file, unthrottled, to the
//     online host's recorder while stackcopy mirrors it live; MB/s from the
//     upload's start until the target's recorder logged the complete
//     request. RTOs, retransmits, spill peak and capture drops come from
//     stackcopy's --stats-json.
//
// Both sides cross the same veth and the same iptables rules (the kernel's
// answers also pass intercept's queue, which accepts them: they are not
// addressed to a registered forged client). Every body is checked against
// the file's sha256; a mismatch is an error of the workload, not a figure.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
	"github.com/stackcopy/stackcopy/netns-tests/recorder"
)

const (
	lossyProb     = "0.05"           // 5%, as iptables' statistic module takes it
	lossyMax      = 12 * time.Minute // the whole workload, setup included
	lossyRunMax   = 5 * time.Minute  // one upload, either side
	lossyStopWait = 30 * time.Second // after the target has the body: the session's end
)

// lossyOnlineRecorder is where the real client uploads (stackcopy mirrors
// it to the target's port 80).
var lossyOnlineRecorder = netip.MustParseAddrPort("198.18.1.1:8080")

// lossyRun is one upload, either side.
type lossyRun struct {
	secs      float64
	clientSec float64 // stackcopy side: the real client's own upload time
	rtos      uint64
	retrans   uint64
	spilled   uint64
	spillPeak int64
	drops     uint64 // stackcopy's capture drops
	icDrops   uint64 // intercept's NFQUEUE drops during the run
	cpu       time.Duration
	completed bool // stackcopy: the session ended as captured
}

func (r lossyRun) mbps(size int64) float64 { return float64(size) / 1e6 / r.secs }

// lossyScStats is the part of stackcopy's --stats-json the workload reads.
type lossyScStats struct {
	Drops  uint64 `json:"capture_drops"`
	Replay struct {
		Sessions, Completed, Gaps, Overflowed uint64
		SpilledBytes                          uint64 `json:"spilled_bytes"`
		SpillPeak                             int64  `json:"spill_peak"`
	} `json:"replay"`
	Stack struct {
		Retransmits, Timeouts uint64
	} `json:"stack"`
}

func (b *bench) lossy(ctx context.Context) (res result, err error) {
	t0 := time.Now()
	if err := resolveBinaries(&b.cfg.intercept, &b.cfg.recorder); err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(ctx, lossyMax)
	defer cancel()
	ll, err := b.liveSetup(ctx, "bench-lossy", liveTargetRecorder)
	if err != nil {
		return res, fmt.Errorf("lossy lab setup: %w", err)
	}
	defer b.closeLab("lossy lab", ll.l)
	onlineLog, err := startRecorder(ll.online, b.cfg.recorder, lossyOnlineRecorder)
	if err != nil {
		return res, err
	}
	size := b.cfg.lossyBytes
	file := filepath.Join(ll.l.Dir(), "upload.bin")
	sum, err := writeRandomFile(file, size)
	if err != nil {
		return res, err
	}
	// The loss, in front of intercept's NFQUEUE rule on OUTPUT.
	for _, rule := range [][]string{
		{"-I", "INPUT", "1", "-p", "tcp", "--dport", "80", "-m", "statistic", "--mode", "random", "--probability", lossyProb, "-j", "DROP"},
		{"-I", "OUTPUT", "1", "-p", "tcp", "--sport", "80", "-m", "statistic", "--mode", "random", "--probability", lossyProb, "-j", "DROP"},
	} {
		if err := ll.target.IPTables(rule...); err != nil {
			return res, err
		}
	}
	// Wire-sized packets towards the target, so 5% means 5% of segments.
	if err := ll.online.DisableGSO(ll.mirrorIf); err != nil {
		return res, err
	}
	b.logf("lossy: %s file, 5%% loss both ways at the target, GSO off on online %s", sizeStr(size), ll.mirrorIf)

	res.details = append(res.details, fmt.Sprintf("lossy: %s HTTP upload, 5%% random loss both ways at the target (iptables statistic %s on INPUT --dport 80 and OUTPUT --sport 80), GSO off on the online host's %s; runs interleaved kernel, stackcopy, ...",
		sizeStr(size), lossyProb, ll.mirrorIf))
	res.details = append(res.details, "  kernel: curl on the online host → target recorder, MB/s from curl's time_total; RTOs/retransmits = TcpExtTCPTimeouts/TcpRetransSegs of the online namespace",
		"  stackcopy: client curl (unthrottled) → online recorder, mirrored live (-o raw, intercept on NFQUEUE); MB/s from the upload's start until the target's recorder logged the whole body")
	var kRuns, sRuns []lossyRun
	for i := 1; i <= b.cfg.runs; i++ {
		k, err := b.lossyKernel(ctx, ll, file, sum, size)
		if err != nil {
			return res, fmt.Errorf("kernel run %d: %w", i, err)
		}
		kRuns = append(kRuns, k)
		line := fmt.Sprintf("  run %d kernel:    %6.2f MB/s (%5.1fs), %3d RTOs, %5d retransmits, nfqueue drops %d", i, k.mbps(size), k.secs, k.rtos, k.retrans, k.icDrops)
		res.details = append(res.details, line)
		b.logf("lossy %s", strings.TrimSpace(line))

		s, err := b.lossyStackcopy(ctx, ll, onlineLog, file, sum, size, i)
		if err != nil {
			return res, fmt.Errorf("stackcopy run %d: %w", i, err)
		}
		sRuns = append(sRuns, s)
		line = fmt.Sprintf("  run %d stackcopy: %6.2f MB/s (%5.1fs; client done in %.1fs), %3d RTOs, %5d retransmits, spilled %.0f MB (peak %.0f MB), capture drops %d, nfqueue drops %d, cpu %.1fs",
			i, s.mbps(size), s.secs, s.clientSec, s.rtos, s.retrans, float64(s.spilled)/1e6, float64(s.spillPeak)/1e6, s.drops, s.icDrops, s.cpu.Seconds())
		if !s.completed {
			line += " (session not counted completed)"
		}
		res.details = append(res.details, line)
		b.logf("lossy %s", strings.TrimSpace(line))
	}

	field := func(runs []lossyRun, f func(lossyRun) float64) []float64 {
		var out []float64
		for _, r := range runs {
			out = append(out, f(r))
		}
		return out
	}
	mb := func(r lossyRun) float64 { return r.mbps(size) }
	rtos := func(r lossyRun) float64 { return float64(r.rtos) }
	retr := func(r lossyRun) float64 { return float64(r.retrans) }
	sMB, kMB := field(sRuns, mb), field(kRuns, mb)
	peaks := field(sRuns, func(r lossyRun) float64 { return float64(r.spillPeak) / 1e6 })
	drops := slices.Max(field(sRuns, func(r lossyRun) float64 { return float64(r.drops) }))
	res.rows = append(res.rows,
		row{workload: fmt.Sprintf("lossy upload %s (median of %d)", sizeStr(size), b.cfg.runs),
			sc: fmt.Sprintf("%.2f MB/s", median(sMB)), kernel: fmt.Sprintf("%.2f MB/s", median(kMB)),
			ratio: ratioStr(median(sMB), median(kMB)), target: ">=0.8x", verdict: verdict(median(sMB) >= 0.8*median(kMB))},
		row{workload: "  RTOs (median)", sc: fmt.Sprintf("%.0f", median(field(sRuns, rtos))), kernel: fmt.Sprintf("%.0f", median(field(kRuns, rtos)))},
		row{workload: "  retransmits (median)", sc: fmt.Sprintf("%.0f", median(field(sRuns, retr))), kernel: fmt.Sprintf("%.0f", median(field(kRuns, retr)))},
		row{workload: "  spill peak (median)", sc: fmt.Sprintf("%.0f MB", median(peaks)), kernel: "n/a"},
		row{workload: "  capture drops (max)", sc: fmt.Sprintf("%.0f", drops), kernel: "n/a", target: "0", verdict: verdict(drops == 0)})
	spread := func(name string, xs []float64, unit string) string {
		return fmt.Sprintf("%s median %.2f%s (min %.2f, max %.2f)", name, median(xs), unit, slices.Min(xs), slices.Max(xs))
	}
	res.details = append(res.details,
		"  "+spread("kernel", kMB, " MB/s")+"; "+spread("stackcopy", sMB, " MB/s")+"; every body's sha256 matched the file",
		fmt.Sprintf("lossy took %.0fs", time.Since(t0).Seconds()))
	b.logf("lossy took %.0fs", time.Since(t0).Seconds())
	if drops != 0 {
		return res, fmt.Errorf("stackcopy counted %.0f capture drops, want 0", drops)
	}
	return res, nil
}

// lossyKernel uploads the file with curl from the online host straight to
// the target's recorder.
func (b *bench) lossyKernel(ctx context.Context, ll *liveLab, file, sum string, size int64) (lossyRun, error) {
	var r lossyRun
	recs0, _, err := recorder.ReadLog(ll.targetLog)
	if err != nil {
		return r, err
	}
	c0, err := netCounters(ctx, ll.online)
	if err != nil {
		return r, err
	}
	ic0, _ := interceptStats(ll.icpt.Log())
	secs, err := curlUpload(ctx, ll.online, file, "http://"+netip.AddrPortFrom(netip.MustParsePrefix(liveTarget).Addr(), 80).String()+"/upload")
	if err != nil {
		return r, err
	}
	c1, err := netCounters(ctx, ll.online)
	if err != nil {
		return r, err
	}
	r.secs = secs
	r.rtos = c1["TcpExt.TCPTimeouts"] - c0["TcpExt.TCPTimeouts"]
	r.retrans = c1["Tcp.RetransSegs"] - c0["Tcp.RetransSegs"]
	// curl has its answer: the recorder logged the request before writing it.
	rec, err := waitRecord(ctx, ll.targetLog, len(recs0), 10*time.Second)
	if err != nil {
		return r, err
	}
	if err := checkBody("target", rec, sum, size); err != nil {
		return r, err
	}
	// intercept logs its stats every second.
	time.Sleep(1100 * time.Millisecond)
	ic1, _ := interceptStats(ll.icpt.Log())
	r.icDrops = ic1 - ic0
	return r, nil
}

// lossyStackcopy runs stackcopy live on the online host while the client
// uploads the file to the online recorder, and times the mirror.
func (b *bench) lossyStackcopy(ctx context.Context, ll *liveLab, onlineLog, file, sum string, size int64, i int) (lossyRun, error) {
	var r lossyRun
	statsPath := filepath.Join(ll.l.Dir(), fmt.Sprintf("lossy-%d.json", i))
	targetAddr := netip.MustParsePrefix(liveTarget).Addr()
	args := append([]string{"-v", "--stats-json", statsPath,
		"-x", fmt.Sprintf("%s-%s", lossyOnlineRecorder, netip.AddrPortFrom(targetAddr, 80)), "-i", ll.onlineIf,
		"-s", targetAddr.String(), "--key-file", ll.keyFile, "-o", "raw"}, b.cfg.scFlags...)
	sc, err := ll.online.Start(b.cfg.stackcopy, args...)
	if err != nil {
		return r, err
	}
	defer sc.Stop()
	exited := func() error {
		select {
		case <-sc.Done():
			return fmt.Errorf("stackcopy exited%s", outputTail(sc.Log()))
		default:
			return nil
		}
	}
	if err := poll(ctx, 20*time.Second, 50*time.Millisecond, "stackcopy to capture", func() (bool, error) {
		if err := exited(); err != nil {
			return false, err
		}
		return strings.Contains(sc.Log(), "mirroring live traffic"), nil
	}); err != nil {
		return r, fmt.Errorf("%w; stackcopy log: %s", err, outputTail(sc.Log()))
	}
	// Let the relay channel come up before the first answer.
	time.Sleep(500 * time.Millisecond)

	recs0, _, err := recorder.ReadLog(ll.targetLog)
	if err != nil {
		return r, err
	}
	online0, _, err := recorder.ReadLog(onlineLog)
	if err != nil {
		return r, err
	}
	ic0, _ := interceptStats(ll.icpt.Log())

	start := time.Now()
	if r.clientSec, err = curlUpload(ctx, ll.client, file, "http://"+lossyOnlineRecorder.String()+"/upload"); err != nil {
		return r, fmt.Errorf("client: %w", err)
	}
	orig, err := waitRecord(ctx, onlineLog, len(online0), 10*time.Second)
	if err != nil {
		return r, err
	}
	if err := checkBody("online", orig, sum, size); err != nil {
		return r, err
	}
	// The mirror: until the target's recorder logged the complete request
	// (it logs at the body's end), at most lossyRunMax from the start.
	var rec recorder.Record
	err = poll(ctx, lossyRunMax-time.Since(start), 50*time.Millisecond, "the target to log the mirrored upload", func() (bool, error) {
		recs, _, err := recorder.ReadLog(ll.targetLog)
		if err != nil || len(recs) > len(recs0) {
			if err == nil {
				rec = recs[len(recs0)]
			}
			return err == nil, err
		}
		return false, exited()
	})
	r.secs = time.Since(start).Seconds()
	if err != nil {
		return r, fmt.Errorf("%w; stackcopy log: %s", err, outputTail(sc.Log()))
	}
	if err := checkBody("target", rec, sum, size); err != nil {
		return r, err
	}
	if rec.Client != orig.Client {
		return r, fmt.Errorf("target saw the upload from %s, the online host from %s", rec.Client, orig.Client)
	}
	// Let the session end (its FIN and the answer cross the lossy path
	// too) before stackcopy is stopped, so that it counts as completed.
	_ = poll(ctx, lossyStopWait, 100*time.Millisecond, "the mirrored connection to close", func() (bool, error) {
		_, sums, err := recorder.ReadLog(ll.targetLog)
		return err == nil && slices.ContainsFunc(sums, func(s recorder.ConnSummary) bool { return s.Conn == rec.Conn }), err
	})
	if r.cpu, err = sc.CPU(); err != nil {
		return r, err
	}
	time.Sleep(1100 * time.Millisecond) // intercept's next stats line
	ic1, _ := interceptStats(ll.icpt.Log())
	r.icDrops = ic1 - ic0
	if err := sc.Stop(); err != nil {
		b.logf("lossy: stackcopy stop: %v", err)
	}
	raw, err := os.ReadFile(statsPath)
	if err != nil {
		return r, fmt.Errorf("stackcopy wrote no stats (%w); log: %s", err, outputTail(sc.Log()))
	}
	var ss lossyScStats
	if err := json.Unmarshal(raw, &ss); err != nil {
		return r, fmt.Errorf("%s: %w", statsPath, err)
	}
	r.rtos, r.retrans = ss.Stack.Timeouts, ss.Stack.Retransmits
	r.spilled, r.spillPeak, r.drops = ss.Replay.SpilledBytes, ss.Replay.SpillPeak, ss.Drops
	r.completed = ss.Replay.Sessions == 1 && ss.Replay.Completed == 1
	return r, nil
}

// curlUpload posts file to url with curl in h's namespace (at most
// lossyRunMax) and returns curl's time_total in seconds.
func curlUpload(ctx context.Context, h *lab.Host, file, url string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, lossyRunMax)
	defer cancel()
	out, err := h.Exec(ctx, "curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{time_total} %{http_code}",
		"--max-time", strconv.Itoa(int(lossyRunMax.Seconds())), "-H", "Expect:", "--data-binary", "@"+file, url)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(out))
	if len(f) != 2 || f[1] != "200" {
		return 0, fmt.Errorf("curl %s: unexpected output %q", url, out)
	}
	secs, err := strconv.ParseFloat(f[0], 64)
	if err != nil || secs <= 0 {
		return 0, fmt.Errorf("curl %s: time_total %q", url, f[0])
	}
	return secs, nil
}

// waitRecord waits (at most within) for a recorder log to hold more than
// n records and returns record n, the first new one.
func waitRecord(ctx context.Context, path string, n int, within time.Duration) (recorder.Record, error) {
	var rec recorder.Record
	err := poll(ctx, within, 50*time.Millisecond, "the recorder's record in "+filepath.Base(path), func() (bool, error) {
		recs, _, err := recorder.ReadLog(path)
		if err != nil || len(recs) <= n {
			return false, err
		}
		rec = recs[n]
		return true, nil
	})
	return rec, err
}

// checkBody is the integrity check of one recorded upload.
func checkBody(where string, rec recorder.Record, sum string, size int64) error {
	if rec.Error != "" || rec.BodyBytes != size || rec.BodySHA256 != sum {
		return fmt.Errorf("integrity: the %s recorder got %d of %d body bytes from %s, sha256 %.16s…, want %.16s… (error %q)",
			where, rec.BodyBytes, size, rec.Client, rec.BodySHA256, sum, rec.Error)
	}
	return nil
}

// writeRandomFile writes size random bytes to path and returns their
// sha256 in hex.
func writeRandomFile(path string, size int64) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, h), rand.Reader, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", errors.Join(fmt.Errorf("write %s: %w", path, err), os.Remove(path))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
