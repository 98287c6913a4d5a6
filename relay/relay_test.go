package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/internal/syncbuf"
)

// logBuffer collects a Server's or Client's log lines.
type logBuffer struct{ syncbuf.Buffer }

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testServer is a Server serving on a loopback listener.
type testServer struct {
	*Server
	addr string
	log  *logBuffer
	stop func() // cancels Serve and waits for it
}

func startServer(t *testing.T, cfg ServerConfig, addr string) *testServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	// A restarted server rebinds its predecessor's port; give the kernel a
	// moment if it is not free yet.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	if cfg.Key.secret == nil {
		cfg.Key = keyA
	}
	cfg.Logger = logs.logger()
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	var once sync.Once
	ts := &testServer{Server: srv, addr: ln.Addr().String(), log: logs}
	ts.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-served:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("Serve did not return within 5 s of cancellation")
			}
		})
	}
	t.Cleanup(ts.stop)
	return ts
}

// sink collects the packets a Client hands to OnPackets, and the size of
// each batch.
type sink struct {
	mu      sync.Mutex
	pkts    [][]byte
	batches []int
}

func (s *sink) onPackets(pkts [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range pkts {
		s.pkts = append(s.pkts, bytes.Clone(p))
	}
	s.batches = append(s.batches, len(pkts))
}

func (s *sink) get() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.pkts...)
}

func dial(t *testing.T, addrs []string, key Key, cfg ClientConfig) (*Client, *sink) {
	t.Helper()
	s := &sink{}
	if cfg.OnPackets == nil {
		cfg.OnPackets = s.onPackets
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, addrs, key, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRelayFullAndHeaderOnly(t *testing.T) {
	srv := startServer(t, ServerConfig{}, "")
	c, got := dial(t, []string{srv.addr}, keyA, ClientConfig{})
	if err := c.Register(client4, target4); err != nil {
		t.Fatal(err)
	}
	if err := c.Register(client6, target6); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two registrations", func() bool { return srv.Stats().RegisteredClients == 2 })

	payload := bytes.Repeat([]byte{0xab}, 1400)
	full4 := tcpPacket(target4, client4, tsOption, payload)
	hdr4 := tcpPacket(target4, client4, tsOption, payload)
	full6 := tcpPacket(target6, client6, nil, []byte("six"))
	truncated := tcpPacket(target4, client4, nil, payload)[:60] // snaplen cut: relayed header-only
	for _, d := range []struct {
		pkt  []byte
		full bool
	}{{full4, true}, {hdr4, false}, {full6, true}, {truncated, true}} {
		if !srv.Deliver(d.pkt, d.full) {
			t.Fatal("Deliver refused a registered destination")
		}
	}
	waitFor(t, "four packets", func() bool { return len(got.get()) == 4 })
	pkts := got.get()
	if !bytes.Equal(pkts[0], full4) || !bytes.Equal(pkts[2], full6) {
		t.Fatal("full packets changed in transit")
	}
	for _, w := range []struct {
		i, hdr int
		src    []byte
	}{{1, 52, hdr4}, {3, 40, truncated}} {
		p := pkts[w.i]
		total := w.hdr + len(payload)
		if len(p) != total {
			t.Fatalf("header-only packet %d rebuilt to %d bytes, want %d", w.i, len(p), total)
		}
		if !bytes.Equal(p[:w.hdr], w.src[:w.hdr]) {
			t.Fatalf("packet %d: headers changed", w.i)
		}
		if !bytes.Equal(p[w.hdr:], make([]byte, len(payload))) {
			t.Fatalf("packet %d: payload not zero-filled", w.i)
		}
	}
	st := srv.Stats()
	if st.Delivered != 4 || st.Dropped != 0 || st.MirrorsConnected != 1 || st.Bytes == 0 {
		t.Fatalf("server stats %+v", st)
	}
	cs := c.Stats()
	if cs.Packets != 4 || cs.HeaderOnly != 2 || cs.Connected != 1 || cs.Registered != 2 {
		t.Fatalf("client stats %+v", cs)
	}

	// Unregister removes the route: the next answer is unknown.
	c.Unregister(client4)
	waitFor(t, "unregistration", func() bool { return srv.Stats().RegisteredClients == 1 })
	if srv.Deliver(full4, true) {
		t.Fatal("Deliver routed an unregistered destination")
	}
	if st := srv.Stats(); st.Unknown != 1 {
		t.Fatalf("unknown = %d, want 1", st.Unknown)
	}
	if srv.Deliver([]byte("not a packet"), true) || srv.Stats().Malformed != 1 {
		t.Fatal("malformed packet not counted")
	}
}

func TestServerRejectsWrongKey(t *testing.T) {
	srv := startServer(t, ServerConfig{}, "")
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Dial(ctx, []string{srv.addr}, keyB, ClientConfig{})
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("Dial with the wrong key: %v, want ErrAuth", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("a key mismatch took %v to report: it must not be retried", time.Since(start))
	}
	waitFor(t, "auth failure count", func() bool { return srv.Stats().AuthFailures == 1 })
	if st := srv.Stats(); st.MirrorsConnected != 0 {
		t.Fatalf("stats %+v", st)
	}
	if l := srv.log.String(); !strings.Contains(l, "rejected unauthenticated peer") || !strings.Contains(l, "remote=127.0.0.1:") ||
		!strings.Contains(l, "the client's proof does not match our key") {
		t.Fatalf("log does not name the peer and the reason:\n%s", l)
	}
}

func TestDialFailsFastOnAnyIntercept(t *testing.T) {
	good := startServer(t, ServerConfig{}, "")
	other := startServer(t, ServerConfig{Key: keyB}, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = Dial(ctx, []string{unreachable, good.addr, other.addr}, keyA, ClientConfig{Channels: 2})
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), other.addr) {
		t.Fatalf("Dial: %v, want ErrAuth naming %s", err, other.addr)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("key mismatch on one intercept reported after %v", d)
	}
	// Dial cleaned up: the good intercept sees its mirrors leave.
	waitFor(t, "cleanup", func() bool { return good.Stats().MirrorsConnected == 0 })
}

func TestClientRejectsImpostor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go impostor(c, keyB)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Dial(ctx, []string{ln.Addr().String()}, keyA, ClientConfig{})
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "proof does not match our key") {
		t.Fatalf("Dial to an impostor: %v", err)
	}
}

