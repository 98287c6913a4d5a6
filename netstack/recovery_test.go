package netstack

import (
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// lossPattern loses data segments by their place in the stream, the same
// places in every run: 1 in 20 scattered segments once, a burst of 12
// consecutive segments once, and 1 in 211 segments twice (its first
// retransmission is lost too). Place k is the payload offset from the first
// data byte in 1448-byte units (the segment size at MTU 1500 with
// timestamps), so a retransmission cut at other boundaries still maps to
// the place it repairs.
type lossPattern struct {
	mu    sync.Mutex
	base  uint32
	based bool
	seen  map[uint32]int
}

func (p *lossPattern) lose(seg []byte) bool {
	ip := header.IPv4(seg)
	tcp := header.TCP(seg[ip.HeaderLength():])
	if len(tcp.Payload()) == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.based {
		p.base, p.based = tcp.SequenceNumber(), true
	}
	k := (tcp.SequenceNumber() - p.base) / 1448
	n := p.seen[k]
	p.seen[k] = n + 1
	switch {
	case k >= 3000 && k < 3012:
		return n == 0
	case k%211 == 100:
		return n < 2
	default:
		return n == 0 && (k*2654435761)>>7%20 == 3
	}
}

// TestLossRecoveryWithoutTimeouts uploads 16 MiB while the target loses
// about 5% of the data segments in a fixed pattern, and requires gVisor to
// repair every loss by RACK/SACK recovery: at most one retransmission
// timeout in the run, in each GSO mode.
//
// This is the test of third_party/gvisor/patches: with upstream gVisor
// the host GSO run took 29 RTOs for the same pattern (the coalesce run 3),
// each at least MinRTO (200 ms) of a stalled upload. Upstream marks a whole
// GSO segment SACKed when a block covers its start, never finds a hole
// lost behind a later segment cut from the same super-packet, and keeps
// segments RACK found lost in the pipe, so it resends nothing until the
// timeout.
func TestLossRecoveryWithoutTimeouts(t *testing.T) {
	for _, mode := range []struct {
		name string
		gso  GSOMode
	}{{"coalesce", GSOCoalesce}, {"host", GSOHost}} {
		t.Run(mode.name, func(t *testing.T) {
			p := &lossPattern{seen: make(map[uint32]int)}
			st, ts := upload(t, mode.gso, 16<<20, p.lose)
			t.Logf("%d segments lost, %d retransmitted, %d fast retransmits, %d RTOs", ts.Lost, st.Retransmits, st.FastRetransmits, st.Timeouts)
			if ts.Lost < 500 {
				t.Fatalf("the pattern lost only %d segments: the test did not exercise recovery", ts.Lost)
			}
			if st.Timeouts > 1 {
				t.Errorf("%d retransmission timeouts for %d lost segments; want at most 1", st.Timeouts, ts.Lost)
			}
		})
	}
}
