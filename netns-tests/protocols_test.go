package netnstests

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/gopacket"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// protoCapture is real client traffic to a real server, captured on the
// online host.
type protoCapture struct {
	pcap     string
	duration time.Duration // first to last captured packet
	sessions int           // client SYNs in the capture
}

// needPrograms skips the test when a Debian package the lab runs is
// missing (CI installs them all; it runs with STACKCOPY_LAB_REQUIRED).
func needPrograms(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			msg := fmt.Sprintf("%s not installed (.ci/run installs it)", p)
			if os.Getenv(lab.EnvRequired) == "1" {
				t.Fatal(msg + "; " + lab.EnvRequired + "=1 forbids skipping")
			}
			t.Skip(msg)
		}
	}
}

// captureTraffic captures TCP to the online server's port while run
// drives real clients.
func captureTraffic(t *testing.T, c *captureLab, port uint16, run func()) protoCapture {
	t.Helper()
	path := filepath.Join(c.l.Dir(), fmt.Sprintf("proto-%d.pcap", port))
	capt, err := c.online.Capture(c.onlineIf, fmt.Sprintf("tcp port %d", port), path)
	if err != nil {
		t.Fatal(err)
	}
	run()
	dropped, err := capt.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if dropped != 0 {
		t.Fatalf("tcpdump dropped %d packets: the capture is not a faithful input", dropped)
	}
	pc := protoCapture{pcap: path}
	var first, last time.Time
	eachPacket(t, path, func(p gopacket.Packet) {
		ts := p.Metadata().Timestamp
		if first.IsZero() {
			first = ts
		}
		last = ts
		if _, tcp := ipTCP(p); tcp != nil && tcp.SYN && !tcp.ACK {
			pc.sessions++
		}
	})
	pc.duration = last.Sub(first)
	t.Logf("captured %d sessions over %v", pc.sessions, pc.duration)
	return pc
}

// replayAtPace replays the capture at the captured pace (--speed 1) to the
// same port on the target and checks what stackcopy says of the protocol:
// every session completed, detected as proto, every turn ended by the
// protocol's framing (none fell back to --turn-wait or to sizes), and the
// replay took about as long as the capture. The duration is bounded
// loosely here (a slow, shared CI machine); make bench prints the ratio.
func replayAtPace(t *testing.T, r *replayLab, pc protoCapture, port uint16, proto string, extra ...string) runResult {
	t.Helper()
	// Every paced replay also compares (the real clients' traffic through
	// the protocol's comparison): it must not change the pace, and every
	// answer must decode.
	//
	// Not MySQL: its capture holds mariadb-slap, whose client sessions
	// depend on the schema its control session creates moments before;
	// the capture side's decoding (on the reader's goroutine) adds enough
	// lag that a client session can reach the target before that schema
	// exists (seen in a CI dry run: one login refused, exit 3).
	// TestCompareSQL compares MySQL traffic.
	report := filepath.Join(r.l.Dir(), fmt.Sprintf("pace-compare-%d-%d.json", port, time.Now().UnixNano()))
	args := []string{"-x", fmt.Sprintf("%d-%v", port, netip.AddrPortFrom(targetAddr, port)), "-i", pc.pcap, "--speed", "1", "-v"}
	if proto != "mysql" {
		args = append(args, "--compare-json", report)
	}
	args = append(args, extra...)
	res := runStackcopy(t, r.replay, 5*time.Minute, args...)
	if res.exit != 0 {
		t.Fatalf("stackcopy exit %d, want 0", res.exit)
	}
	if proto != "mysql" {
		checkDecoded(t, report, proto)
	}
	st := res.stats.Replay
	if st.Sessions != uint64(pc.sessions) || st.Completed != st.Sessions {
		t.Errorf("replay: %d sessions, %d completed; the capture holds %d", st.Sessions, st.Completed, pc.sessions)
	}
	ps, ok := st.Protocols[proto]
	switch {
	case !ok:
		t.Errorf("no session detected as %s: %+v", proto, st.Protocols)
	case ps.Sessions != st.Sessions:
		t.Errorf("%d of %d sessions detected as %s: %+v", ps.Sessions, st.Sessions, proto, st.Protocols)
	case ps.Turns == 0 || ps.Framed != ps.Turns || ps.TurnWait != 0:
		t.Errorf("%s turns: %+v: want every turn ended by framing, none after --turn-wait", proto, ps)
	}
	elapsed := time.Duration(res.stats.Seconds * float64(time.Second))
	ratio := elapsed.Seconds() / max(pc.duration.Seconds(), 0.001)
	t.Logf("%s: capture %v, replay %v (%.2fx); lag behind the schedule at most %.1f ms, typically under %.0f ms",
		proto, pc.duration, elapsed, ratio, ps.LagMaxMs, ps.LagP50Ms)
	// For make bench (netns-tests/cmd/protobench), which prints the ratios.
	t.Logf("PACE proto=%s sessions=%d turns=%d framed=%d turn_wait=%d capture_s=%.3f replay_s=%.3f lag_max_ms=%.1f lag_p50_ms=%.0f",
		proto, st.Sessions, ps.Turns, ps.Framed, ps.TurnWait, pc.duration.Seconds(), elapsed.Seconds(), ps.LagMaxMs, ps.LagP50Ms)
	if limit := pc.duration*3/2 + 5*time.Second; elapsed > limit {
		t.Errorf("replay took %v for a %v capture: more than %v", elapsed, pc.duration, limit)
	}
	return res
}

