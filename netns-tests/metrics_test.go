package netnstests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/mirror"
	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// Metrics and operability in the lab. Run as root:
//
//	go test -run 'TestMetrics|TestSignalHUP' -v ./netns-tests/
//
//	online 198.18.2.1 (stackcopy --metrics :9464, prometheus on 127.0.0.1:9090)
//	   ── target 198.18.2.2 (recorder :80, intercept NFQUEUE --metrics :9465)
//
// stackcopy replays testdata/demo.pcap through its TUN; the target's
// answers are caught by intercept and relayed back, so both programs
// count the same traffic. Debian's prometheus scrapes both every second.

const (
	metricsMirror    = "198.18.2.1:9464"
	metricsIntercept = "198.18.2.2:9465"
	promListen       = "127.0.0.1:9090"
)

// metricsLab is the online and target hosts with the recorder, the
// NFQUEUE rule and the relay key.
type metricsLab struct {
	l              *lab.Lab
	online, target *lab.Host
	key, pcap      string
}

func newMetricsLab(t *testing.T) *metricsLab {
	t.Helper()
	ml := &metricsLab{l: lab.NewT(t)}
	var err error
	if ml.online, err = ml.l.Host("online"); err != nil {
		t.Fatal(err)
	}
	if ml.target, err = ml.l.Host("target"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ml.l.Link(ml.online, netip.MustParsePrefix("198.18.2.1/24"), ml.target, netip.MustParsePrefix("198.18.2.2/24")); err != nil {
		t.Fatal(err)
	}
	if err := ml.online.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	// The target answers the forged clients towards the online host; the
	// NFQUEUE rule hands those answers to intercept first.
	if err := ml.target.AddRoute(netip.MustParsePrefix("198.18.1.0/24"), netip.MustParseAddr("198.18.2.1")); err != nil {
		t.Fatal(err)
	}
	if err := ml.target.IPTables("-I", "OUTPUT", "-p", "tcp", "--sport", "80", "-d", "198.18.1.0/24", "-j", "NFQUEUE", "--queue-num", "0"); err != nil {
		t.Fatal(err)
	}
	startRecorder(t, ml.target, netip.MustParseAddrPort("198.18.2.2:80"), "http")
	ml.key = filepath.Join(ml.l.Dir(), "relay.key")
	if err := os.WriteFile(ml.key, []byte("lab-relay-key-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ml.pcap, err = filepath.Abs("../testdata/demo.pcap"); err != nil {
		t.Fatal(err)
	}
	return ml
}

// startPrometheus runs Debian's prometheus in h with its configuration
// and storage in the lab directory, scraping targets every second.
func startPrometheus(t *testing.T, h *lab.Host, targets map[string]string) {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not installed (apt-get install prometheus; .ci/run does)")
	}
	dir := filepath.Join(h.Lab().Dir(), "prometheus")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	var cfg strings.Builder
	cfg.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n")
	for job, target := range targets {
		fmt.Fprintf(&cfg, "  - job_name: %s\n    static_configs:\n      - targets: ['%s']\n", job, target)
	}
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Start(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promListen, "--log.level=warn"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "prometheus ready", 20*time.Second, func() bool {
		_, err := h.Exec(context.Background(), "curl", "-sf", "--max-time", "1", "http://"+promListen+"/-/ready")
		return err == nil
	})
}

// promQuery asks Prometheus for an instant vector and returns each
// series' value by the series' labels (as "{k=v,...}"; "{}" for none).
func promQuery(t *testing.T, h *lab.Host, query string) map[string]float64 {
	t.Helper()
	out, err := h.Exec(context.Background(), "curl", "-sf", "--max-time", "5", "http://"+promListen+"/api/v1/query", "--data-urlencode", "query="+query)
	if err != nil {
		t.Fatalf("query %q: %v %s", query, err, out)
	}
	var res struct {
		Status string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Status != "success" {
		t.Fatalf("query %q: %v %s", query, err, out)
	}
	got := map[string]float64{}
	for _, r := range res.Data.Result {
		var labels []string
		for k, v := range r.Metric {
			if k != "__name__" && k != "job" && k != "instance" {
				labels = append(labels, k+"="+v)
			}
		}
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("query %q: value %v", query, r.Value)
		}
		got["{"+strings.Join(labels, ",")+"}"] = v
	}
	return got
}

// promtoolCheck scrapes url from h and runs promtool check metrics on it.
func promtoolCheck(t *testing.T, h *lab.Host, url string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed")
	}
	body, err := h.Exec(context.Background(), "curl", "-sf", "--max-time", "5", url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(string(body))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics %s: %v\n%s", url, err, out)
	}
	if !strings.Contains(string(body), "# TYPE") {
		t.Errorf("scrape %s: no metrics:\n%s", url, body)
	}
}

