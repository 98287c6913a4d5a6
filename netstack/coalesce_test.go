package netstack

import (
	"bytes"
	"testing"

	"github.com/stackcopy/stackcopy/wire"
	"github.com/stackcopy/stackcopy/wire/wiretest"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// recordDevice keeps what the link endpoint writes.
type recordDevice struct {
	writes [][]byte
	gso    []wire.GSO
	calls  int
}

func (w *recordDevice) Write(pkts []wire.Packet) (int, error) {
	w.calls++
	for _, p := range pkts {
		w.writes = append(w.writes, bytes.Join(p.Bufs, nil))
		w.gso = append(w.gso, p.GSO)
	}
	return len(pkts), nil
}

func (w *recordDevice) BatchSize() int { return 64 }
func (w *recordDevice) Close() error   { return nil }

// TestCoalesceBursts feeds the writer's coalescing path the segments of a
// clean upload, two bursts of three full segments each ending in PSH, then
// a retransmission: each burst is one super-packet with the kernel's GSO
// instructions, and after the retransmission the flow goes out segment by
// segment. A segment that ends one burst and starts the next must not be
// taken for a retransmission (it once was: the writer looked at it twice,
// and nearly nothing was ever merged).
func TestCoalesceBursts(t *testing.T) {
	const mss = 1448
	w := &recordDevice{}
	e := &linkEndpoint{dev: w}
	co, b := newCoalescer(), &batch{max: w.BatchSize()}
	send := func(seq uint32, flags header.TCPFlags) {
		p := wiretest.TCPv4(t, mss, seq, flags, false)
		// coalesce takes over the packet's reference.
		e.coalesce(b, co, gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(p)}))
	}
	flush := func() {
		if co.pending() {
			buf, gso := co.take()
			b.addOwned(buf, gso)
		}
		e.writeBatch(b, co)
	}
	seq := uint32(1000)
	for range 2 {
		for i := range 3 {
			f := header.TCPFlagAck
			if i == 2 {
				f |= header.TCPFlagPsh
			}
			send(seq, f)
			seq += mss
		}
	}
	flush()
	if len(w.writes) != 2 || w.calls != 1 {
		t.Fatalf("%d packets in %d device writes for two bursts of three segments, want 2 in one batch", len(w.writes), w.calls)
	}
	for i, g := range w.gso {
		if g.Type != wire.GSOTCPv4 || g.MSS != mss || len(w.writes[i]) != 20+32+3*mss {
			t.Errorf("write %d: %d bytes, GSO %+v; want a 3-segment TCPv4 super-packet with MSS %d", i, len(w.writes[i]), g, mss)
		}
	}

	// A retransmission: from now on, for lossyFor, one write per segment.
	w.writes, w.gso = nil, nil
	send(seq-mss, header.TCPFlagAck|header.TCPFlagPsh)
	for i := range 3 {
		send(seq+uint32(i)*mss, header.TCPFlagAck)
	}
	flush()
	if len(w.writes) != 4 {
		t.Fatalf("%d writes after a retransmission, want 4 (segment by segment)", len(w.writes))
	}
	for i, g := range w.gso {
		if g.Type != wire.GSONone {
			t.Errorf("write %d after a retransmission is a super-packet (%+v)", i, g)
		}
	}
}
