package netnstests

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
	"github.com/stackcopy/stackcopy/netns-tests/recorder"
)

// Sessions seen mid-stream (their SYN was not captured): skipped and
// counted by default (-O), joined at their next turn boundary with
// -O=false. The target must then get a contiguous suffix of the
// connection's requests, each byte-exact, never a partial one.

// midStreamRequests is how many requests the keep-alive curl sends on its
// one connection.
const midStreamRequests = 80

// curlKeepAlive returns curl's arguments for n requests on one keep-alive
// connection from client, each URL distinct so every request differs.
func curlKeepAlive(client netip.Addr, n int, extra ...string) []string {
	args := append([]string{"-sS", "--fail", "--interface", client.String()}, extra...)
	for i := 0; i < n; i++ {
		args = append(args, "-o", "/dev/null", fmt.Sprintf("http://%s/a.txt?req=%03d", onlineAddr, i))
	}
	return args
}

// oneConnection checks that nginx served n requests on one connection.
func oneConnection(t *testing.T, ng *lab.Nginx, n int) {
	t.Helper()
	acc, err := ng.AccessLog()
	if err != nil {
		t.Fatal(err)
	}
	if len(acc) != n {
		t.Fatalf("nginx served %d requests, want %d", len(acc), n)
	}
	for i, a := range acc {
		if a.Connection != acc[0].Connection || a.ConnectionRequests != i+1 {
			t.Fatalf("request %d on nginx connection %d (#%d), want all %d on connection %d: curl did not keep one connection",
				i, a.Connection, a.ConnectionRequests, n, acc[0].Connection)
		}
	}
}

// referenceRequests reassembles the one client connection of a full
// capture (with its SYN) and cuts it into requests.
func referenceRequests(t *testing.T, pcap string) (netip.AddrPort, []expectedRequest, []byte) {
	t.Helper()
	streams := clientStreams(t, pcap, netip.AddrPortFrom(onlineAddr, 80))
	if len(streams) != 1 {
		t.Fatalf("reference capture holds %d client connections, want 1", len(streams))
	}
	for client, stream := range streams {
		return client, httpRequests(t, stream), stream
	}
	panic("unreachable")
}

// checkSuffix checks that the target's records are exactly want[first:]
// on one connection from client, and returns first.
func checkSuffix(t *testing.T, recs []recorder.Record, client netip.AddrPort, want []expectedRequest) int {
	t.Helper()
	if len(recs) == 0 || len(recs) > len(want) {
		t.Fatalf("target recorded %d requests, want 1..%d", len(recs), len(want))
	}
	first := len(want) - len(recs)
	for i, r := range recs {
		w := want[first+i]
		switch {
		case r.Client != client:
			t.Errorf("request %d came from %v, want the original client %v", i, r.Client, client)
		case r.Conn != recs[0].Conn || r.Index != i:
			t.Errorf("request %d: connection %d index %d, want one connection in order", i, r.Conn, r.Index)
		case r.Error != "":
			t.Errorf("request %d (%s) arrived broken: %s", i, r.Line, r.Error)
		case r.Early:
			t.Errorf("request %d (%s) was sent before the answer to the previous one", i, r.Line)
		case r.Bytes != w.bytes || r.SHA256 != w.sha256:
			t.Errorf("request %d (%s): %d bytes sha %.12s, want captured request %d: %d bytes sha %.12s",
				i, r.Line, r.Bytes, r.SHA256, first+i, w.bytes, w.sha256)
		}
	}
	return first
}

// midStreamStats is the part of --stats-json these tests read.
type midStreamStats struct {
	Replay struct {
		Sessions, Completed uint64
	} `json:"replay"`
	Tracker struct {
		Sessions, Joined uint64
		MidStream        uint64 `json:"mid_stream"`
	} `json:"tracker"`
}

func readMidStreamStats(t *testing.T, path string) midStreamStats {
	t.Helper()
	return readStats[midStreamStats](t, path)
}

