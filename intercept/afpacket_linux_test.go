package intercept

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestStripEthernet(t *testing.T) {
	ip := tcp4(t, serverAP, forgedAP, true, true, nil)
	eth := append(bytes.Repeat([]byte{0xaa}, 12), 0x08, 0x00)
	vlan := append(bytes.Repeat([]byte{0xaa}, 12), 0x81, 0x00, 0x00, 0x05, 0x08, 0x00)
	qinq := append(bytes.Repeat([]byte{0xaa}, 12), 0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00)
	for _, tc := range []struct {
		name  string
		frame []byte
		ok    bool
	}{
		{"ethernet", append(eth, ip...), true},
		{"vlan", append(vlan, ip...), true},
		{"qinq", append(qinq, ip...), true},
		{"arp", append(append(bytes.Repeat([]byte{0xaa}, 12), 0x08, 0x06), ip...), false},
		{"short", eth[:13], false},
	} {
		got, ok := stripEthernet(tc.frame)
		if ok != tc.ok || (ok && !bytes.Equal(got, ip)) {
			t.Errorf("%s: %v, %x", tc.name, ok, got)
		}
	}
}

func TestOpenCaptureErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  CaptureConfig
		want string
	}{
		{CaptureConfig{Filter: "tcp"}, "-i IFACE"},
		{CaptureConfig{Interface: "any", Filter: "tcp"}, `"any"`},
		{CaptureConfig{Interface: "lo"}, "filter (-F) is required"},
		{CaptureConfig{Interface: "no-such-if0", Filter: "tcp"}, "no-such-if0"},
	} {
		if _, err := OpenCapture(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
}

// TestCaptureLoopback captures on lo as root: the filter is compiled and
// attached, the Ethernet header stripped, the kernel counters read.
func TestCaptureLoopback(t *testing.T) {
	c, send := loopbackCapture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	send()
	p, err := c.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Data) < 28 || p.Data[0]>>4 != 4 || p.Data[9] != 17 || p.NeedsVerdict() {
		t.Fatalf("captured %x, want the IPv4 UDP packet", p.Data)
	}
	if st := c.Stats(); st.Packets != 1 || st.KernelDrops != 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Next(ctx); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

// TestCaptureContexts: a context's end wakes a waiting Next, and a later
// Next with a new context waits and captures again.
func TestCaptureContexts(t *testing.T) {
	c, send := loopbackCapture(t)
	for i := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		if _, err := c.Next(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("round %d: Next with nothing to capture: %v, want the context's end", i, err)
		}
		if _, err := c.Next(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("round %d: Next with an ended context: %v", i, err)
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
		time.AfterFunc(50*time.Millisecond, send)
		if _, err := c.Next(ctx2); err != nil {
			t.Fatalf("round %d: Next after a context ended: %v", i, err)
		}
		cancel2()
	}
}

// BenchmarkCaptureWait: every Next waits for its packet (the UDP
// ping-pong sends the next one only once it is captured), as at light
// load.
func BenchmarkCaptureWait(b *testing.B) {
	c, send := loopbackCapture(b)
	ctx := context.Background()
	next := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range next {
			send()
		}
	}()
	b.ReportAllocs()
	for b.Loop() {
		next <- struct{}{}
		if _, err := c.Next(ctx); err != nil {
			b.Fatal(err)
		}
	}
	close(next)
	<-done
}

// loopbackCapture captures UDP on lo to a port of its own, and a
// function sending there. The port is held by a bound socket: other
// packages' tests run beside these and send to fixed ports on lo (the
// discard port 9), which a capture of its own port never sees.
func loopbackCapture(tb testing.TB) (*Capture, func()) {
	if os.Geteuid() != 0 {
		tb.Skip("needs root (CAP_NET_RAW)")
	}
	if _, err := exec.LookPath("tcpdump"); err != nil {
		tb.Skip("tcpdump not installed")
	}
	lo := net.IPv4(127, 0, 0, 1)
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: lo})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sink.Close() })
	dst := sink.LocalAddr().(*net.UDPAddr)
	c, err := OpenCapture(CaptureConfig{Interface: "lo", Filter: fmt.Sprintf("udp and dst port %d", dst.Port), Snaplen: headerSnaplen})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: lo})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return c, func() {
		if _, err := conn.WriteToUDP([]byte("answer"), dst); err != nil {
			panic(err) // not on the test's goroutine
		}
	}
}
