package replay

import "context"

// workers runs short tasks on a few long-lived goroutines, each with its
// stack grown once (growStack), instead of a goroutine (and a grown
// stack) per task: a drain burst per answer. A task is handed only to a
// worker that waits for one (an unbuffered channel); when every worker is
// busy, or they ended with the context, the task gets a goroutine of its
// own, as before. So no task queues behind another that waits (an HTTP/2
// burst writing a window update into a full send buffer), none is left in
// a queue when the workers end, and the workers stay few however many
// tasks wait.
//
// Resuming parked players the same way (twice GOMAXPROCS workers) was
// no better in two interleaved A/B runs of the live workload: a player
// waits inside for its answer, so the workers were mostly busy.
type workers struct {
	run func(*player)
	q   chan *player
}

// startWorkers starts n workers running run until ctx ends.
func startWorkers(ctx context.Context, n int, run func(*player)) *workers {
	w := &workers{run: run, q: make(chan *player)}
	for range n {
		go w.work(ctx)
	}
	return w
}

func (w *workers) work(ctx context.Context) {
	growStack()
	for {
		select {
		case s := <-w.q:
			w.run(s)
		case <-ctx.Done():
			return
		}
	}
}

// do runs run(s) on a waiting worker, or on a new goroutine. It never
// blocks.
func (w *workers) do(s *player) {
	select {
	case w.q <- s:
	default: // every worker busy, or ended
		go func() {
			growStack()
			w.run(s)
		}()
	}
}
