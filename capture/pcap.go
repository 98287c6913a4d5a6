package capture

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"time"
)

// The file readers are our own rather than gopacket/pcapgo's: pcapgo v1.1.19
// cannot say where in a file an error is, allocates whatever a corrupt record
// header asks for, and its pcapng reader divides by zero on an if_tsresol of
// 2^-64 or finer. Packet decoding is hand-written too, for exact control of
// what counts as truncated, fragmented or malformed (see decoder).

// Errors a FileSource reports, wrapped in a *FormatError; test with errors.Is.
var (
	ErrNotCapture          = errors.New("not a pcap or pcapng capture")
	ErrUnsupportedLinkType = errors.New("unsupported link type")
	ErrCorrupt             = errors.New("corrupt capture file")
	// ErrTruncated also matches io.ErrUnexpectedEOF.
	ErrTruncated = errors.New("capture file truncated")
)

// FormatError is a problem at a known place in a capture file. Its message
// is one line: "capture.pcap: offset 4120: truncated packet record (want
// 1514 bytes, have 300)".
type FormatError struct {
	Path   string
	Offset int64 // byte offset of the record or block at fault
	// Gunzipped is set when the file was gzip-compressed: Offset then counts
	// decompressed bytes.
	Gunzipped bool
	Msg       string
	Kind      error // one of the Err* sentinels above, or the I/O error that stopped reading
	Err       error // underlying cause, if any (an I/O error, io.ErrUnexpectedEOF)
}

func (e *FormatError) Error() string {
	where := "offset"
	if e.Gunzipped {
		where = "decompressed offset"
	}
	return fmt.Sprintf("%s: %s %d: %s", e.Path, where, e.Offset, e.Msg)
}

