package cmphttp

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/stackcopy/stackcopy/compare"
	"golang.org/x/net/http2/hpack"
)

// HTTP/2 (RFC 9113) over cleartext. The frames are read here (a 9-byte
// header, then the payload: DATA streamed into the stream's body, other
// frames kept whole up to maxKeep) and header blocks are decoded by hpack,
// one decoder per direction and server, since each encoder's dynamic
// table is its own.

const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Frame types and flags.
const (
	fData         = 0x0
	fHeaders      = 0x1
	fRSTStream    = 0x3
	fSettings     = 0x4
	fPushPromise  = 0x5
	fContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
)

// Settings (RFC 9113 §6.5.2) that decoding depends on.
const (
	settingHeaderTableSize = 0x1
	settingMaxFrameSize    = 0x5

	defaultMaxFrame = 16384
	maxMaxFrame     = 1<<24 - 1
	// maxTable bounds an hpack dynamic table whatever the peers agreed.
	maxTable = 1 << 20
)

// maxKeep bounds the payload kept of a frame other than DATA: a header
// block fragment with padding and priority fits.
const maxKeep = maxHeader + 512

// maxPending bounds the answers an HTTP/2 server stream holds until the
// client's stream has opened the streams they answer.
const maxPending = 1024

// errCodeName is an RST_STREAM or GOAWAY error code's name (RFC 9113 §7).
func errCodeName(c uint32) string {
	const names = "NO_ERROR PROTOCOL_ERROR INTERNAL_ERROR FLOW_CONTROL_ERROR SETTINGS_TIMEOUT STREAM_CLOSED FRAME_SIZE_ERROR REFUSED_STREAM CANCEL COMPRESSION_ERROR CONNECT_ERROR ENHANCE_YOUR_CALM INADEQUATE_SECURITY HTTP_1_1_REQUIRED"
	for i, n := range strings.Fields(names) {
		if uint32(i) == c {
			return n
		}
	}
	return fmt.Sprintf("0x%x", c)
}

// maxStreams bounds the streams a decoder tracks at once; peers allow far
// fewer concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS, 100-250).
const maxStreams = 4096

// noStream marks a request ID that no stream carries (above any stream ID,
// so that streamOf stays sorted).
const noStream = 1<<32 - 1

// frameHandler takes what a frameReader reads.
type frameHandler interface {
	// data is a piece of a DATA frame's payload, padding removed.
	data(stream uint32, p []byte)
	// dataEnd ends a DATA frame of size bytes (header included).
	dataEnd(stream uint32, endStream bool, size int) string
	// headers is a complete header block (HEADERS or PUSH_PROMISE and
	// their CONTINUATIONs, size bytes in all).
	headers(stream uint32, typ byte, promised uint32, block []byte, endStream bool, size int) string
	// control is any other frame, its payload cut at maxKeep.
	control(typ, flags byte, stream uint32, payload []byte) string
}

// frameReader cuts one direction's bytes into frames.
type frameReader struct {
	hdr    [9]byte
	nh     int
	typ    byte
	flags  byte
	stream uint32
	length int
	got    int
	keep   []byte
	padLen int

	// An open header block: CONTINUATION frames of contStream follow.
	contStream uint32
	block      []byte
	blockTyp   byte
	blockEnd   bool
	promised   uint32
	blockSize  int
}

