package httpframe

import "bytes"

// method is what the response framer needs to know of a request.
type method uint8

const (
	methodOther   method = iota
	methodHead           // its response has no body, whatever its fields say
	methodConnect        // a 2xx response turns the connection into a tunnel
)

type state uint8

const (
	stStart      state = iota // before a start line (empty lines are skipped)
	stHeader                  // header field lines
	stBody                    // a Content-Length body: remain bytes to go
	stChunkSize               // a chunk-size line
	stChunkData               // chunk data: remain bytes to go
	stChunkCR                 // the CR after chunk data
	stChunkLF                 // the LF after chunk data
	stTrailer                 // trailer field lines, after the last chunk
	stUntilClose              // a response body delimited by the close
	stClosed                  // after EOF: input is ignored
	stOpaque                  // framing ended: input is ignored
)

// checkPrefix is how much of a start line or chunk-size line that has not
// ended yet is checked as it arrives. Garbage (a binary protocol, a payload
// the capture delivered as zeros) fails within its first bytes this way,
// instead of being buffered up to MaxHeader; the bound keeps the repeated
// checks of a line fed a byte at a time cheap.
const checkPrefix = 256

// framer is the state machine under Requests and Responses. It works line
// by line on header blocks and counts body bytes without looking at them.
type framer struct {
	resp bool      // frames responses (else requests)
	reqs *Requests // requests: the owner; responses: the paired one, or nil

	st     state
	code   uint8  // why Opaque
	why    string // detail for tests and debugging
	buf    []byte // a line split across writes
	block  int    // bytes of the current header block, trailer block or chunk line
	remain uint64 // body or chunk bytes to go

	// The message being framed.
	minor       byte // HTTP/1.minor
	status      int  // responses
	interimMsg  bool // a 1xx response other than 101
	fields      int  // field lines so far in this block
	lastFraming bool // the last field was Content-Length or Transfer-Encoding
	badCL       bool // the last field was a bad Content-Length, unless a fold follows
	clSeen      bool
	cl          uint64
	teSeen      bool
	teChunked   bool // chunked is the final transfer coding

	final   int // requests: complete ones; responses: final ones
	interim int // responses: 1xx other than 101
	eofIdle bool
}

func (f *framer) fail(code uint8, why string) {
	if f.code == codeNone {
		f.code, f.why = code, why
	}
	f.st = stOpaque
	f.buf = nil
}

// flags is the snapshot word the public types publish.
func (f *framer) flags() uint32 {
	fl := uint32(f.code) << 8
	switch f.st {
	case stStart:
		if len(f.buf) > 0 {
			fl |= flagPartial
		}
	case stClosed:
		if !f.eofIdle {
			fl |= flagPartial
		}
	case stUntilClose:
		fl |= flagPartial | flagUntilClose
	default:
		fl |= flagPartial
	}
	return fl
}

func (f *framer) write(p []byte) {
	for len(p) > 0 {
		switch f.st {
		case stBody, stChunkData:
			n := f.remain
			if uint64(len(p)) < n {
				n = uint64(len(p))
			}
			f.remain -= n
			p = p[n:]
			if f.remain == 0 {
				if f.st == stBody {
					f.done()
				} else {
					f.st = stChunkCR
				}
			}
		case stChunkCR, stChunkLF:
			// net/http wants exactly CRLF after chunk data, as RFC 9112
			// does (no bare LF in chunked framing, erratum 7633).
			want := byte('\r')
			if f.st == stChunkLF {
				want = '\n'
			}
			if p[0] != want {
				f.fail(codeMalformed, "chunk data not followed by CRLF")
				return
			}
			p = p[1:]
			if f.st == stChunkCR {
				f.st = stChunkLF
			} else {
				f.st, f.block = stChunkSize, 0
			}
		case stUntilClose, stClosed, stOpaque:
			return
		default:
			p = f.lines(p)
		}
	}
}

// lines handles the line-oriented states: it frames the line that ends in
// p, or keeps p's bytes as the start of one, and returns what follows.
func (f *framer) lines(p []byte) []byte {
	i := bytes.IndexByte(p, '\n')
	seg := p
	if i >= 0 {
		seg = p[:i]
	}
	room := MaxHeader - f.block - len(f.buf) // never negative
	if i < 0 && len(seg) <= room {
		f.partial(seg)
		return nil
	}
	if i < 0 || len(seg)+1 > room {
		// Over the bound. Check the bytes that fit first, as a feed of
		// one byte at a time would, so that Err does not depend on how
		// the input was split.
		f.partial(seg[:min(len(seg), room)])
		f.fail(codeTooLong, "line or header block over MaxHeader")
		return nil
	}
	line := seg
	if len(f.buf) > 0 {
		f.buf = append(f.buf, seg...)
		line = f.buf
	}
	f.block += len(line) + 1
	f.line(line)
	f.buf = f.buf[:0]
	return p[i+1:]
}