func (e *FormatError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// SourceStats counts what a source read. Every packet read is in Packets and
// in exactly one of the other counters.
type SourceStats struct {
	Packets   uint64 // packet records read
	TCP       uint64 // IPv4 TCP segments returned by Next
	NonTCP    uint64 // anything else: ARP, UDP, ICMP, LLC, ...
	IPv6      uint64 // IPv6 TCP segments: parsed, skipped (not replayed yet)
	Fragments uint64 // fragments of IP packets carrying TCP: skipped, not reassembled
	Malformed uint64 // headers that do not parse
	// Truncated counts TCP segments cut short by the capture's snap length.
	// They are dropped: replaying a cut payload would send wrong bytes, while
	// a missing segment shows up as a hole the tracker reports.
	Truncated uint64
}

// Add adds o's counts to s (one more pass over a source).
func (s *SourceStats) Add(o SourceStats) {
	s.Packets += o.Packets
	s.TCP += o.TCP
	s.NonTCP += o.NonTCP
	s.IPv6 += o.IPv6
	s.Fragments += o.Fragments
	s.Malformed += o.Malformed
	s.Truncated += o.Truncated
}

// FileSource reads TCP segments from a pcap or pcapng file.
type FileSource struct {
	path string
	f    *os.File
	// m maps a regular file for LengthsOnly (filemap_linux.go); nil:
	// read through r.
	m     *fileMap
	gz    *gzip.Reader
	r     *bufio.Reader
	off   int64 // offset of the next unread byte
	skip  int   // bytes handed out by the last take, consumed on the next
	big   []byte
	err   error // sticky: once reading failed, it stays failed
	stats SourceStats

	// lengthsOnly: payloads are shared zeros of the captured length (see
	// LengthsOnly).
	lengthsOnly bool
	zeros       []byte

	ng        bool
	bigEndian bool
	// pcap
	link       linkType
	fracToNsec int64
	// pcapng
	ifaces []ngInterface
}

type ngInterface struct {
	link    linkType
	rawLink uint32
	snaplen uint32
	// timestamps are in units of 1/unitsPerSec seconds, plus offset seconds
	unitsPerSec uint64
	offset      int64
}

const (
	readBufSize = 64 << 10
	// maxPacket bounds one captured packet. tcpdump never writes more than
	// 256 KiB; the slack is for GRO/BIG TCP super-segments from other tools.
	maxPacket = 1 << 20
	// maxSkipBlock bounds blocks we skip (name resolution, statistics,
	// custom blocks): they are discarded without being held in memory, so
	// the bound only catches absurd lengths early.
	maxSkipBlock = 1 << 30

	pcapMagicMicros = 0xa1b2c3d4
	pcapMagicNanos  = 0xa1b23c4d
	ngMagicSHB      = 0x0a0d0d0a
	ngByteOrder     = 0x1a2b3c4d

	ngBlockIDB = 1
	ngBlockOPB = 2 // obsolete packet block
	ngBlockSPB = 3
	ngBlockEPB = 6
)

// LengthsOnly makes Next hand out payloads that have the captured length
// but read as zeros and are shared between segments, for a pass that only
// counts (stackcopy's progress pre-pass): it costs no copy and no
// allocation per packet, and a regular file is mapped rather than read,
// so payloads are skipped without being copied (see fileMap). Call it
// before the first Next.
func (s *FileSource) LengthsOnly() {
	s.lengthsOnly = true
	if s.gz == nil && s.m == nil {
		if m := mapFile(s.f); m != nil {
			s.m, s.r = m, nil // s.off is the file offset of what is next
		}
	}
}

// own makes a decoded payload (borrowed from the read buffer) the
// segment's: a copy, or shared zeros of its length.
func (s *FileSource) own(p []byte) []byte {
	if len(p) == 0 {
		return nil
	}
	if !s.lengthsOnly {
		return bytes.Clone(p)
	}
	if len(s.zeros) < len(p) {
		s.zeros = make([]byte, max(len(p), 64<<10))
	}
	return s.zeros[:len(p):len(p)]
}

// OpenFile opens a capture file. The format (pcap in either byte order and
// timestamp precision, or pcapng) is sniffed from its first bytes; gzip
// compression is undone transparently.
func OpenFile(path string) (*FileSource, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	s := &FileSource{path: path, f: f, r: bufio.NewReaderSize(f, readBufSize)}
	if err := s.open(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *FileSource) open() error {
	magic, err := s.r.Peek(4)
	if len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, gzErr := gzip.NewReader(s.r)
		if gzErr != nil {
			return s.errorf(0, ErrNotCapture, gzErr, "gzip header: %v", gzErr)
		}
		s.gz = gz
		s.r = bufio.NewReaderSize(gz, readBufSize)
		magic, err = s.r.Peek(4)
	}
	if len(magic) < 4 {
		if err != nil && !errors.Is(err, io.EOF) {
			return s.ioError(0, err)
		}
		return s.errorf(0, ErrNotCapture, nil, "file too short (%d bytes) for a capture header", len(magic))
	}
	le, be := binary.LittleEndian.Uint32(magic), binary.BigEndian.Uint32(magic)
	switch {
	case le == ngMagicSHB:
		s.ng = true
		return s.readSectionHeader(0)
	case le == pcapMagicMicros || le == pcapMagicNanos:
		return s.readPcapHeader(false, le == pcapMagicNanos)
	case be == pcapMagicMicros || be == pcapMagicNanos:
		return s.readPcapHeader(true, be == pcapMagicNanos)
	}
	return s.errorf(0, ErrNotCapture, nil, "unknown file magic 0x%08x: not a pcap or pcapng capture", be)
}

// Next returns the next IPv4 TCP segment, skipping (and counting) everything
// else. It returns io.EOF at the end of the file, and a *FormatError when the
// file is damaged; after an error it keeps returning that error.
func (s *FileSource) Next() (_ Segment, err error) {
	if s.err != nil {
		return Segment{}, s.err
	}
	if s.m != nil {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer s.faulted(&err)
	}
	for {
		var (
			data    []byte
			ts      time.Time
			wireLen int
			link    linkType
			err     error
		)
		if s.ng {
			data, ts, wireLen, link, err = s.nextNg()
		} else {
			data, ts, wireLen, err = s.nextPcap()
			link = s.link
		}
		if err != nil {
			s.err = err
			return Segment{}, err
		}
		s.stats.Packets++
		seg, v := decode(link, data, len(data) < wireLen)
		switch v {
		case verdictTCP:
			s.stats.TCP++
			seg.Time = ts
			seg.Payload = s.own(seg.Payload)
			return seg, nil
		case verdictNonTCP:
			s.stats.NonTCP++
		case verdictIPv6:
			s.stats.IPv6++
		case verdictFragment:
			s.stats.Fragments++
		case verdictTruncated:
			s.stats.Truncated++
		default:
			s.stats.Malformed++
		}
	}
}

// faulted, deferred where the mapping is read under SetPanicOnFault,
// turns the fault of a file that shrank while mapped into an error (and
// the source's sticky one). Other panics go on.
func (s *FileSource) faulted(err *error) {
	r := recover()
	if r == nil {
		return
	}
	if _, ok := r.(interface{ Addr() uintptr }); !ok || s.m == nil {
		panic(r)
	}
	s.m.unmap()
	s.err = s.errorf(s.off, ErrTruncated, io.ErrUnexpectedEOF, "file shrank while being read")
	*err = s.err
}

// Stats returns the counters so far.
func (s *FileSource) Stats() SourceStats { return s.stats }

// Close closes the file. Next fails after Close.
func (s *FileSource) Close() error {
	if s.f == nil {
		return nil
	}
	if s.gz != nil {
		s.gz.Close()
	}
	if s.m != nil {
		s.m.unmap()
	}
	err := s.f.Close()
	s.f = nil
	if s.err == nil {
		s.err = fmt.Errorf("%s: %w", s.path, os.ErrClosed)
	}
	return err
}

func (s *FileSource) errorf(off int64, kind, cause error, format string, args ...any) error {
	return &FormatError{Path: s.path, Offset: off, Gunzipped: s.gz != nil, Kind: kind, Err: cause, Msg: fmt.Sprintf(format, args...)}
}

func (s *FileSource) ioError(off int64, err error) error {
	return s.errorf(off, err, nil, "read: %v", err)
}

// take returns the next n bytes. The slice is valid until the next take.
// short reports how many bytes there were when the file ended early (then
// err is io.ErrUnexpectedEOF, or io.EOF if there were none at all).
func (s *FileSource) take(n int) (b []byte, short int, err error) {
	if s.skip > 0 {
		if s.m == nil {
			s.r.Discard(s.skip) // cannot fail: those bytes were peeked
		}
		s.off += int64(s.skip)
		s.skip = 0
	}
	if s.m != nil {
		b, short, err = s.m.at(s.off, n)
		if err == nil {
			s.skip = n
		}
		return b, short, err
	}
	if n <= s.r.Size() {
		b, err = s.r.Peek(n)
		if len(b) == n {
			s.skip = n
			return b, 0, nil
		}
	} else {
		// Grow with what actually arrives, so a corrupt length cannot make
		// us allocate more than the file holds.
		b = s.big[:0]
		for len(b) < n && err == nil {
			chunk := min(n-len(b), readBufSize)
			b = slices.Grow(b, chunk)
			var m int
			m, err = io.ReadFull(s.r, b[len(b):len(b)+chunk])
			b = b[:len(b)+m]
		}
		s.big = b[:0]
		s.off += int64(len(b))
		if len(b) == n {
			return b, 0, nil
		}
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, bufio.ErrBufferFull) {
		if len(b) == 0 {
			return nil, 0, io.EOF
		}
		return nil, len(b), io.ErrUnexpectedEOF
	}
	return nil, len(b), err
}

// discard skips n bytes, returning how many there were if fewer.
func (s *FileSource) discard(n int64) (short int64, err error) {
	if s.skip > 0 {
		if s.m == nil {
			s.r.Discard(s.skip)
		}
		s.off += int64(s.skip)
		s.skip = 0
	}
	if s.m != nil {
		short, err = s.m.skip(s.off, n)
		if err == nil {
			s.off += n
		}
		return short, err
	}
	var done int64
	for done < n {
		m, err := s.r.Discard(int(min(n-done, 1<<30)))
		done += int64(m)
		if err != nil {
			s.off += done
			if errors.Is(err, io.EOF) {
				return done, io.ErrUnexpectedEOF
			}
			return done, err
		}
	}
	s.off += done
	return 0, nil
}

// truncated builds the error for a file that ends inside a record.
func (s *FileSource) truncated(off int64, what string, want, have int64, err error) error {
	if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return s.ioError(off, err)
	}
	return s.errorf(off, ErrTruncated, io.ErrUnexpectedEOF, "truncated %s (want %d bytes, have %d)", what, want, have)
}

