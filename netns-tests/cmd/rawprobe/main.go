// Command rawprobe drives stackcopy's stack over a send-only wire (Raw or
// AFPacket) inside a lab namespace: it dials a target from a forged client
// address, uploads a deterministic byte stream, half-closes and waits for
// the target's close, and writes what it sent and how fast as JSON.
//
// A send-only wire has no receive path, so rawprobe captures the target's
// answers itself, as an interception would: an AF_PACKET socket on the
// interface, filtered in the kernel to TCP from the target port to the
// forged address, hands every answer to the stack with InjectInbound. The
// target must route the forged address back to this host; with IP
// forwarding off here the kernel drops its own copy of those answers
// silently.
//
//	rawprobe -wire afpacket -iface eth0 -gso host -src 198.18.1.50:40000 -dst 198.18.2.2:80 -bytes 8388608 -out result.json
package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/stackcopy/stackcopy/hostnet"
	"github.com/stackcopy/stackcopy/netns-tests/rawprobe"
	"github.com/stackcopy/stackcopy/netstack"
	"github.com/stackcopy/stackcopy/wire"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rawprobe:", err)
		os.Exit(1)
	}
}

func run() error {
	wireName := flag.String("wire", "raw", "wire: raw (IPPROTO_RAW socket) or afpacket (Ethernet frames on -iface)")
	iface := flag.String("iface", "eth0", "interface the target's answers arrive on (and afpacket sends on)")
	gsoFlag := flag.String("gso", "off", "who segments TCP: off, coalesce or host")
	srcFlag := flag.String("src", "198.18.1.50:40000", "forged client address")
	dstFlag := flag.String("dst", "198.18.2.2:80", "target address")
	size := flag.Int64("bytes", 8<<20, "bytes to upload")
	mtu := flag.Uint("mtu", 1500, "MTU towards the target")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up after this long")
	out := flag.String("out", "", "write the JSON result here (default stdout)")
	check := flag.Bool("check", false, "instead of uploading, check the wires' error paths and next-hop resolution (see checkErrors)")
	routed := flag.String("routed", "", "-check: an address routed via -dst's host, whose next hop is that host")
	absent := flag.String("absent", "", "-check: an on-link address no host answers ARP for")
	flag.Parse()

	src, err := netip.ParseAddrPort(*srcFlag)
	if err != nil {
		return err
	}
	dst, err := netip.ParseAddrPort(*dstFlag)
	if err != nil {
		return err
	}
	if *check {
		return checkErrors(*iface, dst.Addr(), netip.MustParseAddr(*routed), netip.MustParseAddr(*absent), src.Addr())
	}
	cfg := netstack.DefaultConfig()
	cfg.MTU = uint32(*mtu)
	// Closing the stack resets connections still in TIME_WAIT; a short
	// TIME_WAIT that rawprobe waits out keeps the run free of RSTs, which
	// the lab test counts.
	cfg.TimeWait = 200 * time.Millisecond
	switch *gsoFlag {
	case "off":
		cfg.GSO = netstack.GSOOff
	case "coalesce":
		cfg.GSO = netstack.GSOCoalesce
	case "host":
		cfg.GSO = netstack.GSOHost
	default:
		return fmt.Errorf("-gso %q: want off, coalesce or host", *gsoFlag)
	}
	res := rawprobe.Result{Wire: *wireName, GSO: *gsoFlag, Client: src.String()}

	var w wire.Device
	switch *wireName {
	case "raw":
		w, err = wire.OpenRaw()
	case "afpacket":
		var mac net.HardwareAddr
		if mac, err = hostnet.ResolveNextHop(*iface, dst.Addr()); err != nil {
			return err
		}
		res.NextHop = mac.String()
		w, err = wire.OpenAFPacket(*iface, mac)
	default:
		return fmt.Errorf("-wire %q: want raw or afpacket", *wireName)
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	st, err := netstack.New(cfg, w, log)
	if err != nil {
		return err
	}
	defer st.Close()

	capture, err := openAnswerCapture(*iface, src.Addr(), dst.Port())
	if err != nil {
		return err
	}
	var answers atomic.Uint64
	captured := make(chan struct{})
	go func() {
		defer close(captured)
		buf := make([]byte, 1<<17)
		for {
			n, err := capture.Read(buf)
			if err != nil {
				return
			}
			answers.Add(1)
			st.Inject([][]byte{buf[:n]})
		}
	}()
	defer func() {
		capture.Close()
		<-captured
	}()

	// The stream is computed before the clock starts, so that generating
	// and hashing it does not compete with the stack for the CPU.
	pool := streamPool()
	h := sha256.New()
	_ = eachChunk(*size, pool, func(p []byte) error { h.Write(p); return nil })

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	start := time.Now()
	c, err := st.DialFrom(dctx, src, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)

	var sent int64
	if err := eachChunk(*size, pool, func(p []byte) error {
		n, err := c.Write(p)
		sent += int64(n)
		return err
	}); err != nil {
		return fmt.Errorf("write after %d bytes: %w", sent, err)
	}
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("close write: %w", err)
	}
	// The target closes after it read everything: then every byte arrived.
	if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("wait for the target's close: %w", err)
	}
	elapsed := time.Since(start)
	c.Close()
	time.Sleep(cfg.TimeWait + 300*time.Millisecond)

	res.Bytes = *size
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	res.Seconds = elapsed.Seconds()
	res.Mbps = float64(*size) * 8 / elapsed.Seconds() / 1e6
	res.Answers = answers.Load()
	res.Stats = st.Stats()
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if *out == "" {
		_, err = os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(*out, b, 0o644)
}

