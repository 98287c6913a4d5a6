package netnstests

import (
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
)

// captureCurlNginx captures real curl traffic to nginx: nClients client
// addresses, each running one curl with several keep-alive requests (GETs
// of files of different sizes and a POST). It returns the pcap path, the
// requests nginx served, as its access log tells, and the directory of the
// files it served.
func captureCurlNginx(t *testing.T, c *captureLab) (pcapPath string, served []lab.NginxAccess, root string) {
	t.Helper()
	online := netip.AddrPortFrom(onlineAddr, 80)
	ng := serveFiles(t, c.online, online, map[string][]byte{
		"small.txt": randomBytes(100), "page.html": randomBytes(20_000), "big.bin": randomBytes(300_000)})
	post := filepath.Join(c.l.Dir(), "post.bin")
	if err := os.WriteFile(post, randomBytes(50_000), 0o644); err != nil {
		t.Fatal(err)
	}
	pcap := filepath.Join(c.l.Dir(), "http.pcap")
	capt, err := c.online.Capture(c.onlineIf, "tcp port 80", pcap)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + online.String() + "/"
	for i, a := range c.clients {
		// One curl = one keep-alive connection with 4 requests; the last
		// client's connection also posts a body.
		args := []string{"curl", "-sS", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "--interface", a.String(),
			base + "small.txt", base + "page.html", base + "big.bin"}
		if i%2 == 1 {
			// --next: the body goes with this request only; curl keeps the
			// connection for it.
			args = append(args, "--next", "-sS", "-o", "/dev/null", "--interface", a.String(), "--data-binary", "@"+post, base+"small.txt")
		} else {
			args = append(args, "-o", "/dev/null", base+"small.txt?again")
		}
		mustExec(t, c.client, args...)
	}
	dropped, err := capt.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if dropped != 0 {
		t.Fatalf("tcpdump dropped %d packets: the capture is not a faithful input", dropped)
	}
	acc, err := ng.AccessLog()
	if err != nil {
		t.Fatal(err)
	}
	return pcap, acc, ng.Config.Root
}

// TestReplayHTTPKeepAlive: real curl → nginx traffic, captured, is replayed
// to a recording target. Every request arrives from its original client
// address, byte-identical, in per-session order, and never before the
// target answered the previous one.
func TestReplayHTTPKeepAlive(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 6)
	pcap, acc, _ := captureCurlNginx(t, c)
	served := len(acc)
	if served != 6*4 {
		t.Fatalf("nginx served %d requests, want %d", served, 6*4)
	}
	streams := clientStreams(t, pcap, netip.AddrPortFrom(onlineAddr, 80))
	if len(streams) != 6 {
		t.Fatalf("capture holds %d client sessions, want 6", len(streams))
	}

	r := newReplayLab(t, l)
	// The target answers after 50 ms: a replayer that did not wait for the
	// answer would have sent the next request by then (recorded as early).
	logPath := startRecorder(t, r.target, netip.AddrPortFrom(targetAddr, 8080), "http", "-delay", "50ms")
	res := runStackcopy(t, r.replay, 2*time.Minute, "-x", "80-198.18.2.2:8080", "-i", pcap, "--speed", "0")
	if res.exit != 0 {
		t.Fatalf("stackcopy exit %d, want 0", res.exit)
	}
	if s := res.stats.Replay; s.Sessions != 6 || s.Completed != 6 {
		t.Fatalf("replay stats %+v: want 6 sessions, 6 completed", s)
	}
	recs, sums := readRecords(t, logPath, 6, 10*time.Second)
	if len(sums) != 6 {
		t.Fatalf("target saw %d connections, want 6", len(sums))
	}
	got := map[netip.AddrPort][]expectedRequest{}
	for _, rec := range recs {
		if rec.Early {
			t.Errorf("request %d from %v reached the target before the answer to the previous one", rec.Index, rec.Client)
		}
		if rec.Error != "" {
			t.Errorf("target recorded a broken request from %v: %s", rec.Client, rec.Error)
		}
		if rec.Index != len(got[rec.Client]) {
			t.Errorf("request from %v: index %d out of order", rec.Client, rec.Index)
		}
		got[rec.Client] = append(got[rec.Client], expectedRequest{rec.Bytes, rec.SHA256})
	}
	total := 0
	for client, stream := range streams {
		want := httpRequests(t, stream)
		total += len(want)
		g := got[client]
		if len(g) != len(want) {
			t.Errorf("client %v: target got %d requests from the original address, want %d", client, len(g), len(want))
			continue
		}
		for i := range want {
			if g[i] != want[i] {
				t.Errorf("client %v request %d: target got %d bytes sha %.12s, captured %d bytes sha %.12s", client, i, g[i].bytes, g[i].sha256, want[i].bytes, want[i].sha256)
			}
		}
	}
	if total != served {
		t.Errorf("capture holds %d requests, nginx served %d", total, served)
	}
	if s := res.stats.Replay; s.Turns < uint64(total-6) {
		t.Errorf("only %d turns waited for an answer, want at least %d", s.Turns, total-6)
	}
}