// TestMetrics: a real Prometheus scrapes stackcopy and intercept during a
// paced replay; what it stored matches stackcopy's --stats-json, both
// expositions pass promtool, and, stderr not being a terminal, stackcopy
// logs a stats line every --stats-interval (a 121 s replay printed
// nothing at all before, also with -v).
func TestMetrics(t *testing.T) {
	ml := newMetricsLab(t)
	startPrometheus(t, ml.online, map[string]string{"stackcopy": metricsMirror, "intercept": metricsIntercept})
	icpt := startIntercept(t, ml.target, interceptPath(t), "--key-file", ml.key, "-q", "0", "--metrics", metricsIntercept)
	defer icpt.proc.Stop()

	stats := filepath.Join(ml.l.Dir(), "stats.json")
	// Paced at a tenth of the captured speed, twice: about 10 s of
	// replay, so Prometheus scrapes it while it works; the final counts
	// stay served 3 s longer (--metrics-linger) for a last scrape.
	p, err := ml.online.StartWith(lab.StartOptions{Stdout: true}, stackcopyPath(t), "-x", "80-198.18.2.2:80", "-i", ml.pcap,
		"-s", "198.18.2.2", "--key-file", ml.key, "--speed", "0.1", "--loop", "2", "--stats-json", stats,
		"--metrics", metricsMirror, "--metrics-linger", "3s", "--stats-interval", "1s")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stackcopy's metrics", 10*time.Second, func() bool {
		_, err := ml.online.Exec(context.Background(), "curl", "-sf", "--max-time", "1", "http://"+metricsMirror+"/metrics")
		return err == nil
	})
	// The open-sessions gauge as it moves: a demo session is open for a
	// few hundred ms at --speed 0.1, which Prometheus's 1 s scrapes can
	// miss entirely (they did in 1 run of about 10), so the test itself
	// reads the exposition every 100 ms while stackcopy runs.
	maxOpen := make(chan float64, 1)
	go func() {
		top := 0.0
		defer func() { maxOpen <- top }()
		for {
			select {
			case <-p.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			out, err := ml.online.Exec(context.Background(), "curl", "-sf", "--max-time", "1", "http://"+metricsMirror+"/metrics")
			if err != nil {
				continue // between the replay's end and the exit
			}
			for l := range strings.Lines(string(out)) {
				if v, ok := strings.CutPrefix(strings.TrimSpace(l), "stackcopy_sessions_open "); ok {
					if f, err := strconv.ParseFloat(v, 64); err == nil {
						top = max(top, f)
					}
				}
			}
		}
	}()
	time.Sleep(2 * time.Second) // mid-replay: sessions open, counters moving
	promtoolCheck(t, ml.online, "http://"+metricsMirror+"/metrics")
	promtoolCheck(t, ml.online, "http://"+metricsIntercept+"/metrics")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = p.WaitContext(ctx, 3*time.Second)
	t.Logf("stackcopy (exit %d):\n%s\n%s", p.ExitCode(), p.Stdout(), tailLines(p.Log(), 6))
	if p.ExitCode() != 0 {
		t.Fatalf("stackcopy exit %d", p.ExitCode())
	}
	if n := strings.Count(p.Log(), "msg=stats"); n < 5 {
		t.Errorf("%d stats lines in stackcopy's log over a ~10 s replay with --stats-interval 1s, want at least 5", n)
	}
	b, err := os.ReadFile(stats)
	if err != nil {
		t.Fatal(err)
	}
	var sum mirror.SummaryJSON
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Replay.Completed == 0 || sum.Relay == nil || sum.Relay.Packets == 0 {
		t.Fatalf("the replay did nothing through the relay: %s", b)
	}
	time.Sleep(1500 * time.Millisecond) // intercept's last counters scraped

	// Range selectors skip the staleness markers set when stackcopy left.
	last := func(q string) map[string]float64 { return promQuery(t, ml.online, "last_over_time("+q+"[2m])") }
	for _, c := range []struct {
		query string
		want  float64
	}{
		{`stackcopy_sessions_ended_total{outcome="completed"}`, float64(sum.Replay.Completed)},
		{`stackcopy_sessions_started_total`, float64(sum.Replay.Sessions)},
		{`stackcopy_client_bytes_sent_total`, float64(sum.Replay.BytesSent)},
		{`stackcopy_response_bytes_received_total`, float64(sum.Replay.BytesReceived)},
		{`stackcopy_turns_total`, float64(sum.Replay.Turns)},
		{`stackcopy_relay_answers_total`, float64(sum.Relay.Packets)},
		{`stackcopy_stack_retransmits_total`, float64(sum.Stack.Retransmits)},
		{`stackcopy_sessions_expected`, float64(2 * sum.CaptureSessions)},
		{`stackcopy_turn_latency_seconds_count`, float64(sum.Replay.TurnLatency.Count)},
	} {
		got := last(c.query)
		if len(got) != 1 || got["{}"] != c.want && got["{outcome=completed}"] != c.want {
			t.Errorf("%s: prometheus has %v, the summary %v", c.query, got, c.want)
		}
	}
	if sum.Replay.TurnLatency.Count == 0 || sum.Replay.TurnLatency.Count > sum.Replay.Turns {
		t.Errorf("turn latency: %d turns timed of %d", sum.Replay.TurnLatency.Count, sum.Replay.Turns)
	}
	// The histogram as Prometheus stores it: a median from its buckets.
	if got := promQuery(t, ml.online, `histogram_quantile(0.5, last_over_time(stackcopy_turn_latency_seconds_bucket[2m]))`); len(got) != 1 || got["{}"] <= 0 {
		t.Errorf("turn latency median from prometheus: %v", got)
	}
	// Scraped while it ran, not only at the end.
	if got := promQuery(t, ml.online, `count_over_time(stackcopy_running[2m]) and max_over_time(stackcopy_running[2m]) == 1`); len(got) != 1 || got["{}"] < 5 {
		t.Errorf("stackcopy_running samples while running: %v, want at least 5", got)
	}
	if got := promQuery(t, ml.online, `count_over_time(stackcopy_sessions_open[2m])`); got["{}"] < 5 {
		t.Errorf("stackcopy_sessions_open: %v samples in Prometheus, want at least 5", got)
	}
	if top := <-maxOpen; top < 1 {
		t.Errorf("stackcopy_sessions_open never above 0 in the exposition read every 100 ms")
	}
	relayed := last(`intercept_packets_classified_total{class="relayed"}`)
	delivered := last(`intercept_relay_delivered_total`)
	if relayed["{class=relayed}"] < float64(sum.Relay.Packets) || delivered["{}"] < float64(sum.Relay.Packets) {
		t.Errorf("intercept relayed %v, delivered %v; stackcopy received %d answers", relayed, delivered, sum.Relay.Packets)
	}
	if got := last(`intercept_kernel_drops_total`); len(got) != 1 || got["{}"] != 0 {
		t.Errorf("intercept_kernel_drops_total %v, want 0", got)
	}
}

