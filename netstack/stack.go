// Package netstack is the forged end user: a gVisor TCP/IP stack with
// spoofing on, so a connection can be bound to any captured client address
// and connected to the target. The stack owns one NIC whose packets leave
// in batches through a wire.Device (TUN, raw socket, AF_PACKET, or an
// in-memory device in tests) and whose inbound packets are handed in with
// Inject or DeliverFrom.
//
// gVisor types stay inside this package; callers see netip, net.Conn and
// plain error values. netstack does no host I/O of its own (the device
// does) and imports nothing of stackcopy but wire; it must not import
// capture, session, replay, relay, hostnet, mirror or intercept.
package netstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/stackcopy/stackcopy/wire"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const nicID tcpip.NICID = 1

// Config holds the TCP behaviour of the forged clients. The zero value is
// not useful; start from DefaultConfig.
type Config struct {
	// MTU of the path towards the target; the MSS follows from it.
	MTU uint32
	// GSO says who cuts TCP data into MSS-sized packets.
	GSO GSOMode
	// QueueLen bounds the outbound queue; when full, gVisor blocks instead
	// of dropping.
	QueueLen int
	// SendBuffer and ReceiveBuffer are the per-connection defaults and caps.
	// They are limits, not preallocations, but every uploading session can
	// hold SendBufferMax un-ACKed bytes: size them for concurrency.
	SendBuffer, SendBufferMax       int
	ReceiveBuffer, ReceiveBufferMax int
	// RACK loss detection. gVisor's default; helps uploads over paths that
	// reorder (tailscale#20893).
	RACK bool
	// CongestionControl is "reno" or "cubic".
	CongestionControl string
	// TimeWait is how long a forged client that closed first holds its
	// 4-tuple, acknowledging the target's retransmitted FIN should its
	// last ACK be lost. Linux holds 60 s, against old duplicates on long
	// paths; replays re-use captured 4-tuples and run thousands of
	// sessions a second, and each endpoint held costs about 4 KiB of heap
	// (twice that in RSS): 500 ms holds a third less than 1 s did, and
	// still outlasts a target's first retransmission of its FIN (Linux
	// waits at least 200 ms). Past it, a late FIN is answered with a RST,
	// which closes the target's LAST_ACK as the ACK would have.
	TimeWait time.Duration
	// MaxRetries bounds data retransmissions before a connection gives up.
	MaxRetries int
	// MaxRTO caps the retransmission backoff.
	MaxRTO time.Duration
	// MinRTO floors the retransmission timeout (Linux: 200 ms).
	MinRTO time.Duration
	// FlightMinRTO floors it instead while more than one full-sized
	// segment is unacknowledged: the target ACKs such a flight at once, so
	// only a lone segment can wait for a delayed ACK, which is what MinRTO
	// waits out. 0 keeps MinRTO everywhere (gVisor patch 0009).
	FlightMinRTO time.Duration
	// TLPMinTimeout is added to the tail loss probe's timeout (twice the
	// smoothed round trip) while more than one segment is outstanding, as
	// Linux does (2 ms): with round trips of a few hundred microseconds, a
	// replay host busy for that long fired spurious probes (gVisor patch
	// 0011). 0 probes after twice the round trip alone.
	TLPMinTimeout time.Duration
	// MSS, when set, is the MSS the forged clients advertise (tcpcopy -D);
	// otherwise it follows from the MTU.
	MSS int
	// QuickACK makes the forged clients acknowledge every burst of the
	// target's data at once, as upstream gVisor does. Off (the default),
	// they delay the ACK up to 40 ms as a Linux client does, so a
	// request/response client's next request carries it: one packet per
	// exchange instead of two (the patch in third_party/gvisor).
	QuickACK bool
}

// DefaultConfig is tuned for replaying many sessions, including large
// uploads, over a LAN to a test server.
func DefaultConfig() Config {
	return Config{
		MTU:               1500,
		GSO:               GSOCoalesce,
		QueueLen:          1024,
		SendBuffer:        1 << 20,
		SendBufferMax:     4 << 20,
		ReceiveBuffer:     1 << 20,
		ReceiveBufferMax:  4 << 20,
		RACK:              true,
		CongestionControl: "reno",
		TimeWait:          500 * time.Millisecond,
		MaxRetries:        10,
		MaxRTO:            10 * time.Second,
		MinRTO:            200 * time.Millisecond,
		FlightMinRTO:      20 * time.Millisecond,
		TLPMinTimeout:     2 * time.Millisecond,
	}
}

// GSOMode says who segments outbound TCP data.
type GSOMode uint8

const (
	// GSOOff: gVisor sends MSS-sized packets, one wire write each.
	GSOOff GSOMode = iota
	// GSOCoalesce: gVisor sends MSS-sized packets; the link merges runs of
	// them into super-packets the wire's kernel segments (see coalescer).
	GSOCoalesce
	// GSOHost: gVisor builds 64 KiB super-packets itself. Fastest; it
	// recovers losses inside them as well as GSOOff only with the sender
	// fixes in third_party/gvisor (TestLossRecoveryWithoutTimeouts).
	GSOHost
)

