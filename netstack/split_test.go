package netstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/wire"
	"github.com/stackcopy/stackcopy/wire/wiretest"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// splitWire is a Wire with the Raw and AFPacket wires' userspace
// segmentation in front of a second gVisor stack playing the target. That
// stack's NIC does not offload checksums: it verifies every segment's.
type splitWire struct {
	split    *wire.Splitter
	ch       *channel.Endpoint
	mtu      int
	segments atomic.Int64
	supers   atomic.Int64
	bad      atomic.Int64
}

func (w *splitWire) WritePacket(bufs [][]byte, gso wire.GSO) error {
	if gso.Type != wire.GSONone {
		w.supers.Add(1)
	}
	pkts, err := w.split.Split(bufs, gso)
	if err != nil {
		return err
	}
	for _, p := range pkts {
		if len(p) > w.mtu || !header.IPv4(p).IsChecksumValid() || !wiretest.TCPChecksumValid(p) {
			w.bad.Add(1)
		}
		w.segments.Add(1)
		w.ch.InjectInbound(header.IPv4ProtocolNumber, gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(bytes.Clone(p))}))
	}
	return nil
}

func (w *splitWire) Close() error { return nil }

// TestGSOSplitCarriesStackTraffic sends an upload from the forged-client
// stack in each GSO mode through the splitter into a gVisor target that
// checks every checksum.
func TestGSOSplitCarriesStackTraffic(t *testing.T) {
	for _, mode := range []struct {
		name string
		gso  GSOMode
	}{{"off", GSOOff}, {"coalesce", GSOCoalesce}, {"host", GSOHost}} {
		t.Run(mode.name, func(t *testing.T) {
			const mtu = 1500
			w := &splitWire{split: wire.NewSplitter(nil), ch: channel.New(4096, mtu, ""), mtu: mtu}
			target := gstack.New(gstack.Options{
				NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol},
				TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol},
			})
			if err := target.CreateNIC(1, w.ch); err != nil {
				t.Fatal(err)
			}
			dst := tcpip.AddrFrom4(wiretest.Dst.As4())
			target.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: dst.WithPrefix()}, gstack.AddressProperties{})
			target.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})

			cfg := DefaultConfig()
			cfg.GSO = mode.gso
			cfg.MTU = mtu
			st, err := New(cfg, w, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					pkt := w.ch.ReadContext(ctx)
					if pkt == nil {
						return
					}
					st.InjectInbound(bytes.Join(pkt.AsSlices(), nil))
					pkt.DecRef()
				}
			})
			defer func() {
				cancel()
				wg.Wait()
				st.Close()
				target.Destroy()
			}()

			l, err := gonet.ListenTCP(target, tcpip.FullAddress{NIC: 1, Addr: dst, Port: 80}, ipv4.ProtocolNumber)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			type result struct {
				n   int64
				sum [32]byte
				err error
			}
			res := make(chan result, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					res <- result{err: err}
					return
				}
				defer c.Close()
				h := sha256.New()
				n, err := io.Copy(h, c)
				var r result
				r.n, r.err = n, err
				copy(r.sum[:], h.Sum(nil))
				res <- r
			}()

			dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer dcancel()
			c, err := st.DialFrom(dctx, netip.AddrPortFrom(wiretest.Src, 40000), netip.AddrPortFrom(wiretest.Dst, 80))
			if err != nil {
				t.Fatal(err)
			}
			data := make([]byte, 4<<20)
			rng := rand.New(rand.NewPCG(1, 2))
			for i := 0; i < len(data); i += 8 {
				binary.LittleEndian.PutUint64(data[i:], rng.Uint64())
			}
			if _, err := c.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			var r result
			select {
			case r = <-res:
			case <-time.After(30 * time.Second):
				t.Fatal("target did not receive the upload within 30s")
			}
			c.Close()
			if r.err != nil || r.n != int64(len(data)) || r.sum != sha256.Sum256(data) {
				t.Fatalf("target got %d bytes (err %v), want %d identical bytes", r.n, r.err, len(data))
			}
			if bad := w.bad.Load(); bad > 0 {
				t.Errorf("%d segments oversized or with bad checksums", bad)
			}
			if e := target.Stats().TCP.ChecksumErrors.Value(); e > 0 {
				t.Errorf("target counted %d TCP checksum errors", e)
			}
			// The coalescer merges only what queued up meanwhile, which may
			// be nothing here; gVisor's host GSO always builds super-packets.
			if mode.gso == GSOHost && w.supers.Load() == 0 {
				t.Errorf("GSO mode %s produced no super-packet: the splitter was not exercised", mode.name)
			}
			t.Logf("%d super-packets, %d segments", w.supers.Load(), w.segments.Load())
		})
	}
}
