package cmpresp

import (
	"bytes"
	"strconv"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/internal/framekit"
)

// The server side: replies, RESP2 and RESP3, parsed as the RESP3
// specification defines them (a line ends at CRLF; lengths are digits or
// "-1") into the fields of package doc.
//
// The parse only checks and delimits replies. A reply's bytes are kept
// (an aggregate's up to Limits.Body, others up to Limits.Sample): the
// "value" of an aggregate is the digest of its wire bytes, with a Detail
// that renders it canonically (render.go), which the comparison asks for
// only when the digests differ; the sample is rendered from the same
// bytes, when the report keeps it.

// elemInline is the longest string an aggregate's rendering carries as
// itself, as compare.Value does for a top-level string.
const elemInline = 200

// arenaSize is the size of the buffers the replies' kept bytes are cut
// from: an answer owns its part of one, so most replies cost no
// allocation of their own.
const arenaSize = 16 << 10

type sstate uint8

const (
	sLine sstate = iota // a type line
	sBulk               // bulk bytes and their CRLF
	sDead               // malformed: the rest is dropped
)

// frame is an aggregate being parsed.
type frame struct {
	t      byte
	count  int64 // elements (pairs for maps and attributes)
	remain int64 // values to go
}

// val is a complete value.
type val struct {
	t      byte
	value  string // at the top: the "value" field
	count  int64  // aggregates; -1 otherwise
	null   bool
	code   string // errors: the first word
	detail []byte // a top-level aggregate kept whole: its bytes, rendered on demand
}

type answers struct {
	c     *conv
	cur   *compare.Cursor // the next entry to answer
	st    sstate
	line  []byte
	stack []frame

	// The bulk string being read.
	bt    byte
	btop  bool // a top-level one: its value is wanted
	block framekit.Block
	blen  int64
	bkeep []byte
	bh    compare.Hasher

	// The message being read (a reply and its attribute): its bytes so
	// far are arena[rstart:], a prefix of the size bytes read, at most
	// rawCap of them.
	size   int
	arena  []byte
	rstart int
	rawCap int
	item   int  // offset of the top-level value being read (reply or attribute)
	agg    bool // it is an aggregate or an attribute
	over   bool // not all its bytes are kept: vh digests them
	vh     compare.Hasher
	attr   string
	isAttr bool

	// Pairing.
	passive bool // replies answer nothing (RESP2 pub/sub, MONITOR)
	extra   int64
	held    []held
	hfirst  int // held[:hfirst] are flushed
}

type held struct {
	a     compare.Answer
	reset bool // a +RESET reply
	push  bool // a push: it answers nothing, but keeps its place in the order
}

func (a *answers) init() {
	a.rawCap = a.c.lim.Sample
}

// typeName names a RESP type byte; "" for one that is not a value's
// (the attribute's '|' included).
func typeName(t byte) string {
	switch t {
	case '+':
		return "simple"
	case '-':
		return "error"
	case ':':
		return "integer"
	case '$':
		return "bulk"
	case '_':
		return "null"
	case '*':
		return "array"
	case '%':
		return "map"
	case '~':
		return "set"
	case '>':
		return "push"
	case ',':
		return "double"
	case '#':
		return "boolean"
	case '=':
		return "verbatim"
	case '(':
		return "bignum"
	case '!':
		return "bulk_error"
	}
	return ""
}

// aggregate tells the type bytes of aggregates (and attributes).
func aggregate(t byte) bool {
	switch t {
	case '*', '%', '~', '>', '|':
		return true
	}
	return false
}

func (a *answers) Feed(b []byte) []compare.Answer {
	var out []compare.Answer
	out = a.flush(out, false)
	for len(b) > 0 && a.st != sDead {
		switch a.st {
		case sLine:
			if len(a.line) == 0 {
				if typeName(b[0]) == "" && b[0] != '|' {
					return a.fail(out, "unknown type byte "+strconv.QuoteRune(rune(b[0])))
				}
				if len(a.stack) == 0 {
					a.startItem(b[0])
				}
			}
			i := bytes.IndexByte(b, '\n')
			if room := MaxLine + 1 - len(a.line); i < 0 || i >= room {
				// Bytes past MaxLine are not counted: the stream
				// fails at the same byte however it was cut.
				n := min(len(b), room)
				a.consume(b[:n])
				a.line = append(a.line, b[:n]...)
				if len(a.line) > MaxLine {
					return a.fail(out, "line longer than MaxLine")
				}
				return out
			}
			a.consume(b[:i+1])
			line := b[:i]
			if len(a.line) > 0 {
				a.line = append(a.line, line...)
				line, a.line = a.line, a.line[:0]
			}
			b = b[i+1:]
			n := len(line)
			if n > MaxLine {
				return a.fail(out, "line longer than MaxLine")
			}
			if n < 2 || line[n-1] != '\r' {
				return a.fail(out, "reply line not ended by CRLF")
			}
			var why string
			out, why = a.typeLine(out, line[0], line[1:n-1])
			if why != "" {
				return a.fail(out, why)
			}
		case sBulk:
			payload, rest, done, bad := a.block.Take(b)
			a.consume(b[:len(b)-len(rest)])
			if a.btop {
				if a.blen > a.inline() {
					a.bh.Feed(payload)
				}
				if a.blen <= a.inline() || a.bt == '!' {
					if room := a.keepCap() - len(a.bkeep); room > 0 {
						a.bkeep = append(a.bkeep, payload[:min(len(payload), room)]...)
					}
				}
			}
			b = rest
			switch {
			case bad:
				return a.fail(out, "bulk string not followed by CRLF")
			case done:
				a.st = sLine
				out = a.done(out, a.bulkVal())
			}
		}
	}
	return out
}

