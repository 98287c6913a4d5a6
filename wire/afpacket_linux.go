package wire

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"unsafe"

	"github.com/stackcopy/stackcopy/internal/afpacket"
	"github.com/stackcopy/stackcopy/internal/quietio"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// AFPacket is a Wire that writes each IPv4 packet as an Ethernet frame
// [next hop MAC][interface MAC][0x0800] straight to one interface through
// an AF_PACKET socket. The replay host's IP layer never sees the packets:
// no routes, no reverse-path filter, no conntrack, no iptables OUTPUT, and
// the forged source needs no local route (tcpcopy's --pcap-send). The next
// hop's MAC is fixed at open (hostnet.ResolveNextHop finds it). GSO super-packets
// are cut into MSS-sized segments in userspace (Splitter) and the
// segments of one super-packet go out in one sendmmsg call.
//
// Like Raw it only sends: answers come back some other way (an
// interception of the target's answers calling InjectInbound).
type AFPacket struct {
	ifname string
	mtu    int
	file   *os.File
	q      *quietio.Conn // sends, on the socket: see package quietio
	split  *Splitter
	batch  mmsgBatch
	addr   unix.RawSockaddrLinklayer
}

var _ Device = (*AFPacket)(nil)

// ethHdrLen is the Ethernet header the frames carry (no VLAN tag).
const ethHdrLen = 14

// htons converts a 16-bit value to network byte order, as sockaddr_ll's
// protocol field wants it.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// OpenAFPacket opens an AF_PACKET socket on the Ethernet interface ifname
// that sends frames to nextHop (the target's MAC on a LAN, else the
// gateway's). It needs root or CAP_NET_RAW.
//
// The socket is opened with protocol 0 and each frame is sent with
// sll_protocol ETH_P_IP: a socket opened or bound with ETH_P_IP would also
// receive a copy of every IPv4 frame crossing the interface, which a
// send-only wire does not want to pay for.
func OpenAFPacket(ifname string, nextHop net.HardwareAddr) (*AFPacket, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("afpacket %s: %w", ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("afpacket %s: not an Ethernet interface (hardware address %q)", ifname, ifi.HardwareAddr)
	}
	if len(nextHop) != 6 {
		return nil, fmt.Errorf("afpacket %s: next hop %q is not an Ethernet (6-byte) address", ifname, nextHop)
	}
	fd, err := afpacket.Open(false)
	if err != nil {
		return nil, fmt.Errorf("afpacket %s: %w", ifname, err)
	}
	// Bound with protocol 0: tied to the interface, receives nothing.
	if err := afpacket.Bind(fd, ifi.Index, afpacket.ProtoNone); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("afpacket %s: %w", ifname, err)
	}
	setSendBuffer(fd, wireSendBuffer)
	f := os.NewFile(uintptr(fd), "afpacket-"+ifname)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("afpacket %s: %w", ifname, err)
	}
	eth := make([]byte, ethHdrLen)
	copy(eth[0:6], nextHop)
	copy(eth[6:12], ifi.HardwareAddr)
	eth[12], eth[13] = 0x08, 0x00 // ETH_P_IP
	a := &AFPacket{
		ifname: ifi.Name,
		mtu:    ifi.MTU,
		file:   f,
		q:      quietio.NewRaw(rc),
		split:  NewSplitter(eth),
		addr: unix.RawSockaddrLinklayer{
			Family:   unix.AF_PACKET,
			Protocol: htons(unix.ETH_P_IP),
			Ifindex:  int32(ifi.Index),
			Halen:    6,
		},
	}
	copy(a.addr.Addr[:], nextHop)
	return a, nil
}

// BatchSize implements Device.
func (a *AFPacket) BatchSize() int { return sendBatch }

// Write implements Device: each packet is segmented and checksummed as its
// GSO says, and its segments go out in one sendmmsg call.
func (a *AFPacket) Write(pkts []Packet) (int, error) {
	for i, p := range pkts {
		if err := a.write(p.Bufs, p.GSO); err != nil {
			return i, err
		}
	}
	return len(pkts), nil
}

func (a *AFPacket) write(bufs [][]byte, gso GSO) error {
	if len(bufs) == 0 || len(bufs[0]) == 0 || header.IPVersion(bufs[0]) != header.IPv4Version {
		return fmt.Errorf("afpacket %s: not an IPv4 packet (the AF_PACKET wire sends IPv4 only)", a.ifname)
	}
	frames, err := a.split.Split(bufs, gso)
	if err != nil {
		return fmt.Errorf("afpacket %s: %w", a.ifname, err)
	}
	if i, err := a.batch.send(a.q, frames, (*byte)(unsafe.Pointer(&a.addr)), unix.SizeofSockaddrLinklayer); err != nil {
		var dst netip.Addr
		if f := frames[i]; len(f) >= ethHdrLen+header.IPv4MinimumSize {
			dst = netip.AddrFrom4(header.IPv4(f[ethHdrLen:]).DestinationAddress().As4())
		}
		return sendError("afpacket "+a.ifname, dst, len(frames[i])-ethHdrLen, err)
	}
	return nil
}

// Close implements Device.
func (a *AFPacket) Close() error {
	return a.file.Close()
}
