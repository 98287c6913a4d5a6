package wire

// Wire carries the stack's outbound IP packets towards the target.
//
// WritePacket may block: the link endpoint relies on that for backpressure
// instead of dropping packets when the wire is slower than gVisor (a dropping
// queue turns into retransmission storms). bufs start at the IP header and
// must not be retained after WritePacket returns.
type Wire interface {
	WritePacket(bufs [][]byte, gso GSO) error
	Close() error
}

// GSOType says how a packet must be segmented before it reaches a real link.
type GSOType uint8

const (
	// GSONone marks a complete packet with a final checksum.
	GSONone GSOType = iota
	// GSOTCPv4 marks an IPv4 TCP super-packet of up to 64 KiB.
	GSOTCPv4
	// GSOTCPv6 marks an IPv6 TCP super-packet of up to 64 KiB.
	GSOTCPv6
)

// GSO describes segmentation and checksum work left to the wire (or to the
// kernel behind it). It mirrors virtio_net_hdr so a TUN wire can hand the
// work to the kernel.
type GSO struct {
	Type GSOType
	// NeedsCsum says the TCP checksum holds only the pseudo-header sum and
	// must be completed over the segment from CsumStart.
	NeedsCsum  bool
	CsumStart  uint16 // offset of the transport header (IP header length)
	CsumOffset uint16 // offset of the checksum field inside the transport header
	MSS        uint16
	HdrLen     uint16 // IP + TCP header bytes
}
