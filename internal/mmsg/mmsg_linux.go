// Package mmsg receives a batch of datagrams with one recvmmsg(2): the
// buffers, iovecs and message headers the kernel fills, set up once and
// reused. intercept's AF_PACKET capture and its NFQUEUE reader use it.
//
// It imports only the standard library and golang.org/x/sys/unix.
package mmsg

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batch is n receive buffers of one size. A Batch is used by one
// goroutine; the kernel writes into it during Recv only.
type Batch struct {
	msgs     []unix.Mmsghdr
	iovs     []unix.Iovec
	bufs     [][]byte
	nameLens []uint32
}

// New returns a batch of n buffers of size bytes each.
func New(n, size int) *Batch {
	b := &Batch{
		msgs:     make([]unix.Mmsghdr, n),
		iovs:     make([]unix.Iovec, n),
		bufs:     make([][]byte, n),
		nameLens: make([]uint32, n),
	}
	for i := range b.msgs {
		b.bufs[i] = make([]byte, size)
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(size)
		b.msgs[i].Hdr.Iov = &b.iovs[i]
		b.msgs[i].Hdr.SetIovlen(1)
	}
	return b
}

// SetName has message i's source address written to name (size bytes),
// e.g. a unix.RawSockaddrLinklayer the caller keeps.
func (b *Batch) SetName(i int, name unsafe.Pointer, size uintptr) {
	b.msgs[i].Hdr.Name = (*byte)(name)
	b.nameLens[i] = uint32(size)
}

// Recv receives datagrams on fd, at most one per buffer, with flags
// (MSG_DONTWAIT for a socket the runtime's poller watches), retrying on
// EINTR: how many came, or the errno (EAGAIN: none waiting).
//
// With MSG_DONTWAIT the call cannot wait in the kernel, so it is made
// without telling the scheduler, which would wake its monitor thread
// (see package quietio).
func (b *Batch) Recv(fd uintptr, flags int) (int, unix.Errno) {
	for i := range b.msgs {
		b.msgs[i].Hdr.Namelen = b.nameLens[i]
		b.msgs[i].Len = 0
	}
	call := unix.Syscall6
	if flags&unix.MSG_DONTWAIT != 0 {
		call = unix.RawSyscall6
	}
	for {
		r, _, e := call(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(len(b.msgs)), uintptr(flags), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

// Data is datagram i of the last Recv, cut to its buffer (with MSG_TRUNC
// a longer datagram's Size says how long it was).
func (b *Batch) Data(i int) []byte { return b.bufs[i][:min(int(b.msgs[i].Len), len(b.bufs[i]))] }

// Size is datagram i's length as the kernel reported it.
func (b *Batch) Size(i int) int { return int(b.msgs[i].Len) }

// NameLen is the length of datagram i's source address.
func (b *Batch) NameLen(i int) uint32 { return b.msgs[i].Hdr.Namelen }