// feed reads p; maxFrame is the largest frame the peer allows.
func (r *frameReader) feed(p []byte, maxFrame int, h frameHandler) string {
	for len(p) > 0 {
		if r.nh < 9 {
			k := copy(r.hdr[r.nh:], p)
			r.nh += k
			p = p[k:]
			if r.nh < 9 {
				break
			}
			if err := r.start(maxFrame); err != "" {
				return err
			}
			if r.length == 0 {
				if err := r.finish(h); err != "" {
					return err
				}
			}
			continue
		}
		take := min(r.length-r.got, len(p))
		if r.typ == fData {
			off := 0
			if r.flags&flagPadded != 0 && r.got == 0 {
				r.padLen = int(p[0])
				off = 1
				if r.padLen >= r.length {
					return "DATA padding longer than the frame"
				}
			}
			lo, hi := r.got+off, min(r.got+take, r.length-r.padLen)
			if hi > lo {
				h.data(r.stream, p[lo-r.got:hi-r.got])
			}
		} else if n := min(take, maxKeep-len(r.keep)); n > 0 {
			r.keep = append(r.keep, p[:n]...)
		}
		r.got += take
		p = p[take:]
		if r.got == r.length {
			if err := r.finish(h); err != "" {
				return err
			}
		}
	}
	return ""
}

// start reads a complete frame header.
func (r *frameReader) start(maxFrame int) string {
	r.length = int(r.hdr[0])<<16 | int(r.hdr[1])<<8 | int(r.hdr[2])
	r.typ, r.flags = r.hdr[3], r.hdr[4]
	r.stream = binary.BigEndian.Uint32(r.hdr[5:]) & (1<<31 - 1)
	r.got, r.keep, r.padLen = 0, r.keep[:0], 0
	if r.length > maxFrame {
		return fmt.Sprintf("frame of %d bytes beyond the maximum frame size %d", r.length, maxFrame)
	}
	if r.contStream != 0 && (r.typ != fContinuation || r.stream != r.contStream) {
		return "header block not continued by CONTINUATION"
	}
	switch r.typ {
	case fContinuation:
		if r.contStream == 0 {
			return "CONTINUATION without a header block"
		}
		fallthrough
	case fData, fHeaders, fRSTStream, fPushPromise:
		if r.stream == 0 {
			return fmt.Sprintf("frame type %d on stream 0", r.typ)
		}
		if r.typ != fData && r.length > maxKeep {
			return "header block longer than 64 KiB"
		}
	case fSettings:
		if r.stream != 0 {
			return "SETTINGS on a stream"
		}
	}
	return ""
}

// finish handles a complete frame.
func (r *frameReader) finish(h frameHandler) string {
	r.nh = 0
	size := 9 + r.length
	switch r.typ {
	case fData:
		if r.flags&flagPadded != 0 && r.length == 0 {
			return "padded DATA without a pad length"
		}
		return h.dataEnd(r.stream, r.flags&flagEndStream != 0, size)
	case fHeaders, fPushPromise:
		pl := r.keep
		if r.flags&flagPadded != 0 {
			if len(pl) == 0 || int(pl[0]) > len(pl)-1 {
				return "bad padding"
			}
			pl = pl[1 : len(pl)-int(pl[0])]
		}
		r.promised = 0
		if r.typ == fHeaders && r.flags&flagPriority != 0 {
			if len(pl) < 5 {
				return "HEADERS too short for its priority"
			}
			pl = pl[5:]
		}
		if r.typ == fPushPromise {
			if len(pl) < 4 {
				return "PUSH_PROMISE too short"
			}
			r.promised = binary.BigEndian.Uint32(pl) & (1<<31 - 1)
			pl = pl[4:]
		}
		r.block = append(r.block[:0], pl...)
		r.blockTyp, r.blockEnd, r.blockSize = r.typ, r.flags&flagEndStream != 0, size
		if r.flags&flagEndHeaders == 0 {
			r.contStream = r.stream
			return ""
		}
	case fContinuation:
		r.block = append(r.block, r.keep...)
		r.blockSize += size
		if len(r.block) > maxHeader {
			return "header block longer than 64 KiB"
		}
		if r.flags&flagEndHeaders == 0 {
			return ""
		}
		r.contStream = 0
	default:
		return h.control(r.typ, r.flags, r.stream, r.keep)
	}
	err := h.headers(r.stream, r.blockTyp, r.promised, r.block, r.blockEnd, r.blockSize)
	if cap(r.block) > 4<<10 {
		r.block = nil // a rare large block is not kept for the connection's life
	}
	return err
}

