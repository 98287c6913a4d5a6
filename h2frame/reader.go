package h2frame

import "encoding/binary"

// Frame types (RFC 9113 §6; PRIORITY_UPDATE is RFC 9218 §7.1).
const (
	typeData           uint8 = 0x0
	typeHeaders        uint8 = 0x1
	typePriority       uint8 = 0x2
	typeRSTStream      uint8 = 0x3
	typeSettings       uint8 = 0x4
	typePushPromise    uint8 = 0x5
	typePing           uint8 = 0x6
	typeGoAway         uint8 = 0x7
	typeWindowUpdate   uint8 = 0x8
	typeContinuation   uint8 = 0x9
	typePriorityUpdate uint8 = 0x10
)

// Frame flags. END_STREAM and ACK share a bit, as do the types they belong to.
const (
	flagEndStream  uint8 = 0x1 // DATA, HEADERS
	flagAck        uint8 = 0x1 // SETTINGS, PING
	flagEndHeaders uint8 = 0x4 // HEADERS, PUSH_PROMISE, CONTINUATION
	flagPadded     uint8 = 0x8 // DATA, HEADERS, PUSH_PROMISE
	flagPriority   uint8 = 0x20
)

// SETTINGS parameters the framer reads.
const settingInitialWindowSize = 0x4

// maxWindow is the largest flow-control window (RFC 9113 §6.9.1).
const maxWindow = 1<<31 - 1

const frameHeaderLen = 9

// clientPreface is what an HTTP/2 client sends first (RFC 9113 §3.4).
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// frameHeader is a frame's 9-byte header, decoded.
type frameHeader struct {
	length uint32 // payload length, 24 bits
	typ    uint8
	flags  uint8
	stream uint32 // the reserved bit cleared
}

func (h frameHeader) has(flag uint8) bool { return h.flags&flag != 0 }

// event is what reader.next stopped at.
type event uint8

const (
	evNeed     event = iota // all input consumed; more is needed
	evHeader                // a frame header was read and passes the framing rules (reader.h)
	evFragment              // reader.frag holds the next bytes of a header block fragment
	evFrame                 // the frame in reader.h is complete; its fields are decoded
	evError                 // the input breaks the framing rules (reader.why)
)

type rstate uint8

const (
	rsHeader rstate = iota // reading a frame header
	rsFixed                // reading a payload's fixed leading fields into fixed
	rsBody                 // the variable part of a payload
	rsPad                  // padding after it
	rsEnd                  // the frame is complete: evFrame is next
	rsFailed               // framing broke: input is ignored
)

// reader splits one direction of an HTTP/2 connection, after the
// connection preface, into frames. It checks what RFC 9113 makes a
// connection error at the framing level (what golang.org/x/net/http2's
// Framer checks too): payload lengths per type, stream 0 or not, padding
// that does not fit, and header blocks that CONTINUATION frames must
// continue without any other frame in between.
//
// It holds only a frame header and a payload's fixed fields (at most 8
// bytes): DATA and the other payloads are skipped, header block fragments
// are handed out as slices of the input (evFragment) for a later HPACK
// decoder, and SETTINGS are decoded six bytes at a time.
type reader struct {
	st  rstate
	h   frameHeader
	why string // with evError

	hbuf [frameHeaderLen]byte
	hn   int

	fixed        [8]byte // a payload's leading fields: pad length, priority, ids, codes
	fn, fneed    int
	body         uint32 // bytes of the variable part still to come
	bodyLen      uint32 // the variable part's length (DATA: the data without padding)
	pad          uint32 // padding bytes still to come
	frag         []byte // with evFragment
	settingBuf   [6]byte
	settingN     int
	settingsSeen bool // the SETTINGS frame had INITIAL_WINDOW_SIZE
	iws          uint32
	incr         uint32 // WINDOW_UPDATE increment
	goLast       uint32 // GOAWAY last stream id
	goCode       uint32 // GOAWAY error code

	// The header block in progress: set by a HEADERS or PUSH_PROMISE
	// frame, kept until the frame with END_HEADERS.
	blockStream    uint32 // nonzero while CONTINUATION frames must follow
	blockEndStream bool   // the HEADERS frame that opened the block had END_STREAM
	blockPush      bool   // the block belongs to a PUSH_PROMISE
	blockEnded     bool   // with evFrame: this frame had END_HEADERS
}