// openAnswerCapture opens an AF_PACKET socket on ifname that receives,
// from the IP header on, the TCP packets from port to client: the target's
// answers to the forged client. The filter is attached before the socket is
// bound to ETH_P_IP, so nothing else is ever queued on it.
func openAnswerCapture(ifname string, client netip.Addr, port uint16) (*os.File, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("capture: socket(AF_PACKET, SOCK_DGRAM): %w", err)
	}
	const drop = 10
	prog, err := bpf.Assemble([]bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: 9, Size: 1}, // IP protocol
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_TCP, SkipTrue: drop - 2},
		/* 2 */ bpf.LoadAbsolute{Off: 6, Size: 2}, // flags and fragment offset
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: drop - 4},
		/* 4 */ bpf.LoadAbsolute{Off: 16, Size: 4}, // destination address
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(client.AsSlice()), SkipTrue: drop - 6},
		/* 6 */ bpf.LoadMemShift{Off: 0}, // X = IP header length
		/* 7 */ bpf.LoadIndirect{Off: 0, Size: 2}, // TCP source port
		/* 8 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(port), SkipTrue: drop - 9},
		/* 9 */ bpf.RetConstant{Val: 1 << 18},
		/* 10 */ bpf.RetConstant{Val: 0},
	})
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("capture: %w", err)
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		filter[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("capture: attach filter: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	ethIP := uint16(unix.ETH_P_IP)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: ethIP<<8 | ethIP>>8}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("capture: bind %s: %w", ifname, err)
	}
	return os.NewFile(uintptr(fd), "capture-"+ifname), nil
}