// hdec decodes header blocks with a bound on the decoded list.
type hdec struct {
	d      *hpack.Decoder
	fields []hfield
	size   int
	over   bool
}

func newHdec() *hdec {
	h := &hdec{}
	h.d = hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		// RFC 9113 §6.5.2 counts 32 bytes of overhead a field.
		h.size += len(f.Name) + len(f.Value) + 32
		if h.size > maxHeader {
			// Keep decoding (the dynamic table must stay in step)
			// without keeping the fields.
			h.over = true
			h.d.SetEmitEnabled(false)
			return
		}
		h.fields = append(h.fields, hfield{f.Name, f.Value})
	})
	h.d.SetMaxStringLength(maxHeader)
	return h
}

// decode decodes one header block; table is the largest dynamic table
// the peer's settings let the encoder use.
func (h *hdec) decode(block []byte, table uint32) ([]hfield, string) {
	h.fields, h.size, h.over = nil, 0, false
	h.d.SetEmitEnabled(true)
	h.d.SetAllowedMaxDynamicTableSize(min(max(table, 4096), maxTable))
	if _, err := h.d.Write(block); err != nil {
		return nil, "hpack: " + err.Error()
	}
	if err := h.d.Close(); err != nil {
		return nil, "hpack: " + err.Error()
	}
	if h.over {
		return nil, "header list longer than 64 KiB"
	}
	return h.fields, ""
}

// parseSettings reads a SETTINGS payload's values that matter here.
func parseSettings(p []byte, table, frame *uint32) string {
	if len(p)%6 != 0 {
		return "SETTINGS length not a multiple of 6"
	}
	for ; len(p) >= 6; p = p[6:] {
		v := binary.BigEndian.Uint32(p[2:])
		switch binary.BigEndian.Uint16(p) {
		case settingHeaderTableSize:
			*table = max(*table, min(v, maxTable))
		case settingMaxFrameSize:
			if v < defaultMaxFrame || v > maxMaxFrame {
				return "invalid SETTINGS_MAX_FRAME_SIZE"
			}
			*frame = max(*frame, v)
		}
	}
	return ""
}

// Client stream modes.
const (
	cDetect       = iota // nothing yet: the preface, or an HTTP/1 request
	cH1                  // HTTP/1 requests (an upgrade request, or no HTTP/2 at all)
	cAfterUpgrade        // after an h2c upgrade request: the preface, or more HTTP/1
	cPreface             // inside the client preface
	cFrames
	cStopped
)

// h2Conv reads the client's stream of an HTTP/2 connection and holds
// what its servers' streams share: which request each stream carries and
// the settings the client announced.
type h2Conv struct {
	lim  compare.Limits
	mode int
	h1   *h1Conv
	pre  int // preface bytes matched
	// sniff holds the first bytes (of the connection, or after an
	// upgrade request) until they show whether they are the preface.
	sniff []byte
	fr    frameReader
	dec   *hdec

	open       map[uint32]*h2Req
	streamOf   []uint32 // request ID → stream; 0 for HTTP/1 requests
	lastStream uint32
	next       int
	// Requests are returned in ID order (the order streams opened),
	// while streams complete in any order: done holds the completed
	// ones until those before them are, up to maxPending.
	done  map[int]compare.Request
	out   int
	ended bool

	clientTable, clientFrame uint32 // the client's settings (bound server frames)
	serverTable, serverFrame uint32 // the largest any server announced
}

type h2Req struct {
	id       int
	key      string
	line     string
	hdr      []hfield
	body     body
	size     int
	released bool // returned before it completed (see release)
}

func newH2Conv(lim compare.Limits) *h2Conv {
	c := &h2Conv{lim: lim, h1: newH1Conv(lim), dec: newHdec(), open: map[uint32]*h2Req{}, done: map[int]compare.Request{}}
	return c
}