// TestReplayServerFirst: an SMTP session (the server speaks first) captured
// from real curl is replayed to a target that greets only after 300 ms; the
// replayer must wait for the greeting and then send every command intact.
func TestReplayServerFirst(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 1)
	online := netip.AddrPortFrom(onlineAddr, 25)
	onlineLog := startRecorder(t, c.online, online, "smtp")
	mail := filepath.Join(l.Dir(), "mail.txt")
	if err := os.WriteFile(mail, []byte("Subject: replay\r\n\r\nhello from the lab\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pcap := filepath.Join(l.Dir(), "smtp.pcap")
	capt, err := c.online.Capture(c.onlineIf, "tcp port 25", pcap)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, c.client, "curl", "-sS", "--mail-from", "a@example.com", "--mail-rcpt", "b@example.com",
		"-T", mail, "smtp://"+online.String()+"/lab")
	if _, err := capt.Stop(); err != nil {
		t.Fatal(err)
	}
	want, wantSums := readRecords(t, onlineLog, 1, 5*time.Second)
	if len(wantSums) != 1 || len(want) < 4 {
		t.Fatalf("online recorder logged %d records, %d connections", len(want), len(wantSums))
	}

	r := newReplayLab(t, l)
	targetLog := startRecorder(t, r.target, netip.AddrPortFrom(targetAddr, 25), "smtp", "-greet-delay", "300ms")
	res := runStackcopy(t, r.replay, time.Minute, "-x", "25-198.18.2.2:25", "-i", pcap, "--speed", "0")
	if res.exit != 0 {
		t.Fatalf("stackcopy exit %d, want 0", res.exit)
	}
	got, _ := readRecords(t, targetLog, 1, 10*time.Second)
	if len(got) != len(want) {
		t.Fatalf("target recorded %d commands, online server %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Early {
			t.Errorf("command %d (%s) reached the target before its answer/greeting", i, got[i].Line)
		}
		if got[i].Bytes != want[i].Bytes || got[i].SHA256 != want[i].SHA256 || got[i].Client != want[i].Client {
			t.Errorf("command %d: target got %q from %v (%d bytes), online got %q from %v (%d bytes)",
				i, got[i].Line, got[i].Client, got[i].Bytes, want[i].Line, want[i].Client, want[i].Bytes)
		}
	}
}

// TestReplayLargeUploadWithLoss: a 256 MiB upload captured from real curl
// is replayed while the target's ingress drops 5% of packets at random; the
// body arrives with the identical sha256.
func TestReplayLargeUploadWithLoss(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 1)
	online := netip.AddrPortFrom(onlineAddr, 80)
	onlineLog := startRecorder(t, c.online, online, "http")
	upload := filepath.Join(l.Dir(), "upload.bin")
	writeRandomFile(t, upload, 256<<20)
	pcap := filepath.Join(l.Dir(), "upload.pcap")
	capt, err := c.online.Capture(c.onlineIf, "tcp port 80", pcap)
	if err != nil {
		t.Fatal(err)
	}
	// A bounded rate keeps tcpdump from dropping (its drops would be capture
	// holes, which stackcopy reports instead of replaying).
	mustExec(t, c.client, "curl", "-sS", "-o", "/dev/null", "--limit-rate", "400M", "-H", "Expect:",
		"--data-binary", "@"+upload, "http://"+online.String()+"/upload")
	dropped, err := capt.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if dropped != 0 {
		t.Fatalf("tcpdump dropped %d packets", dropped)
	}
	want, _ := readRecords(t, onlineLog, 1, 10*time.Second)
	if len(want) != 1 || want[0].BodySHA256 != fileSHA(t, upload) {
		t.Fatalf("online recorder did not get the upload intact: %+v", want)
	}

	r := newReplayLab(t, l)
	targetLog := startRecorder(t, r.target, netip.AddrPortFrom(targetAddr, 80), "http")
	// Wire-sized packets: veth would otherwise carry the kernel's 64 KiB
	// GSO packets whole, and the rule would drop 45-segment bursts.
	if err := r.replay.DisableGSO(r.replayIf); err != nil {
		t.Fatal(err)
	}
	if err := r.target.IPTables("-A", "INPUT", "-p", "tcp", "--dport", "80", "-m", "statistic", "--mode", "random", "--probability", "0.05", "-j", "DROP"); err != nil {
		t.Fatal(err)
	}
	res := runStackcopy(t, r.replay, 8*time.Minute, "-x", "80-198.18.2.2:80", "-i", pcap, "--speed", "0")
	if res.exit != 0 {
		t.Fatalf("stackcopy exit %d, want 0", res.exit)
	}
	got, _ := readRecords(t, targetLog, 1, 30*time.Second)
	if len(got) != 1 {
		t.Fatalf("target recorded %d requests, want 1", len(got))
	}
	if got[0].SHA256 != want[0].SHA256 || got[0].Bytes != want[0].Bytes || got[0].BodySHA256 != want[0].BodySHA256 {
		t.Fatalf("upload differs: target %d bytes sha %s, captured %d bytes sha %s", got[0].Bytes, got[0].SHA256, want[0].Bytes, want[0].SHA256)
	}
	if got[0].Client != want[0].Client {
		t.Errorf("upload arrived from %v, captured client %v", got[0].Client, want[0].Client)
	}
	drops, err := r.target.IPTablesOutput("-L", "INPUT", "-v", "-n", "-x")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("target INPUT counters:\n%s", drops)
	if res.stats.Stack.Retransmits == 0 {
		t.Errorf("no retransmissions with 5%% loss on the path: was loss applied?")
	}
}

