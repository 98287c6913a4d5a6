package pgframe

import (
	"encoding/binary"
	"fmt"

	"github.com/stackcopy/stackcopy/internal/framekit"
)

// Framer follows one session, both directions. Client and Server may run
// on two goroutines at once: they share one mutex (a call frames a whole
// chunk under it), and the counters are published atomically at the end of
// each call for Requests, Answers and Err on any goroutine.
type Framer struct {
	sh       framekit.Shell // the lock, the counts and the error
	cli, srv side
	pending  ring // kinds of the client's requests the server has not taken yet
	early    ring // server events waiting for the request they answer
	model

	// Test hooks: trace sees every complete message (type byte, or 0 for a
	// startup-phase packet; its length on the wire); noModel keeps framing
	// but does not pair answers, for the framing-only oracle tests.
	trace   func(server bool, typ byte, n int64)
	noModel bool
}

// New returns a framer for one session (both directions), ready for the
// first bytes.
func New() *Framer {
	f := &Framer{}
	f.cli.need = 4 // the startup phase: a length, then a code
	f.cli.untyped = true
	f.srv.server, f.srv.untyped, f.srv.need = true, true, 1
	f.pending.limit, f.early.limit = MaxPending, MaxEarly
	f.pending.buf = make([]kind, 64)
	f.early.buf = make([]kind, 16)
	return f
}

// Client is shown the client's bytes, in order, in chunks of any size.
func (f *Framer) Client(p []byte) { f.feed(&f.cli, p) }

// Server is shown the server's bytes, in order, in chunks of any size.
func (f *Framer) Server(p []byte) { f.feed(&f.srv, p) }

// Requests is the number of complete client messages so far that call for
// an answer unit (see the package doc).
func (f *Framer) Requests() int { return f.sh.Requests() }

// Answers is the number of answer units completed so far.
func (f *Framer) Answers() int { return f.sh.Answers() }

// Err is nil while the framer follows the protocol; then it tells why not
// (wrapping one of the Err* values), and Requests and Answers no longer
// change.
func (f *Framer) Err() error { return f.sh.Err() }

func (f *Framer) feed(d *side, p []byte) {
	f.sh.Lock()
	defer f.sh.Unlock()
	if f.sh.Failed() {
		return
	}
	f.frame(d, p)
	f.sh.Publish()
	f.sh.PublishErr() // after the counts it comes with
}

// side is the framing state of one direction.
type side struct {
	server  bool
	untyped bool    // client: startup-phase packets; server: one-byte answers may come
	closed  bool    // client: after CancelRequest nothing may follow
	hdr     [9]byte // type byte, length and the first body bytes framing needs
	nhdr    int
	need    int   // header bytes to gather before the message can be judged
	remain  int   // body bytes still to skip
	off     int64 // bytes framed so far, for errors and traces
	start   int64 // where the current message starts
}

func (f *Framer) fail(d *side, sentinel error, format string, args ...any) {
	if f.sh.Failed() {
		return
	}
	who := "client"
	if d.server {
		who = "server"
	}
	f.sh.Stop(fmt.Errorf("%s message at byte %d: %s: %w", who, d.start, fmt.Sprintf(format, args...), sentinel))
}

func (f *Framer) frame(d *side, p []byte) {
	for len(p) > 0 && !f.sh.Failed() {
		if d.remain > 0 {
			n := min(len(p), d.remain)
			d.remain -= n
			d.off += int64(n)
			p = p[n:]
			if d.remain == 0 {
				f.end(d)
			}
			continue
		}
		if d.closed {
			f.fail(d, ErrMalformed, "bytes after CancelRequest")
			return
		}
		if d.nhdr == 0 {
			d.start = d.off
		}
		n := copy(d.hdr[d.nhdr:d.need], p)
		d.nhdr += n
		d.off += int64(n)
		p = p[n:]
		if d.nhdr == d.need {
			f.header(d)
		}
	}
}

