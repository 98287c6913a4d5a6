// Package h2frame follows both directions of a cleartext HTTP/2 (h2c)
// session and counts answer units, so the replayer can tell when the target
// has answered a turn by HTTP/2 events instead of byte counts: a target
// interleaves streams and frames differently from the capture, so byte
// counts never match.
//
// It owns the HTTP/2 framing of a session: the client preface (or an h2c
// upgrade request answered by 101 Switching Protocols), then frames in both
// directions, split anywhere. It implements the framer contract (New,
// Client, Server, Requests, Answers, Err, Detect) and also keeps the
// flow-control windows both ways (see Flow control).
//
// # Answer units
//
// An answer unit is one of these; Answers counts those completed, Requests
// the client messages that call for one:
//
//   - The server's SETTINGS frames (not ACK). The first is the server's
//     connection preface, which the client's preface calls for (one
//     request). Later ones are server-initiated units without a request: the
//     client's SETTINGS ACK for them must wait for them, as a SETTINGS ACK
//     with nothing to acknowledge is a connection error for nghttp2 and
//     x/net/http2. Answers may exceed Requests by their number.
//   - Each client SETTINGS frame (not ACK), answered by a server SETTINGS
//     ACK. An ACK answers every client SETTINGS sent before it: servers such
//     as x/net/http2 send one ACK for several SETTINGS that arrived
//     together (RFC 9113 wants one each), and counting one per ACK would
//     leave the target forever one short. An ACK with no client SETTINGS
//     outstanding is not counted.
//   - Each client PING (not ACK), answered by a server PING ACK. Server
//     PINGs are not units (keep-alives whose timing is the target's), and a
//     client PING ACK to one needs nothing: an unexpected PING ACK is
//     ignored by servers.
//   - Each client stream, when it is closed (RFC 9113 §5.1): the client
//     and the server have both sent END_STREAM (on DATA, or on HEADERS at
//     the end of its header block), or either side sent RST_STREAM. So a
//     finished request is answered when the server ends its response or
//     resets it. A server that ends its response before the client
//     finished the request (an early 413) completes the unit only when the
//     client ends or resets the stream: the client's further DATA does not
//     wait for an early answer that the target, if it reads the whole
//     request first, can only give after that DATA. A server RST_STREAM
//     closes the stream at once, finished or not (a refused stream is
//     answered); so does a client RST_STREAM, which costs no wait.
//   - A server GOAWAY closes, and so answers, every open client stream above
//     its last stream id, and every client stream opened after it above that
//     id: the server will never process them (RFC 9113 §6.8). A GOAWAY with
//     an error code other than NO_ERROR ends the connection: it answers every
//     open stream and every outstanding SETTINGS and PING.
//   - The h2c upgrade request counts two requests: the server's "101
//     Switching Protocols" (one unit), and its response on stream 1, which
//     is a client stream that the client has ended.
//
// WINDOW_UPDATE, PRIORITY, PRIORITY_UPDATE, client GOAWAY, pushed streams
// (PUSH_PROMISE and the even-numbered streams) and unknown frame types are
// not units; unknown types are skipped, as RFC 9113 §5.5 says.
//
// # Flow control
//
// The framer keeps the windows the target granted for the client's DATA:
// the initial window from the target's SETTINGS_INITIAL_WINDOW_SIZE (a
// change applies to every stream, RFC 9113 §6.9.2), plus its WINDOW_UPDATE
// frames, minus the lengths of the client's DATA frames (padding included),
// charged when a DATA frame's header is shown to Client. A window may go
// negative: the framer reports what the client sent, it does not enforce.
// SendAllowance is what a DATA frame may carry now, and NextClientData
// finds the DATA frames in client bytes before they are shown, so a
// replayer can hold one back until the target's windows have room.
//
// It keeps the client's windows for the target's DATA the same way (its
// SETTINGS_INITIAL_WINDOW_SIZE and WINDOW_UPDATEs, minus the target's
// DATA; RecvWindow). When the target's DATA takes one below half its
// level, WindowUpdates makes the WINDOW_UPDATE frames a client that reads
// as it goes would send, at a client frame boundary (flow.go).
//
// # Not followed: Err
//
// Err reports why the framer stopped following; Requests and Answers then
// stop changing. It fails on client bytes that are neither the preface nor
// an h2c upgrade request (ErrNotHTTP2); a frame that breaks RFC 9113's
// framing rules, which the peer would answer with a connection error
// (ErrFrame); a frame on a stream that cannot have it (ErrProtocol: a
// server frame on a client stream the client has not opened, client stream
// ids not increasing, a client PUSH_PROMISE, a server whose first frame is
// not SETTINGS); a window over 2^31-1 (ErrFlowControl); an upgrade request
// with a body that is not framed by Content-Length, or an HTTP/1.1 header
// block over MaxUpgradeHeader (ErrUpgrade); a server that answers the
// upgrade with anything but 101 (ErrNoUpgrade); more than MaxStreams open
// client streams (ErrTooManyStreams).
//
// # Cost and concurrency
//
// Push-style: no goroutines, no blocking beyond a mutex that Client and
// Server share, no allocation in steady state. A direction's state is a
// frame header and at most 8 bytes of a payload's fixed fields; DATA is
// counted, never stored, and header block fragments are skipped (they are
// handed to the framer as slices of the input, where HPACK decoding with
// golang.org/x/net/http2/hpack can go when responses are compared). The
// open streams live in a table that grows to the largest number open at
// once. Client and Server may run on two goroutines at once; Requests,
// Answers and Err read values published at the end of each call, from any
// goroutine. Client must be shown bytes before they are sent: a server
// frame on a stream the framer has not seen the client open is an error.
//
// h2frame imports only the standard library.
package h2frame

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// MaxStreams bounds the client streams that are open at once (not yet
// closed in the sense of the answer units), which bounds the framer's
// memory. Servers allow 100 to 250 concurrent streams.
const MaxStreams = 4096

