package mirror

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/stackcopy/stackcopy/netstack"
	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/transfer"
	"github.com/stackcopy/stackcopy/wire/wiretest"
)

// These tests run the whole engine as an ordinary user: the wire is a
// wiretest.Target (a second gVisor stack playing the target host), so
// there is no TUN, route or namespace.

var (
	capturedServer = netip.MustParseAddr("198.18.0.1")
	targetAddr     = netip.MustParseAddr("198.18.2.2")
)

// capturedSession is one client's TCP session as a capture shows it:
// requests and the server's answers alternating, the client closing.
type capturedSession struct {
	client, server netip.AddrPort
	requests       []string
	answers        []string
}

// packets returns the session's frames, each as the capture has it.
func (s capturedSession) packets(t *testing.T) [][]byte {
	t.Helper()
	var out [][]byte
	cseq, sseq := uint32(1000), uint32(70000)
	add := func(fromClient bool, seq, ack uint32, syn, fin bool, payload string) {
		src, dst := s.client, s.server
		if !fromClient {
			src, dst = dst, src
		}
		out = append(out, frame(t, src, dst, seq, ack, syn, fin, !syn || !fromClient, []byte(payload)))
	}
	add(true, cseq, 0, true, false, "")
	add(false, sseq, cseq+1, true, false, "")
	cseq, sseq = cseq+1, sseq+1
	add(true, cseq, sseq, false, false, "")
	for i, req := range s.requests {
		add(true, cseq, sseq, false, false, req)
		cseq += uint32(len(req))
		add(false, sseq, cseq, false, false, s.answers[i])
		sseq += uint32(len(s.answers[i]))
		add(true, cseq, sseq, false, false, "")
	}
	add(true, cseq, sseq, false, true, "")
	add(false, sseq, cseq+1, false, true, "")
	add(true, cseq+1, sseq+1, false, false, "")
	return out
}

func frame(t *testing.T, src, dst netip.AddrPort, seq, ack uint32, syn, fin, ackFlag bool, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: seq, Ack: ack,
		SYN: syn, FIN: fin, ACK: ackFlag, PSH: len(payload) > 0, Window: 65535}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// writeCapture writes the sessions' packets interleaved (step i of every
// session, then step i+1), 1 ms apart, as an Ethernet pcap file.
func writeCapture(t *testing.T, sessions ...capturedSession) string {
	t.Helper()
	var per [][][]byte
	for _, s := range sessions {
		per = append(per, s.packets(t))
	}
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := 0; ; i++ {
		wrote := false
		for _, pkts := range per {
			if i >= len(pkts) {
				continue
			}
			ts = ts.Add(time.Millisecond)
			if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(pkts[i]), Length: len(pkts[i])}, pkts[i]); err != nil {
				t.Fatal(err)
			}
			wrote = true
		}
		if !wrote {
			break
		}
	}
	path := filepath.Join(t.TempDir(), "sessions.pcap")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// received is what the target saw on one connection.
type received struct {
	remote netip.AddrPort
	bytes  string
}

// httpTarget serves HTTP/1.1 keep-alive on l, answering every request
// with a body of its own (longer than the captured one: the turn must end
// when the response is complete, not by the captured size), and reports
// each connection's client address and the exact bytes it sent.
func httpTarget(t *testing.T, l net.Listener) <-chan received {
	t.Helper()
	out := make(chan received, 16)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				// The peer's address now: once the peer reset, a gonet
				// connection has none (RemoteAddr returns nil).
				remote := c.RemoteAddr().String()
				var raw bytes.Buffer
				r := bufio.NewReader(io.TeeReader(c, &raw))
				for {
					req, err := http.ReadRequest(r)
					if err != nil {
						break
					}
					io.Copy(io.Discard, req.Body)
					body := "answer to " + req.URL.Path + strings.Repeat(".", 3000)
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				}
				out <- received{remote: netip.MustParseAddrPort(remote), bytes: raw.String()}
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return out
}

// testConfig replays path through tg, unpaced.
func testConfig(t *testing.T, tg *wiretest.Target, path, transfers string) Config {
	t.Helper()
	ts, err := transfer.ParseTransfers(transfers)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Transfers = ts
	cfg.Inputs = []string{path}
	cfg.Device = tg
	cfg.Speed = 0
	cfg.SpillMax = 0
	cfg.TurnWait = 5 * time.Second
	cfg.Idle = 10 * time.Second
	return cfg
}