func (s *FileSource) u16(b []byte) uint16 {
	if s.bigEndian {
		return binary.BigEndian.Uint16(b)
	}
	return binary.LittleEndian.Uint16(b)
}

func (s *FileSource) u32(b []byte) uint32 {
	if s.bigEndian {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

func (s *FileSource) u64(b []byte) uint64 {
	if s.bigEndian {
		return binary.BigEndian.Uint64(b)
	}
	return binary.LittleEndian.Uint64(b)
}

// pcap

func (s *FileSource) readPcapHeader(bigEndian, nanos bool) error {
	s.bigEndian = bigEndian
	s.fracToNsec = 1000
	if nanos {
		s.fracToNsec = 1
	}
	h, short, err := s.take(24)
	if err != nil {
		return s.truncated(0, "pcap file header", 24, int64(short), err)
	}
	if major := s.u16(h[4:6]); major != 2 {
		return s.errorf(4, ErrCorrupt, nil, "unsupported pcap version %d.%d", major, s.u16(h[6:8]))
	}
	// The upper bits carry FCS information (LT_FCS_LENGTH); the IP length
	// field tells us where the packet ends, so a trailing FCS is harmless.
	raw := s.u32(h[20:24]) & 0x03ffffff
	link, ok := linkTypeOf(raw)
	if !ok {
		return s.errorf(20, ErrUnsupportedLinkType, nil, "unsupported link type %d (%s)", raw, linkTypeName(raw))
	}
	s.link = link
	return nil
}

func (s *FileSource) nextPcap() (data []byte, ts time.Time, wireLen int, err error) {
	off := s.off + int64(s.skip)
	h, short, err := s.take(16)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ts, 0, io.EOF
		}
		return nil, ts, 0, s.truncated(off, "packet record header", 16, int64(short), err)
	}
	sec, frac := s.u32(h[0:4]), s.u32(h[4:8])
	capLen, origLen := s.u32(h[8:12]), s.u32(h[12:16])
	// The file's snap length is not enforced: some writers (dpkt) exceed
	// it, and tcpdump and Wireshark read such files anyway.
	if capLen > maxPacket {
		return nil, ts, 0, s.errorf(off, ErrCorrupt, nil, "packet record claims %d captured bytes, more than the %d limit (corrupt record header?)", capLen, maxPacket)
	}
	ts = time.Unix(int64(sec), int64(frac)*s.fracToNsec).UTC()
	data, short, err = s.take(int(capLen))
	if err != nil {
		return nil, ts, 0, s.truncated(off, "packet record", int64(capLen), int64(short), err)
	}
	return data, ts, int(max(origLen, capLen)), nil
}

