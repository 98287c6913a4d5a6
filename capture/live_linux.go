package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/stackcopy/stackcopy/internal/afpacket"
	"github.com/stackcopy/stackcopy/internal/pcapfilter"
	"github.com/stackcopy/stackcopy/transfer"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Live capture: AF_PACKET sockets with a TPACKET_V3 receive ring each,
// filtered in the kernel. Pure Go, no libpcap.
//
// Per interface one socket: SOCK_RAW (Ethernet frames) on Ethernet and
// loopback interfaces, SOCK_DGRAM ("cooked": the packet from the IP header
// on, the link header described by a sockaddr_ll) on others and on "any",
// which is one socket bound to no interface. PACKET_IGNORE_OUTGOING stays
// off: the online server's own answers are what the tracker cuts turns at.
//
// The ring is a list of blocks the kernel fills with packets and hands
// over whole, when full or LiveBlockTimeout after its first packet; Next
// walks a handed-over block and gives it back when done. While every block
// is ours the kernel drops what arrives and counts it (Drops).

// LiveBlockTimeout is how long the kernel keeps a partly filled ring block
// before handing it over: the longest a captured packet waits when traffic
// is light.
const LiveBlockTimeout = 10 * time.Millisecond

// Defaults of LiveConfig.
const (
	DefaultLiveBuffer  = 64 << 20
	DefaultLiveSnaplen = 256 << 10
)

// LiveConfig configures OpenLive.
type LiveConfig struct {
	// Interfaces to capture on, by name; "any" captures on all of the
	// namespace's interfaces through one socket and cannot be combined
	// with names. Ethernet and loopback interfaces are read as Ethernet
	// frames: VLAN tags the kernel leaves in a frame (the inner tag of
	// QinQ) are looked through, up to two. Other interfaces and "any" are
	// read from the IP header on ("cooked"): there a frame that still
	// carries a VLAN tag is not matched; capture on the interface itself.
	Interfaces []string
	// Transfers select the traffic: TCP to and from each online address
	// (port-only transfers: any address on that port). IPv4 only.
	Transfers transfer.Transfers
	// Filter is an optional pcap-syntax filter (tcpcopy's -F). It
	// REPLACES the filter generated from Transfers in the kernel; segments
	// it lets through that match no transfer are still dropped, in
	// userspace, and counted as NotMirrored. It is compiled by running
	// Debian's tcpdump (-ddd) for Ethernet frames or, on cooked sockets,
	// for raw IP; compiled so, "vlan" only matches tags left in the frame,
	// and "ether" primitives fail on cooked sockets.
	Filter string
	// BufferBytes is the ring size per interface; default 64 MiB.
	BufferBytes int
	// Snaplen bounds the bytes kept of each packet; longer packets are
	// counted Truncated and not returned. Default 256 KiB, enough for
	// GRO/TSO super-packets (64 KiB, or BIG TCP up to 256 KiB).
	Snaplen int
}

// LiveStats are a live source's counters. Every packet Next read from the
// rings is either a skipped loopback copy (LoopbackCopies) or in Packets
// and in exactly one of TCP (returned), NonTCP, IPv6, Fragments,
// Malformed, Truncated and NotMirrored. The kernel counters are summed
// over the sockets; once the rings are read empty, KernelPackets = Packets
// + LoopbackCopies + Drops.
type LiveStats struct {
	SourceStats
	// NotMirrored counts IPv4 TCP segments that passed the kernel filter
	// but belong to no transfer; only a user Filter lets such through.
	NotMirrored uint64
	// LoopbackCopies counts outgoing copies of loopback packets, skipped:
	// the kernel shows each loopback packet twice, leaving and arriving.
	LoopbackCopies uint64

	// KernelPackets (tp_packets) counts packets that passed the filter,
	// including dropped ones. Traffic the filter rejects costs no copy and
	// is not counted anywhere.
	KernelPackets uint64
	// Drops (tp_drops) counts packets that passed the filter but were lost
	// because the ring was full: the capture has holes (sessions with them
	// end in capture gaps).
	Drops uint64
	// FreezeQueue (tp_freeze_q_cnt) counts the times the ring ran full.
	FreezeQueue uint64
	// LinkDowns counts the times a captured interface went down. Nothing
	// is captured on it until it is up again; then capture resumes.
	LinkDowns uint64
	// Interfaces has the counters per socket.
	Interfaces []LiveInterfaceStats
}

