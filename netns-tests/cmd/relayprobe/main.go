// Command relayprobe plays the mirror's side of the relay channel in lab
// tests of intercept: it connects to an intercept with the relay Client,
// registers forged client addresses, and writes every packet relayed back
// as a JSON line. With -garbage it is instead a peer that is not a mirror:
// it sends random bytes and waits for the intercept to hang up.
//
//	relayprobe -intercept 198.18.2.2:36524 -key-file relay.key -target 198.18.1.1:80 -clients 198.18.1.50:40000 -out packets.jsonl
//	relayprobe -garbage 198.18.2.2:36524
//
// It runs until SIGTERM (the lab stops it by PID). A key mismatch exits 3
// at once, with the error.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/relayprobe"
	"github.com/stackcopy/stackcopy/relay"
)

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "relayprobe:", err)
	}
	os.Exit(code)
}

func run() (int, error) {
	addr := flag.String("intercept", "", "intercept address ip:port")
	keyFile := flag.String("key-file", "", "relay key file")
	clients := flag.String("clients", "", "forged client ip:port list to register, comma-separated")
	target := flag.String("target", "", "target ip:port the clients are registered for")
	out := flag.String("out", "", "JSON-lines file of relayed packets (appended)")
	clientRange := flag.String("client-range", "", "also register IP:LO-HI, every port of the range")
	quiet := flag.Bool("quiet", false, "count relayed packets instead of logging each (for load)")
	garbage := flag.String("garbage", "", "send random bytes to this address and wait for it to hang up")
	flag.Parse()

	if *garbage != "" {
		return 0, sendGarbage(*garbage)
	}
	if *addr == "" || *keyFile == "" || (*out == "" && !*quiet) || *target == "" {
		return 2, errors.New("-intercept, -key-file, -target and -out (or -quiet) are required")
	}
	key, err := relay.LoadKey(*keyFile, "") // -key-file is required above
	if err != nil {
		return 2, err
	}
	tgt, err := netip.ParseAddrPort(*target)
	if err != nil {
		return 2, fmt.Errorf("-target: %w", err)
	}
	var regs []netip.AddrPort
	for _, s := range strings.Split(*clients, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return 2, fmt.Errorf("-clients: %w", err)
		}
		regs = append(regs, ap)
	}
	if *clientRange != "" {
		r, err := parseRange(*clientRange)
		if err != nil {
			return 2, fmt.Errorf("-client-range: %w", err)
		}
		regs = append(regs, r...)
	}
	out2 := *out
	if *quiet {
		out2 = os.DevNull
	}
	f, err := os.OpenFile(out2, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 1, err
	}
	defer f.Close()

	var mu sync.Mutex
	enc := json.NewEncoder(f) // one write per line: readable while running
	// Called per channel with one read's packets, in relay order; one
	// lock per batch keeps a batch's lines together and in that order.
	onPackets := func(pkts [][]byte) {
		if *quiet {
			return // the Client counts
		}
		mu.Lock()
		defer mu.Unlock()
		for _, pkt := range pkts {
			p, ok := decode(pkt)
			if !ok {
				fmt.Fprintf(os.Stderr, "relayprobe: undecodable packet of %d bytes\n", len(pkt))
				continue
			}
			if err := enc.Encode(p); err != nil {
				fmt.Fprintln(os.Stderr, "relayprobe: write:", err)
			}
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := relay.Dial(dialCtx, []string{*addr}, key, relay.ClientConfig{OnPackets: onPackets})
	if err != nil {
		if errors.Is(err, relay.ErrAuth) {
			return 3, err
		}
		return 1, err
	}
	defer c.Close()
	for _, r := range regs {
		// Register may refuse while the channel is still coming up right
		// after Dial; retry that for a bounded time.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			err := c.Register(r, tgt)
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return 1, err
			}
		}
	}
	fmt.Printf("relayprobe: connected to %s, registered %d clients\n", *addr, len(regs))
	<-ctx.Done()
	st := c.Stats()
	fmt.Printf("relayprobe: packets=%d header_only=%d reconnects=%d\n", st.Packets, st.HeaderOnly, st.Reconnects)
	return 0, nil
}

// parseRange expands IP:LO-HI into addresses.
func parseRange(s string) ([]netip.AddrPort, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return nil, fmt.Errorf("%q: want IP:LO-HI", s)
	}
	a, err := netip.ParseAddr(s[:i])
	if err != nil {
		return nil, err
	}
	lo, hi, ok := strings.Cut(s[i+1:], "-")
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil || l == 0 || h < l {
		return nil, fmt.Errorf("%q: want IP:LO-HI", s)
	}
	var out []netip.AddrPort
	for p := l; p <= h; p++ {
		out = append(out, netip.AddrPortFrom(a, uint16(p)))
	}
	return out, nil
}

// decode reads an IPv4 TCP packet.
func decode(b []byte) (relayprobe.Packet, bool) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != 6 {
		return relayprobe.Packet{}, false
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if ihl < 20 || total > len(b) || total < ihl+20 {
		return relayprobe.Packet{}, false
	}
	t := b[ihl:total]
	off := int(t[12]>>4) * 4
	if off < 20 || off > len(t) {
		return relayprobe.Packet{}, false
	}
	src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[12:16])), binary.BigEndian.Uint16(t[0:2]))
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[16:20])), binary.BigEndian.Uint16(t[2:4]))
	var flags strings.Builder
	for _, f := range []struct {
		bit  byte
		name byte
	}{{0x01, 'F'}, {0x02, 'S'}, {0x04, 'R'}, {0x08, 'P'}, {0x10, 'A'}, {0x20, 'U'}} {
		if t[13]&f.bit != 0 {
			flags.WriteByte(f.name)
		}
	}
	payload := t[off:]
	zero := true
	for _, c := range payload {
		if c != 0 {
			zero = false
			break
		}
	}
	return relayprobe.Packet{
		Src:         src.String(),
		Dst:         dst.String(),
		Flags:       flags.String(),
		Seq:         binary.BigEndian.Uint32(t[4:8]),
		Ack:         binary.BigEndian.Uint32(t[8:12]),
		IPLen:       total,
		PayloadLen:  len(payload),
		PayloadZero: zero,
		PayloadHead: string(payload[:min(len(payload), 32)]),
	}, true
}

// sendGarbage connects, writes 64 random bytes and reads until the peer
// closes (or 10 s pass).
func sendGarbage(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	junk := make([]byte, 64)
	rand.Read(junk)
	if _, err := conn.Write(junk); err != nil {
		return err
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%s did not hang up within 10 s (read %d bytes)", addr, n)
	}
	fmt.Printf("relayprobe: %s hung up after %d bytes\n", addr, n)
	return nil
}