// pcapng

// readSectionHeader reads a section header block whose 4-byte type is
// already known to be there. A new section resets byte order and interfaces.
func (s *FileSource) readSectionHeader(off int64) error {
	h, short, err := s.take(12)
	if err != nil {
		return s.truncated(off, "pcapng section header", 12, int64(short), err)
	}
	switch {
	case binary.BigEndian.Uint32(h[8:12]) == ngByteOrder:
		s.bigEndian = true
	case binary.LittleEndian.Uint32(h[8:12]) == ngByteOrder:
		s.bigEndian = false
	default:
		return s.errorf(off+8, ErrCorrupt, nil, "bad pcapng byte-order magic 0x%x", binary.BigEndian.Uint32(h[8:12]))
	}
	total := s.u32(h[4:8])
	if total < 28 || total%4 != 0 || total > maxSkipBlock {
		return s.errorf(off, ErrCorrupt, nil, "bad pcapng section header length %d", total)
	}
	v, short, err := s.take(4)
	if err != nil {
		return s.truncated(off, "pcapng section header", int64(total), 12+int64(short), err)
	}
	if major := s.u16(v[0:2]); major != 1 {
		return s.errorf(off+12, ErrCorrupt, nil, "unsupported pcapng version %d.%d", major, s.u16(v[2:4]))
	}
	// The section length and the options tell us nothing we use.
	if short, err := s.discard(int64(total) - 20); err != nil {
		return s.truncated(off, "pcapng section header", int64(total), 16+short, err)
	}
	t, short, err := s.take(4)
	if err != nil {
		return s.truncated(off, "pcapng section header", int64(total), int64(total)-4+int64(short), err)
	}
	if err := s.checkTrailer(off, total, t); err != nil {
		return err
	}
	s.ifaces = s.ifaces[:0]
	return nil
}

