package intercept

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/stackcopy/stackcopy/internal/syncbuf"
	"github.com/stackcopy/stackcopy/relay"
)

var (
	serverAP = netip.MustParseAddrPort("198.18.2.2:80")
	forgedAP = netip.MustParseAddrPort("198.18.1.50:40000")
	realAP   = netip.MustParseAddrPort("198.18.1.51:40001")
	passAP   = netip.MustParseAddrPort("198.18.1.52:40002")
)

// tcp4 builds a real IPv4 TCP packet with gopacket.
func tcp4(t testing.TB, src, dst netip.AddrPort, syn, ack bool, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
		SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
		Seq: 1000, Ack: 2000, SYN: syn, ACK: ack, Window: 65535}
	if syn {
		tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}}}
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, tcp, gopacket.Payload(payload))
}

// tcp6 builds a real IPv6 TCP packet.
func tcp6(t testing.TB, src, dst netip.AddrPort, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
		SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: 1, ACK: true, Window: 100}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, tcp, gopacket.Payload(payload))
}

func udp4(t testing.TB, src, dst netip.AddrPort) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, udp, gopacket.Payload("dns?"))
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// withIPOptions returns an IPv4 packet with 4 bytes of options (NOPs and
// an end marker) inserted: IHL 6.
func withIPOptions(pkt []byte) []byte {
	out := make([]byte, 0, len(pkt)+4)
	out = append(out, pkt[:20]...)
	out = append(out, 1, 1, 1, 0)
	out = append(out, pkt[20:]...)
	out[0] = 0x46
	total := len(out)
	out[2], out[3] = byte(total>>8), byte(total)
	return out
}