// TestReplayCaptureHole: a client segment missing from the capture makes
// its session abort with a counted gap; the requests before the hole
// arrive intact, nothing after it is sent with wrong bytes, and the other
// sessions are unaffected.
func TestReplayCaptureHole(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 3)
	pcap, _, _ := captureCurlNginx(t, c)
	streams := clientStreams(t, pcap, netip.AddrPortFrom(onlineAddr, 80))

	// Drop the client segment that starts the second request of client .11.
	victim := netip.AddrPortFrom(c.clients[1], 0)
	var second uint32
	for client, stream := range streams {
		if client.Addr() == victim.Addr() {
			second = uint32(httpRequests(t, stream)[0].bytes)
		}
	}
	holed := filepath.Join(l.Dir(), "holed.pcap")
	removed := cutSegmentAt(t, pcap, holed, victim.Addr(), second)

	r := newReplayLab(t, l)
	logPath := startRecorder(t, r.target, netip.AddrPortFrom(targetAddr, 80), "http")
	res := runStackcopy(t, r.replay, 2*time.Minute, "-x", "80-198.18.2.2:80", "-i", holed, "--speed", "0")
	if res.exit != 3 {
		t.Errorf("stackcopy exit %d, want 3 (not every session completed)", res.exit)
	}
	if s := res.stats.Replay; s.Gaps != 1 || s.Completed != 2 {
		t.Errorf("replay stats %+v: want 1 capture gap, 2 completed", s)
	}
	if !strings.Contains(res.stdout, "1 capture-gap") {
		t.Errorf("summary does not report the gap:\n%s", res.stdout)
	}
	recs, _ := readRecords(t, logPath, 3, 10*time.Second)
	for client, stream := range streams {
		want := httpRequests(t, stream)
		var got []expectedRequest
		for _, rec := range recs {
			if rec.Client == client && rec.Error == "" {
				got = append(got, expectedRequest{rec.Bytes, rec.SHA256})
			}
		}
		if client.Addr() == victim.Addr() {
			if len(got) != 1 || got[0] != want[0] {
				t.Errorf("holed session %v: target got %v, want only the first request %v (removed %d bytes)", client, got, want[0], removed)
			}
			continue
		}
		if len(got) != len(want) {
			t.Errorf("session %v: target got %d requests, want %d", client, len(got), len(want))
		}
	}
}

// cutSegmentAt copies a pcap leaving out the victim's client segment that
// starts at stream offset off. It returns the payload bytes removed.
func cutSegmentAt(t *testing.T, in, out string, victim netip.Addr, off uint32) int {
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
	removed := 0
	eachPacket(t, in, func(p gopacket.Packet) {
		if ip, tcp := ipTCP(p); ip != nil && tcp != nil && netip.AddrFrom4([4]byte(ip.SrcIP.To4())) == victim && tcp.DstPort == 80 {
			if tcp.SYN {
				isn = tcp.Seq + 1
			} else if len(tcp.Payload) > 0 && tcp.Seq-isn == off && removed == 0 {
				removed = len(tcp.Payload)
				return
			}
		}
		if err := w.WritePacket(p.Metadata().CaptureInfo, p.Data()); err != nil {
			t.Fatal(err)
		}
	})
	if removed == 0 {
		t.Fatalf("victim has no segment at stream offset %d", off)
	}
	return removed
}

