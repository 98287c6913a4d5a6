package replay

import (
	"sync"
	"sync/atomic"
	"time"
)

// FlowControl is implemented by the Framer of a protocol with flow
// control (h2frame.Framer, HTTP/2). The player then keeps the target-side
// session within the windows both ways:
//
//   - It holds a client DATA frame the target's windows have no room for
//     (SendAllowance, for frames NextClientData finds) until the target's
//     WINDOW_UPDATE makes room, at most --turn-wait; then it writes the
//     rest in order.
//   - It writes the WINDOW_UPDATE frames a client reading as it goes
//     sends when the target's answers use up the windows the capture's own
//     WINDOW_UPDATEs do not refill (NeedWindowUpdate, WindowUpdates), at a
//     client frame boundary only.
//
// The methods may be called from any goroutine.
type FlowControl interface {
	// NextClientData finds, in the client bytes p that come next, the
	// first DATA frame whose header completes in p: where it begins (0:
	// its header began in bytes shown before), where its header ends, its
	// stream and its payload length.
	NextClientData(p []byte) (at, end int, stream uint32, length int64, ok bool)
	// SendAllowance is the most DATA the target allows on a stream now.
	SendAllowance(stream uint32) int64
	// NeedWindowUpdate is cheap: whether WindowUpdates has frames to give.
	NeedWindowUpdate() bool
	// WindowUpdates appends the client's WINDOW_UPDATE frames due now,
	// already shown to the client side, to be written at once; none
	// unless the client's bytes shown so far end at a frame boundary.
	WindowUpdates(b []byte) []byte
}

// h2flow is a player's flow control, for sessions whose target-side framer
// implements FlowControl. Every write to the connection goes through mu:
// the player's (client bytes, shown to the framer and written under mu, so
// that while mu is free the bytes shown are the bytes written) and the
// drain's (window updates the target's answers call for). A window update
// is written by whoever holds mu when it is due: the drain, when the
// player is not writing, else the player after its write (pending).
type h2flow struct {
	s    *player
	conn Conn
	f    Framer
	fc   FlowControl
	pc   *protoCounters

	mu      sync.Mutex
	buf     []byte      // window updates being written (under mu)
	pending atomic.Bool // window updates may be due: the next holder of mu writes them
}

// flow returns the session's flow control, set up on the first write once
// the target-side framer has flow control and the connection shows the
// target's bytes (without them the windows would never open); nil for
// every other session.
func (s *player) flow(conn Conn, f Framer) *h2flow {
	if h := s.h2.Load(); h != nil {
		return h
	}
	fc, ok := f.(FlowControl)
	if !ok {
		return nil
	}
	if _, tap := conn.(answerTap); !tap {
		return nil
	}
	h := &h2flow{s: s, conn: conn, f: f, fc: fc, pc: s.pc}
	s.h2.Store(h)
	return h
}

// flowControlled reports whether the session's writes go through HTTP/2
// flow control, which may wait for the target's application (a window
// update): the player does not cork those, so nothing it holds back can be
// what the target waits for.
func (s *player) flowControlled() bool {
	_, ok := s.tgt.framer().(FlowControl)
	return ok
}

// writeClient shows the client's bytes b to the target-side framer and
// writes them: through the session's flow control when it has one.
func (s *player) writeClient(conn Conn, b []byte) error {
	f := s.tgt.framer()
	if f == nil {
		return s.write(conn, b)
	}
	if h := s.flow(conn, f); h != nil {
		return h.write(b)
	}
	if s.renum != nil {
		b = s.renumber(b)
		if len(b) == 0 {
			return nil // kept back until the rest of its packet's start
		}
	}
	f.Client(b)
	return s.write(conn, b)
}

// write shows b to the framer and writes it, cut before each DATA frame
// the target's windows have no room for, which waits for room.
func (h *h2flow) write(b []byte) error {
	h.mu.Lock()
	pos, start := 0, 0 // shown to the framer: b[:pos]; written: b[:start]
	for pos < len(b) {
		at, end, stream, n, ok := h.fc.NextClientData(b[pos:])
		if !ok {
			h.f.Client(b[pos:])
			break
		}
		h.f.Client(b[pos : pos+at])
		pos += at
		if !h.fits(stream, n) {
			if err := h.s.write(h.conn, b[start:pos]); err != nil {
				h.mu.Unlock()
				return err
			}
			start = pos
			// Window updates may go while the frame waits (when it
			// begins here, not in bytes written before).
			h.flushLocked()
			h.mu.Unlock()
			h.kick()
			h.await(stream, n)
			h.mu.Lock()
		}
		h.f.Client(b[pos : pos+end-at])
		pos += end - at
	}
	err := h.s.write(h.conn, b[start:])
	if err == nil {
		h.flushLocked()
	}
	h.mu.Unlock()
	h.kick()
	return err
}

func (h *h2flow) fits(stream uint32, n int64) bool {
	return n == 0 || n <= h.fc.SendAllowance(stream)
}

// await waits until the target's windows have room for a DATA frame of n
// bytes on stream, or --turn-wait passed (counted), or the target closed.
func (h *h2flow) await(stream uint32, n int64) {
	h.pc.dataHeld.Add(1)
	s := h.s
	limit := time.NewTimer(s.r.cfg.TurnWait)
	defer limit.Stop()
	for !h.fits(stream, n) {
		select {
		case <-s.progress:
		case <-s.rcvDone:
			return
		case <-s.r.ctx.Done():
			return
		case <-limit.C:
			h.pc.windowWait.Add(1)
			s.r.log.Info("DATA frame sent after --turn-wait without the target's window", "client", s.key.Client, "server", s.key.Server,
				"stream", stream, "length", n, "allowed", h.fc.SendAllowance(stream))
			return
		}
	}
}

// answered runs on the drain after the target's bytes were shown to the
// framer: window updates due are written now, or by the player after its
// write.
func (h *h2flow) answered() {
	if h.fc.NeedWindowUpdate() {
		h.pending.Store(true)
		h.kick()
	}
}

// kick writes due window updates unless another goroutine holds mu; that
// one looks again after releasing it.
func (h *h2flow) kick() {
	for h.pending.Load() && h.mu.TryLock() {
		h.flushLocked()
		h.mu.Unlock()
	}
}

// flushLocked writes the window updates due, with mu held and the client
// bytes shown so far written. A write error is the player's to find: its
// next write or the drain sees the connection end.
func (h *h2flow) flushLocked() {
	h.pending.Store(false)
	if !h.fc.NeedWindowUpdate() {
		return
	}
	h.buf = h.fc.WindowUpdates(h.buf[:0])
	if len(h.buf) == 0 {
		return // inside a client frame: after the player's next write
	}
	h.pc.windowUpdates.Add(uint64(len(h.buf) / windowUpdateLen))
	h.s.write(h.conn, h.buf)
}

// windowUpdateLen is the size of an HTTP/2 WINDOW_UPDATE frame.
const windowUpdateLen = 9 + 4
