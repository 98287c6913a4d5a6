package capture

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

var (
	cli  = netip.MustParseAddrPort("198.18.0.10:40000")
	srv  = netip.MustParseAddrPort("198.18.1.1:80")
	cli6 = netip.MustParseAddrPort("[2001:db8::10]:40000")
	srv6 = netip.MustParseAddrPort("[2001:db8::1]:80")
	t0   = time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC)
)

// pkt describes a test packet; build turns it into bytes for a link type.
type pkt struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    TCPFlags
	payload  []byte
	proto    layers.IPProtocol // default TCP
	frag     bool              // set MF
	vlans    int               // 802.1Q tags (Ethernet only)
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// ipBytes returns the IP packet (v4 or v6 by address).
func (p pkt) ipBytes(t testing.TB) []byte {
	t.Helper()
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(p.src.Port()), DstPort: layers.TCPPort(p.dst.Port()),
		Seq: p.seq, Ack: p.ack, Window: 65535,
		FIN: p.flags&FlagFIN != 0, SYN: p.flags&FlagSYN != 0, RST: p.flags&FlagRST != 0,
		PSH: p.flags&FlagPSH != 0, ACK: p.flags&FlagACK != 0,
	}
	if p.flags&FlagSYN != 0 {
		tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}}}
	}
	proto := p.proto
	if proto == 0 {
		proto = layers.IPProtocolTCP
	}
	if p.src.Addr().Is6() {
		ip := &layers.IPv6{Version: 6, NextHeader: proto, HopLimit: 64, SrcIP: p.src.Addr().AsSlice(), DstIP: p.dst.Addr().AsSlice()}
		tcp.SetNetworkLayerForChecksum(ip)
		return serialize(t, ip, tcp, gopacket.Payload(p.payload))
	}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: p.src.Addr().AsSlice(), DstIP: p.dst.Addr().AsSlice(), Id: 7}
	if p.frag {
		ip.Flags = layers.IPv4MoreFragments
	}
	if proto == layers.IPProtocolUDP {
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.src.Port()), DstPort: layers.UDPPort(p.dst.Port())}
		udp.SetNetworkLayerForChecksum(ip)
		return serialize(t, ip, udp, gopacket.Payload(p.payload))
	}
	tcp.SetNetworkLayerForChecksum(ip)
	return serialize(t, ip, tcp, gopacket.Payload(p.payload))
}

func etherType(ip []byte) uint16 {
	if ip[0]>>4 == 6 {
		return etherIPv6
	}
	return etherIPv4
}

func (p pkt) frame(t testing.TB, link uint32) []byte {
	t.Helper()
	ip := p.ipBytes(t)
	et := etherType(ip)
	switch link {
	case lkEthernet:
		b := []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2}
		for range p.vlans {
			b = binary.BigEndian.AppendUint16(b, 0x8100)
			b = binary.BigEndian.AppendUint16(b, 42)
		}
		b = binary.BigEndian.AppendUint16(b, et)
		return append(b, ip...)
	case lkSLL:
		b := []byte{0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0}
		b = binary.BigEndian.AppendUint16(b, et)
		return append(b, ip...)
	case lkSLL2:
		b := binary.BigEndian.AppendUint16(nil, et)
		b = append(b, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0)
		return append(b, ip...)
	case lkNull:
		b := binary.LittleEndian.AppendUint32(nil, 2)
		if et == etherIPv6 {
			b = binary.LittleEndian.AppendUint32(nil, 30)
		}
		return append(b, ip...)
	case lkLoop:
		b := binary.BigEndian.AppendUint32(nil, 2)
		return append(b, ip...)
	default: // raw IP flavours
		return ip
	}
}

// Link types as in capture files. gopacket v1.1.19's LinkType is a uint8,
// too small for SLL2 (276), so the writers' headers are patched.
const (
	lkNull     uint32 = 0
	lkEthernet uint32 = 1
	lkRaw12    uint32 = 12
	lkRaw      uint32 = 101
	lkLoop     uint32 = 108
	lkSLL      uint32 = 113
	lkIPv4     uint32 = 228
	lkIPv6     uint32 = 229
	lkSLL2     uint32 = 276
)

type rec struct {
	data    []byte
	wireLen int // 0: len(data)
	ts      time.Time
}