// TestCorruptCaptureIsOneLineError: a truncated pcap stops stackcopy with
// one line naming the file and the offset and a non-zero exit; what was
// readable before the damage is replayed and counted, and the TUN and its
// routes are gone afterwards.
func TestCorruptCaptureIsOneLineError(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 1)
	pcap, _, _ := captureCurlNginx(t, c)
	b, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(l.Dir(), "cut.pcap")
	if err := os.WriteFile(cut, b[:len(b)*2/3], 0o644); err != nil {
		t.Fatal(err)
	}
	r := newReplayLab(t, l)
	startRecorder(t, r.target, netip.AddrPortFrom(targetAddr, 80), "http")
	res := runStackcopy(t, r.replay, time.Minute, "-x", "80-198.18.2.2:80", "-i", cut, "--speed", "0")
	if res.exit == 0 {
		t.Fatal("stackcopy succeeded on a truncated capture")
	}
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], cut) || !strings.Contains(lines[0], "offset") {
		t.Fatalf("want one error line naming %s and the offset, got:\n%s", cut, res.stderr)
	}
	links := string(mustExec(t, r.replay, "ip", "-o", "link"))
	routes := string(mustExec(t, r.replay, "ip", "route"))
	if strings.Contains(links, "stackcopy0") || strings.Contains(routes, "198.18.1.") {
		t.Errorf("stackcopy left a TUN or routes behind:\n%s\n%s", links, routes)
	}
}

// TestReplayToNginxPoolAndLoop: the capture is replayed twice (--loop 2) to
// a real nginx serving the same files, with clients rewritten onto a pool
// (-c). nginx answers every replayed request exactly as the online nginx
// did, every request comes from a pool address, and the second pass gets
// fresh 4-tuples where the first pass's are still taken.
func TestReplayToNginxPoolAndLoop(t *testing.T) {
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 4)
	pcap, onlineLog, www := captureCurlNginx(t, c)

	r := newReplayLab(t, l)
	ng, err := lab.StartNginx(r.target, netip.AddrPortFrom(targetAddr, 80), www)
	if err != nil {
		t.Fatal(err)
	}
	res := runStackcopy(t, r.replay, 2*time.Minute, "-x", "80-198.18.2.2:80", "-i", pcap, "--speed", "0",
		"-c", "198.18.5.x", "--loop", "2")
	if res.exit != 0 {
		t.Fatalf("stackcopy exit %d, want 0", res.exit)
	}
	if s := res.stats.Replay; s.Sessions != 8 || s.Completed != 8 {
		t.Fatalf("replay stats %+v: want 8 sessions (4 × 2 passes), 8 completed", s)
	}
	// nginx speaks HTTP/1.1: every turn ends where its answer does.
	if s := res.stats.Replay; s.Turns == 0 || s.TurnsFramed != s.Turns || s.TurnsUnanswered != 0 {
		t.Errorf("replay stats %+v: want every turn ended by HTTP framing", s)
	}
	var got []lab.NginxAccess
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < 2*len(onlineLog) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if got, err = ng.AccessLog(); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 2*len(onlineLog) {
		t.Fatalf("target nginx logged %d requests, want %d (2 passes × %d)", len(got), 2*len(onlineLog), len(onlineLog))
	}
	status := func(log []lab.NginxAccess) map[string]int {
		m := map[string]int{}
		for _, a := range log {
			m[fmt.Sprintf("%s %d %d", a.Request, a.Status, a.RequestLength)]++
		}
		return m
	}
	want := status(onlineLog)
	for k := range want {
		want[k] *= 2
	}
	if g := status(got); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("target answered differently from the online server:\n got %v\nwant %v", g, want)
	}
	tuples := map[netip.AddrPort]bool{}
	for _, a := range got {
		if !poolNet.Contains(a.Client.Addr()) {
			t.Errorf("request from %v, outside the -c pool %v", a.Client, poolNet)
		}
		tuples[a.Client] = true
	}
	if len(tuples) != 8 {
		t.Errorf("target saw %d distinct client 4-tuples, want 8 (one per session and pass)", len(tuples))
	}
}
