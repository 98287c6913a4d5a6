package netstack

import (
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestTimestampsRiseAcrossStacks: each stack here stands for one run of
// stackcopy, dialing from the same client address and port as the run
// before it, as a restarted mirror does when real clients reuse their
// ports. A target that still holds the old run's connection in TIME_WAIT
// takes the new SYN only if its timestamp is newer (RFC 7323 PAWS, Linux's
// tcp_timewait_state_process), else it answers with a challenge ACK and
// the handshake costs a round trip more. Upstream gVisor draws a random
// timestamp offset per stack, so half the new SYNs were older.
func TestTimestampsRiseAcrossStacks(t *testing.T) {
	const runs = 6
	var prevLast uint32
	for i := range runs {
		var (
			mu          sync.Mutex
			synTS, last uint32
			synSeen     bool
			noTS        int
		)
		observe := func(seg []byte) {
			ip := header.IPv4(seg)
			tcp := header.TCP(seg[ip.HeaderLength():])
			var ts uint32
			var ok bool
			if tcp.Flags()&header.TCPFlagSyn != 0 {
				o := header.ParseSynOptions(tcp.Options(), false)
				ts, ok = o.TSVal, o.TS
			} else if tcp.Flags()&header.TCPFlagRst == 0 {
				o := header.ParseTCPOptions(tcp.Options())
				ts, ok = o.TSVal, o.TS
			} else {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if !ok {
				noTS++
				return
			}
			if !synSeen && tcp.Flags()&header.TCPFlagSyn != 0 {
				synSeen, synTS = true, ts
			}
			last = ts
		}
		st, tg := newPairConfig(t, DefaultConfig(), observe)
		discardAll(listen(t, tg, 80))
		c := dialTarget(t, st, "198.18.1.78:40200")
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		c.Close()
		time.Sleep(5 * time.Millisecond) // timestamps count milliseconds
		mu.Lock()
		if noTS > 0 || !synSeen {
			mu.Unlock()
			t.Fatalf("run %d: %d segments without a timestamp, SYN seen %v", i, noTS, synSeen)
		}
		if i > 0 && int32(synTS-prevLast) <= 0 {
			mu.Unlock()
			t.Fatalf("run %d: SYN timestamp %d is not newer than the last one of the run before, %d", i, synTS, prevLast)
		}
		prevLast = last
		mu.Unlock()
	}
}
