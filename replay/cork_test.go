package replay_test

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/transfer"
)

// corkConn is a memConn that logs its writes, corks and FIN in order.
type corkConn struct {
	*memConn
	mu  sync.Mutex
	log []string
}

func (c *corkConn) add(s string) {
	c.mu.Lock()
	c.log = append(c.log, s)
	c.mu.Unlock()
}

func (c *corkConn) Write(b []byte) (int, error) {
	c.add(fmt.Sprintf("write %d", len(b)))
	return c.memConn.Write(b)
}

func (c *corkConn) SetCork(on bool) {
	if on {
		c.add("cork")
	} else {
		c.add("uncork")
	}
}

func (c *corkConn) CloseWrite() error {
	c.add("fin")
	return c.memConn.CloseWrite()
}

// corkRun replays one session (open, the given writes gap apart, FIN) at
// speed and returns what its connection saw. The dial waits until every
// event is queued, so what is due when each write is made is fixed.
func corkRun(t *testing.T, speed float64, gap time.Duration, sizes ...int) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr, err := transfer.ParseTransfers("80-127.0.0.1:80") // capturedServer's port
	if err != nil {
		t.Fatal(err)
	}
	cfg := replay.DefaultConfig()
	cfg.Transfers = tr
	cfg.Speed = speed
	cfg.NoWait = true // no answers to wait for: the writes only
	fed := make(chan struct{})
	c := &corkConn{memConn: newMemConn()}
	dial := func(ctx context.Context, _, _ netip.AddrPort) (replay.Conn, error) {
		select {
		case <-fed:
		case <-ctx.Done():
		}
		return c, ctx.Err()
	}
	r := replay.New(ctx, cfg, dial, nil)
	k := key(0)
	feed(r, k, open())
	var d time.Duration
	for _, n := range sizes {
		feed(r, k, at(dataB(make([]byte, n)), d))
		d += gap
	}
	feed(r, k, at(fin(), d))
	close(fed)
	r.CloseInput()
	if !waitReplay(r, bound) {
		t.Fatalf("replay did not end within %v; stats %+v", bound, r.Stats())
	}
	if st := r.Stats(); st.Completed != 1 {
		t.Fatalf("stats %+v: want the session completed", st)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log
}

// TestCorkedRuns: writes of more than a segment that are due back to back
// (merged capture records of an upload) are written under TCP_CORK, so a
// write's remainder goes out with the next write's front (gVisor patch
// 0010); the cork comes off after the run's last write, before the FIN.
// A write whose successor is not due yet, and small writes, keep their
// own segments.
func TestCorkedRuns(t *testing.T) {
	for _, tc := range []struct {
		name  string
		speed float64
		gap   time.Duration
		sizes []int
		want  []string
	}{
		{"a run due at once", 0, 0, []int{65495, 65495, 65495, 100},
			[]string{"cork", "write 65495", "write 65495", "write 65495", "write 100", "uncork", "fin"}},
		{"small writes", 0, 0, []int{100, 1000, 100},
			[]string{"write 100", "write 1000", "write 100", "fin"}},
		{"paced apart", 1, 30 * time.Millisecond, []int{65495, 65495},
			[]string{"write 65495", "write 65495", "fin"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := corkRun(t, tc.speed, tc.gap, tc.sizes...); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("connection saw %q, want %q", got, tc.want)
			}
		})
	}
}