func writePcap(t testing.TB, link uint32, nanos bool, recs []rec) string {
	t.Helper()
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if nanos {
		w = pcapgo.NewWriterNanos(&buf)
	}
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(buf.Bytes()[20:], link)
	for _, r := range recs {
		wl := r.wireLen
		if wl == 0 {
			wl = len(r.data)
		}
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: r.ts, CaptureLength: len(r.data), Length: wl}, r.data); err != nil {
			t.Fatal(err)
		}
	}
	return writeTemp(t, "capture.pcap", buf.Bytes())
}

func writePcapng(t testing.TB, link uint32, recs []rec) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := pcapgo.NewNgWriter(&buf, layers.LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	// The interface description block follows the section header.
	idb := binary.LittleEndian.Uint32(buf.Bytes()[4:])
	binary.LittleEndian.PutUint16(buf.Bytes()[idb+8:], uint16(link))
	for _, r := range recs {
		wl := r.wireLen
		if wl == 0 {
			wl = len(r.data)
		}
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: r.ts, CaptureLength: len(r.data), Length: wl}, r.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return writeTemp(t, "capture.pcapng", buf.Bytes())
}

func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func readAll(t testing.TB, path string) ([]Segment, SourceStats, error) {
	t.Helper()
	src, err := OpenFile(path)
	if err != nil {
		return nil, SourceStats{}, err
	}
	defer src.Close()
	var segs []Segment
	for {
		seg, err := src.Next()
		if err == io.EOF {
			return segs, src.Stats(), nil
		}
		if err != nil {
			return segs, src.Stats(), err
		}
		segs = append(segs, seg)
	}
}

// handshake returns a little session: SYN, SYN-ACK, request, response, FIN.
func handshake() []pkt {
	return []pkt{
		{src: cli, dst: srv, seq: 1000, flags: FlagSYN},
		{src: srv, dst: cli, seq: 5000, ack: 1001, flags: FlagSYN | FlagACK},
		{src: cli, dst: srv, seq: 1001, ack: 5001, flags: FlagACK | FlagPSH, payload: []byte("GET / HTTP/1.0\r\n\r\n")},
		{src: srv, dst: cli, seq: 5001, ack: 1019, flags: FlagACK | FlagPSH, payload: []byte("HTTP/1.0 200 OK\r\n\r\nhi")},
		{src: cli, dst: srv, seq: 1019, ack: 5023, flags: FlagACK | FlagFIN},
	}
}

func checkHandshake(t *testing.T, segs []Segment, wantTime bool) {
	t.Helper()
	want := handshake()
	if len(segs) != len(want) {
		t.Fatalf("got %d segments, want %d", len(segs), len(want))
	}
	for i, w := range want {
		g := segs[i]
		if g.Src != w.src || g.Dst != w.dst || g.Seq != w.seq || g.Ack != w.ack || g.Flags != w.flags || !bytes.Equal(g.Payload, w.payload) {
			t.Errorf("segment %d = %v %v seq %d ack %d %v %q, want %v %v seq %d ack %d %v %q",
				i, g.Src, g.Dst, g.Seq, g.Ack, g.Flags, g.Payload, w.src, w.dst, w.seq, w.ack, w.flags, w.payload)
		}
		if wantTime && !g.Time.Equal(t0.Add(time.Duration(i)*time.Millisecond)) {
			t.Errorf("segment %d time %v, want %v", i, g.Time, t0.Add(time.Duration(i)*time.Millisecond))
		}
	}
}