// LiveInterfaceStats are one socket's counters.
type LiveInterfaceStats struct {
	Name                              string
	KernelPackets, Drops, FreezeQueue uint64
	LinkDowns                         uint64
}

// LiveSource reads TCP segments from network interfaces as they pass.
// Next is for one goroutine; Stats and Close may be called from any.
type LiveSource struct {
	name  string // interfaces, for messages
	ts    transfer.Transfers
	rings []*ring
	// The rings' sockets are in an epoll instance of their own, which is
	// in Go's netpoller: Next waits for packets as a parked goroutine,
	// not in a blocking poll. Blocking there held the process's one core
	// (--cores 1) in a system call: everything else waited until the
	// runtime's monitor thread took the core back (after 20 µs or more),
	// and that thread polled every 20 µs meanwhile. Waiting here took
	// stackcopy's CPU per request at 250 requests/s from 424 to 288 µs
	// (make bench, live, one run each).
	ep       *os.File
	epc      syscall.RawConn
	events   []unix.EpollEvent
	deadline bool // a read deadline is set on ep: a ring is down

	mu     sync.Mutex // held by Next; Close takes it to free the rings
	err    error      // sticky, under mu
	closed atomic.Bool

	// Counters updated by Next, read by Stats.
	packets, tcp, nonTCP, ipv6, fragments, malformed, truncated atomic.Uint64
	notMirrored, loopCopies                                     atomic.Uint64

	statsMu sync.Mutex // kernel counters; getsockopt resets them, so sum here
	kstats  []LiveInterfaceStats
	kclosed bool
}

// ring is one AF_PACKET socket and its TPACKET_V3 ring.
type ring struct {
	name      string
	index     int // 0: all interfaces ("any")
	down      bool
	fd        int
	cooked    bool
	mem       []byte
	blockSize int
	nBlocks   int

	blk  int    // block being read, or the next one to wait for
	left uint32 // packets left in block blk; 0: blk is not ours yet
	off  int    // offset of the next packet in block blk
}

// Layout of struct tpacket_block_desc (tpacket_hdr_v1) and struct
// tpacket3_hdr followed by struct sockaddr_ll.
const (
	blkStatusOff = 8
	blkNumOff    = 12
	blkFirstOff  = 16

	hdrNextOff    = 0
	hdrSecOff     = 4
	hdrNsecOff    = 8
	hdrSnaplenOff = 12
	hdrLenOff     = 16
	hdrMacOff     = 24
	sllOff        = 48 // TPACKET_ALIGN(sizeof(struct tpacket3_hdr))
	sllSize       = 20
	sllHdrLen     = 16 // the Linux cooked (SLL) header we build for decode
)

// liveErrClosed is what Next returns after Close.
type liveErrClosed struct{ name string }

func (e *liveErrClosed) Error() string   { return "live capture on " + e.name + ": closed" }
func (e *liveErrClosed) Unwrap() []error { return []error{net.ErrClosed, os.ErrClosed} }

