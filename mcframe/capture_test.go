package mcframe

import (
	"testing"

	"github.com/stackcopy/stackcopy/internal/framekit/framekittest"
	"github.com/stackcopy/stackcopy/internal/pcaptest"
)

// TestCapture replays real traffic captured on loopback from memcached
// 1.6.18: text commands of every kind (storage, multi-key get, gets, gat,
// touch, incr/decr, delete with and without noreply, version, verbosity,
// stats, an unknown and an empty line) and meta pipelines (ms, mg with
// quiet hits and misses closed by mn, md, ma, me, quit). Every connection
// must frame without error, every request be answered, and at every turn
// boundary all the requests sent before it be answered.
func TestCapture(t *testing.T) {
	conns := pcaptest.Conns(t, "testdata/memcached.pcap", 21211)
	if len(conns) < 2 {
		t.Fatalf("%d connections in the capture", len(conns))
	}
	framekittest.Capture(t, New, conns)
}