func (s *FileSource) checkTrailer(off int64, total uint32, rest []byte) error {
	if t := s.u32(rest[len(rest)-4:]); t != total {
		return s.errorf(off, ErrCorrupt, nil, "pcapng block length mismatch (header %d, trailer %d)", total, t)
	}
	return nil
}

func (s *FileSource) nextNg() (data []byte, ts time.Time, wireLen int, link linkType, err error) {
	for {
		off := s.off + int64(s.skip)
		h, short, err := s.take(8)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, ts, 0, 0, io.EOF
			}
			return nil, ts, 0, 0, s.truncated(off, "pcapng block header", 8, int64(short), err)
		}
		typ, total := s.u32(h[0:4]), s.u32(h[4:8])
		if typ == ngMagicSHB {
			s.skip = 0 // the section header reader starts at the block type
			if err := s.readSectionHeader(off); err != nil {
				return nil, ts, 0, 0, err
			}
			continue
		}
		if total < 12 || total%4 != 0 {
			return nil, ts, 0, 0, s.errorf(off, ErrCorrupt, nil, "bad pcapng block length %d (block type 0x%x)", total, typ)
		}
		bodyLen := int64(total) - 12
		switch typ {
		case ngBlockIDB, ngBlockEPB, ngBlockOPB, ngBlockSPB:
		default:
			if total > maxSkipBlock {
				return nil, ts, 0, 0, s.errorf(off, ErrCorrupt, nil, "bad pcapng block length %d (block type 0x%x)", total, typ)
			}
			if short, err := s.discard(bodyLen); err != nil {
				return nil, ts, 0, 0, s.truncated(off, "pcapng block", int64(total), 8+short, err)
			}
			t, short, err := s.take(4)
			if err != nil {
				return nil, ts, 0, 0, s.truncated(off, "pcapng block", int64(total), 8+bodyLen+int64(short), err)
			}
			if err := s.checkTrailer(off, total, t); err != nil {
				return nil, ts, 0, 0, err
			}
			continue
		}
		if bodyLen > maxPacket+64<<10 {
			return nil, ts, 0, 0, s.errorf(off, ErrCorrupt, nil, "pcapng block claims %d bytes, more than the %d limit (corrupt block header?)", total, maxPacket+64<<10)
		}
		b, short, err := s.take(int(bodyLen) + 4)
		if err != nil {
			return nil, ts, 0, 0, s.truncated(off, "pcapng block", int64(total), 8+int64(short), err)
		}
		if err := s.checkTrailer(off, total, b); err != nil {
			return nil, ts, 0, 0, err
		}
		b = b[:bodyLen]
		if typ == ngBlockIDB {
			if err := s.readInterface(off, b); err != nil {
				return nil, ts, 0, 0, err
			}
			continue
		}
		data, ts, wireLen, link, err = s.ngPacket(off, typ, b)
		return data, ts, wireLen, link, err
	}
}

