package netnstests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
	"github.com/stackcopy/stackcopy/netns-tests/recorder"
)

// Tests of the lab itself and of the recorder against real clients (curl).
// Run as root: go test ./netns-tests/ -run Lab -v

// helperEnv makes the test binary act as a small helper program instead of
// running tests: a client inside a lab namespace, or a lab creator that
// gets killed. See runHelper.
const helperEnv = "STACKCOPY_LAB_HELPER"

// The programs the lab tests run, as main packages for labBinary.
const (
	pkgStackcopy  = "github.com/stackcopy/stackcopy/cmd/stackcopy"
	pkgIntercept  = "github.com/stackcopy/stackcopy/cmd/intercept"
	pkgRecorder   = "github.com/stackcopy/stackcopy/netns-tests/cmd/recorder"
	pkgLiveprobe  = "github.com/stackcopy/stackcopy/netns-tests/cmd/liveprobe"
	pkgRawprobe   = "github.com/stackcopy/stackcopy/netns-tests/cmd/rawprobe"
	pkgRelayprobe = "github.com/stackcopy/stackcopy/netns-tests/cmd/relayprobe"
	pkgSynload    = "github.com/stackcopy/stackcopy/netns-tests/cmd/synload"
)

// testBins builds those programs, each once per test binary run, into
// TestMain's temporary directory (removed when the tests end). TestMain
// sets it before any test runs and leaves it nil when the lab is
// unavailable.
var testBins *lab.Binaries

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(runHelper(h, os.Args[1:]))
	}
	// Without root every lab test skips (lab.RequireRoot); building would
	// only cost time, and may fail for a user without a Go cache.
	if lab.CheckRoot() != nil {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "stackcopy-testbin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testBins = lab.NewBinaries(dir)
	// The recorder at once: nearly every test needs it, and a build
	// failure reads better once here than in every test.
	if _, err := testBins.Path(pkgRecorder); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// labBinary returns the binary of the main package pkg, built once per
// test binary run (see testBins).
func labBinary(tb testing.TB, pkg string) string {
	tb.Helper()
	if testBins == nil {
		lab.RequireRoot(tb) // skips without root
		tb.Fatalf("build %s: no directory for test binaries (TestMain found the lab unavailable)", pkg)
	}
	bin, err := testBins.Path(pkg)
	if err != nil {
		tb.Fatal(err)
	}
	return bin
}

// recorderPath returns the recorder binary.
func recorderPath(tb testing.TB) string { return labBinary(tb, pkgRecorder) }

var (
	stClientAddr = netip.MustParsePrefix("198.18.1.2/24")
	stOnlineAddr = netip.MustParsePrefix("198.18.1.1/24")
)

// selfLab is the two-host lab of the self-tests: client ── online.
type selfLab struct {
	t                  *testing.T
	l                  *lab.Lab
	client, online     *lab.Host
	clientIf, onlineIf string
}

func newSelfLab(t *testing.T) *selfLab {
	t.Helper()
	s := &selfLab{t: t, l: lab.NewT(t)}
	var err error
	if s.client, err = s.l.Host("client"); err != nil {
		t.Fatal(err)
	}
	if s.online, err = s.l.Host("online"); err != nil {
		t.Fatal(err)
	}
	if s.clientIf, s.onlineIf, err = s.l.Link(s.client, stClientAddr, s.online, stOnlineAddr); err != nil {
		t.Fatal(err)
	}
	return s
}

// exec runs a command on h, bounded, failing the test on error.
func (s *selfLab) exec(h *lab.Host, within time.Duration, args ...string) []byte {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	out, err := h.Exec(ctx, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// recorder starts the recorder on the online host and returns its log.
func (s *selfLab) recorder(port uint16, mode string, extra ...string) string {
	s.t.Helper()
	listen := netip.AddrPortFrom(stOnlineAddr.Addr(), port)
	logPath := filepath.Join(s.l.Dir(), fmt.Sprintf("rec-%d.jsonl", port))
	args := append([]string{"-listen", listen.String(), "-mode", mode, "-log", logPath}, extra...)
	if _, err := s.online.Start(recorderPath(s.t), args...); err != nil {
		s.t.Fatal(err)
	}
	if err := s.online.WaitListening(context.Background(), listen); err != nil {
		s.t.Fatal(err)
	}
	return logPath
}

// waitSummaries waits (bounded) for n connection summaries.
func (s *selfLab) waitSummaries(logPath string, n int) ([]recorder.Record, []recorder.ConnSummary) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, sums, err := recorder.WaitLog(ctx, logPath, func(_ []recorder.Record, sums []recorder.ConnSummary) bool { return len(sums) >= n })
	if err != nil {
		s.t.Fatalf("%v\nrecords: %+v\nsummaries: %+v", err, recs, sums)
	}
	return recs, sums
}

// writeRandom writes n random bytes to a file in the lab dir and returns
// the path and the SHA-256.
func (s *selfLab) writeRandom(name string, n int) (string, string) {
	s.t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	path := filepath.Join(s.l.Dir(), name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		s.t.Fatal(err)
	}
	return path, sha(b)
}

func TestLabNginxKeepAlive(t *testing.T) {
	t.Parallel()
	s := newSelfLab(t)
	sizes := map[string]int{"small.txt": 100, "mid.bin": 100 << 10, "big.bin": 3 << 20}
	files, want := map[string][]byte{}, map[string]string{}
	for name, n := range sizes {
		files[name] = randomBytes(n)
		want[name] = sha(files[name])
	}
	listen := netip.AddrPortFrom(stOnlineAddr.Addr(), 80)
	ngx := serveFiles(t, s.online, listen, files)
	// One curl, three URLs: curl reuses the connection (keep-alive).
	args := []string{"curl", "-sS", "--fail"}
	names := []string{"small.txt", "mid.bin", "big.bin"}
	for _, name := range names {
		args = append(args, "-o", filepath.Join(s.l.Dir(), "got-"+name), "http://"+listen.String()+"/"+name)
	}
	s.exec(s.client, time.Minute, args...)
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(s.l.Dir(), "got-"+name))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha(b); got != want[name] {
			t.Errorf("%s: downloaded sha256 %s, want %s", name, got, want[name])
		}
	}
	var acc []lab.NginxAccess
	var err error
	for range 100 { // nginx logs when a request completes; bounded wait
		if acc, err = ngx.AccessLog(); err != nil || len(acc) >= len(names) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(acc) != len(names) {
		t.Fatalf("access log has %d entries, want %d: %+v", len(acc), len(names), acc)
	}
	for i, a := range acc {
		if a.Client != acc[0].Client || a.Client.Addr() != stClientAddr.Addr() || a.ConnectionRequests != i+1 || a.Status != 200 || a.RequestLength <= 0 {
			t.Errorf("access %d = %+v: want client %s, one connection, request %d, status 200", i, a, stClientAddr.Addr(), i+1)
		}
	}
	t.Logf("nginx access log: %+v", acc)
}

// curlSend is one "=> Send header" or "=> Send data" block of a curl
// --trace file: the exact bytes curl handed to the socket.
type curlSend struct {
	header bool
	data   []byte
}

// parseCurlTrace reads a `curl --trace` (hex) file. Each data row is
// "OOOO: hh hh ... (16 hex bytes, 48 columns) ascii"; the hex columns are
// fixed width, so the ascii part (which may contain anything) is ignored.
func parseCurlTrace(t *testing.T, path string) []curlSend {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []curlSend
	cur := -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "=> Send header"):
			out = append(out, curlSend{header: true})
			cur = len(out) - 1
		case strings.HasPrefix(line, "=> Send data"):
			out = append(out, curlSend{})
			cur = len(out) - 1
		case strings.HasPrefix(line, "=> "), strings.HasPrefix(line, "<= "), strings.HasPrefix(line, "== "):
			cur = -1
		case cur >= 0:
			_, rest, ok := strings.Cut(line, ": ")
			if !ok {
				continue
			}
			rest = rest[:min(len(rest), 48)]
			for _, tok := range strings.Fields(rest) {
				b, err := hex.DecodeString(tok)
				if err != nil || len(b) != 1 {
					t.Fatalf("trace %s: bad hex %q in %q", path, tok, line)
				}
				out[cur].data = append(out[cur].data, b[0])
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// httpRequestsFromTrace cuts curl's sent bytes into requests: every Send
// header starts one, Send data blocks belong to the latest.
func httpRequestsFromTrace(sends []curlSend) [][]byte {
	var reqs [][]byte
	for _, s := range sends {
		if s.header || len(reqs) == 0 {
			reqs = append(reqs, nil)
		}
		reqs[len(reqs)-1] = append(reqs[len(reqs)-1], s.data...)
	}
	return reqs
}

func TestLabRecorderHTTP(t *testing.T) {
	t.Parallel()
	s := newSelfLab(t)
	logPath := s.recorder(8080, "http", "-delay", "20ms")
	base := "http://" + stOnlineAddr.Addr().String() + ":8080"
	upload, uploadSHA := s.writeRandom("upload.bin", 300<<10)
	chunkedUp, chunkedSHA := s.writeRandom("chunked.bin", 70<<10)

	capture, err := s.client.Capture(s.clientIf, "tcp port 8080", "client.pcap")
	if err != nil {
		t.Fatal(err)
	}
	// One curl invocation, one connection: two GETs, a POST with a body, a
	// chunked POST (curl streams stdin-like input with chunked framing).
	tracePath := filepath.Join(s.l.Dir(), "curl-http.trace")
	s.exec(s.client, time.Minute, "curl", "-sS", "--trace", tracePath,
		"--fail", "-o", "/dev/null", base+"/a", "-o", "/dev/null", base+"/b?x=1",
		"--next", "--fail", "-o", "/dev/null", "--data-binary", "@"+upload, base+"/post",
		"--next", "--fail", "-o", "/dev/null", "-H", "Transfer-Encoding: chunked", "--data-binary", "@"+chunkedUp, base+"/chunked")
	want := httpRequestsFromTrace(parseCurlTrace(t, tracePath))
	if len(want) != 4 {
		t.Fatalf("curl trace shows %d requests, want 4", len(want))
	}

	// A client that pipelines: two requests in one write. The recorder
	// must flag the first one early.
	pipe := "GET /p1 HTTP/1.1\r\nHost: lab\r\n\r\nGET /p2 HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
	s.exec(s.client, 30*time.Second, "env", helperEnv+"=pipeline", os.Args[0], stOnlineAddr.Addr().String()+":8080", pipe)

	dropped, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	st := capture.Stats()
	t.Logf("capture: %+v", st)
	if dropped != 0 || st.Missing() != 0 || st.Captured < 10 {
		t.Errorf("capture: %+v, want >= 10 packets, none dropped or missing", st)
	}
	if fi, err := os.Stat(capture.Path()); err != nil || fi.Size() < 1000 {
		t.Errorf("pcap %s: %v, size %v", capture.Path(), err, fi)
	}

	recs, sums := s.waitSummaries(logPath, 2)
	byConn := recorder.ByConn(recs)
	if len(byConn) != 2 || len(sums) != 2 {
		t.Fatalf("want 2 connections (curl keep-alive, pipeliner), got records %+v summaries %+v", recs, sums)
	}
	curlRecs := byConn[1]
	if len(curlRecs) != len(want) {
		t.Fatalf("curl connection: %d records, want %d: %+v", len(curlRecs), len(want), curlRecs)
	}
	var all []byte
	for i, w := range want {
		all = append(all, w...)
		r := curlRecs[i]
		if r.Bytes != int64(len(w)) || r.SHA256 != sha(w) || r.Early || r.Error != "" || r.Client.Addr() != stClientAddr.Addr() {
			t.Errorf("request %d: record %+v, want %d bytes sha256 %s, not early, from %s", i, r, len(w), sha(w), stClientAddr.Addr())
		}
	}
	if r := curlRecs[2]; r.BodySHA256 != uploadSHA || r.BodyBytes != 300<<10 {
		t.Errorf("POST body: %d bytes %s, want %d %s", r.BodyBytes, r.BodySHA256, 300<<10, uploadSHA)
	}
	if r := curlRecs[3]; r.BodySHA256 != chunkedSHA || !strings.Contains(string(want[3]), "Transfer-Encoding: chunked") {
		t.Errorf("chunked body: %s, want %s", r.BodySHA256, chunkedSHA)
	}
	if sm := sums[0]; sm.Conn != 1 || sm.TotalBytes != int64(len(all)) || sm.SHA256All != sha(all) || sm.Closed != "fin" {
		t.Errorf("curl connection summary %+v, want %d bytes, closed fin", sm, len(all))
	}
	p := byConn[2]
	if len(p) != 2 || !p[0].Early || p[1].Early {
		t.Errorf("pipelined connection: %+v, want 2 records, first early", p)
	}
	t.Logf("records: %+v\nsummaries: %+v", recs, sums)
}

func TestLabRecorderSMTP(t *testing.T) {
	t.Parallel()
	s := newSelfLab(t)
	logPath := s.recorder(2525, "smtp", "-greet-delay", "100ms", "-delay", "10ms")
	mail := "From: a@lab.test\r\nTo: b@lab.test\r\nSubject: lab\r\n\r\nline one\r\nline two\r\n"
	mailPath := filepath.Join(s.l.Dir(), "mail.txt")
	if err := os.WriteFile(mailPath, []byte(mail), 0o644); err != nil {
		t.Fatal(err)
	}
	tracePath := filepath.Join(s.l.Dir(), "curl-smtp.trace")
	s.exec(s.client, time.Minute, "curl", "-sS", "--trace", tracePath, "smtp://"+stOnlineAddr.Addr().String()+":2525",
		"--mail-from", "a@lab.test", "--mail-rcpt", "b@lab.test", "-T", mailPath)

	var cmds [][]byte
	for _, snd := range parseCurlTrace(t, tracePath) {
		if snd.header {
			cmds = append(cmds, snd.data)
		}
	}
	recs, sums := s.waitSummaries(logPath, 1)
	// Records: the traced commands up to DATA, the body (the file and the
	// terminating ".\r\n", since the file ends in CRLF), then QUIT. curl
	// writes neither the terminator nor the QUIT (sent while the handle is
	// torn down) to its trace, so those two are spelled out here.
	var want [][]byte
	for _, c := range cmds {
		want = append(want, c)
		if string(c) == "DATA\r\n" {
			break
		}
	}
	want = append(want, []byte(mail+".\r\n"), []byte("QUIT\r\n"))
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d (%q): %+v", len(recs), len(want), want, recs)
	}
	var all []byte
	for i, w := range want {
		all = append(all, w...)
		if r := recs[i]; r.Bytes != int64(len(w)) || r.SHA256 != sha(w) || r.Early {
			t.Errorf("record %d %+v, want %q (sha256 %s), not early", i, r, w, sha(w))
		}
	}
	if sm := sums[0]; sm.TotalBytes != int64(len(all)) || sm.SHA256All != sha(all) || sm.Closed != "fin" || !sm.ServerClosed {
		t.Errorf("summary %+v, want %d bytes, server closed after QUIT, client fin", sm, len(all))
	}
	t.Logf("records: %+v", recs)
}

func TestLabRecorderRawReset(t *testing.T) {
	t.Parallel()
	s := newSelfLab(t)
	logPath := s.recorder(9000, "raw")
	const n = 5 << 20
	out := s.exec(s.client, 30*time.Second, "env", helperEnv+"=rawrst", os.Args[0], stOnlineAddr.Addr().String()+":9000", strconv.Itoa(n))
	wantSHA := strings.TrimSpace(string(out))
	recs, sums := s.waitSummaries(logPath, 1)
	if len(recs) != 1 || recs[0].Bytes != n || recs[0].SHA256 != wantSHA {
		t.Errorf("records %+v, want one of %d bytes sha256 %s", recs, n, wantSHA)
	}
	if sums[0].Closed != "rst" || sums[0].TotalBytes != n {
		t.Errorf("summary %+v, want closed rst", sums[0])
	}
}

// TestLabLossUpload checks loss injection (iptables statistic match in
// both namespaces) and that TCP still delivers a 20 MiB upload intact.
func TestLabLossUpload(t *testing.T) {
	t.Parallel()
	s := newSelfLab(t)
	backend, err := s.l.IPTablesBackend()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("iptables backend: %s", backend)
	logPath := s.recorder(8081, "http")
	// MTU-sized packets, so the rule drops single segments (see DisableGSO).
	if err := s.client.DisableGSO(s.clientIf); err != nil {
		t.Fatal(err)
	}
	if err := s.online.DisableGSO(s.onlineIf); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*lab.Host{s.client, s.online} {
		if err := h.IPTables("-A", "INPUT", "-p", "tcp", "-m", "statistic", "--mode", "random", "--probability", "0.05", "-j", "DROP"); err != nil {
			t.Fatal(err)
		}
	}
	const size = 20 << 20
	upload, uploadSHA := s.writeRandom("upload20m.bin", size)
	start := time.Now()
	out := s.exec(s.client, 5*time.Minute, "curl", "-sS", "--fail", "-m", "280", "-o", "/dev/null",
		"-w", "%{size_request} %{size_upload}", "--data-binary", "@"+upload,
		"http://"+stOnlineAddr.Addr().String()+":8081/upload")
	elapsed := time.Since(start)
	var sizeRequest, sizeUpload int64
	if _, err := fmt.Sscan(string(out), &sizeRequest, &sizeUpload); err != nil {
		t.Fatalf("curl -w output %q: %v", out, err)
	}
	drops := map[string]int64{}
	for _, h := range []*lab.Host{s.client, s.online} {
		txt, err := h.IPTablesOutput("-L", "INPUT", "-v", "-n", "-x")
		if err != nil {
			t.Fatal(err)
		}
		drops[h.Label()] = droppedPackets(t, txt)
	}
	t.Logf("20 MiB upload with 5%% loss each way: %v (%.1f Mbit/s); dropped packets: %v", elapsed.Round(time.Millisecond),
		float64(size)*8/elapsed.Seconds()/1e6, drops)
	// ~14,500 data segments at 5%: a few hundred drops expected.
	if drops["online"] < 100 || drops["client"] == 0 {
		t.Errorf("iptables dropped nothing: %v", drops)
	}
	recs, _ := s.waitSummaries(logPath, 1)
	if len(recs) != 1 {
		t.Fatalf("records %+v, want 1", recs)
	}
	r := recs[0]
	if r.BodyBytes != size || r.BodySHA256 != uploadSHA || r.Bytes != sizeRequest+sizeUpload || r.Error != "" {
		t.Errorf("record %+v, want body %d bytes sha256 %s, %d bytes in all", r, size, uploadSHA, sizeRequest+sizeUpload)
	}
}

// droppedPackets sums the packet counters of DROP rules in `iptables -L -v
// -n -x` output.
func droppedPackets(t *testing.T, listing string) int64 {
	t.Helper()
	var n int64
	for _, line := range strings.Split(listing, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[2] == "DROP" {
			v, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				t.Fatalf("iptables listing line %q: %v", line, err)
			}
			n += v
		}
	}
	return n
}

