package main

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// maxSegment is the largest client payload per captured segment: a 64 KiB
// IPv4 packet (total length 65535) minus IP and TCP headers, like the GRO
// super-segments a capture on a busy host holds.
const maxSegment = 65535 - 20 - 20

// pcapWriter synthesizes a capture: Ethernet/IPv4/TCP packets with correct
// sequence and acknowledgement numbers, checksums and lengths.
type pcapWriter struct {
	f   *os.File
	bw  *bufio.Writer
	w   *pcapgo.Writer
	buf gopacket.SerializeBuffer
	// t is the capture clock: each packet is stamped t, then t advances by
	// a microsecond unless the caller set it explicitly.
	t time.Time
}

func newPcapWriter(path string) (*pcapWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("pcap: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	w := pcapgo.NewWriter(bw)
	if err := w.WriteFileHeader(262144, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap %s: %w", path, err)
	}
	return &pcapWriter{f: f, bw: bw, w: w, buf: gopacket.NewSerializeBuffer(),
		t: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}, nil
}

func (p *pcapWriter) close() error {
	if err := p.bw.Flush(); err != nil {
		p.f.Close()
		return fmt.Errorf("pcap %s: %w", p.f.Name(), err)
	}
	if err := p.f.Close(); err != nil {
		return fmt.Errorf("pcap %s: %w", p.f.Name(), err)
	}
	return nil
}

// Flags of a synthesized segment.
const (
	fSYN = 1 << iota
	fACK
	fPSH
	fFIN
)

// packet writes one TCP segment from src to dst at the writer's clock.
func (p *pcapWriter) packet(src, dst netip.AddrPort, seq, ack uint32, flags int, payload []byte) error {
	eth := &layers.Ethernet{
		SrcMAC:       net.HardwareAddr{0x02, 0, 0, 0, 0, 1},
		DstMAC:       net.HardwareAddr{0x02, 0, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4,
	}
	if src.Port() == 80 { // server → client
		eth.SrcMAC, eth.DstMAC = eth.DstMAC, eth.SrcMAC
	}
	ip := &layers.IPv4{
		Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
		SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice(),
	}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
		Seq: seq, Ack: ack, Window: 65535,
		SYN: flags&fSYN != 0, ACK: flags&fACK != 0, PSH: flags&fPSH != 0, FIN: flags&fFIN != 0,
	}
	if flags&fSYN != 0 {
		tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		return fmt.Errorf("pcap: %w", err)
	}
	if err := p.buf.Clear(); err != nil {
		return fmt.Errorf("pcap: %w", err)
	}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(p.buf, opts, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		return fmt.Errorf("pcap: serialize %v → %v: %w", src, dst, err)
	}
	data := p.buf.Bytes()
	ci := gopacket.CaptureInfo{Timestamp: p.t, CaptureLength: len(data), Length: len(data)}
	if err := p.w.WritePacket(ci, data); err != nil {
		return fmt.Errorf("pcap %s: %w", p.f.Name(), err)
	}
	p.t = p.t.Add(time.Microsecond)
	return nil
}

// tcpSession writes one captured session step by step, keeping both
// sides' sequence numbers.
type tcpSession struct {
	p              *pcapWriter
	client, server netip.AddrPort
	cseq, sseq     uint32 // next sequence number of each side
}

func (p *pcapWriter) session(client, server netip.AddrPort, cisn, sisn uint32) *tcpSession {
	return &tcpSession{p: p, client: client, server: server, cseq: cisn, sseq: sisn}
}

// handshake: SYN, SYN-ACK, ACK.
func (s *tcpSession) handshake() error {
	if err := s.p.packet(s.client, s.server, s.cseq, 0, fSYN, nil); err != nil {
		return err
	}
	s.cseq++
	if err := s.p.packet(s.server, s.client, s.sseq, s.cseq, fSYN|fACK, nil); err != nil {
		return err
	}
	s.sseq++
	return s.p.packet(s.client, s.server, s.cseq, s.sseq, fACK, nil)
}

// clientData sends b in segments of at most maxSegment bytes.
func (s *tcpSession) clientData(b []byte) error {
	for len(b) > 0 {
		n := min(len(b), maxSegment)
		if err := s.p.packet(s.client, s.server, s.cseq, s.sseq, fACK|fPSH, b[:n]); err != nil {
			return err
		}
		s.cseq += uint32(n)
		b = b[n:]
	}
	return nil
}

// serverAck is a pure ACK from the server for everything the client sent.
func (s *tcpSession) serverAck() error {
	return s.p.packet(s.server, s.client, s.sseq, s.cseq, fACK, nil)
}

// serverData sends b (small) from the server; the client acknowledges it.
func (s *tcpSession) serverData(b []byte) error {
	if err := s.p.packet(s.server, s.client, s.sseq, s.cseq, fACK|fPSH, b); err != nil {
		return err
	}
	s.sseq += uint32(len(b))
	return s.p.packet(s.client, s.server, s.cseq, s.sseq, fACK, nil)
}

// clientFin: the client's FIN, which the server acknowledges.
// exchange is a session's handshake, one request and its answer.
func (s *tcpSession) exchange(req, ans []byte) error {
	if err := s.handshake(); err != nil {
		return err
	}
	if err := s.clientData(req); err != nil {
		return err
	}
	return s.serverData(ans)
}

// close is the client's FIN, then the server's.
func (s *tcpSession) close() error {
	if err := s.clientFin(); err != nil {
		return err
	}
	return s.serverFin()
}

func (s *tcpSession) clientFin() error {
	if err := s.p.packet(s.client, s.server, s.cseq, s.sseq, fACK|fFIN, nil); err != nil {
		return err
	}
	s.cseq++
	return s.serverAck()
}

// serverFin: the server's FIN, which the client acknowledges.
func (s *tcpSession) serverFin() error {
	if err := s.p.packet(s.server, s.client, s.sseq, s.cseq, fACK|fFIN, nil); err != nil {
		return err
	}
	s.sseq++
	return s.p.packet(s.client, s.server, s.cseq, s.sseq, fACK, nil)
}

// capturedServer is the online server of every synthesized capture; the
// bench replays it with -x 80-TARGET.
func capturedServer() netip.AddrPort { return netip.MustParseAddrPort("198.18.1.1:80") }

// clientAddr returns the i-th captured client: 100 addresses
// 198.18.1.10-109, then ports from 20000 upwards on each.
func clientAddr(i int) netip.AddrPort {
	a := netip.AddrFrom4([4]byte{198, 18, 1, byte(10 + i%100)})
	return netip.AddrPortFrom(a, uint16(20000+i/100))
}

// writeUploadPcap writes one session uploading size bytes: handshake,
// client segments of up to 64 KiB (the server ACKs every 16), the client's
// FIN, then the server's "ok" answer and FIN.
func writeUploadPcap(path string, size int64) error {
	p, err := newPcapWriter(path)
	if err != nil {
		return err
	}
	chunk := make([]byte, maxSegment)
	for i := range chunk {
		chunk[i] = byte(i*7 + i>>8)
	}
	s := p.session(clientAddr(0), capturedServer(), 1_000_000, 5_000_000)
	err = s.handshake()
	for sent, n := int64(0), 0; err == nil && sent < size; n++ {
		k := min(int64(len(chunk)), size-sent)
		err = s.clientData(chunk[:k])
		sent += k
		if err == nil && n%16 == 15 {
			err = s.serverAck()
		}
	}
	if err == nil {
		err = s.clientFin()
	}
	if err == nil {
		err = s.serverData([]byte(uploadAnswer))
	}
	if err == nil {
		err = s.serverFin()
	}
	if cerr := p.close(); err == nil {
		err = cerr
	}
	return err
}

// writeShortPcap writes n short HTTP-like sessions, 100 µs apart: handshake,
// a request of len(httpRequest()), an answer of httpAnswerSize bytes, the
// client's FIN and the server's FIN.
func writeShortPcap(path string, n int) error {
	return writeSessionsPcap(path, n, 100*time.Microsecond, func(s *tcpSession, req, ans []byte) error {
		if err := s.exchange(req, ans); err != nil {
			return err
		}
		return s.close()
	})
}

// writeSessionsPcap writes n sessions gap apart, each written by session
// with the bench's HTTP-like request and answer.
func writeSessionsPcap(path string, n int, gap time.Duration, session func(s *tcpSession, req, ans []byte) error) error {
	p, err := newPcapWriter(path)
	if err != nil {
		return err
	}
	req, ans := httpRequest(), httpAnswer()
	start := p.t
	for i := 0; i < n && err == nil; i++ {
		p.t = start.Add(time.Duration(i) * gap)
		err = session(p.session(clientAddr(i), capturedServer(), uint32(1000+i*100_003), uint32(9000+i*70_001)), req, ans)
	}
	if cerr := p.close(); err == nil {
		err = cerr
	}
	return err
}

// writeIdlePcap writes n sessions that open, exchange one request and
// answer within the first second, stay idle and close at about finAfter.
// Packets are written in capture-time order.
func writeIdlePcap(path string, n int, finAfter time.Duration) error {
	p, err := newPcapWriter(path)
	if err != nil {
		return err
	}
	req, ans := httpRequest(), httpAnswer()
	start := p.t
	step := 900 * time.Millisecond / time.Duration(n)
	sessions := make([]*tcpSession, n)
	for i := 0; i < n && err == nil; i++ {
		p.t = start.Add(time.Duration(i) * step)
		s := p.session(clientAddr(i), capturedServer(), uint32(1000+i*100_003), uint32(9000+i*70_001))
		sessions[i] = s
		err = s.exchange(req, ans)
	}
	for i := 0; i < n && err == nil; i++ {
		p.t = start.Add(finAfter + time.Duration(i)*step)
		err = sessions[i].close()
	}
	if cerr := p.close(); err == nil {
		err = cerr
	}
	return err
}