func TestOpenFileLinkTypes(t *testing.T) {
	tests := []struct {
		name  string
		link  uint32
		vlans int
		ng    bool
		nanos bool
	}{
		{name: "ethernet", link: lkEthernet},
		{name: "ethernet-nanos", link: lkEthernet, nanos: true},
		{name: "vlan", link: lkEthernet, vlans: 1},
		{name: "qinq", link: lkEthernet, vlans: 2},
		{name: "sll", link: lkSLL},
		{name: "sll2", link: lkSLL2},
		{name: "raw101", link: lkRaw},
		{name: "raw12", link: lkRaw12},
		{name: "ipv4", link: lkIPv4},
		{name: "null", link: lkNull},
		{name: "loop", link: lkLoop},
		{name: "pcapng-ethernet", link: lkEthernet, ng: true},
		{name: "pcapng-vlan", link: lkEthernet, ng: true, vlans: 1},
		{name: "pcapng-sll2", link: lkSLL2, ng: true},
		{name: "pcapng-raw", link: lkRaw, ng: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var recs []rec
			for i, p := range handshake() {
				p.vlans = tt.vlans
				recs = append(recs, rec{data: p.frame(t, tt.link), ts: t0.Add(time.Duration(i) * time.Millisecond)})
			}
			var path string
			if tt.ng {
				path = writePcapng(t, tt.link, recs)
			} else {
				path = writePcap(t, tt.link, tt.nanos, recs)
			}
			segs, st, err := readAll(t, path)
			if err != nil {
				t.Fatal(err)
			}
			checkHandshake(t, segs, true)
			if st != (SourceStats{Packets: 5, TCP: 5}) {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestOpenFileBigEndianAndGzip(t *testing.T) {
	// pcapgo writes little-endian only; build a big-endian file by hand.
	var b []byte
	b = binary.BigEndian.AppendUint32(b, pcapMagicMicros)
	b = binary.BigEndian.AppendUint16(b, 2)
	b = binary.BigEndian.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...)
	b = binary.BigEndian.AppendUint32(b, 65535)
	b = binary.BigEndian.AppendUint32(b, 1)
	for i, p := range handshake() {
		f := p.frame(t, lkEthernet)
		ts := t0.Add(time.Duration(i) * time.Millisecond)
		b = binary.BigEndian.AppendUint32(b, uint32(ts.Unix()))
		b = binary.BigEndian.AppendUint32(b, uint32(ts.Nanosecond()/1000))
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	segs, _, err := readAll(t, writeTemp(t, "be.pcap", b))
	if err != nil {
		t.Fatal(err)
	}
	checkHandshake(t, segs, true)

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(b)
	zw.Close()
	segs, _, err = readAll(t, writeTemp(t, "be.pcap.gz", gz.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	checkHandshake(t, segs, true)

	// A gzipped file cut short names the decompressed offset.
	zb := gz.Bytes()
	_, _, err = readAll(t, writeTemp(t, "cut.pcap.gz", zb[:len(zb)-30]))
	if err == nil || !strings.Contains(err.Error(), "decompressed offset") {
		t.Errorf("cut gzip: err = %v", err)
	}
}

func TestOpenFileStats(t *testing.T) {
	link := lkEthernet
	full := pkt{src: cli, dst: srv, seq: 1, ack: 1, flags: FlagACK, payload: bytes.Repeat([]byte("x"), 1000)}.frame(t, link)
	arp := serialize(t,
		&layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: 1, SourceHwAddress: make([]byte, 6), SourceProtAddress: make([]byte, 4), DstHwAddress: make([]byte, 6), DstProtAddress: make([]byte, 4)})
	// Ethernet padding after a short IP packet, and a frame cut only in its
	// padding, must both decode.
	small := pkt{src: cli, dst: srv, seq: 1, ack: 1, flags: FlagACK}.frame(t, link)
	padded := append(append([]byte(nil), small...), make([]byte, 60-len(small))...)
	recs := []rec{
		{data: full},
		{data: arp},
		{data: pkt{src: cli, dst: srv, proto: layers.IPProtocolUDP, payload: []byte("dns")}.frame(t, link)},
		{data: pkt{src: cli6, dst: srv6, seq: 9, flags: FlagSYN}.frame(t, link)},
		{data: pkt{src: cli, dst: srv, seq: 1, flags: FlagACK, payload: []byte("frag"), frag: true}.frame(t, link)},
		{data: full[:14+10]},                   // malformed: IPv4 header cut, record says complete
		{data: full[:200], wireLen: len(full)}, // snaplen cut the payload
		{data: padded},
		{data: padded[:len(small)], wireLen: len(padded)},
	}
	segs, st, err := readAll(t, writePcap(t, link, false, recs))
	if err != nil {
		t.Fatal(err)
	}
	want := SourceStats{Packets: 9, TCP: 3, NonTCP: 2, IPv6: 1, Fragments: 1, Malformed: 1, Truncated: 1}
	if st != want {
		t.Errorf("stats\n got %+v\nwant %+v", st, want)
	}
	if len(segs) != 3 || len(segs[0].Payload) != 1000 || len(segs[1].Payload) != 0 || len(segs[2].Payload) != 0 {
		t.Errorf("segments %+v", segs)
	}
	// The payload is a copy, not a view of the reader's buffer.
	if &segs[0].Payload[0] == &full[14+40] {
		t.Error("payload aliases input")
	}
}

func TestOpenFileIPv6(t *testing.T) {
	for _, link := range []uint32{lkIPv6, lkRaw, lkEthernet, lkNull} {
		var recs []rec
		for _, p := range handshake() {
			p.src, p.dst = cli6, srv6
			if p.flags&FlagSYN != 0 && p.flags&FlagACK != 0 {
				p.src, p.dst = srv6, cli6
			}
			recs = append(recs, rec{data: p.frame(t, link)})
		}
		segs, st, err := readAll(t, writePcap(t, link, false, recs))
		if err != nil {
			t.Fatal(err)
		}
		if len(segs) != 0 || st.IPv6 != 5 || st.Packets != 5 {
			t.Errorf("link %v: %d segments, stats %+v", link, len(segs), st)
		}
	}
}

func TestDecodeIPv6Extensions(t *testing.T) {
	tcp := pkt{src: cli6, dst: srv6, seq: 1, flags: FlagACK}.ipBytes(t)[40:]
	build := func(next byte, ext []byte) []byte {
		h := make([]byte, 40)
		h[0] = 0x60
		binary.BigEndian.PutUint16(h[4:], uint16(len(ext)+len(tcp)))
		h[6] = next
		return append(append(h, ext...), tcp...)
	}
	hbh := []byte{6, 0, 1, 4, 0, 0, 0, 0}      // hop-by-hop, next TCP
	frag := []byte{6, 0, 0, 0, 0, 0, 0, 1}     // fragment of TCP
	fragUDP := []byte{17, 0, 0, 0, 0, 0, 0, 1} // fragment of UDP
	dst := []byte{0, 0, 1, 4, 0, 0, 0, 0}      // destination options, next hop-by-hop
	for _, tt := range []struct {
		name string
		pkt  []byte
		want verdict
	}{
		{"plain", build(6, nil), verdictIPv6},
		{"hop-by-hop", build(0, hbh), verdictIPv6},
		{"chain", build(60, append(dst, hbh...)), verdictIPv6},
		{"fragment", build(44, frag), verdictFragment},
		{"fragment-udp", build(44, fragUDP), verdictNonTCP},
		{"icmpv6", build(58, nil), verdictNonTCP},
		{"cut-ext", build(0, hbh)[:44], verdictMalformed},
	} {
		if _, v := decode(linkIPv6, tt.pkt, false); v != tt.want {
			t.Errorf("%s: verdict %d, want %d", tt.name, v, tt.want)
		}
	}
}

func TestOpenFileErrors(t *testing.T) {
	good := func() []byte {
		var recs []rec
		for _, p := range handshake() {
			recs = append(recs, rec{data: p.frame(t, lkEthernet), ts: t0})
		}
		b, err := os.ReadFile(writePcap(t, lkEthernet, false, recs))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}()
	lastRec := int64(24)
	for off := int64(24); off < int64(len(good)); {
		lastRec = off
		off += 16 + int64(binary.LittleEndian.Uint32(good[off+8:]))
	}
	lastLen := int64(len(good)) - lastRec - 16

	corrupt := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(corrupt[24+8:], 0xfffffff0)

	unsupported := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(unsupported[20:], 105)

	ngGood, err := os.ReadFile(writePcapng(t, lkEthernet, []rec{{data: handshake()[0].frame(t, lkEthernet), ts: t0}}))
	if err != nil {
		t.Fatal(err)
	}
	ngUnsupported := func() []byte {
		var buf bytes.Buffer
		w, err := pcapgo.NewNgWriter(&buf, layers.LinkTypeEthernet)
		if err != nil {
			t.Fatal(err)
		}
		id, err := w.AddInterface(pcapgo.NgInterface{LinkType: layers.LinkTypeIEEE802_11, SnapLength: 65535, TimestampResolution: 9})
		if err != nil {
			t.Fatal(err)
		}
		f := handshake()[0].frame(t, lkEthernet)
		w.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: len(f), Length: len(f)}, f)
		w.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: len(f), Length: len(f), InterfaceIndex: id}, f)
		w.Flush()
		return buf.Bytes()
	}()

	tests := []struct {
		name     string
		data     []byte
		kind     error
		msg      string // substring; the path is checked separately
		segments int    // segments read before the error
	}{
		{"empty", nil, ErrNotCapture, "offset 0: file too short", 0},
		{"garbage", []byte("this is not a capture file at all"), ErrNotCapture, "offset 0: unknown file magic", 0},
		{"truncated-header", good[:20], ErrTruncated, "offset 0: truncated pcap file header (want 24 bytes, have 20)", 0},
		{"truncated-record", good[:len(good)-7], ErrTruncated,
			"offset " + itoa(lastRec) + ": truncated packet record (want " + itoa(lastLen) + " bytes, have " + itoa(lastLen-7) + ")", 4},
		{"truncated-record-header", good[:lastRec+5], ErrTruncated, "offset " + itoa(lastRec) + ": truncated packet record header (want 16 bytes, have 5)", 4},
		{"corrupt-record", corrupt, ErrCorrupt, "offset 24: packet record claims 4294967280 captured bytes", 0},
		{"unsupported-link", unsupported, ErrUnsupportedLinkType, "offset 20: unsupported link type 105 (IEEE 802.11)", 0},
		{"pcapng-truncated", ngGood[:len(ngGood)-10], ErrTruncated, "truncated pcapng block", 0},
		{"pcapng-unsupported-link", ngUnsupported, ErrUnsupportedLinkType, "unsupported link type 105 (IEEE 802.11) on interface 1", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeTemp(t, "capture.pcap", tt.data)
			segs, _, err := readAll(t, path)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %v is not %v", err, tt.kind)
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.HasPrefix(msg, path+": ") || !strings.Contains(msg, tt.msg) || strings.Contains(msg, "\n") {
				t.Errorf("error %q, want %q after the path", msg, tt.msg)
			}
			if len(segs) != tt.segments {
				t.Errorf("%d segments before the error, want %d", len(segs), tt.segments)
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Errorf("error %T is not a *FormatError", err)
			}
			if tt.kind == ErrTruncated && tt.segments > 0 && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("truncation %v does not match io.ErrUnexpectedEOF", err)
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestNextAfterErrorAndClose(t *testing.T) {
	path := writePcap(t, lkEthernet, false, []rec{{data: handshake()[0].frame(t, lkEthernet)}})
	src, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Next(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := src.Next(); err != io.EOF {
			t.Fatalf("err %v, want io.EOF", err)
		}
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(filepath.Join(t.TempDir(), "missing.pcap")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestOpenFileLargeRecord covers packets bigger than the read buffer (a GRO
// super-segment with a zero IP total length, as BIG TCP captures have).
func TestOpenFileLargeRecord(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), (readBufSize+1000)/16)
	f := pkt{src: cli, dst: srv, seq: 1, ack: 1, flags: FlagACK, payload: payload[:60000]}.frame(t, lkEthernet)
	hdr := f[:14+40]
	big := append(append([]byte(nil), hdr...), payload...)
	binary.BigEndian.PutUint16(big[14+2:], 0) // IPv4 total length 0
	for _, ng := range []bool{false, true} {
		var path string
		if ng {
			path = writePcapng(t, lkEthernet, []rec{{data: big}, {data: f}})
		} else {
			path = writePcap(t, lkEthernet, false, []rec{{data: big}, {data: f}})
		}
		segs, st, err := readAll(t, path)
		if err != nil {
			t.Fatal(err)
		}
		if len(segs) != 2 || !bytes.Equal(segs[0].Payload, payload) || !bytes.Equal(segs[1].Payload, payload[:60000]) {
			t.Errorf("ng=%v: stats %+v", ng, st)
		}
	}

	// The same through gzip, and a file cut inside a large record, or in
	// the record header after one, names the record's offset.
	raw, err := os.ReadFile(writePcap(t, lkEthernet, false, []rec{{data: big}, {data: f}, {data: big}}))
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	gzPath := filepath.Join(t.TempDir(), "large.pcap.gz")
	if err := os.WriteFile(gzPath, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	segs, st, err := readAll(t, gzPath)
	if err != nil || len(segs) != 3 || !bytes.Equal(segs[0].Payload, payload) || !bytes.Equal(segs[1].Payload, payload[:60000]) || !bytes.Equal(segs[2].Payload, payload) {
		t.Errorf("gzip: %d segments, stats %+v, err %v", len(segs), st, err)
	}
	lastRec := int64(24 + 16 + len(big) + 16 + len(f))
	cutPath := filepath.Join(t.TempDir(), "cut.pcap")
	if err := os.WriteFile(cutPath, raw[:lastRec+16+30000], 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = readAll(t, cutPath)
	want := fmt.Sprintf("offset %d: truncated packet record (want %d bytes, have 30000)", lastRec, len(big))
	if !errors.Is(err, ErrTruncated) || !strings.Contains(fmt.Sprint(err), want) {
		t.Errorf("cut inside a large record: err %v, want %q", err, want)
	}
	afterBig := int64(24 + 16 + len(big))
	if err := os.WriteFile(cutPath, raw[:afterBig+5], 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = readAll(t, cutPath)
	want = fmt.Sprintf("offset %d: truncated packet record header (want 16 bytes, have 5)", afterBig)
	if !errors.Is(err, ErrTruncated) || !strings.Contains(fmt.Sprint(err), want) {
		t.Errorf("cut inside the header after a large record: err %v, want %q", err, want)
	}
}

func TestNgTimestampResolution(t *testing.T) {
	for _, tt := range []struct {
		res  byte
		unit uint64
	}{{6, 1e6}, {9, 1e9}, {0x80 | 10, 1024}, {19, 1e19}} {
		ifc := ngInterface{unitsPerSec: tt.unit}
		units := 1700000000*tt.unit + tt.unit/2
		if tt.unit == 1e19 {
			units = tt.unit + tt.unit/4 // 1.25 s; the fraction times 1e9 overflows 64 bits
		}
		got := ifc.time(units)
		want := time.Unix(1700000000, 5e8).UTC()
		if tt.unit == 1e19 {
			want = time.Unix(1, 25e7).UTC()
		}
		if !got.Equal(want) {
			t.Errorf("res %#x: %v, want %v", tt.res, got, want)
		}
	}
}

func FuzzOpenFile(f *testing.F) {
	var recs []rec
	for i, p := range handshake() {
		p.vlans = i % 2
		recs = append(recs, rec{data: p.frame(f, lkEthernet), ts: t0})
	}
	for _, path := range []string{
		writePcap(f, lkEthernet, false, recs),
		writePcapng(f, lkEthernet, recs),
		writePcap(f, lkSLL2, true, []rec{{data: handshake()[2].frame(f, lkSLL2)}}),
		writePcap(f, lkIPv6, false, []rec{{data: pkt{src: cli6, dst: srv6, flags: FlagSYN}.frame(f, lkIPv6)}}),
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(handBuiltPcapng(f))
	// Keep the per-input file off the disk when we can: writing it is most
	// of the cost of an execution.
	dir := f.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "mirror-fuzz"); err == nil {
		dir = shm
		f.Cleanup(func() { os.RemoveAll(shm) })
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.pcap")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		src, err := OpenFile(path)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		defer src.Close()
		for n := 0; ; n++ {
			seg, err := src.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				var fe *FormatError
				if !errors.As(err, &fe) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("bad error %q (%T)", err, err)
				}
				break
			}
			if !seg.Src.Addr().Is4() || !seg.Dst.Addr().Is4() {
				t.Fatalf("non-IPv4 segment %+v", seg)
			}
		}
		st := src.Stats()
		if st.Packets != st.TCP+st.NonTCP+st.IPv6+st.Fragments+st.Malformed+st.Truncated {
			t.Fatalf("stats don't add up: %+v", st)
		}
	})
}

func BenchmarkFileSource(b *testing.B) {
	var recs []rec
	for i := range 10000 {
		p := pkt{src: cli, dst: srv, seq: uint32(i * 1448), ack: 1, flags: FlagACK, payload: make([]byte, 1448), vlans: i % 2}
		recs = append(recs, rec{data: p.frame(b, lkEthernet), ts: t0})
	}
	path := writePcap(b, lkEthernet, false, recs)
	benchRead(b, path, false)
}

// benchRead reads path over and over until b.N segments were read;
// lengths: with LengthsOnly.
func benchRead(b *testing.B, path string, lengths bool) {
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for n < b.N {
		src, err := OpenFile(path)
		if err != nil {
			b.Fatal(err)
		}
		if lengths {
			src.LengthsOnly()
		}
		for n < b.N {
			if _, err := src.Next(); err != nil {
				break
			}
			n++
		}
		src.Close()
	}
}

// ngBuilder writes pcapng blocks by hand, in either byte order, to cover
// what pcapgo's writer cannot produce.
type ngBuilder struct {
	b     []byte
	order interface {
		binary.ByteOrder
		binary.AppendByteOrder
	}
}

func (w *ngBuilder) block(typ uint32, body []byte) {
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	total := uint32(12 + len(body))
	w.b = w.order.AppendUint32(w.b, typ)
	w.b = w.order.AppendUint32(w.b, total)
	w.b = append(w.b, body...)
	w.b = w.order.AppendUint32(w.b, total)
}

func (w *ngBuilder) shb() {
	var body []byte
	body = w.order.AppendUint32(body, ngByteOrder)
	body = w.order.AppendUint16(body, 1)
	body = w.order.AppendUint16(body, 0)
	body = w.order.AppendUint64(body, ^uint64(0))
	body = w.order.AppendUint16(body, 1) // opt_comment, to be skipped
	body = w.order.AppendUint16(body, 5)
	body = append(body, "hello\x00\x00\x00"...)
	body = w.order.AppendUint32(body, 0)
	w.block(ngMagicSHB, body)
}

func (w *ngBuilder) idb(link uint16, tsresol byte, tsoffset int64) {
	var body []byte
	body = w.order.AppendUint16(body, link)
	body = w.order.AppendUint16(body, 0)
	body = w.order.AppendUint32(body, 0)
	body = w.order.AppendUint16(body, 9)
	body = w.order.AppendUint16(body, 1)
	body = append(body, tsresol, 0, 0, 0)
	body = w.order.AppendUint16(body, 14)
	body = w.order.AppendUint16(body, 8)
	body = w.order.AppendUint64(body, uint64(tsoffset))
	body = w.order.AppendUint32(body, 0)
	w.block(ngBlockIDB, body)
}

func (w *ngBuilder) epb(typ uint32, iface uint32, units uint64, data []byte) {
	var body []byte
	switch typ {
	case ngBlockEPB:
		body = w.order.AppendUint32(body, iface)
	case ngBlockOPB:
		body = w.order.AppendUint16(body, uint16(iface))
		body = w.order.AppendUint16(body, 0)
	case ngBlockSPB:
		body = w.order.AppendUint32(body, uint32(len(data)))
		w.block(typ, append(body, data...))
		return
	}
	body = w.order.AppendUint32(body, uint32(units>>32))
	body = w.order.AppendUint32(body, uint32(units))
	body = w.order.AppendUint32(body, uint32(len(data)))
	body = w.order.AppendUint32(body, uint32(len(data)))
	w.block(typ, append(body, data...))
}

// handBuiltPcapng has two sections in opposite byte orders, three link
// types, unusual timestamp resolutions, and every packet block type.
func handBuiltPcapng(t testing.TB) []byte {
	hs := handshake()
	w := &ngBuilder{order: binary.BigEndian}
	w.shb()
	w.idb(uint16(lkEthernet), 3, 0)       // milliseconds
	w.idb(uint16(lkRaw), 0x80|20, 1000)   // 2^-20 s, offset 1000 s
	w.block(0x40000bad, []byte("custom")) // skipped
	w.epb(ngBlockEPB, 0, 1700000000123, hs[0].frame(t, lkEthernet))
	w.epb(ngBlockEPB, 1, 3<<20|1<<19, hs[1].frame(t, lkRaw))
	w.block(5, make([]byte, 20)) // interface statistics: skipped
	w.epb(ngBlockSPB, 0, 0, hs[2].frame(t, lkEthernet))
	w.order = binary.LittleEndian
	w.shb()
	w.idb(uint16(lkSLL2), 9, 0)
	w.epb(ngBlockOPB, 0, 5e9, hs[3].frame(t, lkSLL2))
	w.epb(ngBlockEPB, 0, 6e9, hs[4].frame(t, lkSLL2))
	return w.b
}

func TestPcapngHandBuilt(t *testing.T) {
	hs := handshake()
	segs, st, err := readAll(t, writeTemp(t, "hand.pcapng", handBuiltPcapng(t)))
	if err != nil {
		t.Fatal(err)
	}
	checkHandshake(t, segs, false)
	wantTimes := []time.Time{
		time.UnixMilli(1700000000123),
		time.Unix(1003, 5e8),
		{}, // simple packet blocks have no timestamp
		time.Unix(5, 0),
		time.Unix(6, 0),
	}
	for i, want := range wantTimes {
		if i < len(segs) && !segs[i].Time.Equal(want) {
			t.Errorf("segment %d time %v, want %v", i, segs[i].Time, want)
		}
	}
	if st.Packets != 5 || st.TCP != 5 {
		t.Errorf("stats %+v", st)
	}

	// Damage: a packet naming an interface the section lacks, and a block
	// whose trailing length disagrees.
	bad := &ngBuilder{order: binary.LittleEndian}
	bad.shb()
	bad.idb(uint16(lkEthernet), 6, 0)
	bad.epb(ngBlockEPB, 3, 0, hs[0].frame(t, lkEthernet))
	if _, _, err := readAll(t, writeTemp(t, "bad.pcapng", bad.b)); err == nil || !strings.Contains(err.Error(), "interface 3") {
		t.Errorf("bad interface: %v", err)
	}
	mismatch := &ngBuilder{order: binary.LittleEndian}
	mismatch.shb()
	mismatch.idb(uint16(lkEthernet), 6, 0)
	mismatch.b[len(mismatch.b)-1] = 0x7f
	if _, _, err := readAll(t, writeTemp(t, "mismatch.pcapng", mismatch.b)); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "length mismatch") {
		t.Errorf("length mismatch: %v", err)
	}
}

func TestDecodeIPv4EdgeCases(t *testing.T) {
	base := pkt{src: cli, dst: srv, seq: 7, ack: 9, flags: FlagACK | FlagPSH, payload: []byte("data")}.ipBytes(t)
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), base...)) }
	withOptions := func(b []byte) []byte {
		// Insert 4 bytes of IP options (NOP NOP NOP EOL).
		out := append(append(append([]byte(nil), b[:20]...), 1, 1, 1, 0), b[20:]...)
		out[0] = 0x46
		binary.BigEndian.PutUint16(out[2:], uint16(len(out)))
		return out
	}
	for _, tt := range []struct {
		name string
		pkt  []byte
		cut  bool
		want verdict
	}{
		{"plain", base, false, verdictTCP},
		{"options", mod(withOptions), false, verdictTCP},
		{"version", mod(func(b []byte) []byte { b[0] = 0x55; return b }), false, verdictMalformed},
		{"ihl", mod(func(b []byte) []byte { b[0] = 0x44; return b }), false, verdictMalformed},
		{"total<ihl", mod(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 10); return b }), false, verdictMalformed},
		{"udp", mod(func(b []byte) []byte { b[9] = 17; return b }), false, verdictNonTCP},
		{"last-fragment", mod(func(b []byte) []byte { b[7] = 1; return b }), false, verdictFragment},
		{"dont-fragment", mod(func(b []byte) []byte { b[6] = 0x40; return b }), false, verdictTCP},
		{"tcp-doff", mod(func(b []byte) []byte { b[20+12] = 0x40; return b }), false, verdictMalformed},
		{"tcp-doff-long", mod(func(b []byte) []byte { b[20+12] = 0xf0; return b }), false, verdictMalformed},
		{"cut", base[:30], true, verdictTruncated},
		{"short", base[:30], false, verdictMalformed},
		{"tiny-cut", base[:10], true, verdictTruncated},
	} {
		seg, v := decode(linkIPv4, tt.pkt, tt.cut)
		if v != tt.want {
			t.Errorf("%s: verdict %d, want %d", tt.name, v, tt.want)
			continue
		}
		if v == verdictTCP && (seg.Seq != 7 || seg.Ack != 9 || seg.Flags != FlagACK|FlagPSH || string(seg.Payload) != "data" || seg.Src != cli || seg.Dst != srv) {
			t.Errorf("%s: segment %+v", tt.name, seg)
		}
	}
}

