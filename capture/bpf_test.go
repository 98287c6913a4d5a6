package capture

import (
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/stackcopy/stackcopy/internal/pcapfilter"
	"github.com/stackcopy/stackcopy/transfer"
	"golang.org/x/net/bpf"
)

// livePkt describes one packet for the filter tests; frame and ip build it
// with gopacket, independently of the filter generator.
type livePkt struct {
	src, dst string // ip:port
	udp      bool
	ipv6     bool
	arp      bool
	tags     []layers.EthernetType // TPIDs of VLAN tags left in the frame, outer first
	fragOff  uint16                // in 8-byte units
	mf       bool
	options  bool // an IP option: header length 24
	payload  int
	cut      int // keep only this many bytes of the frame (0: all)
}

func (p livePkt) layers(t testing.TB) []gopacket.SerializableLayer {
	t.Helper()
	src, dst := netip.MustParseAddrPort(p.src), netip.MustParseAddrPort(p.dst)
	var ls []gopacket.SerializableLayer
	payload := gopacket.Payload(make([]byte, p.payload))
	if p.arp {
		return []gopacket.SerializableLayer{&layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: make([]byte, 6), SourceProtAddress: src.Addr().AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: dst.Addr().AsSlice(),
		}}
	}
	var netLayer gopacket.NetworkLayer
	if p.ipv6 {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		if p.udp {
			ip.NextHeader = layers.IPProtocolUDP
		}
		netLayer = ip
		ls = append(ls, ip)
	} else {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice(), FragOffset: p.fragOff}
		if p.udp {
			ip.Protocol = layers.IPProtocolUDP
		}
		if p.mf {
			ip.Flags = layers.IPv4MoreFragments
		}
		if p.options {
			ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}} // router alert
		}
		netLayer = ip
		ls = append(ls, ip)
	}
	if p.udp {
		u := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
		_ = u.SetNetworkLayerForChecksum(netLayer)
		return append(ls, u, payload)
	}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: 1000, Ack: 2000, ACK: true, PSH: p.payload > 0, Window: 65535}
	_ = tcp.SetNetworkLayerForChecksum(netLayer)
	return append(ls, tcp, payload)
}

func liveSerialize(t testing.TB, ls []gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// frame builds the Ethernet frame, with p.tags as inline VLAN tags.
func (p livePkt) frame(t testing.TB) []byte {
	t.Helper()
	inner := layers.EthernetTypeIPv4
	switch {
	case p.arp:
		inner = layers.EthernetTypeARP
	case p.ipv6:
		inner = layers.EthernetTypeIPv6
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: inner}
	ls := []gopacket.SerializableLayer{eth}
	for i, tpid := range p.tags {
		if i == 0 {
			eth.EthernetType = tpid
		}
		next := inner
		if i+1 < len(p.tags) {
			next = p.tags[i+1]
		}
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: uint16(100 + i), Type: next})
	}
	b := liveSerialize(t, append(ls, p.layers(t)...))
	if p.cut > 0 {
		b = b[:p.cut]
	}
	return b
}

// ip builds the packet from the IP header on, as a cooked socket's filter
// sees it.
func (p livePkt) ip(t testing.TB) []byte {
	t.Helper()
	b := liveSerialize(t, p.layers(t))
	if p.cut > 0 {
		b = b[:p.cut-14]
	}
	return b
}

