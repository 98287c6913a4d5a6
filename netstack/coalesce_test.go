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

// recordWire keeps what the link endpoint writes.
type recordWire struct {
	writes [][]byte
	gso    []wire.GSO
}

func (w *recordWire) WritePacket(bufs [][]byte, gso wire.GSO) error {
	w.writes = append(w.writes, bytes.Join(bufs, nil))
	w.gso = append(w.gso, gso)
	return nil
}

func (w *recordWire) Close() error { return nil }

// TestCoalesceBursts feeds the writer's coalescing path the segments of a
// clean upload, two bursts of three full segments each ending in PSH, then
// a retransmission: each burst is one super-packet with the kernel's GSO
// instructions, and after the retransmission the flow goes out segment by
// segment. A segment that ends one burst and starts the next must not be
// taken for a retransmission (it once was: the writer looked at it twice,
// and nearly nothing was ever merged).
func TestCoalesceBursts(t *testing.T) {
	const mss = 1448
	w := &recordWire{}
	e := &linkEndpoint{wire: w}
	co, scratch := newCoalescer(), make([]byte, 0, gsoMaxSize)
	send := func(seq uint32, flags header.TCPFlags) {
		b := wiretest.TCPv4(t, mss, seq, flags, false)
		pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
		e.coalesce(co, pkt, scratch)
		pkt.DecRef()
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
	if co.pending() {
		e.flush(co)
	}
	if len(w.writes) != 2 {
		t.Fatalf("%d writes for two bursts of three segments, want 2", len(w.writes))
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
	if co.pending() {
		e.flush(co)
	}
	if len(w.writes) != 4 {
		t.Fatalf("%d writes after a retransmission, want 4 (segment by segment)", len(w.writes))
	}
	for i, g := range w.gso {
		if g.Type != wire.GSONone {
			t.Errorf("write %d after a retransmission is a super-packet (%+v)", i, g)
		}
	}
}