func TestServerRejectsGarbage(t *testing.T) {
	srv := startServer(t, ServerConfig{HandshakeTimeout: 300 * time.Millisecond}, "")
	// An authenticated mirror, connected before the garbage arrives, must
	// keep being served.
	c, got := dial(t, []string{srv.addr}, keyA, ClientConfig{})
	if err := c.Register(client4, target4); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "registration", func() bool { return srv.Stats().RegisteredClients == 1 })

	random := make([]byte, 4096)
	rand.Read(random)
	wrongLenAuth := append(magic[:], frame(typeAuth, make([]byte, 10))...)
	tests := []struct {
		name string
		send []byte
		want string
	}{
		{"random bytes", random, "not a stackcopy relay client: first bytes"},
		{"HTTP request", []byte("GET / HTTP/1.1\r\nHost: intercept\r\n\r\n"), "(an HTTP request)"},
		{"TLS client hello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, "(a TLS handshake)"},
		{"huge length", append(magic[:], byte(typeAuth), 0xff, 0xff, 0xff), "auth frame of 16777215 bytes exceeds the 1048576-byte limit"},
		{"register before auth", append(magic[:], frame(typeRegister, countPrefixed(1, addr("198.18.1.7:1"), addr("198.18.2.2:80")))...), "unexpected register frame here (want auth)"},
		{"auth of wrong length", wrongLenAuth, "auth frame of 10 bytes, want 64"},
		{"other version", []byte{'S', 'C', 'R', 9}, "client speaks relay protocol version 9, this build speaks version 1"},
		{"truncated auth", append(magic[:], frame(typeAuth, make([]byte, 64))[:30]...), "truncated auth frame: got 26 of 64 payload bytes"},
		{"silence", nil, "handshake not completed within 300ms"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A new interval of the rejection log: its first rejections
			// are logged in full.
			srv.rejects.flush(time.Now())
			conn, err := net.Dial("tcp", srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			local := conn.LocalAddr().String()
			hello := make([]byte, 4+frameHeaderLen+challengeLen)
			if _, err := io.ReadFull(conn, hello); err != nil {
				t.Fatalf("reading the challenge: %v", err)
			}
			if !bytes.Equal(hello[:8], append(magic[:], byte(typeChallenge), 0, 0, challengeLen)) {
				t.Fatalf("server opened with % x", hello[:8])
			}
			if tt.send != nil {
				conn.Write(tt.send)
				if strings.HasPrefix(tt.name, "truncated") {
					conn.(*net.TCPConn).CloseWrite()
				}
			}
			// Nothing but the challenge: the next read ends the connection.
			extra, err := io.ReadAll(conn)
			if len(extra) != 0 {
				t.Fatalf("unauthenticated peer received %d more bytes: % x", len(extra), extra)
			}
			if err != nil && !isConnReset(err) {
				t.Fatalf("reading after garbage: %v", err)
			}
			waitFor(t, "auth failure count", func() bool { return srv.Stats().AuthFailures == uint64(i+1) })
			defer func() {
				if t.Failed() {
					t.Log(srv.log.String())
				}
			}()
			waitFor(t, "log line", func() bool {
				for _, line := range strings.Split(srv.log.String(), "\n") {
					if strings.Contains(line, "remote="+local) && strings.Contains(line, tt.want) {
						return true
					}
				}
				return false
			})
		})
	}

	pkt := tcpPacket(target4, client4, nil, []byte("still served"))
	if !srv.Deliver(pkt, true) {
		t.Fatal("route lost")
	}
	waitFor(t, "packet after garbage", func() bool { return len(got.get()) == 1 })
	if st := srv.Stats(); st.MirrorsConnected != 1 {
		t.Fatalf("stats after garbage %+v", st)
	}
}

