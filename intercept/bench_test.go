package intercept

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/relay"
)

// BenchmarkClassify measures the packet loop's per-packet work with a real
// relay.Server: an answer to a registered forged client (parsed, routed,
// queued for the mirror) and one to an address no mirror owns (parsed,
// looked up, let through), header-only as by default.
func BenchmarkClassify(b *testing.B) {
	key := testKey(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv, err := relay.NewServer(relay.ServerConfig{Key: key})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(served) }()
	defer func() { cancel(); <-served }()
	client, err := relay.Dial(ctx, []string{ln.Addr().String()}, key, relay.ClientConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	for i := 0; client.Register(forgedAP, serverAP) != nil; i++ {
		if i == 200 {
			b.Fatal("cannot register")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cl := benchClassifier(srv)
	for _, tc := range []struct {
		name string
		dst  netip.AddrPort
		want Class
	}{
		{"relayed", forgedAP, Relayed},
		{"unknown", realAP, Unknown},
	} {
		b.Run(tc.name, func(b *testing.B) {
			pkt := tcp4(b, serverAP, tc.dst, false, true, make([]byte, 1400))
			if got := cl.classify(pkt); got != tc.want {
				b.Fatalf("classify = %v, want %v", got, tc.want)
			}
			for b.Loop() {
				cl.classify(pkt)
			}
		})
	}
}

func benchClassifier(srv *relay.Server) *classifier {
	cl := newClassifier(Config{Hold: -1}, srv.DeliverParsed)
	cl.owns = srv.Owns
	return cl
}
