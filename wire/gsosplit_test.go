package wire_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stackcopy/stackcopy/wire"
	"github.com/stackcopy/stackcopy/wire/wiretest"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

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
			in := wiretest.TCPv4(t, tc.payload, tc.seq, tc.flags, tc.partial)
			orig := bytes.Clone(in)
			s := wire.NewSplitter(tc.prefix)
			gso := wire.GSO{Type: wire.GSOTCPv4, NeedsCsum: true, CsumStart: header.IPv4MinimumSize, CsumOffset: header.TCPChecksumOffset, MSS: uint16(tc.mss), HdrLen: hl}
			pkts, err := s.Split(cut(in, tc.cutAt...), gso)
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
				if ip.Flags() != header.IPv4FlagDontFragment || ip.TTL() != 64 || ip.SourceAddress() != tcpip.AddrFrom4(wiretest.Src.As4()) {
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
				if tcpHdr.AckNumber() != 0x01020304 || tcpHdr.WindowSize() != 512 || !bytes.Equal(tcpHdr.Options(), wiretest.TCPOptions) {
					t.Errorf("segment %d: ack, window or options changed", i)
				}
				if !wiretest.TCPChecksumValid(p) {
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
			in := wiretest.TCPv4(t, tc.payload, 42, header.TCPFlagAck|header.TCPFlagPsh, true)
			if wiretest.TCPChecksumValid(in) {
				t.Fatal("test packet already has a valid checksum")
			}
			orig := bytes.Clone(in)
			s := wire.NewSplitter(tc.prefix)
			pkts, err := s.Split(cut(in, tc.cutAt...), wire.GSO{NeedsCsum: true, CsumStart: header.IPv4MinimumSize, CsumOffset: header.TCPChecksumOffset})
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
			if !wiretest.TCPChecksumValid(p) {
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
	in := wiretest.TCPv4(t, 1000, 1, header.TCPFlagAck, false)
	orig := bytes.Clone(in)
	s := wire.NewSplitter(nil)
	pkts, err := s.Split([][]byte{in}, wire.GSO{})
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
	s = wire.NewSplitter(testEth)
	pkts, err = s.Split(cut(in, 20, 500), wire.GSO{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) != 1 || !bytes.Equal(pkts[0], append(bytes.Clone(testEth), orig...)) {
		t.Fatal("prefixed packet is not prefix + packet")
	}
}

func TestGSOSplitRejects(t *testing.T) {
	good := wiretest.TCPv4(t, 5000, 1, header.TCPFlagAck, true)
	gso := wire.GSO{Type: wire.GSOTCPv4, NeedsCsum: true, CsumStart: 20, CsumOffset: 16, MSS: 1448, HdrLen: 52}
	udp := bytes.Clone(good)
	udp[9] = uint8(header.UDPProtocolNumber)
	for _, tc := range []struct {
		name string
		bufs [][]byte
		gso  wire.GSO
		want error
	}{
		{"mss 0", [][]byte{good}, wire.GSO{Type: wire.GSOTCPv4, NeedsCsum: true, CsumStart: 20, CsumOffset: 16}, wire.ErrMalformed},
		{"ipv6", [][]byte{good}, wire.GSO{Type: wire.GSOTCPv6, MSS: 1448}, errors.ErrUnsupported},
		{"truncated", [][]byte{good[:30]}, gso, wire.ErrMalformed},
		{"not tcp", [][]byte{udp}, gso, wire.ErrMalformed},
		{"empty", nil, gso, wire.ErrMalformed},
		{"checksum outside", [][]byte{good[:37]}, wire.GSO{NeedsCsum: true, CsumStart: 20, CsumOffset: 16}, wire.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := wire.NewSplitter(nil).Split(tc.bufs, tc.gso)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func BenchmarkGSOSplit64KiB(b *testing.B) {
	t := &testing.T{}
	in := wiretest.TCPv4(t, 0xffff-52, 1, header.TCPFlagAck, true)
	s := wire.NewSplitter(testEth)
	gso := wire.GSO{Type: wire.GSOTCPv4, NeedsCsum: true, CsumStart: 20, CsumOffset: 16, MSS: 1448, HdrLen: 52}
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := s.Split([][]byte{in}, gso); err != nil {
			b.Fatal(err)
		}
	}
}
