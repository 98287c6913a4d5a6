package netstack

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// ackCounter counts the pure ACKs (no payload, no SYN, FIN or RST) the
// stack under test sends, and the highest acknowledgment number it sent.
type ackCounter struct {
	mu      sync.Mutex
	pure    int
	lastAck uint32
}

func (a *ackCounter) observe(seg []byte) {
	ip := header.IPv4(seg)
	tcp := header.TCP(seg[ip.HeaderLength():])
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastAck = tcp.AckNumber()
	if len(tcp.Payload()) == 0 && tcp.Flags() == header.TCPFlagAck {
		a.pure++
	}
}

func (a *ackCounter) get() (pure int, lastAck uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pure, a.lastAck
}

// exchange runs n request/response turns from a forged client: a 100-byte
// request, then an answer of answerLen bytes read whole before the next
// request, as a keep-alive client does. It returns the pure ACKs the
// client sent during the turns (the handshake's is left out), and then
// its ACK count and last acknowledgment number settled (after 300 ms
// without data).
func exchange(t *testing.T, quick bool, n, answerLen int) (during, settled int, ackGap uint32) {
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := st.DialFrom(ctx, netip.MustParseAddrPort("198.18.1.5:1000"), netip.AddrPortFrom(targetAddr, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	start, _ := acks.get()
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
	end, ackBefore := acks.get()
	time.Sleep(300 * time.Millisecond)
	final, ackAfter := acks.get()
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("target: %v", err)
	}
	return end - start, final - start, ackAfter - ackBefore
}

// TestDelayedACK: a forged client acknowledges the target's data as a
// Linux client does (TCP_QUICKACK off). A one-segment answer is not
// acknowledged on its own: the next request carries the ACK, and the last
// answer's ACK leaves within the delayed-ACK timeout. An answer of more
// than one full-sized segment is acknowledged at once. With QuickACK (as
// upstream gVisor), every answer gets its own ACK.
func TestDelayedACK(t *testing.T) {
	const turns = 50
	t.Run("small answers delayed", func(t *testing.T) {
		during, settled, gap := exchange(t, false, turns, 280)
		t.Logf("%d turns: %d pure ACKs during, %d once settled", turns, during, settled)
		// A turn's request normally follows its answer within microseconds;
		// a scheduler stall of 40 ms on a loaded machine may let a timer
		// ACK slip in, so a few are tolerated (quick mode sends 50).
		if during > turns/10 {
			t.Errorf("%d pure ACKs for %d one-segment answers; want the requests to carry them (at most %d)", during, turns, turns/10)
		}
		if settled != during+1 {
			t.Errorf("%d pure ACKs after the last answer; want exactly 1 (the delayed ACK)", settled-during)
		}
		if gap != 280 {
			t.Errorf("the settled ACK moved the acknowledgment by %d bytes; want the last answer's 280", gap)
		}
	})
	t.Run("small answers quick", func(t *testing.T) {
		during, _, _ := exchange(t, true, turns, 280)
		if during < turns {
			t.Errorf("QuickACK: %d pure ACKs for %d answers; want one each", during, turns)
		}
	})
	t.Run("large answers", func(t *testing.T) {
		// 4000 bytes: two full-sized segments and a part.
		during, settled, _ := exchange(t, false, turns, 4000)
		t.Logf("%d turns: %d pure ACKs during, %d once settled", turns, during, settled)
		if during < turns {
			t.Errorf("%d pure ACKs for %d answers of three segments; want at least one each", during, turns)
		}
	})
}