// header judges the gathered header bytes: it fails, asks for more of
// them, or sets the body to skip (ending the message when it is empty).
func (f *Framer) header(d *side) {
	h := d.hdr[:d.nhdr]
	switch {
	case d.untyped && !d.server:
		f.startupHeader(d, h)
		return
	case d.untyped && d.nhdr == 1:
		switch h[0] {
		case 'N': // no encryption: the client goes on in plaintext
			f.emit(d, 0, evEnc)
			return
		case 'S', 'G':
			f.fail(d, ErrEncrypted, "server accepted encryption (%q)", h[0])
			return
		case 'E', 'R', 'v': // the startup answer has begun
			d.untyped = false
			d.need = 5
			return
		}
		f.fail(d, ErrMalformed, "byte %#x where a startup answer begins", h[0])
		return
	}
	typ := h[0]
	length := int32(binary.BigEndian.Uint32(h[1:5]))
	if length < 4 {
		f.fail(d, ErrMalformed, "type %q with length %d", typ, length)
		return
	}
	body := int(length) - 4
	if body > MaxMessage {
		f.fail(d, ErrTooLong, "type %q with length %d", typ, length)
		return
	}
	r := &clientRules[typ]
	if d.server {
		r = &serverRules[typ]
	}
	switch {
	case !r.ok:
		f.fail(d, ErrMalformed, "unknown message type %q", typ)
		return
	case r.unsupported:
		f.fail(d, ErrUnsupported, "message type %q", typ)
		return
	case body < int(r.min) || (r.exact && body != int(r.min)):
		f.fail(d, ErrMalformed, "type %q with a body of %d bytes", typ, body)
		return
	}
	if typ == 'R' && d.server && d.nhdr == 5 {
		d.need = 9 // the authentication code
		return
	}
	ev := r.ev
	if d.nhdr == 9 {
		var ok bool
		if ev, ok = f.authCode(d, binary.BigEndian.Uint32(h[5:9]), body); !ok {
			return
		}
		body -= 4
	}
	d.remain = body
	if body == 0 {
		f.emit(d, typ, ev)
	} else {
		d.hdr[0] = ev // kept for end; the type byte is in the trace only
		d.hdr[1] = typ
	}
}

// authCode judges an Authentication message by its code: whether it asks
// the client for a response (evAsk) or not (0).
func (f *Framer) authCode(d *side, code uint32, body int) (kind, bool) {
	exact := -1
	var ev kind
	switch code {
	case 0: // AuthenticationOk
		exact = 4
	case 3: // CleartextPassword
		exact, ev = 4, evAsk
	case 5: // MD5Password: a 4-byte salt
		exact, ev = 8, evAsk
	case 10, 11: // SASL, SASLContinue
		ev = evAsk
	case 12: // SASLFinal: AuthenticationOk follows without a client message
	case 2, 6, 7, 8, 9:
		// Kerberos V5 and SCM credentials are gone from PostgreSQL; GSS
		// and SSPI continue messages may or may not want a response
		// (only the GSSAPI library knows), so the pairing would guess.
		f.fail(d, ErrUnsupported, "authentication method %d", code)
		return 0, false
	default:
		f.fail(d, ErrMalformed, "unknown authentication code %d", code)
		return 0, false
	}
	if exact >= 0 && body != exact {
		f.fail(d, ErrMalformed, "authentication %d with a body of %d bytes", code, body)
		return 0, false
	}
	return ev, true
}

// startupHeader judges a startup-phase packet: its length, then its code.
func (f *Framer) startupHeader(d *side, h []byte) {
	length := binary.BigEndian.Uint32(h[:4])
	if length < 8 || length > 4+MaxStartup {
		f.fail(d, ErrMalformed, "startup packet length %d", length)
		return
	}
	if d.nhdr == 4 {
		d.need = 8
		return
	}
	code := binary.BigEndian.Uint32(h[4:8])
	var ev kind
	switch {
	case code == codeSSL || code == codeGSSENC:
		ev = kEnc
	case code == codeCancel:
		if length < 16 || length > 4+264 { // 3.2 keys are 4 to 256 bytes
			f.fail(d, ErrMalformed, "CancelRequest of %d bytes", length)
			return
		}
		ev = kCancel
	case code>>16 == 3:
		ev = kStartup
	case code>>16 < 3:
		f.fail(d, ErrUnsupported, "protocol version %d.%d", code>>16, code&0xffff)
		return
	default:
		f.fail(d, ErrMalformed, "unknown startup code %d", code)
		return
	}
	d.remain = int(length) - 8
	if d.remain == 0 {
		f.emit(d, 0, ev)
	} else {
		d.hdr[0], d.hdr[1] = ev, 0
	}
}