func TestMirrorsGetOnlyTheirPackets(t *testing.T) {
	var relMu sync.Mutex
	var released []netip.AddrPort
	srv := startServer(t, ServerConfig{OnRelease: func(c []netip.AddrPort) {
		relMu.Lock()
		released = append(released, c...)
		relMu.Unlock()
	}}, "")
	a, gotA := dial(t, []string{srv.addr}, keyA, ClientConfig{})
	b, gotB := dial(t, []string{srv.addr}, keyA, ClientConfig{})
	clientA := netip.MustParseAddrPort("198.18.1.1:1000")
	clientB := netip.MustParseAddrPort("198.18.1.2:2000")
	a.Register(clientA, target4)
	b.Register(clientB, target4)
	waitFor(t, "registrations", func() bool { return srv.Stats().RegisteredClients == 2 })
	if n := srv.Stats().MirrorsConnected; n != 2 {
		t.Fatalf("%d mirrors connected, want 2", n)
	}
	for i := range 10 {
		srv.Deliver(tcpPacket(target4, clientA, nil, []byte{'a', byte(i)}), true)
		srv.Deliver(tcpPacket(target4, clientB, nil, []byte{'b', byte(i)}), true)
	}
	other := netip.MustParseAddrPort("198.18.1.3:3000")
	if srv.Deliver(tcpPacket(target4, other, nil, []byte("x")), true) {
		t.Fatal("unregistered destination routed")
	}
	waitFor(t, "ten packets each", func() bool { return len(gotA.get()) == 10 && len(gotB.get()) == 10 })
	for name, pkts := range map[string][][]byte{"a": gotA.get(), "b": gotB.get()} {
		for i, p := range pkts {
			dst, _, _, _ := parsePacket(p)
			payload := p[40:]
			if payload[0] != name[0] || payload[1] != byte(i) {
				t.Fatalf("mirror %s packet %d is %q to %v", name, i, payload, dst)
			}
		}
	}
	if st := srv.Stats(); st.Unknown != 1 || st.Delivered != 20 {
		t.Fatalf("stats %+v", st)
	}

	// Last registration wins; the loser's unregister does not remove it.
	b.Register(clientA, target4)
	waitFor(t, "b owns clientA", func() bool {
		m := srv.router.lookup(clientA)
		return m != nil && m == srv.router.lookup(clientB)
	})
	a.Unregister(clientA)
	time.Sleep(50 * time.Millisecond) // let the unregister arrive
	if srv.router.lookup(clientA) == nil {
		t.Fatal("an unregister from a mirror that no longer owns the client removed it")
	}
	// A mirror leaving takes its routes with it, and says which it let go.
	b.Close()
	waitFor(t, "b's routes gone", func() bool { return srv.Stats().RegisteredClients == 0 && srv.Stats().MirrorsConnected == 1 })
	relMu.Lock()
	got := slices.Clone(released)
	relMu.Unlock()
	slices.SortFunc(got, netip.AddrPort.Compare)
	if !slices.Equal(got, []netip.AddrPort{clientA, clientB}) {
		t.Fatalf("released %v, want exactly %v and %v (a's unregister of a client it no longer owned releases nothing)", got, clientA, clientB)
	}
}

