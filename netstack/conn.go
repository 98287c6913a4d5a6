package netstack

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Errors a replayer branches on. Errors returned by Conn and DialFrom wrap
// one of them when it applies.
var (
	// ErrReset: the target reset the connection.
	ErrReset = errors.New("connection reset by target")
	// ErrRefused: the target answered the SYN with a RST.
	ErrRefused = errors.New("connection refused by target")
	// ErrTimeout: the handshake or a retransmission gave up.
	ErrTimeout = errors.New("timed out")
	// ErrPortInUse: the forged 4-tuple is still reserved (TIME_WAIT or a
	// live session with the same client address).
	ErrPortInUse = errors.New("forged client port in use")
	// ErrUnreachable: no route to the target.
	ErrUnreachable = errors.New("target unreachable")
)

// convertErr maps a gVisor error to a Go error, keeping the cases callers
// branch on distinguishable.
func convertErr(e tcpip.Error) error {
	switch e.(type) {
	case *tcpip.ErrConnectionReset, *tcpip.ErrConnectionAborted:
		return ErrReset
	case *tcpip.ErrConnectionRefused:
		return ErrRefused
	case *tcpip.ErrTimeout:
		return ErrTimeout
	case *tcpip.ErrPortInUse, *tcpip.ErrBadLocalAddress:
		return ErrPortInUse
	case *tcpip.ErrNetworkUnreachable, *tcpip.ErrHostUnreachable:
		return ErrUnreachable
	case *tcpip.ErrClosedForReceive:
		return io.EOF
	case *tcpip.ErrClosedForSend:
		return net.ErrClosed
	}
	return errors.New(e.String())
}

// gonet flattens gVisor errors to strings; these map them back.
var gonetErrs = map[string]error{
	(&tcpip.ErrConnectionReset{}).String():   ErrReset,
	(&tcpip.ErrConnectionAborted{}).String(): ErrReset,
	(&tcpip.ErrTimeout{}).String():           ErrTimeout,
	(&tcpip.ErrConnectionRefused{}).String(): ErrRefused,
	(&tcpip.ErrClosedForSend{}).String():     net.ErrClosed,
}

// Conn is a forged client's connection to the target. It is a net.Conn
// whose Read and Write errors wrap ErrReset or ErrTimeout when the target
// reset the connection or stopped answering, and which can replay the
// captured client's FIN (CloseWrite) and RST (Abort).
//
// It wraps gVisor's gonet adapter without embedding it, so no gVisor type
// or method reaches callers.
type Conn struct {
	tc          *gonet.TCPConn
	ep          tcpip.Endpoint
	wq          *waiter.Queue
	local, peer netip.AddrPort
}

func newConn(wq *waiter.Queue, ep tcpip.Endpoint, local, peer netip.AddrPort) *Conn {
	return &Conn{tc: gonet.NewTCPConn(wq, ep), ep: ep, wq: wq, local: local, peer: peer}
}

// Discard waits until the target sent something and consumes all of it
// without copying, returning how many bytes it was. A replayer that only
// counts answers holds no read buffer while a session idles. It returns
// io.EOF after the target's FIN.
func (c *Conn) Discard() (int, error) { return c.DiscardTo(io.Discard) }

// DiscardTo is Discard that first shows the bytes to w, straight from the
// stack's receive queue (no read buffer either). w must not block or keep
// the slices: the endpoint is locked while it runs.
func (c *Conn) DiscardTo(w io.Writer) (int, error) {
	entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	c.wq.EventRegister(&entry)
	defer c.wq.EventUnregister(&entry)
	for {
		n, wouldBlock, err := c.TryDiscardTo(w)
		if !wouldBlock {
			return n, err
		}
		<-ready
	}
}

