package stack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

var (
	splitSrc = netip.MustParseAddr("198.18.1.50")
	splitDst = netip.MustParseAddr("198.18.2.2")
)

// splitTCPOptions is a timestamp option (NOP NOP TS), as gVisor sends it.
var splitTCPOptions = []byte{1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78}

// superPacket builds an IPv4 TCP packet as gVisor hands it to a GSO link:
// valid IP checksum, and a TCP checksum field holding only the
// pseudo-header sum over the whole TCP length (CHECKSUM_PARTIAL).
func superPacket(t *testing.T, payloadLen int, seq uint32, flags header.TCPFlags, partial bool) []byte {
	t.Helper()
	ihl, thl := header.IPv4MinimumSize, header.TCPMinimumSize+len(splitTCPOptions)
	b := make([]byte, ihl+thl+payloadLen)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(min(len(b), 0xffff)),
		ID:          0xfffe, // wraps after two segments
		Flags:       header.IPv4FlagDontFragment,
		TTL:         64,
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     tcpip.AddrFrom4(splitSrc.As4()),
		DstAddr:     tcpip.AddrFrom4(splitDst.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcpHdr := header.TCP(b[ihl:])
	tcpHdr.Encode(&header.TCPFields{
		SrcPort:    40000,
		DstPort:    80,
		SeqNum:     seq,
		AckNum:     0x01020304,
		DataOffset: uint8(thl),
		Flags:      flags,
		WindowSize: 512,
	})
	copy(b[ihl+header.TCPMinimumSize:], splitTCPOptions)
	rng := rand.New(rand.NewPCG(uint64(payloadLen), uint64(seq)))
	for i := ihl + thl; i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(b)-ihl))
	if partial {
		tcpHdr.SetChecksum(xsum)
	} else {
		tcpHdr.SetChecksum(^checksum.Checksum(b[ihl:], xsum))
	}
	return b
}

// tcpChecksumValid verifies a segment's TCP checksum the way a receiver does.
func tcpChecksumValid(p []byte) bool {
	ip := header.IPv4(p)
	seg := p[ip.HeaderLength():]
	tcpHdr := header.TCP(seg)
	payload := seg[tcpHdr.DataOffset():]
	return tcpHdr.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(payload, 0), uint16(len(payload)))
}

// cut splits b into slices at the given offsets, as a PacketBuffer's views.
func cut(b []byte, at ...int) [][]byte {
	var out [][]byte
	prev := 0
	for _, a := range at {
		out = append(out, b[prev:a])
		prev = a
	}
	return append(out, b[prev:])
}

var testEth = []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00}

