package hostnet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Next-hop resolution for link-layer egress (-o IFACE): the MAC address
// the forged frames must carry, read from the kernel's routes and
// neighbour table.

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