func (c *h2Conv) Requests(b []byte) []compare.Request {
	var out []compare.Request
	for len(b) > 0 {
		switch c.mode {
		case cDetect, cAfterUpgrade:
			// The preface, or an HTTP/1 request (whose method may
			// begin like "PRI": POST, PUT): decided on as many bytes
			// as it takes.
			c.sniff = append(c.sniff, b...)
			n := min(len(c.sniff), len(clientPreface))
			if string(c.sniff[:n]) == clientPreface[:n] {
				if n < len(clientPreface) {
					return out
				}
				c.mode = cPreface
			} else if c.mode == cAfterUpgrade {
				// The server declined: the client goes on in HTTP/1.
				c.streamOf = nil
				c.h1.stopped = false
				c.mode = cH1
			} else {
				c.mode = cH1
			}
			b, c.sniff = c.sniff, nil
		case cH1:
			reqs, rest := c.h1.feed(b)
			out = append(out, reqs...)
			b = nil
			if m := c.h1.upgrade; m != nil {
				c.h1.upgrade = nil
				if !hasToken(m.hdr, "upgrade", "h2c") {
					// A websocket or the like: not HTTP any more.
					c.mode = cStopped
					break
				}
				// The upgrade request is stream 1's (RFC 7540 §3.2).
				c.streamOf = append(make([]uint32, m.id), 1)
				c.lastStream = 1
				c.next, c.out = m.id+1, m.id+1
				if s, ok := headerValue(m.hdr, "http2-settings"); ok {
					if p, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(strings.TrimSpace(s), "=")); err == nil {
						parseSettings(p, &c.clientTable, &c.clientFrame)
					}
				}
				c.mode = cAfterUpgrade
				b = rest
			}
		case cPreface:
			n := min(len(b), len(clientPreface)-c.pre)
			if string(b[:n]) != clientPreface[c.pre:c.pre+n] {
				return append(out, c.malformed("bad client preface"))
			}
			c.pre += n
			b = b[n:]
			if c.pre == len(clientPreface) {
				c.mode = cFrames
			}
		case cFrames:
			err := c.fr.feed(b, int(max(c.serverFrame, defaultMaxFrame)), c)
			b = nil
			out = append(out, c.release(false)...)
			if err != "" {
				out = append(out, c.malformed(err))
			}
		case cStopped:
			b = nil
		}
	}
	return out
}

// malformed reports client bytes that cannot be read: a request keyed
// "(malformed)" that nothing answers; the stream is not cut any further.
func (c *h2Conv) malformed(err string) compare.Request {
	c.mode = cStopped
	c.streamOf = append(c.streamOf, noStream)
	c.next++
	return compare.Request{ID: c.next - 1, Key: "(malformed)", NoAnswer: true, Sample: compare.Sample([]byte("malformed: "+err), c.lim.Sample)}
}

// release returns the completed requests that are next in ID order. When
// too many wait behind a stream that stays open (a long upload, a
// streaming call), that stream's request is returned as it is.
func (c *h2Conv) release(all bool) []compare.Request {
	var out []compare.Request
	for len(c.done) > 0 {
		r, ok := c.done[c.out]
		if !ok {
			if !all && len(c.done) < maxPending {
				break
			}
			if c.out < len(c.streamOf) {
				if o := c.open[c.streamOf[c.out]]; o != nil && !o.released {
					o.released = true
					out = append(out, c.request(o, false))
				}
			}
			c.out++
			continue
		}
		delete(c.done, c.out)
		out = append(out, r)
		c.out++
	}
	return out
}

func (c *h2Conv) request(r *h2Req, partial bool) compare.Request {
	lim := c.lim
	return compare.Request{ID: r.id, Key: r.key, Partial: partial, Size: r.size,
		Render: func() string { return renderSample(lim, r.line, r.hdr, false, r.body.sample) }}
}