// next consumes p's bytes up to the next event and reports how many it
// consumed. evNeed means all of p was consumed; after evHeader, evFragment
// and evFrame the caller calls next again with the rest of p (maybe empty:
// a frame without payload completes without more input).
func (d *reader) next(p []byte) (int, event) {
	n := 0
	for {
		switch d.st {
		case rsHeader:
			if d.hn == 0 && len(p)-n >= frameHeaderLen {
				d.decodeHeader(p[n : n+frameHeaderLen])
				n += frameHeaderLen
			} else {
				k := copy(d.hbuf[d.hn:], p[n:])
				d.hn += k
				n += k
				if d.hn < frameHeaderLen {
					return n, evNeed
				}
				d.hn = 0
				d.decodeHeader(d.hbuf[:])
			}
			if !d.begin() {
				d.st = rsFailed
				return n, evError
			}
			return n, evHeader
		case rsFixed:
			k := copy(d.fixed[d.fn:d.fneed], p[n:])
			d.fn += k
			n += k
			if d.fn < d.fneed {
				return n, evNeed
			}
			if !d.fixedDone() {
				d.st = rsFailed
				return n, evError
			}
			d.st = rsBody
		case rsBody:
			if d.body == 0 {
				d.st = rsPad
				continue
			}
			if n == len(p) {
				return n, evNeed
			}
			k := uint32(len(p) - n)
			if k > d.body {
				k = d.body
			}
			b := p[n : n+int(k)]
			n += int(k)
			d.body -= k
			switch d.h.typ {
			case typeHeaders, typePushPromise, typeContinuation:
				d.frag = b
				return n, evFragment
			case typeSettings:
				if !d.settings(b) {
					d.st = rsFailed
					return n, evError
				}
			}
		case rsPad:
			k := uint32(len(p) - n)
			if k > d.pad {
				k = d.pad
			}
			n += int(k)
			d.pad -= k
			if d.pad > 0 {
				return n, evNeed
			}
			d.st = rsEnd
		case rsEnd:
			d.st = rsHeader
			d.blockEnded = false
			switch d.h.typ {
			case typeHeaders, typePushPromise, typeContinuation:
				d.blockEnded = d.h.has(flagEndHeaders)
			}
			return n, evFrame
		default: // rsFailed
			return len(p), evNeed
		}
	}
}

func (d *reader) decodeHeader(b []byte) {
	d.h = frameHeader{
		length: uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]),
		typ:    b[3],
		flags:  b[4],
		stream: binary.BigEndian.Uint32(b[5:9]) & maxWindow,
	}
}

func (d *reader) fail(why string) bool {
	d.why = why
	return false
}