// OpenLive starts capturing: one AF_PACKET socket per interface, with a
// TPACKET_V3 ring of cfg.BufferBytes and a kernel filter that passes only
// the transfers' IPv4 TCP traffic, in both directions (or cfg.Filter). It
// needs root or CAP_NET_RAW. Segment times are the kernel's receive (or,
// for the host's own packets, transmit) timestamps, wall clock.
func OpenLive(cfg LiveConfig) (*LiveSource, error) {
	name := strings.Join(cfg.Interfaces, ",")
	fail := func(format string, args ...any) (*LiveSource, error) {
		return nil, fmt.Errorf("live capture on %s: %s", name, fmt.Sprintf(format, args...))
	}
	if len(cfg.Interfaces) == 0 {
		return nil, errors.New("live capture: no interface given")
	}
	for i, ifname := range cfg.Interfaces {
		if ifname == "" {
			return fail("empty interface name")
		}
		if slices.Contains(cfg.Interfaces[:i], ifname) {
			return fail("interface %s given twice", ifname)
		}
	}
	if len(cfg.Interfaces) > 1 && slices.Contains(cfg.Interfaces, "any") {
		return fail(`"any" already captures on every interface; give it alone`)
	}
	if len(cfg.Transfers) == 0 {
		return fail("no transfers (-x) to select traffic by")
	}
	if cfg.BufferBytes == 0 {
		cfg.BufferBytes = DefaultLiveBuffer
	}
	if cfg.Snaplen == 0 {
		cfg.Snaplen = DefaultLiveSnaplen
	}
	if cfg.Snaplen < 0 || cfg.Snaplen > maxPacket {
		return fail("snaplen %d out of range (1-%d)", cfg.Snaplen, maxPacket)
	}
	// A block must hold the largest packet with its headers; powers of two
	// waste no kernel memory (blocks are allocated in page orders).
	blockSize := max(1<<bits.Len(uint(cfg.Snaplen+1024-1)), os.Getpagesize())
	nBlocks := cfg.BufferBytes / blockSize
	if nBlocks < 2 {
		return fail("buffer of %d bytes too small for snaplen %d: want at least %d", cfg.BufferBytes, cfg.Snaplen, 2*blockSize)
	}

	// Resolve every name before opening anything: an unknown interface is
	// reported as such, with or without privileges.
	type iface struct {
		name   string
		index  int
		cooked bool
	}
	var ifs []iface
	for _, ifname := range cfg.Interfaces {
		if ifname == "any" {
			ifs = append(ifs, iface{name: ifname, cooked: true})
			continue
		}
		ifi, err := afpacket.LookupInterface(ifname)
		if err != nil {
			return nil, fmt.Errorf("live capture on %s: %w", ifname, err)
		}
		ifs = append(ifs, iface{name: ifname, index: ifi.Index, cooked: ifi.Cooked()})
	}

	// The filters, one per link kind in use.
	filters := map[bool][]bpf.RawInstruction{}
	for _, ifc := range ifs {
		if _, ok := filters[ifc.cooked]; ok {
			continue
		}
		link := filterEthernet
		if ifc.cooked {
			link = filterCooked
		}
		var raw []bpf.RawInstruction
		if cfg.Filter != "" {
			var err error
			if raw, err = pcapfilter.Compile(cfg.Filter, link, cfg.Snaplen); err != nil {
				return fail("%v", err)
			}
		} else {
			prog, err := transferFilter(cfg.Transfers, link, uint32(cfg.Snaplen))
			if err != nil {
				return fail("filter: %v", err)
			}
			if raw, err = bpf.Assemble(prog); err != nil {
				return fail("filter: %v", err)
			}
		}
		filters[ifc.cooked] = raw
	}

	s := &LiveSource{name: name, ts: slices.Clone(cfg.Transfers)}
	for _, ifc := range ifs {
		r, err := openRing(ifc.name, ifc.index, ifc.cooked, filters[ifc.cooked], blockSize, nBlocks)
		if err != nil {
			s.closeRings()
			return nil, err
		}
		s.rings = append(s.rings, r)
		s.kstats = append(s.kstats, LiveInterfaceStats{Name: ifc.name})
	}
	if err := s.openEpoll(); err != nil {
		s.closeRings()
		return fail("%v", err)
	}
	return s, nil
}