func (c *h2Conv) complete(stream uint32, partial bool) {
	r := c.open[stream]
	if r == nil {
		return
	}
	delete(c.open, stream)
	if !r.released {
		c.done[r.id] = c.request(r, partial)
	}
}

func (c *h2Conv) data(stream uint32, p []byte) {
	if r := c.open[stream]; r != nil {
		r.body.add(p)
	}
}

func (c *h2Conv) dataEnd(stream uint32, end bool, size int) string {
	if r := c.open[stream]; r != nil {
		r.size += size
		if end {
			c.complete(stream, false)
		}
	}
	return ""
}

func (c *h2Conv) headers(stream uint32, typ byte, _ uint32, block []byte, end bool, size int) string {
	if typ == fPushPromise {
		return "PUSH_PROMISE from the client"
	}
	hdr, err := c.dec.decode(block, c.serverTable)
	if err != "" {
		return err
	}
	if stream%2 == 0 {
		return "client stream with an even ID"
	}
	r := c.open[stream]
	if r == nil {
		if stream <= c.lastStream {
			return "" // a closed stream's late frame
		}
		if len(c.open) >= maxStreams {
			return "too many open streams"
		}
		c.lastStream = stream
		var method, path, authority string
		var rest []hfield
		for _, f := range hdr {
			switch f.name {
			case ":method":
				method = f.value
			case ":path":
				path = f.value
			case ":authority":
				authority = f.value
			default:
				if !strings.HasPrefix(f.name, ":") {
					rest = append(rest, f)
				}
			}
		}
		if authority != "" {
			rest = append([]hfield{{":authority", authority}}, rest...)
		}
		r = &h2Req{id: c.next, key: requestKey(method, path), line: method + " " + path + " HTTP/2", hdr: rest,
			body: newBody(compare.Limits{Sample: c.lim.Sample})}
		c.open[stream] = r
		c.streamOf = append(c.streamOf, stream)
		c.next++
	}
	r.size += size
	if end {
		c.complete(stream, false)
	}
	return ""
}

func (c *h2Conv) control(typ, flags byte, stream uint32, p []byte) string {
	switch typ {
	case fSettings:
		if flags&flagAck == 0 {
			return parseSettings(p, &c.clientTable, &c.clientFrame)
		}
	case fRSTStream:
		if len(p) != 4 {
			return "RST_STREAM length not 4"
		}
		c.complete(stream, true)
	}
	return ""
}

func (c *h2Conv) EndRequests() []compare.Request {
	if c.ended {
		return nil
	}
	c.ended = true
	if c.mode == cH1 {
		return c.h1.EndRequests()
	}
	c.h1.ended = true
	streams := make([]uint32, 0, len(c.open))
	for s := range c.open {
		streams = append(streams, s)
	}
	slices.Sort(streams)
	for _, s := range streams {
		c.complete(s, true)
	}
	return c.release(true)
}

// reqOf is the request ID of a client stream, if it is open yet.
func (c *h2Conv) reqOf(stream uint32) (int, bool) {
	i := sort.Search(len(c.streamOf), func(i int) bool { return c.streamOf[i] >= stream })
	if i < len(c.streamOf) && c.streamOf[i] == stream {
		return i, true
	}
	return -1, false
}

func (c *h2Conv) Answers() compare.Answers {
	return &h2Answers{c: c, dec: newHdec(), streams: map[uint32]*h2Resp{}}
}

// Server stream modes.
const (
	aDetect = iota // HTTP/1 (the answer to an upgrade) or frames
	aH1
	aFrames
	aStopped
)

