// Package quietio reads and writes non-blocking sockets with system calls
// the Go scheduler is not told about.
//
// A system call made through package syscall (net.Conn's Read and Write
// among them) enters the scheduler, and the first one after the process
// was idle wakes the runtime's monitor thread (sysmon), which then wakes
// every 20 µs for as long as the process keeps busy. A process that wakes
// for every few packets, as live mirroring and intercept do, pays that on
// every request: at 250 requests/s the monitor was a fifth of stackcopy's
// CPU, most of it in context switches (make bench, live, perf record).
//
// A non-blocking socket's read or write does not wait in the kernel, so
// the scheduler need not know about it: Conn makes them with RawSyscall,
// as gVisor's rawfile package does, and waits for readiness in Go's
// netpoller through the socket's syscall.RawConn, so deadlines still hold.
package quietio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Conn reads and writes one connection's socket, or any non-blocking
// descriptor (NewRaw). Read and Write keep no state of their own;
// WriteBuffers is for one goroutine at a time.
type Conn struct {
	c    net.Conn
	rc   syscall.RawConn // nil: c has no socket (net.Pipe): use c
	iovs []unix.Iovec    // WriteBuffers' scratch
	// ops are calls' argument blocks, reused: the function a RawConn is
	// handed escapes, so a closure over a call's arguments and results
	// was three allocations per system call. A pool keeps Read and
	// Write free of shared state.
	ops sync.Pool
}

// op is one raw system call, its arguments and its result; fn is do,
// bound once.
type op struct {
	trap  uintptr
	buf   unsafe.Pointer
	n     int
	r     uintptr
	errno unix.Errno
	fn    func(fd uintptr) bool
}

func (o *op) do(fd uintptr) bool {
	o.r, _, o.errno = unix.RawSyscall(o.trap, fd, uintptr(o.buf), uintptr(o.n))
	return o.errno != unix.EAGAIN
}

// NewRaw returns a Conn on the non-blocking descriptor behind rc (a
// TUN device, a netlink socket).
func NewRaw(rc syscall.RawConn) *Conn { return &Conn{rc: rc} }

// New returns a Conn on c's socket; a c without one (net.Pipe in tests)
// is read and written as it is.
func New(c net.Conn) *Conn {
	qc := &Conn{c: c}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			qc.rc = rc
		}
	}
	return qc
}

// Read reads up to len(p) bytes, waiting for some; io.EOF at the end.
func (c *Conn) Read(p []byte) (int, error) {
	if c.rc == nil {
		return c.c.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := c.call(c.rc.Read, "read", unix.SYS_READ, unsafe.Pointer(&p[0]), len(p))
	if err == nil && n == 0 {
		return 0, io.EOF
	}
	return n, err
}

// Write writes all of p, waiting while the socket's buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	if c.rc == nil {
		return c.c.Write(p)
	}
	done := 0
	for done < len(p) {
		n, err := c.call(c.rc.Write, "write", unix.SYS_WRITE, unsafe.Pointer(&p[done]), len(p)-done)
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// maxIovecs bounds one writev; the kernel's limit is 1024 (UIO_MAXIOV).
const maxIovecs = 1024

// WriteBuffers writes every buffer of bufs in order, gathered into as
// few writev calls as the socket takes. It reslices bufs' elements as
// they are written, as net.Buffers.WriteTo does.
func (c *Conn) WriteBuffers(bufs net.Buffers) (int64, error) {
	if c.rc == nil {
		return bufs.WriteTo(c.c)
	}
	var total int64
	iovs := c.iovs
	defer func() { c.iovs = iovs }()
	for len(bufs) > 0 {
		iovs = iovs[:0]
		for _, b := range bufs {
			if len(iovs) == maxIovecs {
				break
			}
			if len(b) == 0 {
				continue
			}
			iov := unix.Iovec{Base: &b[0]}
			iov.SetLen(len(b))
			iovs = append(iovs, iov)
		}
		if len(iovs) == 0 {
			break
		}
		n, err := c.call(c.rc.Write, "writev", unix.SYS_WRITEV, unsafe.Pointer(&iovs[0]), len(iovs))
		clear(iovs) // the buffers are the caller's
		if err != nil {
			return total, err
		}
		total += int64(n)
		// Drop what was written: whole buffers, then the front of one.
		for left := n; left > 0; {
			k := min(left, len(bufs[0]))
			bufs[0] = bufs[0][k:]
			left -= k
			if len(bufs[0]) == 0 {
				bufs = bufs[1:]
			}
		}
	}
	return total, nil
}

// WriteCall makes one system call trap(fd, buf, n) that sends on the
// descriptor (sendmmsg, say), as Write makes its write: raw, waiting in
// the netpoller while it would block, again after EINTR. It returns the
// call's result; other errors come as an *os.SyscallError named name.
func (c *Conn) WriteCall(name string, trap uintptr, buf unsafe.Pointer, n int) (int, error) {
	return c.call(c.rc.Write, name, trap, buf, n)
}

// call makes one system call trap(fd, buf, n) on the socket, raw,
// waiting in the netpoller (through wait: the RawConn's Read or Write)
// while it would block, and again after EINTR.
func (c *Conn) call(wait func(func(uintptr) bool) error, name string, trap uintptr, buf unsafe.Pointer, n int) (int, error) {
	o, _ := c.ops.Get().(*op)
	if o == nil {
		o = new(op)
		o.fn = o.do
	}
	o.trap, o.buf, o.n = trap, buf, n
	defer func() {
		o.buf = nil // the caller's memory
		c.ops.Put(o)
	}()
	for {
		err := wait(o.fn)
		r, errno := o.r, o.errno
		switch {
		case err != nil:
			return 0, err
		case errno == unix.EINTR:
			continue
		case errno != 0:
			return 0, os.NewSyscallError(name, errno)
		}
		return int(r), nil
	}
}
