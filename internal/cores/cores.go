// Package cores holds the commands' --cores flag: how many cores the Go
// runtime runs goroutines on at once (GOMAXPROCS).
//
// The live mirror and intercept default to one core. On the online host
// that bounds what mirroring can take from the real service, as TCPCopy's
// single thread does, and it costs less per packet: with one core the
// runtime hands work from goroutine to goroutine on the same thread,
// without waking another one (futex) or stealing across cores. In the
// live bench on two cores it cut stackcopy's CPU per mirrored request
// (42–51 to 30–42 µs at 16,000 requests/s, 109–117 to 60–83 at 2,000),
// intercept's per answer by a quarter, and one core still kept up at every
// rate. Replay
// of a capture file keeps every core: there the wire's writer overlaps
// its system calls with gVisor's work on another.
package cores

import (
	"fmt"
	"os"
	"runtime"
)

// Default is the core count a command uses when --cores is not given:
// liveDefault, unless the environment sets GOMAXPROCS: an operator who set
// it chose, and 0 leaves it to the runtime, which reads the variable.
func Default(liveDefault int) int {
	if os.Getenv("GOMAXPROCS") != "" {
		return 0
	}
	return liveDefault
}

// Check validates a --cores value.
func Check(n int) error {
	if n < 0 {
		return fmt.Errorf("--cores %d: want 0 (every core) or more", n)
	}
	return nil
}

// Apply runs goroutines on n cores at once; 0 leaves the runtime's
// choice. The startup logs say what is in effect.
func Apply(n int) {
	if n > 0 {
		runtime.GOMAXPROCS(n)
	}
}
