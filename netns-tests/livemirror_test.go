package netnstests

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// TestLiveMirrorTUNLoop: stackcopy runs on the online server itself,
// captures real curl → nginx traffic live and mirrors it through a TUN to a
// recording target, forging clients from a -c pool (the real clients'
// addresses must stay routed to the real clients). Every request nginx
// served reaches the target with the same length, from a pool address,
// never pipelined, and every real request succeeds.
func TestLiveMirrorTUNLoop(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 5)
	target := c.addTarget(t, poolNet)
	targetLog := startRecorder(t, target, netip.AddrPortFrom(targetAddr, 80), "http")

	ng := serveFiles(t, c.online, netip.AddrPortFrom(onlineAddr, 80), map[string][]byte{"a.txt": make([]byte, 300), "b.bin": make([]byte, 40_000)})

	stats := filepath.Join(l.Dir(), "live-stats.json")
	sc, err := c.online.Start(stackcopyPath(t), "-v", "--stats-json", stats, "-x", "198.18.1.1:80-198.18.2.2:80",
		"-i", c.onlineIf, "-c", "198.18.5.x")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stackcopy to start capturing", 15*time.Second, func() bool {
		return strings.Contains(sc.Log(), "mirroring live traffic")
	})

	// Bounded load: each client runs keep-alive batches and short
	// connections; every curl must succeed (the real users are unharmed).
	const batches, perBatch = 4, 25
	base := "http://" + onlineAddr.String() + "/"
	for _, a := range c.clients {
		for b := 0; b < batches; b++ {
			args := []string{"curl", "-sS", "--fail", "--interface", a.String()}
			for i := 0; i < perBatch; i++ {
				args = append(args, "-o", "/dev/null", fmt.Sprintf("%s%s?c=%d", base, []string{"a.txt", "b.bin"}[i%2], i))
			}
			mustExec(t, c.client, args...)
		}
		mustExec(t, c.client, "curl", "-sS", "--fail", "-o", "/dev/null", "--interface", a.String(), "-H", "Connection: close", base+"a.txt")
	}
	want := len(c.clients) * (batches*perBatch + 1)
	acc, err := ng.AccessLog()
	if err != nil {
		t.Fatal(err)
	}
	if len(acc) != want {
		t.Fatalf("nginx served %d requests, want %d", len(acc), want)
	}

	// All sessions end with the client's FIN: wait until the target saw
	// them all, then stop stackcopy.
	sessions := len(c.clients) * (batches + 1)
	recs, sums := readRecords(t, targetLog, sessions, 60*time.Second)
	if err := sc.Stop(); err != nil {
		t.Logf("stackcopy stop: %v", err)
	}
	t.Logf("stackcopy log:\n%s", tailLines(sc.Log(), 15))
	if len(sums) != sessions || len(recs) != want {
		t.Fatalf("target saw %d connections and %d requests, want %d and %d", len(sums), len(recs), sessions, want)
	}
	var gotLen, wantLen []int64
	for _, r := range recs {
		if !poolNet.Contains(r.Client.Addr()) {
			t.Errorf("request from %v, outside the -c pool", r.Client)
		}
		if r.Early {
			t.Errorf("request %d from %v was pipelined", r.Index, r.Client)
		}
		gotLen = append(gotLen, r.Bytes)
	}
	for _, a := range acc {
		wantLen = append(wantLen, a.RequestLength)
	}
	slices.Sort(gotLen)
	slices.Sort(wantLen)
	if !slices.Equal(gotLen, wantLen) {
		t.Errorf("request lengths at the target differ from those nginx served")
	}
	b, err := os.ReadFile(stats)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Live   bool   `json:"live"`
		Drops  uint64 `json:"capture_drops"`
		Replay struct{ Sessions, Completed uint64 }
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if !st.Live || st.Drops != 0 || st.Replay.Sessions != uint64(sessions) || st.Replay.Completed != uint64(sessions) {
		t.Errorf("stackcopy stats %+v: want live, 0 capture drops, %d sessions all completed", st, sessions)
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestLiveMirrorRefusesToDivertRealClients: without -c, live TUN-loop
// mirroring on the online server would route the real clients' addresses
// into the TUN and steal the online server's own answers. stackcopy must
// refuse (and say why) while the real client keeps being served.
func TestLiveMirrorRefusesToDivertRealClients(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 1)
	target := c.addTarget(t)
	startRecorder(t, target, netip.AddrPortFrom(targetAddr, 80), "http")
	serveFiles(t, c.online, netip.AddrPortFrom(onlineAddr, 80), map[string][]byte{"a.txt": []byte("hello\n")})
	sc, err := c.online.Start(stackcopyPath(t), "-v", "-x", "198.18.1.1:80-198.18.2.2:80", "-i", c.onlineIf)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stackcopy to start capturing", 15*time.Second, func() bool {
		return strings.Contains(sc.Log(), "mirroring live traffic")
	})
	for i := 0; i < 3; i++ {
		out := mustExec(t, c.client, "curl", "-sS", "--fail", "--max-time", "10", "http://198.18.1.1/a.txt")
		if string(out) != "hello\n" {
			t.Fatalf("real client got %q", out)
		}
	}
	routes := string(mustExec(t, c.online, "ip", "route"))
	if strings.Contains(routes, "stackcopy0") && strings.Contains(routes, c.clients[0].String()) {
		t.Errorf("stackcopy routed the real client into the TUN:\n%s", routes)
	}
	sc.Stop()
	if log := sc.Log(); !strings.Contains(log, "on-link via") {
		t.Errorf("stackcopy did not say why it refused:\n%s", tailLines(log, 10))
	}
}
