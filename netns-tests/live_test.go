package netnstests

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"

	"github.com/stackcopy/stackcopy/mirror"
	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// Live capture (mirror.OpenLive) on the online host, as it will run in
// production: real clients (curl) talk to real servers (nginx, the
// recorder) while liveprobe, inside the online namespace, captures on its
// interface and reports what the tracker reassembled. An independent
// tcpdump capture of the same interface is the reference. Run as root:
//
//	go test -run Live -v ./netns-tests/
//	STACKCOPY_LIVE_BENCH=1 go test -run LiveThroughput -v ./netns-tests/  # rates before drops

// buildLiveprobe builds netns-tests/cmd/liveprobe into a directory removed
// when the test ends.
func buildLiveprobe(t *testing.T) string {
	t.Helper()
	lab.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "liveprobe")
	if err := lab.BuildBinary("github.com/stackcopy/stackcopy/netns-tests/cmd/liveprobe", path); err != nil {
		t.Fatal(err)
	}
	return path
}

// liveResult is the JSON liveprobe writes (cmd/liveprobe.Result).
type liveResult struct {
	Segments      uint64            `json:"segments"`
	PayloadBytes  uint64            `json:"payload_bytes"`
	MaxPayload    int               `json:"max_payload"`
	SuperSegments uint64            `json:"super_segments"`
	Ports         map[uint16]uint64 `json:"ports"`
	FirstTime     time.Time         `json:"first_time"`
	LastTime      time.Time         `json:"last_time"`
	MaxLagMs      float64           `json:"max_lag_ms"`
	Skewed        uint64            `json:"skewed"`
	CPUSeconds    float64           `json:"cpu_seconds"`
	Streams       []struct {
		Client netip.AddrPort `json:"client"`
		Server netip.AddrPort `json:"server"`
		Bytes  int64          `json:"bytes"`
		SHA256 string         `json:"sha256"`
		Turns  int            `json:"turns"`
		End    string         `json:"end"`
	} `json:"streams"`
	Tracker   mirror.TrackerStats `json:"tracker"`
	Stats     mirror.LiveStats    `json:"stats"`
	End       string              `json:"end"`
	EndClosed bool                `json:"end_closed"`
}

// liveProbe is a running liveprobe.
type liveProbe struct {
	p   *lab.Proc
	out string
}

// startLiveprobe runs liveprobe on h and returns once it captures.
func startLiveprobe(t *testing.T, h *lab.Host, bin, name string, args ...string) *liveProbe {
	t.Helper()
	out := filepath.Join(h.Lab().Dir(), "liveprobe-"+name+".json")
	p, err := h.Start(bin, append(args, "-out", out)...)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Log(), "capturing on") {
		select {
		case <-p.Done():
			t.Fatalf("liveprobe exited: %v\n%s", p.Wait(), p.Log())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("liveprobe not capturing after 10s:\n%s", p.Log())
		}
	}
	return &liveProbe{p: p, out: out}
}

// stop ends liveprobe (SIGTERM: it closes the source, which unblocks Next)
// and reads its result.
func (lp *liveProbe) stop(t *testing.T) liveResult {
	t.Helper()
	if err := lp.p.Stop(); err != nil {
		t.Fatalf("liveprobe: %v", err)
	}
	b, err := os.ReadFile(lp.out)
	if err != nil {
		t.Fatalf("liveprobe wrote no result: %v\n%s", err, lp.p.Log())
	}
	var res liveResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if !res.EndClosed {
		t.Errorf("liveprobe's Next ended with %q, want the closed error", res.End)
	}
	return res
}

// countPorts counts the TCP packets of a pcap by server port (either end).
func countPorts(t *testing.T, path string, ports ...uint16) map[uint16]uint64 {
	t.Helper()
	n := map[uint16]uint64{}
	eachPacket(t, path, func(p gopacket.Packet) {
		_, tcp := ipTCP(p)
		if tcp == nil {
			return
		}
		for _, port := range ports {
			if uint16(tcp.SrcPort) == port || uint16(tcp.DstPort) == port {
				n[port]++
			}
		}
	})
	return n
}