// Why a Framer stopped following the session, as returned by Err (wrapped
// with the details).
var (
	ErrNotHTTP2       = errors.New("h2frame: not an HTTP/2 client preface or h2c upgrade request")
	ErrFrame          = errors.New("h2frame: frame breaks HTTP/2 framing")
	ErrProtocol       = errors.New("h2frame: frame on a stream that cannot have it")
	ErrFlowControl    = errors.New("h2frame: flow-control window over 2^31-1")
	ErrUpgrade        = errors.New("h2frame: h2c upgrade not followed")
	ErrNoUpgrade      = errors.New("h2frame: server did not switch to HTTP/2")
	ErrTooManyStreams = errors.New("h2frame: too many open streams")
)

// Where a direction is.
type phase uint8

const (
	phStart   phase = iota // nothing yet: the first bytes decide
	phHTTP1                // an HTTP/1.1 header block (the upgrade request or its answer)
	phH1Body               // the upgrade request's body
	phPreface              // the client preface
	phFrames               // frames
	phFailed               // not followed any more
)

// direction is one side's parsing state.
type direction struct {
	ph      phase
	r       reader
	h1      h1
	body    uint64 // upgrade request body bytes to go
	matched int    // client preface bytes matched
	frames  bool   // the first frame was read (server: it must be SETTINGS; client: it was complete)
}

// Framer follows one HTTP/2 session, both directions. Create it with New.
type Framer struct {
	mu       sync.Mutex
	cli, srv direction

	upgrade    bool // the client sent an h2c upgrade request
	switched   bool // the server answered it with 101
	streams    table
	maxClient  uint32 // the highest client stream id opened
	goaway     bool   // the server sent GOAWAY
	goawayLast uint32 // the lowest last stream id of its GOAWAYs

	requests, answers int
	settingsSent      int // client SETTINGS (not ACK)
	settingsAcked     int // of those, acknowledged
	pingsSent         int // client PINGs (not ACK)
	pingsAcked        int

	initialWindow int64 // the target's SETTINGS_INITIAL_WINDOW_SIZE
	connWindow    int64 // the target's connection window for client DATA
	srvSettings   bool  // the target's first SETTINGS frame came

	// The windows the client granted for the target's DATA: its
	// SETTINGS_INITIAL_WINDOW_SIZE, and the connection's window and the
	// largest its WINDOW_UPDATEs left it at.
	recvInitial, recvConn, recvConnLevel int64
	// needUpdate: the target's DATA took a window below half its level
	// (see WindowUpdates).
	needUpdate atomic.Bool

	// Published at the end of each Client and Server call.
	pubRequests, pubAnswers atomic.Int64
	failure                 atomic.Pointer[failure]
}

type failure struct{ err error }