// openRing opens one capture socket: filter attached, ring mapped, then
// bound, so no unfiltered packet is ever queued. index 0 binds to all
// interfaces.
func openRing(name string, index int, cooked bool, filter []bpf.RawInstruction, blockSize, nBlocks int) (*ring, error) {
	fail := func(what string, err error) (*ring, error) {
		if what != "" {
			return nil, fmt.Errorf("live capture on %s: %s: %w", name, what, err)
		}
		return nil, fmt.Errorf("live capture on %s: %w", name, err)
	}
	// Nothing is queued until bind.
	fd, err := afpacket.Open(cooked)
	if err != nil {
		return fail("", err)
	}
	r := &ring{name: name, index: index, fd: fd, cooked: cooked, blockSize: blockSize, nBlocks: nBlocks}
	ok := false
	defer func() {
		if !ok {
			r.close()
		}
	}()
	if err := afpacket.AttachFilter(fd, filter); err != nil {
		return fail("", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return fail("TPACKET_V3 (Linux 3.2 or later)", err)
	}
	req := unix.TpacketReq3{
		Block_size:     uint32(blockSize),
		Block_nr:       uint32(nBlocks),
		Frame_size:     uint32(blockSize),
		Frame_nr:       uint32(nBlocks),
		Retire_blk_tov: uint32(LiveBlockTimeout / time.Millisecond),
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fail(fmt.Sprintf("ring of %d×%d bytes", nBlocks, blockSize), err)
	}
	mem, err := unix.Mmap(fd, 0, blockSize*nBlocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail("mmap ring", err)
	}
	r.mem = mem
	if err := afpacket.Bind(fd, index, afpacket.ProtoAll); err != nil {
		return fail("", err)
	}
	ok = true
	return r, nil
}

func (r *ring) close() {
	if r.mem != nil {
		_ = unix.Munmap(r.mem)
		r.mem = nil
	}
	if r.fd >= 0 {
		_ = unix.Close(r.fd)
		r.fd = -1
	}
}

func (s *LiveSource) closeRings() {
	for _, r := range s.rings {
		r.close()
	}
	if s.ep != nil {
		_ = s.ep.Close()
		s.ep = nil
	}
}

// openEpoll puts the rings' sockets into an epoll instance (level
// triggered, the ring's index as data) and that into Go's netpoller.
func (s *LiveSource) openEpoll() error {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	for i, r := range s.rings {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}
		if err := unix.EpollCtl(fd, unix.EPOLL_CTL_ADD, r.fd, &ev); err != nil {
			unix.Close(fd)
			return fmt.Errorf("epoll: add %s: %w", r.name, err)
		}
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return fmt.Errorf("epoll: %w", err)
	}
	// A non-blocking descriptor makes a File the netpoller watches.
	s.ep = os.NewFile(uintptr(fd), "capture-epoll")
	rc, err := s.ep.SyscallConn()
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	s.epc = rc
	s.events = make([]unix.EpollEvent, len(s.rings))
	return nil
}

// status points at the block_status word of block i.
func (r *ring) status(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.mem[i*r.blockSize+blkStatusOff]))
}

// ready reports whether a packet can be read without waiting, opening the
// next block if the kernel has handed it over.
func (r *ring) ready() bool {
	for r.left == 0 {
		if atomic.LoadUint32(r.status(r.blk))&unix.TP_STATUS_USER == 0 {
			return false
		}
		b := r.mem[r.blk*r.blockSize:]
		r.left = binary.NativeEndian.Uint32(b[blkNumOff:])
		r.off = int(binary.NativeEndian.Uint32(b[blkFirstOff:]))
		if r.left == 0 {
			r.release()
		}
	}
	return true
}

// release gives block blk back to the kernel and moves to the next.
func (r *ring) release() {
	atomic.StoreUint32(r.status(r.blk), unix.TP_STATUS_KERNEL)
	r.blk = (r.blk + 1) % r.nBlocks
	r.left = 0
}

// headTime returns the timestamp of the next packet (ready must be true).
func (r *ring) headTime() (sec, nsec uint32) {
	h := r.mem[r.blk*r.blockSize+r.off:]
	return binary.NativeEndian.Uint32(h[hdrSecOff:]), binary.NativeEndian.Uint32(h[hdrNsecOff:])
}

// Next returns the next captured IPv4 TCP segment of a transfer, waiting
// for one. Payloads are copied out of the ring. After Close it returns an
// error matching net.ErrClosed and os.ErrClosed; after any other error it
// keeps returning that error.
func (s *LiveSource) Next() (Segment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.err != nil {
			return Segment{}, s.err
		}
		if s.closed.Load() {
			s.err = &liveErrClosed{s.name}
			continue
		}
		r := s.pick()
		if r == nil {
			if err := s.wait(); err != nil {
				s.err = err
			}
			continue
		}
		if seg, ok := s.read(r); ok {
			return seg, nil
		}
	}
}

// pick returns the ring whose next packet is oldest, or nil if none has
// one.
func (s *LiveSource) pick() *ring {
	if len(s.rings) == 1 {
		if s.rings[0].ready() {
			return s.rings[0]
		}
		return nil
	}
	var best *ring
	var bs, bn uint32
	for _, r := range s.rings {
		if !r.ready() {
			continue
		}
		sec, nsec := r.headTime()
		if best == nil || sec < bs || sec == bs && nsec < bn {
			best, bs, bn = r, sec, nsec
		}
	}
	return best
}

