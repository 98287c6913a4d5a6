package netnstests

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// startNghttpd runs Debian's nghttpd as an h2c server (--no-tls) for the
// files in dir. -v logs every frame it receives and sends, connection by
// connection, the server's own record of what it was asked.
func startNghttpd(t *testing.T, h *lab.Host, listen netip.AddrPort, dir string) *lab.Proc {
	t.Helper()
	return startServerProc(t, h, listen, "nghttpd", "--no-tls", "-v", "-a", listen.Addr().String(), "-d", dir, fmt.Sprint(listen.Port()))
}

// writeFiles writes random files of the given sizes into a new directory
// dir.
func writeFiles(t *testing.T, dir string, sizes map[string]int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, n := range sizes {
		if err := os.WriteFile(filepath.Join(dir, name), randomBytes(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

var (
	// [id=3] [  0.413] recv (stream_id=13) :path: /s0
	h2Path = regexp.MustCompile(`^\[id=(\d+)\] \[ *[0-9.]+\] recv \(stream_id=(\d+)\) :path: (\S+)$`)
	// [id=3] [  0.415] closed
	h2Closed = regexp.MustCompile(`^\[id=(\d+)\] \[ *[0-9.]+\] closed$`)
	// [id=3] [  0.413] send SETTINGS frame <length=6, flags=0x00, stream_id=0>
	h2Session = regexp.MustCompile(`^\[id=(\d+)\] `)
)

// h2Conn is one connection in nghttpd's log: its requests as "stream_id
// path", in the order nghttpd received them.
type h2Conn struct {
	requests []string
	closed   bool
}

func (c h2Conn) String() string { return strings.Join(c.requests, " ") }

// nghttpdConnections reads nghttpd's -v log: the connections by nghttpd's
// session id, which counts up per accepted connection.
func nghttpdConnections(log string) map[int]*h2Conn {
	out := map[int]*h2Conn{}
	conn := func(id string) *h2Conn {
		n, _ := strconv.Atoi(id)
		if out[n] == nil {
			out[n] = &h2Conn{}
		}
		return out[n]
	}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if g := h2Path.FindStringSubmatch(l); g != nil {
			c := conn(g[1])
			c.requests = append(c.requests, g[2]+" "+g[3])
		} else if g := h2Closed.FindStringSubmatch(l); g != nil {
			conn(g[1]).closed = true
		} else if g := h2Session.FindStringSubmatch(l); g != nil {
			conn(g[1])
		}
	}
	return out
}

// h2Signatures are the connections' requests, one string a connection,
// sorted: nghttpd's log names no client address, and connections opened at
// once may be accepted in another order on replay.
func h2Signatures(conns map[int]*h2Conn) (sigs []string, requests int) {
	for _, c := range conns {
		sigs = append(sigs, c.String())
		requests += len(c.requests)
	}
	slices.Sort(sigs)
	return sigs, requests
}

// waitNghttpdClosed waits until nghttpd logged the close of n connections
// (bounded) and returns its connections.
func waitNghttpdClosed(t *testing.T, p *lab.Proc, n int) map[int]*h2Conn {
	t.Helper()
	var conns map[int]*h2Conn
	closed := 0
	deadline := time.Now().Add(10 * time.Second)
	for {
		conns = nghttpdConnections(p.Log())
		closed = 0
		for _, c := range conns {
			if c.closed {
				closed++
			}
		}
		if closed >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if closed < n {
		t.Errorf("nghttpd on %s logged %d connections, %d closed; want %d closed", p, len(conns), closed, n)
	}
	return conns
}

// serverFirst counts the captured sessions to server whose first payload
// is the server's, not the client's: an h2c server such as nghttpd writes
// its SETTINGS as soon as it accepts, and it may beat the client's preface.
func serverFirst(t *testing.T, path string, server netip.AddrPort) (n int) {
	t.Helper()
	seen := map[netip.AddrPort]bool{}
	eachPacket(t, path, func(p gopacket.Packet) {
		ip4, tcp := ipTCP(p)
		if ip4 == nil || tcp == nil || len(tcp.Payload) == 0 {
			return
		}
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip4.SrcIP.To4())), uint16(tcp.SrcPort))
		dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip4.DstIP.To4())), uint16(tcp.DstPort))
		client, fromServer := src, false
		if src == server {
			client, fromServer = dst, true
		}
		if !seen[client] {
			seen[client] = true
			if fromServer {
				n++
			}
		}
	})
	return n
}

