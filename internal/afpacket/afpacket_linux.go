// Package afpacket is the AF_PACKET socket plumbing stackcopy's packet
// sockets share: the live capture rings (capture), intercept's answer
// capture and the AF_PACKET egress wire (wire). It owns opening a packet
// socket, binding it to an interface, looking an interface up (index,
// hardware type, up state), attaching a classic BPF program and reading
// the kernel's PACKET_STATISTICS. What each caller does with its socket
// (rings, recvmmsg, sendmmsg, socket options only one of them sets) stays
// with the caller.
//
// It imports only the standard library, golang.org/x/sys/unix and
// golang.org/x/net/bpf (the program type the filter builders produce);
// never a stackcopy package. Errors say what failed but not where: the
// caller prefixes the interface or device it was working on.
package afpacket

import (
	"errors"
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Interface is what a packet socket needs to know of a network interface.
type Interface struct {
	Name   string
	Index  int
	HWType uint16 // ARPHRD_*
	Up     bool
}

// Cooked reports whether a packet socket reads the interface "cooked"
// (SOCK_DGRAM: packets from the network header on, the link header
// described by a sockaddr_ll): every link but Ethernet and loopback, whose
// frames stackcopy's callers know how to strip.
func (i Interface) Cooked() bool {
	return i.HWType != unix.ARPHRD_ETHER && i.HWType != unix.ARPHRD_LOOPBACK
}

// NoInterfaceError reads "no such network interface" and matches
// unix.ENODEV (errors.Is).
type NoInterfaceError struct{}

func (NoInterfaceError) Error() string { return "no such network interface" }
func (NoInterfaceError) Unwrap() error { return unix.ENODEV }

// LookupInterface returns an interface's index, hardware type and whether
// it is up. It asks the kernel with ioctls on a throwaway UDP socket,
// which needs no privileges; an unknown name is a NoInterfaceError.
func LookupInterface(name string) (Interface, error) {
	if _, err := unix.NewIfreq(name); err != nil {
		return Interface{}, fmt.Errorf("bad interface name: %w", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return Interface{}, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ioctl := func(req uint, what string) (*unix.Ifreq, error) {
		ifr, _ := unix.NewIfreq(name) // the name was checked above
		if err := unix.IoctlIfreq(fd, req, ifr); err != nil {
			if errors.Is(err, unix.ENODEV) {
				return nil, NoInterfaceError{}
			}
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		return ifr, nil
	}
	ifi := Interface{Name: name}
	ifr, err := ioctl(unix.SIOCGIFINDEX, "interface index")
	if err != nil {
		return Interface{}, err
	}
	ifi.Index = int(ifr.Uint32())
	if ifr, err = ioctl(unix.SIOCGIFHWADDR, "hardware type"); err != nil {
		return Interface{}, err
	}
	ifi.HWType = ifr.Uint16() // sa_family of ifr_hwaddr
	if ifr, err = ioctl(unix.SIOCGIFFLAGS, "interface flags"); err != nil {
		return Interface{}, err
	}
	ifi.Up = ifr.Uint16()&unix.IFF_UP != 0
	return ifi, nil
}

// Open opens a non-blocking, close-on-exec packet socket: SOCK_RAW (whole
// frames) or, cooked, SOCK_DGRAM. It is opened with protocol 0, so nothing
// is queued on it before Bind: a filter attached in between sees every
// packet the socket will ever get. Without CAP_NET_RAW the error says so.
func Open(cooked bool) (int, error) {
	typ, name := unix.SOCK_RAW, "SOCK_RAW"
	if cooked {
		typ, name = unix.SOCK_DGRAM, "SOCK_DGRAM"
	}
	fd, err := unix.Socket(unix.AF_PACKET, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return -1, fmt.Errorf("%w (needs root or CAP_NET_RAW)", err)
		}
		return -1, fmt.Errorf("socket(AF_PACKET, %s): %w", name, err)
	}
	return fd, nil
}

// Protocols for Bind.
const (
	// ProtoNone receives nothing: a send-only socket, tied to its
	// interface.
	ProtoNone uint16 = 0
	// ProtoAll receives every protocol (ETH_P_ALL).
	ProtoAll uint16 = unix.ETH_P_ALL
)

// Bind binds fd to interface index (0: every interface) and starts the
// delivery of proto (host byte order; ProtoNone, ProtoAll or an ETH_P_*).
func Bind(fd, index int, proto uint16) error {
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: index}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	return nil
}

// htons converts to network byte order, as sockaddr_ll's protocol wants.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// AttachFilter attaches a classic BPF program (SO_ATTACH_FILTER): the
// kernel passes to the socket only what it accepts, cut to the length it
// returns.
func AttachFilter(fd int, prog []bpf.RawInstruction) error {
	if len(prog) == 0 || len(prog) > 0xffff {
		return fmt.Errorf("attach filter: a program of %d instructions", len(prog))
	}
	sf := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		sf[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(sf)), Filter: &sf[0]}); err != nil {
		return fmt.Errorf("attach filter: %w", err)
	}
	return nil
}

// Stats are a packet socket's kernel counters (PACKET_STATISTICS).
type Stats struct {
	// Packets passed the filter, dropped ones included.
	Packets uint64
	// Drops passed the filter but found the receive buffer or ring full.
	Drops uint64
	// FreezeQueue counts the times a TPACKET_V3 ring ran full; 0 for
	// other sockets.
	FreezeQueue uint64
}

// ReadStats returns the counters since the last call: reading resets
// them in the kernel, so the caller sums.
func ReadStats(fd int) (Stats, error) {
	// The V3 layout starts with the V1 one; on a socket without a V3 ring
	// the kernel fills only that and the freeze count stays 0.
	st, err := unix.GetsockoptTpacketStatsV3(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return Stats{}, fmt.Errorf("PACKET_STATISTICS: %w", err)
	}
	return Stats{Packets: uint64(st.Packets), Drops: uint64(st.Drops), FreezeQueue: uint64(st.Freeze_q_cnt)}, nil
}
