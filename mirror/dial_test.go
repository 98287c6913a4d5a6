package mirror

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/relay"
)

const testKeyEnv = "STACKCOPY_MIRROR_TEST_KEY"

// relayServer runs an in-process intercept side of the relay on
// loopback and returns its address.
func relayServer(t *testing.T) (*relay.Server, string) {
	t.Helper()
	t.Setenv(testKeyEnv, strings.Repeat("k", 32))
	key, err := relay.LoadKey("", testKeyEnv)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := relay.NewServer(relay.ServerConfig{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ctx, ln) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return srv, ln.Addr().String()
}

func relayClient(t *testing.T, addr string) *relay.Client {
	t.Helper()
	key, err := relay.LoadKey("", testKeyEnv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := relay.Dial(ctx, []string{addr}, key, relay.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	return rc
}

// TestDialerOwnsUnregistrations: a registration is removed once its delay
// passed; close stops the ones not yet due, and none is scheduled after.
func TestDialerOwnsUnregistrations(t *testing.T) {
	srv, addr := relayServer(t)
	rc := relayClient(t, addr)
	target := netip.MustParseAddrPort("198.18.2.2:80")
	a := netip.MustParseAddrPort("198.18.1.1:1000")
	b := netip.MustParseAddrPort("198.18.1.2:1000")
	for _, c := range []netip.AddrPort{a, b} {
		if err := rc.Register(c, target); err != nil {
			t.Fatal(err)
		}
		if !srv.Owns(c) {
			t.Fatalf("%v: registered but not routed", c)
		}
	}

	soon := newDialer(nil, nil, rc)
	soon.delay = time.Millisecond
	soon.unregisterLater(a)
	for deadline := time.Now().Add(5 * time.Second); srv.Owns(a); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v still registered after its delay", a)
		}
	}
	soon.close()

	late := newDialer(nil, nil, rc)
	late.delay = time.Hour
	late.unregisterLater(b)
	done := make(chan struct{})
	go func() { late.close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("close waited for a timer that was not due")
	}
	late.unregisterLater(b) // after close: nothing is scheduled
	late.mu.Lock()
	pending := len(late.pending)
	late.mu.Unlock()
	if pending != 0 {
		t.Errorf("%d unregistrations pending after close", pending)
	}
}

// TestReplayWithIntercept: with -s the dial registers each forged
// address with the intercept before its SYN leaves; Run ends without
// waiting for the delayed unregistrations and reports the relay.
func TestReplayWithIntercept(t *testing.T) {
	_, addr := relayServer(t)
	tg := newTarget(t)
	l, err := tg.Listen(netip.AddrPortFrom(targetAddr, 8080))
	if err != nil {
		t.Fatal(err)
	}
	got := httpTarget(t, l)
	s := capturedSession{
		client:   netip.MustParseAddrPort("198.18.1.50:44000"),
		server:   netip.AddrPortFrom(capturedServer, 80),
		requests: []string{"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"},
		answers:  []string{"HTTP/1.1 204 No Content\r\n\r\n"},
	}
	cfg := testConfig(t, tg, writeCapture(t, s), "80-198.18.2.2:8080")
	cfg.Intercepts = []string{addr}
	cfg.KeyEnv = testKeyEnv
	begin := time.Now()
	sum, err := runWithin(t, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(begin); d > unregisterDelay/2 {
		t.Errorf("Run took %v: it waited for the unregistrations", d)
	}
	if r := <-got; r.remote != s.client || r.bytes != s.requests[0] {
		t.Errorf("target got %q from %v", r.bytes, r.remote)
	}
	if !sum.AllCompleted() || sum.Relay == nil || sum.Relay.Channels != 1 {
		t.Errorf("summary: replay %+v, relay %+v", sum.Replay, sum.Relay)
	}
}