// TryDiscardTo is DiscardTo without the wait: wouldBlock when the target
// has sent nothing since.
func (c *Conn) TryDiscardTo(w io.Writer) (n int, wouldBlock bool, err error) {
	res, terr := c.ep.Read(w, tcpip.ReadOptions{})
	if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
		return 0, true, nil
	}
	if terr != nil {
		return 0, false, fmt.Errorf("read %v from %v: %w", c.peer, c.local, convertErr(terr))
	}
	// Reading opens the receive window; tell auto-tuning, as gonet does.
	c.ep.ModerateRecvBuf(res.Count)
	return res.Count, false, nil
}

// OnReadable calls f whenever the target's bytes, its FIN or an error may
// have arrived, until stop is called. f runs on the stack's goroutine with
// its locks held: it must not block nor touch the connection. With
// TryDiscardTo and Readable a reader needs no goroutine parked per idle
// connection.
func (c *Conn) OnReadable(f func()) (stop func()) {
	e := waiter.NewFunctionEntry(waiter.ReadableEvents|waiter.EventHUp|waiter.EventErr, func(waiter.EventMask) { f() })
	c.wq.EventRegister(&e)
	return func() { c.wq.EventUnregister(&e) }
}

// Readable reports whether TryDiscardTo has something to return: bytes,
// the FIN, or an error.
func (c *Conn) Readable() bool {
	return c.ep.Readiness(waiter.ReadableEvents|waiter.EventHUp|waiter.EventErr) != 0
}

// Local is the forged client address the connection is bound to.
func (c *Conn) Local() netip.AddrPort { return c.local }

// Peer is the target address.
func (c *Conn) Peer() netip.AddrPort { return c.peer }

var _ net.Conn = (*Conn)(nil)

// Read implements net.Conn.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.tc.Read(b)
	return n, c.classify(err)
}

// Write implements net.Conn.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.tc.Write(b)
	return n, c.classify(err)
}

// SetCork holds back a segment shorter than the MSS while on (TCP_CORK);
// turning it off sends what it held. The replay corks a run of writes
// already due, so that each write's remainder goes out with the next
// write's front instead of as a runt of its own.
func (c *Conn) SetCork(on bool) { c.ep.SocketOptions().SetCorkOption(on) }

// refusalWait bounds how long CloseWrite waits for the target to
// acknowledge, or refuse, what the client sent after the target closed.
const refusalWait = 500 * time.Millisecond

// CloseWrite sends the client's FIN and keeps reading.
//
// When the target closed first, what the client sent since reached a
// socket nobody reads, and the target's kernel resets the connection.
// CloseWrite then first waits (refusalWait at most) for that reset or for
// the ACK, so that the reset is reported every time, not only when it
// happened to come before the FIN.
func (c *Conn) CloseWrite() error {
	if tcp.EndpointState(c.ep.State()) == tcp.StateCloseWait {
		c.awaitAcked(refusalWait)
	}
	return c.classify(c.tc.CloseWrite())
}

// awaitAcked waits until the target acknowledged every byte written, the
// connection ended, or d passed. It polls a millisecond apart: gVisor
// tells writers only when half the send buffer frees, and this serves the
// rare end of a session the target closed first.
func (c *Conn) awaitAcked(d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		n, err := c.ep.GetSockOptInt(tcpip.SendQueueSizeOption)
		if err != nil || n == 0 || !time.Now().Before(deadline) {
			return
		}
		if st := tcp.EndpointState(c.ep.State()); st == tcp.StateError || st == tcp.StateClose {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// Close implements net.Conn: an orderly close (FIN), as the captured
// client's.
func (c *Conn) Close() error { return c.tc.Close() }

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr { return net.TCPAddrFromAddrPort(c.local) }

// RemoteAddr implements net.Conn.
func (c *Conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.peer) }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error { return c.tc.SetDeadline(t) }

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.tc.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.tc.SetWriteDeadline(t) }

// Abort sends a RST and releases the connection, as the captured client
// did when it reset.
func (c *Conn) Abort() {
	c.ep.Abort()
	c.tc.Close()
}

func (c *Conn) classify(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		if e, ok := gonetErrs[op.Err.Error()]; ok {
			return fmt.Errorf("%s %v from %v: %w", op.Op, c.peer, c.local, e)
		}
	}
	return err
}
