package replay

import (
	"context"
	"sync"
	"time"
)

// window bounds how far a capture file's reader runs ahead of the replay
// (Config.Window, Config.WindowBytes). Without it, at --speed 0 the reader
// made a player (struct, goroutine, queued events) for every session of
// the capture before the first ones were dialed: 100k sessions took
// 1.03 GB of RSS, 200k 2.17 GB.
//
// A player is "ahead" while it holds work the reader gave it and has not
// done: from its creation through its dial, while events are queued for
// it, and while it acts on one (a turn waiting for its answer, the close).
// It stops being ahead when it waits for the reader's next event (the
// capture has not shown it yet) and when it ends. Only new sessions wait
// for room: a player that is ahead makes progress without the reader (its
// waits are bounded by the dial timeout, --turn-wait and -t), so the
// reader never waits for something only it could provide.
type window struct {
	max      int   // players ahead at most; 0: no bound
	maxBytes int64 // captured bytes queued in memory at most; 0: no bound

	mu    sync.Mutex
	room  *sync.Cond // broadcast whenever ahead or bytes fall
	ahead int
	bytes int64
}

func newWindow(max int, maxBytes int64) *window {
	w := &window{max: max, maxBytes: maxBytes}
	w.room = sync.NewCond(&w.mu)
	return w
}

// on says whether the window binds at all.
func (w *window) on() bool { return w.max > 0 || w.maxBytes > 0 }

// wait blocks until n more players fit in the window (at least one always
// does when none is ahead) and the queued bytes are under their bound, or
// ctx ends.
func (w *window) wait(ctx context.Context, n int) {
	if !w.on() {
		return
	}
	stop := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		w.room.Broadcast()
		w.mu.Unlock()
	})
	defer stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for ctx.Err() == nil && w.fullLocked(n) {
		w.room.Wait()
	}
}

func (w *window) fullLocked(n int) bool {
	if w.max > 0 && w.ahead > 0 && w.ahead+n > w.max {
		return true
	}
	return w.maxBytes > 0 && w.bytes >= w.maxBytes
}

// bytesFull says whether n more queued bytes would pass the bound.
func (w *window) bytesFull(n int) bool {
	if w.maxBytes <= 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bytes+int64(n) > w.maxBytes
}

// add moves the count of players ahead and of queued bytes. They are
// counted also when nothing binds: admit reads them.
func (w *window) add(ahead int, bytes int64) {
	if ahead == 0 && bytes == 0 {
		return
	}
	w.mu.Lock()
	w.ahead += ahead
	w.bytes += bytes
	if w.on() && (ahead < 0 || bytes < 0) {
		w.room.Broadcast()
	}
	w.mu.Unlock()
}

// admitPoll is how often a waiting Admit is asked again.
const admitPoll = 10 * time.Millisecond

// admit asks Config.Admit about a new session. With AdmitWaits a refusal
// makes the reader wait and ask again while any player is ahead: those
// free memory as they finish without the reader. With none ahead only
// the reader can move (players waiting for later events of the capture
// hold what is left), so the session is admitted rather than wait forever.
func (r *Replayer) admit() bool {
	if r.cfg.Admit == nil {
		return true
	}
	for {
		if r.cfg.Admit() {
			return true
		}
		if !r.cfg.AdmitWaits {
			return false
		}
		if r.ctx.Err() != nil || r.Window().Ahead == 0 {
			return true // a stopped replay counts its sessions as such, not as shed
		}
		t := time.NewTimer(admitPoll)
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
		}
	}
}

// WindowStats says how full the window is.
type WindowStats struct {
	Ahead int   // players holding work the reader gave them
	Bytes int64 // captured bytes queued in memory
}

// Window returns how far the reader is ahead of the replay now.
func (r *Replayer) Window() WindowStats {
	w := r.win
	w.mu.Lock()
	defer w.mu.Unlock()
	return WindowStats{Ahead: w.ahead, Bytes: w.bytes}
}

// setAheadLocked marks the player as ahead of the reader or not, moving
// the window's count. Called with s.mu held (the window's lock comes
// after it).
func (s *player) setAheadLocked(v bool) {
	if s.ahead == v {
		return
	}
	s.ahead = v
	if v {
		s.r.win.add(1, 0)
	} else {
		s.r.win.add(-1, 0)
	}
}
