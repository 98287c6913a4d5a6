// Package httpframe finds where HTTP/1.x messages end in a byte stream, so
// the replayer can tell exactly when the target has answered a request
// instead of waiting for a quiet spell.
//
// Both framers are push-style: the caller hands them the bytes of one
// direction of a session, in order, in chunks of any size (Write). They
// start no goroutines, never block, buffer only a header line that is split
// across chunks (at most MaxHeader bytes) and count bodies without storing
// them; a steady keep-alive stream costs no allocation.
//
// net/http (http.ReadRequest, http.ReadResponse) is the reference for what a
// message is; the tests check the framers against it. Where the framers are
// stricter it is on purpose and narrow (see the Err* values), and the result
// is the terminal Opaque state: the framer then ignores its input and the
// caller falls back to a protocol-blind heuristic. The same happens when the
// protocol changes (101 Switching Protocols, a 2xx answer to CONNECT).
// Where net/http is stricter than RFC 9112 (empty lines before a message,
// whitespace before a chunk extension, "Transfer-Encoding: gzip, chunked",
// duplicate Content-Length values "5" and "05"), the framers follow the
// RFC and frame on.
//
// Use in a replayer: feed each turn's client bytes to a Requests before
// sending them (Sniff the first ones to decide whether to frame at all),
// feed the target's bytes to the Responses paired with it as they arrive,
// and take the turn as answered once Responses.Final reaches
// Requests.Complete; a turn that ends inside a request (headers sent with
// Expect: 100-continue) is answered when Interim or Final moves. While
// either side is Opaque, or the answer runs UntilClose, fall back to the
// byte-count and quiet-spell heuristic.
//
// Concurrency: each framer's Write (and EOF) must be called from one
// goroutine at a time, but the query methods may be called from any
// goroutine while it runs: they read a snapshot published at the end of each
// Write. A Requests and the Responses paired with it may be fed from two
// different goroutines (the client's side and the target's side).
//
// httpframe is a leaf: it imports only the standard library.
package httpframe

import (
	"errors"
	"sync"
	"sync/atomic"
)

// MaxHeader bounds a header block (start line, fields and the empty line),
// a trailer block, and a chunk-size line. Longer ones make the framer
// Opaque (ErrTooLong): real traffic stays far below (nginx defaults to 8 KiB
// lines), and the bound is what keeps the framer's memory bounded.
const MaxHeader = 64 << 10

// Why a framer went Opaque, as returned by Err.
var (
	// ErrMalformed: the bytes are not HTTP/1.x (or are an HTTP/1.x message
	// that net/http rejects too: bad start line, header field, chunk size,
	// Content-Length, or an unsupported request Transfer-Encoding).
	ErrMalformed = errors.New("httpframe: not a well-formed HTTP/1.x message")
	// ErrVersion: a well-formed start line of another HTTP version
	// ("HTTP/2.0", "HTTP/0.9"), which net/http parses but is not framed the
	// HTTP/1.x way.
	ErrVersion = errors.New("httpframe: HTTP version is not 1.x")
	// ErrTooLong: a header block, trailer block or chunk-size line longer
	// than MaxHeader.
	ErrTooLong = errors.New("httpframe: header block longer than MaxHeader")
	// ErrAmbiguous: framing that parsers disagree on, where guessing could
	// desynchronise every later turn: a folded (obs-fold) Content-Length or
	// Transfer-Encoding field, whitespace between such a field's name and
	// its colon, or Transfer-Encoding in an HTTP/1.0 message (net/http
	// ignores it there; RFC 9112 §6.1 says the framing is faulty).
	ErrAmbiguous = errors.New("httpframe: ambiguous message framing")
	// ErrSwitched: the connection left HTTP/1.x (101 Switching Protocols, or
	// a 2xx answer to CONNECT). Not an error of the traffic: framing simply
	// ends there, for the paired Requests too.
	ErrSwitched = errors.New("httpframe: connection switched protocols")
	// ErrUnpaired: a response whose request method cannot be known (the
	// paired Requests went Opaque before that request, or more than 32
	// HEAD/CONNECT requests were waiting for their answers at once).
	ErrUnpaired = errors.New("httpframe: response to an unknown request")
)