// partial keeps b, the start of a line whose end has not arrived, and
// checks what can be checked of it already.
func (f *framer) partial(b []byte) {
	if len(b) == 0 {
		return
	}
	old := len(f.buf)
	f.buf = append(f.buf, b...)
	switch f.st {
	case stStart, stChunkSize:
		if old >= checkPrefix {
			return
		}
		l := f.buf[:min(len(f.buf), checkPrefix)]
		if len(l) == len(f.buf) && l[len(l)-1] == '\r' {
			l = l[:len(l)-1] // maybe the CR of the line's CRLF
		}
		var code uint8
		if f.st == stChunkSize {
			if _, ok := chunkLine(l, true); !ok {
				code = codeMalformed
			}
		} else if f.resp {
			code, _, _ = statusLine(l, true)
		} else {
			code, _, _ = requestLine(l, true)
		}
		if code != codeNone {
			f.fail(code, "bad start of a start line or chunk-size line")
		}
	case stHeader, stTrailer:
		// Any control byte but HTAB fails a field line (net/http
		// agrees); a CR may still turn out to end the line.
		for _, c := range b {
			if (c < 0x20 && c != '\t' && c != '\r') || c == 0x7f {
				f.fail(codeMalformed, "control byte in a field line")
				return
			}
		}
	}
}

// line frames one complete line, without its LF.
func (f *framer) line(l []byte) {
	if f.st == stChunkSize {
		f.chunkSize(l)
		return
	}
	// Header lines may end in a bare LF (RFC 9112 §2.2; net/http agrees).
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	switch f.st {
	case stStart:
		if len(l) > 0 {
			f.start(l)
		}
		// Else an empty line before a message: RFC 9112 §2.2 has
		// servers skip them before a request line (some clients send a
		// CRLF after a POST body); they are skipped before a status line
		// too, where net/http would fail, as that loses nothing.
	case stHeader, stTrailer:
		f.field(l)
	}
}

func (f *framer) start(l []byte) {
	f.status, f.interimMsg, f.fields, f.lastFraming, f.badCL = 0, false, 0, false, false
	f.clSeen, f.cl, f.teSeen, f.teChunked = false, 0, false, false
	if f.resp {
		code, minor, status := statusLine(l, false)
		if code != codeNone {
			f.fail(code, "bad status line")
			return
		}
		f.minor, f.status = minor, status
	} else {
		code, kind, vers := requestLine(l, false)
		if code != codeNone {
			f.fail(code, "bad request line")
			return
		}
		f.minor = vers[7] - '0'
		if f.reqs != nil {
			// At the request line already, not when the request is
			// complete: a server may answer before the body is in
			// (413, 100 Continue).
			f.reqs.push(kind)
		}
	}
	f.st = stHeader
}

// field frames one header or trailer line (its line end removed); the
// empty line ends the block.
func (f *framer) field(l []byte) {
	if len(l) == 0 {
		if f.st == stTrailer {
			f.done()
		} else {
			f.headerEnd()
		}
		return
	}
	for _, c := range l {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			f.fail(codeMalformed, "control byte in a field line")
			return
		}
	}
	if l[0] == ' ' || l[0] == '\t' {
		// obs-fold: the line continues the previous field.
		if f.fields == 0 {
			f.fail(codeMalformed, "block starts with a folded line")
		} else if f.lastFraming {
			f.fail(codeAmbiguous, "folded Content-Length or Transfer-Encoding")
		}
		return
	}
	if f.badCL {
		f.fail(codeMalformed, "bad or conflicting Content-Length")
		return
	}
	f.fields++
	f.lastFraming = false
	colon := bytes.IndexByte(l, ':')
	if colon <= 0 {
		f.fail(codeMalformed, "field line without a name and colon")
		return
	}
	name := l[:colon]
	spaced := false
	for _, c := range name {
		if c == ' ' {
			spaced = true // net/http accepts it, but as another field
		} else if !tchar[c] {
			f.fail(codeMalformed, "bad field name")
			return
		}
	}
	if f.st == stTrailer {
		return // trailers do not frame anything
	}
	if spaced {
		// RFC 9112 §5.1: servers reject "Content-Length :", proxies
		// strip the space; net/http takes it for another field.
		for len(name) > 0 && name[len(name)-1] == ' ' {
			name = name[:len(name)-1]
		}
		if equalFold(name, "content-length") || equalFold(name, "transfer-encoding") {
			f.fail(codeAmbiguous, "space before the colon of a framing field")
		}
		return
	}
	switch {
	case equalFold(name, "content-length"):
		// A bad value fails at the next line: a fold (ErrAmbiguous)
		// could still complete it for net/http.
		f.lastFraming = true
		f.badCL = !f.contentLength(l[colon+1:])
	case equalFold(name, "transfer-encoding"):
		f.lastFraming = true
		f.transferEncoding(l[colon+1:])
	}
}

