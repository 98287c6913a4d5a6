package netstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/wire/wiretest"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

var targetAddr = netip.MustParseAddr("198.18.2.2")

// newPair builds the stack under test, segmenting as gso says, on an
// in-memory device whose far end is a second, ordinary gVisor stack
// playing the target at targetAddr.
func newPair(t *testing.T, gso GSOMode) (*Stack, *wiretest.Target) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.GSO = gso
	return newPairConfig(t, cfg, nil)
}

// newPairConfig is newPair with the stack's whole configuration, and
// observe (when not nil) shown every segment the stack sends, as the
// target receives it.
func newPairConfig(t testing.TB, cfg Config, observe func(seg []byte)) (*Stack, *wiretest.Target) {
	t.Helper()
	tg, err := wiretest.NewTarget(1500, targetAddr)
	if err != nil {
		t.Fatal(err)
	}
	if observe != nil {
		tg.Lose = func(seg []byte) bool { observe(seg); return false }
	}
	st, err := New(cfg, tg, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The target's answers come back as from a TUN; Close ends the reader.
	read := make(chan error, 1)
	go func() { read <- st.DeliverFrom(tg) }()
	t.Cleanup(func() {
		st.Close() // closes the target too
		<-read
	})
	return st, tg
}

func listen(t testing.TB, tg *wiretest.Target, port uint16) net.Listener {
	t.Helper()
	l, err := tg.Listen(netip.AddrPortFrom(targetAddr, port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// dialTarget dials port 80 of the target from src (within 10 s) and closes
// the connection at the test's end.
func dialTarget(t testing.TB, st *Stack, src string) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := st.DialFrom(ctx, netip.MustParseAddrPort(src), netip.AddrPortFrom(targetAddr, 80))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readOne accepts one connection on l and reads n bytes from it (to its
// end when n is negative); the channel gets how many it read, -1 if the
// accept failed.
func readOne(l net.Listener, n int64) <-chan int64 {
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		var r int64
		if n < 0 {
			r, _ = io.Copy(io.Discard, c)
		} else {
			r, _ = io.CopyN(io.Discard, c, n)
		}
		got <- r
	}()
	return got
}

// awaitRead fails the test unless got reports want bytes within 20 s.
func awaitRead(t testing.TB, got <-chan int64, want int64) {
	t.Helper()
	select {
	case n := <-got:
		if n != want {
			t.Fatalf("target read %d bytes, want %d", n, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the target did not get the bytes within 20 s")
	}
}

// discardAll accepts every connection on l and reads it to the end,
// until l closes (at the test's cleanup).
func discardAll(l net.Listener) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
}

func TestDialFromForgedAddressCarriesBytes(t *testing.T) {
	st, p := newPair(t, GSOOff)
	l := listen(t, p, 80)
	type got struct {
		remote string
		sum    [32]byte
		n      int64
	}
	res := make(chan got, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			res <- got{}
			return
		}
		// The peer's address before Close: a closed gonet connection may
		// have none (RemoteAddr returns nil), and that once panicked here.
		var g got
		if a := c.RemoteAddr(); a != nil {
			g.remote = a.String()
		}
		h := sha256.New()
		n, _ := io.Copy(h, c)
		c.Write([]byte("bye"))
		c.Close()
		copy(g.sum[:], h.Sum(nil))
		g.n = n
		res <- g
	}()

	src := netip.MustParseAddrPort("198.18.1.77:40123")
	c := dialTarget(t, st, src.String())
	payload := bytes.Repeat([]byte("stackcopy!"), 300_000) // 3 MB: several windows
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil { // replayed client FIN
		t.Fatal(err)
	}
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	c.Close()
	g := <-res
	if g.remote != src.String() {
		t.Errorf("target saw client %s, want the forged %s", g.remote, src)
	}
	if g.n != int64(len(payload)) || g.sum != sha256.Sum256(payload) {
		t.Errorf("target got %d bytes, want %d identical bytes", g.n, len(payload))
	}
	if string(reply) != "bye" {
		t.Errorf("reply %q, want %q", reply, "bye")
	}
	if c.Local() != src {
		t.Errorf("Local() = %v, want %v", c.Local(), src)
	}
}

func TestAbortSendsReset(t *testing.T) {
	st, p := newPair(t, GSOOff)
	l := listen(t, p, 80)
	errc := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			errc <- err
			return
		}
		_, err = io.Copy(io.Discard, c)
		errc <- err
	}()
	c, err := st.DialFrom(context.Background(), netip.MustParseAddrPort("198.18.1.5:1000"), netip.AddrPortFrom(targetAddr, 80))
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("partial request"))
	c.Abort()
	select {
	case err := <-errc:
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte("reset")) {
			t.Fatalf("target read error %v, want a reset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("target never saw the reset")
	}
}

func TestTargetResetIsErrReset(t *testing.T) {
	st, p := newPair(t, GSOOff)
	var wq waiter.Queue
	lep, terr := p.Stack().NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		t.Fatal(terr)
	}
	defer lep.Close()
	if terr := lep.Bind(tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(targetAddr.AsSlice()), Port: 80}); terr != nil {
		t.Fatal(terr)
	}
	if terr := lep.Listen(8); terr != nil {
		t.Fatal(terr)
	}
	entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	dialed := make(chan struct{})
	go func() {
		for {
			n, _, terr := lep.Accept(nil)
			if terr == nil {
				<-dialed
				n.Abort() // the target resets the established session
				return
			}
			select {
			case <-ready:
			case <-time.After(10 * time.Second):
				return
			}
		}
	}()
	c, err := st.DialFrom(context.Background(), netip.MustParseAddrPort("198.18.1.5:1001"), netip.AddrPortFrom(targetAddr, 80))
	close(dialed)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, c)
	if !errors.Is(err, ErrReset) {
		t.Fatalf("read after target RST: %v, want ErrReset", err)
	}
}

