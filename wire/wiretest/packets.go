// Package wiretest holds what tests of the wire and of the stack above it
// share: IPv4/TCP packets built as gVisor hands them to a link.
package wiretest

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Src and Dst are the forged client and the target of the built packets.
var (
	Src = netip.MustParseAddr("198.18.1.50")
	Dst = netip.MustParseAddr("198.18.2.2")
)

// TCPOptions is a timestamp option (NOP NOP TS), as gVisor sends it.
var TCPOptions = []byte{1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78}

// TCPv4 builds an IPv4 TCP packet as gVisor hands it to a GSO link:
// valid IP checksum, and a TCP checksum field holding only the
// pseudo-header sum over the whole TCP length (CHECKSUM_PARTIAL).
func TCPv4(t testing.TB, payloadLen int, seq uint32, flags header.TCPFlags, partial bool) []byte {
	t.Helper()
	ihl, thl := header.IPv4MinimumSize, header.TCPMinimumSize+len(TCPOptions)
	b := make([]byte, ihl+thl+payloadLen)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(min(len(b), 0xffff)),
		ID:          0xfffe, // wraps after two segments
		Flags:       header.IPv4FlagDontFragment,
		TTL:         64,
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     tcpip.AddrFrom4(Src.As4()),
		DstAddr:     tcpip.AddrFrom4(Dst.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcpHdr := header.TCP(b[ihl:])
	tcpHdr.Encode(&header.TCPFields{
		SrcPort:    40000,
		DstPort:    80,
		SeqNum:     seq,
		AckNum:     0x01020304,
		DataOffset: uint8(thl),
		Flags:      flags,
		WindowSize: 512,
	})
	copy(b[ihl+header.TCPMinimumSize:], TCPOptions)
	rng := rand.New(rand.NewPCG(uint64(payloadLen), uint64(seq)))
	for i := ihl + thl; i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(b)-ihl))
	if partial {
		tcpHdr.SetChecksum(xsum)
	} else {
		tcpHdr.SetChecksum(^checksum.Checksum(b[ihl:], xsum))
	}
	return b
}

// TCPChecksumValid verifies a segment's TCP checksum the way a receiver does.
func TCPChecksumValid(p []byte) bool {
	ip := header.IPv4(p)
	seg := p[ip.HeaderLength():]
	tcpHdr := header.TCP(seg)
	payload := seg[tcpHdr.DataOffset():]
	return tcpHdr.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(payload, 0), uint16(len(payload)))
}
