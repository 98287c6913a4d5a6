package cmphttp

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/h2frame"
)

// HTTP/1 (RFC 9112). Both directions are read by the same pieces: a
// header block gathered whole (bounded by maxHeader), then a body read
// incrementally by its framing, never buffered beyond Limits.Body.

// headBuf gathers one header block: the start line, the fields and the
// empty line that ends them.
type headBuf struct {
	buf     []byte
	skipped int // empty lines before the block
}

// add takes the bytes of p up to the end of the block and says how many
// it took and whether the block is complete.
func (h *headBuf) add(p []byte) (n int, done bool, err string) {
	if len(h.buf) == 0 {
		// A recipient ignores empty lines before a message (RFC 9112
		// §2.2): clients send a CRLF after a POST body.
		for n < len(p) && (p[n] == '\r' || p[n] == '\n') {
			n++
		}
		h.skipped += n
		p = p[n:]
		if len(p) == 0 {
			return n, false, ""
		}
	}
	from := max(0, len(h.buf)-3)
	old := len(h.buf)
	take := p[:min(len(p), maxHeader-old)]
	h.buf = append(h.buf, take...)
	if bad := implausible(h.buf[:min(len(h.buf), 64)]); bad >= 0 {
		// Fail early on bytes that cannot begin an HTTP/1 message
		// rather than waiting for 64 KiB of them; the block is cut
		// after the first wrong byte, however the bytes came.
		h.buf = h.buf[:bad+1]
		return n + bad + 1 - old, false, "not an HTTP/1 start line"
	}
	if end := h2frame.BlockEnd(h.buf[from:]); end >= 0 {
		h.buf = h.buf[:from+end]
		return n + from + end - old, true, ""
	}
	if len(h.buf) >= maxHeader {
		return n + len(take), false, "header block longer than 64 KiB"
	}
	return n + len(take), false, ""
}

func (h *headBuf) reset() { h.buf, h.skipped = h.buf[:0], 0 }

// implausible returns the index of the first byte of b (the start of a
// header block) that cannot begin a start line, or -1: the line begins
// with a token (a method, or "HTTP/1.x") followed by a space.
func implausible(b []byte) int {
	for i, c := range b {
		if c == ' ' && i > 0 {
			return -1
		}
		if !tchar(c) && c != '/' {
			return i
		}
	}
	return -1
}

func tchar(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, rune(c))
}

// parseBlock splits a header block into its start line and fields.
func parseBlock(b []byte) (line string, hdr []hfield, err string) {
	lines := strings.Split(string(b), "\n")
	for i := range lines {
		lines[i] = strings.TrimSuffix(lines[i], "\r")
	}
	hdr, err = parseFields(lines[1:])
	return lines[0], hdr, err
}

// parseFields reads field lines up to the first empty one.
func parseFields(lines []string) ([]hfield, string) {
	var hdr []hfield
	for _, l := range lines {
		if l == "" {
			break
		}
		if l[0] == ' ' || l[0] == '\t' {
			// Obsolete line folding (RFC 9112 §5.2): a space.
			if len(hdr) == 0 {
				return nil, "folded line before any field"
			}
			hdr[len(hdr)-1].value += " " + strings.TrimSpace(l)
			continue
		}
		i := strings.IndexByte(l, ':')
		if i <= 0 || strings.ContainsAny(l[:i], " \t") {
			return nil, "field line without a name and colon: " + strconv.Quote(cutUTF8(l, 40))
		}
		hdr = append(hdr, hfield{l[:i], strings.Trim(l[i+1:], " \t")})
	}
	return hdr, ""
}

// parseRequestLine reads "METHOD target HTTP/1.x".
func parseRequestLine(line string) (method, target string, ok bool) {
	parts := strings.Split(line, " ")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || !strings.HasPrefix(parts[2], "HTTP/1.") {
		return "", "", false
	}
	for i := 0; i < len(parts[0]); i++ {
		if !tchar(parts[0][i]) {
			return "", "", false
		}
	}
	return parts[0], parts[1], true
}

// parseStatusLine reads "HTTP/1.x code reason" and returns the code.
func parseStatusLine(line string) (int, bool) {
	if !strings.HasPrefix(line, "HTTP/1.") || len(line) < 12 || line[8] != ' ' || len(line) > 12 && line[12] != ' ' {
		return 0, false
	}
	code, err := strconv.Atoi(line[9:12])
	if err != nil || code < 100 || line[9] == '+' || line[9] == '-' {
		return 0, false
	}
	return code, true
}

