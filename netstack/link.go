package netstack

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stackcopy/stackcopy/wire"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// linkEndpoint is the stack's only NIC. Outbound packets go through a
// bounded queue that blocks when full (gVisor's channel endpoint drops
// instead, which costs retransmissions and throughput), drained by one
// writer goroutine that hands them to the device in batches. Inbound
// packets arrive through deliver, from whatever carries the target's
// answers (TUN reader, relay).
type linkEndpoint struct {
	dev    wire.Device
	mtu    atomic.Uint32
	gso    GSOMode
	queue  chan *gstack.PacketBuffer
	closed chan struct{}
	done   chan struct{}

	mu         sync.RWMutex
	dispatcher gstack.NetworkDispatcher

	writeErrors atomic.Uint64
	written     atomic.Uint64
	// synRetransmits counts handshakes' retransmitted SYNs, which gVisor
	// leaves out of its TCP stats (see synSeen).
	synRetransmits atomic.Uint64
	delivered      atomic.Uint64
	malformed      atomic.Uint64
	onWriteErr     func(error)
	closeOnce      sync.Once
}

var (
	_ gstack.LinkEndpoint = (*linkEndpoint)(nil)
	_ gstack.GSOEndpoint  = (*linkEndpoint)(nil)
)

// gsoMaxSize is the largest super-packet handed to the wire: the IPv4 total
// length limit. Tailscale measured 64 KiB GSO at ~5x the throughput of the
// 32 KiB channel endpoint.
const gsoMaxSize = 1<<16 - 1

// batchBytes bounds the bytes one batch holds, so a batch of coalesced
// super-packets does not pin BatchSize × 64 KiB of buffers.
const batchBytes = 512 << 10

func newLinkEndpoint(dev wire.Device, mtu uint32, queueLen int, gso GSOMode, onWriteErr func(error)) *linkEndpoint {
	e := &linkEndpoint{
		dev:        dev,
		gso:        gso,
		queue:      make(chan *gstack.PacketBuffer, queueLen),
		closed:     make(chan struct{}),
		done:       make(chan struct{}),
		onWriteErr: onWriteErr,
	}
	e.mtu.Store(mtu)
	go e.writeLoop()
	return e
}

// batch is what the writer gathers for one Device.Write: the packets, the
// gVisor buffers they point into (released once written), and the
// coalescer's buffers they point into (returned to it once written).
type batch struct {
	pkts  []wire.Packet
	refs  []*gstack.PacketBuffer
	owned [][]byte
	bytes int
	max   int
}

func (b *batch) full() bool { return len(b.pkts) >= b.max || b.bytes >= batchBytes }

// addRef queues pkt's own buffers: no copy, pkt is released after the
// write.
func (b *batch) addRef(pkt *gstack.PacketBuffer, gso wire.GSO) {
	b.pkts = append(b.pkts, wire.Packet{Bufs: pkt.AsSlices(), GSO: gso})
	b.refs = append(b.refs, pkt)
	b.bytes += pkt.Size()
}

// addOwned queues a buffer of the coalescer's.
func (b *batch) addOwned(buf []byte, gso wire.GSO) {
	b.pkts = append(b.pkts, wire.Packet{Bufs: [][]byte{buf}, GSO: gso})
	b.owned = append(b.owned, buf)
	b.bytes += len(buf)
}