func TestTCPDestination(t *testing.T) {
	synAck := tcp4(t, serverAP, forgedAP, true, true, nil)
	frag := bytes.Clone(synAck)
	frag[6] = 0x20 // MF
	later := bytes.Clone(synAck)
	later[7] = 0x10 // fragment offset
	v6dst := netip.MustParseAddrPort("[2001:db8::50]:40000")
	for _, tc := range []struct {
		name string
		pkt  []byte
		want netip.AddrPort
		ok   bool
	}{
		{"ipv4 syn-ack", synAck, forgedAP, true},
		{"ipv4 data", tcp4(t, serverAP, forgedAP, false, true, []byte("HTTP/1.1 200 OK\r\n")), forgedAP, true},
		{"ipv4 options", withIPOptions(synAck), forgedAP, true},
		{"ipv4 headers only", synAck[:24], forgedAP, true},
		{"ipv6", tcp6(t, netip.MustParseAddrPort("[2001:db8::2]:80"), v6dst, []byte("x")), v6dst, true},
		{"udp", udp4(t, serverAP, forgedAP), netip.AddrPort{}, false},
		{"first fragment", frag, netip.AddrPort{}, false},
		{"later fragment", later, netip.AddrPort{}, false},
		{"cut in the ports", synAck[:22], netip.AddrPort{}, false},
		{"bad ihl", append([]byte{0x44}, synAck[1:]...), netip.AddrPort{}, false},
		{"version 5", append([]byte{0x55}, synAck[1:]...), netip.AddrPort{}, false},
		{"empty", nil, netip.AddrPort{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, got, ok := tcpDestination(tc.pkt)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("tcpDestination = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func FuzzTCPDestination(f *testing.F) {
	f.Add(tcp4(f, serverAP, forgedAP, true, true, nil))
	f.Add(tcp6(f, netip.MustParseAddrPort("[2001:db8::2]:80"), netip.MustParseAddrPort("[2001:db8::50]:1"), nil))
	f.Add(udp4(f, serverAP, forgedAP))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		h, dst, ok := tcpDestination(pkt)
		if ok && (!dst.IsValid() || dst.Addr().Is4In6() || h.Dst.Port() != dst.Port() || h.Dst.Addr().Unmap() != dst.Addr()) {
			t.Fatalf("invalid destination %v", dst)
		}
	})
}

// fakeDeliver is relay.Server.DeliverParsed for a fixed set of registered
// destinations; it records what it relayed.
type fakeDeliver struct {
	owned   map[netip.AddrPort]bool
	relayed []netip.AddrPort
	full    []bool
}

func (d *fakeDeliver) deliver(pkt []byte, h relay.PacketHeader, full bool) bool {
	_, dst, ok := tcpDestination(pkt)
	if !ok || dst != h.Dst || !d.owned[dst] {
		return false
	}
	d.relayed = append(d.relayed, dst)
	d.full = append(d.full, full)
	return true
}

func TestClassify(t *testing.T) {
	d := &fakeDeliver{owned: map[netip.AddrPort]bool{forgedAP: true, passAP: true}}
	cl := newClassifier(Config{Pass: []netip.Addr{passAP.Addr()}, FullPayload: true, Hold: time.Minute}, d.deliver)
	for _, tc := range []struct {
		name string
		pkt  []byte
		want Class
	}{
		{"registered syn-ack", tcp4(t, serverAP, forgedAP, true, true, nil), Relayed},
		{"registered data", tcp4(t, serverAP, forgedAP, false, true, []byte("answer")), Relayed},
		{"unregistered", tcp4(t, serverAP, realAP, true, true, nil), Unknown},
		{"pass-listed and registered", tcp4(t, serverAP, passAP, true, true, nil), Passed},
		{"pass-listed, another port", tcp4(t, serverAP, netip.AddrPortFrom(passAP.Addr(), 1), false, true, nil), Passed},
		{"udp", udp4(t, serverAP, forgedAP), Other},
		{"garbage", []byte{0x45, 0, 0}, Other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cl.classify(tc.pkt); got != tc.want {
				t.Fatalf("classify = %v, want %v", got, tc.want)
			}
		})
	}
	if len(d.relayed) != 2 || d.relayed[0] != forgedAP || !d.full[0] {
		t.Fatalf("relayed %v (full %v), want %v twice, full", d.relayed, d.full, forgedAP)
	}
	want := map[Class]uint64{Relayed: 2, Passed: 2, Unknown: 1, Other: 2}
	for c := Relayed; c <= Other; c++ {
		if got := cl.counts[c].Load(); got != want[c] {
			t.Errorf("count %v = %d, want %d", c, got, want[c])
		}
	}
	for c, v := range map[Class]Verdict{Relayed: Drop, Held: Drop, Passed: Accept, Unknown: Accept, Other: Accept} {
		if c.Verdict() != v {
			t.Errorf("%v.Verdict() = %v, want %v", c, c.Verdict(), v)
		}
	}
}

// TestClassifyHold: once a mirror stops owning a forged client, its
// answers are still dropped for the hold, refreshed by each of them, and
// accepted after.
func TestClassifyHold(t *testing.T) {
	d := &fakeDeliver{owned: map[netip.AddrPort]bool{forgedAP: true}}
	cl := newClassifier(Config{Hold: 2 * time.Minute}, d.deliver)
	var now time.Duration
	cl.clock = func() time.Duration { return now }
	answer := tcp4(t, serverAP, forgedAP, false, true, []byte("late"))
	step := func(at time.Duration, want Class) {
		t.Helper()
		now = at
		if got := cl.classify(answer); got != want {
			t.Fatalf("at %v: classify = %v, want %v", at, got, want)
		}
	}
	step(0, Relayed)
	delete(d.owned, forgedAP) // the mirror is gone
	step(time.Minute, Held)
	step(2*time.Minute+30*time.Second, Held) // refreshed at 1 min
	step(4*time.Minute+31*time.Second, Unknown)
	if n := cl.heldSize.Load(); n != 0 {
		t.Fatalf("hold table holds %d after expiry, want 0 (swept)", n)
	}
	// A destination never relayed is not held.
	if got := cl.classify(tcp4(t, serverAP, realAP, true, true, nil)); got != Unknown {
		t.Fatalf("never relayed: %v, want unknown", got)
	}

	// Off: no hold.
	d.owned[forgedAP] = true
	off := newClassifier(Config{Hold: -1}, d.deliver)
	if got := off.classify(answer); got != Relayed {
		t.Fatalf("hold off: %v", got)
	}
	delete(d.owned, forgedAP)
	if got := off.classify(answer); got != Unknown {
		t.Fatalf("hold off, mirror gone: %v, want unknown", got)
	}

	// A full table stops remembering, and says so.
	d.owned[forgedAP] = true
	small := newClassifier(Config{Hold: time.Minute}, d.deliver)
	small.maxHeld = 0
	small.classify(answer)
	if small.heldOverflow.Load() != 1 || len(small.held) != 0 {
		t.Fatalf("full table: overflow %d, size %d", small.heldOverflow.Load(), len(small.held))
	}
}

// TestClassifyHoldReleased: a forged client its mirror let go of before
// any answer was relayed (the mirror gave up on the handshake, or went away
// between SYN and SYN-ACK) is held all the same.
func TestClassifyHoldReleased(t *testing.T) {
	d := &fakeDeliver{owned: map[netip.AddrPort]bool{}}
	cl := newClassifier(Config{Hold: 2 * time.Minute}, d.deliver)
	var now time.Duration
	cl.clock = func() time.Duration { return now }
	synAck := tcp4(t, serverAP, forgedAP, true, true, nil)
	cl.release([]netip.AddrPort{forgedAP})
	now = time.Minute
	if got := cl.classify(synAck); got != Held {
		t.Fatalf("answer to a released client: %v, want held", got)
	}
	if got := cl.classify(tcp4(t, serverAP, realAP, true, true, nil)); got != Unknown {
		t.Fatalf("answer to a client never registered: %v, want unknown", got)
	}
	now = 3*time.Minute + time.Second
	if got := cl.classify(synAck); got != Unknown {
		t.Fatalf("after the hold: %v, want unknown", got)
	}
	off := newClassifier(Config{Hold: -1}, d.deliver)
	off.release([]netip.AddrPort{forgedAP})
	if got := off.classify(synAck); got != Unknown {
		t.Fatalf("hold off, released: %v, want unknown", got)
	}
	small := newClassifier(Config{Hold: time.Minute}, d.deliver)
	small.maxHeld = 1
	small.release([]netip.AddrPort{forgedAP, realAP})
	if small.heldOverflow.Load() != 1 {
		t.Fatalf("full table: overflow %d, want 1", small.heldOverflow.Load())
	}
}

// fakeSource is a Source fed by the test; it records verdicts.
type fakeSource struct {
	in     chan []byte
	closed chan struct{}
	once   sync.Once

	mu       sync.Mutex
	nextID   uint32
	verdicts map[uint32]Verdict
	decided  chan uint32
}

func newFakeSource() *fakeSource {
	return &fakeSource{in: make(chan []byte), closed: make(chan struct{}), verdicts: map[uint32]Verdict{}, decided: make(chan uint32, 64)}
}

func (f *fakeSource) Next(ctx context.Context) (Packet, error) {
	select {
	case b := <-f.in:
		f.mu.Lock()
		f.nextID++
		id := f.nextID
		f.mu.Unlock()
		return Packet{Data: b, v: f, id: id}, nil
	case <-ctx.Done():
		return Packet{}, ctx.Err()
	case <-f.closed:
		return Packet{}, net.ErrClosed
	}
}

func (f *fakeSource) verdict(id uint32, v Verdict) error {
	f.mu.Lock()
	if _, dup := f.verdicts[id]; dup {
		f.mu.Unlock()
		return errors.New("second verdict")
	}
	f.verdicts[id] = v
	f.mu.Unlock()
	f.decided <- id
	return nil
}

func (f *fakeSource) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeSource) Stats() SourceStats { return SourceStats{} }