// keepCap is how much of a top-level bulk string is kept: enough for
// compare.Value to render it, up to Limits.Body; longer ones are rendered
// by their digest, which is what compare.Value renders them as.
func (a *answers) keepCap() int { return min(a.c.lim.Body, 64<<10) }

// inline is the longest top-level bulk string whose value is itself (a
// longer one's is its digest).
func (a *answers) inline() int64 { return int64(min(a.keepCap(), elemInline)) }

// startItem starts a top-level value (a reply, or the attribute before
// it) of type t: an aggregate's bytes are kept up to Limits.Body, so that
// its canonical rendering can be made from them; other replies' up to
// Limits.Sample, for the sample.
func (a *answers) startItem(t byte) {
	a.item, a.over, a.agg = a.size, false, aggregate(t)
	n := len(a.arena) - a.rstart
	if a.agg && n == a.size {
		a.rawCap = max(a.c.lim.Sample, a.size+a.c.lim.Body)
	} else {
		a.rawCap = max(a.c.lim.Sample, n)
	}
}

// consume counts b in the message and keeps what the message keeps.
func (a *answers) consume(b []byte) {
	n := len(a.arena) - a.rstart
	whole := n == a.size // every byte of the message so far is kept
	a.size += len(b)
	k := min(len(b), max(a.rawCap-n, 0))
	switch {
	case a.over:
		a.vh.Feed(b)
	case a.agg && (!whole || k < len(b)):
		// The aggregate outgrows what is kept: it is digested.
		a.over = true
		a.vh = compare.NewHasher()
		if whole {
			a.vh.Feed(a.arena[a.rstart+a.item:])
		}
		a.vh.Feed(b)
	}
	if k == 0 {
		return
	}
	if len(a.arena)+k > cap(a.arena) {
		// The buffers grow from small: a connection may have few
		// replies.
		nb := make([]byte, n, max(min(arenaSize, 2*cap(a.arena)), 512, 2*(n+k)))
		copy(nb, a.arena[a.rstart:])
		a.arena, a.rstart = nb, 0
	}
	a.arena = append(a.arena, b[:k]...)
}

// takeRaw returns the message's kept bytes, which its answer owns from
// then on, and starts the next message.
func (a *answers) takeRaw() []byte {
	r := a.arena[a.rstart:len(a.arena):len(a.arena)]
	a.rstart = len(a.arena)
	a.size, a.item, a.agg, a.over = 0, 0, false, false
	a.rawCap = a.c.lim.Sample
	return r
}

// itemBytes returns the bytes of the top-level value just completed,
// when all are kept.
func (a *answers) itemBytes() ([]byte, bool) {
	if a.over {
		return nil, false
	}
	return a.arena[a.rstart+a.item:], true
}

// sampler renders a sample from the first limit bytes of raw, on demand.
func sampler(raw []byte, limit int) func() string {
	if len(raw) == 0 {
		return nil
	}
	raw = raw[:min(len(raw), limit)]
	return func() string { return compare.Sample(raw, limit) }
}

// fail ends the stream with an answer that says why. It is paired as a
// reply would be, so that it answers the same command however the streams
// were cut.
func (a *answers) fail(out []compare.Answer, why string) []compare.Answer {
	a.st = sDead
	size := a.size
	a.hold(held{a: compare.Answer{Malformed: why, Size: size, Render: sampler(a.takeRaw(), a.c.lim.Sample)}})
	return a.flush(out, false)
}

