// Package heapfloor gives the garbage collector a fixed minimum of
// headroom: while the live heap is small, the next collection waits until
// the heap has grown by that much instead of by the live heap's size.
//
// Why: Go's default (GOGC 100) collects once the heap doubles what was
// live, with a minimum of 4 MiB. A replay of short sessions allocates
// about 14 KiB per session (gVisor's endpoint and sender, timers, the
// player) while its live heap stays at 10 to 20 MiB, so it ran a
// collection every few milliseconds: the collector and its assists took
// about 12% of stackcopy's CPU in `make bench`'s short sessions. Large
// heaps (ten thousand idle sessions, a million-session capture) are not
// affected: above the floor the GC percent is the default again, so their
// memory is what it was.
//
// This is the minimum heap size the Go runtime keeps at 4 MiB, raised;
// it is process-wide, as the GC percent is. An operator's GOGC in the
// environment wins: Start does nothing then.
package heapfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// runtimeMinimum is the Go runtime's minimum heap goal at GOGC 100
// (runtime.defaultHeapMinimum); it scales with the GC percent.
const runtimeMinimum = 4 << 20

// Floor keeps the collector's headroom at or above a number of bytes
// until Stop.
type Floor struct {
	headroom uint64
	base     int // the GC percent to keep above the floor

	mu      sync.Mutex
	stopped bool
	percent int // as last set
	sample  []metrics.Sample
}

// Start raises the collector's headroom to at least headroom bytes. It
// returns nil, and changes nothing, when GOGC is set in the environment
// or headroom is no more than what the runtime keeps already.
func Start(headroom uint64) *Floor {
	if _, set := os.LookupEnv("GOGC"); set || headroom <= runtimeMinimum {
		return nil
	}
	f := &Floor{
		headroom: headroom,
		sample:   []metrics.Sample{{Name: "/gc/heap/live:bytes"}},
	}
	// Before the first collection nothing is live yet.
	f.percent = percentFor(0, headroom, 0)
	f.base = debug.SetGCPercent(f.percent)
	if f.base < 0 {
		// GC off (debug.SetGCPercent(-1) by an embedder): leave it so.
		debug.SetGCPercent(f.base)
		return nil
	}
	arm(f)
	return f
}

// Stop gives the GC percent back as it was before Start. A nil Floor's
// Stop does nothing.
func (f *Floor) Stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	f.stopped = true
	debug.SetGCPercent(f.base)
}

// sentinel is an object nothing keeps: its cleanup runs after the next
// collection found it unreachable, which is the hook for "a collection
// ended". It is larger than the runtime's tiny-allocation size, so it
// is an object of its own and not batched with live ones.
type sentinel struct{ _ [32]byte }

func arm(f *Floor) {
	runtime.AddCleanup(new(sentinel), (*Floor).collected, f)
}

// collected runs on the runtime's cleanup goroutine after a collection:
// it sets the percent for the next cycle from what that one found live,
// and arms the hook again.
func (f *Floor) collected() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	metrics.Read(f.sample)
	var live uint64
	if f.sample[0].Value.Kind() == metrics.KindUint64 {
		live = f.sample[0].Value.Uint64()
	}
	if p := percentFor(live, f.headroom, f.base); p != f.percent {
		f.percent = p
		debug.SetGCPercent(p)
	}
	arm(f)
}

// percentFor is the GC percent that puts the next collection at
// live+headroom, never below base, and no higher than the runtime's
// minimum heap already makes it (what is live below 4 MiB does not
// matter: the minimum scales with the percent).
func percentFor(live, headroom uint64, base int) int {
	live = max(live, runtimeMinimum)
	p := int(100 * headroom / live)
	return max(p, base)
}
