// Package wire carries the forged clients' packets between the userspace
// stack and the host: a TUN device with a virtio-net header (the kernel
// segments and checksums, and routes the target's answers back in), a raw
// IP socket, or an AF_PACKET socket on an Ethernet interface. It also
// holds the userspace GSO splitter the send-only devices need.
//
// wire knows nothing of gVisor's types or of sessions: a packet is bytes
// from the IP header on plus the segmentation work left (GSO). It imports
// only the standard library, x/sys/unix, netlink for neighbour look-ups
// and gVisor's header helpers (byte views, no stack types). It must not
// import netstack, replay, mirror or intercept.
package wire

// Packet is one outbound IP packet: its bytes from the IP header on, in
// one or more pieces (headers and payload as the stack holds them), and
// the segmentation and checksum work a device must still do.
//
// Devices write the pieces with scatter-gather I/O (writev, sendmmsg
// iovecs) and put their own header (virtio-net, Ethernet) in front the
// same way, so no packet is flattened or copied to make headroom: the
// stack's buffers go to the kernel as they are. Only a packet that must be
// cut in userspace (GSO on a raw or AF_PACKET socket) is copied.
type Packet struct {
	Bufs [][]byte
	GSO  GSO
}

// Len is the packet's size in bytes.
func (p Packet) Len() int {
	n := 0
	for _, b := range p.Bufs {
		n += len(b)
	}
	return n
}

// Device carries the stack's outbound packets towards the target, many
// per call.
//
// Write sends pkts in order and returns how many were handed on. When
// packet n fails it returns n and the error: packets before n were sent,
// the rest were not tried. The caller counts the failure and calls again
// with pkts[n+1:] (TCP retransmits what the wire lost). Write may block:
// the stack relies on that for backpressure instead of dropping packets
// when the device is slower (a dropping queue turns into retransmission
// storms). Write is called from one goroutine only and must not retain
// pkts or their buffers after it returns.
//
// BatchSize is how many packets one Write takes before it costs more
// than two calls would: the writer gathers up to that many.
type Device interface {
	Write(pkts []Packet) (int, error)
	BatchSize() int
	Close() error
}

// Reader is a device that also carries the target's answers back (a
// TUN). Read blocks until at least one packet is there, then reads as
// many as are ready, up to len(bufs): packet i, from its IP header on, is
// pkts[i], a slice of bufs[i] (a device header in front of it stays in the
// buffer instead of being copied away). Each buffer must hold
// ReadBufferSize bytes. After Close, Read returns an error wrapping
// os.ErrClosed.
type Reader interface {
	Read(bufs, pkts [][]byte) (int, error)
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