// Error codes, published atomically in the flags word; 0 is no error.
const (
	codeNone uint8 = iota
	codeMalformed
	codeVersion
	codeTooLong
	codeAmbiguous
	codeSwitched
	codeUnpaired
)

var codeErr = [...]error{nil, ErrMalformed, ErrVersion, ErrTooLong, ErrAmbiguous, ErrSwitched, ErrUnpaired}

// Published flags (low byte); the error code is in the second byte. Zero
// is a fresh framer: idle, no error.
const (
	flagPartial    uint32 = 1 << iota // part of a message has arrived
	flagUntilClose                    // a response body runs until close (with flagPartial)
)

// idle tells from a flags word whether the framer is between messages.
func idle(flags uint32) bool { return flags == 0 }

// Requests frames the client's side of a session: it counts complete
// requests and remembers which ones were HEAD or CONNECT, whose answers are
// framed differently. The zero value is ready to use.
type Requests struct {
	f framer

	// Shared with the paired Responses, which may run on another goroutine.
	mu       sync.Mutex
	started  int       // request lines seen
	special  []pending // HEAD/CONNECT requests not yet answered, a ring of maxSpecial made at the first
	head, n  int
	overflow bool // a HEAD/CONNECT request did not fit in special
	lostFrom int  // with overflow: the first request whose method was lost
	stop     atomic.Bool

	complete atomic.Int64
	flags    atomic.Uint32
}

// maxSpecial bounds the HEAD/CONNECT requests remembered while waiting for
// their answers. Only pipelining (or a replay that does not wait for
// answers) gets several ahead; the bound keeps a Requests a fixed size.
const maxSpecial = 32

type pending struct {
	seq  int // which request (0-based)
	kind method
}

// Write frames p, the client's next bytes. It always returns len(p), nil:
// bytes that do not frame make the Requests Opaque, they do not fail the
// write, so a Requests can sit behind an io.MultiWriter.
func (r *Requests) Write(p []byte) (int, error) {
	if r.stop.Load() && r.f.code == codeNone {
		r.f.fail(codeSwitched, "paired responses switched protocols")
	}
	r.f.reqs = r
	r.f.write(p)
	r.publish()
	return len(p), nil
}

func (r *Requests) publish() {
	r.complete.Store(int64(r.f.final))
	r.flags.Store(r.f.flags())
}

// Complete reports how many requests have been received completely,
// bodies included.
func (r *Requests) Complete() int { return int(r.complete.Load()) }

// Idle reports whether the Requests is between requests: nothing of a
// next request has arrived yet. False once Opaque.
func (r *Requests) Idle() bool { return idle(r.flags.Load()) && !r.stop.Load() }

// Opaque reports whether framing has ended: Complete no longer changes and
// the caller should fall back to a protocol-blind heuristic.
func (r *Requests) Opaque() bool { return r.Err() != nil }

// Err tells why the Requests is Opaque; nil while it is not.
func (r *Requests) Err() error {
	if c := uint8(r.flags.Load() >> 8); c != codeNone {
		return codeErr[c]
	}
	if r.stop.Load() {
		return ErrSwitched
	}
	return nil
}

// push is called by the request framer at each request line.
func (r *Requests) push(kind method) {
	r.mu.Lock()
	seq := r.started
	r.started++
	if kind != methodOther {
		if r.n == maxSpecial {
			if !r.overflow {
				r.overflow, r.lostFrom = true, seq
			}
		} else {
			if r.special == nil {
				// Most sessions never send one: the ring is made on
				// demand (0.5 KiB a session, idle ones included).
				r.special = make([]pending, maxSpecial)
			}
			r.special[(r.head+r.n)%maxSpecial] = pending{seq, kind}
			r.n++
		}
	}
	r.mu.Unlock()
}