// New returns a framer for one session (both directions), ready for the
// first bytes.
func New() *Framer {
	f := &Framer{initialWindow: 65535, connWindow: 65535, recvInitial: 65535, recvConn: 65535, recvConnLevel: 65535}
	f.streams.grow()
	return f
}

// Client is shown the client's bytes, in order, in chunks of any size,
// before they are sent.
func (f *Framer) Client(p []byte) {
	f.mu.Lock()
	f.feed(&f.cli, true, p)
	f.publish()
	f.mu.Unlock()
}

// Server is shown the server's bytes, in order, in chunks of any size.
func (f *Framer) Server(p []byte) {
	f.mu.Lock()
	f.feed(&f.srv, false, p)
	f.publish()
	f.mu.Unlock()
}

func (f *Framer) publish() {
	if f.failure.Load() != nil {
		return
	}
	f.pubRequests.Store(int64(f.requests))
	f.pubAnswers.Store(int64(f.answers))
}

// Requests is the number of complete client messages so far that call for
// an answer unit (see the package doc).
func (f *Framer) Requests() int { return int(f.pubRequests.Load()) }

// Answers is the number of answer units completed so far.
func (f *Framer) Answers() int { return int(f.pubAnswers.Load()) }

// Err is nil while the framer follows the session; once it cannot, it
// tells why, and Requests and Answers stop changing.
func (f *Framer) Err() error {
	if e := f.failure.Load(); e != nil {
		return e.err
	}
	return nil
}

// ConnSendWindow is how many bytes of DATA the target allows the client to
// send on the connection now: 65535, plus the target's WINDOW_UPDATEs of
// stream 0, minus the client's DATA frames so far.
func (f *Framer) ConnSendWindow() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connWindow
}

// SendWindow is how many bytes of DATA the target allows the client to
// send on stream id now (the stream's window only; the connection window
// applies too). A stream the client has not opened yet gets the target's
// initial window; a stream that is closed, or that the client has ended,
// has none. SendWindow(0) is ConnSendWindow.
func (f *Framer) SendWindow(id uint32) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == 0 {
		return f.connWindow
	}
	if id&1 == 1 && id > f.maxClient {
		return f.initialWindow
	}
	if i := f.streams.find(id); i >= 0 && !f.streams.slots[i].clientEnded {
		return f.initialWindow + f.streams.slots[i].windowChange
	}
	return 0
}

func (f *Framer) fail(d *direction, err error) {
	d.ph = phFailed
	f.cli.ph, f.srv.ph = phFailed, phFailed
	if f.failure.Load() == nil {
		// Published first: counts stop changing from here.
		f.pubRequests.Store(int64(f.requests))
		f.pubAnswers.Store(int64(f.answers))
		f.failure.Store(&failure{err})
	}
}

func side(client bool) string {
	if client {
		return "client"
	}
	return "server"
}

// feed runs p through one direction.
func (f *Framer) feed(d *direction, client bool, p []byte) {
	for len(p) > 0 || d.ph == phFrames {
		switch d.ph {
		case phStart:
			f.start(d, client, p[0])
		case phHTTP1:
			var notHTTP error
			if client {
				notHTTP = ErrNotHTTP2
			}
			n, err := d.h1.add(p, notHTTP)
			p = p[n:]
			if err != nil {
				f.fail(d, fmt.Errorf("%s HTTP/1.1 header block: %w", side(client), err))
				return
			}
			if d.h1.done {
				if client {
					f.upgradeRequest(d)
				} else {
					f.upgradeResponse(d)
				}
				d.h1 = h1{}
			}
		case phH1Body:
			k := uint64(len(p))
			if k > d.body {
				k = d.body
			}
			d.body -= k
			p = p[k:]
			if d.body == 0 {
				d.ph = phPreface
			}
		case phPreface:
			for len(p) > 0 && d.matched < len(clientPreface) {
				if p[0] != clientPreface[d.matched] {
					if f.upgrade || d.matched >= len("PRI * HTTP/2.0\r\n\r\n") {
						f.fail(d, fmt.Errorf("client preface: %w", ErrNotHTTP2))
						return
					}
					// Not the preface: maybe an h2c upgrade request,
					// which starts with the bytes matched so far
					// ("P" of POST).
					d.h1.add([]byte(clientPreface[:d.matched]), nil)
					d.matched = 0
					d.ph = phHTTP1
					break
				}
				d.matched++
				p = p[1:]
			}
			if d.matched == len(clientPreface) {
				d.ph = phFrames
				f.requests++ // the server's connection preface
			}
		case phFrames:
			n, ev := d.r.next(p)
			p = p[n:]
			switch ev {
			case evNeed:
				return
			case evError:
				f.fail(d, fmt.Errorf("%s frame type %d on stream %d: %s: %w", side(client), d.r.h.typ, d.r.h.stream, d.r.why, ErrFrame))
				return
			case evHeader:
				if client {
					f.clientHeader(d)
				} else {
					f.serverHeader(d)
				}
			case evFragment:
				// A header block fragment (HEADERS, PUSH_PROMISE,
				// CONTINUATION) of stream d.r.h.stream: HPACK decoding
				// would go here. Counting answers needs none.
			case evFrame:
				if client {
					f.clientFrame(d)
				} else {
					f.serverFrame(d)
				}
			}
		default: // phFailed
			return
		}
	}
}