// writeLoop is the only writer of the device, so devices need no locking.
func (e *linkEndpoint) writeLoop() {
	defer close(e.done)
	b := &batch{max: max(1, e.dev.BatchSize())}
	syns := make(synSeen)
	var co *coalescer
	var guard *hostGuard
	switch e.gso {
	case GSOCoalesce:
		co = newCoalescer()
	case GSOHost:
		guard = &hostGuard{flows: newCoalescer(), split: wire.NewSplitter(nil)}
	}
	for {
		var pkt *gstack.PacketBuffer
		select {
		case pkt = <-e.queue:
		case <-e.closed:
			// Write what gVisor already handed over: at shutdown that is
			// the RSTs of every aborted session, and a target that never
			// gets them keeps the sessions open. The device closes after.
			for {
				select {
				case pkt = <-e.queue:
					e.countSYN(syns, pkt)
					b.addRef(pkt, gsoOf(pkt))
					if b.full() {
						e.writeBatch(b, co)
					}
				default:
					e.writeBatch(b, co)
					return
				}
			}
		}
		// Take everything queued now: consecutive segments of a burst can
		// then be merged, and the batch goes to the device in one call.
		for pkt != nil {
			e.countSYN(syns, pkt)
			switch {
			case co != nil:
				e.coalesce(b, co, pkt)
			case guard != nil:
				e.addGuarded(b, guard, pkt)
			default:
				b.addRef(pkt, gsoOf(pkt))
			}
			if b.full() {
				e.writeBatch(b, co)
			}
			select {
			case pkt = <-e.queue:
			default:
				pkt = nil
			}
			if pkt == nil && co != nil && co.growing() {
				pkt = e.linger()
			}
		}
		if co != nil && co.pending() {
			buf, gso := co.take()
			b.addOwned(buf, gso)
		}
		e.writeBatch(b, co)
	}
}

// synSeen is the ISN of the last SYN each forged 4-tuple sent, kept by the
// writer goroutine alone (no lock) and bounded: past 64 Ki tuples it
// starts over, and a retransmission across that goes uncounted.
type synSeen map[[12]byte]uint32

// countSYN counts pkt when it is a handshake SYN the stack sent before:
// gVisor's TCP stats count no handshake retransmission, so a target that
// never answers would show "0 retransmitted". A data segment costs a
// protocol and a size check, any other packet a flags load more.
func (e *linkEndpoint) countSYN(seen synSeen, pkt *gstack.PacketBuffer) {
	if pkt.TransportProtocolNumber != header.TCPProtocolNumber || pkt.NetworkProtocolNumber != header.IPv4ProtocolNumber ||
		pkt.Data().Size() > 0 {
		return // a data segment (the bulk of an upload) is no handshake SYN: no header view
	}
	tcp := header.TCP(pkt.TransportHeader().Slice())
	if len(tcp) < header.TCPMinimumSize || tcp.Flags()&(header.TCPFlagSyn|header.TCPFlagAck) != header.TCPFlagSyn {
		return
	}
	ip := header.IPv4(pkt.NetworkHeader().Slice())
	if len(ip) < header.IPv4MinimumSize {
		return
	}
	var k [12]byte
	copy(k[:8], ip[12:20]) // source and destination addresses
	copy(k[8:], tcp[:4])   // ports
	if len(seen) >= 1<<16 {
		clear(seen)
	}
	if isn, ok := seen[k]; ok && isn == tcp.SequenceNumber() {
		e.synRetransmits.Add(1)
	}
	seen[k] = tcp.SequenceNumber()
}

// lingerYields bounds how often the writer yields for the rest of a burst.
const lingerYields = 4

// linger gives gVisor's sender a chance to queue the next segments of a
// burst the writer is merging, instead of writing the first ones alone:
// the sender produces a segment in about the time the writer needs to
// take one, so without this most writes carry one segment. It yields the
// processor a few times (no timer: microseconds, not a scheduler tick) and
// returns the next queued packet, or nil.
func (e *linkEndpoint) linger() *gstack.PacketBuffer {
	for range lingerYields {
		runtime.Gosched()
		select {
		case pkt := <-e.queue:
			return pkt
		default:
		}
	}
	return nil
}