// Body framings.
const (
	frameNone    = iota
	frameLength  // Content-Length bytes
	frameChunked // chunked transfer coding
	frameClose   // until the connection closes
)

// listValues are the comma-separated elements of all of name's fields.
func listValues(hdr []hfield, name string) (vals []string, present bool) {
	for _, f := range hdr {
		if strings.EqualFold(f.name, name) {
			present = true
			for v := range strings.SplitSeq(f.value, ",") {
				if v = strings.TrimSpace(v); v != "" {
					vals = append(vals, strings.ToLower(v))
				}
			}
		}
	}
	return vals, present
}

// hasToken says whether name's field list holds token.
func hasToken(hdr []hfield, name, token string) bool {
	vals, _ := listValues(hdr, name)
	for _, v := range vals {
		if v == token {
			return true
		}
	}
	return false
}

// framing is a message's body framing by its fields (RFC 9112 §6.3):
// chunked when it is the last transfer coding, else Content-Length, else
// none for a request and the close for a response.
func framing(hdr []hfield, request bool) (kind int, n int64, err string) {
	if te, ok := listValues(hdr, "transfer-encoding"); ok {
		if len(te) > 0 && te[len(te)-1] == "chunked" {
			return frameChunked, 0, ""
		}
		if request {
			return 0, 0, "request transfer coding not chunked"
		}
		return frameClose, 0, ""
	}
	if cl, ok := listValues(hdr, "content-length"); ok {
		n = -1
		for _, v := range cl {
			m, e := strconv.ParseInt(v, 10, 64)
			if e != nil || m < 0 || n >= 0 && m != n || v[0] == '+' {
				return 0, 0, "invalid Content-Length"
			}
			n = m
		}
		if n < 0 {
			return 0, 0, "invalid Content-Length"
		}
		return frameLength, n, ""
	}
	if request {
		return frameNone, 0, ""
	}
	return frameClose, 0, ""
}

// Chunked decoding states.
const (
	chunkSize = iota
	chunkData
	chunkDataEnd
	chunkTrailer
)

// maxChunkLine bounds a chunk-size line (size and extensions).
const maxChunkLine = 4 << 10

// bodyReader reads one body by its framing.
type bodyReader struct {
	kind     int
	remain   int64
	state    int
	line     []byte
	trailers []hfield
	tb       headBuf
}

// feed takes the body's bytes from p into b and says how many it took and
// whether the body is complete.
func (r *bodyReader) feed(p []byte, b *body) (n int, done bool, err string) {
	switch r.kind {
	case frameNone:
		return 0, true, ""
	case frameClose:
		b.add(p)
		return len(p), false, ""
	case frameLength:
		k := int(min(int64(len(p)), r.remain))
		b.add(p[:k])
		r.remain -= int64(k)
		return k, r.remain == 0, ""
	}
	for n < len(p) {
		switch r.state {
		case chunkSize:
			i := bytes.IndexByte(p[n:], '\n')
			if i < 0 {
				r.line = append(r.line, p[n:]...)
				n = len(p)
			} else {
				r.line = append(r.line, p[n:n+i]...)
				n += i + 1
			}
			if len(r.line) > maxChunkLine {
				return n, false, "chunk size line too long"
			}
			if i < 0 {
				return n, false, ""
			}
			size, ok := chunkLen(r.line)
			r.line = r.line[:0]
			if !ok {
				return n, false, "invalid chunk size"
			}
			if size == 0 {
				r.state = chunkTrailer
			} else {
				r.state, r.remain = chunkData, size
			}
		case chunkData:
			k := int(min(int64(len(p)-n), r.remain))
			b.add(p[n : n+k])
			n += k
			if r.remain -= int64(k); r.remain == 0 {
				r.state = chunkDataEnd
			}
		case chunkDataEnd:
			c := p[n]
			n++
			switch {
			case c == '\n':
				r.state = chunkSize
				r.line = r.line[:0]
			case c == '\r' && len(r.line) == 0:
				r.line = append(r.line, c)
			default:
				return n, false, "chunk not followed by CRLF"
			}
		case chunkTrailer:
			if len(r.tb.buf) == 0 {
				// No trailer: the empty line ends the body.
				if p[n] == '\n' || p[n] == '\r' && len(r.line) == 0 {
					if p[n] == '\n' {
						return n + 1, true, ""
					}
					r.line = append(r.line, '\r')
					n++
					continue
				}
				if len(r.line) > 0 {
					return n, false, "bad line after the last chunk"
				}
			}
			k, done, e := r.trailerAdd(p[n:])
			n += k
			if e != "" {
				return n, false, e
			}
			if done {
				hdr, e := parseFields(strings.Split(strings.ReplaceAll(string(r.tb.buf), "\r\n", "\n"), "\n"))
				if e != "" {
					return n, false, "trailer: " + e
				}
				r.trailers = hdr
				return n, true, ""
			}
		}
	}
	return n, false, ""
}

