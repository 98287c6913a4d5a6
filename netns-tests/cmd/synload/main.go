// Command synload sends a bounded number of TCP SYNs at a bounded rate
// from one address over a port range, through a raw socket, so that a
// target answers each with a SYN-ACK: the lab's load for intercept, where
// every SYN-ACK to a registered forged client is one relayed answer.
//
//	synload -src 198.18.1.50 -ports 20000-29999 -dst 198.18.1.1:80 -count 20000 -rate 20000
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "synload:", err)
		os.Exit(1)
	}
}

func run() error {
	srcFlag := flag.String("src", "", "source address (the forged client)")
	portsFlag := flag.String("ports", "", "source ports LO-HI, used in turn")
	dstFlag := flag.String("dst", "", "target ip:port")
	count := flag.Int("count", 1000, "SYNs to send (at most 10 000 000)")
	rate := flag.Int("rate", 10000, "SYNs per second (at most 1 000 000)")
	flag.Parse()
	src, err := netip.ParseAddr(*srcFlag)
	if err != nil || !src.Is4() {
		return fmt.Errorf("-src: want an IPv4 address: %q", *srcFlag)
	}
	dst, err := netip.ParseAddrPort(*dstFlag)
	if err != nil || !dst.Addr().Is4() {
		return fmt.Errorf("-dst: want IPv4 ip:port: %q", *dstFlag)
	}
	lo, hi, ok := strings.Cut(*portsFlag, "-")
	plo, err1 := strconv.ParseUint(lo, 10, 16)
	phi, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil || plo == 0 || phi < plo {
		return fmt.Errorf("-ports: want LO-HI: %q", *portsFlag)
	}
	if *count < 1 || *count > 10_000_000 || *rate < 1 || *rate > 1_000_000 {
		return errors.New("-count or -rate out of range")
	}

	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket (needs root): %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrInet4{Addr: dst.Addr().As4()}

	pkt := make([]byte, 40)
	start := time.Now()
	sent := 0
	port := plo
	for sent < *count {
		// Send what the rate allows by now, in bursts of at most 1 ms.
		due := min(int(time.Since(start).Seconds()*float64(*rate))+1, *count)
		for ; sent < due; sent++ {
			buildSYN(pkt, src, uint16(port), dst)
			if err := unix.Sendto(fd, pkt, 0, to); err != nil {
				if errors.Is(err, unix.ENOBUFS) {
					time.Sleep(100 * time.Microsecond)
					sent--
					continue
				}
				return fmt.Errorf("send: %w", err)
			}
			if port++; port > phi {
				port = plo
			}
		}
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	fmt.Printf("synload: sent %d SYNs in %v (%.0f/s)\n", sent, el.Round(time.Millisecond), float64(sent)/el.Seconds())
	return nil
}

// buildSYN writes an IPv4 TCP SYN with valid checksums into p (40 bytes).
func buildSYN(p []byte, src netip.Addr, sport uint16, dst netip.AddrPort) {
	clear(p)
	s, d := src.As4(), dst.Addr().As4()
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], 40)
	binary.BigEndian.PutUint16(p[4:], uint16(rand.Uint32()))
	p[6] = 0x40 // DF
	p[8] = 64
	p[9] = unix.IPPROTO_TCP
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	binary.BigEndian.PutUint16(p[10:], checksum(p[:20], 0))
	t := p[20:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], rand.Uint32())
	t[12] = 5 << 4
	t[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(t[14:], 64240)
	pseudo := uint32(s[0])<<8 | uint32(s[1])
	pseudo += uint32(s[2])<<8 | uint32(s[3])
	pseudo += uint32(d[0])<<8 | uint32(d[1])
	pseudo += uint32(d[2])<<8 | uint32(d[3])
	pseudo += unix.IPPROTO_TCP + 20
	binary.BigEndian.PutUint16(t[16:], checksum(t, pseudo))
}

func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
