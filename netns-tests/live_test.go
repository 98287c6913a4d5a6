package netnstests

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/stackcopy/stackcopy/capture"
	"github.com/stackcopy/stackcopy/netns-tests/lab"
	"github.com/stackcopy/stackcopy/netns-tests/liveprobe"
)

// Live capture (capture.OpenLive) on the online host, as it will run in
// production: real clients (curl) talk to real servers (nginx, the
// recorder) while liveprobe, inside the online namespace, captures on its
// interface and reports what the tracker reassembled. An independent
// tcpdump capture of the same interface is the reference. Run as root:
//
//	go test -run Live -v ./netns-tests/
//	STACKCOPY_LIVE_BENCH=1 go test -run LiveThroughput -v ./netns-tests/  # rates before drops

// liveResult is the JSON liveprobe writes.
type liveResult = liveprobe.Result

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
	probe := labBinary(t, pkgLiveprobe)

	online := netip.AddrPortFrom(onlineAddr, 80)
	other := netip.AddrPortFrom(onlineAddr, 81)
	ng := serveFiles(t, c.online, online, map[string][]byte{
		"small.txt": randomBytes(100), "page.html": randomBytes(20_000), "big.bin": randomBytes(300_000)})
	post := filepath.Join(l.Dir(), "post.bin")
	body := randomBytes(50_000)
	if err := os.WriteFile(post, body, 0o644); err != nil {
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
	time.Sleep(20 * capture.LiveBlockTimeout)
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
	probe := labBinary(t, pkgLiveprobe)
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
	time.Sleep(20 * capture.LiveBlockTimeout)
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
// sustains, with MTU-sized packets (GSO off on the client: the packet-rate
// case) and with 64 KiB GSO packets (the byte-rate case), each with the
// tracker and hashing (-track) and counting only:
//
//   - paced: uploads at bounded rates (STACKCOPY_LIVE_RATES, curl
//     --limit-rate values, 0 = unbounded) while liveprobe reads; it logs the
//     captured packets/s, Gbit/s of payload, drops and CPU per packet. In
//     the lab the sender, the receiver and the probe share the machine's
//     CPUs, and the kernel charges softirq work to whichever process runs,
//     so CPU per packet here is an upper bound;
//   - drain: liveprobe is stopped (SIGSTOP) while an upload fills its ring,
//     then continued: the rate at which it empties the ring is what it can
//     take at most, and its CPU time is its own.
//
// STACKCOPY_LIVE_BYTES sets the upload size (default 256 MiB, drain: half),
// STACKCOPY_LIVE_GSO=off|on and STACKCOPY_LIVE_TRACK=off|on restrict the
// cases, STACKCOPY_LIVE_PROFILE=DIR writes CPU profiles.
func TestLiveThroughput(t *testing.T) {
	if os.Getenv("STACKCOPY_LIVE_BENCH") == "" {
		t.Skip("set STACKCOPY_LIVE_BENCH=1 to measure")
	}
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 1)
	probe := labBinary(t, pkgLiveprobe)
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
	drainUpload := filepath.Join(l.Dir(), "drain.bin")
	writeRandomFile(t, drainUpload, size/2)
	rates := []string{"100M", "400M", "0"}
	if v := os.Getenv("STACKCOPY_LIVE_RATES"); v != "" {
		rates = strings.Split(v, ",")
	}
	gsos := []bool{false, true}
	if v := os.Getenv("STACKCOPY_LIVE_GSO"); v != "" {
		gsos = []bool{v == "on"}
	}
	tracks := []bool{true, false}
	if v := os.Getenv("STACKCOPY_LIVE_TRACK"); v != "" {
		tracks = []bool{v == "on"}
	}
	profDir := os.Getenv("STACKCOPY_LIVE_PROFILE")
	curl := func(file, rate string) time.Duration {
		args := []string{"curl", "-sS", "-o", "/dev/null", "-H", "Expect:", "--data-binary", "@" + file}
		if rate != "0" && rate != "" {
			args = append(args, "--limit-rate", rate)
		}
		start := time.Now()
		mustExec(t, c.client, append(args, "http://"+server.String()+"/upload")...)
		return time.Since(start)
	}
	var lines []string
	report := func(name string, took time.Duration, res liveResult, span float64) {
		st := res.Stats
		line := fmt.Sprintf("%-36s %6.2f s  %8.0f pkt/s  %5.2f Gbit/s  drops %d (ring full %d)  %.2f s CPU  %.2f µs/pkt  max payload %d",
			name, took.Seconds(), float64(st.Packets)/span, float64(res.PayloadBytes)*8/span/1e9,
			st.Drops, st.FreezeQueue, res.CPUSeconds, res.CPUSeconds*1e6/float64(max(st.Packets, 1)), res.MaxPayload)
		t.Log(line)
		lines = append(lines, line)
	}
	for _, gso := range gsos {
		segs := "1"
		if gso {
			segs = "65535"
		}
		mustExec(t, c.client, "ip", "link", "set", "dev", liveClientIf, "gso_max_segs", segs)
		for _, track := range tracks {
			args := func(name string, extra ...string) []string {
				a := append([]string{"-iface", c.onlineIf, "-x", "8080-198.18.2.2:8080", "-track=" + strconv.FormatBool(track)}, extra...)
				if profDir != "" {
					a = append(a, "-cpuprofile", filepath.Join(profDir, name+".prof"))
				}
				return a
			}
			for _, rate := range rates {
				name := fmt.Sprintf("paced gso=%v track=%v rate=%s", gso, track, rate)
				file := strings.NewReplacer("=", "-", " ", "_").Replace(name)
				lp := startLiveprobe(t, c.online, probe, file, args(file)...)
				took := curl(upload, rate)
				time.Sleep(20 * capture.LiveBlockTimeout)
				res := lp.stop(t)
				report(name, took, res, res.LastTime.Sub(res.FirstTime).Seconds())
			}
			name := fmt.Sprintf("drain gso=%v track=%v", gso, track)
			file := strings.NewReplacer("=", "-", " ", "_").Replace(name)
			lp := startLiveprobe(t, c.online, probe, file, args(file, "-buffer", strconv.Itoa(1<<30))...)
			if err := syscall.Kill(lp.p.PID, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			took := curl(drainUpload, "")
			time.Sleep(20 * capture.LiveBlockTimeout)
			if err := syscall.Kill(lp.p.PID, syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * time.Second)
			res := lp.stop(t)
			report(name, took, res, res.ReadLast.Sub(res.ReadFirst).Seconds())
		}
	}
	t.Logf("summary (%d MiB per paced upload, %d MiB drained):\n%s", size>>20, size>>21, strings.Join(lines, "\n"))
}

// liveClientIf is the client host's interface towards the online host:
// the lab names interfaces in creation order, and newCaptureLab creates one.
const liveClientIf = "eth0"

// TestLiveInterfaceDownAndGone: capture survives its interface going down
// and up again (the kernel re-attaches the socket; LinkDowns counts it),
// and ends with a clear error when the interface is removed, here while it
// is down, which the kernel does not signal at all.
func TestLiveInterfaceDownAndGone(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 1)
	probe := labBinary(t, pkgLiveprobe)
	online := netip.AddrPortFrom(onlineAddr, 80)
	serveFiles(t, c.online, online, map[string][]byte{"small.txt": []byte("hello\n")})
	lp := startLiveprobe(t, c.online, probe, "downup", "-iface", c.onlineIf, "-x", "80-198.18.2.2:80")
	get := func() {
		mustExec(t, c.client, "curl", "-sS", "-o", "/dev/null", "--connect-timeout", "5", "--retry", "5", "--retry-all-errors", "--retry-delay", "1",
			"http://"+online.String()+"/small.txt")
	}
	get()
	mustExec(t, c.online, "ip", "link", "set", c.onlineIf, "down")
	time.Sleep(200 * time.Millisecond)
	mustExec(t, c.online, "ip", "link", "set", c.onlineIf, "up")
	time.Sleep(200 * time.Millisecond)
	get()
	time.Sleep(20 * capture.LiveBlockTimeout)
	mustExec(t, c.online, "ip", "link", "set", c.onlineIf, "down")
	time.Sleep(200 * time.Millisecond)
	removed := time.Now()
	mustExec(t, c.online, "ip", "link", "del", c.onlineIf)
	select {
	case <-lp.p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("liveprobe still capturing 10s after its interface was removed")
	}
	t.Logf("Next failed %v after the interface was removed", time.Since(removed).Round(time.Millisecond))
	if err := lp.p.Wait(); err != nil {
		t.Fatalf("liveprobe: %v\n%s", err, lp.p.Log())
	}
	b, err := os.ReadFile(lp.out)
	if err != nil {
		t.Fatal(err)
	}
	var res liveResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	t.Logf("end %q; stats %+v", res.End, res.Stats)
	if want := "live capture on " + c.onlineIf + ": the interface disappeared"; res.End != want {
		t.Errorf("Next ended with %q, want %q", res.End, want)
	}
	if res.Stats.LinkDowns != 2 {
		t.Errorf("LinkDowns %d, want 2", res.Stats.LinkDowns)
	}
	if len(res.Streams) != 2 {
		t.Fatalf("%d sessions captured, want 2 (before and after the interface was down)", len(res.Streams))
	}
	for _, s := range res.Streams {
		if s.End != "fin" || s.Bytes == 0 {
			t.Errorf("session %v: %d bytes, ended %q", s.Client, s.Bytes, s.End)
		}
	}
}

