package heapfloor

import (
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	for _, c := range []struct {
		live, headroom uint64
		base, want     int
	}{
		{0, 32 << 20, 100, 800},        // nothing live: the runtime's minimum, scaled
		{2 << 20, 32 << 20, 100, 800},  // below the minimum counts as the minimum
		{8 << 20, 32 << 20, 100, 400},  // goal 8+32 MiB
		{16 << 20, 32 << 20, 100, 200}, // goal 16+32 MiB
		{32 << 20, 32 << 20, 100, 100}, // at the floor: the default
		{1 << 30, 32 << 20, 100, 100},  // large heaps keep the default
		{1 << 30, 32 << 20, 150, 150},  // and a higher base stays
	} {
		if got := percentFor(c.live, c.headroom, c.base); got != c.want {
			t.Errorf("percentFor(%d MiB live, %d MiB headroom, base %d) = %d, want %d",
				c.live>>20, c.headroom>>20, c.base, got, c.want)
		}
	}
}

func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// awaitGOGC runs collections until the percent the floor's hook set
// satisfies ok.
func awaitGOGC(t *testing.T, want string, ok func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok(gogc()) {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC is %d, want %s", gogc(), want)
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
}

// TestFloorFollowsLiveHeap: the percent is raised while the live heap is
// below the headroom, falls back to the default once it is above, rises
// again when it shrinks, and Stop restores the default.
func TestFloorFollowsLiveHeap(t *testing.T) {
	if _, set := os.LookupEnv("GOGC"); set {
		t.Skip("GOGC is set in the environment: the floor stands aside by design")
	}
	base := gogc()
	const headroom = 64 << 20
	f := Start(headroom)
	if f == nil {
		t.Fatal("Start returned nil without GOGC set")
	}
	if got, want := gogc(), 100*headroom/runtimeMinimum; got != want {
		t.Fatalf("after Start GOGC = %d, want %d", got, want)
	}
	// A small live heap: the goal is live+headroom, a percent far above
	// the base.
	runtime.GC()
	runtime.GC()
	if got := gogc(); got <= 2*base {
		t.Fatalf("small live heap: GOGC = %d, want well above %d", got, base)
	}
	// A live heap above the headroom: the default again.
	big := make([][]byte, 0, 96)
	for range 96 {
		big = append(big, make([]byte, 1<<20))
	}
	awaitGOGC(t, fmt.Sprintf("%d with 96 MiB live", base), func(p int) bool { return p == base })
	runtime.KeepAlive(big)
	big = nil
	// It shrinks: the floor applies again.
	awaitGOGC(t, fmt.Sprintf("above %d once the live heap is freed", 2*base), func(p int) bool { return p > 2*base })
	f.Stop()
	if got := gogc(); got != base {
		t.Fatalf("after Stop GOGC = %d, want %d", got, base)
	}
	// No hook left that could change it again.
	runtime.GC()
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	if got := gogc(); got != base {
		t.Fatalf("after Stop and two collections GOGC = %d, want %d", got, base)
	}
	var nilFloor *Floor
	nilFloor.Stop() // a nil Floor (GOGC set) stops as a no-op
}

func TestStartStandsAsideForGOGC(t *testing.T) {
	t.Setenv("GOGC", "100")
	if f := Start(32 << 20); f != nil {
		f.Stop()
		t.Fatal("Start with GOGC set returned a Floor")
	}
	if f := Start(runtimeMinimum); f != nil {
		f.Stop()
		t.Fatal("Start with a headroom at the runtime's minimum returned a Floor")
	}
}
