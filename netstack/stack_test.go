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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/wire"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// peer is a second, ordinary gVisor stack playing the target. Our stack's
// wire feeds it; its channel endpoint's output is injected back into ours.
type peer struct {
	s       *gstack.Stack
	ch      *channel.Endpoint
	drop    atomic.Bool // drop everything our stack sends
	written atomic.Int64
}

var targetAddr = netip.MustParseAddr("198.18.2.2")

func (p *peer) WritePacket(bufs [][]byte, gso wire.GSO) error {
	if gso.Type != wire.GSONone {
		return errors.New("peer wire cannot segment")
	}
	p.written.Add(1)
	if p.drop.Load() {
		return nil
	}
	b := bytes.Join(bufs, nil)
	p.ch.InjectInbound(header.IPv4ProtocolNumber, gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: bufferOf(b)}))
	return nil
}

func (p *peer) Close() error { return nil }

func newPair(t *testing.T) (*Stack, *peer) {
	t.Helper()
	p := &peer{ch: channel.New(4096, 1500, "")}
	p.s = gstack.New(gstack.Options{
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol},
	})
	if err := p.s.CreateNIC(1, p.ch); err != nil {
		t.Fatal(err)
	}
	p.s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddrFromSlice(targetAddr.AsSlice()).WithPrefix()}, gstack.AddressProperties{})
	p.s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})

	cfg := DefaultConfig()
	cfg.GSO = GSOOff
	st, err := New(cfg, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			pkt := p.ch.ReadContext(ctx)
			if pkt == nil {
				return
			}
			st.InjectInbound(bytes.Join(pkt.AsSlices(), nil))
			pkt.DecRef()
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		st.Close()
		p.s.Destroy()
	})
	return st, p
}

func (p *peer) listen(t *testing.T, port uint16) *gonet.TCPListener {
	t.Helper()
	l, err := gonet.ListenTCP(p.s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(targetAddr.AsSlice()), Port: port}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestDialFromForgedAddressCarriesBytes(t *testing.T) {
	st, p := newPair(t)
	l := p.listen(t, 80)
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
		h := sha256.New()
		n, _ := io.Copy(h, c)
		c.Write([]byte("bye"))
		c.Close()
		var g got
		copy(g.sum[:], h.Sum(nil))
		g.remote, g.n = c.RemoteAddr().String(), n
		res <- g
	}()

	src := netip.MustParseAddrPort("198.18.1.77:40123")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := st.DialFrom(ctx, src, netip.AddrPortFrom(targetAddr, 80))
	if err != nil {
		t.Fatal(err)
	}
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
	st, p := newPair(t)
	l := p.listen(t, 80)
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
	st, p := newPair(t)
	var wq waiter.Queue
	lep, terr := p.s.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
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
	st, p := newPair(t)
	_, err := st.DialFrom(context.Background(), netip.MustParseAddrPort("198.18.1.5:1002"), netip.AddrPortFrom(targetAddr, 81))
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("dial closed port: %v, want ErrRefused", err)
	}
	p.drop.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = st.DialFrom(ctx, netip.MustParseAddrPort("198.18.1.5:1003"), netip.AddrPortFrom(targetAddr, 80))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("dial black hole: %v, want ErrTimeout", err)
	}
}

func TestUnknownFlowGetsNoReset(t *testing.T) {
	st, p := newPair(t)
	before := p.written.Load()
	// A late answer from the target to a session the stack no longer has.
	seg := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(seg)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(seg)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFromSlice(targetAddr.AsSlice()), DstAddr: tcpip.AddrFrom4([4]byte{198, 18, 1, 9})})
	ip.SetChecksum(^ip.CalculateChecksum())
	header.TCP(seg[header.IPv4MinimumSize:]).Encode(&header.TCPFields{SrcPort: 80, DstPort: 5555, SeqNum: 1, AckNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck | header.TCPFlagPsh, WindowSize: 1000})
	if !st.InjectInbound(seg) {
		t.Fatal("InjectInbound refused an IPv4 packet")
	}
	time.Sleep(100 * time.Millisecond)
	if d := p.written.Load() - before; d != 0 {
		t.Fatalf("stack sent %d packets in answer to an unknown flow, want none", d)
	}
	if st.InjectInbound([]byte{0x10, 0, 0}) || st.Stats().Malformed != 1 {
		t.Fatal("a non-IP packet was not refused and counted")
	}
}

func TestSameForgedTupleTwiceIsPortInUse(t *testing.T) {
	st, p := newPair(t)
	l := p.listen(t, 80)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
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

func bufferOf(b []byte) buffer.Buffer { return buffer.MakeWithData(b) }

func TestBeforeConnectSeesChosenPort(t *testing.T) {
	st, p := newPair(t)
	l := p.listen(t, 80)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
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
	before := p.written.Load()
	_, err = st.DialFromWith(context.Background(), netip.MustParseAddrPort("198.18.1.5:0"), netip.AddrPortFrom(targetAddr, 80),
		DialOptions{BeforeConnect: func(netip.AddrPort) error { return errors.New("no intercept") }})
	if err == nil || !strings.Contains(err.Error(), "no intercept") {
		t.Fatalf("dial with a failing hook: %v", err)
	}
	if d := p.written.Load() - before; d != 0 {
		t.Fatalf("%d packets left although the hook refused the dial", d)
	}
}