func TestDialRefusedAndTimeout(t *testing.T) {
	st, p := newPair(t, GSOOff)
	_, err := st.DialFrom(context.Background(), netip.MustParseAddrPort("198.18.1.5:1002"), netip.AddrPortFrom(targetAddr, 81))
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("dial closed port: %v, want ErrRefused", err)
	}
	p.Drop.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = st.DialFrom(ctx, netip.MustParseAddrPort("198.18.1.5:1003"), netip.AddrPortFrom(targetAddr, 80))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("dial black hole: %v, want ErrTimeout", err)
	}
}

func TestUnknownFlowGetsNoReset(t *testing.T) {
	st, p := newPair(t, GSOOff)
	before := p.Stats().Packets
	// A late answer from the target to a session the stack no longer has.
	seg := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(seg)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(seg)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFromSlice(targetAddr.AsSlice()), DstAddr: tcpip.AddrFrom4([4]byte{198, 18, 1, 9})})
	ip.SetChecksum(^ip.CalculateChecksum())
	header.TCP(seg[header.IPv4MinimumSize:]).Encode(&header.TCPFields{SrcPort: 80, DstPort: 5555, SeqNum: 1, AckNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck | header.TCPFlagPsh, WindowSize: 1000})
	if st.Inject([][]byte{seg}) != 1 {
		t.Fatal("Inject refused an IPv4 packet")
	}
	time.Sleep(100 * time.Millisecond)
	if d := p.Stats().Packets - before; d != 0 {
		t.Fatalf("stack sent %d packets in answer to an unknown flow, want none", d)
	}
	if st.Inject([][]byte{{0x10, 0, 0}}) != 0 || st.Stats().Malformed != 1 {
		t.Fatal("a non-IP packet was not refused and counted")
	}
}