// TestLiveSeveralInterfaces: one probe captures on "eth0,lo" (two rings,
// merged by timestamp), another on "any" (one cooked socket), while a
// client fetches through eth0 and the online host itself through lo. Both
// see both sessions, byte-identical and each packet once (loopback packets
// pass lo twice, leaving and arriving; the copy is skipped and counted).
func TestLiveSeveralInterfaces(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 1)
	probe := labBinary(t, pkgLiveprobe)
	page := randomBytes(200_000)
	online := netip.AddrPortFrom(onlineAddr, 80)
	ng := serveFiles(t, c.online, online, map[string][]byte{"page.bin": page})
	probes := map[string]*liveProbe{
		c.onlineIf + ",lo": startLiveprobe(t, c.online, probe, "two", "-iface", c.onlineIf+",lo", "-x", "80-198.18.2.2:80"),
		"any":              startLiveprobe(t, c.online, probe, "any", "-iface", "any", "-x", "80-198.18.2.2:80"),
	}
	url := "http://" + online.String() + "/page.bin"
	mustExec(t, c.client, "curl", "-sS", "-o", "/dev/null", url, "-o", "/dev/null", url)
	mustExec(t, c.online, "curl", "-sS", "-o", "/dev/null", url, "-o", "/dev/null", url, "-o", "/dev/null", url)
	var acc []lab.NginxAccess
	var err error
	for deadline := time.Now().Add(10 * time.Second); len(acc) < 5 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if acc, err = ng.AccessLog(); err != nil {
			t.Fatal(err)
		}
	}
	want := map[netip.AddrPort]int64{}
	for _, a := range acc {
		want[a.Client] += a.RequestLength
	}
	if len(want) != 2 {
		t.Fatalf("nginx saw %d connections, want 2: %+v", len(want), acc)
	}
	time.Sleep(20 * capture.LiveBlockTimeout)
	got := map[string]map[netip.AddrPort]string{}
	for name, lp := range probes {
		res := lp.stop(t)
		st := res.Stats
		t.Logf("%s: %d segments; stats %+v; tracker %+v", name, res.Segments, st, res.Tracker)
		if len(res.Streams) != 2 {
			t.Errorf("%s: %d sessions, want 2", name, len(res.Streams))
		}
		got[name] = map[netip.AddrPort]string{}
		for _, s := range res.Streams {
			if s.Bytes != want[s.Client] || s.End != "fin" {
				t.Errorf("%s: client %v: %d bytes ended %q; nginx says %d bytes", name, s.Client, s.Bytes, s.End, want[s.Client])
			}
			got[name][s.Client] = s.SHA256
		}
		if tr := res.Tracker; tr.Gaps != 0 || tr.Sessions != 2 {
			t.Errorf("%s: tracker %+v: want 2 sessions, no gaps", name, tr)
		}
		if st.LoopbackCopies == 0 || st.Drops != 0 || st.KernelPackets != st.Packets+st.LoopbackCopies {
			t.Errorf("%s: stats %+v", name, st)
		}
	}
	for client, sum := range got["any"] {
		if got[c.onlineIf+",lo"][client] != sum {
			t.Errorf("client %v: the probes reassembled different streams", client)
		}
	}
}