// contentLength takes one Content-Length value: digits only, as net/http
// wants; repeated fields must agree (RFC 9110 §8.6).
func (f *framer) contentLength(v []byte) bool {
	v = trimOWS(v)
	if len(v) == 0 {
		return false
	}
	const max = 1<<63 - 1 // net/http: strconv.ParseUint(v, 10, 63)
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
		d := uint64(c - '0')
		if n > (max-d)/10 {
			return false
		}
		n = n*10 + d
	}
	if f.clSeen && n != f.cl {
		return false
	}
	f.clSeen, f.cl = true, n
	return true
}

// transferEncoding takes one Transfer-Encoding value, a list of codings
// with parameters; what counts is whether chunked is the last one over all
// the fields (RFC 9112 §6.3). net/http accepts only a single "chunked".
func (f *framer) transferEncoding(v []byte) {
	f.teSeen = true
	for len(v) > 0 {
		elem := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			elem, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if i := bytes.IndexByte(elem, ';'); i >= 0 {
			elem = elem[:i]
		}
		if elem = trimOWS(elem); len(elem) > 0 {
			f.teChunked = equalFold(elem, "chunked")
		}
	}
}

// headerEnd decides how the body of the message whose header block just
// ended is delimited (RFC 9112 §6.3, as net/http applies it).
func (f *framer) headerEnd() {
	if f.badCL {
		f.fail(codeMalformed, "bad or conflicting Content-Length")
		return
	}
	if f.teSeen && f.minor == 0 {
		f.fail(codeAmbiguous, "Transfer-Encoding in HTTP/1.0")
		return
	}
	if !f.resp {
		switch {
		case f.teSeen && !f.teChunked:
			// RFC 9112 §6.3: a server answers 400 and closes.
			f.fail(codeMalformed, "request Transfer-Encoding not ending in chunked")
		case f.teSeen:
			f.st, f.block = stChunkSize, 0
		case f.cl > 0:
			f.st, f.remain = stBody, f.cl
		default:
			f.done() // requests have no body unless they say so
		}
		return
	}
	s := f.status
	if s >= 100 && s <= 199 && s != 101 {
		// Interim: consumed, but the request still awaits its answer.
		f.interimMsg = true
		f.done()
		return
	}
	kind := methodOther
	if f.reqs != nil {
		k, ok := f.reqs.methodOf(f.final)
		if !ok {
			f.fail(codeUnpaired, "response to an unknown request")
			return
		}
		kind = k
	}
	if s == 101 || (kind == methodConnect && s >= 200 && s <= 299) {
		// The answer is complete; what follows is another protocol on
		// both sides.
		f.final++
		if f.reqs != nil {
			f.reqs.stop.Store(true)
		}
		f.fail(codeSwitched, "switched protocols")
		return
	}
	switch {
	case kind == methodHead || s == 204 || s == 304:
		f.done()
	case f.teSeen && f.teChunked:
		f.st, f.block = stChunkSize, 0
	case f.teSeen:
		f.st = stUntilClose // RFC 9112 §6.3 rule 4
	case f.clSeen && f.cl > 0:
		f.st, f.remain = stBody, f.cl
	case f.clSeen:
		f.done()
	default:
		f.st = stUntilClose
	}
}

// chunkSize frames a chunk-size line, without its LF.
func (f *framer) chunkSize(l []byte) {
	n := len(l)
	if n == 0 || l[n-1] != '\r' {
		f.fail(codeMalformed, "chunk-size line not ended by CRLF")
		return
	}
	size, ok := chunkLine(l[:n-1], false)
	if !ok {
		f.fail(codeMalformed, "bad chunk-size line")
		return
	}
	if size == 0 {
		f.st, f.block, f.fields = stTrailer, 0, 0
		return
	}
	f.st, f.remain = stChunkData, size
}

func (f *framer) done() {
	if f.interimMsg {
		f.interim++
	} else {
		f.final++
	}
	f.st, f.block, f.interimMsg = stStart, 0, false
}

func (f *framer) eof() {
	switch f.st {
	case stOpaque, stClosed:
		return
	case stUntilClose:
		f.done()
		f.eofIdle = true
	case stStart:
		f.eofIdle = len(f.buf) == 0
	default:
		f.eofIdle = false
	}
	f.st, f.buf = stClosed, nil
}