func TestRouterOwnership(t *testing.T) {
	r := router{routes: make(map[netip.AddrPort]route)}
	m1 := &mirror{owned: make(map[netip.AddrPort]struct{})}
	m2 := &mirror{owned: make(map[netip.AddrPort]struct{})}
	c1 := netip.MustParseAddrPort("198.18.1.1:1")
	c2 := netip.MustParseAddrPort("198.18.1.1:2")
	r.register(m1, []registration{{c1, target4}, {c2, target4}})
	r.register(m2, []registration{{c1, target4}}) // last wins
	if r.lookup(c1) != m2 || r.lookup(c2) != m1 {
		t.Fatal("last registration did not win")
	}
	if rel := r.unregister(m1, []netip.AddrPort{c1}); r.lookup(c1) != m2 || len(rel) != 0 { // not m1's any more
		t.Fatalf("unregister by a former owner removed the route or released %v", rel)
	}
	if rel := r.drop(m1); len(rel) != 1 || rel[0] != c2 || r.lookup(c2) != nil || r.lookup(c1) != m2 {
		t.Fatalf("drop(m1) released %v; c1→%p c2→%p", rel, r.lookup(c1), r.lookup(c2))
	}
	if rel := r.unregister(m2, []netip.AddrPort{c1}); len(rel) != 1 || rel[0] != c1 {
		t.Fatalf("unregister by the owner released %v, want [%v]", rel, c1)
	}
	if r.len() != 0 || len(m2.owned) != 0 {
		t.Fatal("unregister by the owner left state behind")
	}
}

func TestReconnectReregisters(t *testing.T) {
	srv := startServer(t, ServerConfig{}, "")
	addr := srv.addr
	c, got := dial(t, []string{addr}, keyA, ClientConfig{})
	clients := []netip.AddrPort{
		netip.MustParseAddrPort("198.18.1.1:1001"),
		netip.MustParseAddrPort("198.18.1.2:1002"),
		netip.MustParseAddrPort("[2001:db8:1::3]:1003"),
	}
	for _, cl := range clients {
		c.Register(cl, target4)
	}
	waitFor(t, "registrations", func() bool { return srv.Stats().RegisteredClients == 3 })

	srv.stop()
	waitFor(t, "client to notice", func() bool { return c.Stats().Connected == 0 })
	// Changes while the intercept is away: the next connection must carry
	// the result, not the history.
	late := netip.MustParseAddrPort("198.18.1.4:1004")
	c.Register(late, target4)
	c.Unregister(clients[1])

	srv2 := startServer(t, ServerConfig{}, addr)
	want := []netip.AddrPort{clients[0], clients[2], late}
	waitFor(t, "re-registration", func() bool { return srv2.Stats().RegisteredClients == len(want) })
	for _, cl := range want {
		if srv2.router.lookup(cl) == nil {
			t.Fatalf("%v not re-registered", cl)
		}
	}
	if srv2.router.lookup(clients[1]) != nil {
		t.Fatal("a client unregistered while disconnected came back")
	}
	for _, cl := range want {
		src := target4
		if cl.Addr().Is6() {
			src = target6
		}
		if !srv2.Deliver(tcpPacket(src, cl, nil, []byte("again")), true) {
			t.Fatalf("no route to %v", cl)
		}
	}
	waitFor(t, "packets after reconnect", func() bool { return len(got.get()) == len(want) })
	if st := c.Stats(); st.Reconnects != 1 || st.Connected != 1 {
		t.Fatalf("client stats %+v", st)
	}
}