// TestLabRules checks the lab refuses addresses outside 198.18.0.0/15 and
// never creates anything in the root namespace.
func TestLabRules(t *testing.T) {
	lab.RequireRoot(t)
	before, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	s := newSelfLab(t)
	if _, _, err := s.l.Link(s.client, netip.MustParsePrefix("10.1.1.1/24"), s.online, stOnlineAddr); err == nil {
		t.Error("Link accepted 10.1.1.1/24")
	}
	if err := s.client.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), stOnlineAddr.Addr()); err == nil {
		t.Error("AddRoute accepted a default route")
	}
	if err := s.client.AddRoute(netip.MustParsePrefix("198.18.9.0/24"), stOnlineAddr.Addr()); err != nil {
		t.Errorf("AddRoute in the lab range: %v", err)
	}
	if _, err := s.l.Host("client"); err == nil {
		t.Error("duplicate host accepted")
	}
	after, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if countLines(after) != countLines(before) {
		t.Errorf("root namespace interfaces changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// IPv6 is off: no fe80:: address on the veth.
	if out := s.exec(s.client, 10*time.Second, "ip", "addr", "show", s.clientIf); strings.Contains(string(out), "inet6") {
		t.Errorf("IPv6 address on %s:\n%s", s.clientIf, out)
	}
	if out := s.exec(s.client, 10*time.Second, "ip", "link", "show", s.clientIf); !strings.Contains(string(out), "qlen 10000") {
		t.Errorf("txqueuelen not raised:\n%s", out)
	}
}

func countLines(b []byte) int { return bytes.Count(b, []byte("\n")) }

// labNamespaces lists namespaces with the given prefix.
func labNamespaces(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var ns []string
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, prefix+"-") {
			ns = append(ns, name)
		}
	}
	return ns
}