// TestReplayHTTP2: real h2c clients from Debian — h2load with 20
// concurrent streams on each of 4 connections, nghttp fetching many URLs
// on one connection, curl with prior knowledge — against a real nghttpd,
// three rounds 200 ms apart, are captured and replayed at the captured
// pace to an nghttpd that serves files of other sizes under the same
// names, so its DATA frames interleave differently from production's.
// nghttpd's own log (-v) of the target holds the connections the online
// server's log holds: as many requests each, the same path on each stream
// id, in order. Every session is detected as HTTP/2, every turn ended by
// HTTP/2 framing, none after --turn-wait, and the replay took about as
// long as the capture.
//
// nghttp keeps its default 64 KiB windows and grants window only as it
// reads: the captured WINDOW_UPDATEs grant what production's answers took,
// less than the target's larger answers need. The replayer adds the
// WINDOW_UPDATEs a reading client sends (replay/h2flow.go), so the target
// never stalls for lack of window; without them each such turn ended
// after --turn-wait ("the target gave 2 of the 9 answers the capture
// shows"). h2load and curl grant large windows, as browsers do.
func TestReplayHTTP2(t *testing.T) {
	l := lab.NewT(t)
	needPrograms(t, "nghttpd", "h2load", "nghttp", "curl")
	c := newCaptureLab(t, l, 1)
	const port = 8080
	online := netip.AddrPortFrom(onlineAddr, port)
	odir := filepath.Join(l.Dir(), "h2-online")
	writeFiles(t, odir, map[string]int{"s0": 100, "s1": 1500, "s2": 9000, "s3": 24000, "big": 70_000})
	onl := startNghttpd(t, c.online, online, odir)
	base := "http://" + online.String() + "/"
	small := []string{base + "s0", base + "s1", base + "s2", base + "s3"}
	pc := captureTraffic(t, c, port, func() {
		for round := range 3 {
			mustExec(t, c.client, append([]string{"h2load", "-n", "600", "-c", "4", "-m", "20"}, small...)...)
			time.Sleep(200 * time.Millisecond)
			mustExec(t, c.client, append([]string{"nghttp", "-n", "-m", "3", base + "big"}, small...)...)
			time.Sleep(200 * time.Millisecond)
			// curl 7.88.1 (Debian 12) fails a second transfer on a
			// prior-knowledge connection it reuses (curl#10634, fixed
			// in 8.0), and nghttpd takes no Upgrade: one URL a curl.
			for _, u := range []string{base + "big", small[round]} {
				mustExec(t, c.client, "curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", u)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	captured := waitNghttpdClosed(t, onl, pc.sessions)
	want, wantReqs := h2Signatures(captured)
	if len(captured) != pc.sessions || wantReqs != 3*(600+15+2) {
		t.Fatalf("online nghttpd logged %d connections, %d requests for %d captured sessions: the capture did not run", len(captured), wantReqs, pc.sessions)
	}
	early := serverFirst(t, pc.pcap, online)

	r := newReplayLab(t, l)
	target := netip.AddrPortFrom(targetAddr, port)
	tdir := filepath.Join(l.Dir(), "h2-target")
	// Answers of other sizes than production's: DATA frames interleave
	// differently.
	writeFiles(t, tdir, map[string]int{"s0": 20_000, "s1": 40, "s2": 33_000, "s3": 3000, "big": 200_000})
	tgt := startNghttpd(t, r.target, target, tdir)
	res := replayAtPace(t, r, pc, port, "http2")
	replayed := waitNghttpdClosed(t, tgt, pc.sessions)
	got, gotReqs := h2Signatures(replayed)
	ps := res.stats.Replay.Protocols["http2"]
	t.Logf("%d connections, %d requests; %d sessions detected as http2 (%d began with the server's SETTINGS); %d turns, %d framed, %d after --turn-wait; flow control: %d window updates added, %d DATA frames held (%d after --turn-wait)",
		len(captured), wantReqs, ps.Sessions, early, ps.Turns, ps.Framed, ps.TurnWait, ps.WindowUpdates, ps.DataHeld, ps.WindowWait)
	if ps.WindowUpdates == 0 {
		t.Errorf("no window updates added: nghttp's 64 KiB windows and the target's larger answers need them")
	}
	if int(ps.Sessions) < pc.sessions && early > 0 {
		t.Errorf("%d of %d sessions began with nghttpd's SETTINGS in the capture, before the client's preface; %d of %d were detected as http2",
			early, pc.sessions, ps.Sessions, pc.sessions)
	}
	if !slices.Equal(got, want) {
		t.Errorf("target's connections differ from production's: %d connections, %d requests vs %d, %d", len(got), gotReqs, len(want), wantReqs)
		for i := range max(len(got), len(want)) {
			if g, w := at(got, i), at(want, i); g != w {
				gr, wr := strings.Fields(g), strings.Fields(w)
				j := firstDiff(gr, wr) / 2 * 2
				t.Logf("connection %d (%d vs %d requests) differs at request %d: target %q, production %q",
					i, len(gr)/2, len(wr)/2, j/2, strings.Join(gr[j:min(j+2, len(gr))], " "), strings.Join(wr[j:min(j+2, len(wr))], " "))
				break
			}
		}
	}
	for _, l := range strings.Split(res.stderr, "\n") {
		if strings.Contains(l, "without the answer") {
			t.Log(l)
		}
	}
}