func (a *answers) End() []compare.Answer {
	if a.st != sDead && (a.size > 0 || len(a.line) > 0 || len(a.stack) > 0 || a.st != sLine) {
		size := a.size
		a.hold(held{a: compare.Answer{Truncated: true, Size: size, Render: sampler(a.takeRaw(), a.c.lim.Sample)}})
	}
	a.st = sDead
	return a.flush(nil, true)
}

// typeLine handles a type line: type byte t and body b without CRLF.
// Values nested in aggregates are only checked: the aggregate is rendered
// from its bytes when asked.
func (a *answers) typeLine(out []compare.Answer, t byte, b []byte) ([]compare.Answer, string) {
	top := len(a.stack) == 0
	switch t {
	case '+', '-':
		v := val{t: t, count: -1}
		if top {
			v.value = compare.Value(b)
			if t == '-' {
				v.code = errCode(b)
			}
		}
		return a.done(out, v), ""
	case ':':
		if _, ok := parseLong(b); !ok {
			return out, "bad integer"
		}
		v := val{t: t, count: -1}
		if top {
			v.value = string(b)
		}
		return a.done(out, v), ""
	case '(':
		d := b
		if len(d) > 0 && (d[0] == '-' || d[0] == '+') {
			d = d[1:]
		}
		if len(d) == 0 || !allDigits(d) || len(b) > 4096 {
			return out, "bad big number"
		}
		v := val{t: t, count: -1}
		if top {
			v.value = string(b)
		}
		return a.done(out, v), ""
	case '_':
		if len(b) != 0 {
			return out, "bad null"
		}
		return a.done(out, val{t: t, value: "_", count: -1, null: true}), ""
	case '#':
		if len(b) != 1 || (b[0] != 't' && b[0] != 'f') {
			return out, "bad boolean"
		}
		v := "true"
		if b[0] == 'f' {
			v = "false"
		}
		return a.done(out, val{t: t, value: v, count: -1}), ""
	case ',':
		if len(b) == 0 || len(b) > 4096 {
			return out, "bad double"
		}
		v := val{t: t, count: -1}
		if top {
			v.value = compare.Value(b)
		}
		return a.done(out, v), ""
	case '$', '!', '=':
		n, ok := parseLen(b)
		switch {
		case !ok:
			return out, "bad bulk length"
		case n == -1:
			return a.done(out, val{t: '_', value: nullValue(t), count: -1, null: true}), ""
		}
		a.bt, a.blen, a.btop = t, n, top
		a.block.Start(uint64(n))
		if top {
			a.bkeep = a.bkeep[:0]
			a.bh = compare.NewHasher()
		}
		a.st = sBulk
		return out, ""
	}
	// '*', '%', '~', '>', '|'
	n, ok := parseLen(b)
	if !ok || (n == -1 && (t == '>' || t == '|')) {
		return out, "bad aggregate length"
	}
	if n == -1 {
		return a.done(out, val{t: '_', value: nullValue(t), count: -1, null: true}), ""
	}
	if len(a.stack) == MaxDepth {
		return out, "aggregates nested deeper than MaxDepth"
	}
	remain := n
	if t == '%' || t == '|' {
		remain *= 2
	}
	a.stack = append(a.stack, frame{t: t, count: n, remain: remain})
	if remain == 0 {
		return a.done(out, val{}), ""
	}
	return out, ""
}

// nullValue is the "value" of a null bulk string or aggregate: its wire
// form.
func nullValue(t byte) string {
	switch t {
	case '$':
		return "$-1"
	case '*':
		return "*-1"
	}
	return string(t) + "-1"
}

func allDigits(b []byte) bool {
	for _, x := range b {
		if x < '0' || x > '9' {
			return false
		}
	}
	return len(b) > 0
}

// parseLong parses an integer reply: an optional '-' and digits within
// int64.
func parseLong(b []byte) (int64, bool) {
	v, err := strconv.ParseInt(string(b), 10, 64)
	return v, err == nil && (len(b) == 0 || b[0] != '+')
}

// parseLen parses a length: digits or "-1", at most a terabyte.
func parseLen(b []byte) (int64, bool) {
	if string(b) == "-1" {
		return -1, true
	}
	if !allDigits(b) || len(b) > 13 {
		return 0, false
	}
	n, _ := strconv.ParseInt(string(b), 10, 64)
	return n, n <= 1<<40
}

func (a *answers) bulkVal() val {
	v := val{t: a.bt, count: -1}
	if !a.btop {
		return v
	}
	if a.blen <= a.inline() {
		v.value = compare.Value(a.bkeep)
	} else {
		v.value = a.bh.Value()
	}
	if a.bt == '!' {
		v.code = errCode(a.bkeep)
	}
	return v
}

