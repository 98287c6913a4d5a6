package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/stackcopy/stackcopy/relay"
	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/wire"
)

// TestNotMatchingIsCounted: a capture whose only session goes to a
// server -x does not name says so ("1 not matching -x"). The tracker
// never makes such flows sessions, so the summary said 0.
func TestNotMatchingIsCounted(t *testing.T) {
	tg := newTarget(t)
	path := writeCapture(t, capturedSession{
		client:   netip.MustParseAddrPort("198.18.1.40:43000"),
		server:   netip.AddrPortFrom(capturedServer, 25),
		requests: []string{"HELO x\r\n"},
		answers:  []string{"250 ok\r\n"},
	})
	sum, _ := runWithin(t, testConfig(t, tg, path, "80-198.18.2.2:8080"))
	if sum == nil {
		t.Fatal("no summary")
	}
	var b bytes.Buffer
	sum.WriteText(&b)
	if !strings.Contains(b.String(), " 1 not matching -x") {
		t.Errorf("summary does not count the session to port 25 as not matching -x:\n%s", b.String())
	}
	if j := sum.JSON(); j.NotMatching != 1 {
		t.Errorf("JSON not_matching = %d, want 1", j.NotMatching)
	}
}

// blackHole is a wire that loses every packet: the target never answers.
type blackHole struct{}

func (blackHole) Write(pkts []wire.Packet) (int, error) { return len(pkts), nil }
func (blackHole) BatchSize() int                        { return 64 }
func (blackHole) Close() error                          { return nil }

// TestInterruptedReplay: sessions whose handshakes get no answer are
// cut by the end of the replay: they are "interrupted" with the reason
// "never-started" (not "failed"), the run is not an error but not
// complete either (exit 3), and the SYNs gVisor retransmitted meanwhile
// are in "retransmitted" (gVisor does not count them: 0 before).
func TestInterruptedReplay(t *testing.T) {
	var sessions []capturedSession
	for i := range 2 {
		sessions = append(sessions, capturedSession{
			client:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(50 + i)}), uint16(44000+i)),
			server:   netip.AddrPortFrom(capturedServer, 80),
			requests: []string{"GET / HTTP/1.1\r\n\r\n"},
			answers:  []string{"HTTP/1.1 204 No Content\r\n\r\n"},
		})
	}
	cfg := testConfig(t, nil, writeCapture(t, sessions...), "80-198.18.2.2:8080")
	cfg.Device = blackHole{}
	ctx, cancel := context.WithTimeout(context.Background(), 3500*time.Millisecond)
	defer cancel()
	sum, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("Run: %v (an interrupted replay is not an error: its summary says what was lost)", err)
	}
	r := sum.Replay
	if !sum.Interrupted || r.Interrupted != 2 || r.Failed != 0 || sum.AllCompleted() {
		t.Errorf("interrupted %v, %d interrupted, %d failed, all completed %v; want true, 2, 0, false", sum.Interrupted, r.Interrupted, r.Failed, sum.AllCompleted())
	}
	if got := sum.Reasons(); got["never-started"] != 2 || len(got) != 1 {
		t.Errorf("reasons %v, want never-started: 2", got)
	}
	if sum.Stack.Retransmits < 2 {
		t.Errorf("%d retransmitted; want the SYN retransmissions (at least one per session after 1 s)", sum.Stack.Retransmits)
	}
	var b bytes.Buffer
	sum.WriteText(&b)
	for _, want := range []string{"2 interrupted", "interrupted by a signal: 0 sessions cut short, 2 never started", "reasons   2 never-started"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "  tun ") {
		t.Errorf("a tun line without a TUN:\n%s", b.String())
	}
}

// TestSummaryJSONIsSnakeCase: every key of --stats-json is snake_case
// (the counters of replay, capture, session, netstack and relay were
// CamelCase), reasons are broken down, and the document decodes back
// into SummaryJSON.
func TestSummaryJSONIsSnakeCase(t *testing.T) {
	s := &Summary{Inputs: []string{"a.pcap"}, Loops: 1, TUN: true, TUNTxDrops: 3,
		Relay: &relay.ClientStats{Channels: 2, Connected: 2, Packets: 9},
		Replay: replay.Stats{Sessions: 7, Completed: 4, Refused: 2, TimedOut: 1, BytesSent: 1234, TurnsUnanswered: 5,
			Reasons:   map[string]uint64{"refused": 2, "no-syn-ack": 1},
			Protocols: map[string]replay.ProtocolStats{"http1": {Sessions: 7, Writes: 3, LagMaxMs: 2}}},
	}
	s.Capture.IPv6 = 8
	s.Stack.Retransmits = 6
	var b bytes.Buffer
	if err := s.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	var walk func(path string, v any)
	walk = func(path string, v any) {
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		for k, v := range m {
			// Map keys that are names, not fields: protocol and reason names.
			if !strings.HasSuffix(path, ".protocols") && !strings.HasSuffix(path, ".reasons") && !snake.MatchString(k) {
				t.Errorf("key %s.%s is not snake_case", path, k)
			}
			walk(path+"."+k, v)
		}
	}
	walk("", doc)
	for _, want := range []string{`"turns_unanswered": 5`, `"ipv6": 8`, `"retransmits": 6`, `"no-syn-ack": 1`, `"tx_drops": 3`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("JSON lacks %s:\n%s", want, b.String())
		}
	}
	var back SummaryJSON
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Replay.Completed != 4 || back.Replay.TurnsUnanswered != 5 || back.Capture.IPv6 != 8 || back.Stack.Retransmits != 6 ||
		back.Relay == nil || back.Relay.Packets != 9 || back.Reasons["refused"] != 2 || back.Replay.Protocols["http1"].LagMaxMs != 2 {
		t.Errorf("decoded back: %+v", back)
	}
	if got := snakeCase("SegmentsSent") + " " + snakeCase("TxDrops") + " " + snakeCase("HTTPServer") + " " + snakeCase("NonTCP"); got != "segments_sent tx_drops http_server non_tcp" {
		t.Errorf("snakeCase: %s", got)
	}
}