// begin checks a frame header and sets up the reading of its payload.
func (d *reader) begin() bool {
	h := d.h
	// Header blocks are contiguous (RFC 9113 §6.10): nothing but
	// CONTINUATION frames of the same stream until END_HEADERS.
	if d.blockStream != 0 {
		if h.typ != typeContinuation {
			return d.fail("frame inside a header block")
		}
		if h.stream != d.blockStream {
			return d.fail("CONTINUATION of another stream")
		}
	} else if h.typ == typeContinuation {
		return d.fail("CONTINUATION without a header block")
	}

	d.fn, d.fneed, d.pad, d.body = 0, 0, 0, 0
	d.settingN, d.settingsSeen = 0, false
	streamFrame := false // the type must name a stream
	connFrame := false   // the type must be on stream 0
	exact := int64(-1)   // the payload length the type requires
	switch h.typ {
	case typeData:
		streamFrame = true
		if h.has(flagPadded) {
			d.fneed = 1
		}
	case typeHeaders:
		streamFrame = true
		if h.has(flagPadded) {
			d.fneed++
		}
		if h.has(flagPriority) {
			d.fneed += 5
		}
	case typePriority:
		streamFrame, exact = true, 5
	case typeRSTStream:
		streamFrame, exact = true, 4
	case typeSettings:
		connFrame = true
		if h.has(flagAck) && h.length != 0 {
			return d.fail("SETTINGS ACK with a payload")
		}
		if h.length%6 != 0 {
			return d.fail("SETTINGS length not a multiple of 6")
		}
	case typePushPromise:
		streamFrame = true
		d.fneed = 4
		if h.has(flagPadded) {
			d.fneed++
		}
	case typePing:
		connFrame, exact = true, 8
	case typeGoAway:
		connFrame = true
		d.fneed = 8
	case typeWindowUpdate:
		exact, d.fneed = 4, 4
	case typeContinuation:
		streamFrame = true
	case typePriorityUpdate:
		connFrame = true
		d.fneed = 4
	}
	if streamFrame && h.stream == 0 {
		return d.fail("stream frame on stream 0")
	}
	if connFrame && h.stream != 0 {
		return d.fail("connection frame on a stream")
	}
	if exact >= 0 && int64(h.length) != exact {
		return d.fail("payload length wrong for the frame type")
	}
	if uint32(d.fneed) > h.length {
		return d.fail("payload shorter than its fixed fields")
	}
	switch h.typ {
	case typeHeaders, typePushPromise:
		d.blockPush = h.typ == typePushPromise
		d.blockEndStream = h.has(flagEndStream) && h.typ == typeHeaders
		fallthrough
	case typeContinuation:
		if h.has(flagEndHeaders) {
			d.blockStream = 0
		} else {
			d.blockStream = h.stream
		}
	}
	d.body = h.length - uint32(d.fneed)
	d.bodyLen = d.body
	if d.fneed > 0 {
		d.st = rsFixed
	} else {
		d.st = rsBody
	}
	return true
}

// fixedDone decodes a payload's fixed fields, all of which are in.
func (d *reader) fixedDone() bool {
	h := d.h
	f := d.fixed[:d.fneed]
	switch h.typ {
	case typeData, typeHeaders, typePushPromise:
		if h.has(flagPadded) {
			d.pad = uint32(f[0])
			if d.pad > d.body {
				return d.fail("padding longer than the payload")
			}
			d.body -= d.pad
			d.bodyLen = d.body
		}
	case typeGoAway:
		d.goLast = binary.BigEndian.Uint32(f[0:4]) & maxWindow
		d.goCode = binary.BigEndian.Uint32(f[4:8])
	case typeWindowUpdate:
		d.incr = binary.BigEndian.Uint32(f) & maxWindow
		if d.incr == 0 && h.stream == 0 {
			// A stream's zero increment is a stream error only; the
			// framer ignores that update.
			return d.fail("WINDOW_UPDATE of the connection by 0")
		}
	case typePriorityUpdate:
		if binary.BigEndian.Uint32(f)&maxWindow == 0 {
			return d.fail("PRIORITY_UPDATE of stream 0")
		}
	}
	return true
}

// settings decodes SETTINGS parameters from b, keeping a parameter split
// across calls in settingBuf.
func (d *reader) settings(b []byte) bool {
	for len(b) > 0 {
		var s []byte
		if d.settingN == 0 && len(b) >= 6 {
			s, b = b[:6], b[6:]
		} else {
			k := copy(d.settingBuf[d.settingN:], b)
			d.settingN += k
			b = b[k:]
			if d.settingN < 6 {
				return true
			}
			d.settingN = 0
			s = d.settingBuf[:]
		}
		if binary.BigEndian.Uint16(s) == settingInitialWindowSize {
			v := binary.BigEndian.Uint32(s[2:])
			if v > maxWindow {
				// RFC 9113 §6.5.2: a FLOW_CONTROL_ERROR.
				return d.fail("SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
			}
			d.settingsSeen, d.iws = true, v
		}
	}
	return true
}