// TestLiveCapture: four curl clients fetch files from nginx on keep-alive
// connections and post bodies, on the mirrored port 80; the same clients
// post to a recorder on port 81, which is not mirrored. liveprobe captures
// on the online host's interface with -x 80-…:
//   - every client stream the tracker reassembled from the live capture is
//     byte-identical (length, SHA-256) to the one in tcpdump's capture and
//     as long as nginx's request lengths say, and ended with the client's
//     FIN;
//   - the kernel filter kept port 81 out: not one of its segments reached
//     userspace, and the kernel counted (tp_packets) exactly the packets
//     tcpdump saw on port 80;
//   - no drops, kernel timestamps on both directions within a second of
//     the clock.
func TestLiveCapture(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 4)
	probe := buildLiveprobe(t)

	root := filepath.Join(l.Dir(), "www")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"small.txt": 100, "page.html": 20_000, "big.bin": 300_000} {
		b := make([]byte, n)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(root, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	post := filepath.Join(l.Dir(), "post.bin")
	body := make([]byte, 50_000)
	rand.Read(body)
	if err := os.WriteFile(post, body, 0o644); err != nil {
		t.Fatal(err)
	}
	online := netip.AddrPortFrom(onlineAddr, 80)
	other := netip.AddrPortFrom(onlineAddr, 81)
	ng, err := lab.StartNginx(c.online, online, root)
	if err != nil {
		t.Fatal(err)
	}
	otherLog := startRecorder(t, c.online, other, "http")

	lp := startLiveprobe(t, c.online, probe, "http", "-iface", c.onlineIf, "-x", "80-198.18.2.2:80")
	pcap := filepath.Join(l.Dir(), "live-reference.pcap")
	capt, err := c.online.Capture(c.onlineIf, "tcp port 80 or tcp port 81", pcap)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + online.String() + "/"
	for _, a := range c.clients {
		mustExec(t, c.client, "curl", "-sS", "--interface", a.String(),
			"-o", "/dev/null", base+"small.txt", "-o", "/dev/null", base+"page.html", "-o", "/dev/null", base+"big.bin",
			"--next", "-sS", "-o", "/dev/null", "--interface", a.String(), "--data-binary", "@"+post, base+"small.txt")
		mustExec(t, c.client, "curl", "-sS", "-o", "/dev/null", "--interface", a.String(), "-H", "Expect:",
			"--data-binary", "@"+post, "http://"+other.String()+"/not-mirrored")
	}
	_, otherSums := readRecords(t, otherLog, len(c.clients), 10*time.Second)
	if len(otherSums) != len(c.clients) {
		t.Fatalf("the recorder on %v saw %d connections, want %d", other, len(otherSums), len(c.clients))
	}
	var acc []lab.NginxAccess
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if acc, err = ng.AccessLog(); err != nil {
			t.Fatal(err)
		}
		if len(acc) >= 4*len(c.clients) {
			break
		}
	}
	if len(acc) != 4*len(c.clients) {
		t.Fatalf("nginx logged %d requests, want %d", len(acc), 4*len(c.clients))
	}
	// The last packets (FINs, ACKs) reach the probe within a ring block
	// timeout.
	time.Sleep(20 * mirror.LiveBlockTimeout)
	if dropped, err := capt.Stop(); err != nil || dropped != 0 {
		t.Fatalf("reference capture: %d dropped, %v", dropped, err)
	}
	res := lp.stop(t)
	st := res.Stats
	t.Logf("live: %d segments, %d payload bytes, max payload %d, max lag %.1f ms, %.3f s CPU; tracker %+v",
		res.Segments, res.PayloadBytes, res.MaxPayload, res.MaxLagMs, res.CPUSeconds, res.Tracker)
	t.Logf("live stats: %+v", st)

	// Streams: live capture vs tcpdump vs nginx.
	want := clientStreams(t, pcap, online)
	if len(want) != len(c.clients) || len(res.Streams) != len(c.clients) {
		t.Fatalf("tcpdump has %d client sessions, live capture %d; want %d", len(want), len(res.Streams), len(c.clients))
	}
	// nginx answers the POST with 405 and discards its body, which
	// $request_length then leaves out.
	nginxBytes := map[netip.AddrPort]int64{}
	for _, a := range acc {
		nginxBytes[a.Client] += a.RequestLength
		if strings.HasPrefix(a.Request, "POST ") {
			nginxBytes[a.Client] += int64(len(body))
		}
	}
	for _, s := range res.Streams {
		w, ok := want[s.Client]
		if !ok {
			t.Errorf("live session %v not in tcpdump's capture", s.Client)
			continue
		}
		if s.Bytes != int64(len(w)) || s.SHA256 != sha(w) {
			t.Errorf("client %v: live stream %d bytes sha %.12s, tcpdump %d bytes sha %.12s", s.Client, s.Bytes, s.SHA256, len(w), sha(w))
		}
		if s.Bytes != nginxBytes[s.Client] {
			t.Errorf("client %v: live stream %d bytes, nginx request lengths add up to %d", s.Client, s.Bytes, nginxBytes[s.Client])
		}
		if s.End != "fin" || s.Server != online {
			t.Errorf("client %v: server %v, ended %q; want %v, fin", s.Client, s.Server, s.End, online)
		}
	}
	if tr := res.Tracker; tr.Sessions != uint64(len(c.clients)) || tr.Gaps != 0 || tr.MidStream != 0 {
		t.Errorf("tracker %+v: want %d sessions, no gaps, none mid-stream", tr, len(c.clients))
	}

	// The kernel filter: port 81 never reached userspace, and the kernel
	// passed exactly tcpdump's port-80 packets.
	ref := countPorts(t, pcap, 80, 81)
	if ref[81] == 0 {
		t.Fatal("the reference capture has no port-81 traffic: the filter test tests nothing")
	}
	if res.Ports[81] != 0 || st.NotMirrored != 0 || st.NonTCP != 0 {
		t.Errorf("%d port-81 segments, %d not mirrored, %d non-TCP packets reached userspace", res.Ports[81], st.NotMirrored, st.NonTCP)
	}
	if st.KernelPackets != ref[80] {
		t.Errorf("kernel passed %d packets (tp_packets), tcpdump saw %d on port 80 (and %d on port 81)", st.KernelPackets, ref[80], ref[81])
	}
	if st.Packets != st.KernelPackets || st.TCP != res.Segments || st.TCP != st.Packets {
		t.Errorf("read %d packets (%d TCP, %d returned) of %d the kernel passed", st.Packets, st.TCP, res.Segments, st.KernelPackets)
	}
	if st.Drops != 0 || st.Truncated != 0 || st.Malformed != 0 {
		t.Errorf("%d drops, %d truncated, %d malformed", st.Drops, st.Truncated, st.Malformed)
	}
	if len(st.Interfaces) != 1 || st.Interfaces[0].Name != c.onlineIf || st.Interfaces[0].KernelPackets != st.KernelPackets {
		t.Errorf("per-interface stats %+v", st.Interfaces)
	}
	if res.Skewed != 0 {
		t.Errorf("%d segments stamped more than 1s away from the clock", res.Skewed)
	}
	if res.Ports[80] != res.Segments {
		t.Errorf("%d segments, %d of port 80", res.Segments, res.Ports[80])
	}
}

