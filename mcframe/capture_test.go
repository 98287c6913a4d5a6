package mcframe

import (
	"testing"

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
	for k, segs := range conns {
		f := New()
		for i, s := range segs {
			if s.Client && i > 0 && !segs[i-1].Client && f.Answers() != f.Requests() {
				t.Fatalf("connection %d, segment %d: the client goes on with %d of %d commands answered", k, i, f.Answers(), f.Requests())
			}
			if s.Client {
				f.Client(s.Data)
			} else {
				f.Server(s.Data)
			}
			if f.Err() != nil {
				t.Fatalf("connection %d, segment %d: %v", k, i, f.Err())
			}
		}
		if f.Requests() == 0 || f.Requests() != f.Answers() {
			t.Errorf("connection %d: requests %d answers %d", k, f.Requests(), f.Answers())
		}
	}
}
