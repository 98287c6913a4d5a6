package wiretest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/stackcopy/stackcopy/wire"
)

// Target is an in-memory wire.Device whose far end is a second, ordinary
// gVisor stack playing the target host: what the stack under test writes
// is cut and checksummed the way a raw or AF_PACKET device would do it
// (wire.Splitter), every checksum is verified, and the segments reach the
// target stack; the target's answers are read back with Read, as from a
// TUN. Tests then see real TCP on both ends, without root, TUN or
// namespaces.
type Target struct {
	s     *gstack.Stack
	ch    *channel.Endpoint
	mtu   int
	split *wire.Splitter

	// Drop, while set, makes the target lose everything written to it.
	Drop atomic.Bool

	// Lose, if set before the first Write, is asked about every segment
	// after cutting; true loses it. Tests use it for exact loss patterns.
	Lose func(seg []byte) bool

	written, supers, segments, bad, lost atomic.Int64

	ctx       context.Context // ends with Close: unblocks Read
	cancel    context.CancelFunc
	closeOnce sync.Once
}

var (
	_ wire.Device = (*Target)(nil)
	_ wire.Reader = (*Target)(nil)
)

// TargetStats counts what reached a Target.
type TargetStats struct {
	Packets  int64 // packets written (a super-packet counts once)
	Supers   int64 // of those, GSO super-packets
	Segments int64 // segments after cutting
	Bad      int64 // segments over the MTU or with a wrong checksum
	Lost     int64 // segments Lose dropped
}

// NewTarget builds a target stack owning addrs, behind a link of the given
// MTU. Its NIC does not offload checksums: it verifies every segment's.
func NewTarget(mtu int, addrs ...netip.Addr) (*Target, error) {
	t := &Target{ch: channel.New(4096, uint32(mtu), ""), mtu: mtu, split: wire.NewSplitter(nil)}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.s = gstack.New(gstack.Options{
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol},
	})
	if err := t.s.CreateNIC(1, t.ch); err != nil {
		t.s.Destroy()
		return nil, fmt.Errorf("wiretest: target NIC: %s", err)
	}
	for _, a := range addrs {
		if !a.Is4() {
			t.s.Destroy()
			return nil, fmt.Errorf("wiretest: target address %v: IPv4 only", a)
		}
		pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddrFrom4(a.As4()).WithPrefix()}
		if err := t.s.AddProtocolAddress(1, pa, gstack.AddressProperties{}); err != nil {
			t.s.Destroy()
			return nil, fmt.Errorf("wiretest: target address %v: %s", a, err)
		}
	}
	t.s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	return t, nil
}

// Read implements wire.Reader: the target's answers, as a TUN would hand
// them over, until Close.
func (t *Target) Read(bufs, pkts [][]byte) (int, error) {
	n := 0
	for n < min(len(bufs), len(pkts)) {
		var pkt *gstack.PacketBuffer
		if n == 0 {
			pkt = t.ch.ReadContext(t.ctx)
		} else {
			pkt = t.ch.Read()
		}
		if pkt == nil {
			break
		}
		m := 0
		for _, s := range pkt.AsSlices() {
			m += copy(bufs[n][m:], s)
		}
		pkt.DecRef()
		pkts[n] = bufs[n][:m]
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("wiretest: read: %w", os.ErrClosed)
	}
	return n, nil
}

// Listen accepts TCP connections on the target at ap.
func (t *Target) Listen(ap netip.AddrPort) (net.Listener, error) {
	l, err := gonet.ListenTCP(t.s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}, ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("wiretest: listen %v: %w", ap, err)
	}
	return l, nil
}

// BatchSize implements wire.Device.
func (t *Target) BatchSize() int { return 64 }

// Write implements wire.Device.
func (t *Target) Write(pkts []wire.Packet) (int, error) {
	for i, p := range pkts {
		t.written.Add(1)
		if p.GSO.Type != wire.GSONone {
			t.supers.Add(1)
		}
		if t.Drop.Load() {
			continue
		}
		segs, err := t.split.Split(p.Bufs, p.GSO)
		if err != nil {
			return i, fmt.Errorf("wiretest: %w", err)
		}
		for _, s := range segs {
			if t.Lose != nil && t.Lose(s) {
				t.lost.Add(1)
				continue
			}
			if len(s) > t.mtu || !header.IPv4(s).IsChecksumValid() || !TCPChecksumValid(s) {
				t.bad.Add(1)
			}
			t.segments.Add(1)
			t.ch.InjectInbound(header.IPv4ProtocolNumber, gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(s)}))
		}
	}
	return len(pkts), nil
}

// Stack is the target's gVisor stack, for tests that need what a
// listener cannot do (a target that resets, say).
func (t *Target) Stack() *gstack.Stack { return t.s }

// Stats returns the target's counters.
func (t *Target) Stats() TargetStats {
	return TargetStats{Packets: t.written.Load(), Supers: t.supers.Load(), Segments: t.segments.Load(), Bad: t.bad.Load(), Lost: t.lost.Load()}
}

// ChecksumErrors is the target stack's own count of TCP segments it
// dropped for a bad checksum.
func (t *Target) ChecksumErrors() uint64 { return t.s.Stats().TCP.ChecksumErrors.Value() }

// Close implements wire.Device: it ends Read and tears the target stack
// down. It may be called more than once.
func (t *Target) Close() error {
	t.closeOnce.Do(func() {
		t.cancel()
		t.s.Close()
		t.s.Wait()
	})
	return nil
}