// TestLiveLargeUpload: one 64 MiB upload by curl, unthrottled. veth passes
// the sender's 64 KiB TSO packets whole, so the capture sees super-segments
// in the client direction. With no drops the live stream is exactly what
// the recorder received; any drop must be counted and end the session in a
// capture gap, never in a wrong stream.
func TestLiveLargeUpload(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 1)
	probe := buildLiveprobe(t)
	server := netip.AddrPortFrom(onlineAddr, 8080)
	recLog := startRecorder(t, c.online, server, "http")
	upload := filepath.Join(l.Dir(), "upload.bin")
	writeRandomFile(t, upload, 64<<20)

	lp := startLiveprobe(t, c.online, probe, "upload", "-iface", c.onlineIf, "-x", "8080-198.18.2.2:8080")
	start := time.Now()
	mustExec(t, c.client, "curl", "-sS", "-o", "/dev/null", "-H", "Expect:", "--data-binary", "@"+upload, "http://"+server.String()+"/upload")
	took := time.Since(start)
	_, sums := readRecords(t, recLog, 1, 10*time.Second)
	if len(sums) != 1 {
		t.Fatalf("recorder saw %d connections", len(sums))
	}
	time.Sleep(20 * mirror.LiveBlockTimeout)
	res := lp.stop(t)
	st := res.Stats
	t.Logf("upload %d bytes in %v (%.2f Gbit/s); live: %d segments (%d above 1500 bytes, largest %d), %.3f s CPU (%.1f µs/segment); stats %+v",
		sums[0].TotalBytes, took.Round(time.Millisecond), float64(sums[0].TotalBytes)*8/took.Seconds()/1e9,
		res.Segments, res.SuperSegments, res.MaxPayload, res.CPUSeconds, res.CPUSeconds*1e6/float64(max(res.Segments, 1)), st)
	if res.SuperSegments == 0 || res.MaxPayload <= 1500 {
		t.Errorf("no super-segments captured (largest payload %d)", res.MaxPayload)
	}
	if st.KernelPackets != st.Packets+st.Drops {
		t.Errorf("kernel passed %d packets, read %d, dropped %d", st.KernelPackets, st.Packets, st.Drops)
	}
	if st.Truncated != 0 {
		t.Errorf("%d super-segments truncated: snap length too short", st.Truncated)
	}
	if len(res.Streams) != 1 {
		t.Fatalf("live capture has %d sessions, want 1", len(res.Streams))
	}
	s := res.Streams[0]
	if st.Drops > 0 {
		t.Logf("%d packets dropped (ring full %d times); session ended %q", st.Drops, st.FreezeQueue, s.End)
		if !strings.HasPrefix(s.End, "gap") {
			t.Errorf("%d drops, but the session ended %q, not in a capture gap", st.Drops, s.End)
		}
		return
	}
	if s.Bytes != sums[0].TotalBytes || s.SHA256 != sums[0].SHA256All || s.End != "fin" {
		t.Errorf("live stream %d bytes sha %.12s ended %q; recorder got %d bytes sha %.12s", s.Bytes, s.SHA256, s.End, sums[0].TotalBytes, sums[0].SHA256All)
	}
}