// stalledMirror authenticates, registers client4 and then never reads.
func stalledMirror(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := clientHandshake(conn, keyA, rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(appendRegisterFrames(nil, []registration{{client4, target4}})); err != nil {
		t.Fatal(err)
	}
	return conn
}

func TestStalledMirrorDropsAndCounts(t *testing.T) {
	srv := startServer(t, ServerConfig{QueueLen: 256}, "")
	conn := stalledMirror(t, srv.addr)
	waitFor(t, "registration", func() bool { return srv.Stats().RegisteredClients == 1 })

	pkt := tcpPacket(target4, client4, nil, make([]byte, 1400))
	const n = 50000 // 70 MB: far beyond socket buffers and the queue
	start := time.Now()
	for range n {
		if !srv.Deliver(pkt, true) {
			t.Fatal("Deliver refused a registered destination")
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Deliver blocked: %d packets took %v", n, d)
	}
	st := srv.Stats()
	if st.Dropped == 0 {
		t.Fatalf("nothing dropped for a mirror that does not read: %+v", st)
	}
	// Everything is accounted for once the mirror is gone: what was
	// written, what was dropped on a full queue, and what was queued when
	// the connection closed.
	conn.Close()
	waitFor(t, "mirror to be dropped", func() bool { return srv.Stats().MirrorsConnected == 0 })
	st = srv.Stats()
	if st.Delivered+st.Dropped != n || st.RegisteredClients != 0 {
		t.Fatalf("delivered %d + dropped %d != %d (stats %+v)", st.Delivered, st.Dropped, n, st)
	}
	t.Logf("delivered %d, dropped %d", st.Delivered, st.Dropped)
}

func TestSendQueue(t *testing.T) {
	var q sendQueue
	q.init(10, 4)
	pkt := tcpPacket(target4, client4, nil, []byte("q"))
	for i := range 12 {
		if ok := q.push(pkt, len(pkt), true); ok != (i < 10) {
			t.Fatalf("push %d: %v", i, ok)
		}
	}
	if !q.batchReady() {
		t.Fatal("full batch not ready")
	}
	frames := q.take(nil)
	var sizes []int
	for _, f := range frames {
		fr := frameReader{r: bytes.NewReader(f.b)}
		_, p, err := fr.next(clientExpects)
		if err != nil {
			t.Fatal(err)
		}
		pkts, err := decodeResponses(p, nil)
		if err != nil || len(pkts) != f.packets {
			t.Fatalf("frame of %d packets decodes to %d: %v", f.packets, len(pkts), err)
		}
		sizes = append(sizes, f.packets)
	}
	if len(sizes) != 3 || sizes[0] != 4 || sizes[1] != 4 || sizes[2] != 2 {
		t.Fatalf("batches %v, want [4 4 2]", sizes)
	}
	if !q.push(pkt, len(pkt), true) {
		t.Fatal("queue still full after take")
	}
	if n := q.close(); n != 1 || q.push(pkt, len(pkt), true) {
		t.Fatalf("close reported %d queued; closed queue accepts packets", n)
	}

	// The byte bound holds whatever the packet count allows.
	var big sendQueue
	big.init(1<<20, 64)
	huge := tcpPacket(target4, client4, nil, make([]byte, 65000))
	accepted := 0
	for big.push(huge, len(huge), true) {
		accepted++
	}
	if accepted*len(huge) > maxQueueBytes || accepted < maxQueueBytes/len(huge)-1 {
		t.Fatalf("byte-bounded queue accepted %d packets of %d bytes", accepted, len(huge))
	}
	for _, f := range big.take(nil) {
		if len(f.b)-frameHeaderLen > MaxFrameSize {
			t.Fatalf("frame of %d bytes", len(f.b))
		}
	}
}

func TestPartialBatchIsFlushed(t *testing.T) {
	for _, delay := range []time.Duration{0, -1, 20 * time.Millisecond} {
		srv := startServer(t, ServerConfig{BatchLen: 1000, FlushDelay: delay}, "")
		c, got := dial(t, []string{srv.addr}, keyA, ClientConfig{})
		c.Register(client4, target4)
		waitFor(t, "registration", func() bool { return srv.Stats().RegisteredClients == 1 })
		start := time.Now()
		srv.Deliver(tcpPacket(target4, client4, nil, []byte("lonely")), true)
		waitFor(t, "a lone packet", func() bool { return len(got.get()) == 1 })
		if d := time.Since(start); delay > 0 && d < delay {
			t.Errorf("FlushDelay %v: a lone packet went out after %v, before the delay", delay, d)
		}
	}
}

func TestParallelChannels(t *testing.T) {
	srv := startServer(t, ServerConfig{}, "")
	srv2 := startServer(t, ServerConfig{}, "")
	c, got := dial(t, []string{srv.addr + "," + srv2.addr}, keyA, ClientConfig{Channels: 4})
	if st := c.Stats(); st.Channels != 8 || st.Connected != 8 {
		t.Fatalf("stats %+v", st)
	}
	var clients []netip.AddrPort
	for i := range 200 {
		cl := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), uint16(10000+i))
		clients = append(clients, cl)
		c.Register(cl, target4)
	}
	for _, s := range []*testServer{srv, srv2} {
		waitFor(t, "registrations on both intercepts", func() bool { return s.Stats().RegisteredClients == 200 })
		if n := s.Stats().MirrorsConnected; n != 4 {
			t.Fatalf("%d mirror connections, want 4", n)
		}
	}
	// Clients are spread over the channels, and every intercept reaches
	// every client.
	used := make(map[*mirror]bool)
	for _, cl := range clients {
		used[srv.router.lookup(cl)] = true
		srv.Deliver(tcpPacket(target4, cl, nil, []byte("1")), true)
		srv2.Deliver(tcpPacket(target4, cl, nil, []byte("2")), false)
	}
	if len(used) != 4 {
		t.Fatalf("clients use %d of 4 channels", len(used))
	}
	waitFor(t, "all packets", func() bool { return len(got.get()) == 400 })
	if st := c.Stats(); st.HeaderOnly != 200 {
		t.Fatalf("stats %+v", st)
	}
}

