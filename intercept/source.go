// Package intercept catches a target's answers to forged clients before
// they leave for the real clients, and relays them to the mirror that
// replays those clients (package relay).
//
// Packets come from a Source:
//
//   - NFQueue, on the target itself ("traditional" deployment): an
//     iptables rule queues the target's outgoing answers; each one is
//     relayed and dropped, or accepted.
//   - Capture, on an assistant host ("advanced" deployment): the target
//     routes the forged client prefixes to the assistant, which captures
//     them with AF_PACKET and, forwarding off, lets its kernel discard them.
//
// Run ties a Source to a relay.Server. Every packet is classified by its
// destination (see Class): a forged client some mirror registered is
// relayed and dropped; a pass-listed address and anything no mirror owns
// is accepted untouched.
//
// intercept owns the answer sources and the classification; the relay
// protocol is relay's, socket setup internal/afpacket's and filter
// compilation internal/pcapfilter's, and those are all it imports of
// stackcopy. It must not import the mirror side (mirror, netstack, wire,
// capture, replay) nor internal/cliflag: pid files and log files are
// cmd/intercept's.
package intercept

import (
	"context"
	"net/netip"

	"github.com/stackcopy/stackcopy/relay"
)

// Verdict is what happens to a packet a Source holds back until it is
// decided (NFQUEUE).
type Verdict uint8

const (
	// Accept lets the packet continue to its destination.
	Accept Verdict = iota + 1
	// Drop discards it: a relayed answer must never reach the real client.
	Drop
)

func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Drop:
		return "drop"
	}
	return "invalid"
}

// Packet is one packet from a Source.
type Packet struct {
	// Data is the packet from its IP header on. A source may have kept
	// only its start (NFQUEUE's copy range, a capture's snap length): the
	// IP header's total length still gives the packet's size. Data is
	// valid until the next call to Next.
	Data []byte

	v  verdicter // nil: the source holds nothing back
	id uint32
}

// verdicter is a source that holds packets until they are decided.
type verdicter interface {
	verdict(id uint32, v Verdict) error
}

// NeedsVerdict reports whether the source holds the packet until
// SetVerdict decides it (NFQUEUE). Every such packet must get exactly one
// verdict, and soon: the kernel queue is bounded.
func (p Packet) NeedsVerdict() bool { return p.v != nil }

// SetVerdict decides a held packet. It does nothing for a packet no
// verdict is needed for (a capture: the packet went on anyway).
func (p Packet) SetVerdict(v Verdict) error {
	if p.v == nil {
		return nil
	}
	return p.v.verdict(p.id, v)
}

// Source delivers the packets intercept decides about.
type Source interface {
	// Next waits for the next packet. It returns ctx.Err() once ctx is
	// done (packets already waiting in userspace are returned first) and
	// an error matching net.ErrClosed after Close. One goroutine at a time.
	Next(ctx context.Context) (Packet, error)
	// Close stops the source and releases its kernel resources. Packets
	// the kernel still holds for a verdict are dropped by the kernel.
	Close() error
	// Stats returns the source's counters; safe at any time, also after
	// Close.
	Stats() SourceStats
}

// SourceStats are a Source's counters since it was opened.
type SourceStats struct {
	// Packets counts packets returned by Next.
	Packets uint64
	// KernelDrops counts packets lost before intercept saw them. NFQUEUE:
	// the kernel queue or the netlink socket was full (with --fail-open
	// such packets are accepted instead, unrelayed and uncounted).
	// Capture: the socket's receive buffer was full (PACKET_STATISTICS).
	KernelDrops uint64
	// Skipped counts captured frames that carried no IP packet (capture),
	// or NFQUEUE messages that could not be read (no packet id).
	Skipped uint64
	// VerdictErrors counts verdicts the kernel did not take.
	VerdictErrors uint64
}

// Class is what intercept makes of a packet.
type Class uint8

const (
	// Relayed: the destination is a forged client a mirror registered;
	// the packet went to that mirror and is dropped.
	Relayed Class = iota
	// Passed: the destination address is on the pass-list (-x); accepted
	// without relaying, even if a mirror registered it.
	Passed
	// Unknown: no mirror owns the destination (real users' traffic, or a
	// session whose mirror is gone); accepted.
	Unknown
	// Held: no mirror owns the destination now, but an answer to it was
	// relayed a moment ago (its mirror disconnected or unregistered it):
	// dropped, so the target's late answers and retransmissions do not
	// leak (Config.Hold).
	Held
	// Other: not an unfragmented IPv4 or IPv6 TCP packet; accepted.
	Other
)

var classNames = [...]string{"relayed", "passed", "unknown", "held", "other"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "invalid"
}

// Verdict is the verdict for a packet of class c.
func (c Class) Verdict() Verdict {
	if c == Relayed || c == Held {
		return Drop
	}
	return Accept
}

// tcpDestination parses an unfragmented IPv4 or IPv6 (no extension
// headers) TCP packet's headers, once per packet: the relay's view of them
// (which the relay takes as they are, see relay.Server.DeliverParsed) and
// the destination address and port the classifier keys on, an IPv4-mapped
// address unmapped. Only the first bytes of the TCP header need to be
// there. Fragments are refused as the relay refuses them.
func tcpDestination(pkt []byte) (h relay.PacketHeader, dst netip.AddrPort, ok bool) {
	if h, ok = relay.ParsePacketHeader(pkt); !ok {
		return h, dst, false
	}
	dst = h.Dst
	if dst.Addr().Is4In6() {
		dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	}
	return h, dst, true
}