// end finishes the message whose body was just skipped.
func (f *Framer) end(d *side) { f.emit(d, d.hdr[1], d.hdr[0]) }

// emit finishes a message: typ is its type byte (0 for startup-phase
// packets and one-byte answers), ev what it means to the model.
func (f *Framer) emit(d *side, typ byte, ev kind) {
	d.nhdr = 0
	switch {
	case !d.server && d.untyped:
		d.need = 4
	case d.server && d.untyped:
		d.need = 1
	default:
		d.need = 5
	}
	if f.trace != nil {
		t := typ
		if d.server && d.untyped {
			t = 'N'
		}
		f.trace(d.server, t, d.off-d.start)
	}
	if d.server {
		if ev != 0 && !f.noModel {
			if !f.early.push(ev) {
				f.fail(d, ErrOverflow, "more than %d answers ahead of their requests", MaxEarly)
				return
			}
			f.run(d)
		}
		return
	}
	switch ev {
	case kNone:
		return
	case kCancel:
		d.closed = true
		return
	case kStartup:
		d.untyped, d.need = false, 5
	}
	if f.noModel {
		return
	}
	if !f.pending.push(ev) {
		f.fail(d, ErrOverflow, "more than %d requests waiting for answers", MaxPending)
		return
	}
	if ev != kCopyData {
		f.sh.Requested++
	}
	f.run(d)
}

// rule is what a message type may be in one direction.
type rule struct {
	ok, exact   bool
	unsupported bool
	min         int32 // smallest body (or the only size, with exact)
	ev          kind  // what the message means to the model
}

var clientRules, serverRules [256]rule

func init() {
	c := func(t byte, ev kind, min int32, exact bool) {
		clientRules[t] = rule{ok: true, ev: ev, min: min, exact: exact}
	}
	c('B', kBind, 0, false)
	c('C', kClose, 2, false)
	c('D', kDescribe, 2, false)
	c('E', kExecute, 0, false)
	c('F', kFunc, 8, false)
	c('H', kNone, 0, true) // Flush: no answer of its own
	c('P', kParse, 0, false)
	c('Q', kQuery, 0, false)
	c('S', kSync, 0, true)
	c('X', kNone, 0, true) // Terminate
	c('c', kCopyDone, 0, true)
	c('d', kCopyData, 0, false)
	c('f', kCopyFail, 0, false)
	c('p', kAuth, 0, false)

	s := func(t byte, min int32, exact bool) {
		ev := kNone
		switch t {
		case '1', '2', '3', 'T', 'n', 'C', 'I', 's', 'E', 'Z', 'G':
			ev = kind(t)
		}
		serverRules[t] = rule{ok: true, ev: ev, min: min, exact: exact}
	}
	for _, t := range []byte("123nIsc") {
		s(t, 0, true)
	}
	s('Z', 1, true)
	s('K', 8, false)
	s('R', 4, false)
	s('v', 8, false)
	s('D', 2, false)
	s('T', 2, false)
	s('V', 4, false)
	for _, t := range []byte("ACEGHNSdt") {
		s(t, 0, false)
	}
	// CopyBothResponse: streaming replication, a two-way stream with no
	// request/answer pairing.
	serverRules['W'] = rule{ok: true, unsupported: true}
}

// kind is a client request waiting in the pending queue, or a server event
// (a type byte, or evEnc/evAsk) waiting in the early queue.
type kind = byte