// TestLiveVLAN: VLAN-tagged traffic on the captured interface. This lab's
// kernels may lack 802.1Q devices, so the client host sends the frames of
// four made-up TCP sessions as they are (liveprobe -inject): untagged,
// 802.1Q, 802.1ad+802.1Q (QinQ), all to the mirrored port 80, and a QinQ
// one to port 81. The online host's kernel moves the outer tag into packet
// metadata before its packet sockets see the frame, so a QinQ frame keeps
// its inner tag in the frame, which the generated filter looks through.
// liveprobe on the online interface reassembles the three port-80 sessions
// exactly; the port-81 one never reaches userspace.
func TestLiveVLAN(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 1)
	probe := labBinary(t, pkgLiveprobe)
	qinq := []layers.EthernetType{layers.EthernetTypeQinQ, layers.EthernetTypeDot1Q}
	sessions := []struct {
		name string
		tags []layers.EthernetType
		port uint16
	}{
		{"untagged", nil, 80},
		{"802.1Q", []layers.EthernetType{layers.EthernetTypeDot1Q}, 80},
		{"QinQ", qinq, 80},
		{"QinQ to port 81", qinq, 81},
	}
	pcapPath := filepath.Join(l.Dir(), "vlan-frames.pcap")
	f, err := os.Create(pcapPath)
	if err != nil {
		t.Fatal(err)
	}
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	want := map[netip.AddrPort][]byte{}
	frames := 0
	for i, sess := range sessions {
		client := netip.AddrPortFrom(c.clients[0], uint16(41000+i))
		server := netip.AddrPortFrom(onlineAddr, sess.port)
		stream, fs := vlanSession(t, client, server, sess.tags)
		if sess.port == 80 {
			want[client] = stream
			frames += len(fs)
		}
		for _, fr := range fs {
			if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: len(fr), Length: len(fr)}, fr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	lp := startLiveprobe(t, c.online, probe, "vlan", "-iface", c.onlineIf, "-x", "80-198.18.2.2:80")
	t.Logf("%s", mustExec(t, c.client, probe, "-iface", liveClientIf, "-inject", pcapPath))
	time.Sleep(20 * capture.LiveBlockTimeout)
	res := lp.stop(t)
	st := res.Stats
	t.Logf("stats %+v; tracker %+v", st, res.Tracker)
	if len(res.Streams) != len(want) {
		t.Errorf("%d sessions captured, want %d", len(res.Streams), len(want))
	}
	for _, s := range res.Streams {
		w, ok := want[s.Client]
		if !ok || s.Bytes != int64(len(w)) || s.SHA256 != sha(w) || s.End != "fin" {
			t.Errorf("session %v: %d bytes sha %.12s ended %q; sent %d bytes sha %.12s", s.Client, s.Bytes, s.SHA256, s.End, len(w), sha(w))
		}
	}
	if res.Ports[81] != 0 || st.KernelPackets != uint64(frames) || st.Packets != uint64(frames) || st.Drops != 0 {
		t.Errorf("%d port-81 segments returned; kernel passed %d packets, read %d, want the %d port-80 frames", res.Ports[81], st.KernelPackets, st.Packets, frames)
	}
}

