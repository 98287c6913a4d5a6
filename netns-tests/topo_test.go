package netnstests

import (
	"bytes"
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
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/stackcopy/stackcopy/mirror"
	"github.com/stackcopy/stackcopy/netns-tests/lab"
	"github.com/stackcopy/stackcopy/netns-tests/recorder"
)

// Lab addresses. The capture side is a client and an online server; the
// replay side is the replay host running stackcopy and the target.
var (
	onlineAddr = netip.MustParseAddr("198.18.1.1")
	clientNet  = netip.MustParsePrefix("198.18.1.0/24")
	poolNet    = netip.MustParsePrefix("198.18.5.0/24")
	replayAddr = netip.MustParseAddr("198.18.2.1")
	targetAddr = netip.MustParseAddr("198.18.2.2")
)

// clientAddrs are the client host's addresses: several real clients.
func clientAddrs(n int) []netip.Addr {
	var out []netip.Addr
	for i := 0; i < n; i++ {
		out = append(out, netip.AddrFrom4([4]byte{198, 18, 1, byte(10 + i)}))
	}
	return out
}

// stackcopyPath returns the stackcopy binary.
func stackcopyPath(tb testing.TB) string { return labBinary(tb, pkgStackcopy) }

// captureLab is client ── online: real clients talk to a real server while
// the online host captures.
type captureLab struct {
	l              *lab.Lab
	client, online *lab.Host
	onlineIf       string
	clients        []netip.Addr
}

func newCaptureLab(t *testing.T, l *lab.Lab, nClients int) *captureLab {
	t.Helper()
	c := &captureLab{l: l, clients: clientAddrs(nClients)}
	var err error
	if c.client, err = l.Host("client"); err != nil {
		t.Fatal(err)
	}
	if c.online, err = l.Host("online"); err != nil {
		t.Fatal(err)
	}
	clientIf, onlineIf, err := l.Link(c.client, netip.PrefixFrom(c.clients[0], 24), c.online, netip.PrefixFrom(onlineAddr, 24))
	if err != nil {
		t.Fatal(err)
	}
	c.onlineIf = onlineIf
	var more []netip.Prefix
	for _, a := range c.clients[1:] {
		more = append(more, netip.PrefixFrom(a, 24))
	}
	if err := c.client.AddAddrs(clientIf, more...); err != nil {
		t.Fatal(err)
	}
	return c
}

// addTarget adds a target host linked to the online host (198.18.2.1 ──
// 198.18.2.2), the live mirror's way out: the online host forwards, and
// the target routes back over it the prefixes in back.
func (c *captureLab) addTarget(t *testing.T, back ...netip.Prefix) *lab.Host {
	t.Helper()
	target, err := c.l.Host("target")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.l.ForwardPath(c.online, netip.PrefixFrom(replayAddr, 24), target, netip.PrefixFrom(targetAddr, 24), back...); err != nil {
		t.Fatal(err)
	}
	return target
}

// replayLab is replay ── target: stackcopy runs on the replay host; the
// target routes the forged client prefixes back to it.
type replayLab struct {
	l              *lab.Lab
	replay, target *lab.Host
	replayIf       string
	targetIf       string
}

func newReplayLab(t *testing.T, l *lab.Lab) *replayLab {
	t.Helper()
	r := &replayLab{l: l}
	var err error
	if r.replay, err = l.Host("replay"); err != nil {
		t.Fatal(err)
	}
	if r.target, err = l.Host("target"); err != nil {
		t.Fatal(err)
	}
	if r.replayIf, r.targetIf, err = l.ForwardPath(r.replay, netip.PrefixFrom(replayAddr, 24), r.target, netip.PrefixFrom(targetAddr, 24), clientNet, poolNet); err != nil {
		t.Fatal(err)
	}
	return r
}