// h2Answers reads one server's stream of an HTTP/2 connection.
type h2Answers struct {
	c       *h2Conv
	names   map[string]string // header field names, see appendHeaderFields
	mode    int
	h1      *h1Answers
	fr      frameReader
	dec     *hdec
	streams map[uint32]*h2Resp
	out     []compare.Answer
	// pending are answers to streams the client's stream has not
	// opened yet (the server's bytes were fed first).
	pending []pendingAnswer
	// answered marks the requests answered, so that a stray HEADERS on
	// a finished stream does not answer twice.
	answered []uint64
}

type pendingAnswer struct {
	stream uint32
	a      compare.Answer
}

type h2Resp struct {
	stream    uint32
	push      bool
	status    int
	hdr       []hfield
	trailers  []hfield
	body      body
	size      int
	gotStatus bool
}

func (a *h2Answers) Feed(b []byte) []compare.Answer {
	a.resolve(false)
	if a.mode == aDetect && len(b) > 0 {
		// A frame header starting with 'H' would announce a frame of
		// 4.7 MB, more than any peer allows before SETTINGS.
		if b[0] == 'H' {
			a.mode = aH1
			a.h1 = a.c.h1.newAnswers()
			a.h1.h2c = true
		} else {
			a.mode = aFrames
		}
	}
	if a.mode == aH1 {
		// Also without new bytes: held ones may be waiting for a
		// request the client's stream has shown since.
		a.feedH1(b, false)
	} else {
		a.feedFrames(b)
	}
	out := a.out
	a.out = nil
	return out
}

// feedH1 reads HTTP/1 answers: the server's answer to an upgrade request,
// then frames if it was 101; the rest of the connection if it was not.
func (a *h2Answers) feedH1(b []byte, end bool) {
	out, rest, switched := a.h1.feed(b, end)
	a.out = append(a.out, out...)
	if switched {
		a.mode = aFrames
		a.feedFrames(rest)
	}
}

func (a *h2Answers) feedFrames(b []byte) {
	if a.mode != aFrames || len(b) == 0 {
		return
	}
	if err := a.fr.feed(b, int(max(a.c.clientFrame, defaultMaxFrame)), a); err != "" {
		a.out = append(a.out, compare.Answer{Req: -1, Malformed: err})
		a.mode = aStopped
	}
}

func (a *h2Answers) End() []compare.Answer {
	if a.mode == aH1 {
		a.feedH1(nil, true)
		if a.mode == aH1 {
			a.out = append(a.out, a.h1.End()...)
		}
	}
	if a.mode == aFrames {
		streams := make([]uint32, 0, len(a.streams))
		for s, r := range a.streams {
			if r.gotStatus {
				streams = append(streams, s)
			}
		}
		slices.Sort(streams)
		for _, s := range streams {
			a.complete(a.streams[s], "", true)
		}
	}
	a.mode = aStopped
	a.streams = map[uint32]*h2Resp{}
	a.resolve(true)
	out := a.out
	a.out = nil
	return out
}

// resolve returns the pending answers whose streams the client has opened
// since; all: the rest too, as answering no known request.
func (a *h2Answers) resolve(all bool) {
	keep := a.pending[:0]
	for _, p := range a.pending {
		if id, ok := a.c.reqOf(p.stream); ok || all || a.c.ended {
			p.a.Req = id
			if ok && a.markAnswered(id) {
				continue
			}
			a.out = append(a.out, p.a)
		} else {
			keep = append(keep, p)
		}
	}
	a.pending = keep
}

// markAnswered records that request id has its answer and says whether
// it had one already.
func (a *h2Answers) markAnswered(id int) bool {
	for id/64 >= len(a.answered) {
		a.answered = append(a.answered, 0)
	}
	had := a.answered[id/64]&(1<<(id%64)) != 0
	a.answered[id/64] |= 1 << (id % 64)
	return had
}

func (a *h2Answers) resp(stream uint32) *h2Resp {
	r := a.streams[stream]
	if r == nil {
		if len(a.streams) >= maxStreams {
			return nil
		}
		r = &h2Resp{stream: stream, push: stream%2 == 0, body: newBody(a.c.lim)}
		a.streams[stream] = r
	}
	return r
}

