package capture

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/transfer"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Live capture needs root or CAP_NET_RAW; the tests that capture skip
// without it. They capture loopback traffic of their own (in whatever
// namespace the test runs); the end-to-end tests with real clients and
// servers are in netns-tests/live_test.go.

func mustTransfers(t testing.TB, s string) transfer.Transfers {
	t.Helper()
	ts, err := transfer.ParseTransfers(s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func TestOpenLiveConfigErrors(t *testing.T) {
	ts := mustTransfers(t, "80-198.18.2.2:80")
	for _, tc := range []struct {
		name string
		cfg  LiveConfig
		want string
	}{
		{"no interface", LiveConfig{Transfers: ts}, "live capture: no interface given"},
		{"unknown interface", LiveConfig{Interfaces: []string{"nosuch0"}, Transfers: ts}, "live capture on nosuch0: no such network interface"},
		{"unknown among others", LiveConfig{Interfaces: []string{"lo", "nosuch1"}, Transfers: ts}, "live capture on nosuch1: no such network interface"},
		{"name too long", LiveConfig{Interfaces: []string{"averyveryverylongname"}, Transfers: ts}, "live capture on averyveryverylongname: bad interface name"},
		{"any with others", LiveConfig{Interfaces: []string{"any", "lo"}, Transfers: ts}, `live capture on any,lo: "any" already captures on every interface; give it alone`},
		{"twice", LiveConfig{Interfaces: []string{"lo", "lo"}, Transfers: ts}, "live capture on lo,lo: interface lo given twice"},
		{"no transfers", LiveConfig{Interfaces: []string{"lo"}}, "live capture on lo: no transfers (-x) to select traffic by"},
		{"IPv6 transfers only", LiveConfig{Interfaces: []string{"lo"}, Transfers: mustTransfers(t, "[2001:db8::1]:80-198.18.2.2:80")}, "live capture on lo: filter: no transfer can match IPv4 traffic (live capture replays IPv4 only)"},
		{"snaplen", LiveConfig{Interfaces: []string{"lo"}, Transfers: ts, Snaplen: -1}, "live capture on lo: snaplen -1 out of range (1-1048576)"},
		{"small buffer", LiveConfig{Interfaces: []string{"lo"}, Transfers: ts, BufferBytes: 600 << 10}, "live capture on lo: buffer of 614400 bytes too small for snaplen 262144: want at least 1048576"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := OpenLive(tc.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got  %q\nwant %q", err, tc.want)
			}
			if strings.Contains(tc.name, "unknown") && !errors.Is(err, unix.ENODEV) {
				t.Errorf("%v does not match ENODEV", err)
			}
		})
	}
}

// TestOpenLiveNoPrivilege: without CAP_NET_RAW the error says what is
// needed. The capability is dropped on one locked thread only; the thread
// ends with the goroutine.
func TestOpenLiveNoPrivilege(t *testing.T) {
	ts := mustTransfers(t, "80-198.18.2.2:80")
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with us
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		data[0].Effective, data[1].Effective = 0, 0
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		s, err := OpenLive(LiveConfig{Interfaces: []string{"lo"}, Transfers: ts})
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	err := <-done
	const want = "live capture on lo: operation not permitted (needs root or CAP_NET_RAW)"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("%v does not match EPERM", err)
	}
}

func TestOpenLiveFilterNeedsTcpdump(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := OpenLive(LiveConfig{Interfaces: []string{"lo"}, Transfers: mustTransfers(t, "80-198.18.2.2:80"), Filter: "tcp port 80"})
	if err == nil || !strings.HasPrefix(err.Error(), `live capture on lo: filter "tcp port 80": compiling a pcap filter needs tcpdump (install the Debian package tcpdump)`) {
		t.Fatalf("got %v", err)
	}
}