// trailerAdd gathers the trailer section: field lines and an empty line,
// which blockEnd finds once a line ends (the section has no start line,
// so a leading newline is put in front to let it match the first line).
func (r *bodyReader) trailerAdd(p []byte) (int, bool, string) {
	if len(r.tb.buf) == 0 {
		r.tb.buf = append(r.tb.buf, '\n')
	}
	from := max(0, len(r.tb.buf)-3)
	old := len(r.tb.buf)
	take := p[:min(len(p), maxHeader-old)]
	r.tb.buf = append(r.tb.buf, take...)
	if end := h2frame.BlockEnd(r.tb.buf[from:]); end >= 0 {
		r.tb.buf = r.tb.buf[1 : from+end]
		return from + end - old, true, ""
	}
	if len(r.tb.buf) >= maxHeader {
		return len(take), false, "trailer section longer than 64 KiB"
	}
	return len(take), false, ""
}

// chunkLen parses a chunk-size line: hex digits, then optional
// whitespace and extensions.
func chunkLen(line []byte) (int64, bool) {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, true
}

// An h1Msg is one message being read.
type h1Msg struct {
	line   string
	hdr    []hfield
	id     int // request: its ID
	method string
	target string
	status int // response
	br     bodyReader
	body   body
	size   int
}

// Request kinds, as the answers need them.
const (
	reqPlain = iota
	reqHead
	reqTunnel // CONNECT: a 2xx answer ends HTTP
)

// h1Conv reads the client's stream of an HTTP/1 connection.
type h1Conv struct {
	lim     compare.Limits
	hb      headBuf
	cur     *h1Msg
	stopped bool
	ended   bool
	next    int
	// kinds[i-base] is request i's kind; entries every Answers has
	// passed are dropped.
	kinds   []byte
	base    int
	answers []*h1Answers
	// upgrade is the last request that asked for an Upgrade: after it
	// the client's bytes are another protocol's (websocket, h2c) and
	// the conversation stops cutting them.
	upgrade *h1Msg
}

func newH1Conv(lim compare.Limits) *h1Conv { return &h1Conv{lim: lim} }

func (c *h1Conv) Requests(b []byte) []compare.Request {
	out, _ := c.feed(b)
	return out
}

// feed cuts requests from p; after an Upgrade request it stops and
// returns the bytes that follow it.
func (c *h1Conv) feed(p []byte) (out []compare.Request, rest []byte) {
	for len(p) > 0 && !c.stopped {
		if c.cur == nil {
			n, done, err := c.hb.add(p)
			p = p[n:]
			if err != "" {
				out = append(out, c.malformed(err))
				break
			}
			if !done {
				break
			}
			m, err := c.head()
			if err != "" {
				out = append(out, c.malformed(err))
				break
			}
			c.cur = m
		}
		n, done, err := c.cur.br.feed(p, &c.cur.body)
		c.cur.size += n
		p = p[n:]
		if err != "" {
			r := c.request(c.cur)
			r.Partial = true
			r.Sample = compare.Sample([]byte("malformed: "+err+"\n"+r.Sample), c.lim.Sample)
			out = append(out, r)
			c.cur, c.stopped = nil, true
			break
		}
		if done {
			m := c.cur
			c.cur = nil
			out = append(out, c.request(m))
			if m.method == "CONNECT" || hasToken(m.hdr, "connection", "upgrade") {
				c.upgrade = m
				c.stopped = true
				return out, p
			}
		}
	}
	return out, nil
}

// head parses a complete request header block and opens the request.
func (c *h1Conv) head() (*h1Msg, string) {
	line, hdr, err := parseBlock(c.hb.buf)
	if err != "" {
		return nil, err
	}
	method, target, ok := parseRequestLine(line)
	if !ok {
		return nil, "invalid request line: " + strconv.Quote(cutUTF8(line, 60))
	}
	m := &h1Msg{line: line, hdr: hdr, method: method, target: target, size: len(c.hb.buf) + c.hb.skipped, body: newBody(compare.Limits{Sample: c.lim.Sample})}
	kind, n, err := framing(hdr, true)
	if err != "" {
		return nil, err
	}
	m.br = bodyReader{kind: kind, remain: n}
	c.hb.reset()
	m.id = c.open(method)
	return m, ""
}