// Stack is one gVisor stack acting as every forged client.
type Stack struct {
	cfg  Config
	s    *gstack.Stack
	link *linkEndpoint
	log  *slog.Logger
}

// New builds the stack on top of w. The stack owns w from then on and
// closes it in Close.
func New(cfg Config, w wire.Device, log *slog.Logger) (*Stack, error) {
	if w == nil {
		return nil, errors.New("stack: nil device")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("stack: MTU %d out of range 576..65535", cfg.MTU)
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultConfig().QueueLen
	}
	var proto gstack.TransportProtocolFactory = tcp.NewProtocol
	switch cfg.CongestionControl {
	case "", "reno":
	case "cubic":
		proto = tcp.NewProtocolCUBIC
	default:
		return nil, fmt.Errorf("stack: unknown congestion control %q (want reno or cubic)", cfg.CongestionControl)
	}
	s := gstack.New(gstack.Options{
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []gstack.TransportProtocolFactory{proto},
	})
	st := &Stack{cfg: cfg, s: s, log: log}
	fail := func(err error) (*Stack, error) {
		s.Destroy()
		w.Close()
		return nil, err
	}
	recovery := tcpip.TCPRecovery(0)
	if cfg.RACK {
		recovery = tcpip.TCPRACKLossDetection
	}
	sack := tcpip.TCPSACKEnabled(true)
	tw := tcpip.TCPTimeWaitTimeoutOption(cfg.TimeWait)
	retries := tcpip.TCPMaxRetriesOption(cfg.MaxRetries)
	maxRTO := tcpip.TCPMaxRTOOption(cfg.MaxRTO)
	minRTO := tcpip.TCPMinRTOOption(cfg.MinRTO)
	flightMinRTO := tcpip.TCPFlightMinRTOOption(cfg.FlightMinRTO)
	tlpMin := tcpip.TCPTLPMinTimeoutOption(cfg.TLPMinTimeout)
	delay := tcpip.TCPDelayEnabled(false)
	// Timestamps from the wall clock keep rising across restarts: a
	// target that still holds a forged connection of the last run in
	// TIME_WAIT takes the next SYN on that 4-tuple (clients reuse ports)
	// instead of challenging it (gVisor patch 0008).
	wallTS := tcpip.TCPWallClockTimestampsOption(true)
	opts := []struct {
		name string
		opt  tcpip.SettableTransportProtocolOption
	}{
		{"SACK", &sack},
		{"recovery", &recovery},
		{"TIME_WAIT timeout", &tw},
		{"max retries", &retries},
		{"max RTO", &maxRTO},
		{"min RTO", &minRTO},
		{"flight min RTO", &flightMinRTO},
		{"tail loss probe floor", &tlpMin},
		{"Nagle", &delay},
		{"wall-clock timestamps", &wallTS},
		{"send buffer", &tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: cfg.SendBuffer, Max: cfg.SendBufferMax}},
		{"receive buffer", &tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: cfg.ReceiveBuffer, Max: cfg.ReceiveBufferMax}},
	}
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o.opt); err != nil {
			return fail(fmt.Errorf("stack: set TCP %s: %s", o.name, err))
		}
	}

	var warned atomic.Bool
	st.link = newLinkEndpoint(w, cfg.MTU, cfg.QueueLen, cfg.GSO, func(err error) {
		// gVisor retransmits what the wire lost; say it once, count the rest.
		if !warned.Swap(true) {
			log.Warn("wire write failed; further failures are counted in the summary", "err", err)
		}
	})
	if err := s.CreateNIC(nicID, st.link); err != nil {
		st.link.Close()
		w.Close()
		s.Destroy()
		return nil, fmt.Errorf("stack: create NIC: %s", err)
	}
	// Spoofing lets an endpoint bind any address; promiscuous mode accepts
	// inbound packets for any address. Together they make the stack answer
	// as every forged client at once.
	if err := s.SetSpoofing(nicID, true); err != nil {
		return fail(fmt.Errorf("stack: spoofing: %s", err))
	}
	if err := s.SetPromiscuousMode(nicID, true); err != nil {
		return fail(fmt.Errorf("stack: promiscuous mode: %s", err))
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	// A packet for a flow the stack does not know (a late answer to a
	// session that already ended) would otherwise get a RST from the forged
	// client address; swallow it, the target's own timers clean up.
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, func(gstack.TransportEndpointID, *gstack.PacketBuffer) bool {
		return true
	})
	return st, nil
}

// Inject hands IP packets (each from its IP header on) to the stack as if
// they came from the wire, in order. They are copied; the caller keeps
// pkts. It returns how many were taken: a packet that is not IPv4 or IPv6
// is counted in Stats and skipped.
func (st *Stack) Inject(pkts [][]byte) int {
	n := 0
	for _, p := range pkts {
		if st.link.deliver(p) {
			n++
		}
	}
	return n
}

// readBatch is how many packets DeliverFrom takes from its reader at once.
const readBatch = 16