// checkErrors checks, against the real kernel, what the brief of the
// send-only wires promises about next hops and errors:
//   - the next hop of an on-link target is the target's MAC, and that of an
//     address routed via the target is the same MAC (the gateway's);
//   - an on-link address nobody answers fails with a clear error naming
//     `ip neigh show dev IFACE`;
//   - a packet larger than the MTU fails with EMSGSIZE and the destination
//     in the message, on both wires.
func checkErrors(iface string, target, routed, absent, client netip.Addr) error {
	mac, err := hostnet.ResolveNextHop(iface, target)
	if err != nil {
		return fmt.Errorf("resolve on-link %s: %w", target, err)
	}
	gw, err := hostnet.ResolveNextHop(iface, routed)
	if err != nil {
		return fmt.Errorf("resolve routed %s: %w", routed, err)
	}
	if gw.String() != mac.String() {
		return fmt.Errorf("next hop of %s is %s, want the gateway %s's %s", routed, gw, target, mac)
	}
	fmt.Printf("next hop of %s: %s; of %s: %s (gateway)\n", target, mac, routed, gw)

	start := time.Now()
	_, err = hostnet.ResolveNextHop(iface, absent)
	if err == nil || !strings.Contains(err.Error(), "ip neigh show dev "+iface) {
		return fmt.Errorf("resolve absent %s: got %v, want an error naming ip neigh show dev %s", absent, err, iface)
	}
	fmt.Printf("absent next hop, after %v: %v\n", time.Since(start).Round(time.Millisecond), err)

	big := ipv4TCP(client, target, 2000)
	raw, err := wire.OpenRaw()
	if err != nil {
		return err
	}
	defer raw.Close()
	_, err = raw.Write([]wire.Packet{{Bufs: [][]byte{big}}})
	if !errors.Is(err, unix.EMSGSIZE) || !strings.Contains(err.Error(), "raw: send "+target.String()+": ") {
		return fmt.Errorf("raw: oversized packet: got %v, want EMSGSIZE naming %s", err, target)
	}
	fmt.Println("raw, oversized:", err)
	afp, err := wire.OpenAFPacket(iface, mac)
	if err != nil {
		return err
	}
	defer afp.Close()
	_, err = afp.Write([]wire.Packet{{Bufs: [][]byte{big}}})
	if !errors.Is(err, unix.EMSGSIZE) || !strings.Contains(err.Error(), "send "+target.String()+": ") {
		return fmt.Errorf("afpacket: oversized packet: got %v, want EMSGSIZE naming %s", err, target)
	}
	fmt.Println("afpacket, oversized:", err)
	return nil
}

// ipv4TCP builds an IPv4 TCP ACK of size bytes from src to dst (port 80)
// with valid checksums.
func ipv4TCP(src, dst netip.Addr, size int) []byte {
	b := make([]byte, size)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(size), ID: 1, Flags: header.IPv4FlagDontFragment, TTL: 64,
		Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr:  tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: 39999, DstPort: 80, SeqNum: 1, AckNum: 1,
		DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck, WindowSize: 1024})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(size-header.IPv4MinimumSize))
	tcp.SetChecksum(^checksum.Checksum(b[header.IPv4MinimumSize:], xsum))
	return b
}

// streamPool is 4 MiB of deterministic pseudo-random bytes.
func streamPool() []byte {
	pool := make([]byte, 4<<20)
	rng := rand.New(rand.NewPCG(0x5eed, 0x5eed))
	for i := 0; i < len(pool); i += 8 {
		binary.LittleEndian.PutUint64(pool[i:], rng.Uint64())
	}
	return pool
}

// eachChunk cuts the first size bytes of the upload stream into chunks of
// at most 256 KiB and calls fn with each. The stream is the pool over and
// over, rotated by a different offset each time, so no two pool-sized
// blocks are equal and a misplaced segment changes the digest.
func eachChunk(size int64, pool []byte, fn func([]byte) error) error {
	const chunk = 256 << 10
	for block := 0; size > 0; block++ {
		rot := block * 1031 % len(pool)
		for _, part := range [][]byte{pool[rot:], pool[:rot]} {
			for len(part) > 0 && size > 0 {
				n := int(min(int64(min(chunk, len(part))), size))
				if err := fn(part[:n]); err != nil {
					return err
				}
				part, size = part[n:], size-int64(n)
			}
		}
	}
	return nil
}