// open numbers a request and records its kind for the answers.
func (c *h1Conv) open(method string) int {
	k := byte(reqPlain)
	switch method {
	case "HEAD":
		k = reqHead
	case "CONNECT":
		k = reqTunnel
	}
	c.kinds = append(c.kinds, k)
	if len(c.kinds) > 4096 && len(c.answers) > 0 {
		low := c.next
		for _, a := range c.answers {
			low = min(low, a.n)
		}
		if d := low - c.base; d > 0 {
			c.kinds = append(c.kinds[:0], c.kinds[d:]...)
			c.base = low
		}
	}
	c.next++
	return c.next - 1
}

// kind is request id's kind, and whether it is known yet.
func (c *h1Conv) kind(id int) (byte, bool) {
	switch {
	case id < c.base:
		return reqPlain, true
	case id-c.base < len(c.kinds):
		return c.kinds[id-c.base], true
	}
	return reqPlain, c.ended
}

func (c *h1Conv) request(m *h1Msg) compare.Request {
	lim := c.lim
	return compare.Request{
		ID:     m.id,
		Key:    requestKey(m.method, m.target),
		Size:   m.size,
		Render: func() string { return renderSample(lim, m.line, m.hdr, false, m.body.sample) },
	}
}

// malformed is the request for a header block that cannot be read: it is
// numbered (the server answers it, typically 400) and the stream stops.
func (c *h1Conv) malformed(err string) compare.Request {
	r := compare.Request{
		ID:     c.open(""),
		Key:    "(malformed)",
		Size:   len(c.hb.buf) + c.hb.skipped,
		Sample: compare.Sample([]byte("malformed: "+err+"\n"+string(c.hb.buf)), c.lim.Sample),
	}
	c.hb.reset()
	c.stopped = true
	return r
}

func (c *h1Conv) EndRequests() []compare.Request {
	if c.ended {
		return nil
	}
	c.ended = true
	if c.stopped {
		return nil
	}
	if c.cur != nil {
		r := c.request(c.cur)
		r.Partial = true
		c.cur = nil
		return []compare.Request{r}
	}
	if len(c.hb.buf) == 0 {
		return nil
	}
	key := "(partial)"
	if i := bytes.IndexByte(c.hb.buf, '\n'); i >= 0 {
		if method, target, ok := parseRequestLine(strings.TrimSuffix(string(c.hb.buf[:i]), "\r")); ok {
			key = requestKey(method, target)
		}
	}
	r := compare.Request{ID: c.open(""), Key: key, Partial: true, Size: len(c.hb.buf) + c.hb.skipped,
		Sample: compare.Sample(c.hb.buf, c.lim.Sample)}
	c.hb.reset()
	return []compare.Request{r}
}

func (c *h1Conv) Answers() compare.Answers { return c.newAnswers() }

func (c *h1Conv) newAnswers() *h1Answers {
	a := &h1Answers{c: c, lim: c.lim, n: c.base}
	c.answers = append(c.answers, a)
	return a
}

// h1Answers reads one server's stream of an HTTP/1 connection: answer n
// answers request n.
type h1Answers struct {
	c       *h1Conv
	names   map[string]string // header field names, see appendHeaderFields
	lim     compare.Limits
	hb      headBuf
	cur     *h1Msg
	framed  bool // cur's framing is known
	n       int  // the next answer's request
	pre     int  // bytes of interim (1xx) answers before cur
	held    []byte
	stopped bool
	// h2c: a 101 answer switches to HTTP/2 (the caller's) instead of
	// ending the decoding, and is not an answer itself.
	h2c bool
}

func (a *h1Answers) Feed(b []byte) []compare.Answer {
	out, _, _ := a.feed(b, false)
	return out
}

func (a *h1Answers) End() []compare.Answer {
	out, _, _ := a.feed(nil, true)
	if a.stopped {
		return out
	}
	a.stopped = true
	if a.cur != nil {
		if a.framed && a.cur.br.kind == frameClose {
			return append(out, a.answer(a.cur, false))
		}
		return append(out, a.answer(a.cur, true))
	}
	if len(a.hb.buf) > 0 {
		out = append(out, compare.Answer{Req: a.n, Truncated: true, Size: a.pre + len(a.hb.buf) + a.hb.skipped,
			Sample: compare.Sample(a.hb.buf, a.lim.Sample)})
		a.n++
	}
	return out
}