// DeliverFrom reads packets from r into the stack, a batch at a time,
// until r fails (for a TUN: until it is closed) and returns that error.
func (st *Stack) DeliverFrom(r wire.Reader) error {
	bufs := make([][]byte, readBatch)
	for i := range bufs {
		bufs[i] = make([]byte, wire.ReadBufferSize)
	}
	pkts := make([][]byte, readBatch)
	for {
		n, err := r.Read(bufs, pkts)
		if n > 0 {
			st.Inject(pkts[:n])
		}
		if err != nil {
			return err
		}
	}
}

// DialFrom opens a TCP connection from the forged address src to dst. A
// zero src port lets the stack choose a free one for src's address. ctx
// bounds the handshake: gVisor's own SYN retries go on for ~2 minutes.
func (st *Stack) DialFrom(ctx context.Context, src, dst netip.AddrPort) (*Conn, error) {
	return st.DialFromWith(ctx, src, dst, DialOptions{})
}

// DialOptions adjust one dial.
type DialOptions struct {
	// BeforeConnect runs once the forged address is bound (a zero source
	// port is chosen by then) and before the SYN leaves: an intercept must
	// know where to route the SYN-ACK before it exists. An error aborts the
	// dial.
	BeforeConnect func(local netip.AddrPort) error
}

// DialFromWith is DialFrom with options.
func (st *Stack) DialFromWith(ctx context.Context, src, dst netip.AddrPort, opts DialOptions) (*Conn, error) {
	if !src.Addr().IsValid() || !dst.IsValid() {
		return nil, fmt.Errorf("stack: dial %v from %v: invalid address", dst, src)
	}
	netProto := header.IPv4ProtocolNumber
	if src.Addr().Is6() {
		netProto = header.IPv6ProtocolNumber
	}
	if src.Addr().Is4() != dst.Addr().Is4() {
		return nil, fmt.Errorf("stack: dial %v from %v: address families differ", dst, src)
	}
	wq := new(waiter.Queue)
	ep, terr := st.s.NewEndpoint(tcp.ProtocolNumber, netProto, wq)
	if terr != nil {
		return nil, fmt.Errorf("stack: new endpoint: %w", convertErr(terr))
	}
	local := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(src.Addr().AsSlice()), Port: src.Port()}
	remote := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()), Port: dst.Port()}
	if terr := ep.Bind(local); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("stack: bind %v: %w", src, convertErr(terr))
	}
	if st.cfg.MSS > 0 {
		if terr := ep.SetSockOptInt(tcpip.MaxSegOption, st.cfg.MSS); terr != nil {
			ep.Close()
			return nil, fmt.Errorf("stack: MSS %d: %w", st.cfg.MSS, convertErr(terr))
		}
	}
	// TCP_QUICKACK off: the patched gVisor delays ACKs as Linux does.
	ep.SocketOptions().SetQuickAck(st.cfg.QuickACK)
	if opts.BeforeConnect != nil {
		lp, terr := ep.GetLocalAddress()
		if terr != nil {
			ep.Close()
			return nil, fmt.Errorf("stack: bound address for %v: %w", src, convertErr(terr))
		}
		if err := opts.BeforeConnect(netip.AddrPortFrom(src.Addr(), lp.Port)); err != nil {
			ep.Close()
			return nil, fmt.Errorf("stack: dial %v from %v: %w", dst, src, err)
		}
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	terr = ep.Connect(remote)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Abort()
			ep.Close()
			return nil, fmt.Errorf("stack: connect %v from %v: %w", dst, src, ErrTimeout)
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, fmt.Errorf("stack: connect %v from %v: %w", dst, src, convertErr(terr))
	}
	lp, _ := ep.GetLocalAddress()
	return newConn(wq, ep, netip.AddrPortFrom(src.Addr(), lp.Port), dst), nil
}

// Stats are the stack's counters since New.
type Stats struct {
	SegmentsSent, SegmentsReceived uint64
	Retransmits                    uint64
	FastRetransmits, Timeouts      uint64
	ResetsReceived, ResetsSent     uint64
	ChecksumErrors                 uint64
	PacketsWritten, WriteErrors    uint64
	PacketsInjected, Malformed     uint64
}

// Stats returns the stack's counters.
func (st *Stack) Stats() Stats {
	t := st.s.Stats().TCP
	return Stats{
		SegmentsSent:     t.SegmentsSent.Value(),
		SegmentsReceived: t.ValidSegmentsReceived.Value(),
		Retransmits:      t.Retransmits.Value() + st.link.synRetransmits.Load(), // SYNs included
		FastRetransmits:  t.FastRetransmit.Value(),
		Timeouts:         t.Timeouts.Value(),
		ResetsReceived:   t.ResetsReceived.Value(),
		ResetsSent:       t.ResetsSent.Value(),
		ChecksumErrors:   t.ChecksumErrors.Value(),
		PacketsWritten:   st.link.written.Load(),
		WriteErrors:      st.link.writeErrors.Load(),
		PacketsInjected:  st.link.delivered.Load(),
		Malformed:        st.link.malformed.Load(),
	}
}

// Close aborts every connection, stops the stack and closes the wire.
func (st *Stack) Close() error {
	st.s.Close()
	st.s.Wait() // removes the NIC, which closes the link endpoint
	st.link.Close()
	return st.link.dev.Close()
}