// TestSummaryText: reasons are named in the summary, largest first, with
// what the less obvious ones mean; the tun line shows only with a TUN.
func TestSummaryText(t *testing.T) {
	s := &Summary{Inputs: []string{"a.pcap"}, Loops: 1, Relay: &relay.ClientStats{},
		Replay: replay.Stats{Sessions: 5, Completed: 1, Refused: 1, TimedOut: 3,
			Reasons: map[string]uint64{"refused": 1, "no-syn-ack": 3}}}
	var b bytes.Buffer
	s.WriteText(&b)
	want := "  reasons   3 no-syn-ack (the handshake got no answer; an intercept may still hold these addresses from an earlier run (its --hold)), 1 refused\n"
	if !strings.Contains(b.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, b.String())
	}
	if strings.Contains(b.String(), "  tun ") {
		t.Errorf("tun line without a TUN:\n%s", b.String())
	}
	b.Reset()
	s.TUN = true
	s.WriteText(&b)
	if !strings.Contains(b.String(), "  tun       0 answers dropped") {
		t.Errorf("no tun line with a TUN:\n%s", b.String())
	}
}

// TestProgressLine: the line shows done of total, rate, bytes, turns,
// lag and ETA; before the pre-pass finished, "of at least N".
func TestProgressLine(t *testing.T) {
	prev := Snapshot{Running: true, Elapsed: 10 * time.Second, Replay: replay.Stats{Sessions: 500, Completed: 400}}
	cur := Snapshot{Running: true, Elapsed: 20 * time.Second, Total: 2000, TotalKnown: true, PerSession: 1,
		Replay: replay.Stats{Sessions: 1000, Completed: 795, Refused: 5, BytesSent: 3 << 20, Turns: 4000,
			Protocols: map[string]replay.ProtocolStats{"http1": {Writes: 10, LagMaxMs: 35, LagP50Ms: 2}}}}
	got := ProgressLine(cur, prev)
	for _, want := range []string{"800/2000 sessions (40%)", "40.0/s", "200 open", "sent 3.0 MiB", "4000 turns", "lag 2 ms (max 35 ms)", "5 not completed", "ETA 30s"} {
		if !strings.Contains(got, want) {
			t.Errorf("progress line %q lacks %q", got, want)
		}
	}
	cur.TotalKnown, cur.Total = false, 1500
	if got := ProgressLine(cur, prev); !strings.Contains(got, "800 sessions of at least 1500 read so far") || strings.Contains(got, "ETA") {
		t.Errorf("progress line without a known total: %q", got)
	}
}

// TestMetricsMatchSummary: the collector's counts after a replay are the
// summary's, and the exposition passes Prometheus's lint.
func TestMetricsMatchSummary(t *testing.T) {
	tg := newTarget(t)
	l, err := tg.Listen(netip.AddrPortFrom(targetAddr, 8080))
	if err != nil {
		t.Fatal(err)
	}
	httpTarget(t, l)
	var sessions []capturedSession
	for i := range 4 {
		sessions = append(sessions, capturedSession{
			client:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(60 + i)}), uint16(45000+i)),
			server:   netip.AddrPortFrom(capturedServer, 80),
			requests: []string{fmt.Sprintf("GET /m%d HTTP/1.1\r\nHost: t\r\n\r\n", i)},
			answers:  []string{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		})
	}
	cfg := testConfig(t, tg, writeCapture(t, sessions...), "80-198.18.2.2:8080")
	mon := &Monitor{}
	col := NewCollector(mon)
	if n := testutil.CollectAndCount(col, "stackcopy_running"); n != 1 {
		t.Errorf("before the run: %d stackcopy_running series", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sum, err := RunMonitored(ctx, cfg, nil, mon)
	if err != nil {
		t.Fatal(err)
	}
	snap := mon.Snapshot()
	if snap.Running || snap.Replay.Completed != sum.Replay.Completed || snap.Total != 4 || !snap.TotalKnown {
		t.Errorf("final snapshot: running %v, completed %d (summary %d), total %d known %v", snap.Running, snap.Replay.Completed, sum.Replay.Completed, snap.Total, snap.TotalKnown)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
	expect := fmt.Sprintf(`
# HELP stackcopy_client_bytes_sent_total Client bytes written to the targets.
# TYPE stackcopy_client_bytes_sent_total counter
stackcopy_client_bytes_sent_total %d
# HELP stackcopy_sessions_started_total Sessions handed to the replayer (-n copies and baseline copies each count).
# TYPE stackcopy_sessions_started_total counter
stackcopy_sessions_started_total 4
`, sum.Replay.BytesSent)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expect), "stackcopy_client_bytes_sent_total", "stackcopy_sessions_started_total"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "stackcopy_sessions_ended_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "completed" {
				found = true
				if v := m.GetCounter().GetValue(); v != float64(sum.Replay.Completed) || v != 4 {
					t.Errorf("completed sessions metric %v, summary %d", v, sum.Replay.Completed)
				}
			}
		}
	}
	if !found {
		t.Error("no stackcopy_sessions_ended_total{outcome=\"completed\"}")
	}
}
