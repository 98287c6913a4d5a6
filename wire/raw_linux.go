package wire

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"
	"unsafe"

	"github.com/stackcopy/stackcopy/internal/quietio"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// wireSendBuffer is the socket send buffer Raw and AFPacket ask for: the
// default (~200 KiB) holds about 90 MTU-sized packets, less than two
// super-packets; when it is full a write waits (backpressure) instead of
// failing.
const wireSendBuffer = 4 << 20

// sendBatch is how many packets the stack's writer gathers for one Write
// to a send-only device.
const sendBatch = 64

// Raw is a Wire that sends each IPv4 packet through an IPPROTO_RAW socket
// (IP_HDRINCL implied): the kernel routes it to its destination address as
// it is, forged source included, so the replay host needs no TUN, no
// forwarding and no routes for the forged clients. GSO super-packets are
// cut into MSS-sized segments in userspace first (Splitter); the
// segments of one super-packet go out in one sendmmsg call.
//
// The packets still cross the replay host's IP layer on the way out: the
// route to the destination (and its MTU: a packet larger fails with
// EMSGSIZE), iptables OUTPUT and POSTROUTING, conntrack if loaded.
// AFPacket avoids all of it.
//
// A raw socket bypasses the TUN loop: the target's answers to the forged
// clients do not come back through it, and an IPPROTO_RAW socket receives
// nothing. Raw has no ReadPacket; answers must reach the stack some other
// way (an interception of the target's answers calling InjectInbound).
// The replay host's kernel sees those answers too, for addresses it does
// not own: with IP forwarding off it drops them silently (counted in Ip
// InAddrErrors, no RST, no ICMP); with forwarding on it would route them
// on.
type Raw struct {
	file  *os.File
	q     *quietio.Conn // sends, on the socket: see package quietio
	split *Splitter
	batch mmsgBatch
	dst   unix.RawSockaddrInet4
}

var _ Device = (*Raw)(nil)

// OpenRaw opens the raw socket. It needs root or CAP_NET_RAW.
func OpenRaw() (*Raw, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("raw: socket(AF_INET, SOCK_RAW, IPPROTO_RAW): %w (needs root or CAP_NET_RAW)", err)
		}
		return nil, fmt.Errorf("raw: socket(AF_INET, SOCK_RAW, IPPROTO_RAW): %w", err)
	}
	setSendBuffer(fd, wireSendBuffer)
	f := os.NewFile(uintptr(fd), "raw-ip")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("raw: %w", err)
	}
	return &Raw{file: f, q: quietio.NewRaw(rc), split: NewSplitter(nil), dst: unix.RawSockaddrInet4{Family: unix.AF_INET}}, nil
}

// BatchSize implements Device.
func (r *Raw) BatchSize() int { return sendBatch }

// Write implements Device: each packet is segmented and checksummed as its
// GSO says, and its segments go out in one sendmmsg call.
func (r *Raw) Write(pkts []Packet) (int, error) {
	for i, p := range pkts {
		if err := r.write(p.Bufs, p.GSO); err != nil {
			return i, err
		}
	}
	return len(pkts), nil
}

func (r *Raw) write(bufs [][]byte, gso GSO) error {
	if len(bufs) == 0 || len(bufs[0]) == 0 || header.IPVersion(bufs[0]) != header.IPv4Version {
		return errors.New("raw: not an IPv4 packet (the raw wire sends IPv4 only)")
	}
	pkts, err := r.split.Split(bufs, gso)
	if err != nil {
		return fmt.Errorf("raw: %w", err)
	}
	// All packets of one call share the destination of the first.
	if len(pkts[0]) < header.IPv4MinimumSize {
		return fmt.Errorf("raw: %w: %d-byte IPv4 packet", ErrMalformed, len(pkts[0]))
	}
	r.dst.Addr = header.IPv4(pkts[0]).DestinationAddress().As4()
	if i, err := r.batch.send(r.q, pkts, (*byte)(unsafe.Pointer(&r.dst)), unix.SizeofSockaddrInet4); err != nil {
		return sendError("raw", netip.AddrFrom4(r.dst.Addr), len(pkts[i]), err)
	}
	return nil
}

// Close implements Device.
func (r *Raw) Close() error {
	return r.file.Close()
}

// sendError wraps a send failure with the destination and a hint for the
// errors an operator can fix.
func sendError(wire string, dst netip.Addr, size int, err error) error {
	hint := ""
	switch {
	case errors.Is(err, unix.EMSGSIZE):
		hint = fmt.Sprintf(" (a %d-byte packet is larger than the interface MTU: lower --mtu)", size)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		hint = " (a firewall rule rejected it, e.g. iptables OUTPUT; or CAP_NET_RAW is missing)"
	case errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.EHOSTUNREACH):
		hint = fmt.Sprintf(" (no route: check ip route get %s)", dst)
	case errors.Is(err, unix.ENETDOWN), errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV):
		hint = " (the interface is down or gone)"
	}
	return fmt.Errorf("%s: send %s: %w%s", wire, dst, err, hint)
}

// setSendBuffer raises the socket's send buffer, beyond net.core.wmem_max
// when privileged (SO_SNDBUFFORCE). Failing is not fatal: the default only
// costs throughput.
func setSendBuffer(fd, size int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, size)
	}
}

// mmsgBatch sends several packets to one address with sendmmsg(2): one
// system call per super-packet instead of one per segment.
type mmsgBatch struct {
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
}

// enobufsRetries bounds how often a send refused with ENOBUFS (the
// driver's or qdisc's queue is full; AF_PACKET reports it, a raw IP socket
// hides it) is retried, enobufsWait apart, before the packet counts as
// lost.
const (
	enobufsRetries = 20
	enobufsWait    = 50 * time.Microsecond
)

// send writes every packet in pkts to the socket address name (namelen
// bytes), waiting while the socket's send buffer is full. On failure it
// returns the index of the packet that failed; the packets before it were
// sent.
func (b *mmsgBatch) send(q *quietio.Conn, pkts [][]byte, name *byte, namelen uint32) (int, error) {
	b.hdrs = slices.Grow(b.hdrs[:0], len(pkts))[:len(pkts)]
	b.iovs = slices.Grow(b.iovs[:0], len(pkts))[:len(pkts)]
	// Drop the references to the packets (which may be the caller's
	// buffers) once sent.
	defer clear(b.iovs)
	defer clear(b.hdrs)
	for i, p := range pkts {
		if len(p) == 0 {
			return i, fmt.Errorf("%w: empty packet", ErrMalformed)
		}
		b.iovs[i] = unix.Iovec{Base: &p[0]}
		b.iovs[i].SetLen(len(p))
		b.hdrs[i] = unix.Mmsghdr{Hdr: unix.Msghdr{Name: name, Namelen: namelen, Iov: &b.iovs[i]}}
		b.hdrs[i].Hdr.SetIovlen(1)
	}
	done, retries := 0, 0
	for done < len(pkts) {
		n, err := q.WriteCall("sendmmsg", unix.SYS_SENDMMSG, unsafe.Pointer(&b.hdrs[done]), len(pkts)-done)
		switch {
		case err == nil:
			done += n
			retries = 0
		case errors.Is(err, unix.ENOBUFS) && retries < enobufsRetries:
			retries++
			time.Sleep(enobufsWait)
		default:
			return done, err
		}
	}
	return done, nil
}