// start decides what a direction's first byte begins.
func (f *Framer) start(d *direction, client bool, c byte) {
	switch {
	case client:
		d.ph = phPreface // or else an upgrade request: see phPreface
	case c == 'H':
		// A frame header starting with 'H' would announce a payload
		// over 4.5 MB: this is an HTTP/1.1 answer, to an upgrade.
		d.ph = phHTTP1
	case f.upgrade:
		f.fail(d, fmt.Errorf("server sent frames before answering the h2c upgrade: %w", ErrNoUpgrade))
	default:
		d.ph = phFrames
	}
}

// upgradeRequest takes the client's complete HTTP/1.1 header block.
func (f *Framer) upgradeRequest(d *direction) {
	req, err := parseUpgradeRequest(d.h1.buf)
	if err != nil {
		f.fail(d, fmt.Errorf("client HTTP/1.1 request: %w", err))
		return
	}
	if f.srv.ph == phFrames {
		f.fail(d, fmt.Errorf("server sent frames before answering the h2c upgrade: %w", ErrNoUpgrade))
		return
	}
	f.upgrade = true
	// Stream 1 is the upgraded request, which the client has ended
	// (RFC 7540 §3.2: its body is sent before any frame).
	f.maxClient = 1
	i := f.streams.add(1)
	f.streams.slots[i].clientEnded = true
	f.requests += 2 // the 101 and stream 1's response
	d.body = req.body
	d.ph = phH1Body
	if d.body == 0 {
		d.ph = phPreface
	}
}

// upgradeResponse takes a complete HTTP/1.1 header block from the server.
func (f *Framer) upgradeResponse(d *direction) {
	status := statusOf(lines(d.h1.buf, func([]byte) {}))
	switch {
	case !f.upgrade || f.switched:
		f.fail(d, fmt.Errorf("server answered in HTTP/1.1 (status %d) without an upgrade to answer: %w", status, ErrNoUpgrade))
	case status == 101:
		f.switched = true
		f.answers++
		d.ph = phFrames
	case status >= 100 && status <= 199:
		// Interim (100 Continue): the 101 or a refusal follows.
		d.ph = phHTTP1
	default:
		f.fail(d, fmt.Errorf("server answered the h2c upgrade with status %d: %w", status, ErrNoUpgrade))
	}
}

// clientHeader acts on a client frame header: streams open and DATA is
// charged to the windows here, as the frame leaves.
func (f *Framer) clientHeader(d *direction) {
	h := d.r.h
	switch h.typ {
	case typeHeaders:
		if h.stream&1 == 0 {
			f.fail(d, fmt.Errorf("client HEADERS on even stream %d: %w", h.stream, ErrProtocol))
			return
		}
		if h.stream <= f.maxClient {
			return // trailers, or a stream that is closed
		}
		f.maxClient = h.stream
		if f.goaway && h.stream > f.goawayLast {
			// The server will ignore it: answered at once.
			f.requests++
			f.answers++
			return
		}
		if f.streams.add(h.stream) < 0 {
			f.fail(d, fmt.Errorf("client stream %d: %w", h.stream, ErrTooManyStreams))
		}
	case typeData:
		if h.stream&1 == 1 && h.stream > f.maxClient {
			f.fail(d, fmt.Errorf("client DATA on idle stream %d: %w", h.stream, ErrProtocol))
			return
		}
		// Flow control counts the whole payload, padding included,
		// also on closed streams (RFC 9113 §6.9).
		f.connWindow -= int64(h.length)
		if i := f.streams.find(h.stream); i >= 0 && !f.streams.slots[i].clientEnded {
			f.streams.slots[i].windowChange -= int64(h.length)
		}
	case typePushPromise:
		f.fail(d, fmt.Errorf("client PUSH_PROMISE: %w", ErrProtocol))
	}
}