const (
	kNone kind = iota
	kEnc       // SSLRequest, GSSENCRequest
	kStartup
	kAuth // PasswordMessage, SASLInitialResponse, SASLResponse
	kQuery
	kFunc
	kParse
	kBind
	kDescribe
	kExecute
	kClose
	kSync
	kCopyDone
	kCopyFail
	kCancel   // not queued: it ends the client's side
	kCopyData // queued, but not a unit: it tells that the server has read data of a COPY

	evEnc = 0x10 // the one-byte 'N' answer to SSLRequest or GSSENCRequest
	evAsk = 0x11 // an Authentication request the client must answer
)

// ring is a FIFO of kinds that grows by doubling up to limit.
type ring struct {
	buf     []kind // len is a power of two
	head, n int
	limit   int
}

func (r *ring) push(k kind) bool {
	if r.n == len(r.buf) {
		if r.n >= r.limit {
			return false
		}
		nb := make([]kind, 2*len(r.buf))
		for i := range r.n {
			nb[i] = r.buf[(r.head+i)&(len(r.buf)-1)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = k
	r.n++
	return true
}

func (r *ring) peek() kind { return r.buf[r.head] }

func (r *ring) pop() kind {
	k := r.buf[r.head]
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	return k
}

// model is what the framer knows of the server's progress through the
// client's messages.
type model struct {
	cur     kind // the request being answered, kNone between requests
	inQuery bool // a Query or FunctionCall runs: the server reads no new message before ReadyForQuery
	copyIn  bool // COPY FROM STDIN: the server reads CopyData until CopyDone or CopyFail
	copyExt bool // that COPY was started by Execute
	// copyRead: the server has read CopyData of that COPY. Before that it
	// cannot have failed the COPY, since only what it reads can fail it
	// (a Sync sent right after Execute is read first, and ignored).
	copyRead bool
	discard  bool // after an error in the extended protocol: messages are skipped until Sync
}

// run advances the model as far as the messages seen so far allow. The
// result does not depend on how client and server calls interleave: server
// events wait in early until the request they answer is pending, and
// requests are taken only when the server would read them.
func (f *Framer) run(d *side) {
	for !f.sh.Failed() {
		// The server reads a new message between requests, and CopyData
		// (and what ends it) during COPY FROM STDIN, even inside a Query.
		if f.cur == kNone && (f.copyIn || !f.inQuery) && f.pending.n > 0 {
			k := f.pending.peek()
			switch {
			case f.copyIn:
				switch k {
				case kSync: // ignored during COPY FROM STDIN
					f.pending.pop()
					f.sh.Answered++
					continue
				case kCopyData:
					f.pending.pop()
					f.copyRead = true
					continue
				}
				// CopyDone or CopyFail: the server's answer tells
				// whether it read it or failed the COPY first.
			case f.discard:
				f.pending.pop()
				switch k {
				case kSync:
					f.discard, f.cur = false, kSync
				case kCopyData:
				default:
					f.sh.Answered++
				}
				continue
			default:
				f.pending.pop()
				switch k {
				case kCopyData: // ignored outside COPY
				case kCopyDone, kCopyFail:
					f.sh.Answered++
				case kQuery, kFunc:
					f.cur, f.inQuery = k, true
				default:
					f.cur = k
				}
				continue
			}
		}
		if f.early.n == 0 {
			return
		}
		if !f.apply(d, f.early.peek()) {
			return
		}
		f.early.pop()
	}
}

// apply moves the model by server event ev; false means ev must wait for
// a request the client has not shown yet.
func (f *Framer) apply(d *side, ev kind) bool {
	if f.copyIn {
		switch ev {
		case 'C': // the COPY ended: the server has read CopyDone
			if f.pending.n == 0 {
				return false
			}
			if k := f.pending.pop(); k != kCopyDone {
				f.seqFail(ev, k)
				return true
			}
			f.copyIn = false
			if f.copyExt {
				f.sh.Answered++
			} else {
				f.cur = kCopyDone // the Query goes on: done at CopyInResponse or ReadyForQuery
			}
		case 'E':
			// The COPY failed on a message the server read: CopyData
			// (then CopyDone or CopyFail, if they follow, are read
			// after the error and skipped, completing at the same
			// moment as if the error had answered them), or else the
			// next message, which the error answers.
			if !f.copyRead {
				if f.pending.n == 0 {
					return false
				}
				f.pending.pop()
				if f.copyExt {
					f.sh.Answered++
				} else {
					f.cur = kCopyDone // completes at ReadyForQuery
				}
			}
			f.copyIn = false
			f.discard = f.copyExt
		default:
			f.seqFail(ev, kNone)
		}
		return true
	}
	switch f.cur {
	case kNone:
		if !f.inQuery {
			return false
		}
		// Between units of a Query: after its COPY FROM STDIN ended.
		switch ev {
		case 'T', 'C', 'I', 'E':
		case 'G':
			f.copyIn, f.copyExt, f.copyRead = true, false, false
		case 'Z':
			f.inQuery = false
		default:
			f.seqFail(ev, f.cur)
		}
	case kEnc:
		f.answer(d, ev, ev == evEnc || ev == 'E', false)
	case kStartup, kAuth:
		f.answer(d, ev, ev == evAsk || ev == 'Z' || ev == 'E', false)
	case kQuery, kCopyDone:
		switch ev {
		case 'T', 'C', 'I', 'E':
		case 'G':
			f.done()
			f.copyIn, f.copyExt, f.copyRead = true, false, false
		case 'Z':
			f.done()
			f.inQuery = false
		default:
			f.seqFail(ev, f.cur)
		}
	case kFunc:
		switch ev {
		case 'E':
		case 'Z':
			f.done()
			f.inQuery = false
		default:
			f.seqFail(ev, f.cur)
		}
	case kSync:
		switch ev {
		case 'E': // COMMIT of the implicit transaction failed; ReadyForQuery follows
		case 'Z':
			f.done()
		default:
			f.seqFail(ev, f.cur)
		}
	case kParse:
		f.answer(d, ev, ev == '1', true)
	case kBind:
		f.answer(d, ev, ev == '2', true)
	case kClose:
		f.answer(d, ev, ev == '3', true)
	case kDescribe:
		f.answer(d, ev, ev == 'T' || ev == 'n', true)
	case kExecute:
		if ev == 'G' {
			f.done()
			f.copyIn, f.copyExt, f.copyRead = true, true, false
			return true
		}
		f.answer(d, ev, ev == 'C' || ev == 'I' || ev == 's', true)
	default:
		f.seqFail(ev, f.cur)
	}
	return true
}

// answer completes the current request if ev answers it; in the extended
// protocol an ErrorResponse completes it too and starts discarding.
func (f *Framer) answer(d *side, ev kind, ok, extended bool) {
	switch {
	case ok:
		f.done()
	case extended && ev == 'E':
		f.done()
		f.discard = true
	default:
		f.seqFail(ev, f.cur)
	}
}

func (f *Framer) done() {
	f.sh.Answered++
	f.cur = kNone
}

var kindNames = [...]string{
	kNone: "no request", kEnc: "SSLRequest/GSSENCRequest", kStartup: "StartupMessage",
	kAuth: "PasswordMessage", kQuery: "Query", kFunc: "FunctionCall", kParse: "Parse",
	kBind: "Bind", kDescribe: "Describe", kExecute: "Execute", kClose: "Close",
	kSync: "Sync", kCopyDone: "CopyDone", kCopyFail: "CopyFail", kCancel: "CancelRequest",
	kCopyData: "CopyData",
}

// seqFail fails on server event ev. It may run from Client (an event
// that waited for its request), so the offset is where the server side is.
func (f *Framer) seqFail(ev, pending kind) {
	d := &f.srv
	name := fmt.Sprintf("%q", ev)
	switch ev {
	case evEnc:
		name = "'N' (no encryption)"
	case evAsk:
		name = "an authentication request"
	}
	if f.copyIn {
		f.fail(d, ErrSequence, "%s during COPY FROM STDIN (next client message: %s)", name, kindNames[pending])
		return
	}
	f.fail(d, ErrSequence, "%s while the server answers %s", name, kindNames[pending])
}