func TestLabClose(t *testing.T) {
	lab.RequireRoot(t)
	t.Parallel()
	l, err := lab.New(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := l.Host("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Host("b")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Link(a, netip.MustParsePrefix("198.18.7.1/30"), b, netip.MustParsePrefix("198.18.7.2/30")); err != nil {
		t.Fatal(err)
	}
	polite, err := a.Start("sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	// Ignores SIGTERM (the ignored disposition survives exec into sleep):
	// Close must escalate to SIGKILL.
	stubborn, err := b.Start("sh", "-c", `trap "" TERM; echo ready; exec sleep 300`)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; !strings.Contains(stubborn.Log(), "ready"); i++ { // the trap must be set before Close
		if i == 500 {
			t.Fatalf("stubborn process not ready: %q", stubborn.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := labNamespaces(t, l.Prefix()); len(got) != 2 {
		t.Fatalf("namespaces %v, want 2", got)
	}
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("Close took %v (SIGKILL after 3s for the stubborn process)", took.Round(time.Millisecond))
	if took < 3*time.Second {
		t.Errorf("Close took %v: the SIGTERM-ignoring process should have needed SIGKILL after 3s", took)
	}
	for _, p := range []*lab.Proc{polite, stubborn} {
		select {
		case <-p.Done():
		default:
			t.Errorf("process %d (%s) still running after Close", p.PID, p.Name())
		}
	}
	if got := labNamespaces(t, l.Prefix()); len(got) != 0 {
		t.Errorf("namespaces left after Close: %v", got)
	}
	if _, err := os.Stat(l.Dir()); os.Getenv(lab.EnvKeep) != "1" && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab dir %s left after Close: %v", l.Dir(), err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.Host("c"); err == nil {
		t.Error("Host after Close succeeded")
	}
	if _, err := a.Start("sleep", "1"); err == nil {
		t.Error("Start after Close succeeded")
	}
}

// TestLabStaleCleanup kills a process that built a lab (as a test timeout
// would) and checks that the next New removes its namespaces and
// processes, and leaves a live lab alone.
func TestLabStaleCleanup(t *testing.T) {
	lab.RequireRoot(t)
	live := newSelfLab(t)

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=stale")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { // in case of an early failure
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	lineCh := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lineCh <- line
	}()
	var line string
	select {
	case line = <-lineCh:
	case <-time.After(30 * time.Second):
		t.Fatal("stale helper did not report its lab")
	}
	var prefix string
	var sleepPID int
	if _, err := fmt.Sscan(line, &prefix, &sleepPID); err != nil {
		t.Fatalf("stale helper said %q: %v", line, err)
	}
	if got := labNamespaces(t, prefix); len(got) != 1 {
		t.Fatalf("helper's namespaces %v, want 1", got)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if got := labNamespaces(t, prefix); len(got) != 1 {
		t.Fatalf("helper's namespaces %v after kill, want still 1 (nothing cleaned yet)", got)
	}

	next, err := lab.New("after-stale")
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if got := labNamespaces(t, prefix); len(got) != 0 {
		t.Errorf("stale namespaces %v left after New", got)
	}
	if _, err := os.Stat("/run/stackcopy-lab/" + prefix + ".pid"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale pid file left: %v", err)
	}
	if !waitDead(sleepPID, 5*time.Second) {
		t.Errorf("process %d of the stale lab still running", sleepPID)
	}
	if got := labNamespaces(t, live.l.Prefix()); len(got) != 2 {
		t.Errorf("live lab's namespaces %v, want 2 (its creator is alive)", got)
	}
}

// waitDead polls until pid is gone or a zombie.
func waitDead(pid int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return true
		}
		if i := bytes.LastIndexByte(b, ')'); i > 0 && len(b) > i+2 && b[i+2] == 'Z' {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// runHelper is the test binary acting as a helper program.
func runHelper(mode string, args []string) int {
	var err error
	switch mode {
	case "pipeline":
		err = helperPipeline(args)
	case "rawrst":
		err = helperRawReset(args)
	case "stale":
		err = helperStale()
	default:
		err = fmt.Errorf("unknown helper %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper", mode+":", err)
		return 1
	}
	return 0
}

// helperPipeline sends args[1] to args[0] in one write and reads until the
// server closes.
func helperPipeline(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: ADDR DATA")
	}
	c, err := net.DialTimeout("tcp", args[0], 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, args[1]); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, c)
	return err
}

// helperRawReset sends N random bytes, prints their SHA-256, waits until
// the server has read them and resets the connection.
func helperRawReset(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: ADDR N")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", args[0], 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	b := make([]byte, n)
	rand.Read(b)
	if _, err := c.Write(b); err != nil {
		return err
	}
	// An RST discards data the server has not read yet; wait until the
	// send queue is empty (everything ACKed), then reset.
	tc := c.(*net.TCPConn)
	for range 500 {
		if outq, err := sendQueue(tc); err != nil || outq == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if err := tc.SetLinger(0); err != nil {
		return err
	}
	fmt.Println(sha(b))
	return nil
}

// sendQueue returns the bytes not yet acknowledged by the peer (SIOCOUTQ).
func sendQueue(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		return 0, err
	}
	return n, ierr
}

// helperStale builds a lab with one host and a process in it, reports
// "prefix pid" and waits to be killed.
func helperStale() error {
	l, err := lab.New("stale-helper")
	if err != nil {
		return err
	}
	h, err := l.Host("h")
	if err != nil {
		return err
	}
	p, err := h.Start("sleep", "300")
	if err != nil {
		return err
	}
	fmt.Println(l.Prefix(), p.PID)
	time.Sleep(2 * time.Minute) // bounded: the test kills us long before
	return l.Close()
}
