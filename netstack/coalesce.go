package netstack

import (
	"encoding/binary"
	"time"

	"github.com/stackcopy/stackcopy/wire"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// coalescer merges runs of consecutive full-sized TCP segments of one flow,
// as gVisor queued them, into one super-packet that the kernel behind a TUN
// segments again (GRO on the way out, the inverse of the kernel's GSO).
//
// Why not let gVisor build the super-packets itself (host GSO)? Measured in
// the lab with 5% random loss on the target's ingress: a 32 MiB upload took
// 54 s with gVisor's host GSO (244 RTOs: gVisor keeps 64 KiB units in its
// send queue and recovers losses inside them poorly), 1 s when gVisor sends
// MSS-sized segments. Coalescing after gVisor keeps its per-MSS loss
// recovery and still hands the kernel few, large writes.
type coalescer struct {
	// flows remembers, per flow, the highest sequence number sent and when
	// it last retransmitted. A flow that retransmitted recently is not
	// coalesced: measured with 5% random loss, bursts of 45 segments left
	// the receiver sending too few ACKs for gVisor's fast recovery, and a
	// 32 MiB upload took 47–67 s (200–300 RTOs) against 1 s segment by
	// segment. On a clean path flows stay coalesced and fast.
	flows     map[flowKey]*flowState
	lastSweep time.Time

	buf  []byte   // the pending packet, from the IP header
	free [][]byte // buffers the device is done with
	segs int      // segments merged into buf
	ihl  int      // IPv4 header length
	thl  int      // TCP header length
	mss  int      // payload size of the first segment: every merged segment but the last has it
	last int      // payload size of the last merged segment
	next uint32   // sequence number the next segment must start at
}

type flowKey struct {
	src, dst         [4]byte
	srcPort, dstPort uint16
}

type flowState struct {
	high       uint32 // end of the highest segment sent
	lossyUntil time.Time
	seen       time.Time
}

// lossyFor is how long a flow is sent segment by segment after it
// retransmitted.
const lossyFor = time.Second

func newCoalescer() *coalescer {
	return &coalescer{flows: make(map[flowKey]*flowState)}
}

// calmHeaders notes a segment's sequence range for its flow and reports
// whether the flow may be coalesced: it has not retransmitted within
// lossyFor.
func (c *coalescer) calmHeaders(ip header.IPv4, tcp header.TCP, payload int, now time.Time) bool {
	k := flowKey{src: ip.SourceAddress().As4(), dst: ip.DestinationAddress().As4(), srcPort: tcp.SourcePort(), dstPort: tcp.DestinationPort()}
	f := c.flows[k]
	end := tcp.SequenceNumber() + uint32(payload)
	if f == nil {
		f = &flowState{high: end}
		c.flows[k] = f
	} else if int32(end-f.high) <= 0 {
		f.lossyUntil = now.Add(lossyFor) // a retransmission
	} else {
		f.high = end
	}
	f.seen = now
	if now.Sub(c.lastSweep) > 10*time.Second {
		c.lastSweep = now
		for k, f := range c.flows {
			if now.Sub(f.seen) > 10*time.Second {
				delete(c.flows, k)
			}
		}
	}
	return now.After(f.lossyUntil)
}

// growing reports whether the pending packet is a burst that may go on: its
// last segment was full-sized and did not carry PSH (the sender had more
// to send), and there is room for another segment.
func (c *coalescer) growing() bool {
	if !c.pending() || c.last != c.mss || len(c.buf)+c.mss > gsoMaxSize {
		return false
	}
	return header.TCP(c.buf[c.ihl:]).Flags()&header.TCPFlagPsh == 0
}

// pending reports whether a packet waits to be flushed.
func (c *coalescer) pending() bool { return len(c.buf) > 0 }

// startable checks that an IPv4 packet of size bytes whose headers are in
// hdr may start a super-packet: TCP data, no IP options or fragmentation,
// only ACK (and PSH) set.
func startable(hdr []byte, size int) (ihl, thl, payload int, ok bool) {
	if len(hdr) < header.IPv4MinimumSize+header.TCPMinimumSize || header.IPVersion(hdr) != header.IPv4Version {
		return 0, 0, 0, false
	}
	ip := header.IPv4(hdr)
	ihl = int(ip.HeaderLength())
	if ihl != header.IPv4MinimumSize || ip.Protocol() != uint8(header.TCPProtocolNumber) ||
		int(ip.TotalLength()) != size || ip.More() || ip.FragmentOffset() != 0 {
		return 0, 0, 0, false
	}
	tcp := header.TCP(hdr[ihl:])
	thl = int(tcp.DataOffset())
	if thl < header.TCPMinimumSize || ihl+thl > len(hdr) || ihl+thl > size {
		return 0, 0, 0, false
	}
	if f := tcp.Flags(); f&^(header.TCPFlagAck|header.TCPFlagPsh) != 0 || f&header.TCPFlagAck == 0 {
		return 0, 0, 0, false
	}
	payload = size - ihl - thl
	return ihl, thl, payload, payload > 0
}

// segment is where a mergeable packet's parts lie.
type segment struct{ ihl, thl, payload int }

// mergeable reports whether the packet in bufs (size bytes; its IP and
// TCP headers in bufs[0], as gVisor builds them) may be merged at all: it
// is TCP data that can start a super-packet and its flow is calm. Call it
// once per packet: calm takes a second look at the same segment for a
// retransmission (which once kept nearly every burst from being merged).
func (c *coalescer) mergeable(bufs [][]byte, size int, now time.Time) (segment, bool) {
	if len(bufs) == 0 {
		return segment{}, false
	}
	b := bufs[0]
	ihl, thl, payload, ok := startable(b, size)
	return segment{ihl, thl, payload}, ok && c.calmHeaders(header.IPv4(b), header.TCP(b[ihl:]), payload, now)
}

// appendFrom appends the bytes of bufs after the first skip to dst.
func appendFrom(dst []byte, bufs [][]byte, skip int) []byte {
	for _, p := range bufs {
		if skip >= len(p) {
			skip -= len(p)
			continue
		}
		dst = append(dst, p[skip:]...)
		skip = 0
	}
	return dst
}

// add tries to append the packet in bufs, which mergeable accepted as seg,
// to the pending packet: its bytes are copied once, into the coalescer's
// buffer. It reports false when the packet does not continue the pending
// one; the caller then takes the pending one and adds the packet again, to
// start anew.
func (c *coalescer) add(bufs [][]byte, seg segment) bool {
	ihl, thl, payload := seg.ihl, seg.thl, seg.payload
	b := bufs[0] // the headers
	if !c.pending() {
		if c.buf == nil {
			c.buf = c.newBuf()
		}
		c.buf = appendFrom(c.buf[:0], bufs, 0)
		c.segs, c.ihl, c.thl, c.mss, c.last = 1, ihl, thl, payload, payload
		c.next = header.TCP(b[ihl:]).SequenceNumber() + uint32(payload)
		return true
	}
	p := header.IPv4(c.buf)
	q := header.IPv4(b)
	pt := header.TCP(c.buf[c.ihl:])
	qt := header.TCP(b[ihl:])
	switch {
	case ihl != c.ihl || thl != c.thl,
		c.last != c.mss || payload > c.mss, // GSO cuts equal-sized segments; only the last may be short
		pt.Flags()&header.TCPFlagPsh != 0,  // PSH ends a burst
		p.SourceAddress() != q.SourceAddress() || p.DestinationAddress() != q.DestinationAddress(),
		pt.SourcePort() != qt.SourcePort() || pt.DestinationPort() != qt.DestinationPort(),
		qt.SequenceNumber() != c.next || qt.AckNumber() != pt.AckNumber(),
		len(c.buf)+payload > gsoMaxSize,
		!sameOptions(pt.Options(), qt.Options()):
		return false
	}
	c.buf = appendFrom(c.buf, bufs, ihl+thl)
	if qt.Flags()&header.TCPFlagPsh != 0 {
		pt.SetFlags(uint8(pt.Flags() | header.TCPFlagPsh))
	}
	c.segs++
	c.last = payload
	c.next += uint32(payload)
	return true
}

// tsOptions is the option block gVisor puts on data segments when
// timestamps are on: NOP, NOP, kind 8, length 10, TSval, TSecr.
var tsOptions = [4]byte{header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionTS, header.TCPOptionTSLength}

// sameOptions reports whether a segment with options b may ride in a
// super-packet whose header carries options a. The kernel copies the
// first segment's header, options included, onto every segment it cuts,
// as Linux's own TSO does: timestamps may differ (TSval ticks every
// millisecond and TSecr follows the ACKs, so they differ within nearly
// every burst), anything else may not.
func sameOptions(a, b []byte) bool {
	if string(a) == string(b) {
		return true
	}
	return len(a) == 12 && len(b) == 12 && [4]byte(a[:4]) == tsOptions && [4]byte(b[:4]) == tsOptions
}

// newBuf returns a buffer for a super-packet, reusing one the device is
// done with.
func (c *coalescer) newBuf() []byte {
	if n := len(c.free); n > 0 {
		b := c.free[n-1]
		c.free[n-1] = nil
		c.free = c.free[:n-1]
		return b[:0]
	}
	return make([]byte, 0, gsoMaxSize)
}

// recycle returns a buffer take handed out, once the device wrote it.
func (c *coalescer) recycle(b []byte) {
	if cap(b) >= gsoMaxSize {
		c.free = append(c.free, b[:0])
	}
}

// take returns the pending packet and how the wire must finish it, and
// resets the coalescer. The buffer is the caller's until it gives it back
// with recycle; the coalescer starts its next packet in another.
func (c *coalescer) take() ([]byte, wire.GSO) {
	b := c.buf
	segs := c.segs
	c.buf, c.segs = nil, 0
	if segs <= 1 {
		return b, wire.GSO{} // untouched: gVisor's own checksums stand
	}
	ip := header.IPv4(b)
	ip.SetTotalLength(uint16(len(b)))
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	// CHECKSUM_PARTIAL, as the kernel expects for GSO: the pseudo-header
	// sum over the whole TCP length; the kernel adjusts it per segment.
	tcpLen := len(b) - c.ihl
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(tcpLen))
	binary.BigEndian.PutUint16(b[c.ihl+16:], sum)
	return b, wire.GSO{
		Type:       wire.GSOTCPv4,
		NeedsCsum:  true,
		CsumStart:  uint16(c.ihl),
		CsumOffset: 16,
		MSS:        uint16(c.mss),
		HdrLen:     uint16(c.ihl + c.thl),
	}
}
