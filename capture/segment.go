// Package capture turns packets into TCP segments: it reads pcap and
// pcapng files (Ethernet, VLAN, Linux SLL/SLL2, raw IP; gzip) and captures
// live traffic through an AF_PACKET TPACKET_V3 ring with a kernel filter
// built from -x. Both are Sources yielding Segments, with one-line errors
// that name the file and byte offset or the interface.
//
// capture knows nothing of sessions or of the replay: it imports only
// transfer (to build filters), internal/ plumbing and the standard library
// and x/ packages. It must not import session, replay, netstack, wire,
// relay, mirror or intercept.
package capture

import (
	"net/netip"
	"strings"
	"time"
)

// TCPFlags holds the TCP header flags we act on. The values are the wire bit
// positions, so a header's flag byte masked with flagMask converts directly.
type TCPFlags uint8

const (
	FlagFIN TCPFlags = 1 << iota
	FlagSYN
	FlagRST
	FlagPSH
	FlagACK

	flagMask = FlagFIN | FlagSYN | FlagRST | FlagPSH | FlagACK
)

// Has reports whether all flags in x are set.
func (f TCPFlags) Has(x TCPFlags) bool { return f&x == x }

func (f TCPFlags) String() string {
	if f == 0 {
		return "none"
	}
	names := [...]string{"FIN", "SYN", "RST", "PSH", "ACK"}
	var b strings.Builder
	for i, n := range names {
		if f&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(n)
		}
	}
	return b.String()
}

// Segment is one captured TCP segment.
type Segment struct {
	Time     time.Time
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    TCPFlags
	// Payload is owned by the Segment: sources copy it out of their capture
	// buffers, and Tracker.Add takes it over (it may hand sub-slices of it to
	// its Sink), so nobody may write to it after passing it on.
	Payload []byte
}
