package netstack

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// ackCounter watches the segments the stack under test sends: the pure
// ACKs (no payload, no SYN, FIN or RST) that acknowledge the target's
// data (the handshake's ACK does not), and the acknowledgment numbers.
type ackCounter struct {
	mu       sync.Mutex
	first    bool   // the handshake's ACK was seen
	firstAck uint32 // its acknowledgment number: the target's ISN + 1
	pure     int
	lastAck  uint32
}

func (a *ackCounter) observe(seg []byte) {
	ip := header.IPv4(seg)
	tcp := header.TCP(seg[ip.HeaderLength():])
	if tcp.Flags()&header.TCPFlagAck == 0 {
		return // the SYN
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ack := tcp.AckNumber()
	if !a.first {
		a.first, a.firstAck = true, ack
	}
	a.lastAck = ack
	if len(tcp.Payload()) == 0 && tcp.Flags() == header.TCPFlagAck && ack != a.firstAck {
		a.pure++
	}
}

// exchanged is what one exchange saw.
type exchanged struct {
	during int // pure ACKs of answer data until the client read the last answer
	total  int // the same once 300 ms passed without data
	// acked is how many of the target's bytes the client acknowledged in
	// all once settled; want is how many it sent.
	acked, want uint32
}

// exchange runs n request/response turns from a forged client: a 100-byte
// request, then an answer of answerLen bytes read whole before the next
// request, as a keep-alive client does.
func exchange(t *testing.T, quick bool, n, answerLen int) exchanged {
	t.Helper()
	var acks ackCounter
	cfg := DefaultConfig()
	cfg.GSO = GSOOff
	cfg.QuickACK = quick
	st, tg := newPairConfig(t, cfg, acks.observe)
	l := listen(t, tg, 80)
	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		req := make([]byte, 100)
		answer := bytes.Repeat([]byte{'a'}, answerLen)
		for range n {
			if _, err := io.ReadFull(c, req); err != nil {
				served <- err
				return
			}
			if _, err := c.Write(answer); err != nil {
				served <- err
				return
			}
		}
		_, err = io.Copy(io.Discard, c) // until the client closes
		served <- err
	}()
	c := dialTarget(t, st, "198.18.1.5:1000")
	c.SetDeadline(time.Now().Add(20 * time.Second))
	req := bytes.Repeat([]byte{'r'}, 100)
	answer := make([]byte, answerLen)
	for i := range n {
		if _, err := c.Write(req); err != nil {
			t.Fatalf("turn %d: write: %v", i, err)
		}
		if _, err := io.ReadFull(c, answer); err != nil {
			t.Fatalf("turn %d: read: %v", i, err)
		}
	}
	var e exchanged
	acks.mu.Lock()
	e.during = acks.pure
	acks.mu.Unlock()
	time.Sleep(300 * time.Millisecond)
	acks.mu.Lock()
	e.total, e.acked, e.want = acks.pure, acks.lastAck-acks.firstAck, uint32(n*answerLen)
	acks.mu.Unlock()
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("target: %v", err)
	}
	return e
}

// TestDelayedACK: a forged client acknowledges the target's data as a
// Linux client does (TCP_QUICKACK off). A one-segment answer is not
// acknowledged on its own: the next request carries the ACK, and the last
// answer's ACK leaves within the delayed-ACK timeout. An answer of more
// than one full-sized segment is acknowledged at once. With QuickACK (as
// upstream gVisor), every answer gets its own ACK. In every case the
// client ends up acknowledging every byte.
func TestDelayedACK(t *testing.T) {
	const turns = 50
	t.Run("small answers delayed", func(t *testing.T) {
		e := exchange(t, false, turns, 280)
		t.Logf("%d turns: %+v", turns, e)
		// A turn's request normally follows its answer within microseconds;
		// a scheduler stall of 40 ms on a loaded machine may let a timer
		// ACK slip in, so a few are tolerated (quick mode sends 50).
		if e.total > turns/10+1 {
			t.Errorf("%d pure ACKs for %d one-segment answers; want the requests to carry them (at most %d)", e.total, turns, turns/10+1)
		}
		if e.total == e.during {
			t.Errorf("no pure ACK after the last answer; want the delayed ACK")
		}
		if e.acked != e.want {
			t.Errorf("acknowledged %d of the target's %d bytes", e.acked, e.want)
		}
	})
	t.Run("small answers quick", func(t *testing.T) {
		e := exchange(t, true, turns, 280)
		t.Logf("%d turns: %+v", turns, e)
		if e.total < turns || e.acked != e.want {
			t.Errorf("QuickACK: %d pure ACKs for %d answers, %d of %d bytes acknowledged; want one each, all", e.total, turns, e.acked, e.want)
		}
	})
	t.Run("large answers", func(t *testing.T) {
		// 4000 bytes: two full-sized segments and a part.
		e := exchange(t, false, turns, 4000)
		t.Logf("%d turns: %+v", turns, e)
		if e.total < turns || e.acked != e.want {
			t.Errorf("%d pure ACKs for %d answers of three segments, %d of %d bytes acknowledged; want at least one each, all", e.total, turns, e.acked, e.want)
		}
	})
}