func (a *h2Answers) data(stream uint32, p []byte) {
	if r := a.streams[stream]; r != nil && r.gotStatus {
		r.body.add(p)
	}
}

func (a *h2Answers) dataEnd(stream uint32, end bool, size int) string {
	if r := a.streams[stream]; r != nil {
		r.size += size
		if end {
			a.complete(r, "", false)
		}
	}
	return ""
}

func (a *h2Answers) headers(stream uint32, typ byte, promised uint32, block []byte, end bool, size int) string {
	hdr, err := a.dec.decode(block, a.c.clientTable)
	if err != "" {
		return err
	}
	if typ == fPushPromise {
		if promised == 0 || promised%2 != 0 {
			return "PUSH_PROMISE of an odd stream"
		}
		if r := a.resp(promised); r != nil {
			r.size += size
			return ""
		}
		return "too many open streams"
	}
	r := a.resp(stream)
	if r == nil {
		return "too many open streams"
	}
	r.size += size
	if r.gotStatus {
		r.trailers = withoutPseudo(hdr)
	} else {
		sv, _ := headerValue(hdr, ":status")
		status, e := strconv.Atoi(sv)
		if e != nil || status < 100 || status > 999 {
			return "HEADERS without a valid :status"
		}
		if status < 200 {
			// Interim (100, 103): the answer's headers follow.
			if end {
				return "interim HEADERS ending the stream"
			}
			return ""
		}
		r.status, r.hdr, r.gotStatus = status, withoutPseudo(hdr), true
		r.body.hashOnly = hashOnlyBody(r.hdr)
	}
	if end {
		a.complete(r, "", false)
	}
	return ""
}

func withoutPseudo(hdr []hfield) []hfield {
	out := hdr[:0:0]
	for _, f := range hdr {
		if !strings.HasPrefix(f.name, ":") {
			out = append(out, f)
		}
	}
	return out
}

func (a *h2Answers) control(typ, flags byte, stream uint32, p []byte) string {
	switch typ {
	case fSettings:
		if flags&flagAck == 0 {
			return parseSettings(p, &a.c.serverTable, &a.c.serverFrame)
		}
	case fRSTStream:
		if len(p) != 4 {
			return "RST_STREAM length not 4"
		}
		r := a.resp(stream)
		if r == nil {
			return "too many open streams"
		}
		a.complete(r, errCodeName(binary.BigEndian.Uint32(p)), false)
	}
	return ""
}

// complete makes the answer of a finished (or reset, or cut) stream.
func (a *h2Answers) complete(r *h2Resp, rst string, truncated bool) {
	delete(a.streams, r.stream)
	ans := compare.Answer{Req: -1, Truncated: truncated, Size: r.size, Error: r.status >= 500 || rst != ""}
	line := "HTTP/2 (no response)"
	if r.gotStatus {
		if a.names == nil {
			a.names = make(map[string]string)
		}
		ans.Fields, ans.Detail = answerFields(a.c.lim, r.status, r.hdr, r.trailers, &r.body, a.names)
		line = "HTTP/2 " + strconv.Itoa(r.status)
	}
	if rst != "" {
		ans.Fields = append(ans.Fields, compare.Field{Name: "rst_stream", Value: rst})
		line += " (RST_STREAM " + rst + ")"
	}
	lim := a.c.lim
	ans.Render = func() string { return renderSample(lim, line, r.hdr, true, r.body.sample) }
	if r.push {
		a.out = append(a.out, ans)
		return
	}
	id, ok := a.c.reqOf(r.stream)
	if !ok && !a.c.ended && len(a.pending) < maxPending {
		a.pending = append(a.pending, pendingAnswer{r.stream, ans})
		return
	}
	if ok {
		if a.markAnswered(id) {
			return
		}
		ans.Req = id
	}
	a.out = append(a.out, ans)
}
