package mirror

import (
	"context"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stackcopy/stackcopy/replay"
)

// How far a capture file's reader may run ahead of the replay (see
// replay.Config.Window). At --speed 0 every session of the capture is
// due at once: without a bound the reader made them all before the
// first were dialed (100k sessions: 1.03 GB of RSS). A session ahead
// costs about 32 KiB once dialed (gVisor's endpoint, two goroutines), so
// 1024 of them about 32 MiB; that is 8 times the handshakes in flight
// (--max-handshakes' default), enough to keep the dials busy. Paced
// replays are bounded in time by the replayer's lookahead already; their
// window only binds when the replay is far behind, so it does not move
// sessions that are on time.
const (
	windowSessions       = 1024
	windowSessionsPaced  = 16384
	windowBytes          = 64 << 20
	sessionCost          = 32 << 10 // RSS a dialed session grows into (ARCHITECTURE.md, "Known costs")
	memorySample         = 10 * time.Millisecond
	memoryYoung          = 250 * time.Millisecond // how long an admitted session may take to show in RSS
	memoryReleaseEvery   = time.Second
	memoryYoungBuckets   = 10
	memoryYoungBucketDur = memoryYoung / memoryYoungBuckets
)

// limitMemory sets the replayer's bounds: the window for files, and the
// -m gate (which waits for files and sheds live).
func limitMemory(cfg *Config, rc *replay.Config) {
	if !cfg.Live {
		rc.Window = windowSessions
		if cfg.Speed > 0 {
			rc.Window = windowSessionsPaced
		}
		rc.Window = max(rc.Window, 8*cfg.MaxHandshakes)
		rc.WindowBytes = windowBytes
	}
	if cfg.MemoryLimit > 0 {
		// The reserve covers what admitted sessions may still grow into:
		// an uploading session can hold its whole send buffer.
		g := newMemoryGate(cfg.MemoryLimit, uint64(cfg.SendBuffer), rssBytes)
		rc.Admit = g.admit
		// A file can be read later: the reader waits for memory instead
		// of shedding.
		rc.AdmitWaits = !cfg.Live
	}
}

// memoryGate is -m: it admits a new session only while the process's RSS,
// plus what the sessions admitted in the last 250 ms may still grow into
// (sessionCost each: RSS shows a session only once it dialed and its
// goroutines ran), plus a reserve, stays under the limit. Live, a refused
// session is shed; for a file the replayer asks again (AdmitWaits).
//
// tcpcopy's -m exits when crossed. A gate that read RSS every 100 ms and
// counted nothing for sessions admitted meanwhile let a --speed 0 replay
// admit thousands of sessions between two samples: -m 300 peaked at
// 542 MB.
type memoryGate struct {
	limit, reserve uint64
	rss            func() uint64

	mu      sync.Mutex
	sampled time.Time
	last    uint64 // RSS at sampled
	// young counts admissions per memoryYoungBucketDur, a ring over the
	// last memoryYoung; head is the bucket of headAt.
	young    [memoryYoungBuckets]uint64
	head     int
	headAt   time.Time
	released time.Time // last debug.FreeOSMemory
}

func newMemoryGate(limit, reserve uint64, rss func() uint64) *memoryGate {
	return &memoryGate{limit: limit, reserve: reserve, rss: rss}
}

// admit reports whether one more session fits. It is called on the
// capture reader's goroutine only, but takes a lock so tests and a
// future second caller stay safe.
func (g *memoryGate) admit() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if now.Sub(g.sampled) >= memorySample {
		g.sampled, g.last = now, g.rss()
	}
	g.advance(now)
	var young uint64
	for _, n := range g.young {
		young += n
	}
	if g.last+young*sessionCost+g.reserve+sessionCost <= g.limit {
		g.young[g.head]++
		return true
	}
	if now.Sub(g.released) >= memoryReleaseEvery {
		// Go's scavenger gives freed pages back to the kernel over minutes;
		// while refusing, hand them back now so RSS shows what finished
		// sessions freed (a full GC, at most once a second).
		g.released = now
		debug.FreeOSMemory()
		g.sampled, g.last = time.Now(), g.rss()
	}
	return false
}

// advance moves the ring of recent admissions to now, clearing buckets
// older than memoryYoung.
func (g *memoryGate) advance(now time.Time) {
	if g.headAt.IsZero() {
		g.headAt = now
		return
	}
	steps := int(now.Sub(g.headAt) / memoryYoungBucketDur)
	if steps <= 0 {
		return
	}
	for i := range min(steps, memoryYoungBuckets) {
		g.young[(g.head+1+i)%memoryYoungBuckets] = 0
	}
	g.head = (g.head + steps) % memoryYoungBuckets
	g.headAt = g.headAt.Add(time.Duration(steps) * memoryYoungBucketDur)
}

// rssBytes reads the process's resident set size.
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// Giving memory back once the replay is quiet (trimWhenQuiet).
const (
	trimTick = 500 * time.Millisecond
	// trimQuiet is how many ticks without a segment sent or received
	// make the replay quiet.
	trimQuiet = 2
	// trimMin: below this much resident memory, a trim is not worth its
	// full GC.
	trimMin = 64 << 20
)

// trimmer decides when to give memory back: once the replay has been
// quiet for trimQuiet ticks, and the memory the runtime holds grew by
// half since the last trim.
//
// Why: setting sessions up leaves garbage (timers, contexts, buffers,
// the stacks of goroutines that have ended), and a process that then
// goes quiet runs no more collections to free it. Go's GC percent lets
// the heap reach twice what was live at the last collection, and the
// scavenger gives back only what exceeds that goal, so ten thousand idle
// sessions held about twice their live heap, indefinitely. One full
// collection and scavenge on going quiet gives it back; it costs a GC of
// the live heap, once per burst, and never while traffic flows.
type trimmer struct {
	activity uint64 // at the last tick
	quiet    int    // ticks since activity last moved
	floor    uint64 // held after the last trim
}

// tick reports whether to trim now, given the activity counter and the
// memory held.
func (t *trimmer) tick(activity, held uint64) bool {
	if activity != t.activity {
		t.activity, t.quiet = activity, 0
		return false
	}
	t.quiet++
	return t.quiet >= trimQuiet && held >= trimMin && held >= t.floor+t.floor/2
}

// trimWhenQuiet runs a trimmer until ctx ends, on the process's RSS
// (rssBytes, as the -m gate reads it). activity is a counter that moves
// with any traffic (the stack's segments).
func trimWhenQuiet(ctx context.Context, activity func() uint64) {
	tk := time.NewTicker(trimTick)
	defer tk.Stop()
	var t trimmer
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		if t.tick(activity(), rssBytes()) {
			debug.FreeOSMemory()
			t.floor = rssBytes()
		}
	}
}