func TestSameForgedTupleTwiceIsPortInUse(t *testing.T) {
	st, p := newPair(t, GSOOff)
	discardAll(listen(t, p, 80))
	src := netip.MustParseAddrPort("198.18.1.5:1004")
	c, err := st.DialFrom(context.Background(), src, netip.AddrPortFrom(targetAddr, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = st.DialFrom(context.Background(), src, netip.AddrPortFrom(targetAddr, 80))
	if !errors.Is(err, ErrPortInUse) {
		t.Fatalf("second dial from a live 4-tuple: %v, want ErrPortInUse", err)
	}
	c2, err := st.DialFrom(context.Background(), netip.AddrPortFrom(src.Addr(), 0), netip.AddrPortFrom(targetAddr, 80))
	if err != nil {
		t.Fatalf("dial with a stack-chosen port: %v", err)
	}
	defer c2.Close()
	if c2.Local().Port() == 0 || c2.Local() == src {
		t.Fatalf("stack-chosen local %v", c2.Local())
	}
}

var _ net.Conn = (*Conn)(nil)

func TestBeforeConnectSeesChosenPort(t *testing.T) {
	st, p := newPair(t, GSOOff)
	l := listen(t, p, 80)
	// The target keeps the connection open and says when it has it: the
	// handshake's last ACK has arrived, and the first connection sends
	// nothing more while the second dial is watched.
	accepted := make(chan struct{})
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		close(accepted)
		io.Copy(io.Discard, c)
		c.Close()
	}()
	var seen netip.AddrPort
	c, err := st.DialFromWith(context.Background(), netip.MustParseAddrPort("198.18.1.5:0"), netip.AddrPortFrom(targetAddr, 80),
		DialOptions{BeforeConnect: func(local netip.AddrPort) error { seen = local; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if seen.Port() == 0 || seen != c.Local() {
		t.Fatalf("BeforeConnect saw %v, connection is from %v", seen, c.Local())
	}
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the target never accepted the first connection")
	}
	before := p.Stats().Packets
	_, err = st.DialFromWith(context.Background(), netip.MustParseAddrPort("198.18.1.5:0"), netip.AddrPortFrom(targetAddr, 80),
		DialOptions{BeforeConnect: func(netip.AddrPort) error { return errors.New("no intercept") }})
	if err == nil || !strings.Contains(err.Error(), "no intercept") {
		t.Fatalf("dial with a failing hook: %v", err)
	}
	if d := p.Stats().Packets - before; d != 0 {
		t.Fatalf("%d packets left although the hook refused the dial", d)
	}
}

// TestOnReadableDrainsOnDemand: a reader woken by OnReadable, reading with
// TryDiscardTo until it would block, gets every byte the target sends in
// bursts with pauses between, then the FIN (io.EOF), with no goroutine
// waiting in between; Readable says when there is something to read.
func TestOnReadableDrainsOnDemand(t *testing.T) {
	st, p := newPair(t, GSOOff)
	l := listen(t, p, 80)
	const bursts, size = 5, 100_000
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for range bursts {
			c.Write(bytes.Repeat([]byte("a"), size))
			time.Sleep(20 * time.Millisecond)
		}
	}()
	c := dialTarget(t, st, "198.18.1.78:40124")
	kicks := make(chan struct{}, 1)
	stop := c.OnReadable(func() {
		select {
		case kicks <- struct{}{}:
		default:
		}
	})
	defer stop()
	var total, wakeups int
	var sink bytes.Buffer
	deadline := time.After(10 * time.Second)
	for {
		for {
			n, wouldBlock, err := c.TryDiscardTo(&sink)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("after %d bytes: %v", total, err)
				}
				if total != bursts*size || sink.Len() != total {
					t.Fatalf("EOF after %d bytes (%d shown to the writer), want %d", total, sink.Len(), bursts*size)
				}
				if wakeups < 2 {
					t.Errorf("%d wake-ups for %d bursts: the reader was not woken on demand", wakeups, bursts)
				}
				if !c.Readable() {
					t.Error("Readable is false at EOF")
				}
				return
			}
			if wouldBlock {
				break
			}
			total += n
		}
		if c.Readable() {
			continue // came after the last read: no wake-up needed
		}
		select {
		case <-kicks:
			wakeups++
		case <-deadline:
			t.Fatalf("no wake-up after %d bytes", total)
		}
	}
}

// TestCloseWriteReportsRefusal: after the target closed, bytes the client
// still sends reach a socket nobody reads and the target resets the
// connection; the client's FIN waits for that reset (awaitAcked returns
// once it happened, long before its bound) and reports it. Bytes the
// target reads are acknowledged and awaitAcked returns at once.
func TestCloseWriteReportsRefusal(t *testing.T) {
	st, p := newPair(t, GSOOff)
	l := listen(t, p, 80)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		b := make([]byte, 100)
		io.ReadFull(c, b)
		c.Write([]byte("bye"))
		c.Close() // refuses the rest, as a server after a fatal error
	}()
	c := dialTarget(t, st, "198.18.1.5:1000")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.awaitAcked(5 * time.Second)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("awaitAcked took %v for bytes the target read", d)
	}
	if b, err := io.ReadAll(c); string(b) != "bye" || err != nil {
		t.Fatalf("answer %q, %v; want bye and the target's FIN", b, err)
	}
	if _, err := c.Write([]byte("after the target closed")); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	err := c.CloseWrite()
	if d := time.Since(start); d >= refusalWait {
		t.Errorf("the FIN waited %v, its whole bound, for a refusal", d)
	}
	if st := tcp.EndpointState(c.ep.State()); st != tcp.StateError && st != tcp.StateClose {
		t.Errorf("after the FIN the connection is %v; want it reset by the target", st)
	}
	if err == nil {
		t.Errorf("FIN after the refusal succeeded; want the reset reported")
	}
}