// TestSignalHUP: SIGHUP ends a replay as SIGTERM does: the summary says it
// was interrupted and how many sessions never started, --stats-json is
// written, the pid file removed, and the exit status is 3 (before:
// killed without summary, pid file left, and a SIGTERM'd replay exited 1
// with its sessions counted as failed).
func TestSignalHUP(t *testing.T) {
	ml := newMetricsLab(t)
	stats := filepath.Join(ml.l.Dir(), "hup.json")
	pid := filepath.Join(ml.l.Dir(), "stackcopy.pid")
	// Slow enough that no session ends before the signal. (No intercept
	// reads the target's queue here, so no handshake completes.)
	p, err := ml.online.StartWith(lab.StartOptions{Stdout: true}, stackcopyPath(t), "-x", "80-198.18.2.2:80", "-i", ml.pcap,
		"--speed", "0.01", "--stats-json", stats, "-P", pid)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	waitFor(t, "the pid file", 10*time.Second, func() bool {
		b, err := os.ReadFile(pid)
		n, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && n > 0
	})
	time.Sleep(1500 * time.Millisecond) // the first session is under way
	if err := syscall.Kill(n, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = p.WaitContext(ctx, 3*time.Second)
	t.Logf("stackcopy (exit %d):\n%s\n%s", p.ExitCode(), p.Stdout(), tailLines(p.Log(), 6))
	if p.ExitCode() != 3 {
		t.Errorf("exit %d after SIGHUP, want 3 (work was lost)", p.ExitCode())
	}
	if !strings.Contains(p.Stdout(), "interrupted by a signal") || !strings.Contains(p.Stdout(), "never-started") {
		t.Errorf("the summary does not say it was interrupted and what never started:\n%s", p.Stdout())
	}
	if _, err := os.Stat(pid); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left after SIGHUP (%v)", err)
	}
	b, err := os.ReadFile(stats)
	if err != nil {
		t.Fatalf("no --stats-json after SIGHUP: %v", err)
	}
	var sum mirror.SummaryJSON
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	// The sessions already read wait for their handshake (never started,
	// in the replayer's reasons); those not read yet are NeverStarted.
	if !sum.Interrupted || sum.Reasons["never-started"] == 0 || sum.Replay.Failed != 0 || sum.Replay.Interrupted+sum.NeverStarted < 3 {
		t.Errorf("stats: interrupted %v, never started %d, reasons %v, failed %d; want interrupted, sessions never started and named, none failed",
			sum.Interrupted, sum.NeverStarted, sum.Reasons, sum.Replay.Failed)
	}
}