func TestGSOSplitSegments(t *testing.T) {
	const hl = header.IPv4MinimumSize + header.TCPMinimumSize + 12
	all := header.TCPFlagAck | header.TCPFlagPsh | header.TCPFlagFin | header.TCPFlagCwr
	tests := []struct {
		name    string
		payload int
		mss     int
		seq     uint32
		flags   header.TCPFlags
		prefix  []byte
		cutAt   []int // split the input into several slices here
		partial bool  // TCP checksum field holds the pseudo-header sum only
	}{
		{name: "64KiB", payload: 0xffff - hl, mss: 1448, seq: 1000, flags: header.TCPFlagAck | header.TCPFlagPsh, partial: true},
		{name: "64KiB ethernet prefix", payload: 0xffff - hl, mss: 1448, seq: 1000, flags: header.TCPFlagAck, prefix: testEth, partial: true},
		{name: "seq wraps, all flags", payload: 10 * 1448, mss: 1448, seq: 0xffffffff - 3000, flags: all, partial: true},
		{name: "exact multiple", payload: 7 * 1460, mss: 1460, seq: 7, flags: header.TCPFlagAck | header.TCPFlagPsh, partial: true},
		{name: "odd mss and tail", payload: 5*1001 + 3, mss: 1001, seq: 1, flags: header.TCPFlagAck, partial: true},
		{name: "one segment", payload: 900, mss: 1448, seq: 5, flags: header.TCPFlagAck | header.TCPFlagPsh, partial: true},
		{name: "no payload", payload: 0, mss: 1448, seq: 5, flags: header.TCPFlagAck | header.TCPFlagFin, partial: true},
		{name: "views", payload: 20000, mss: 1448, seq: 99, flags: header.TCPFlagAck, cutAt: []int{20, hl, hl + 3, 9000}, partial: true},
		{name: "full checksum in", payload: 20000, mss: 1448, seq: 99, flags: header.TCPFlagAck, partial: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := superPacket(t, tc.payload, tc.seq, tc.flags, tc.partial)
			orig := bytes.Clone(in)
			s := newGSOSplitter(tc.prefix)
			gso := GSO{Type: GSOTCPv4, NeedsCsum: true, CsumStart: header.IPv4MinimumSize, CsumOffset: header.TCPChecksumOffset, MSS: uint16(tc.mss), HdrLen: hl}
			pkts, err := s.split(cut(in, tc.cutAt...), gso)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(in, orig) {
				t.Fatal("split modified its input")
			}
			want := max(1, (tc.payload+tc.mss-1)/tc.mss)
			if len(pkts) != want {
				t.Fatalf("%d segments, want %d", len(pkts), want)
			}
			var data []byte
			for i, f := range pkts {
				if !bytes.HasPrefix(f, tc.prefix) {
					t.Fatalf("segment %d: prefix %x, want %x", i, f[:min(len(f), len(tc.prefix))], tc.prefix)
				}
				p := f[len(tc.prefix):]
				last := i == len(pkts)-1
				wantLen := hl + tc.mss
				if last {
					wantLen = hl + tc.payload - i*tc.mss
				}
				ip := header.IPv4(p)
				if len(p) != wantLen || int(ip.TotalLength()) != len(p) {
					t.Fatalf("segment %d: %d bytes, IP total length %d, want %d", i, len(p), ip.TotalLength(), wantLen)
				}
				if !ip.IsChecksumValid() {
					t.Errorf("segment %d: IP checksum invalid", i)
				}
				if got, wantID := ip.ID(), uint16(0xfffe+i); got != wantID {
					t.Errorf("segment %d: IP ID %#x, want %#x", i, got, wantID)
				}
				if ip.Flags() != header.IPv4FlagDontFragment || ip.TTL() != 64 || ip.SourceAddress() != tcpip.AddrFrom4(splitSrc.As4()) {
					t.Errorf("segment %d: IP flags/TTL/source changed", i)
				}
				tcpHdr := header.TCP(p[header.IPv4MinimumSize:])
				if got, wantSeq := tcpHdr.SequenceNumber(), tc.seq+uint32(i*tc.mss); got != wantSeq {
					t.Errorf("segment %d: seq %d, want %d", i, got, wantSeq)
				}
				wantFlags := tc.flags
				if !last {
					wantFlags &^= header.TCPFlagPsh | header.TCPFlagFin
				}
				if i > 0 {
					wantFlags &^= header.TCPFlagCwr
				}
				if tcpHdr.Flags() != wantFlags {
					t.Errorf("segment %d: flags %v, want %v", i, tcpHdr.Flags(), wantFlags)
				}
				if tcpHdr.AckNumber() != 0x01020304 || tcpHdr.WindowSize() != 512 || !bytes.Equal(tcpHdr.Options(), splitTCPOptions) {
					t.Errorf("segment %d: ack, window or options changed", i)
				}
				if !tcpChecksumValid(p) {
					t.Errorf("segment %d: TCP checksum invalid", i)
				}
				data = append(data, p[hl:]...)
			}
			if !bytes.Equal(data, orig[hl:]) {
				t.Error("segments' payloads do not add up to the super-packet's")
			}
		})
	}
}

func TestGSOSplitCompletesChecksum(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload int
		prefix  []byte
		cutAt   []int
	}{
		{name: "ack", payload: 0},
		{name: "odd payload", payload: 1001},
		{name: "views and prefix", payload: 1400, prefix: testEth, cutAt: []int{52, 700}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := superPacket(t, tc.payload, 42, header.TCPFlagAck|header.TCPFlagPsh, true)
			if tcpChecksumValid(in) {
				t.Fatal("test packet already has a valid checksum")
			}
			orig := bytes.Clone(in)
			s := newGSOSplitter(tc.prefix)
			pkts, err := s.split(cut(in, tc.cutAt...), GSO{NeedsCsum: true, CsumStart: header.IPv4MinimumSize, CsumOffset: header.TCPChecksumOffset})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(in, orig) {
				t.Fatal("split modified its input")
			}
			if len(pkts) != 1 || !bytes.HasPrefix(pkts[0], tc.prefix) {
				t.Fatalf("got %d packets, want 1 with the prefix", len(pkts))
			}
			p := pkts[0][len(tc.prefix):]
			if !tcpChecksumValid(p) {
				t.Error("TCP checksum still invalid")
			}
			if !header.IPv4(p).IsChecksumValid() {
				t.Error("IP checksum invalid")
			}
			// Only the checksum field may differ.
			csum := header.IPv4MinimumSize + header.TCPChecksumOffset
			if !bytes.Equal(p[:csum], in[:csum]) || !bytes.Equal(p[csum+2:], in[csum+2:]) {
				t.Error("bytes other than the TCP checksum changed")
			}
		})
	}
}