func TestKeepaliveAndIdleTimeout(t *testing.T) {
	srv := startServer(t, ServerConfig{IdleTimeout: 300 * time.Millisecond}, "")
	// A client that pings every 100 ms stays connected through a second of
	// silence on both sides.
	c, _ := dial(t, []string{srv.addr}, keyA, ClientConfig{IdleTimeout: 300 * time.Millisecond})
	time.Sleep(time.Second)
	if st := c.Stats(); st.Reconnects != 0 || st.Connected != 1 || st.Bytes == 0 {
		t.Fatalf("idle but healthy connection was dropped or never answered: %+v", st)
	}
	// A mirror that goes silent is dropped, with its routes.
	stalledMirror(t, srv.addr)
	waitFor(t, "silent mirror", func() bool { return srv.Stats().RegisteredClients == 1 })
	waitFor(t, "idle timeout", func() bool {
		return srv.Stats().RegisteredClients == 0 && srv.Stats().MirrorsConnected == 1
	})
	if !strings.Contains(srv.log.String(), "nothing received for 300ms") {
		t.Fatalf("log does not say why:\n%s", srv.log.String())
	}
}

func TestDialUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	_, err = Dial(ctx, []string{addr}, keyA, ClientConfig{})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connection refused") ||
		!strings.Contains(err.Error(), addr) {
		t.Fatalf("Dial to a closed port: %v", err)
	}
}

func TestRegisterRejectsBadAddresses(t *testing.T) {
	srv := startServer(t, ServerConfig{}, "")
	c, _ := dial(t, []string{srv.addr}, keyA, ClientConfig{})
	for _, tt := range []struct{ client, target netip.AddrPort }{
		{netip.AddrPort{}, target4},
		{netip.MustParseAddrPort("198.18.1.1:0"), target4},
		{client4, netip.MustParseAddrPort("0.0.0.0:80")},
	} {
		if err := c.Register(tt.client, tt.target); err == nil {
			t.Errorf("Register(%v, %v) accepted", tt.client, tt.target)
		}
	}
	// IPv4-mapped addresses are registered as the IPv4 the packets carry.
	if err := c.Register(netip.MustParseAddrPort("[::ffff:198.18.1.7]:40001"), target4); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "registration", func() bool { return srv.router.lookup(client4) != nil })
}

