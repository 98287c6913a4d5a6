package wire

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/stackcopy/stackcopy/internal/afpacket"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// AFPacket is a Wire that writes each IPv4 packet as an Ethernet frame
// [next hop MAC][interface MAC][0x0800] straight to one interface through
// an AF_PACKET socket. The replay host's IP layer never sees the packets:
// no routes, no reverse-path filter, no conntrack, no iptables OUTPUT, and
// the forged source needs no local route (tcpcopy's --pcap-send). The next
// hop's MAC is fixed at open (ResolveNextHop finds it). GSO super-packets
// are cut into MSS-sized segments in userspace (Splitter) and the
// segments of one super-packet go out in one sendmmsg call.
//
// Like Raw it only sends: answers come back some other way (an
// interception of the target's answers calling InjectInbound).
type AFPacket struct {
	ifname string
	mtu    int
	file   *os.File
	rc     syscall.RawConn
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
		rc:     rc,
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
	if i, err := a.batch.send(a.rc, frames, (*byte)(unsafe.Pointer(&a.addr)), unix.SizeofSockaddrLinklayer); err != nil {
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

// nextHopWait bounds how long ResolveNextHop waits for the neighbour
// table to learn the next hop's MAC (the kernel sends 3 ARP requests a
// second apart before it gives up).
var nextHopWait = 3500 * time.Millisecond

// ResolveNextHop returns the MAC address frames for dst must carry when
// they leave through ifname: that of the gateway the kernel's routing
// table names for dst out of ifname, or of dst itself when it is on the
// link. It reads the neighbour table (netlink); when the entry is missing
// it makes the kernel resolve it by sending one UDP datagram to the next
// hop's discard port (9) out of ifname, and waits a bounded time.
func ResolveNextHop(ifname string, dst netip.Addr) (net.HardwareAddr, error) {
	if !dst.Is4() {
		return nil, fmt.Errorf("afpacket %s: next hop for %s: IPv4 only", ifname, dst)
	}
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("afpacket %s: %w", ifname, err)
	}
	// With an output interface given, the kernel answers as for a socket
	// bound to it: the gateway of a route through ifname, or dst itself
	// as if on the link.
	routes, err := netlink.RouteGetWithOptions(dst.AsSlice(), &netlink.RouteGetOptions{Oif: ifname})
	if err != nil {
		return nil, fmt.Errorf("afpacket %s: route to %s: %w (check: ip route get %s oif %s)", ifname, dst, err, dst, ifname)
	}
	if len(routes) == 0 {
		return nil, fmt.Errorf("afpacket %s: no route to %s (check: ip route get %s oif %s)", ifname, dst, dst, ifname)
	}
	rt := routes[0]
	if rt.Type == unix.RTN_LOCAL {
		return nil, fmt.Errorf("afpacket %s: %s is an address of this host", ifname, dst)
	}
	hop := dst
	if gw, ok := netip.AddrFromSlice(rt.Gw); ok && rt.Gw != nil {
		hop = gw.Unmap()
	}
	idx := link.Attrs().Index
	deadline := time.Now().Add(nextHopWait)
	var state string
	var poked time.Time
	for {
		mac, st, err := neighbour(idx, hop)
		if err != nil {
			return nil, fmt.Errorf("afpacket %s: neighbour table: %w", ifname, err)
		}
		if mac != nil {
			return mac, nil
		}
		state = st
		now := time.Now()
		if now.After(deadline) {
			break
		}
		// Poke once a second: a FAILED entry is only retried on new traffic.
		if now.Sub(poked) >= time.Second && st != "INCOMPLETE" {
			if err := pokeNeighbour(ifname, hop); err != nil {
				return nil, fmt.Errorf("afpacket %s: resolve next hop %s: %w", ifname, hop, err)
			}
			poked = now
		}
		time.Sleep(20 * time.Millisecond)
	}
	what := "next hop " + hop.String()
	if hop != dst {
		what = fmt.Sprintf("gateway %s (next hop to %s)", hop, dst)
	}
	return nil, fmt.Errorf("afpacket %s: no MAC address for %s after %v (neighbour state %s); check: ip neigh show dev %s",
		ifname, what, nextHopWait, state, ifname)
}

// neighbour looks hop up in the neighbour table of link idx. It returns
// the MAC if the entry is usable, else the entry's state ("none" if
// there is no entry).
func neighbour(idx int, hop netip.Addr) (net.HardwareAddr, string, error) {
	neighs, err := netlink.NeighList(idx, netlink.FAMILY_V4)
	if err != nil {
		return nil, "", err
	}
	const usable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE |
		netlink.NUD_PERMANENT | netlink.NUD_NOARP
	for _, n := range neighs {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || a.Unmap() != hop {
			continue
		}
		if n.State&usable != 0 && len(n.HardwareAddr) == 6 && !isZeroMAC(n.HardwareAddr) {
			return n.HardwareAddr, "", nil
		}
		return nil, neighState(n.State), nil
	}
	return nil, "none", nil
}

func isZeroMAC(m net.HardwareAddr) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}

func neighState(s int) string {
	switch {
	case s&netlink.NUD_INCOMPLETE != 0:
		return "INCOMPLETE"
	case s&netlink.NUD_FAILED != 0:
		return "FAILED"
	case s == netlink.NUD_NONE:
		return "NONE"
	}
	return fmt.Sprintf("0x%x", s)
}

// pokeNeighbour sends one byte to hop's UDP discard port out of ifname, so
// the kernel resolves hop's MAC.
func pokeNeighbour(ifname string, hop netip.Addr) error {
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
		}); err != nil {
			return err
		}
		return serr
	}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "udp4", netip.AddrPortFrom(hop, 9).String())
	if err != nil {
		return err
	}
	defer c.Close()
	// The datagram waits in the neighbour queue until the MAC is known; a
	// send error (EHOSTUNREACH after a failed resolution) changes nothing.
	_, _ = c.Write([]byte{0})
	return nil
}
