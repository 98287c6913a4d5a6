// Package hostnet prepares the host side of a TUN deployment: it brings
// the device up, routes forged client addresses into it (and removes
// exactly the routes it added), and checks the sysctls and routes that
// would silently stop forged packets, naming the command that fixes each.
//
// hostnet changes the host only through the devices, routes and sysctls it
// is asked about, and imports nothing of stackcopy; it must not import
// netstack, wire, replay, relay, mirror or intercept.
package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Device is a configured TUN device and the routes added through it.
type Device struct {
	link netlink.Link

	mu     sync.Mutex
	routes map[netip.Addr]*netlink.Route
}

// Setup brings the TUN named name up with the given MTU and a long
// transmit queue: the kernel queues the target's answers towards the
// stack there, and the default of 500 drops bursts of short sessions.
func Setup(name string, mtu, txqueuelen int) (*Device, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("hostnet: find %s: %w", name, err)
	}
	if err := netlink.LinkSetMTU(l, mtu); err != nil {
		return nil, fmt.Errorf("hostnet: set %s mtu %d: %w", name, mtu, err)
	}
	if err := netlink.LinkSetTxQLen(l, txqueuelen); err != nil {
		return nil, fmt.Errorf("hostnet: set %s txqueuelen %d: %w", name, txqueuelen, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("hostnet: set %s up: %w", name, err)
	}
	return &Device{link: l, routes: make(map[netip.Addr]*netlink.Route)}, nil
}

// Route sends traffic for the forged client address a into the device, so
// the target's answers reach the stack and the kernel's reverse-path check
// accepts the forged source. Adding an address twice is a no-op.
func (d *Device) Route(a netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.routes[a]; ok {
		return nil
	}
	// If this host reaches a on a real, specific route (a connected
	// subnet, a host route), real users live there: routing a into the TUN
	// would divert this host's own answers to them into the stack.
	if cur, err := netlink.RouteGet(a.AsSlice()); err == nil && len(cur) > 0 {
		r := cur[0]
		if r.LinkIndex != d.link.Attrs().Index && r.Gw == nil && r.Type != unix.RTN_LOCAL {
			via := "another interface"
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				via = l.Attrs().Name
			}
			return fmt.Errorf("hostnet: forged client %s is on-link via %s here: routing it into %s would divert this host's answers to the real client; use -c POOL to forge other addresses, or intercept (-s)", a, via, d.link.Attrs().Name)
		}
		if r.Type == unix.RTN_LOCAL {
			return fmt.Errorf("hostnet: forged client %s is an address of this host; use -c POOL", a)
		}
	}
	bits := 32
	if a.Is6() {
		bits = 128
	}
	r := &netlink.Route{
		LinkIndex: d.link.Attrs().Index,
		Dst:       &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)},
		Scope:     netlink.SCOPE_LINK,
	}
	if err := netlink.RouteAdd(r); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("hostnet: route %s: a route for this forged client already exists outside stackcopy; remove it (ip route del %s) or use -c to map clients elsewhere", a, a)
		}
		return fmt.Errorf("hostnet: route %s dev %s: %w", a, d.link.Attrs().Name, err)
	}
	d.routes[a] = r
	return nil
}

// Routes is the number of routes added.
func (d *Device) Routes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.routes)
}

// Close removes every route Route added. The device itself disappears
// when its file descriptor is closed.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for a, r := range d.routes {
		if err := netlink.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("hostnet: remove route %s: %w", a, err))
		}
		delete(d.routes, a)
	}
	return errors.Join(errs...)
}

// Preflight checks that forged packets written into the TUN named dev can
// reach target: forwarding is on when target is not a local address, and
// the route to target does not lead back into the TUN. routed says whether
// stackcopy routes forged clients into the TUN itself (then strict
// reverse-path filtering passes).
func Preflight(dev string, target netip.Addr, routed bool) error {
	routes, err := netlink.RouteGet(target.AsSlice())
	if err != nil || len(routes) == 0 {
		return fmt.Errorf("preflight: no route to target %s: add one (ip route add %s via NEXT-HOP)", target, target)
	}
	out := routes[0]
	local := out.Type == unix.RTN_LOCAL
	if !local && out.LinkIndex > 0 {
		l, err := netlink.LinkByIndex(out.LinkIndex)
		if err == nil && l.Attrs().Name == dev {
			return fmt.Errorf("preflight: the route to target %s leads into %s itself; route it via the real interface", target, dev)
		}
	}
	if !local && target.Is4() {
		v, err := readSysctl("net/ipv4/ip_forward")
		if err != nil {
			return fmt.Errorf("preflight: %w", err)
		}
		if v != "1" {
			return fmt.Errorf("preflight: net.ipv4.ip_forward is %s: the kernel will not forward forged packets from %s to %s; run: sysctl -w net.ipv4.ip_forward=1", v, dev, target)
		}
	}
	if !routed && target.Is4() {
		for _, name := range []string{"all", dev} {
			v, err := readSysctl("net/ipv4/conf/" + name + "/rp_filter")
			if err != nil {
				continue // the device may not exist yet
			}
			if v == "1" {
				return fmt.Errorf("preflight: net.ipv4.conf.%s.rp_filter is 1 (strict) and forged clients are not routed into %s: the kernel drops their packets; run: sysctl -w net.ipv4.conf.%s.rp_filter=2", name, dev, name)
			}
		}
	}
	return nil
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + path)
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", strings.ReplaceAll(path, "/", "."), err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Drops reads the kernel's drop counters of the device: packets the kernel
// could not queue towards the stack (tx_dropped: the transmit queue was
// full) and packets written by the stack it refused (rx_dropped).
func (d *Device) Drops() (tx, rx uint64) {
	name := d.link.Attrs().Name
	read := func(what string) uint64 {
		b, err := os.ReadFile("/sys/class/net/" + name + "/statistics/" + what)
		if err != nil {
			return 0
		}
		v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		return v
	}
	return read("tx_dropped"), read("rx_dropped")
}