func (s *FileSource) readInterface(off int64, b []byte) error {
	if len(b) < 8 {
		return s.errorf(off, ErrCorrupt, nil, "pcapng interface description block too short (%d bytes)", len(b))
	}
	raw := uint32(s.u16(b[0:2]))
	ifc := ngInterface{rawLink: raw, snaplen: s.u32(b[4:8]), unitsPerSec: 1e6}
	ifc.link, _ = linkTypeOf(raw) // unsupported only matters once a packet uses it
	for opts := b[8:]; len(opts) >= 4; {
		code, n := s.u16(opts[0:2]), int(s.u16(opts[2:4]))
		if code == 0 || 4+n > len(opts) {
			break
		}
		v := opts[4 : 4+n]
		adv := 4 + (n+3)&^3
		switch {
		case code == 9 && n == 1: // if_tsresol
			exp := uint64(v[0] & 0x7f)
			if v[0]&0x80 != 0 {
				if exp > 63 {
					return s.errorf(off, ErrCorrupt, nil, "interface %d: unsupported timestamp resolution 2^-%d", len(s.ifaces), exp)
				}
				ifc.unitsPerSec = 1 << exp
			} else {
				if exp > 19 {
					return s.errorf(off, ErrCorrupt, nil, "interface %d: unsupported timestamp resolution 10^-%d", len(s.ifaces), exp)
				}
				ifc.unitsPerSec = 1
				for range exp {
					ifc.unitsPerSec *= 10
				}
			}
		case code == 14 && n == 8: // if_tsoffset
			ifc.offset = int64(s.u64(v))
		}
		if adv > len(opts) {
			break
		}
		opts = opts[adv:]
	}
	s.ifaces = append(s.ifaces, ifc)
	return nil
}

func (s *FileSource) ngPacket(off int64, typ uint32, b []byte) (data []byte, ts time.Time, wireLen int, link linkType, err error) {
	var ifIndex uint32
	var tsHigh, tsLow, capLen, origLen uint32
	var hdr int
	switch typ {
	case ngBlockEPB:
		if len(b) < 20 {
			return nil, ts, 0, 0, s.errorf(off, ErrCorrupt, nil, "pcapng packet block too short (%d bytes)", len(b))
		}
		ifIndex, tsHigh, tsLow, capLen, origLen, hdr = s.u32(b[0:4]), s.u32(b[4:8]), s.u32(b[8:12]), s.u32(b[12:16]), s.u32(b[16:20]), 20
	case ngBlockOPB:
		if len(b) < 20 {
			return nil, ts, 0, 0, s.errorf(off, ErrCorrupt, nil, "pcapng packet block too short (%d bytes)", len(b))
		}
		ifIndex, tsHigh, tsLow, capLen, origLen, hdr = uint32(s.u16(b[0:2])), s.u32(b[4:8]), s.u32(b[8:12]), s.u32(b[12:16]), s.u32(b[16:20]), 20
	case ngBlockSPB:
		if len(b) < 4 {
			return nil, ts, 0, 0, s.errorf(off, ErrCorrupt, nil, "pcapng simple packet block too short (%d bytes)", len(b))
		}
		origLen, hdr = s.u32(b[0:4]), 4
		capLen = min(origLen, uint32(len(b)-4))
		if len(s.ifaces) > 0 && s.ifaces[0].snaplen != 0 {
			capLen = min(capLen, s.ifaces[0].snaplen)
		}
	}
	if int(ifIndex) >= len(s.ifaces) {
		return nil, ts, 0, 0, s.errorf(off, ErrCorrupt, nil, "packet refers to interface %d, but the section describes %d", ifIndex, len(s.ifaces))
	}
	if uint64(capLen) > uint64(len(b)-hdr) {
		return nil, ts, 0, 0, s.errorf(off, ErrCorrupt, nil, "packet claims %d captured bytes, block holds %d", capLen, len(b)-hdr)
	}
	ifc := &s.ifaces[ifIndex]
	if ifc.link == linkUnsupported {
		return nil, ts, 0, 0, s.errorf(off, ErrUnsupportedLinkType, nil, "unsupported link type %d (%s) on interface %d", ifc.rawLink, linkTypeName(ifc.rawLink), ifIndex)
	}
	if typ != ngBlockSPB { // simple packet blocks carry no timestamp
		ts = ifc.time(uint64(tsHigh)<<32 | uint64(tsLow))
	}
	return b[hdr : hdr+int(capLen)], ts, int(max(origLen, capLen)), ifc.link, nil
}

