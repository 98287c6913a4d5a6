package replay

import (
	"context"
	"sync"
)

// workers runs short tasks on a few long-lived goroutines, each with its
// stack grown once (growStack), instead of a goroutine (and a grown
// stack) per task: a drain burst per answer. A task is handed only to a
// worker that waits for one (an unbuffered channel); when every worker is
// busy the task gets a goroutine of its own, as before, so no task queues
// behind another that waits (an HTTP/2 burst writing a window update into
// a full send buffer), and the workers stay few however many tasks wait.
//
// Resuming parked players the same way (twice GOMAXPROCS workers) was
// no better in two interleaved A/B runs of the live workload: a player
// waits inside for its answer, so the workers were mostly busy.
type workers struct {
	run func(*player)

	mu     sync.RWMutex // closed and close(q), against a send after it
	q      chan *player
	closed bool
}

// startWorkers starts n workers running run; they end with ctx, after
// which every task gets a goroutine of its own.
func startWorkers(ctx context.Context, n int, run func(*player)) *workers {
	w := &workers{run: run, q: make(chan *player)}
	for range n {
		go w.work()
	}
	context.AfterFunc(ctx, func() {
		w.mu.Lock()
		w.closed = true
		close(w.q)
		w.mu.Unlock()
	})
	return w
}

func (w *workers) work() {
	growStack()
	for s := range w.q {
		w.run(s)
	}
}

// do runs run(s) on a waiting worker, or on a new goroutine. It never
// blocks.
func (w *workers) do(s *player) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if !w.closed {
		select {
		case w.q <- s:
			return
		default: // every worker busy
		}
	}
	go func() {
		growStack()
		w.run(s)
	}()
}