// TestMidStreamLive: a real curl sends 80 requests at 10/s over one
// keep-alive connection to nginx on the online host; stackcopy starts
// mirroring live (traditional deployment: raw egress, intercept on the
// target) only after the first requests were served, so it never sees the
// SYN.
//   - join (-O=false): the target gets a contiguous suffix of the
//     connection's requests (at least 20), byte-exact, from the original
//     client address, none of those served before stackcopy started, and
//     the tracker counts one joined session;
//   - skip (default -O): the target gets nothing; the flow is counted as
//     mid-stream.
func TestMidStreamLive(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"join", []string{"-O=false"}},
		{"skip", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ll := newLiveLab(t, false, 1)
			ng := ll.serveFiles(t)
			client := ll.clients[0]
			ref := filepath.Join(ll.l.Dir(), "reference.pcap")
			capt, err := ll.online.Capture(ll.onlineIf, "tcp port 80", ref)
			if err != nil {
				t.Fatal(err)
			}
			curl, err := ll.client.Start("curl", curlKeepAlive(client, midStreamRequests, "--rate", "10/s")...)
			if err != nil {
				t.Fatal(err)
			}
			served := func() int {
				acc, err := ng.AccessLog()
				if err != nil {
					t.Fatal(err)
				}
				return len(acc)
			}
			waitFor(t, "curl's first requests", 20*time.Second, func() bool { return served() >= 8 })
			before := served() // served before stackcopy could capture
			mp, stats := ll.startMirror(t, tt.args...)
			select {
			case <-curl.Done():
			case <-time.After(2 * time.Minute):
				t.Fatalf("curl did not finish:\n%s", curl.Log())
			}
			if err := curl.Wait(); err != nil {
				t.Fatalf("the real client failed: %v\n%s", err, curl.Log())
			}
			oneConnection(t, ng, midStreamRequests)
			if dropped, err := capt.Stop(); err != nil || dropped != 0 {
				t.Fatalf("reference capture: %v, %d dropped", err, dropped)
			}
			addr, want, _ := referenceRequests(t, ref)
			if len(want) != midStreamRequests || addr.Addr() != client {
				t.Fatalf("reference capture: %d requests from %v, want %d from %v", len(want), addr, midStreamRequests, client)
			}

			if tt.name == "skip" {
				stopMirror(t, mp, stats)
				full := readMidStreamStats(t, stats)
				recs, sums := readRecords(t, ll.targetLog, 0, 0)
				if len(recs) != 0 || len(sums) != 0 {
					t.Errorf("default -O: target got %d requests on %d connections, want none", len(recs), len(sums))
				}
				if tr := full.Tracker; tr.MidStream < 1 || tr.Joined != 0 || tr.Sessions != 0 || full.Replay.Sessions != 0 {
					t.Errorf("default -O: stats %+v, want the flow counted mid-stream, nothing joined or replayed", full)
				}
				return
			}

			// The connection ends with curl's FIN: the replayed session
			// completes and the recorder logs its summary.
			recs, sums := readRecords(t, ll.targetLog, 1, time.Minute)
			stopMirror(t, mp, stats)
			full := readMidStreamStats(t, stats)
			if len(sums) != 1 {
				t.Fatalf("target saw %d connections, want 1 (the joined one)", len(sums))
			}
			first := checkSuffix(t, recs, addr, want)
			t.Logf("joined at request %d of %d (%d served before stackcopy started); target got %d", first, len(want), before, len(recs))
			if first < before || first == 0 {
				t.Errorf("the target got request %d, but %d were served before stackcopy started capturing", first, before)
			}
			if len(recs) < 20 {
				t.Errorf("the target got only %d requests, want at least 20", len(recs))
			}
			if tr := full.Tracker; tr.Joined != 1 || tr.MidStream != 0 || tr.Sessions != 0 {
				t.Errorf("tracker stats %+v, want exactly one joined flow", tr)
			}
			if r := full.Replay; r.Sessions != 1 || r.Completed != 1 {
				t.Errorf("replay stats %+v, want the joined session completed", r)
			}
		})
	}
}