// TestLengthsOnly: the counting mode hands out the same segments, whose
// payloads have the captured lengths and read as zeros; the normal mode's
// payloads are each the segment's own, not the reader's buffer.
func TestLengthsOnly(t *testing.T) {
	var recs []rec
	for i, p := range handshake() {
		recs = append(recs, rec{data: p.frame(t, lkEthernet), ts: t0.Add(time.Duration(i) * time.Millisecond)})
	}
	path := writePcap(t, lkEthernet, false, recs)
	want, _, err := readAll(t, path)
	if err != nil {
		t.Fatal(err)
	}
	src, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	src.LengthsOnly()
	withData := 0
	for i := range want {
		seg, err := src.Next()
		if err != nil {
			t.Fatal(err)
		}
		w := want[i]
		if seg.Src != w.Src || seg.Dst != w.Dst || seg.Seq != w.Seq || seg.Flags != w.Flags || len(seg.Payload) != len(w.Payload) {
			t.Errorf("segment %d: %+v, want %+v", i, seg, w)
		}
		if len(w.Payload) > 0 {
			withData++
			if bytes.Count(seg.Payload, []byte{0}) != len(seg.Payload) || bytes.Count(w.Payload, []byte{0}) == len(w.Payload) {
				t.Errorf("segment %d: payload %q (lengths only), %q", i, seg.Payload, w.Payload)
			}
		}
	}
	if withData == 0 {
		t.Fatal("no segment with a payload: nothing checked")
	}
	if _, err := src.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("after the last segment: %v, want EOF", err)
	}
}