// vlanSession builds the Ethernet frames of a complete TCP session between
// client and server, with the VLAN tags given (outer first), and returns
// the client's byte stream.
func vlanSession(t *testing.T, client, server netip.AddrPort, tags []layers.EthernetType) ([]byte, [][]byte) {
	t.Helper()
	var stream []byte
	var frames [][]byte
	const cISN, sISN = 1000, 5000
	seg := func(fromClient bool, seq, ack uint32, syn, fin bool, payload []byte) {
		src, dst := client, server
		if !fromClient {
			src, dst = server, client
		}
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		ls := []gopacket.SerializableLayer{eth}
		for i, tpid := range tags {
			if i == 0 {
				eth.EthernetType = tpid
			}
			next := layers.EthernetTypeIPv4
			if i+1 < len(tags) {
				next = tags[i+1]
			}
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: uint16(10 * (i + 1)), Type: next})
		}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: seq, Ack: ack, SYN: syn, FIN: fin, ACK: !syn || !fromClient, Window: 65535}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, append(ls, ip, tcp, gopacket.Payload(payload))...); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, buf.Bytes())
		if fromClient {
			stream = append(stream, payload...)
		}
	}
	d1, d2, answer := make([]byte, 1000), make([]byte, 1200), make([]byte, 500)
	rand.Read(d1)
	rand.Read(d2)
	rand.Read(answer)
	seg(true, cISN, 0, true, false, nil)
	seg(false, sISN, cISN+1, true, false, nil)
	seg(true, cISN+1, sISN+1, false, false, nil)
	seg(true, cISN+1, sISN+1, false, false, d1)
	seg(true, cISN+1+1000, sISN+1, false, false, d2)
	seg(false, sISN+1, cISN+1+2200, false, false, answer)
	seg(true, cISN+1+2200, sISN+1+500, false, true, nil)
	seg(false, sISN+1+500, cISN+2+2200, false, true, nil)
	seg(true, cISN+2+2200, sISN+2+500, false, false, nil)
	return stream, frames
}