// TestMidStreamOffline: a capture of one keep-alive connection (real curl
// → nginx, 40 requests) loses its head: everything before the client's
// fifth request (SYN included). Replayed with -O=false, the fifth request
// has no captured answer before it, so the session is joined at the sixth,
// and the target gets requests 6..40 byte-exact from the original client
// address. With the default -O nothing is replayed.
func TestMidStreamOffline(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 1)
	ng := serveFiles(t, c.online, netip.AddrPortFrom(onlineAddr, 80), map[string][]byte{"a.txt": bytes.Repeat([]byte("answer "), 300)})
	full := filepath.Join(l.Dir(), "full.pcap")
	capt, err := c.online.Capture(c.onlineIf, "tcp port 80", full)
	if err != nil {
		t.Fatal(err)
	}
	const n, cutAt = 40, 4 // requests; index of the first request kept
	mustExec(t, c.client, append([]string{"curl"}, curlKeepAlive(c.clients[0], n)...)...)
	if dropped, err := capt.Stop(); err != nil || dropped != 0 {
		t.Fatalf("capture: %v, %d dropped", err, dropped)
	}
	oneConnection(t, ng, n)
	client, want, stream := referenceRequests(t, full)
	if len(want) != n {
		t.Fatalf("capture holds %d requests, want %d", len(want), n)
	}
	off := 0
	for _, w := range want[:cutAt] {
		off += int(w.bytes)
	}
	if !bytes.HasPrefix(stream[off:], []byte("GET /a.txt?req=004 ")) {
		t.Fatalf("request %d does not start at stream offset %d", cutAt, off)
	}
	cut := filepath.Join(l.Dir(), "headless.pcap")
	dropped := cutHead(t, full, cut, client, uint32(off))

	r := newReplayLab(t, l)
	logPath := startRecorder(t, r.target, netip.AddrPortFrom(targetAddr, 80), "http")

	res := runStackcopy(t, r.replay, time.Minute, "-x", "80-198.18.2.2:80", "-i", cut, "--speed", "0")
	if res.exit != 1 || res.stats.Replay.Sessions != 0 || res.stats.Tracker.MidStream != 1 {
		t.Errorf("default -O: exit %d, stats %+v: want exit 1 (no session to replay), 1 mid-stream", res.exit, res.stats)
	}

	res = runStackcopy(t, r.replay, time.Minute, "-x", "80-198.18.2.2:80", "-i", cut, "--speed", "0", "-O=false")
	if res.exit != 0 {
		t.Fatalf("-O=false: exit %d, want 0", res.exit)
	}
	recs, sums := readRecords(t, logPath, 1, 10*time.Second)
	if len(sums) != 1 {
		t.Fatalf("target saw %d connections, want 1", len(sums))
	}
	if first := checkSuffix(t, recs, client, want); first != cutAt+1 {
		t.Errorf("joined at request %d, want %d: request %d is the first captured, unanswered before it; the next one starts a turn",
			first, cutAt+1, cutAt)
	}
	if s := res.stats.Replay; s.Sessions != 1 || s.Completed != 1 {
		t.Errorf("replay stats %+v: want 1 session, completed", s)
	}
	if res.stats.Tracker.MidStream != 0 || !strings.Contains(res.stdout, "0 mid-stream (no SYN captured; 1 more joined at a turn boundary") {
		t.Errorf("-O=false: %d mid-stream; the summary does not show the joined session:\n%s", res.stats.Tracker.MidStream, res.stdout)
	}
	t.Logf("cut %d packets from the head of the capture", dropped)
}

// cutHead copies a pcap leaving out every packet before the client's
// segment that starts at stream offset off (the SYN included). It returns
// how many packets it left out.
func cutHead(t *testing.T, in, out string, client netip.AddrPort, off uint32) int {
	t.Helper()
	o, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	w := pcapgo.NewWriter(o)
	// tcpdump on the lab's veths writes Ethernet with a 262144 snap length.
	if err := w.WriteFileHeader(262144, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	var isn uint32
	keep, dropped := false, 0
	eachPacket(t, in, func(p gopacket.Packet) {
		if ip, tcp := ipTCP(p); !keep && ip != nil && tcp != nil &&
			netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip.SrcIP.To4())), uint16(tcp.SrcPort)) == client {
			switch {
			case tcp.SYN:
				isn = tcp.Seq + 1
			case len(tcp.Payload) > 0 && tcp.Seq-isn == off:
				keep = true
			}
		}
		if !keep {
			dropped++
			return
		}
		if err := w.WritePacket(p.Metadata().CaptureInfo, p.Data()); err != nil {
			t.Fatal(err)
		}
	})
	if !keep {
		t.Fatalf("client %v has no segment at stream offset %d", client, off)
	}
	return dropped
}
