package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Read-only views of the host for `stackcopy doctor` and `intercept
// doctor`: the same sysctl reader and route lookups Preflight uses, so the
// doctor and the run cannot disagree about what the host looks like. None
// of these change the host: no sysctl is written, no neighbour resolved,
// no device created.

// Sysctl reads the sysctl at path, relative to /proc/sys with slashes
// ("net/ipv4/ip_forward"; slashes keep interface names with dots, such as
// VLANs, unambiguous). Errors name it in dotted form.
func Sysctl(path string) (string, error) {
	return readSysctl(path)
}

// RouteInfo is the route the kernel picks for a destination.
type RouteInfo struct {
	Dev     string     // output interface ("" for a local address)
	Gateway netip.Addr // next hop; invalid when the destination is on-link
	Source  netip.Addr // preferred source address of this host towards it
	Local   bool       // the destination is an address of this host
}

// RouteTo asks the kernel which route it would use for dst (ip route get).
func RouteTo(dst netip.Addr) (RouteInfo, error) {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil {
		return RouteInfo{}, fmt.Errorf("hostnet: route to %s: %w", dst, err)
	}
	if len(routes) == 0 {
		return RouteInfo{}, fmt.Errorf("hostnet: no route to %s", dst)
	}
	r := routes[0]
	ri := RouteInfo{Local: r.Type == unix.RTN_LOCAL}
	if r.LinkIndex > 0 {
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			ri.Dev = l.Attrs().Name
		}
	}
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && r.Gw != nil {
		ri.Gateway = gw.Unmap()
	}
	if src, ok := netip.AddrFromSlice(r.Src); ok && r.Src != nil {
		ri.Source = src.Unmap()
	}
	return ri, nil
}

// LinkState describes a network interface.
type LinkState struct {
	Exists bool
	Type   string // netlink kind: "tuntap", "veth", "device", ...
	Up     bool   // administratively up (IFF_UP)
	Oper   string // operational state: "up", "down", "unknown", ...
	MTU    int
}

// Link reports the interface named name; Exists is false when there is
// none (not an error).
func Link(name string) (LinkState, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return LinkState{}, nil
		}
		return LinkState{}, fmt.Errorf("hostnet: find %s: %w", name, err)
	}
	a := l.Attrs()
	return LinkState{
		Exists: true,
		Type:   l.Type(),
		Up:     a.Flags&net.FlagUp != 0,
		Oper:   a.OperState.String(),
		MTU:    a.MTU,
	}, nil
}

// CachedNextHop is what the neighbour table holds now for the next hop of
// dst out of ifname: the hop's address, its MAC (nil when not resolved)
// and the entry's state. Unlike ResolveNextHop it never makes the kernel
// resolve anything.
func CachedNextHop(ifname string, dst netip.Addr) (hop netip.Addr, mac net.HardwareAddr, state string, err error) {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return netip.Addr{}, nil, "", fmt.Errorf("hostnet: %s: %w", ifname, err)
	}
	routes, err := netlink.RouteGetWithOptions(dst.AsSlice(), &netlink.RouteGetOptions{Oif: ifname})
	if err != nil || len(routes) == 0 {
		return netip.Addr{}, nil, "", fmt.Errorf("hostnet: no route to %s out of %s (check: ip route get %s oif %s)", dst, ifname, dst, ifname)
	}
	hop = dst
	if gw, ok := netip.AddrFromSlice(routes[0].Gw); ok && routes[0].Gw != nil {
		hop = gw.Unmap()
	}
	mac, state, err = neighbour(link.Attrs().Index, hop)
	if err != nil {
		return hop, nil, "", fmt.Errorf("hostnet: neighbour table: %w", err)
	}
	return hop, mac, state, nil
}

// Offloads are the receive and segmentation offloads of an interface,
// which decide what a packet capture on it sees: with GRO or LRO the
// kernel (or NIC) merges a flow's segments into super-packets before
// AF_PACKET and NFQUEUE see them; with TSO/GSO outgoing packets are
// captured before they are cut into MTU-sized segments.
type Offloads struct {
	GRO, LRO, TSO bool
}

// ethtool command numbers and flags (linux/ethtool.h) that x/sys/unix
// does not export.
const (
	ethtoolGGSO   = 0x23
	ethFlagLRO    = 1 << 15
	ifreqUnionLen = 24 // the union after ifr_name in struct ifreq (64-bit)
)

// ReadOffloads queries the interface's offloads with the legacy ethtool
// get commands (read-only ioctls; ethtool itself need not be installed).
func ReadOffloads(ifname string) (Offloads, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return Offloads{}, fmt.Errorf("hostnet: ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	get := func(cmd uint32) (uint32, error) {
		v := struct{ cmd, data uint32 }{cmd: cmd}
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data unsafe.Pointer
			_    [ifreqUnionLen - 8]byte
		}
		if len(ifname) >= unix.IFNAMSIZ {
			return 0, fmt.Errorf("hostnet: interface name %q too long", ifname)
		}
		copy(ifr.name[:], ifname)
		ifr.data = unsafe.Pointer(&v)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(&v)
		if errno != 0 {
			return 0, errno
		}
		return v.data, nil
	}
	var o Offloads
	gro, err := get(unix.ETHTOOL_GGRO)
	if err != nil {
		return Offloads{}, fmt.Errorf("hostnet: %s: ethtool get GRO: %w", ifname, err)
	}
	o.GRO = gro != 0
	if flags, err := get(unix.ETHTOOL_GFLAGS); err == nil {
		o.LRO = flags&ethFlagLRO != 0
	}
	if tso, err := get(unix.ETHTOOL_GTSO); err == nil {
		o.TSO = tso != 0
	}
	if !o.TSO {
		// Software GSO has the same effect on what a capture of outgoing
		// packets sees.
		if gso, err := get(ethtoolGGSO); err == nil {
			o.TSO = gso != 0
		}
	}
	return o, nil
}

// TUNAvailable says whether this host can create TUN devices: the
// /dev/net/tun node exists and is a character device. When it does not,
// hint names the likely fix.
func TUNAvailable() (ok bool, hint string) {
	fi, err := os.Stat("/dev/net/tun")
	if err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return true, ""
	}
	if _, err := os.Stat("/sys/module/tun"); err == nil {
		// The driver is loaded but the node is missing (a container
		// without /dev/net/tun passed in).
		return false, "mkdir -p /dev/net && mknod /dev/net/tun c 10 200"
	}
	return false, "modprobe tun"
}

// SysctlName is path in the dotted form sysctl(8) prints, unless an
// element holds a dot (a VLAN interface), where only the slash form is
// unambiguous.
func SysctlName(path string) string {
	for _, p := range strings.Split(path, "/") {
		if strings.Contains(p, ".") {
			return path
		}
	}
	return strings.ReplaceAll(path, "/", ".")
}
