package netstack

import (
	"context"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// forgedClient is the i-th of 2^16 distinct forged client addresses, in
// 198.19.0.0/16.
func forgedClient(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), 40000)
}

// BenchmarkDialWithOpenClients dials from a new forged address while
// open sessions hold other addresses, as a live mirror of a busy service
// does (every real client is a forged address of its own). Upstream
// gVisor scans every address the NIC holds on each such dial (a subnet
// broadcast check), so a dial cost grew with the clients open.
func BenchmarkDialWithOpenClients(b *testing.B) {
	for _, open := range []int{100, 5000} {
		b.Run(strconv.Itoa(open)+" open", func(b *testing.B) {
			benchDial(b, open)
		})
	}
}

func benchDial(b *testing.B, open int) {
	cfg := DefaultConfig()
	cfg.GSO = GSOOff
	st, tg := newPairConfig(b, cfg, nil)
	discardAll(listen(b, tg, 80))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dst := netip.AddrPortFrom(targetAddr, 80)
	for i := range open {
		c, err := st.DialFrom(ctx, forgedClient(i), dst)
		if err != nil {
			b.Fatalf("open %d: %v", i, err)
		}
		defer c.Close()
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c, err := st.DialFrom(ctx, forgedClient(open+i%(1<<16-open)), dst)
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		c.Abort()
		c.Close()
	}
}
