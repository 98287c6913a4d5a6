package intercept

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stackcopy/stackcopy/internal/afpacket"
	"github.com/stackcopy/stackcopy/internal/mmsg"
	"github.com/stackcopy/stackcopy/internal/pcapfilter"
)

// CaptureConfig configures OpenCapture.
type CaptureConfig struct {
	// Interface to capture on (the assistant's interface towards the
	// target).
	Interface string
	// Filter selects the target's answers in the kernel, in pcap syntax
	// (tcpcopy's -F), e.g. "tcp and src port 80". It is compiled by
	// running tcpdump -ddd, so Debian's tcpdump must be installed.
	Filter string
	// Snaplen is how many bytes of each frame are kept, link header
	// included; 0 keeps whole packets (up to 64 KiB TSO/GRO super-packets).
	Snaplen int
	// BufferBytes is the socket's receive buffer (default 32 MiB). When it
	// is full the kernel drops packets and counts them (KernelDrops).
	BufferBytes int
}

// captureBatch is how many packets one recvmmsg may return.
const captureBatch = 32

// fullSnaplen keeps an IP packet of 65535 bytes behind an Ethernet header
// and two VLAN tags.
const fullSnaplen = 65535 + 14 + 8

// Capture is a Source reading packets that arrive on one interface
// through an AF_PACKET socket, filtered in the kernel. It needs no
// verdicts: with forwarding off the host's kernel discards the packets
// itself.
type Capture struct {
	name   string
	f      *os.File
	rc     syscall.RawConn
	cooked bool // SOCK_DGRAM: packets start at the network header

	// Receive batch, owned by Next.
	batch *mmsg.Batch
	addrs []unix.RawSockaddrLinklayer
	n, i  int // packets in the batch, next one to return
	// The context whose end wakes a waiting read (watch), owned by Next.
	watched context.Context
	unwatch func() bool
	woken   chan struct{} // closed once watched's end set the deadline
	// try and wait are the raw read functions fill hands the poller
	// (made once: a closure per read allocated), with their results.
	try, wait func(fd uintptr) bool
	got       int
	errno     syscall.Errno

	packets, skipped atomic.Uint64
	closing          atomic.Bool

	statsMu          sync.Mutex
	kpackets, kdrops uint64
	closed           bool
}

// OpenCapture starts capturing. It needs root or CAP_NET_RAW, and tcpdump
// to compile the filter.
func OpenCapture(cfg CaptureConfig) (*Capture, error) {
	what := "capture on " + cfg.Interface
	if cfg.Interface == "" || cfg.Interface == "any" {
		return nil, errors.New("capture: give the interface the target's answers arrive on (-i IFACE; \"any\" is not supported)")
	}
	if strings.TrimSpace(cfg.Filter) == "" {
		return nil, fmt.Errorf("%s: a filter (-F) is required, e.g. 'tcp and src port 80'", what)
	}
	if cfg.Snaplen <= 0 {
		cfg.Snaplen = fullSnaplen
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = DefaultCaptureBuffer
	}
	ifi, err := afpacket.LookupInterface(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	cooked := ifi.Cooked()
	link := pcapfilter.Ethernet
	if cooked {
		link = pcapfilter.Raw
	}
	filter, err := pcapfilter.Compile(cfg.Filter, link, cfg.Snaplen)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}

	// Nothing is queued before bind, so nothing unfiltered.
	fd, err := afpacket.Open(cooked)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	fail := func(err error) (*Capture, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := afpacket.AttachFilter(fd, filter); err != nil {
		return fail(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.BufferBytes); err != nil {
		return fail(fmt.Errorf("receive buffer: %w", err))
	}
	// Only what arrives: our own sends on the interface are not answers.
	// (Linux 4.20 and later; older kernels' outgoing copies are skipped
	// by their packet type below.)
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	if err := afpacket.Bind(fd, ifi.Index, afpacket.ProtoAll); err != nil {
		return fail(err)
	}
	f := os.NewFile(uintptr(fd), "packet:"+cfg.Interface)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	c := &Capture{
		name:   cfg.Interface,
		f:      f,
		rc:     rc,
		cooked: cooked,
		batch:  mmsg.New(captureBatch, cfg.Snaplen),
		addrs:  make([]unix.RawSockaddrLinklayer, captureBatch),
	}
	for i := range c.addrs {
		c.batch.SetName(i, unsafe.Pointer(&c.addrs[i]), unsafe.Sizeof(c.addrs[i]))
	}
	c.try = func(fd uintptr) bool { c.recv(fd); return true }
	c.wait = func(fd uintptr) bool { c.recv(fd); return c.errno != unix.EAGAIN }
	return c, nil
}

// Next returns the next captured IP packet.
func (c *Capture) Next(ctx context.Context) (Packet, error) {
	for {
		for c.i < c.n {
			k := c.i
			c.i++
			if pkt, ok := c.ipPacket(c.batch.Data(k), &c.addrs[k], c.batch.NameLen(k)); ok {
				c.packets.Add(1)
				return Packet{Data: pkt}, nil
			}
			c.skipped.Add(1)
		}
		if err := c.fill(ctx); err != nil {
			return Packet{}, err
		}
	}
}

// ipPacket strips the link header of a received frame.
func (c *Capture) ipPacket(b []byte, sll *unix.RawSockaddrLinklayer, namelen uint32) ([]byte, bool) {
	if namelen >= 11 && sll.Pkttype == unix.PACKET_OUTGOING {
		return nil, false
	}
	if c.cooked {
		proto := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sll.Protocol))[:])
		if namelen < 4 || (proto != unix.ETH_P_IP && proto != unix.ETH_P_IPV6) {
			return nil, false
		}
		return b, true
	}
	return stripEthernet(b)
}