// feed hands pkt to the loop and returns its verdict.
func (f *fakeSource) feed(t *testing.T, pkt []byte) Verdict {
	t.Helper()
	select {
	case f.in <- pkt:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop does not read packets")
	}
	select {
	case id := <-f.decided:
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.verdicts[id]
	case <-time.After(5 * time.Second):
		t.Fatal("no verdict")
	}
	return 0
}

func testKey(t testing.TB) relay.Key {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.key")
	if err := os.WriteFile(path, []byte("unit-test-relay-key-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := relay.LoadKey(path, "")
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestServeRelaysAndDecides runs the packet loop against a real relay
// server and client over loopback: registered answers reach the mirror and
// are dropped, the rest pass, a departed mirror's answers are held, and
// cancelling shuts everything down.
func TestServeRelaysAndDecides(t *testing.T) {
	key := testKey(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	src := newFakeSource()
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := Config{Mode: ModeNFQueue, Pass: []netip.Addr{passAP.Addr()}, StatsInterval: 20 * time.Millisecond}
	if err := cfg.fill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, key, ln, src, log) }()

	got := make(chan []byte, 16)
	client, err := relay.Dial(ctx, []string{ln.Addr().String()}, key, relay.ClientConfig{
		OnPackets: func(pkts [][]byte) {
			for _, p := range pkts {
				got <- bytes.Clone(p)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, c := range []netip.AddrPort{forgedAP, passAP} {
		// Register can refuse while the channel is still coming up just
		// after Dial: retry, bounded.
		for i := 0; ; i++ {
			err := client.Register(c, serverAP)
			if err == nil {
				break
			}
			if i == 200 {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Registration is asynchronous: knock until the first SYN-ACK is
	// relayed (bounded).
	synAck := tcp4(t, serverAP, forgedAP, true, true, nil)
	for i := 0; ; i++ {
		if src.feed(t, synAck) == Drop {
			break
		}
		if i == 200 {
			t.Fatal("the registration never took effect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	expect := func(want []byte) {
		t.Helper()
		select {
		case p := <-got:
			if !bytes.Equal(p, want) {
				t.Fatalf("mirror got\n%x\nwant\n%x", p, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("nothing relayed")
		}
	}
	expect(synAck)

	// Header-only relay: the mirror rebuilds the payload as zeros.
	data := tcp4(t, serverAP, forgedAP, false, true, []byte("HTTP/1.1 200 OK\r\n\r\n"))
	if v := src.feed(t, data); v != Drop {
		t.Fatalf("registered answer: %v, want drop", v)
	}
	zeroed := bytes.Clone(data)
	clear(zeroed[40:])
	expect(zeroed)

	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"pass-listed", tcp4(t, serverAP, passAP, true, true, nil)},
		{"unknown", tcp4(t, serverAP, realAP, true, true, nil)},
		{"udp", udp4(t, serverAP, forgedAP)},
	} {
		if v := src.feed(t, tc.pkt); v != Accept {
			t.Fatalf("%s: %v, want accept", tc.name, v)
		}
	}

	// The mirror leaves: a late answer is held, not leaked.
	client.Close()
	for i := 0; !strings.Contains(logs.String(), "mirror disconnected"); i++ {
		if i == 500 {
			t.Fatal("the server never noticed the disconnect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	late := tcp4(t, serverAP, forgedAP, false, true, []byte("late"))
	if v := src.feed(t, late); v != Drop {
		t.Fatalf("late answer after the mirror left: %v, want drop", v)
	}
	if v := src.feed(t, tcp4(t, serverAP, netip.AddrPortFrom(forgedAP.Addr(), 40009), true, true, nil)); v != Accept {
		t.Fatalf("a port of the forged address that was never relayed: %v, want accept", v)
	}

	for i := 0; !strings.Contains(logs.String(), `msg="intercept stats"`); i++ {
		if i == 500 {
			t.Fatal("no periodic stats line")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
	select {
	case <-src.closed:
	default:
		t.Fatal("the source was not closed")
	}
	out := logs.String()
	for _, want := range []string{`msg="intercept ready"`, `msg="intercept stats"`, `msg="intercept stopped"`, "held=1 ", "passed=1 ", "other=1 "} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	// Ask the listener itself: a dial to its port could reach another
	// test process that took the freed port in the meantime.
	tl := ln.(*net.TCPListener)
	_ = tl.SetDeadline(time.Now().Add(time.Second)) // fails once closed; else bounds the Accept
	if _, err := tl.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the listener is still open after shutdown: Accept: %v", err)
	}
}

func TestConfigFill(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		mode Mode
		err  string
	}{
		{Config{}, ModeNFQueue, ""},
		{Config{Interface: "eth0", Filter: "tcp"}, ModeCapture, ""},
		{Config{Interface: "eth0"}, "", "filter"},
		{Config{Mode: ModeCapture, Filter: "tcp"}, "", "interface"},
		{Config{Mode: ModeNFQueue, Interface: "eth0"}, "", "nfqueue"},
		{Config{Mode: "pcap"}, "", "unknown mode"},
	} {
		err := tc.cfg.fill()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%+v: %v, want error with %q", tc.cfg, err, tc.err)
			}
			continue
		}
		if err != nil || tc.cfg.Mode != tc.mode || tc.cfg.Listen != ":36524" || tc.cfg.QueueLen != DefaultQueueLen || tc.cfg.Hold != DefaultHold {
			t.Errorf("%+v: %v", tc.cfg, err)
		}
	}
}

func TestCheckForwarding(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if err := checkForwarding("no-such-interface-xyz", log); err != nil {
		t.Fatalf("missing interface: %v (OpenCapture reports it)", err)
	}
	if err := checkForwarding("lo", log); err != nil && !strings.Contains(err.Error(), "sysctl -w") {
		t.Fatalf("lo: %v", err)
	}
}

// TestClassifyOwnedButNotRelayable: an answer to a registered forged
// client that the relay refuses (it cannot parse it) is dropped, never let
// through to the real client.
func TestClassifyOwnedButNotRelayable(t *testing.T) {
	refuse := func([]byte, relay.PacketHeader, bool) bool { return false }
	cl := newClassifier(Config{Hold: -1}, refuse)
	cl.owns = func(dst netip.AddrPort) bool { return dst == forgedAP }
	if got := cl.classify(tcp4(t, serverAP, forgedAP, false, true, []byte("x"))); got != Held || got.Verdict() != Drop {
		t.Fatalf("owned but unrelayable answer classified %v (verdict %v), want Held/Drop", got, got.Verdict())
	}
	if got := cl.classify(tcp4(t, serverAP, realAP, false, true, []byte("x"))); got != Unknown {
		t.Fatalf("unowned answer classified %v, want Unknown", got)
	}
}

// TestHoldYieldsToRegistration: a new stackcopy run that registers an
// address an earlier run left in the hold table gets its answers, not a
// hold, and its mirror is told how many answers were being held; when it
// leaves in turn, the address is held again. Changes apply in the order
// the relay made them.
func TestHoldYieldsToRegistration(t *testing.T) {
	d := &fakeDeliver{owned: map[netip.AddrPort]bool{forgedAP: true}}
	cl := newClassifier(Config{Hold: 2 * time.Minute}, d.deliver)
	var now time.Duration
	cl.clock = func() time.Duration { return now }
	type notice struct {
		dst netip.AddrPort
		n   uint64
	}
	var notices []notice
	cl.notifyHeld = func(dst netip.AddrPort, n uint64) bool {
		notices = append(notices, notice{dst, n})
		return true
	}
	answer := tcp4(t, serverAP, forgedAP, false, true, []byte("late"))
	step := func(want Class) {
		t.Helper()
		now += time.Second
		if got := cl.classify(answer); got != want {
			t.Fatalf("at %v: classify = %v, want %v", now, got, want)
		}
	}
	step(Relayed)
	// The earlier run dies; the target keeps retransmitting to it.
	delete(d.owned, forgedAP)
	cl.release([]netip.AddrPort{forgedAP})
	step(Held)
	step(Held)
	step(Held)
	if len(notices) != 0 {
		t.Fatalf("notices %v before any registration", notices)
	}
	// A new run registers the same address.
	d.owned[forgedAP] = true
	cl.registered([]netip.AddrPort{forgedAP})
	step(Relayed)
	if len(notices) != 1 || notices[0] != (notice{forgedAP, 3}) {
		t.Fatalf("notices %v, want one for %v with 3 held answers", notices, forgedAP)
	}
	if cl.reclaimed.Load() != 1 || cl.heldNotified.Load() != 1 {
		t.Fatalf("reclaimed %d, notified %d; want 1, 1", cl.reclaimed.Load(), cl.heldNotified.Load())
	}
	step(Relayed)
	// It leaves too: held again, and a registration that finds nothing
	// held (its answers were relayed since) tells nobody anything.
	delete(d.owned, forgedAP)
	cl.release([]netip.AddrPort{forgedAP})
	step(Held)
	d.owned[forgedAP] = true
	cl.registered([]netip.AddrPort{forgedAP})
	cl.release([]netip.AddrPort{realAP}) // someone else's, queued after
	step(Relayed)
	if len(notices) != 2 || notices[1] != (notice{forgedAP, 1}) {
		t.Fatalf("notices %v, want a second for %v with 1 held answer", notices, forgedAP)
	}
	step(Relayed)
	if len(notices) != 2 {
		t.Fatalf("notices %v: a registration whose address held nothing was reported", notices)
	}

	// Registered, then released before the next packet: the release wins.
	delete(d.owned, forgedAP)
	cl.registered([]netip.AddrPort{forgedAP})
	cl.release([]netip.AddrPort{forgedAP})
	step(Held)
	// Released, then registered: the registration wins.
	d.owned[forgedAP] = true
	cl.release([]netip.AddrPort{forgedAP})
	cl.registered([]netip.AddrPort{forgedAP})
	step(Relayed)
	if _, ok := cl.held[forgedAP]; ok && cl.held[forgedAP].held != 0 {
		t.Fatalf("hold entry %+v after the registration", cl.held[forgedAP])
	}
}