// coalesce merges pkt into the coalescer's pending super-packet, or queues
// it as it is. Its bytes are copied once, into the coalescer's buffer, and
// only when they are merged.
func (e *linkEndpoint) coalesce(b *batch, co *coalescer, pkt *gstack.PacketBuffer) {
	bufs := pkt.AsSlices()
	if seg, ok := co.mergeable(bufs, pkt.Size(), time.Now()); ok {
		if co.add(bufs, seg) {
			pkt.DecRef()
			return
		}
		buf, gso := co.take()
		b.addOwned(buf, gso)
		if co.add(bufs, seg) {
			pkt.DecRef()
			return
		}
	}
	if co.pending() {
		buf, gso := co.take()
		b.addOwned(buf, gso)
	}
	// gVisor's own packet, checksums complete: as it is.
	b.addRef(pkt, wire.GSO{})
}

// hostGuard keeps gVisor's 64 KiB super-packets whole for the kernel to
// cut, except for flows that retransmitted within lossyFor: their
// super-packets are cut into MSS-sized packets here, one device packet
// each, so the receiver ACKs segment by segment and gVisor's fast recovery
// works (see coalescer for the measurements).
type hostGuard struct {
	flows *coalescer // only its per-flow loss tracking is used
	split *wire.Splitter
}

func (e *linkEndpoint) addGuarded(b *batch, g *hostGuard, pkt *gstack.PacketBuffer) {
	gso := gsoOf(pkt)
	if gso.Type != wire.GSOTCPv4 {
		b.addRef(pkt, gso)
		return
	}
	// The headers decide; the 64 KiB payload is only copied to be cut.
	ip := header.IPv4(pkt.NetworkHeader().Slice())
	tcp := header.TCP(pkt.TransportHeader().Slice())
	if len(ip) < header.IPv4MinimumSize || len(tcp) < header.TCPMinimumSize ||
		g.flows.calmHeaders(ip, tcp, pkt.Data().Size(), time.Now()) {
		b.addRef(pkt, gso)
		return
	}
	segs, err := g.split.Split(pkt.AsSlices(), gso)
	if err != nil {
		b.addRef(pkt, gso) // let the kernel judge it
		return
	}
	// The segments live in the splitter's buffers until its next Split:
	// write them now.
	e.writeBatch(b, nil)
	for _, seg := range segs {
		b.pkts = append(b.pkts, wire.Packet{Bufs: [][]byte{seg}})
	}
	e.writeBatch(b, nil)
	pkt.DecRef()
}

// writeBatch hands the batch to the device and releases its buffers. A
// packet the device fails is counted and skipped; the rest are written.
func (e *linkEndpoint) writeBatch(b *batch, co *coalescer) {
	pkts := b.pkts
	for len(pkts) > 0 {
		n, err := e.dev.Write(pkts)
		n = min(max(n, 0), len(pkts))
		e.written.Add(uint64(n))
		if err == nil || n == len(pkts) {
			break
		}
		e.writeErrors.Add(1)
		if e.onWriteErr != nil {
			e.onWriteErr(err)
		}
		pkts = pkts[n+1:]
	}
	for _, pkt := range b.refs {
		pkt.DecRef()
	}
	if co != nil {
		for _, buf := range b.owned {
			co.recycle(buf)
		}
	}
	clear(b.pkts)
	clear(b.refs)
	clear(b.owned)
	b.pkts, b.refs, b.owned, b.bytes = b.pkts[:0], b.refs[:0], b.owned[:0], 0
}

// gsoOf describes the work the wire must finish on pkt. Only a packet
// whose payload exceeds the MSS is marked for segmentation: the kernel
// rejects (EINVAL) GSO-marked packets it cannot segment, such as the
// payload-less RST gVisor sends from SYN-SENT, whose MSS is still 0.
func gsoOf(pkt *gstack.PacketBuffer) wire.GSO {
	o := pkt.GSOOptions
	if o.Type == gstack.GSONone || !o.NeedsCsum {
		return wire.GSO{}
	}
	g := wire.GSO{NeedsCsum: true, CsumStart: o.L3HdrLen, CsumOffset: o.CsumOffset, HdrLen: uint16(pkt.HeaderSize())}
	if payload := pkt.Size() - pkt.HeaderSize(); o.MSS > 0 && payload > int(o.MSS) {
		g.MSS = o.MSS
		switch o.Type {
		case gstack.GSOTCPv4:
			g.Type = wire.GSOTCPv4
		case gstack.GSOTCPv6:
			g.Type = wire.GSOTCPv6
		}
	}
	return g
}