// feed cuts answers from p (end: the stream ended, framing cannot wait for
// the requests any longer). With h2c, a 101 answer stops it and the bytes
// after it are returned.
func (a *h1Answers) feed(p []byte, end bool) (out []compare.Answer, rest []byte, switched bool) {
	if a.stopped {
		return nil, nil, false
	}
	fromHeld := a.held != nil
	if fromHeld {
		a.held = append(a.held, p...)
		p, a.held = a.held, nil
	}
	for !a.stopped {
		if a.cur == nil {
			if len(p) == 0 {
				break
			}
			n, done, err := a.hb.add(p)
			p = p[n:]
			if err != "" {
				out = append(out, a.malformed(err, a.hb.buf))
				break
			}
			if !done {
				break
			}
			line, hdr, err := parseBlock(a.hb.buf)
			status, ok := parseStatusLine(line)
			if err == "" && !ok {
				err = "invalid status line: " + strconv.Quote(cutUTF8(line, 60))
			}
			if err != "" {
				out = append(out, a.malformed(err, a.hb.buf))
				break
			}
			size := len(a.hb.buf) + a.hb.skipped
			a.hb.reset()
			if status < 200 && status != 101 {
				// Interim: 100 Continue, 103 Early Hints.
				a.pre += size
				continue
			}
			a.cur = &h1Msg{line: line, hdr: hdr, status: status, size: size, body: newBody(a.lim)}
			a.cur.body.hashOnly = hashOnlyBody(hdr)
			a.framed = false
		}
		if !a.framed {
			kind, known := a.c.kind(a.n)
			needless := a.cur.status == 101 || a.cur.status == 204 || a.cur.status == 304
			if !known && !needless && !end && len(p) < maxHeld {
				// p is ours when it came from held; the caller's
				// bytes are copied, once.
				if fromHeld {
					a.held = p
				} else {
					a.held = append([]byte{}, p...)
				}
				return out, nil, false
			}
			m := a.cur
			if m.status == 101 {
				a.cur = nil
				if a.h2c {
					a.pre += m.size
					return out, p, true
				}
				out = append(out, a.answer(m, false))
				a.stopped = true
				break
			}
			fk, n, err := framing(m.hdr, false)
			if kind == reqHead || m.status == 204 || m.status == 304 || kind == reqTunnel && m.status/100 == 2 {
				fk, err = frameNone, ""
			}
			if err != "" {
				a.cur = nil
				out = append(out, a.malformed(err, []byte(m.line)))
				break
			}
			m.br = bodyReader{kind: fk, remain: n}
			a.framed = true
			if kind == reqTunnel && m.status/100 == 2 {
				a.cur = nil
				out = append(out, a.answer(m, false))
				a.stopped = true
				break
			}
		}
		n, done, err := a.cur.br.feed(p, &a.cur.body)
		a.cur.size += n
		p = p[n:]
		if err != "" {
			m := a.cur
			a.cur = nil
			ans := a.answer(m, false)
			ans.Malformed = err
			out = append(out, ans)
			a.stopped = true
			break
		}
		if !done {
			break
		}
		m := a.cur
		a.cur = nil
		out = append(out, a.answer(m, false))
	}
	return out, nil, false
}

func (a *h1Answers) answer(m *h1Msg, truncated bool) compare.Answer {
	if a.names == nil {
		a.names = make(map[string]string)
	}
	fields, detail := answerFields(a.lim, m.status, m.hdr, m.br.trailers, &m.body, a.names)
	lim := a.lim
	ans := compare.Answer{
		Req:       a.n,
		Fields:    fields,
		Detail:    detail,
		Error:     m.status >= 500,
		Truncated: truncated,
		Size:      a.pre + m.size,
		Render:    func() string { return renderSample(lim, m.line, m.hdr, true, m.body.sample) },
	}
	a.n++
	a.pre = 0
	return ans
}

func (a *h1Answers) malformed(err string, b []byte) compare.Answer {
	ans := compare.Answer{Req: a.n, Malformed: err, Size: a.pre + len(b) + a.hb.skipped, Sample: compare.Sample(b, a.lim.Sample)}
	a.n++
	a.pre = 0
	a.stopped = true
	a.hb.reset()
	return ans
}