func (ifc *ngInterface) time(units uint64) time.Time {
	sec, frac := units/ifc.unitsPerSec, units%ifc.unitsPerSec
	// frac*1e9 can overflow 64 bits at resolutions finer than 1 ns;
	// hi < unitsPerSec always holds, so Div64 cannot panic.
	hi, lo := bits.Mul64(frac, 1e9)
	nsec, _ := bits.Div64(hi, lo, ifc.unitsPerSec)
	return time.Unix(int64(sec)+ifc.offset, int64(nsec)).UTC()
}

// Link layers and packet decoding.

type linkType uint8

const (
	linkUnsupported linkType = iota
	linkEthernet
	linkSLL
	linkSLL2
	linkRaw // IPv4 or IPv6, by version nibble
	linkIPv4
	linkIPv6
	linkNull // BSD loopback: 4-byte address family in the writer's byte order
	linkLoop // OpenBSD loopback: 4-byte address family, big endian
)

func linkTypeOf(raw uint32) (linkType, bool) {
	switch raw {
	case 1:
		return linkEthernet, true
	case 113:
		return linkSLL, true
	case 276:
		return linkSLL2, true
	case 101, 12, 14: // LINKTYPE_RAW, and DLT_RAW's values on BSDs
		return linkRaw, true
	case 228:
		return linkIPv4, true
	case 229:
		return linkIPv6, true
	case 0:
		return linkNull, true
	case 108:
		return linkLoop, true
	}
	return linkUnsupported, false
}

func linkTypeName(raw uint32) string {
	switch raw {
	case 6:
		return "Token Ring"
	case 9:
		return "PPP"
	case 10:
		return "FDDI"
	case 50:
		return "PPP in HDLC framing"
	case 51:
		return "PPPoE"
	case 104:
		return "Cisco HDLC"
	case 105:
		return "IEEE 802.11"
	case 117:
		return "OpenBSD pflog"
	case 127:
		return "802.11 radiotap"
	case 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162:
		return "user-defined"
	case 220:
		return "Linux USB"
	case 249:
		return "netlink"
	}
	return "supported: Ethernet, Linux SLL/SLL2, raw IP, loopback"
}

type verdict uint8

const (
	verdictTCP verdict = iota
	verdictNonTCP
	verdictIPv6
	verdictFragment
	verdictTruncated
	verdictMalformed
)

const (
	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
)

// decode extracts an IPv4 TCP segment from one captured packet. cut says the
// capture holds fewer bytes than were on the wire (snap length): then a
// packet that ends early is truncated rather than malformed. Checksums are
// not verified: with checksum offload, captured outgoing packets carry
// garbage there.
func decode(link linkType, b []byte, cut bool) (Segment, verdict) {
	var etype uint16
	switch link {
	case linkEthernet:
		if len(b) < 14 {
			return Segment{}, bad(cut)
		}
		etype, b = binary.BigEndian.Uint16(b[12:14]), b[14:]
	case linkSLL:
		if len(b) < 16 {
			return Segment{}, bad(cut)
		}
		etype, b = binary.BigEndian.Uint16(b[14:16]), b[16:]
	case linkSLL2:
		// gopacket has no SLL2 layer; the protocol type leads its 20 bytes.
		if len(b) < 20 {
			return Segment{}, bad(cut)
		}
		etype, b = binary.BigEndian.Uint16(b[0:2]), b[20:]
	case linkRaw:
		if len(b) < 1 {
			return Segment{}, bad(cut)
		}
		switch b[0] >> 4 {
		case 4:
			etype = etherIPv4
		case 6:
			etype = etherIPv6
		default:
			return Segment{}, verdictMalformed
		}
	case linkIPv4:
		etype = etherIPv4
	case linkIPv6:
		etype = etherIPv6
	case linkNull, linkLoop:
		if len(b) < 4 {
			return Segment{}, bad(cut)
		}
		family := binary.BigEndian.Uint32(b[0:4])
		if link == linkNull && family > 0xffff {
			family = binary.LittleEndian.Uint32(b[0:4])
		}
		b = b[4:]
		switch family {
		case 2: // AF_INET everywhere
			etype = etherIPv4
		case 10, 24, 28, 30: // AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS
			etype = etherIPv6
		default:
			return Segment{}, verdictNonTCP
		}
	default:
		return Segment{}, verdictMalformed
	}
	// VLAN tags: 802.1Q, 802.1ad (QinQ) and the old 0x9100. SLL and SLL2
	// usually have the tag stripped, but not always.
	for tags := 0; etype == 0x8100 || etype == 0x88a8 || etype == 0x9100; tags++ {
		if tags == 8 {
			return Segment{}, verdictMalformed
		}
		if len(b) < 4 {
			return Segment{}, bad(cut)
		}
		etype, b = binary.BigEndian.Uint16(b[2:4]), b[4:]
	}
	switch etype {
	case etherIPv4:
		return decodeIPv4(b, cut)
	case etherIPv6:
		return Segment{}, decodeIPv6(b, cut)
	}
	return Segment{}, verdictNonTCP
}

