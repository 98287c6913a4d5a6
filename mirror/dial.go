package mirror

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stackcopy/stackcopy/hostnet"
	"github.com/stackcopy/stackcopy/netstack"
	"github.com/stackcopy/stackcopy/relay"
	"github.com/stackcopy/stackcopy/replay"
)

// unregisterDelay keeps a finished session's forged address registered
// with the intercepts for a while: the target's last ACKs and
// retransmissions must still be caught, or they would leak to the real
// client.
const unregisterDelay = 30 * time.Second

// dialer is the replayer's dial function: it routes the forged client
// address into the TUN, registers it with the intercepts before the SYN
// leaves, and unregisters it unregisterDelay after the session ended. It
// owns those delayed unregistrations: close stops the pending ones and
// waits for those already running, so none outlives Run.
type dialer struct {
	st     *netstack.Stack
	routes *hostnet.Device // nil: the forged clients are not routed by us
	rc     *relay.Client   // nil: no intercepts
	delay  time.Duration

	// routeErr is the first route that could not be added: Run reports
	// it, since every session from then on fails the same way.
	routeErr atomic.Pointer[error]

	mu      sync.Mutex
	pending map[*time.Timer]struct{} // unregistrations not yet run
	running sync.WaitGroup           // unregistrations started and not yet done
	closed  bool
}

func newDialer(st *netstack.Stack, routes *hostnet.Device, rc *relay.Client) *dialer {
	return &dialer{st: st, routes: routes, rc: rc, delay: unregisterDelay, pending: make(map[*time.Timer]struct{})}
}

// dial implements replay.DialFunc.
func (d *dialer) dial(ctx context.Context, src, dst netip.AddrPort) (replay.Conn, error) {
	if d.routes != nil {
		if err := d.routes.Route(src.Addr()); err != nil {
			d.routeErr.CompareAndSwap(nil, &err)
			return nil, err
		}
	}
	if d.rc == nil {
		c, err := d.st.DialFrom(ctx, src, dst)
		if err != nil {
			return nil, replayError(err)
		}
		return &conn{c: c}, nil
	}
	var local netip.AddrPort
	c, err := d.st.DialFromWith(ctx, src, dst, netstack.DialOptions{BeforeConnect: func(l netip.AddrPort) error {
		local = l
		return d.rc.Register(l, dst)
	}})
	if err != nil {
		if local.IsValid() {
			d.unregisterLater(local)
		}
		return nil, replayError(err)
	}
	return &conn{c: c, release: func() { d.unregisterLater(local) }}, nil
}

// unregisterLater removes local's registration after d.delay.
func (d *dialer) unregisterLater(local netip.AddrPort) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return // the relay client is closing: the intercepts drop it all
	}
	d.running.Add(1)
	var t *time.Timer
	t = time.AfterFunc(d.delay, func() {
		defer d.running.Done()
		d.mu.Lock()
		delete(d.pending, t)
		d.mu.Unlock()
		d.rc.Unregister(local)
	})
	d.pending[t] = struct{}{}
}

// close stops the unregistrations not yet due and waits for the running
// ones. Closing the relay client afterwards ends every registration at
// once: the intercepts hold the addresses of a mirror that left as they
// hold unregistered ones.
func (d *dialer) close() {
	d.mu.Lock()
	d.closed = true
	for t := range d.pending {
		if t.Stop() {
			d.running.Done()
		}
	}
	clear(d.pending)
	d.mu.Unlock()
	d.running.Wait()
}

// conn is a forged connection as replay sees it: errors carry replay's
// values, and ending it releases its relay registration (once).
type conn struct {
	c       *netstack.Conn
	release func() // nil: nothing registered
	once    sync.Once
}

func (c *conn) done() {
	if c.release != nil {
		c.once.Do(c.release)
	}
}

func (c *conn) Write(b []byte) (int, error) {
	n, err := c.c.Write(b)
	return n, replayError(err)
}

func (c *conn) SetCork(on bool) { c.c.SetCork(on) }

func (c *conn) Discard() (int, error) {
	n, err := c.c.Discard()
	return n, replayError(err)
}

// DiscardTo lets replay frame HTTP answers (its answerTap).
func (c *conn) DiscardTo(w io.Writer) (int, error) {
	n, err := c.c.DiscardTo(w)
	return n, replayError(err)
}

// TryDiscardTo, OnReadable and Readable let replay drain on demand (its
// readNotifier): no goroutine waits per idle session.
func (c *conn) TryDiscardTo(w io.Writer) (int, bool, error) {
	n, wouldBlock, err := c.c.TryDiscardTo(w)
	return n, wouldBlock, replayError(err)
}

func (c *conn) OnReadable(f func()) (stop func()) { return c.c.OnReadable(f) }

func (c *conn) Readable() bool { return c.c.Readable() }

func (c *conn) CloseWrite() error { return replayError(c.c.CloseWrite()) }

func (c *conn) Close() error {
	c.done()
	return replayError(c.c.Close())
}

func (c *conn) Abort() {
	c.done()
	c.c.Abort()
}

// replayError makes err match replay's value for the netstack error it
// wraps, keeping its text and chain.
func replayError(err error) error {
	var kind error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, netstack.ErrReset):
		kind = replay.ErrReset
	case errors.Is(err, netstack.ErrRefused):
		kind = replay.ErrRefused
	case errors.Is(err, netstack.ErrTimeout):
		kind = replay.ErrTimeout
	case errors.Is(err, netstack.ErrPortInUse):
		kind = replay.ErrPortInUse
	default:
		return err
	}
	return &mappedError{err: err, kind: kind}
}

type mappedError struct{ err, kind error }

func (e *mappedError) Error() string   { return e.err.Error() }
func (e *mappedError) Unwrap() []error { return []error{e.err, e.kind} }