func newTarget(t *testing.T) *wiretest.Target {
	t.Helper()
	tg, err := wiretest.NewTarget(1500, targetAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

func runWithin(t *testing.T, cfg Config) (*Summary, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return Run(ctx, cfg, nil)
}

// TestReplayKeepAliveSessions: HTTP/1.1 keep-alive sessions of distinct
// clients arrive at the target from the captured client addresses and
// ports, byte for byte and in order, and the summary counts them.
func TestReplayKeepAliveSessions(t *testing.T) {
	tg := newTarget(t)
	l, err := tg.Listen(netip.AddrPortFrom(targetAddr, 8080))
	if err != nil {
		t.Fatal(err)
	}
	got := httpTarget(t, l)

	var sessions []capturedSession
	want := map[netip.AddrPort]string{}
	var sent uint64
	for i := range 3 {
		s := capturedSession{
			client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(10 + i)}), uint16(40000+i)),
			server: netip.AddrPortFrom(capturedServer, 80),
		}
		for k := range 3 {
			s.requests = append(s.requests, fmt.Sprintf("GET /c%d/r%d HTTP/1.1\r\nHost: test\r\nX-Pad: %s\r\n\r\n", i, k, strings.Repeat("p", 100*k)))
			s.answers = append(s.answers, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
		sessions = append(sessions, s)
		want[s.client] = strings.Join(s.requests, "")
		sent += uint64(len(want[s.client]))
	}
	cfg := testConfig(t, tg, writeCapture(t, sessions...), "80-198.18.2.2:8080")
	sum, err := runWithin(t, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	for range sessions {
		r := <-got // the target has seen every client's FIN by now
		w, ok := want[r.remote]
		if !ok {
			t.Errorf("target saw a connection from %v, not a captured client", r.remote)
			continue
		}
		if r.bytes != w {
			t.Errorf("%v: target got %q, want %q", r.remote, r.bytes, w)
		}
		delete(want, r.remote)
	}
	r, tr := sum.Replay, sum.Tracker
	if r.Sessions != 3 || r.Completed != 3 || !sum.AllCompleted() {
		t.Errorf("sessions %d, completed %d, want 3 and 3: %+v", r.Sessions, r.Completed, r)
	}
	// Every request waits for its answer before the next request or the
	// client's FIN goes out, and HTTP framing ends every wait.
	if r.Turns != 9 || r.TurnsFramed != 9 || r.TurnsUnanswered != 0 {
		t.Errorf("turns %d (%d framed, %d unanswered), want 9 (9, 0)", r.Turns, r.TurnsFramed, r.TurnsUnanswered)
	}
	if r.BytesSent != sent {
		t.Errorf("%d client bytes sent, want %d", r.BytesSent, sent)
	}
	if tr.Sessions != 3 || sum.Capture.TCP != uint64(3*len(sessions[0].packets(t))) {
		t.Errorf("tracker sessions %d, capture TCP %d", tr.Sessions, sum.Capture.TCP)
	}
	if st := tg.Stats(); st.Bad != 0 {
		t.Errorf("%d bad segments reached the target", st.Bad)
	}
	var text bytes.Buffer
	sum.WriteText(&text)
	if !strings.Contains(text.String(), "  sessions  3 replayed: 3 completed, 0 client-reset, 0 target-reset, 0 refused") {
		t.Errorf("summary text:\n%s", text.String())
	}
}

// TestRefusedSessionIsCounted: a target that refuses the connection ends
// the session as refused (netstack's error reaches replay as its own),
// and Run still succeeds with a summary that is not all completed.
func TestRefusedSessionIsCounted(t *testing.T) {
	tg := newTarget(t)
	l, err := tg.Listen(netip.AddrPortFrom(targetAddr, 8080))
	if err != nil {
		t.Fatal(err)
	}
	got := httpTarget(t, l)
	ok := capturedSession{
		client:   netip.MustParseAddrPort("198.18.1.20:41000"),
		server:   netip.AddrPortFrom(capturedServer, 80),
		requests: []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n"},
		answers:  []string{"HTTP/1.1 204 No Content\r\n\r\n"},
	}
	refused := capturedSession{
		client:   netip.MustParseAddrPort("198.18.1.21:41001"),
		server:   netip.AddrPortFrom(capturedServer, 81),
		requests: []string{"GET / HTTP/1.1\r\nHost: b\r\n\r\n"},
		answers:  []string{"HTTP/1.1 204 No Content\r\n\r\n"},
	}
	// Nothing listens on 8181.
	cfg := testConfig(t, tg, writeCapture(t, ok, refused), "80-198.18.2.2:8080,81-198.18.2.2:8181")
	sum, err := runWithin(t, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r := <-got; r.remote != ok.client || r.bytes != ok.requests[0] {
		t.Errorf("target got %q from %v", r.bytes, r.remote)
	}
	r := sum.Replay
	if r.Sessions != 2 || r.Completed != 1 || r.Refused != 1 || r.Failed != 0 || sum.AllCompleted() {
		t.Errorf("want 2 sessions, 1 completed, 1 refused, 0 failed: %+v", r)
	}
}

// TestCorruptCaptureIsOneLine: a capture that cannot be read is one line
// naming the file and the byte offset. A bad header stops Run before the
// wire is used; a record cut short is found while replaying, and the
// sessions before it are in the summary.
func TestCorruptCaptureIsOneLine(t *testing.T) {
	path := writeCapture(t, capturedSession{
		client:   netip.MustParseAddrPort("198.18.1.30:42000"),
		server:   netip.AddrPortFrom(capturedServer, 80),
		requests: []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n"},
		answers:  []string{"HTTP/1.1 204 No Content\r\n\r\n"},
	})
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		damage  func([]byte) []byte
		summary bool
	}{
		{"bad magic", func(b []byte) []byte { return append([]byte("not a capture"), b[13:]...) }, false},
		{"cut record", func(b []byte) []byte { return b[:len(b)-20] }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTarget(t)
			path := filepath.Join(t.TempDir(), "damaged.pcap")
			if err := os.WriteFile(path, tc.damage(slices.Clone(good)), 0o644); err != nil {
				t.Fatal(err)
			}
			sum, err := runWithin(t, testConfig(t, tg, path, "80-198.18.2.2:8080"))
			if err == nil {
				t.Fatalf("Run accepted a damaged capture: %+v", sum)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, path) || !strings.Contains(msg, "offset") {
				t.Errorf("want one line naming %s and the offset, got %q", path, msg)
			}
			if (sum != nil) != tc.summary {
				t.Errorf("summary %+v, want one: %v", sum, tc.summary)
			}
			if !tc.summary && tg.Stats().Packets != 0 {
				t.Errorf("%d packets written for a capture that was never replayed", tg.Stats().Packets)
			}
		})
	}
}

// TestNoMatchingSession: a capture without a session for -x is an error,
// with the summary of what was read.
func TestNoMatchingSession(t *testing.T) {
	tg := newTarget(t)
	path := writeCapture(t, capturedSession{
		client:   netip.MustParseAddrPort("198.18.1.40:43000"),
		server:   netip.AddrPortFrom(capturedServer, 25),
		requests: []string{"HELO x\r\n"},
		answers:  []string{"250 ok\r\n"},
	})
	sum, err := runWithin(t, testConfig(t, tg, path, "80-198.18.2.2:8080"))
	if err == nil || !strings.Contains(err.Error(), "no session to replay") {
		t.Fatalf("Run: %v, want no session to replay", err)
	}
	if sum == nil || sum.Capture.TCP == 0 || sum.Replay.Sessions != 0 {
		t.Errorf("summary %+v", sum)
	}
}

// TestReplayErrorMapping: netstack's errors match replay's values and
// keep their text and chain.
func TestReplayErrorMapping(t *testing.T) {
	for _, tc := range []struct{ stack, replay error }{
		{netstack.ErrReset, replay.ErrReset},
		{netstack.ErrRefused, replay.ErrRefused},
		{netstack.ErrTimeout, replay.ErrTimeout},
		{netstack.ErrPortInUse, replay.ErrPortInUse},
	} {
		err := fmt.Errorf("read 198.18.2.2:80 from 198.18.1.1:1234: %w", tc.stack)
		got := replayError(err)
		if !errors.Is(got, tc.replay) || !errors.Is(got, tc.stack) || got.Error() != err.Error() {
			t.Errorf("%v: mapped to %v (is replay's %v: %v)", tc.stack, got, tc.replay, errors.Is(got, tc.replay))
		}
	}
	other := errors.New("something else")
	if replayError(other) != other || replayError(nil) != nil || replayError(io.EOF) != io.EOF {
		t.Error("errors without a replay value must pass unchanged")
	}
}