// openLive opens a live source or skips the test without privileges.
func openLive(t *testing.T, cfg LiveConfig) *LiveSource {
	t.Helper()
	s, err := OpenLive(cfg)
	if errors.Is(err, unix.EPERM) {
		t.Skipf("needs root or CAP_NET_RAW: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// loopExchange runs one TCP exchange over loopback to ln: the client sends
// req and half-closes, the server answers with ans and closes.
func loopExchange(t *testing.T, ln net.Listener, req, ans []byte) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		got, err := io.ReadAll(c)
		if err == nil && !bytes.Equal(got, req) {
			err = errors.New("server got a different request")
		}
		if err == nil {
			_, err = c.Write(ans)
		}
		errc <- err
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ans) {
		t.Fatal("client got a different answer")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// collect runs Next until it fails, sending segments to the returned
// channel; the final error goes to errc.
func collect(s *LiveSource) (<-chan Segment, <-chan error) {
	segs := make(chan Segment, 1<<16)
	errc := make(chan error, 1)
	go func() {
		for {
			seg, err := s.Next()
			if err != nil {
				close(segs)
				errc <- err
				return
			}
			segs <- seg
		}
	}()
	return segs, errc
}

// TestLiveLoopback captures two exchanges over loopback, one of them to a
// mirrored server: the mirrored session's client stream is reassembled
// intact by the tracker, the server's bytes are all there, the other
// session never reaches userspace (or, with a user filter that lets it in,
// is dropped and counted), each loopback packet is returned once, and the
// counters add up. Stats runs concurrently with Next throughout.
func TestLiveLoopback(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ifaces []string
		filter string
	}{
		{"lo", []string{"lo"}, ""},
		{"any", []string{"any"}, ""},
		{"lo with user filter", []string{"lo"}, "tcp and host 127.0.0.1"},
		{"any with user filter", []string{"any"}, "tcp and host 127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.filter != "" {
				if _, err := exec.LookPath("tcpdump"); err != nil {
					t.Skip("tcpdump not installed")
				}
			}
			mirrored, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer mirrored.Close()
			other, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			server := netip.MustParseAddrPort(mirrored.Addr().String())
			ts := mustTransfers(t, server.String()+"-198.18.2.2:80")
			s := openLive(t, LiveConfig{Interfaces: tc.ifaces, Transfers: ts, Filter: tc.filter})

			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // Stats concurrently with Next, for the race detector
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
						_ = s.Stats()
					}
				}
			}()
			defer func() { close(stop); wg.Wait() }()

			segs, errc := collect(s)
			req, ans := make([]byte, 300_000), make([]byte, 200_000)
			rand.Read(req)
			rand.Read(ans)
			start := time.Now()
			loopExchange(t, other, []byte("not mirrored"), []byte("not mirrored either"))
			loopExchange(t, mirrored, req, ans)

			var stream clientStream
			serverBytes := map[uint32]int{} // by sequence number: each once
			var n int
			deadline := time.After(10 * time.Second)
			for !stream.fin || sum(serverBytes) < len(ans) {
				select {
				case seg := <-segs:
					n++
					if seg.Src != server && seg.Dst != server {
						t.Fatalf("segment %v -> %v is not of the mirrored server %v", seg.Src, seg.Dst, server)
					}
					if seg.Time.Before(start.Add(-time.Second)) || seg.Time.After(time.Now().Add(time.Second)) {
						t.Errorf("segment time %v, captured at about %v", seg.Time, time.Now())
					}
					if seg.Src == server && len(seg.Payload) > 0 {
						serverBytes[seg.Seq] = len(seg.Payload)
					}
					stream.add(seg, server)
				case <-deadline:
					t.Fatalf("after 10s: client stream %d of %d bytes (fin %v), server %d of %d bytes; stats %+v",
						len(stream.buf), len(req), stream.fin, sum(serverBytes), len(ans), s.Stats())
				}
			}
			if !bytes.Equal(stream.buf, req) {
				t.Errorf("client stream: %d bytes, differs from the %d sent", len(stream.buf), len(req))
			}
			// Let the rest (last ACKs) arrive: blocks are handed over after
			// LiveBlockTimeout at the latest.
			time.Sleep(20 * LiveBlockTimeout)
			for len(segs) > 0 {
				stream.add(<-segs, server)
				n++
			}
			st := s.Stats()
			t.Logf("%d segments; %+v", n, st)
			if st.TCP != uint64(n) {
				t.Errorf("Stats.TCP %d, Next returned %d", st.TCP, n)
			}
			if st.Drops != 0 {
				t.Errorf("%d drops", st.Drops)
			}
			// With a user filter other loopback TCP on this host (tests of
			// other packages run in parallel) passes too and may still sit
			// in the ring: then the kernel may have counted more.
			if read := st.Packets + st.LoopbackCopies + st.Drops; st.KernelPackets != read && (tc.filter == "" || st.KernelPackets < read) {
				t.Errorf("kernel counted %d packets, read %d + %d loopback copies + %d drops", st.KernelPackets, st.Packets, st.LoopbackCopies, st.Drops)
			}
			// Every loopback packet passes the interface twice.
			if st.LoopbackCopies != st.Packets {
				t.Errorf("%d loopback copies skipped, %d packets read: want each packet once", st.LoopbackCopies, st.Packets)
			}
			if tc.filter == "" && st.NotMirrored != 0 {
				t.Errorf("%d unmirrored segments passed the generated filter", st.NotMirrored)
			}
			if tc.filter != "" && st.NotMirrored < 6 {
				t.Errorf("with filter %q: %d unmirrored segments counted, want the other session's (6 or more)", tc.filter, st.NotMirrored)
			}
			// (Duplicates are possible: TCP's tail loss probe retransmits
			// on loopback too when the reader is slow, as under -race.
			// That each packet was returned once is LoopbackCopies'.)
			if stream.syns != 1 {
				t.Errorf("%d client SYNs to the mirrored server: want 1 session", stream.syns)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; !errors.Is(err, net.ErrClosed) {
				t.Errorf("Next after Close: %v", err)
			}
		})
	}
}