// read consumes the next packet of r and decodes it.
func (s *LiveSource) read(r *ring) (Segment, bool) {
	base := r.blk * r.blockSize
	h := r.mem[base+r.off : base+r.blockSize]
	next := binary.NativeEndian.Uint32(h[hdrNextOff:])
	sec, nsec := binary.NativeEndian.Uint32(h[hdrSecOff:]), binary.NativeEndian.Uint32(h[hdrNsecOff:])
	snap := int(binary.NativeEndian.Uint32(h[hdrSnaplenOff:]))
	wire := int(binary.NativeEndian.Uint32(h[hdrLenOff:]))
	mac := int(binary.NativeEndian.Uint16(h[hdrMacOff:]))
	sll := h[sllOff : sllOff+sllSize]
	hatype := binary.NativeEndian.Uint16(sll[8:10])
	pkttype := sll[10]

	var (
		seg Segment
		v   verdict
	)
	skip := false
	switch {
	case mac+snap > len(h) || mac < sllOff+sllSize:
		// Cannot happen with a sane kernel; count it rather than crash.
		v = verdictMalformed
	case pkttype == unix.PACKET_OUTGOING && hatype == unix.ARPHRD_LOOPBACK:
		skip = true
	case r.cooked && mac >= sllOff+sllSize+sllHdrLen:
		// Build a Linux cooked header in the 16 bytes the kernel leaves
		// free before a SOCK_DGRAM packet, and decode it as SLL.
		c := h[mac-sllHdrLen : mac]
		binary.BigEndian.PutUint16(c[0:2], uint16(pkttype))
		binary.BigEndian.PutUint16(c[2:4], hatype)
		halen := min(int(sll[11]), 8)
		binary.BigEndian.PutUint16(c[4:6], uint16(halen))
		clear(c[6:14])
		copy(c[6:14], sll[12:12+halen])
		copy(c[14:16], sll[2:4]) // sll_protocol, network order
		seg, v = decode(linkSLL, h[mac-sllHdrLen:mac+snap], snap < wire)
	case r.cooked:
		v = verdictMalformed
	default:
		seg, v = decode(linkEthernet, h[mac:mac+snap], snap < wire)
	}
	// Only segments of mirrored servers are kept; their payloads leave
	// the ring, which the kernel reuses once the block is released.
	mirrored := v == verdictTCP && (s.ts.IsServer(seg.Dst) || s.ts.IsServer(seg.Src))
	if mirrored && len(seg.Payload) > 0 {
		seg.Payload = bytes.Clone(seg.Payload)
	}

	if r.left--; r.left == 0 {
		r.release()
	} else {
		r.off += int(next)
	}

	if skip {
		s.loopCopies.Add(1)
		return Segment{}, false
	}
	s.packets.Add(1)
	switch v {
	case verdictTCP:
		if !mirrored {
			s.notMirrored.Add(1)
			return Segment{}, false
		}
		s.tcp.Add(1)
		seg.Time = time.Unix(int64(sec), int64(nsec)).UTC()
		return seg, true
	case verdictNonTCP:
		s.nonTCP.Add(1)
	case verdictIPv6:
		s.ipv6.Add(1)
	case verdictFragment:
		s.fragments.Add(1)
	case verdictTruncated:
		s.truncated.Add(1)
	default:
		s.malformed.Add(1)
	}
	return Segment{}, false
}

