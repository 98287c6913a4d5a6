package replay

// growStackFrame is the frame growStack takes: the runtime then gives the
// goroutine a 16 KiB stack at once.
const growStackFrame = 12 << 10

// growStack grows the calling goroutine's stack in one step.
//
// The goroutines a wake-up starts (a parked player resuming; a drain
// worker, or a drain burst no worker was free for) go into gVisor's send
// or receive path, which needs most of 16 KiB of stack, and so does a new
// player's first goroutine, whose dial goes into gVisor's connect path. A
// fresh goroutine starts with a few KiB and grew in two or three copies,
// each walking every frame: about a tenth of live mirroring's CPU at 250
// requests/s (perf; make bench, live). A frame
// this large makes the runtime allocate the size at once, copying only
// the goroutine's first frame. CockroachDB's growstack package does the
// same for its storage paths.
//
//go:noinline
func growStack() {
	var frame [growStackFrame]byte
	keepFrame(frame[:])
}

// keepFrame keeps growStack's frame from being optimized away.
//
//go:noinline
func keepFrame([]byte) {}