// WritePackets implements stack.LinkWriter.WritePackets. It blocks while
// the queue is full; that is the backpressure gVisor's TCP sees.
func (e *linkEndpoint) WritePackets(pkts gstack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		select {
		case <-e.closed:
			if n == 0 {
				return 0, &tcpip.ErrClosedForSend{}
			}
			return n, nil
		default:
		}
		select {
		case e.queue <- pkt.IncRef():
			n++
		case <-e.closed:
			pkt.DecRef()
			if n == 0 {
				return 0, &tcpip.ErrClosedForSend{}
			}
			return n, nil
		}
	}
	return n, nil
}

// deliver hands one IP packet (starting at the IP header) to the stack as
// if it had arrived from the wire. b is copied.
func (e *linkEndpoint) deliver(b []byte) bool {
	if len(b) == 0 {
		e.malformed.Add(1)
		return false
	}
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(b) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		e.malformed.Add(1)
		return false
	}
	e.mu.RLock()
	d := e.dispatcher
	e.mu.RUnlock()
	if d == nil {
		return false
	}
	pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
	e.delivered.Add(1)
	return true
}

// MTU implements stack.LinkEndpoint.MTU.
func (e *linkEndpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.SetMTU.
func (e *linkEndpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint.MaxHeaderLength. Packets
// start at the IP header.
func (*linkEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint.LinkAddress.
func (*linkEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint.SetLinkAddress.
func (*linkEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint.Capabilities. RX checksum
// offload: the TUN hands us kernel packets with partial checksums, and
// relayed header-only responses carry zero-filled payloads whose checksum
// cannot match; both were validated (or are trusted) before they got here.
func (*linkEndpoint) Capabilities() gstack.LinkEndpointCapabilities {
	return gstack.CapabilityRXChecksumOffload
}

// Attach implements stack.LinkEndpoint.Attach.
func (e *linkEndpoint) Attach(d gstack.NetworkDispatcher) {
	e.mu.Lock()
	e.dispatcher = d
	e.mu.Unlock()
}

// IsAttached implements stack.LinkEndpoint.IsAttached.
func (e *linkEndpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// Wait implements stack.LinkEndpoint.Wait.
func (e *linkEndpoint) Wait() {
	select {
	case <-e.closed:
		<-e.done
	default:
	}
}

// ARPHardwareType implements stack.LinkEndpoint.ARPHardwareType.
func (*linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint.AddHeader.
func (*linkEndpoint) AddHeader(*gstack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.ParseHeader.
func (*linkEndpoint) ParseHeader(*gstack.PacketBuffer) bool { return true }

// Close implements stack.LinkEndpoint.Close.
func (e *linkEndpoint) Close() {
	e.closeOnce.Do(func() { close(e.closed) })
	<-e.done
}

// SetOnCloseAction implements stack.LinkEndpoint.SetOnCloseAction.
func (*linkEndpoint) SetOnCloseAction(func()) {}

// GSOMaxSize implements stack.GSOEndpoint.GSOMaxSize.
func (e *linkEndpoint) GSOMaxSize() uint32 {
	if e.gso != GSOHost {
		return 0
	}
	return gsoMaxSize
}

// SupportedGSO implements stack.GSOEndpoint.SupportedGSO.
func (e *linkEndpoint) SupportedGSO() gstack.SupportedGSO {
	if e.gso == GSOHost {
		return gstack.HostGSOSupported
	}
	return gstack.GSONotSupported
}