// wait blocks until a ring has a block for us, a socket reports an error,
// or Close is called.
func (s *LiveSource) wait() error {
	// Nothing wakes us if a down interface is removed: look every second.
	down := false
	for _, r := range s.rings {
		down = down || r.down
	}
	if down || s.deadline {
		var d time.Time
		if down {
			d = time.Now().Add(time.Second)
		}
		if err := s.ep.SetReadDeadline(d); err != nil {
			return fmt.Errorf("live capture on %s: %w", s.name, err)
		}
		s.deadline = down
	}
	n := 0
	var werr error
	err := s.epc.Read(func(fd uintptr) bool {
		if s.closed.Load() || s.pick() != nil {
			return true
		}
		// The rings' own readiness, at once: the epoll instance reports
		// readable to the netpoller only when a ring becomes ready, so
		// this look comes before parking.
		n, werr = epollPoll(int(fd), s.events)
		return n != 0 || werr != nil
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		n = 0 // the second's look at down rings, or Close
	case err != nil:
		return fmt.Errorf("live capture on %s: wait: %w", s.name, err)
	case errors.Is(werr, unix.EINTR):
		return nil
	case werr != nil:
		return fmt.Errorf("live capture on %s: epoll: %w", s.name, werr)
	}
	for _, ev := range s.events[:n] {
		r := s.rings[ev.Fd]
		if ev.Events&unix.EPOLLERR == 0 {
			continue
		}
		soErr, err := unix.GetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return fmt.Errorf("live capture on %s: %w", r.name, err)
		}
		switch errno := unix.Errno(soErr); errno {
		case 0:
		case unix.ENETDOWN:
			// The kernel hooks the socket in again when the interface
			// comes back up, unless it is removed meanwhile.
			if !r.down {
				r.down = true
				i := int(ev.Fd)
				s.statsMu.Lock()
				s.kstats[i].LinkDowns++
				s.statsMu.Unlock()
			}
		default:
			return fmt.Errorf("live capture on %s: %w", r.name, errno)
		}
	}
	for _, r := range s.rings {
		if r.down {
			ifi, err := afpacket.LookupInterface(r.name)
			if err != nil || ifi.Index != r.index {
				return fmt.Errorf("live capture on %s: the interface disappeared", r.name)
			}
			r.down = !ifi.Up
		}
	}
	return nil
}

// epollPoll is epoll_wait with a zero timeout (epoll_pwait with no mask), made without telling the
// scheduler: it never blocks, and a scheduled system call wakes the
// runtime's monitor thread when the process was idle, which costs more
// than the call.
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

var _ Source = (*LiveSource)(nil)

// Counts implements Source: Stats' totals.
func (s *LiveSource) Counts() Counts {
	st := s.Stats()
	return Counts{SourceStats: st.SourceStats, Drops: st.Drops}
}

// Stats returns the counters so far; safe for concurrent use with Next.
// It reads (and so resets) the kernel's counters and adds them up.
func (s *LiveSource) Stats() LiveStats {
	s.statsMu.Lock()
	s.pollKernelLocked()
	st := LiveStats{
		Interfaces: slices.Clone(s.kstats),
	}
	s.statsMu.Unlock()
	for _, k := range st.Interfaces {
		st.KernelPackets += k.KernelPackets
		st.Drops += k.Drops
		st.FreezeQueue += k.FreezeQueue
		st.LinkDowns += k.LinkDowns
	}
	st.Packets = s.packets.Load()
	st.TCP = s.tcp.Load()
	st.NonTCP = s.nonTCP.Load()
	st.IPv6 = s.ipv6.Load()
	st.Fragments = s.fragments.Load()
	st.Malformed = s.malformed.Load()
	st.Truncated = s.truncated.Load()
	st.NotMirrored = s.notMirrored.Load()
	st.LoopbackCopies = s.loopCopies.Load()
	return st
}

// pollKernelLocked adds the kernel counters since the last call; statsMu
// must be held.
func (s *LiveSource) pollKernelLocked() {
	if s.kclosed {
		return
	}
	for i, r := range s.rings {
		ks, err := afpacket.ReadStats(r.fd)
		if err != nil {
			continue
		}
		s.kstats[i].KernelPackets += ks.Packets
		s.kstats[i].Drops += ks.Drops
		s.kstats[i].FreezeQueue += ks.FreezeQueue
	}
}

// Close stops capturing and frees the rings. A Next blocked waiting for
// packets returns at once with an error matching net.ErrClosed. Stats stay
// readable (final). Safe to call more than once.
func (s *LiveSource) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	// Wakes a Next waiting for packets: it sees closed before it parks
	// again.
	_ = s.ep.SetReadDeadline(time.Unix(1, 0))
	s.mu.Lock() // Next has left its wait and the rings
	defer s.mu.Unlock()
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.pollKernelLocked()
	s.kclosed = true
	s.closeRings()
	return nil
}