func writeRandomFile(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for n > 0 {
		rand.Read(chunk)
		k := min(n, len(chunk))
		if _, err := f.Write(chunk[:k]); err != nil {
			t.Fatal(err)
		}
		n -= k
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLiveThroughput (STACKCOPY_LIVE_BENCH=1) measures what the live source
// sustains: uploads at bounded rates (STACKCOPY_LIVE_RATES, curl
// --limit-rate values, 0 = unbounded) with MTU-sized packets (GSO off on the
// client: the packet-rate case) and with 64 KiB GSO packets (the byte-rate
// case), once with the tracker and hashing and once counting only. For each
// it logs packets/s, Gbit/s of payload, drops and CPU per packet.
func TestLiveThroughput(t *testing.T) {
	if os.Getenv("STACKCOPY_LIVE_BENCH") == "" {
		t.Skip("set STACKCOPY_LIVE_BENCH=1 to measure")
	}
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 1)
	probe := buildLiveprobe(t)
	server := netip.AddrPortFrom(onlineAddr, 8080)
	startRecorder(t, c.online, server, "http")
	size := 256 << 20
	if v := os.Getenv("STACKCOPY_LIVE_BYTES"); v != "" {
		var err error
		if size, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	upload := filepath.Join(l.Dir(), "upload.bin")
	writeRandomFile(t, upload, size)
	rates := []string{"50M", "100M", "200M", "400M", "0"}
	if v := os.Getenv("STACKCOPY_LIVE_RATES"); v != "" {
		rates = strings.Split(v, ",")
	}
	var lines []string
	for _, gso := range []bool{false, true} {
		if !gso {
			if err := c.client.DisableGSO(liveClientIf); err != nil {
				t.Fatal(err)
			}
		} else {
			mustExec(t, c.client, "ip", "link", "set", "dev", liveClientIf, "gso_max_segs", "65535")
		}
		for _, track := range []bool{true, false} {
			for _, rate := range rates {
				name := fmt.Sprintf("gso=%v track=%v rate=%s", gso, track, rate)
				lp := startLiveprobe(t, c.online, probe, strings.NewReplacer("=", "-", " ", "_").Replace(name),
					"-iface", c.onlineIf, "-x", "8080-198.18.2.2:8080", "-track="+strconv.FormatBool(track))
				args := []string{"curl", "-sS", "-o", "/dev/null", "-H", "Expect:", "--data-binary", "@" + upload}
				if rate != "0" {
					args = append(args, "--limit-rate", rate)
				}
				start := time.Now()
				mustExec(t, c.client, append(args, "http://"+server.String()+"/upload")...)
				took := time.Since(start)
				time.Sleep(20 * mirror.LiveBlockTimeout)
				res := lp.stop(t)
				st := res.Stats
				span := res.LastTime.Sub(res.FirstTime).Seconds()
				line := fmt.Sprintf("%-32s %6.2f s  %8.0f pkt/s  %5.2f Gbit/s  drops %d (ring full %d)  %.2f s CPU  %.2f µs/pkt  max payload %d",
					name, took.Seconds(), float64(st.Packets)/span, float64(res.PayloadBytes)*8/span/1e9,
					st.Drops, st.FreezeQueue, res.CPUSeconds, res.CPUSeconds*1e6/float64(max(st.Packets, 1)), res.MaxPayload)
				t.Log(line)
				lines = append(lines, line)
			}
		}
	}
	t.Logf("summary (%d MiB per upload):\n%s", size>>20, strings.Join(lines, "\n"))
}

// liveClientIf is the client host's interface towards the online host:
// the lab names interfaces in creation order, and newCaptureLab creates one.
const liveClientIf = "eth0"
