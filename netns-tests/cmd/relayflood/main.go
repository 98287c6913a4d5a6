// Command relayflood floods an intercept's relay port with connections
// that never authenticate, as a hostile or broken host would, for the lab
// test of the relay's handshake admission (TestRelayFlood). Bounded in
// time and count; it prints one line of counts at the end:
//
//	relayflood -addr 198.18.2.2:36524 -for 8s -max 200000 -workers 64
//	connects=91234 refused=90001 challenged=1233 served=0 seconds=8.0 rate=11404
//
// Each worker connects, reads what the server sends for up to -hold
// without sending anything, and closes; "served" counts connections that
// got more than the magic and the challenge (must stay 0). It stops at
// SIGTERM too (the lab stops it by PID).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// challengeBytes is what a server sends an unauthenticated peer: the
// magic (4), a frame header (4) and the 32-byte challenge.
const challengeBytes = 4 + 4 + 32

func main() {
	addr := flag.String("addr", "", "relay address ip:port")
	dur := flag.Duration("for", 8*time.Second, "how long to flood (at most 10s)")
	maxConns := flag.Int64("max", 200000, "connections at most")
	workers := flag.Int("workers", 64, "concurrent connections")
	hold := flag.Duration("hold", 200*time.Millisecond, "how long a connection waits, silent, before closing")
	flag.Parse()
	if *addr == "" || *workers < 1 || *maxConns < 1 {
		fmt.Fprintln(os.Stderr, "relayflood: -addr is required; -workers and -max must be positive")
		os.Exit(2)
	}
	*dur = min(*dur, 10*time.Second)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *dur)
	defer cancel()

	var started, connects, refused, challenged, served atomic.Int64
	var wg sync.WaitGroup
	d := net.Dialer{Timeout: time.Second}
	start := time.Now()
	for range *workers {
		wg.Go(func() {
			buf := make([]byte, 256)
			for ctx.Err() == nil && started.Add(1) <= *maxConns {
				conn, err := d.DialContext(ctx, "tcp", *addr)
				if err != nil {
					continue
				}
				connects.Add(1)
				conn.SetReadDeadline(time.Now().Add(*hold))
				n, err := io.ReadAtLeast(conn, buf, len(buf))
				switch {
				case n > challengeBytes:
					served.Add(1)
				case n == challengeBytes:
					challenged.Add(1)
				case n == 0 && !errors.Is(err, os.ErrDeadlineExceeded):
					refused.Add(1) // reset or closed unread
				}
				conn.Close()
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	fmt.Printf("connects=%d refused=%d challenged=%d served=%d seconds=%.1f rate=%.0f\n",
		connects.Load(), refused.Load(), challenged.Load(), served.Load(), secs, float64(connects.Load())/secs)
}
