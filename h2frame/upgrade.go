package h2frame

import "bytes"

// The h2c upgrade (RFC 7540 §3.2; RFC 9113 §3.1 deprecates it but servers
// still take it): an HTTP/1.1 request with "Upgrade: h2c" and
// "HTTP2-Settings", answered by "101 Switching Protocols"; then the client
// preface and HTTP/2 frames on both sides, and the upgraded request's
// response as HTTP/2 on stream 1.

// MaxUpgradeHeader bounds the HTTP/1.1 header block of the upgrade request
// and of the server's answer to it, the only bytes the framer buffers whole.
// Longer ones make the framer fail with ErrUpgrade.
const MaxUpgradeHeader = 16 << 10

// h1 gathers one HTTP/1.1 header block (start line, fields, empty line).
type h1 struct {
	buf  []byte
	done bool
	sp   bool // the start line's first space is in
}

// add takes bytes up to the end of the header block and reports how many
// it took; done is set once the empty line is in. It fails with ErrUpgrade
// on too long a block and, for a request (notHTTP not nil), with notHTTP on
// a start line that does not begin with a method token and a space, so that
// a binary protocol fails at its first bytes instead of being buffered.
func (b *h1) add(p []byte, notHTTP error) (int, error) {
	// The block ends at an empty line: LF CRLF or LF LF (RFC 9112 §2.2
	// lets a recipient take a bare LF as a line end). Look from a few
	// bytes back, since the end may straddle two calls.
	from := max(0, len(b.buf)-2)
	room := MaxUpgradeHeader - len(b.buf)
	take := p[:min(len(p), room)]
	if notHTTP != nil && !b.check(take, len(b.buf)) {
		return len(take), notHTTP
	}
	b.buf = append(b.buf, take...)
	if end := BlockEnd(b.buf[from:]); end >= 0 {
		k := from + end - (len(b.buf) - len(take))
		b.buf = b.buf[:from+end]
		b.done = true
		return k, nil
	}
	if len(take) < len(p) || len(b.buf) == MaxUpgradeHeader {
		return len(take), ErrUpgrade
	}
	return len(take), nil
}

// check looks at the bytes p that follow the first old bytes of a request
// block: the method must be a token ended by a space.
func (b *h1) check(p []byte, old int) bool {
	for i, c := range p {
		if b.sp {
			return true
		}
		if c == ' ' && old+i > 0 {
			b.sp = true
		} else if !tchar(c) {
			return false
		}
	}
	return true
}

// BlockEnd returns the length of the header block that b ends, the empty
// line included, or -1.
func BlockEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		if i < len(b) && b[i] == '\n' {
			return i + 1
		}
		if i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n' {
			return i + 2
		}
	}
}

// lines calls fn for each line of block after the first, without line
// ends, until the empty line.
func lines(block []byte, fn func(line []byte)) (first []byte) {
	i := bytes.IndexByte(block, '\n')
	if i < 0 {
		return trimCR(block)
	}
	first, rest := trimCR(block[:i]), block[i+1:]
	for len(rest) > 0 {
		j := bytes.IndexByte(rest, '\n')
		if j < 0 {
			j = len(rest)
		}
		l := trimCR(rest[:j])
		rest = rest[min(j+1, len(rest)):]
		if len(l) == 0 {
			break
		}
		fn(l)
	}
	return first
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

// upgradeRequest is what the framer needs of an h2c upgrade request.
type upgradeRequest struct {
	upgrade bool   // Upgrade names h2c
	body    uint64 // Content-Length
}

// parseUpgradeRequest checks an HTTP/1.1 request header block. ok is false
// for anything but a well-formed HTTP/1.1 request; a body framed other
// than by Content-Length is not followed (ErrUpgrade).
func parseUpgradeRequest(block []byte) (r upgradeRequest, err error) {
	bad := false
	first := lines(block, func(l []byte) {
		name, value, ok := field(l)
		switch {
		case !ok:
			bad = true
		case equalFold(name, "upgrade"):
			r.upgrade = r.upgrade || hasToken(value, "h2c")
		case equalFold(name, "content-length"):
			n, ok := digits(value)
			if !ok || (r.body != 0 && n != r.body) {
				bad = true
			}
			r.body = n
		case equalFold(name, "transfer-encoding"):
			bad = true
		}
	})
	if !requestLine(first) {
		return r, ErrNotHTTP2
	}
	if !r.upgrade {
		return r, ErrNotHTTP2
	}
	if bad {
		return r, ErrUpgrade
	}
	return r, nil
}

// requestLine checks "method SP target SP HTTP/1.1".
func requestLine(l []byte) bool {
	sp := bytes.IndexByte(l, ' ')
	if sp <= 0 {
		return false
	}
	for _, c := range l[:sp] {
		if !tchar(c) {
			return false
		}
	}
	rest := l[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	return sp > 0 && string(rest[sp+1:]) == "HTTP/1.1"
}

// statusOf returns the status code of an HTTP/1.1 status line, or 0.
func statusOf(l []byte) int {
	if len(l) < 12 || string(l[:9]) != "HTTP/1.1 " || (len(l) > 12 && l[12] != ' ') {
		return 0
	}
	s := 0
	for _, c := range l[9:12] {
		if c < '0' || c > '9' {
			return 0
		}
		s = s*10 + int(c-'0')
	}
	return s
}

func field(l []byte) (name, value []byte, ok bool) {
	c := bytes.IndexByte(l, ':')
	if c <= 0 {
		return nil, nil, false
	}
	for _, b := range l[:c] {
		if !tchar(b) {
			return nil, nil, false
		}
	}
	return l[:c], bytes.Trim(l[c+1:], " \t"), true
}

// hasToken reports whether the comma-separated list v has token (ASCII
// case-insensitive).
func hasToken(v []byte, token string) bool {
	for len(v) > 0 {
		e := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			e, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if equalFold(bytes.Trim(e, " \t"), token) {
			return true
		}
	}
	return false
}

func digits(v []byte) (uint64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// equalFold compares b with lower, a lower-case ASCII string.
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

// tchar reports whether c is an RFC 9110 token character.
func tchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c != 0 && bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}