// requestLine checks a request line, without its line end, against
// method SP request-target SP HTTP-version, splitting it the way net/http
// does (at the first two spaces; no control byte in the target). With
// partial set, l is the start of a line that has not ended: it passes if
// some line could start so, and a version other than 1.x is not told yet.
func requestLine(l []byte, partial bool) (code uint8, kind method, vers []byte) {
	i := 0
	for i < len(l) && tchar[l[i]] {
		i++
	}
	if i == len(l) && partial {
		return codeNone, methodOther, nil
	}
	if i == 0 || i == len(l) || l[i] != ' ' {
		return codeMalformed, methodOther, nil
	}
	switch string(l[:i]) { // methods are case-sensitive
	case "HEAD":
		kind = methodHead
	case "CONNECT":
		kind = methodConnect
	}
	i++
	j := i
	for i < len(l) && l[i] > ' ' && l[i] != 0x7f {
		i++
	}
	if i == len(l) && partial {
		return codeNone, kind, nil
	}
	// net/http takes an empty target only for CONNECT (it parses
	// "http://" + target there).
	if (i == j && kind != methodConnect) || i == len(l) || l[i] != ' ' {
		return codeMalformed, kind, nil
	}
	vers = l[i+1:]
	if !versionShape(vers, partial) {
		return codeMalformed, kind, nil
	}
	if !partial && vers[5] != '1' {
		return codeVersion, kind, vers
	}
	return codeNone, kind, vers
}

// statusLine checks a status line, without its line end, the way
// net/http's ReadResponse splits it: the version up to the first space,
// spaces, a three-character status code (strconv.Atoi of it, not negative)
// up to the next space or the end, then any reason phrase. See requestLine
// for partial.
func statusLine(l []byte, partial bool) (code uint8, minor byte, status int) {
	sp := bytes.IndexByte(l, ' ')
	if sp < 0 {
		if partial && versionShape(l, true) {
			return codeNone, 0, 0
		}
		return codeMalformed, 0, 0
	}
	if !versionShape(l[:sp], false) {
		return codeMalformed, 0, 0
	}
	rest := l[sp+1:]
	for len(rest) > 0 && rest[0] == ' ' {
		rest = rest[1:]
	}
	k := bytes.IndexByte(rest, ' ')
	if k < 0 {
		k = len(rest)
		if partial {
			if k > 3 || !statusPrefix(rest) {
				return codeMalformed, 0, 0
			}
			return codeNone, 0, 0
		}
	}
	if k != 3 || !statusPrefix(rest[:3]) {
		return codeMalformed, 0, 0
	}
	if partial {
		return codeNone, 0, 0
	}
	status = int(rest[1]-'0')*10 + int(rest[2]-'0')
	if c := rest[0]; c >= '0' && c <= '9' {
		status += int(c-'0') * 100
	}
	if l[5] != '1' {
		return codeVersion, 0, status
	}
	return codeNone, l[7] - '0', status
}

// statusPrefix tells whether s (at most three bytes) can start a status
// code strconv.Atoi takes and is not negative: three digits, or a sign and
// two digits ("-00" only, as zero).
func statusPrefix(s []byte) bool {
	for i, c := range s {
		switch {
		case c >= '0' && c <= '9':
			if i > 0 && s[0] == '-' && c != '0' {
				return false
			}
		case i == 0 && (c == '+' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// versionShape tells whether v is "HTTP/" DIGIT "." DIGIT, as
// http.ParseHTTPVersion wants it, or with partial set the start of one.
func versionShape(v []byte, partial bool) bool {
	const pat = "HTTP/0.0"
	if len(v) > len(pat) || (!partial && len(v) < len(pat)) {
		return false
	}
	for i, c := range v {
		if pat[i] == '0' {
			if c < '0' || c > '9' {
				return false
			}
		} else if c != pat[i] {
			return false
		}
	}
	return true
}

// chunkLine checks a chunk-size line without its CRLF: 1 to 16 hex digits
// (net/http's bound), optional whitespace, and an extension after ';' that
// is not looked into. net/http rejects whitespace before ';', RFC 9112
// allows it (BWS); it is accepted. See requestLine for partial.
func chunkLine(l []byte, partial bool) (size uint64, ok bool) {
	i := 0
	for ; i < len(l); i++ {
		c := l[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			goto rest
		}
		if i == 16 {
			return 0, false
		}
		size = size<<4 | uint64(d)
	}
rest:
	if i == 0 {
		return 0, partial && len(l) == 0
	}
	for i < len(l) && (l[i] == ' ' || l[i] == '\t') {
		i++
	}
	if i < len(l) && l[i] != ';' {
		return 0, false
	}
	for ; i < len(l); i++ {
		if l[i] == '\r' {
			return 0, false
		}
	}
	return size, true
}

func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// equalFold compares b with lower, a lower-case ASCII name.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// tchar is RFC 9110's token character set, as net/http checks methods and
// field names.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()