// startServerProc starts a server on h and fails the test if it does not
// listen within 10 s.
func startServerProc(t *testing.T, h *lab.Host, listen netip.AddrPort, name string, args ...string) *lab.Proc {
	t.Helper()
	p, err := h.StartServer(listen, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkDecoded checks a comparison report of real traffic: answers were
// compared, every stream decoded (nothing malformed, no request left
// unanswered by a decoder that lost its place), and no answer is missing
// on either side.
func checkDecoded(t *testing.T, path, proto string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("comparison report: %v", err)
	}
	var r struct {
		Requests          int64                       `json:"requests"`
		Compared          int64                       `json:"compared"`
		NoAnswer          int64                       `json:"no_answer"`
		Identical         int64                       `json:"identical"`
		Different         int64                       `json:"different"`
		MissingTarget     int64                       `json:"missing_target"`
		MissingProduction int64                       `json:"missing_production"`
		Unanswered        int64                       `json:"unanswered"`
		Abandoned         int64                       `json:"abandoned"`
		Malformed         map[string]map[string]int64 `json:"malformed"`
		Groups            []struct {
			Protocol string `json:"protocol"`
		} `json:"groups"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("comparison report %s: %v", path, err)
	}
	t.Logf("%s comparison: %d requests, %d compared (%d identical, %d different), %d expect no answer, %d groups",
		proto, r.Requests, r.Compared, r.Identical, r.Different, r.NoAnswer, len(r.Groups))
	wantProto := proto
	if proto == "http2" && len(r.Groups) > 0 && r.Groups[0].Protocol == "http1" {
		wantProto = "http1" // an h2c upgrade that the server declined
	}
	for _, g := range r.Groups {
		if g.Protocol != wantProto {
			t.Errorf("comparison: a group of protocol %s in a %s capture", g.Protocol, proto)
			break
		}
	}
	if r.Compared == 0 || len(r.Malformed) != 0 || r.MissingTarget != 0 || r.MissingProduction != 0 || r.Unanswered != 0 || r.Abandoned != 0 ||
		r.Compared+r.NoAnswer != r.Requests {
		t.Errorf("comparison of real %s traffic: %d requests, %d compared, %d expect no answer, malformed %v, %d missing on the target, %d in production, %d unanswered, %d abandoned",
			proto, r.Requests, r.Compared, r.NoAnswer, r.Malformed, r.MissingTarget, r.MissingProduction, r.Unanswered, r.Abandoned)
		if t.Failed() {
			t.Logf("report: %s", b)
		}
	}
}
