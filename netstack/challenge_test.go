package netstack

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestChallengeACKInSynSent: a target that still holds the 4-tuple in
// TIME_WAIT answers a new SYN whose timestamp or sequence it cannot take
// with an ACK of the old connection (Linux's tcp_timewait_state_process).
// That is common when mirroring short connections: the real client reuses
// its port soon, and the target closed the forged connection first. The
// forged client must reset that ACK (which ends the TIME_WAIT) and send
// its SYN again once, at once, and after that wait its retransmission
// timeout, as Linux's tcp_rcv_synsent_state_process does. Upstream gVisor
// restarted its SYN backoff at 2 µs, doubling: a burst of SYNs for as long
// as the answer took through the relay (14 in 35 ms in the liveshort
// bench), each answered by the target and relayed back.
func TestChallengeACKInSynSent(t *testing.T) {
	const slowRelay = 100 * time.Millisecond
	st, tg := newPairConfig(t, DefaultConfig(), nil)
	discardAll(listen(t, tg, 80))

	type syn struct {
		port uint16
		iss  uint32
	}
	var (
		mu         sync.Mutex
		syns       []time.Time
		resets     []uint32 // sequence numbers of the client's RSTs
		challenged time.Time
	)
	first := make(chan syn, 1)
	tg.Lose = func(seg []byte) bool {
		ip := header.IPv4(seg)
		tcp := header.TCP(seg[ip.HeaderLength():])
		mu.Lock()
		defer mu.Unlock()
		switch {
		case tcp.Flags() == header.TCPFlagSyn:
			syns = append(syns, time.Now())
			if len(syns) == 1 {
				first <- syn{tcp.SourcePort(), tcp.SequenceNumber()}
				return true
			}
			// A relay under load: what the client sends within
			// slowRelay of the challenge gets no answer in that time.
			return time.Since(challenged) < slowRelay
		case tcp.Flags()&header.TCPFlagRst != 0:
			resets = append(resets, tcp.SequenceNumber())
			return true
		}
		return false
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src := netip.MustParseAddrPort("198.18.1.77:40123")
	dialed := make(chan error, 1)
	go func() {
		c, err := st.DialFrom(ctx, src, netip.AddrPortFrom(targetAddr, 80))
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	var s syn
	select {
	case s = <-first:
	case <-ctx.Done():
		t.Fatal("no SYN")
	}
	oldAck := s.iss + 1 + 100000 // what the old connection acknowledged
	mu.Lock()
	challenged = time.Now()
	mu.Unlock()
	if n := st.Inject([][]byte{challengeACK(src, s.port, 5000, oldAck)}); n != 1 {
		t.Fatalf("Inject took %d packets", n)
	}
	if err := <-dialed; err != nil {
		t.Fatalf("dial after the challenge ACK: %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(resets) == 0 || resets[0] != oldAck {
		t.Errorf("client's RSTs %v, want one with the challenge's acknowledgment number %d (RFC 793: <SEQ=SEG.ACK><CTL=RST>)", resets, oldAck)
	}
	// One quick retransmission, then the RTO: a SYN lost within the
	// window, and the one after the RTO (2 s: the initial RTO, doubled)
	// that completes the handshake. On a slow machine the quick one may
	// come after the window and complete it itself.
	within := 0
	for _, at := range syns[1:] {
		if at.Sub(challenged) < slowRelay {
			within++
		}
	}
	if within > 1 || len(syns) > 3 {
		t.Errorf("%d SYNs within %v of the challenge ACK and %d in all, want at most 1 and 3 (one quick retransmission, then the RTO)", within, slowRelay, len(syns))
	}
}

// challengeACK is the target's ACK of an old connection on the same
// 4-tuple, to the forged client at src (its port: port).
func challengeACK(src netip.AddrPort, port uint16, seq, ack uint32) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)),
		TTL:         64,
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     tcpip.AddrFrom4(targetAddr.As4()),
		DstAddr:     tcpip.AddrFrom4(src.Addr().As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{
		SrcPort:    80,
		DstPort:    port,
		SeqNum:     seq,
		AckNum:     ack,
		DataOffset: header.TCPMinimumSize,
		Flags:      header.TCPFlagAck,
		WindowSize: 512,
	})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), header.TCPMinimumSize)
	tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
	return b
}