func TestServeShutdown(t *testing.T) {
	srv := startServer(t, ServerConfig{}, "")
	c, _ := dial(t, []string{srv.addr}, keyA, ClientConfig{})
	c.Register(client4, target4)
	waitFor(t, "registration", func() bool { return srv.Stats().RegisteredClients == 1 })
	// A peer stuck in its handshake must not hold up shutdown.
	conn, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srv.stop() // fails the test if Serve does not return
	if st := srv.Stats(); st.MirrorsConnected != 0 || st.RegisteredClients != 0 {
		t.Fatalf("after shutdown: %+v", st)
	}
	if srv.Deliver(tcpPacket(target4, client4, nil, nil), true) {
		t.Fatal("delivered after shutdown")
	}
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Client.Close hangs while reconnecting")
	}
}

// TestGoroutinesEnd checks that Serve and Close leave nothing running:
// every goroutine is owned and waited for.
func TestGoroutinesEnd(t *testing.T) {
	before := runtime.NumGoroutine()
	srv := startServer(t, ServerConfig{}, "")
	c, got := dial(t, []string{srv.addr}, keyA, ClientConfig{Channels: 3})
	c.Register(client4, target4)
	waitFor(t, "registration", func() bool { return srv.Stats().RegisteredClients == 1 })
	srv.Deliver(tcpPacket(target4, client4, nil, []byte("x")), true)
	waitFor(t, "packet", func() bool { return len(got.get()) == 1 })
	garbage, err := net.Dial("tcp", srv.addr) // a peer stuck in its handshake
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	if n := runtime.NumGoroutine(); n < before+3+3+1 {
		t.Fatalf("only %d goroutines while serving (%d before)", n, before)
	}
	c.Close() // Close waits: its goroutines are gone when it returns
	srv.stop()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // only the test's own helpers may still be unwinding
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines left running (%d before):\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// BenchmarkDeliver measures Deliver through a real loopback channel to a
// Client, header-only and full.
func BenchmarkDeliver(b *testing.B) {
	for _, full := range []bool{false, true} {
		name := "header-only"
		if full {
			name = "full-1400"
		}
		b.Run(name, func(b *testing.B) {
			srv := startServerB(b)
			var received atomic.Uint64
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := Dial(ctx, []string{srv.addr}, keyA, ClientConfig{OnPackets: func(pkts [][]byte) { received.Add(uint64(len(pkts))) }})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			c.Register(client4, target4)
			for srv.Stats().RegisteredClients == 0 {
				time.Sleep(time.Millisecond)
			}
			pkt := tcpPacket(target4, client4, tsOption, make([]byte, 1400))
			b.SetBytes(int64(len(pkt)))
			b.ResetTimer()
			for b.Loop() {
				srv.Deliver(pkt, full)
			}
			for st := srv.Stats(); received.Load()+st.Dropped < uint64(b.N); st = srv.Stats() {
				time.Sleep(time.Millisecond)
			}
			b.ReportMetric(float64(srv.Stats().Dropped)/float64(b.N)*100, "%dropped")
		})
	}
}

func startServerB(b *testing.B) *testServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv, err := NewServer(ServerConfig{Key: keyA})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return &testServer{Server: srv, addr: ln.Addr().String()}
}

// TestRegisterIsAppliedWhenItReturns: Register returns only once every
// intercept applied it, so a SYN-ACK caught right after the SYN left is
// routed, never let through to the real client. Many registrations race
// the check, on two intercepts with parallel channels.
func TestRegisterIsAppliedWhenItReturns(t *testing.T) {
	a := startServer(t, ServerConfig{}, "")
	b := startServer(t, ServerConfig{}, "")
	c, _ := dial(t, []string{a.addr, b.addr}, keyA, ClientConfig{Channels: 3})
	for i := range 500 {
		client := netip.AddrPortFrom(client4.Addr(), uint16(10000+i))
		if err := c.Register(client, target4); err != nil {
			t.Fatal(err)
		}
		pkt := tcpPacket(target4, client, nil, []byte("x"))
		if !a.Deliver(pkt, true) || !b.Deliver(pkt, true) {
			t.Fatalf("registration %d was not applied on both intercepts when Register returned", i)
		}
	}
}