func TestGSOSplitPassesThrough(t *testing.T) {
	in := superPacket(t, 1000, 1, header.TCPFlagAck, false)
	orig := bytes.Clone(in)
	s := newGSOSplitter(nil)
	pkts, err := s.split([][]byte{in}, GSO{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) != 1 || len(pkts[0]) != len(in) || &pkts[0][0] != &in[0] {
		t.Fatal("a finished packet was copied or changed instead of passed through")
	}
	if !bytes.Equal(in, orig) {
		t.Fatal("packet modified")
	}

	// With a prefix, or in several views, the packet is copied unchanged.
	s = newGSOSplitter(testEth)
	pkts, err = s.split(cut(in, 20, 500), GSO{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) != 1 || !bytes.Equal(pkts[0], append(bytes.Clone(testEth), orig...)) {
		t.Fatal("prefixed packet is not prefix + packet")
	}
}

func TestGSOSplitRejects(t *testing.T) {
	good := superPacket(t, 5000, 1, header.TCPFlagAck, true)
	gso := GSO{Type: GSOTCPv4, NeedsCsum: true, CsumStart: 20, CsumOffset: 16, MSS: 1448, HdrLen: 52}
	udp := bytes.Clone(good)
	udp[9] = uint8(header.UDPProtocolNumber)
	for _, tc := range []struct {
		name string
		bufs [][]byte
		gso  GSO
		want error
	}{
		{"mss 0", [][]byte{good}, GSO{Type: GSOTCPv4, NeedsCsum: true, CsumStart: 20, CsumOffset: 16}, errGSOMalformed},
		{"ipv6", [][]byte{good}, GSO{Type: GSOTCPv6, MSS: 1448}, errors.ErrUnsupported},
		{"truncated", [][]byte{good[:30]}, gso, errGSOMalformed},
		{"not tcp", [][]byte{udp}, gso, errGSOMalformed},
		{"empty", nil, gso, errGSOMalformed},
		{"checksum outside", [][]byte{good[:37]}, GSO{NeedsCsum: true, CsumStart: 20, CsumOffset: 16}, errGSOMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newGSOSplitter(nil).split(tc.bufs, tc.gso)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func BenchmarkGSOSplit64KiB(b *testing.B) {
	t := &testing.T{}
	in := superPacket(t, 0xffff-52, 1, header.TCPFlagAck, true)
	s := newGSOSplitter(testEth)
	gso := GSO{Type: GSOTCPv4, NeedsCsum: true, CsumStart: 20, CsumOffset: 16, MSS: 1448, HdrLen: 52}
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := s.split([][]byte{in}, gso); err != nil {
			b.Fatal(err)
		}
	}
}

// splitWire is a Wire with the Raw and AFPacket wires' userspace
// segmentation in front of a second gVisor stack playing the target. That
// stack's NIC does not offload checksums: it verifies every segment's.
type splitWire struct {
	split    *gsoSplitter
	ch       *channel.Endpoint
	mtu      int
	segments atomic.Int64
	supers   atomic.Int64
	bad      atomic.Int64
}

func (w *splitWire) WritePacket(bufs [][]byte, gso GSO) error {
	if gso.Type != GSONone {
		w.supers.Add(1)
	}
	pkts, err := w.split.split(bufs, gso)
	if err != nil {
		return err
	}
	for _, p := range pkts {
		if len(p) > w.mtu || !header.IPv4(p).IsChecksumValid() || !tcpChecksumValid(p) {
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
			w := &splitWire{split: newGSOSplitter(nil), ch: channel.New(4096, mtu, ""), mtu: mtu}
			target := gstack.New(gstack.Options{
				NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol},
				TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol},
			})
			if err := target.CreateNIC(1, w.ch); err != nil {
				t.Fatal(err)
			}
			dst := tcpip.AddrFrom4(splitDst.As4())
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
			c, err := st.DialFrom(dctx, netip.AddrPortFrom(splitSrc, 40000), netip.AddrPortFrom(splitDst, 80))
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