// clientStream puts the client's bytes where their sequence numbers say,
// enough to check what the ring delivered without the session tracker
// (which builds on this package). A hole stays zero-filled and fails the
// comparison with what was sent.
type clientStream struct {
	syns int
	isn  uint32
	buf  []byte
	fin  bool
}

func (c *clientStream) add(seg Segment, server netip.AddrPort) {
	if seg.Dst != server {
		return
	}
	if seg.Flags.Has(FlagSYN) {
		if c.syns == 0 || seg.Seq != c.isn {
			c.syns++
		}
		c.isn = seg.Seq
		return
	}
	if seg.Flags.Has(FlagFIN) {
		c.fin = true
	}
	if c.syns == 0 || len(seg.Payload) == 0 {
		return // a bare ACK after the FIN sits one past the stream's end
	}
	off := int(seg.Seq - c.isn - 1)
	if end := off + len(seg.Payload); end > len(c.buf) {
		c.buf = append(c.buf, make([]byte, end-len(c.buf))...)
	}
	copy(c.buf[off:], seg.Payload)
}

func sum(m map[uint32]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestLiveCloseUnblocksNext: Close wakes a Next waiting for packets; later
// calls fail the same way; Stats stays readable.
func TestLiveCloseUnblocksNext(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := openLive(t, LiveConfig{Interfaces: []string{"lo"}, Transfers: mustTransfers(t, ln.Addr().String()+"-198.18.2.2:80")})
	errc := make(chan error, 1)
	go func() {
		_, err := s.Next()
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-errc:
		t.Fatalf("Next returned %v with no traffic", err)
	default:
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var err1 error
	select {
	case err1 = <-errc:
	case <-time.After(2 * time.Second):
		t.Fatal("Next still blocked 2s after Close")
	}
	t.Logf("Next returned %v after %v", err1, time.Since(start))
	if !errors.Is(err1, net.ErrClosed) || !errors.Is(err1, os.ErrClosed) || err1.Error() != "live capture on lo: closed" {
		t.Errorf("Next after Close: %v", err1)
	}
	if _, err := s.Next(); err != err1 {
		t.Errorf("second Next: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if st := s.Stats(); st.Packets != 0 || st.Drops != 0 || len(st.Interfaces) != 1 || st.Interfaces[0].Name != "lo" {
		t.Errorf("stats after Close: %+v", st)
	}
}

// TestTransferFilterKernelAccepts attaches generated filters to a UDP
// socket (no privileges needed): the kernel's checker is stricter than
// x/net/bpf's VM, e.g. about scratch memory after a return.
func TestTransferFilterKernelAccepts(t *testing.T) {
	var many []string
	for i := range 400 {
		many = append(many, "198.18.1."+strconv.Itoa(1+i%250)+":"+strconv.Itoa(1000+i)+"-198.18.2.2:80")
	}
	for _, x := range []string{"80-198.18.2.2:80", "80-198.18.2.2:80,198.18.1.1:8080-198.18.2.2:8080", strings.Join(many, ",")} {
		ts := mustTransfers(t, x)
		for _, link := range []filterLink{filterEthernet, filterCooked} {
			prog, err := transferFilter(ts, link, DefaultLiveSnaplen)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := bpf.Assemble(prog)
			if err != nil {
				t.Fatal(err)
			}
			sf := make([]unix.SockFilter, len(raw))
			for i, in := range raw {
				sf[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
			}
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			err = unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(sf)), Filter: &sf[0]})
			unix.Close(fd)
			if err != nil {
				t.Errorf("%d transfers, %v: %d instructions: kernel refuses: %v", len(ts), link, len(sf), err)
			}
		}
	}
}

// TestLiveSnaplen: packets longer than the snap length are counted
// Truncated and never returned (a cut payload would be replayed wrong);
// the session's other segments still are. A small snap length also gives
// blocks of one page.
func TestLiveSnaplen(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := openLive(t, LiveConfig{Interfaces: []string{"lo"}, Transfers: mustTransfers(t, ln.Addr().String()+"-198.18.2.2:80"), Snaplen: 128, BufferBytes: 64 << 10})
	segs, errc := collect(s)
	req := make([]byte, 1000)
	rand.Read(req)
	loopExchange(t, ln, req, []byte("ok"))
	time.Sleep(20 * LiveBlockTimeout)
	s.Close()
	<-errc
	var n int
	for seg := range segs {
		n++
		if len(seg.Payload) > 128-14-20-20 {
			t.Errorf("segment with %d payload bytes returned past a 128-byte snap length", len(seg.Payload))
		}
	}
	st := s.Stats()
	t.Logf("%d segments; %+v", n, st)
	if st.Truncated != 1 || st.TCP != uint64(n) || n < 6 {
		t.Errorf("want the request counted truncated and the other segments returned: %d returned, %+v", n, st)
	}
}

// TestLiveDropsCounted: with a tiny ring that nobody reads while traffic
// passes, the kernel drops packets; every one is counted, so that once the
// ring is read empty the kernel's count is exactly what was read plus
// what was dropped.
func TestLiveDropsCounted(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := openLive(t, LiveConfig{Interfaces: []string{"lo"}, Transfers: mustTransfers(t, ln.Addr().String()+"-198.18.2.2:80"), Snaplen: 256, BufferBytes: 8 << 10})
	for range 10 {
		loopExchange(t, ln, make([]byte, 100_000), []byte("ok"))
	}
	segs, errc := collect(s)
	time.Sleep(20 * LiveBlockTimeout)
	st := s.Stats()
	s.Close()
	<-errc
	n := 0
	for range segs {
		n++
	}
	t.Logf("%d segments; %+v", n, st)
	if st.Drops == 0 || st.FreezeQueue == 0 {
		t.Errorf("no drops with an unread 8 KiB ring: %+v", st)
	}
	if st.KernelPackets != st.Packets+st.LoopbackCopies+st.Drops {
		t.Errorf("kernel counted %d packets, read %d + %d loopback copies, dropped %d", st.KernelPackets, st.Packets, st.LoopbackCopies, st.Drops)
	}
}