func bad(cut bool) verdict {
	if cut {
		return verdictTruncated
	}
	return verdictMalformed
}

func decodeIPv4(b []byte, cut bool) (Segment, verdict) {
	if len(b) < 20 {
		return Segment{}, bad(cut)
	}
	if b[0]>>4 != 4 {
		return Segment{}, verdictMalformed
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total == 0 {
		// TSO/GRO super-segments larger than 64 KiB (BIG TCP) are
		// captured with a zero total length.
		total = len(b)
	}
	if ihl < 20 || total < ihl {
		return Segment{}, verdictMalformed
	}
	if b[9] != 6 {
		return Segment{}, verdictNonTCP
	}
	if binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 { // MF set or offset > 0
		return Segment{}, verdictFragment
	}
	if len(b) < total {
		return Segment{}, bad(cut)
	}
	t := b[ihl:total] // drops Ethernet padding and trailers
	if len(t) < 20 {
		return Segment{}, verdictMalformed
	}
	doff := int(t[12]>>4) * 4
	if doff < 20 || doff > len(t) {
		return Segment{}, verdictMalformed
	}
	seg := Segment{
		Src:   netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[12:16])), binary.BigEndian.Uint16(t[0:2])),
		Dst:   netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[16:20])), binary.BigEndian.Uint16(t[2:4])),
		Seq:   binary.BigEndian.Uint32(t[4:8]),
		Ack:   binary.BigEndian.Uint32(t[8:12]),
		Flags: TCPFlags(t[13]) & flagMask,
	}
	if p := t[doff:]; len(p) > 0 {
		seg.Payload = p // borrowed from b: the caller makes it the Segment's own
	}
	return seg, verdictTCP
}

// decodeIPv6 only classifies: IPv6 sessions are not replayed yet, but users
// should see how much of their capture that leaves out.
func decodeIPv6(b []byte, cut bool) verdict {
	if len(b) < 40 {
		return bad(cut)
	}
	if b[0]>>4 != 6 {
		return verdictMalformed
	}
	if plen := int(binary.BigEndian.Uint16(b[4:6])); plen != 0 { // 0: jumbogram / BIG TCP
		if len(b) < 40+plen {
			return bad(cut)
		}
		b = b[:40+plen]
	}
	next, p := b[6], b[40:]
	for range 16 {
		switch next {
		case 6:
			if len(p) < 20 {
				return bad(cut)
			}
			if doff := int(p[12]>>4) * 4; doff < 20 || doff > len(p) {
				return verdictMalformed
			}
			return verdictIPv6
		case 0, 43, 60, 51: // hop-by-hop, routing, destination options, AH
			if len(p) < 2 {
				return bad(cut)
			}
			n := (int(p[1]) + 1) * 8
			if next == 51 {
				n = (int(p[1]) + 2) * 4
			}
			if len(p) < n {
				return bad(cut)
			}
			next, p = p[0], p[n:]
		case 44: // fragment
			if len(p) < 8 {
				return bad(cut)
			}
			if p[0] != 6 {
				return verdictNonTCP
			}
			return verdictFragment
		default:
			return verdictNonTCP
		}
	}
	return verdictMalformed
}
