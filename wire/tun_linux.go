package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/stackcopy/stackcopy/internal/quietio"
	"golang.org/x/sys/unix"
)

// TUN flags for TUNSETOFFLOAD (linux/if_tun.h); x/sys/unix does not export them.
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
)

// virtioNetHdrLen is sizeof(struct virtio_net_hdr): every read and write on
// an IFF_VNET_HDR TUN carries one in front of the IP packet.
const virtioNetHdrLen = 10

// ReadBufferSize is the buffer a TUN read needs to never truncate: the
// virtio header and the largest (GRO) super-packet.
const ReadBufferSize = virtioNetHdrLen + 1<<16

// TUN is a Linux TUN device opened with IFF_VNET_HDR and TCP segmentation
// offload, so the stack can hand the kernel 64 KiB TCP super-packets and
// the kernel segments them (measured on this class of machine: 6–9 Gbit/s
// for one upload, against 0.5–0.9 Gbit/s with one write per MTU-sized
// packet). github.com/songgao/water cannot request IFF_VNET_HDR or
// TUNSETOFFLOAD, which is why the device is opened here with x/sys/unix.
type TUN struct {
	name string
	file *os.File
	raw  syscall.RawConn
	hdr  [virtioNetHdrLen]byte
	q    *quietio.Conn // writes, on raw: see package quietio
	bufs net.Buffers   // write's scratch
	// closed makes I/O after Close fail with os.ErrClosed: the raw
	// connection reports the poller's own "use of closed file" instead.
	closed atomic.Bool
	// rd is Read's state and readFn its raw function, bound once (a
	// closure per Read escaped: three allocations a call). Read is for
	// one goroutine at a time.
	rd     tunRead
	readFn func(fd uintptr) bool
}

// tunRead is one Read's buffers and outcome.
type tunRead struct {
	bufs, pkts [][]byte
	n          int
	err        error
}

// OpenTUN creates (or attaches to) the TUN device name. The caller brings it
// up and routes into it.
func OpenTUN(name string) (*TUN, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("open /dev/net/tun: %w (needs root or CAP_NET_ADMIN)", err)
		}
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %q: TUNSETIFF: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %q: TUNSETOFFLOAD: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tun %q: %w", name, err)
	}
	t := &TUN{name: ifr.Name(), file: f, raw: raw, q: quietio.NewRaw(raw)}
	t.readFn = t.rd.read
	return t, nil
}

// Name is the kernel's name of the device.
func (t *TUN) Name() string { return t.name }

var (
	_ Device = (*TUN)(nil)
	_ Reader = (*TUN)(nil)
)

// tunBatch is how many packets the stack's writer gathers for one Write.
// A TUN fd takes one packet per write(2) (there is no sendmmsg for it), so
// a batch saves the hand-offs between the stack and the writer, not system
// calls.
const tunBatch = 64

// BatchSize implements Device.
func (t *TUN) BatchSize() int { return tunBatch }

// Write implements Device: one writev per packet, the virtio-net header
// that tells the kernel what segmentation and checksum work is left
// prepended as the first iovec.
func (t *TUN) Write(pkts []Packet) (int, error) {
	for i, p := range pkts {
		if err := t.write(p); err != nil {
			return i, err
		}
	}
	return len(pkts), nil
}

func (t *TUN) write(p Packet) error {
	gso := p.GSO
	h := t.hdr[:]
	clear(h)
	if gso.NeedsCsum {
		h[0] = unix.VIRTIO_NET_HDR_F_NEEDS_CSUM
	}
	switch gso.Type {
	case GSOTCPv4:
		h[1] = unix.VIRTIO_NET_HDR_GSO_TCPV4
	case GSOTCPv6:
		h[1] = unix.VIRTIO_NET_HDR_GSO_TCPV6
	}
	if gso.Type != GSONone || gso.NeedsCsum {
		binary.LittleEndian.PutUint16(h[2:], gso.HdrLen)
		binary.LittleEndian.PutUint16(h[4:], gso.MSS)
		binary.LittleEndian.PutUint16(h[6:], gso.CsumStart)
		binary.LittleEndian.PutUint16(h[8:], gso.CsumOffset)
	}
	t.bufs = append(append(t.bufs[:0], h), p.Bufs...)
	_, err := t.q.WriteBuffers(t.bufs)
	clear(t.bufs)
	if err != nil {
		if t.closed.Load() {
			err = os.ErrClosed
		}
		return fmt.Errorf("tun %s: write: %w", t.name, err)
	}
	return nil
}

// Read implements Reader. It waits for the first packet, then takes what
// else the kernel has queued without waiting again. A GSO super-packet is
// returned whole, without its virtio header: gVisor's TCP takes segments
// larger than the MSS, and the partial checksum is covered by RX checksum
// offload. One goroutine reads at a time.
func (t *TUN) Read(bufs, pkts [][]byte) (int, error) {
	r := &t.rd
	r.bufs, r.pkts, r.n, r.err = bufs, pkts, 0, nil
	err := t.raw.Read(t.readFn)
	n, rerr := r.n, r.err
	r.bufs, r.pkts = nil, nil // the caller's
	if n > 0 {
		return n, nil
	}
	if err == nil {
		err = rerr
	}
	if t.closed.Load() {
		err = os.ErrClosed
	}
	return 0, fmt.Errorf("tun %s: read: %w", t.name, err)
}

// read is Read's raw function: it reads until the device has no more
// packets or the buffers are full, and is done once something was read
// or reading failed; else the poller waits.
func (r *tunRead) read(fd uintptr) bool {
	for r.n < min(len(r.bufs), len(r.pkts)) {
		b := r.bufs[r.n]
		m, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			if e != unix.EAGAIN {
				r.err = e
			}
			break
		}
		if int(m) <= virtioNetHdrLen {
			continue // nothing behind the header: not a packet
		}
		r.pkts[r.n] = b[virtioNetHdrLen:m]
		r.n++
	}
	return r.n > 0 || r.err != nil
}

// Close implements Device. It unblocks a pending Read.
func (t *TUN) Close() error {
	t.closed.Store(true)
	return t.file.Close()
}