// methodOf tells the method kind of request seq (0-based) for the response
// framer, forgetting the requests before it; ok is false when it cannot be
// known.
func (r *Requests) methodOf(seq int) (kind method, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.n > 0 && r.special[r.head].seq < seq {
		r.head = (r.head + 1) % maxSpecial
		r.n--
	}
	if r.overflow && seq >= r.lostFrom {
		return methodOther, false
	}
	if r.n > 0 && r.special[r.head].seq == seq {
		return r.special[r.head].kind, true
	}
	if seq >= r.started && r.flags.Load()>>8 != uint32(codeNone) {
		// Its request line never framed.
		return methodOther, false
	}
	// A request seen and neither HEAD nor CONNECT; or a response ahead of
	// its request (an unsolicited 408, say), framed as an answer to GET.
	return methodOther, true
}

// Responses frames the target's side of a session: it counts complete
// responses, consuming interim (1xx) ones, and pairs each final response
// with its request's method through the Requests given to NewResponses.
type Responses struct {
	f framer

	final, interim atomic.Int64
	flags          atomic.Uint32
}

// NewResponses returns a response framer paired with req, which must be fed
// the same session's client bytes (before the target can have answered
// them). With a nil req every response is framed as an answer to GET.
func NewResponses(req *Requests) *Responses {
	s := &Responses{}
	s.f.resp, s.f.reqs = true, req
	s.publish()
	return s
}

// Write frames p, the target's next bytes. It always returns len(p), nil
// (see Requests.Write).
func (s *Responses) Write(p []byte) (int, error) {
	s.f.resp = true
	s.f.write(p)
	s.publish()
	return len(p), nil
}

// EOF tells the framer that the target closed its side. A response whose
// body runs until close (UntilClose) is complete now; a partial one stays
// incomplete. Later bytes are ignored.
func (s *Responses) EOF() {
	s.f.resp = true
	s.f.eof()
	s.publish()
}

func (s *Responses) publish() {
	s.interim.Store(int64(s.f.interim))
	s.final.Store(int64(s.f.final))
	s.flags.Store(s.f.flags())
}

// Final reports how many final (non-1xx, or 101) responses are complete:
// the number of requests the target has answered.
func (s *Responses) Final() int { return int(s.final.Load()) }

// Interim reports how many interim (1xx other than 101) responses were
// consumed, such as 100 Continue after a request's header block.
func (s *Responses) Interim() int { return int(s.interim.Load()) }

// Idle reports whether the Responses is between responses: nothing of a
// next one has arrived. False once Opaque, and while a body runs until
// close.
func (s *Responses) Idle() bool { return idle(s.flags.Load()) }

// UntilClose reports whether the current response's body is delimited by
// the target closing the connection (no Content-Length, not chunked): it
// completes only at EOF, so a caller waiting for it should fall back to its
// heuristic for this turn.
func (s *Responses) UntilClose() bool { return s.flags.Load()&flagUntilClose != 0 }

// Opaque reports whether framing has ended (see Requests.Opaque).
func (s *Responses) Opaque() bool { return s.flags.Load()>>8 != uint32(codeNone) }

// Err tells why the Responses is Opaque; nil while it is not.
func (s *Responses) Err() error { return codeErr[uint8(s.flags.Load()>>8)] }

// Sniff reports whether p, the first bytes a client sent, can be the start
// of an HTTP/1.x request: a method token, SP, a request target, SP and
// "HTTP/1.", as far as p goes (empty lines before it are skipped, as the
// framer does). A request line split across chunks therefore sniffs true
// on its first chunk already ("GE" does): a false positive costs little,
// since the Requests framer checks every byte and goes Opaque where the
// line breaks the grammar, while a false negative would lose framing for
// the whole session. p holding no request byte at all sniffs false.
func Sniff(p []byte) bool {
	for {
		if len(p) > 0 && p[0] == '\n' {
			p = p[1:]
		} else if len(p) > 1 && p[0] == '\r' && p[1] == '\n' {
			p = p[2:]
		} else {
			break
		}
	}
	line, partial := p, true
	for i, c := range p {
		if c == '\n' {
			line, partial = p[:i], false
			break
		}
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) == 0 {
		return false
	}
	code, _, vers := requestLine(line, partial)
	if code != codeNone {
		return false
	}
	const want = "HTTP/1."
	for i := 0; i < len(vers) && i < len(want); i++ {
		if vers[i] != want[i] {
			return false
		}
	}
	return true
}