// errCode is an error message's first word: its code.
func errCode(msg []byte) string {
	if i := bytes.IndexByte(msg, ' '); i >= 0 {
		msg = msg[:i]
	}
	return compare.Value(msg)
}

// done takes a complete value at the current depth, completing the
// aggregates it completes; a complete top-level value is an answer (or an
// attribute, kept for the next one). A val with t == 0 means the
// innermost frame just completed (an empty aggregate).
func (a *answers) done(out []compare.Answer, v val) []compare.Answer {
	for {
		if v.t != 0 {
			if len(a.stack) == 0 {
				return a.top(out, v)
			}
			fr := &a.stack[len(a.stack)-1]
			if fr.remain--; fr.remain > 0 {
				return out
			}
		}
		fr := a.stack[len(a.stack)-1]
		a.stack = a.stack[:len(a.stack)-1]
		if fr.t == '|' {
			if len(a.stack) == 0 {
				// A top-level attribute is rendered now: it is rare.
				if b, ok := a.itemBytes(); ok {
					a.attr = render(b, a.c.lim.Body)
				} else {
					a.attr = a.vh.Value()
				}
				a.isAttr = true
			}
			// An attribute is not a value of its parent.
			return out
		}
		v = val{t: fr.t, count: fr.count}
		if len(a.stack) == 0 {
			if b, ok := a.itemBytes(); ok {
				v.value, v.detail = compare.Digest(b), b
			} else {
				v.value = a.vh.Value()
			}
		}
	}
}

// top makes an answer of a complete top-level value.
func (a *answers) top(out []compare.Answer, v val) []compare.Answer {
	typ := typeName(v.t)
	if v.null {
		typ = "null"
	}
	n := 2
	if v.t == '-' || v.t == '!' {
		n++
	}
	if v.count >= 0 {
		n++
	}
	if a.isAttr {
		n++
	}
	fields := make([]compare.Field, 0, n)
	fields = append(fields, compare.Field{Name: "type", Value: typ})
	ans := compare.Answer{Size: a.size}
	if v.t == '-' || v.t == '!' {
		ans.Error = true
		fields = append(fields, compare.Field{Name: "error", Value: v.code})
	}
	if v.count >= 0 {
		fields = append(fields, compare.Field{Name: "length", Value: strconv.FormatInt(v.count, 10)})
	}
	fields = append(fields, compare.Field{Name: "value", Value: v.value})
	if a.isAttr {
		fields = append(fields, compare.Field{Name: "attribute", Value: a.attr})
	}
	ans.Fields = fields
	if v.detail != nil {
		b, limit := v.detail, a.c.lim.Body
		ans.Detail = &compare.Detail{Of: "value", Fields: func() []compare.Field {
			return []compare.Field{{Name: "value", Value: render(b, limit)}}
		}}
	}
	ans.Render = sampler(a.takeRaw(), a.c.lim.Sample)
	a.attr, a.isAttr = "", false
	a.hold(held{a: ans, reset: v.t == '+' && v.value == "RESET", push: v.t == '>'})
	return a.flush(out, false)
}

// hold queues a reply for pairing.
func (a *answers) hold(h held) {
	if a.hfirst > 0 && a.hfirst >= len(a.held)/2 {
		n := copy(a.held, a.held[a.hfirst:])
		clear(a.held[n:])
		a.held, a.hfirst = a.held[:n], 0
	}
	a.held = append(a.held, h)
}

// flush pairs the held replies with the commands they answer, in order;
// at the end (or beyond maxHeld), those without one answer nothing.
func (a *answers) flush(out []compare.Answer, end bool) []compare.Answer {
	for a.hfirst < len(a.held) {
		h := &a.held[a.hfirst]
		pending := len(a.held) - a.hfirst
		switch {
		case h.push:
			h.a.Req = -1 // a push answers nothing
		case a.extra > 0:
			a.extra--
			h.a.Req = -1
		case a.passive:
			h.a.Req = -1
			e, ok := a.c.pending.At(a.cur.At)
			switch {
			case ok && h.reset && e.flags&fReset != 0:
				h.a.Req = e.id
				a.cur.At++
				a.passive = false
			case !ok && h.reset && !end && pending <= maxHeld:
				return out // the RESET it answers may be still to come
			}
		default:
			e, ok := a.c.pending.At(a.cur.At)
			switch {
			case ok:
				h.a.Req = e.id
				a.cur.At++
				a.passive = e.flags&fPassive != 0
				a.extra = e.extra
			case end || pending > maxHeld:
				h.a.Req = -1
			default:
				return out // its command is still to come
			}
		}
		out = append(out, h.a)
		*h = held{} // what the flushed reply held is garbage now
		a.hfirst++
	}
	a.held, a.hfirst = a.held[:0], 0
	return out
}