func runFilter(t *testing.T, prog []bpf.Instruction, pkt []byte) int {
	t.Helper()
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	n, err := vm.Run(pkt)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var (
	dot1q = layers.EthernetTypeDot1Q
	qinq  = layers.EthernetTypeQinQ
)

// filterCases: transfers "80-…" (any address) and "198.18.1.1:8080-…".
var filterCases = []struct {
	name  string
	p     livePkt
	match bool
}{
	{"to port-only server", livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:80", payload: 100}, true},
	{"from port-only server", livePkt{src: "198.18.1.1:80", dst: "198.18.1.10:40000", payload: 1448}, true},
	{"port-only server, other address", livePkt{src: "198.18.1.10:40000", dst: "10.1.2.3:80"}, true},
	{"from port-only server, other address", livePkt{src: "10.1.2.3:80", dst: "198.18.1.10:40000"}, true},
	{"to ip:port server", livePkt{src: "198.18.1.10:40001", dst: "198.18.1.1:8080", payload: 10}, true},
	{"from ip:port server", livePkt{src: "198.18.1.1:8080", dst: "198.18.1.10:40001"}, true},
	{"ip:port server port, wrong destination", livePkt{src: "198.18.1.10:40001", dst: "198.18.1.9:8080"}, false},
	{"ip:port server port, wrong source", livePkt{src: "198.18.1.9:8080", dst: "198.18.1.10:40001"}, false},
	{"server address, other port", livePkt{src: "198.18.1.10:40001", dst: "198.18.1.1:81"}, false},
	{"from server address, other port", livePkt{src: "198.18.1.1:81", dst: "198.18.1.10:40001"}, false},
	{"to 8080 from the ip:port server's address as client", livePkt{src: "198.18.1.1:40001", dst: "198.18.1.9:8080"}, false},
	{"other traffic", livePkt{src: "198.18.1.10:40002", dst: "198.18.1.20:443", payload: 500}, false},
	{"UDP on a mirrored port", livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:80", udp: true}, false},
	{"IPv6 TCP on a mirrored port", livePkt{src: "[2001:db8::1]:40000", dst: "[2001:db8::2]:80", ipv6: true}, false},
	{"ARP", livePkt{src: "198.18.1.10:0", dst: "198.18.1.1:0", arp: true}, false},
	{"IP options", livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:80", options: true, payload: 20}, true},
	{"IP options, other port", livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:81", options: true}, false},
	{"first fragment", livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:80", mf: true, payload: 100}, true},
	{"non-first fragment", livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:80", fragOff: 100, payload: 100}, false},
	{"cut inside the TCP header", livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:80", cut: 14 + 20 + 2}, false},
	{"802.1Q", livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:80", tags: []layers.EthernetType{dot1q}, payload: 10}, true},
	{"802.1Q, from server", livePkt{src: "198.18.1.1:8080", dst: "198.18.1.10:40000", tags: []layers.EthernetType{dot1q}}, true},
	{"802.1Q, other port", livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:81", tags: []layers.EthernetType{dot1q}}, false},
	{"802.1ad+802.1Q", livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:80", tags: []layers.EthernetType{qinq, dot1q}}, true},
	{"0x9100 tag", livePkt{src: "198.18.1.1:80", dst: "198.18.1.10:40000", tags: []layers.EthernetType{0x9100}}, true},
	{"802.1Q, IP options", livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:8080", tags: []layers.EthernetType{dot1q}, options: true}, true},
	{"three tags: more than the filter looks through", livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:80", tags: []layers.EthernetType{qinq, dot1q, dot1q}}, false},
	{"802.1Q, IPv6", livePkt{src: "[2001:db8::1]:40000", dst: "[2001:db8::2]:80", ipv6: true, tags: []layers.EthernetType{dot1q}}, false},
}

func TestTransferFilter(t *testing.T) {
	ts, err := transfer.ParseTransfers("80-198.18.2.2:80,198.18.1.1:8080-198.18.2.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	const snaplen = 262144
	eth, err := transferFilter(ts, filterEthernet, snaplen)
	if err != nil {
		t.Fatal(err)
	}
	cooked, err := transferFilter(ts, filterCooked, snaplen)
	if err != nil {
		t.Fatal(err)
	}
	for _, prog := range [][]bpf.Instruction{eth, cooked} {
		if _, err := bpf.Assemble(prog); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range filterCases {
		t.Run(tc.name, func(t *testing.T) {
			frame := tc.p.frame(t)
			n := runFilter(t, eth, frame)
			if got := n > 0; got != tc.match {
				t.Errorf("ethernet filter: match %v, want %v (%d bytes)", got, tc.match, len(frame))
			}
			if tc.match && n != snaplen {
				t.Errorf("ethernet filter returned %d, want the snap length", n)
			}
			// The userspace check agrees with the kernel filter on every
			// complete IPv4 TCP packet (the decoder looks through more
			// VLAN tags than the filter).
			if seg, v := decode(linkEthernet, frame, false); v == verdictTCP && len(tc.p.tags) <= 2 {
				if user := ts.IsServer(seg.Dst) || ts.IsServer(seg.Src); user != tc.match {
					t.Errorf("transfer.Transfers says %v, filter wants %v", user, tc.match)
				}
			}
			if len(tc.p.tags) > 0 || tc.p.arp {
				return // no such packet on a cooked socket
			}
			ip := tc.p.ip(t)
			if got := runFilter(t, cooked, ip) > 0; got != tc.match {
				t.Errorf("cooked filter: match %v, want %v", got, tc.match)
			}
		})
	}
}

// TestTransferFilterSnaplen: the filter returns the snap length, so the
// kernel keeps at most that much of a packet. (x/net/bpf's VM returns the
// program's value as is; the kernel caps it at the packet's length.)
func TestTransferFilterSnaplen(t *testing.T) {
	ts, _ := transfer.ParseTransfers("80-198.18.2.2:80")
	prog, err := transferFilter(ts, filterEthernet, 100)
	if err != nil {
		t.Fatal(err)
	}
	frame := livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:80", payload: 1000}.frame(t)
	if n := runFilter(t, prog, frame); n != 100 {
		t.Errorf("kept %d bytes, want 100", n)
	}
}

func TestTransferFilterLimits(t *testing.T) {
	// IPv6 online addresses cannot match IPv4 traffic.
	ts, _ := transfer.ParseTransfers("[2001:db8::1]:80-198.18.2.2:80")
	if _, err := transferFilter(ts, filterEthernet, 65535); err == nil || !strings.Contains(err.Error(), "IPv4") {
		t.Errorf("IPv6-only transfers: %v, want an error naming IPv4", err)
	}
	// Many transfers: every jump stays short; the kernel's limit holds.
	var items []string
	for i := range 400 {
		items = append(items, "198.18.1."+strconv.Itoa(1+i%250)+":"+strconv.Itoa(1000+i)+"-198.18.2.2:80")
	}
	ts, err := transfer.ParseTransfers(strings.Join(items, ","))
	if err != nil {
		t.Fatal(err)
	}
	prog, err := transferFilter(ts, filterEthernet, 65535)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bpf.Assemble(prog); err != nil {
		t.Fatal(err)
	}
	last := livePkt{src: "198.18.1.150:1399", dst: "198.18.1.77:40000"}.frame(t)
	if runFilter(t, prog, last) == 0 {
		t.Error("400 transfers: the last one's server traffic does not match")
	}
	if runFilter(t, prog, livePkt{src: "198.18.1.151:1399", dst: "198.18.1.77:40000"}.frame(t)) != 0 {
		t.Error("400 transfers: wrong address matches")
	}
	for i := range 100 {
		items = append(items, "198.18.0."+strconv.Itoa(1+i)+":"+strconv.Itoa(2000+i)+"-198.18.2.2:80")
	}
	ts, err = transfer.ParseTransfers(strings.Join(items, ","))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := transferFilter(ts, filterEthernet, 65535); err == nil || !strings.Contains(err.Error(), "4096") {
		t.Errorf("500 transfers: %v, want an error naming the kernel's limit", err)
	}
}

// TestCompilePcapFilter: -F is compiled by tcpdump; the program it prints
// runs (here in x/net/bpf's VM) on Ethernet frames and on cooked packets.
func TestCompilePcapFilter(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump not installed")
	}
	for _, link := range []filterLink{filterEthernet, filterCooked} {
		raw, err := pcapfilter.Compile("tcp port 80 and host 198.18.1.1", link, 262144)
		if err != nil {
			t.Fatal(err)
		}
		prog, ok := bpf.Disassemble(raw)
		if !ok {
			t.Fatalf("%v: tcpdump's program does not disassemble: %v", link, prog)
		}
		for _, tc := range []struct {
			p     livePkt
			match bool
		}{
			{livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:80", payload: 10}, true},
			{livePkt{src: "198.18.1.1:80", dst: "198.18.1.10:40000"}, true},
			{livePkt{src: "198.18.1.10:40000", dst: "198.18.1.1:81"}, false},
			{livePkt{src: "198.18.1.10:40000", dst: "198.18.1.2:80"}, false},
		} {
			pkt := tc.p.frame(t)
			if link == filterCooked {
				pkt = tc.p.ip(t)
			}
			n := runFilter(t, prog, pkt)
			if (n > 0) != tc.match {
				t.Errorf("%v: %s -> %s: match %v, want %v", link, tc.p.src, tc.p.dst, n > 0, tc.match)
			}
			if n > 0 && n != 262144 {
				t.Errorf("%v: returned %d, want the snap length", link, n)
			}
		}
	}
	_, err := pcapfilter.Compile("tcp prot 80", filterEthernet, 262144)
	if err == nil || !strings.Contains(err.Error(), `filter "tcp prot 80": `) || !strings.Contains(err.Error(), "syntax error") || strings.Contains(err.Error(), "\n") {
		t.Errorf("bad filter: %v, want one line naming the filter and tcpdump's complaint", err)
	}
	t.Logf("bad filter: %v", err)
}