func mustExec(t testing.TB, h *lab.Host, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := h.Exec(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// startRecorder runs the recording server on h and returns its log path.
func startRecorder(t *testing.T, h *lab.Host, listen netip.AddrPort, mode string, extra ...string) string {
	t.Helper()
	logPath := filepath.Join(h.Lab().Dir(), fmt.Sprintf("recorder-%s-%d.jsonl", h.Label(), listen.Port()))
	args := append([]string{"-listen", listen.String(), "-mode", mode, "-log", logPath}, extra...)
	if _, err := h.StartServer(listen, recorderPath(t), args...); err != nil {
		t.Fatal(err)
	}
	return logPath
}

// serveFiles serves files (name → content) with nginx on h at listen; the
// files' directory is the result's Config.Root.
func serveFiles(t *testing.T, h *lab.Host, listen netip.AddrPort, files map[string][]byte) *lab.Nginx {
	t.Helper()
	ng, err := lab.ServeFiles(h, listen, files)
	if err != nil {
		t.Fatal(err)
	}
	return ng
}

// randomBytes returns n random bytes: content no compression or
// deduplication on the way can shrink.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// readRecords waits until the recorder logged want connection summaries
// (bounded), then returns everything it logged.
func readRecords(t *testing.T, path string, wantConns int, within time.Duration) ([]recorder.Record, []recorder.ConnSummary) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		recs, sums, err := recorder.ReadLog(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if len(sums) >= wantConns || time.Now().After(deadline) {
			return recs, sums
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runResult is one stackcopy run.
type runResult struct {
	exit   int
	stdout string
	stderr string
	stats  mirror.SummaryJSON // the --stats-json document
}

// runStackcopy runs stackcopy on the replay host and waits for it (bounded).
func runStackcopy(t *testing.T, h *lab.Host, within time.Duration, args ...string) runResult {
	t.Helper()
	res, _ := runStackcopyWatching(t, h, within, nil, args...)
	return res
}

// runStackcopyWatching is runStackcopy that calls watch with stackcopy's
// process every 50 ms while it runs (nil: never), and says whether it
// wrote its --stats-json document.
func runStackcopyWatching(t *testing.T, h *lab.Host, within time.Duration, watch func(*lab.Proc), args ...string) (runResult, bool) {
	t.Helper()
	statsPath := filepath.Join(h.Lab().Dir(), fmt.Sprintf("stats-%d.json", time.Now().UnixNano()))
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	p, err := h.StartWith(lab.StartOptions{Stdout: true}, stackcopyPath(t), append([]string{"--stats-json", statsPath}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	if watch != nil {
		p.Sample(ctx, 50*time.Millisecond, func() { watch(p) })
	}
	// A non-zero exit is a result the test judges; a run past within is
	// stopped and fails the test.
	_ = p.WaitContext(ctx, 3*time.Second)
	res := runResult{exit: p.ExitCode(), stdout: p.Stdout(), stderr: p.Log()}
	if ctx.Err() != nil {
		t.Fatalf("stackcopy did not finish within %v\nstdout:\n%s\nstderr:\n%s", within, res.stdout, res.stderr)
	}
	t.Logf("stackcopy %v: exit %d\n%s%s", args, res.exit, res.stdout, res.stderr)
	b, err := os.ReadFile(statsPath)
	if err != nil {
		return res, false
	}
	if err := json.Unmarshal(b, &res.stats); err != nil {
		t.Fatalf("stats JSON: %v", err)
	}
	return res, true
}

// expectedRequest is one request as the capture says the client sent it.
type expectedRequest struct {
	bytes  int64
	sha256 string
}

// clientStreams reassembles each client's byte stream from a pcap with a
// deliberately naive method independent of the mirror package: collect
// every client→server payload by sequence number, take each byte once.
func clientStreams(t *testing.T, path string, server netip.AddrPort) map[netip.AddrPort][]byte {
	t.Helper()
	type piece struct {
		seq  uint32
		data []byte
	}
	isn := map[netip.AddrPort]uint32{}
	pieces := map[netip.AddrPort][]piece{}
	eachPacket(t, path, func(p gopacket.Packet) {
		ip4, tcp := ipTCP(p)
		if ip4 == nil || tcp == nil {
			return
		}
		dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip4.DstIP.To4())), uint16(tcp.DstPort))
		if dst != server {
			return
		}
		cl := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip4.SrcIP.To4())), uint16(tcp.SrcPort))
		if tcp.SYN {
			isn[cl] = tcp.Seq + 1
			return
		}
		if len(tcp.Payload) > 0 {
			pieces[cl] = append(pieces[cl], piece{tcp.Seq, append([]byte(nil), tcp.Payload...)})
		}
	})
	out := map[netip.AddrPort][]byte{}
	for cl, ps := range pieces {
		base, ok := isn[cl]
		if !ok {
			continue
		}
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].seq-base < ps[j].seq-base })
		var stream []byte
		for _, p := range ps {
			off := int(p.seq - base)
			if off+len(p.data) <= len(stream) {
				continue
			}
			if off > len(stream) {
				t.Fatalf("client %v: the capture has a hole at offset %d", cl, len(stream))
			}
			stream = append(stream, p.data[len(stream)-off:]...)
		}
		out[cl] = stream
	}
	return out
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// httpRequests cuts an HTTP/1.1 client stream into requests using
// Content-Length framing (curl's requests in these tests use it).
func httpRequests(t *testing.T, stream []byte) []expectedRequest {
	t.Helper()
	var out []expectedRequest
	for len(stream) > 0 {
		end := bytes.Index(stream, []byte("\r\n\r\n"))
		if end < 0 {
			t.Fatalf("incomplete HTTP header in client stream: %q", stream[:min(len(stream), 80)])
		}
		head := stream[:end+4]
		n := len(head)
		for _, line := range bytes.Split(head, []byte("\r\n")) {
			if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("Content-Length")) {
				cl, err := strconv.Atoi(string(bytes.TrimSpace(v)))
				if err != nil {
					t.Fatal(err)
				}
				n += cl
			}
		}
		if n > len(stream) {
			t.Fatalf("HTTP body cut short in client stream")
		}
		out = append(out, expectedRequest{int64(n), sha(stream[:n])})
		stream = stream[n:]
	}
	return out
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func ipTCP(p gopacket.Packet) (*layers.IPv4, *layers.TCP) {
	ip4, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	return ip4, tcp
}

// eachPacket calls fn for every packet of a pcap file.
func eachPacket(t *testing.T, path string, fn func(gopacket.Packet)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	for p := range gopacket.NewPacketSource(r, r.LinkType()).Packets() {
		fn(p)
	}
}

// waitFor polls cond until it holds or within passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