// TestRegisterFailsWithoutIntercept: a registration that cannot be
// confirmed is an error, so the caller does not start the session.
func TestRegisterFailsWithoutIntercept(t *testing.T) {
	a := startServer(t, ServerConfig{}, "")
	c, _ := dial(t, []string{a.addr}, keyA, ClientConfig{HandshakeTimeout: time.Second})
	a.stop()
	waitFor(t, "the channel to drop", func() bool { return c.Stats().Connected == 0 })
	if err := c.Register(client4, target4); err == nil {
		t.Fatal("Register succeeded with no intercept connected")
	}
}

// TestOnPacketsBatchesARead: the frames one read brings in (here three
// Responses frames and a pong between them, written at once) reach
// OnPackets as one call, in order; header-only packets rebuilt.
func TestOnPacketsBatchesARead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p1 := tcpPacket(target4, client4, tsOption, []byte("one"))
	p2 := tcpPacket(target4, client4, nil, bytes.Repeat([]byte{'2'}, 700))
	p3 := tcpPacket(target6, client6, nil, []byte("three"))
	p4 := tcpPacket(target4, client4, nil, []byte("four"))
	var burst []byte
	burst = append(burst, responsesFrame(relayed{Data: p1, OrigLen: len(p1), Full: true})...)
	burst = append(burst, responsesFrame(relayed{Data: p2[:40], OrigLen: len(p2)}, relayed{Data: p3, OrigLen: len(p3), Full: true})...)
	burst = append(burst, frame(typePong, make([]byte, pingLen))...)
	burst = append(burst, responsesFrame(relayed{Data: p4, OrigLen: len(p4), Full: true})...)
	served := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		if _, err := serverHandshake(conn, keyA, rand.Reader); err != nil {
			served <- err
			return
		}
		go io.Copy(io.Discard, conn) // registrations and pings
		_, err = conn.Write(burst)
		served <- err
		<-done // keep the connection while the client reads
	}()
	_, got := dial(t, []string{ln.Addr().String()}, keyA, ClientConfig{})
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "four packets", func() bool { return len(got.get()) == 4 })
	zeroed := bytes.Clone(p2)
	clear(zeroed[40:])
	for i, want := range [][]byte{p1, zeroed, p3, p4} {
		if !bytes.Equal(got.get()[i], want) {
			t.Errorf("packet %d:\n%x\nwant\n%x", i, got.get()[i], want)
		}
	}
	got.mu.Lock()
	defer got.mu.Unlock()
	if len(got.batches) != 1 || got.batches[0] != 4 {
		t.Fatalf("batches %v, want one of 4", got.batches)
	}
}

// TestPacketBatchBound: a batch never holds more than batchArena bytes;
// beyond it the packets go out in further calls, none lost or reordered.
func TestPacketBatchBound(t *testing.T) {
	var packets, headerOnly atomic.Uint64
	var sizes []int
	var order []byte
	b := packetBatch{
		deliver: func(pkts [][]byte) {
			total := 0
			for _, p := range pkts {
				total += len(p)
				order = append(order, p[len(p)-1])
			}
			if total > batchArena {
				t.Errorf("a batch of %d bytes", total)
			}
			sizes = append(sizes, len(pkts))
		},
		packets: &packets, headerOnly: &headerOnly,
	}
	hdr := tcpPacket(target4, client4, nil, nil)
	for i := range 20 {
		full := tcpPacket(target4, client4, nil, []byte{byte(i)})
		b.add(relayed{Data: hdr, OrigLen: 65535})
		b.add(relayed{Data: full, OrigLen: len(full), Full: true})
	}
	b.flush()
	if packets.Load() != 40 || headerOnly.Load() != 20 || len(sizes) < 2 {
		t.Fatalf("%d packets (%d header-only) in batches %v", packets.Load(), headerOnly.Load(), sizes)
	}
	for i := range 20 {
		if order[2*i] != 0 || order[2*i+1] != byte(i) {
			t.Fatalf("packets out of order: %v", order)
		}
	}
}