// clientFrame acts on a complete client frame.
func (f *Framer) clientFrame(d *direction) {
	h := d.r.h
	d.frames = true // after the preface's SETTINGS: frames of the client's own may follow
	switch h.typ {
	case typeHeaders, typeContinuation:
		if d.r.blockEnded && d.r.blockEndStream && !d.r.blockPush {
			f.clientEnd(h.stream)
		}
	case typeData:
		if h.has(flagEndStream) {
			f.clientEnd(h.stream)
		}
	case typeRSTStream:
		if h.stream&1 == 1 && h.stream > f.maxClient {
			f.fail(d, fmt.Errorf("client RST_STREAM on idle stream %d: %w", h.stream, ErrProtocol))
			return
		}
		if i := f.streams.find(h.stream); i >= 0 {
			f.closeStream(i)
		}
	case typeSettings:
		if !h.has(flagAck) {
			f.requests++
			f.settingsSent++
			if d.r.settingsSeen {
				f.recvInitial = int64(d.r.iws)
			}
		}
	case typePing:
		if !h.has(flagAck) {
			f.requests++
			f.pingsSent++
		}
	case typeWindowUpdate:
		f.clientWindowUpdate(h.stream, int64(d.r.incr))
	}
}

// clientWindowUpdate is a client WINDOW_UPDATE, captured or synthesized:
// the target may send that much more DATA.
func (f *Framer) clientWindowUpdate(id uint32, incr int64) {
	if id == 0 {
		f.recvConn += incr
		f.recvConnLevel = max(f.recvConnLevel, f.recvConn)
		return
	}
	if i := f.streams.find(id); i >= 0 {
		s := &f.streams.slots[i]
		s.recvChange += incr
		s.recvLevel = max(s.recvLevel, s.recvChange)
	}
}

// clientEnd is the client's END_STREAM on a stream.
func (f *Framer) clientEnd(id uint32) {
	i := f.streams.find(id)
	if i < 0 || f.streams.slots[i].clientEnded {
		return
	}
	s := &f.streams.slots[i]
	s.clientEnded = true
	f.requests++
	if s.serverEnded {
		f.answers++
		f.streams.remove(i)
	}
}

// closeStream closes the stream in slot i by a reset: its unit completes,
// and counts as a request too if the client had not ended it.
func (f *Framer) closeStream(i int) {
	if !f.streams.slots[i].clientEnded {
		f.requests++
	}
	f.answers++
	f.streams.remove(i)
}

// serverHeader acts on a server frame header.
func (f *Framer) serverHeader(d *direction) {
	h := d.r.h
	if !d.frames {
		d.frames = true
		if h.typ != typeSettings || h.has(flagAck) {
			f.fail(d, fmt.Errorf("server's first frame is type %d, not SETTINGS: %w", h.typ, ErrProtocol))
			return
		}
	}
	switch h.typ {
	case typeHeaders, typeData, typeRSTStream, typeWindowUpdate, typePushPromise:
		// Only PRIORITY may name an idle stream (RFC 9113 §5.1).
		if h.stream&1 == 1 && h.stream > f.maxClient {
			f.fail(d, fmt.Errorf("server frame type %d on stream %d, which the client has not opened: %w", h.typ, h.stream, ErrProtocol))
			return
		}
	}
	if h.typ == typeData {
		f.serverData(h)
	}
}

// serverData charges a target DATA frame to the client's receive windows,
// padding included, as its header arrives.
func (f *Framer) serverData(h frameHeader) {
	n := int64(h.length)
	f.recvConn -= n
	low := f.recvConn < f.recvConnLevel/2
	if i := f.streams.find(h.stream); i >= 0 {
		s := &f.streams.slots[i]
		s.recvChange -= n
		// A stream the target ends with this frame needs no more.
		low = low || (!h.has(flagEndStream) && f.streamLow(s))
	}
	if low {
		f.needUpdate.Store(true)
	}
}

