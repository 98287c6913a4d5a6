package netstack

import (
	"net/netip"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/stackcopy/stackcopy/wire/wiretest"
)

// TestCorkedWritesLeaveNoRunts: a run of writes that are not multiples of
// the segment size (65,495-byte capture records, as GRO merges them),
// written under TCP_CORK as the replay writes a run that is due, reaches
// the target in full-sized segments with one short segment at the end.
// Upstream gVisor sent each write's remainder as a runt of its own (the
// rest of a cut segment was marked as sent already, so neither the cork
// nor the next write could take it), and cut super-packets at 64 KiB less
// the headers, so every one of them ended in a runt too (patch 0010).
func TestCorkedWritesLeaveNoRunts(t *testing.T) {
	const writes, size = 64, 65495
	var (
		mu    sync.Mutex
		sizes []int
	)
	observe := func(seg []byte) {
		ip := header.IPv4(seg)
		tcp := header.TCP(ip.Payload())
		if n := len(tcp) - int(tcp.DataOffset()); n > 0 {
			mu.Lock()
			sizes = append(sizes, n)
			mu.Unlock()
		}
	}
	cfg := DefaultConfig()
	cfg.GSO = GSOHost
	st, tg := newPairConfig(t, cfg, observe)
	// A window for all of it: a reader that falls behind would make the
	// target offer a few hundred bytes, which any sender then sends.
	rb := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: 8 << 20, Max: 8 << 20}
	if err := tg.Stack().SetTransportProtocolOption(tcp.ProtocolNumber, &rb); err != nil {
		t.Fatal(err)
	}
	l := listen(t, tg, 80)
	got := readOne(l, -1)
	c := dialTarget(t, st, netip.AddrPortFrom(wiretest.Src, 40001).String())
	c.SetCork(true)
	data := make([]byte, size)
	for range writes {
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	c.SetCork(false)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	awaitRead(t, got, writes*size)

	mu.Lock()
	defer mu.Unlock()
	mss := 0
	for _, n := range sizes {
		mss = max(mss, n)
	}
	var runts []int
	for _, n := range sizes {
		if n < mss {
			runts = append(runts, n)
		}
	}
	ts := tg.Stats()
	t.Logf("%d segments of at most %d bytes in %d device packets; %d shorter: %v", len(sizes), mss, ts.Packets, len(runts), runts)
	if len(runts) > 1 {
		t.Errorf("%d segments shorter than the MSS (%d), want at most the last one", len(runts), mss)
	}
	if st := st.Stats(); st.Retransmits != 0 {
		t.Logf("%d retransmissions on a lossless path", st.Retransmits)
	}
}
