package wire

import (
	"errors"
	"fmt"
	"slices"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Splitter does in userspace what the kernel does behind a TUN opened
// with IFF_VNET_HDR: it cuts TCP super-packets into MSS-sized segments and
// completes partial (CHECKSUM_PARTIAL) checksums. Wires that hand the
// kernel finished packets need it: Raw (the kernel's IP layer rejects a
// packet larger than the route's MTU with EMSGSIZE) and AFPacket (the
// frame goes to the driver as is).
//
// Each segment is built the way Linux's tcp_gso_segment builds it: a copy
// of the IP and TCP headers, the IP total length and checksum set, the IP
// ID incremented per segment, the sequence number advanced, PSH and FIN
// only on the last segment and CWR only on the first, and the TCP checksum
// computed over the whole segment. The checksum field of the super-packet
// (a pseudo-header sum over the super-packet's length) is not trusted: the
// checksum is computed from scratch.
//
// A splitter is used by one goroutine (the link's writer).
type Splitter struct {
	prefix []byte   // link header in front of every packet (Ethernet for AFPacket), may be empty
	in     []byte   // the input flattened, when it came in several slices
	out    []byte   // finished packets back to back
	ends   []int    // end offset in out of each finished packet
	pkts   [][]byte // what split returns
}

// NewSplitter returns a splitter that puts prefix (a link-layer header, or
// nothing) in front of every packet it returns.
func NewSplitter(prefix []byte) *Splitter {
	return &Splitter{prefix: slices.Clone(prefix)}
}

// ErrMalformed is wrapped by the errors about a packet a device cannot
// segment or send (truncated, not IPv4 TCP, checksum outside the packet).
var ErrMalformed = errors.New("malformed packet")

// Split returns the packets to put on the wire for one WritePacket call,
// each starting with the splitter's prefix. A packet that needs no work
// and no prefix is returned as is (bufs[0], untouched); everything else is
// built in the splitter's buffers. bufs are never modified. The result is
// valid until the next call.
func (s *Splitter) Split(bufs [][]byte, gso GSO) ([][]byte, error) {
	s.pkts = s.pkts[:0]
	if gso.Type == GSONone && !gso.NeedsCsum && len(s.prefix) == 0 && len(bufs) == 1 {
		return append(s.pkts, bufs[0]), nil
	}
	var in []byte
	switch len(bufs) {
	case 0:
	case 1:
		in = bufs[0]
	default:
		s.in = s.in[:0]
		for _, b := range bufs {
			s.in = append(s.in, b...)
		}
		in = s.in
	}
	if len(in) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	switch gso.Type {
	case GSONone:
		return s.whole(in, gso)
	case GSOTCPv4:
		return s.segmentTCPv4(in, gso)
	case GSOTCPv6:
		return nil, fmt.Errorf("GSO type TCPv6: %w (IPv4 only)", errors.ErrUnsupported)
	default:
		return nil, fmt.Errorf("GSO type %d: %w", gso.Type, errors.ErrUnsupported)
	}
}

// whole returns in as one packet with its prefix, completing a partial
// checksum if gso asks for it.
func (s *Splitter) whole(in []byte, gso GSO) ([][]byte, error) {
	s.out = append(append(s.out[:0], s.prefix...), in...)
	if gso.NeedsCsum {
		p := s.out[len(s.prefix):]
		start, field := int(gso.CsumStart), int(gso.CsumStart)+int(gso.CsumOffset)
		if start < header.IPv4MinimumSize || field+checksum.Size > len(p) {
			return nil, fmt.Errorf("%w: checksum at %d+%d outside the %d-byte packet", ErrMalformed, gso.CsumStart, gso.CsumOffset, len(p))
		}
		// CHECKSUM_PARTIAL: the field holds the pseudo-header sum; the sum
		// from CsumStart to the end, the field included, completes it.
		// Linux's skb_checksum_help writes a folded 0 as 0xffff; the two
		// are the same number in ones' complement and UDP needs the latter.
		xsum := ^checksum.Checksum(p[start:], 0)
		if xsum == 0 {
			xsum = 0xffff
		}
		checksum.Put(p[field:], xsum)
	}
	return append(s.pkts, s.out), nil
}

// segmentTCPv4 cuts an IPv4 TCP super-packet into segments of gso.MSS
// payload bytes (the last may be shorter; a packet with no more than MSS
// bytes becomes one segment) with complete checksums.
func (s *Splitter) segmentTCPv4(in []byte, gso GSO) ([][]byte, error) {
	if len(in) < header.IPv4MinimumSize+header.TCPMinimumSize || header.IPVersion(in) != header.IPv4Version {
		return nil, fmt.Errorf("%w: GSO TCPv4 packet of %d bytes is not IPv4 TCP", ErrMalformed, len(in))
	}
	ip := header.IPv4(in)
	ihl := int(ip.HeaderLength())
	if ihl < header.IPv4MinimumSize || ihl+header.TCPMinimumSize > len(in) || ip.Protocol() != uint8(header.TCPProtocolNumber) {
		return nil, fmt.Errorf("%w: GSO TCPv4 packet: IP header length %d, protocol %d", ErrMalformed, ihl, ip.Protocol())
	}
	thl := int(header.TCP(in[ihl:]).DataOffset())
	if thl < header.TCPMinimumSize || ihl+thl > len(in) {
		return nil, fmt.Errorf("%w: GSO TCPv4 packet: TCP header length %d", ErrMalformed, thl)
	}
	hl := ihl + thl
	mss := int(gso.MSS)
	if mss == 0 {
		return nil, fmt.Errorf("%w: GSO TCPv4 packet with MSS 0", ErrMalformed)
	}
	if hl+mss > 0xffff {
		return nil, fmt.Errorf("%w: GSO TCPv4 packet: MSS %d too large", ErrMalformed, mss)
	}
	payload := in[hl:]
	n := max(1, (len(payload)+mss-1)/mss)

	s.out = slices.Grow(s.out[:0], n*(len(s.prefix)+hl)+len(payload))
	s.ends = s.ends[:0]
	src, dst := ip.SourceAddress(), ip.DestinationAddress()
	id := ip.ID()
	seq := header.TCP(in[ihl:]).SequenceNumber()
	flags := header.TCP(in[ihl:]).Flags()
	for i := range n {
		chunk := payload[min(i*mss, len(payload)):min((i+1)*mss, len(payload))]
		s.out = append(s.out, s.prefix...)
		start := len(s.out)
		s.out = append(s.out, in[:hl]...)
		s.out = append(s.out, chunk...)
		p := s.out[start:]

		sip := header.IPv4(p)
		sip.SetTotalLength(uint16(len(p)))
		sip.SetID(id + uint16(i))
		sip.SetChecksum(0)
		sip.SetChecksum(^sip.CalculateChecksum())

		tcp := header.TCP(p[ihl:])
		tcp.SetSequenceNumber(seq + uint32(i*mss))
		f := flags
		if i < n-1 {
			f &^= header.TCPFlagPsh | header.TCPFlagFin
		}
		if i > 0 {
			f &^= header.TCPFlagCwr
		}
		tcp.SetFlags(uint8(f))
		tcp.SetChecksum(0)
		xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(p)-ihl))
		tcp.SetChecksum(^checksum.Checksum(p[ihl:], xsum))
		s.ends = append(s.ends, len(s.out))
	}
	begin := 0
	for _, end := range s.ends {
		s.pkts = append(s.pkts, s.out[begin:end:end])
		begin = end
	}
	return s.pkts, nil
}