// streamLow reports whether the target's DATA took stream s's receive
// window below half its level, while the target still has to send.
func (f *Framer) streamLow(s *stream) bool {
	level := f.recvInitial + max(s.recvLevel, 0)
	return !s.serverEnded && level > 0 && f.recvInitial+s.recvChange < level/2
}

// serverFrame acts on a complete server frame.
func (f *Framer) serverFrame(d *direction) {
	h := d.r.h
	switch h.typ {
	case typeHeaders, typeContinuation:
		if d.r.blockEnded && d.r.blockEndStream && !d.r.blockPush {
			f.serverEnd(h.stream)
		}
	case typeData:
		if h.has(flagEndStream) {
			f.serverEnd(h.stream)
		}
	case typeRSTStream:
		if i := f.streams.find(h.stream); i >= 0 {
			f.closeStream(i)
		}
	case typeSettings:
		if h.has(flagAck) {
			if f.settingsAcked < f.settingsSent {
				f.answers += f.settingsSent - f.settingsAcked
				f.settingsAcked = f.settingsSent
			}
			return
		}
		f.answers++
		f.srvSettings = true
		if d.r.settingsSeen {
			f.initialWindow = int64(d.r.iws)
			bad := false
			f.streams.removeIf(func(s *stream) bool {
				bad = bad || f.initialWindow+s.windowChange > maxWindow
				return false
			})
			if bad {
				f.fail(d, fmt.Errorf("server SETTINGS_INITIAL_WINDOW_SIZE %d: %w", d.r.iws, ErrFlowControl))
			}
		}
	case typePing:
		if h.has(flagAck) && f.pingsAcked < f.pingsSent {
			f.pingsAcked++
			f.answers++
		}
	case typeWindowUpdate:
		if h.stream == 0 {
			f.connWindow += int64(d.r.incr)
			if f.connWindow > maxWindow {
				f.fail(d, fmt.Errorf("server WINDOW_UPDATE of the connection: %w", ErrFlowControl))
			}
			return
		}
		if i := f.streams.find(h.stream); i >= 0 {
			s := &f.streams.slots[i]
			s.windowChange += int64(d.r.incr)
			if f.initialWindow+s.windowChange > maxWindow {
				f.fail(d, fmt.Errorf("server WINDOW_UPDATE of stream %d: %w", h.stream, ErrFlowControl))
			}
		}
	case typeGoAway:
		f.serverGoAway(d.r.goLast, d.r.goCode)
	}
}

// serverEnd is the server's END_STREAM on a stream.
func (f *Framer) serverEnd(id uint32) {
	i := f.streams.find(id)
	if i < 0 {
		return
	}
	s := &f.streams.slots[i]
	s.serverEnded = true
	if s.clientEnded {
		f.answers++
		f.streams.remove(i)
	}
}

func (f *Framer) serverGoAway(last, code uint32) {
	if !f.goaway || last < f.goawayLast {
		f.goaway, f.goawayLast = true, last
	}
	all := code != 0 // NO_ERROR is 0
	f.streams.removeIf(func(s *stream) bool {
		if !all && s.id <= f.goawayLast {
			return false
		}
		if !s.clientEnded {
			f.requests++
		}
		f.answers++
		return true
	})
	if all {
		f.answers += f.settingsSent - f.settingsAcked + f.pingsSent - f.pingsAcked
		f.settingsAcked, f.pingsAcked = f.settingsSent, f.pingsSent
	}
}

// Detect reports whether the first client bytes of a session (maybe only a
// few) look like HTTP/2 cleartext: a prefix of the client preface (so "P"
// is enough), or an HTTP/1.1 request line followed by an Upgrade field
// naming h2c among the fields that are in.
func Detect(first []byte) bool {
	n := min(len(first), len(clientPreface))
	if n > 0 && string(first[:n]) == clientPreface[:n] {
		return true
	}
	if end := BlockEnd(first); end >= 0 {
		first = first[:end]
	}
	found := false
	l := lines(first, func(l []byte) {
		if name, value, ok := field(l); ok && equalFold(name, "upgrade") && hasToken(value, "h2c") {
			found = true
		}
	})
	// lines hands out a last line that has not ended yet too; an Upgrade
	// field cut short ("h2" of "h2c") only sniffs false.
	return found && requestLine(l)
}