// stripEthernet returns the IPv4 or IPv6 packet of an Ethernet frame,
// past up to two VLAN tags left in the frame.
func stripEthernet(b []byte) ([]byte, bool) {
	off := 12
	for range 3 {
		if len(b) < off+2 {
			return nil, false
		}
		switch binary.BigEndian.Uint16(b[off:]) {
		case unix.ETH_P_IP, unix.ETH_P_IPV6:
			return b[off+2:], true
		case unix.ETH_P_8021Q, unix.ETH_P_8021AD, 0x9100:
			off += 4
		default:
			return nil, false
		}
	}
	return nil, false
}

// fill receives the next batch, waiting for one.
func (c *Capture) fill(ctx context.Context) error {
	if c.closing.Load() {
		return c.closedError()
	}
	c.i, c.n = 0, 0
	c.watch(ctx)
	// One attempt without waiting (under load the batch is there), then
	// wait.
	err := c.rc.Read(c.try)
	if err == nil && c.errno == unix.EAGAIN && ctx.Err() == nil {
		err = c.rc.Read(c.wait)
	}
	n, errno := c.got, c.errno
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			return ctx.Err()
		}
		return c.readError(err)
	}
	if ctx.Err() != nil && errno == unix.EAGAIN {
		return ctx.Err()
	}
	switch {
	case errno == 0:
		c.n = n
		return nil
	case errno == unix.EAGAIN:
		return nil
	case errno == unix.ENETDOWN:
		// The interface went down; the socket resumes when it is up
		// again, unless it was removed.
		if _, err := net.InterfaceByName(c.name); err == nil {
			time.Sleep(100 * time.Millisecond)
			return nil
		}
		return fmt.Errorf("capture on %s: the interface disappeared", c.name)
	}
	return fmt.Errorf("capture on %s: recvmmsg: %w", c.name, errno)
}

// watch makes ctx's end wake a read waiting for packets. It registers
// once per context, not once per wait: under load the capture waits
// thousands of times a second, and a registration each time was an
// allocation and a lock on the context.
func (c *Capture) watch(ctx context.Context) {
	if c.watched == ctx {
		return
	}
	if c.unwatch != nil && !c.unwatch() {
		<-c.woken // the last context ended: its deadline is set
		c.f.SetReadDeadline(time.Time{})
	}
	woken := make(chan struct{})
	c.watched, c.woken = ctx, woken
	c.unwatch = context.AfterFunc(ctx, func() {
		c.f.SetReadDeadline(time.Unix(1, 0))
		close(woken)
	})
}

// recv receives a batch without waiting, into c.got and c.errno.
func (c *Capture) recv(fd uintptr) {
	c.got, c.errno = c.batch.Recv(fd, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
}

func (c *Capture) readError(err error) error {
	if errors.Is(err, os.ErrClosed) || c.closing.Load() {
		return c.closedError()
	}
	return fmt.Errorf("capture on %s: %w", c.name, err)
}

func (c *Capture) closedError() error {
	return fmt.Errorf("capture on %s: %w", c.name, net.ErrClosed)
}

// Close stops capturing.
func (c *Capture) Close() error {
	if !c.closing.CompareAndSwap(false, true) {
		return nil
	}
	c.statsMu.Lock()
	c.readKernelStats()
	c.closed = true
	c.statsMu.Unlock()
	return c.f.Close()
}

// readKernelStats adds the socket's PACKET_STATISTICS, which reading
// resets, to the totals. Called with statsMu held.
func (c *Capture) readKernelStats() {
	if c.closed {
		return
	}
	_ = c.rc.Control(func(fd uintptr) {
		if st, err := afpacket.ReadStats(int(fd)); err == nil {
			c.kpackets += st.Packets
			c.kdrops += st.Drops
		}
	})
}

// Stats returns the counters; KernelDrops are the socket's drops.
func (c *Capture) Stats() SourceStats {
	c.statsMu.Lock()
	c.readKernelStats()
	drops := c.kdrops
	c.statsMu.Unlock()
	return SourceStats{
		Packets:     c.packets.Load(),
		KernelDrops: drops,
		Skipped:     c.skipped.Load(),
	}
}
