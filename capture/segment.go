// Package mirror turns captured client TCP traffic into per-session client
// byte streams: capture sources (pcap, pcapng), address rewriting (tcpcopy's
// -x, -c and -r), and the session tracker that reassembles each client's
// stream and cuts it into request/response turns.
//
// Nothing here knows about the replay stack; the tracker reports what it saw
// through a Sink and the replayer decides what to do with it.
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
