package cmpresp

import (
	"bytes"
	"slices"
	"strconv"
	"strings"

	"github.com/stackcopy/stackcopy/compare"
)

// The server side: replies, RESP2 and RESP3, parsed as the RESP3
// specification defines them (a line ends at CRLF; lengths are digits or
// "-1") into the fields of package doc.
//
// Rendering of values nested in aggregates, which the "value" of an
// aggregate joins with ", ":
//
//	bulk string   "text" (Go quoted), or <len=N crc=…> over elemInline bytes
//	simple        +"text"      error  -"text"      bulk error  !"text"
//	verbatim      ="txt:text"  integer 42   double ,3.14   big number (123
//	boolean       true, false  null   nil
//	array         [a, b]       set    ~[a, b]      push  >[a, b]
//	map           {k: v, k2: v2}
//
// Sets' elements and maps' pairs are sorted by their rendering, since
// their order is the server's hash order, which the comparison should not
// see. An aggregate whose rendering would take the kept bytes of the reply
// over Limits.Body is rendered as <len=N crc=…>, the digest of its
// rendering (in the order received: sorting would need it all).

// elemInline is the longest string an aggregate's rendering carries as
// itself, as compare.Value does for a top-level string.
const elemInline = 200

type sstate uint8

const (
	sLine sstate = iota // a type line
	sBulk               // bulk bytes
	sCRLF               // the CRLF after them
	sDead               // malformed: the rest is dropped
)

// frame is an aggregate being parsed.
type frame struct {
	t       byte
	count   int64 // elements (pairs for maps and attributes)
	remain  int64 // values to go
	parts   []string
	kept    int // bytes of parts
	over    bool
	h       compare.Hasher
	key     string // a map's pending key
	haveKey bool
}

// val is a complete value: how it renders nested, and at the top.
type val struct {
	t      byte
	nested string
	value  string
	count  int64 // aggregates; -1 otherwise
	null   bool
	code   string // errors: the first word
}

type answers struct {
	c     *conv
	cur   int // absolute index of the next entry to answer
	st    sstate
	line  []byte
	stack []frame
	kept  int // bytes held in the parts of open frames

	// The bulk string being read.
	bt    byte
	bleft int64
	blen  int64
	bkeep []byte
	bh    compare.Hasher
	crlf  int

	// The message being read (a reply and its attribute).
	size   int
	raw    []byte // its first Sample bytes
	attr   string
	isAttr bool

	// Pairing.
	passive bool // replies answer nothing (RESP2 pub/sub, MONITOR)
	extra   int64
	held    []held
}

type held struct {
	a     compare.Answer
	reset bool // a +RESET reply
	push  bool // a push: it answers nothing, but keeps its place in the order
}

func (a *answers) init() {
	a.bh = compare.NewHasher()
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

func (a *answers) Feed(b []byte) []compare.Answer {
	var out []compare.Answer
	out = a.flush(out, false)
	for len(b) > 0 && a.st != sDead {
		switch a.st {
		case sLine:
			if len(a.line) == 0 && typeName(b[0]) == "" && b[0] != '|' {
				return a.fail(out, "unknown type byte "+strconv.QuoteRune(rune(b[0])))
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
			n := int(min(a.bleft, int64(len(b))))
			a.consume(b[:n])
			a.bh.Feed(b[:n])
			if room := a.keepCap() - len(a.bkeep); room > 0 {
				a.bkeep = append(a.bkeep, b[:min(n, room)]...)
			}
			a.bleft -= int64(n)
			b = b[n:]
			if a.bleft == 0 {
				a.st = sCRLF
			}
		case sCRLF:
			if b[0] != "\r\n"[a.crlf] {
				return a.fail(out, "bulk string not followed by CRLF")
			}
			a.consume(b[:1])
			b = b[1:]
			if a.crlf++; a.crlf == 2 {
				a.crlf = 0
				a.st = sLine
				out = a.done(out, a.bulkVal())
			}
		}
	}
	return out
}

// keepCap is how much of a bulk string is kept: enough for compare.Value
// to render it, up to Limits.Body; longer ones are rendered by their
// digest, which is what compare.Value renders them as.
func (a *answers) keepCap() int { return min(a.c.lim.Body, 64<<10) }

func (a *answers) consume(b []byte) {
	a.size += len(b)
	if room := a.c.lim.Sample - len(a.raw); room > 0 {
		a.raw = append(a.raw, b[:min(len(b), room)]...)
	}
}

// fail ends the stream with an answer that says why. It is paired as a
// reply would be, so that it answers the same command however the streams
// were cut.
func (a *answers) fail(out []compare.Answer, why string) []compare.Answer {
	a.st = sDead
	a.held = append(a.held, held{a: compare.Answer{Malformed: why, Size: a.size, Sample: compare.Sample(a.raw, a.c.lim.Sample)}})
	a.size, a.raw = 0, a.raw[:0]
	return a.flush(out, false)
}

func (a *answers) End() []compare.Answer {
	if a.st != sDead && (a.size > 0 || len(a.line) > 0 || len(a.stack) > 0 || a.st != sLine) {
		a.held = append(a.held, held{a: compare.Answer{Truncated: true, Size: a.size, Sample: compare.Sample(a.raw, a.c.lim.Sample)}})
	}
	a.st = sDead
	return a.flush(nil, true)
}

// typeLine handles a type line: type byte t and body b without CRLF.
func (a *answers) typeLine(out []compare.Answer, t byte, b []byte) ([]compare.Answer, string) {
	switch t {
	case '+', '-':
		return a.done(out, val{t: t, nested: string(t) + strconv.Quote(string(b)), value: compare.Value(b), count: -1, code: errCode(b)}), ""
	case ':':
		if _, ok := parseLong(b); !ok {
			return out, "bad integer"
		}
		return a.done(out, val{t: t, nested: string(b), value: string(b), count: -1}), ""
	case '(':
		d := b
		if len(d) > 0 && (d[0] == '-' || d[0] == '+') {
			d = d[1:]
		}
		if len(d) == 0 || !allDigits(d) || len(b) > 4096 {
			return out, "bad big number"
		}
		return a.done(out, val{t: t, nested: "(" + string(b), value: string(b), count: -1}), ""
	case '_':
		if len(b) != 0 {
			return out, "bad null"
		}
		return a.done(out, val{t: t, nested: "nil", value: "_", count: -1, null: true}), ""
	case '#':
		if len(b) != 1 || (b[0] != 't' && b[0] != 'f') {
			return out, "bad boolean"
		}
		v := "true"
		if b[0] == 'f' {
			v = "false"
		}
		return a.done(out, val{t: t, nested: v, value: v, count: -1}), ""
	case ',':
		if len(b) == 0 || len(b) > 4096 {
			return out, "bad double"
		}
		return a.done(out, val{t: t, nested: "," + string(b), value: compare.Value(b), count: -1}), ""
	case '$', '!', '=':
		n, ok := parseLen(b)
		switch {
		case !ok:
			return out, "bad bulk length"
		case n == -1:
			return a.done(out, val{t: '_', nested: "nil", value: string(t) + "-1", count: -1, null: true}), ""
		}
		a.bt, a.blen, a.bleft = t, n, n
		a.bkeep = a.bkeep[:0]
		a.bh = compare.NewHasher()
		a.st = sBulk
		if n == 0 {
			a.st = sCRLF
		}
		return out, ""
	}
	// '*', '%', '~', '>', '|'
	n, ok := parseLen(b)
	if !ok || (n == -1 && (t == '>' || t == '|')) {
		return out, "bad aggregate length"
	}
	if n == -1 {
		return a.done(out, val{t: '_', nested: "nil", value: string(t) + "-1", count: -1, null: true}), ""
	}
	if len(a.stack) == MaxDepth {
		return out, "aggregates nested deeper than MaxDepth"
	}
	remain := n
	if t == '%' || t == '|' {
		remain *= 2
	}
	a.stack = append(a.stack, frame{t: t, count: n, remain: remain, h: compare.NewHasher()})
	if remain == 0 {
		return a.done(out, val{}), ""
	}
	return out, ""
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
	var nested, value string
	whole := a.blen <= int64(len(a.bkeep))
	if whole {
		value = compare.Value(a.bkeep)
	} else {
		value = a.bh.Value()
	}
	if whole && len(a.bkeep) <= elemInline {
		nested = strconv.Quote(string(a.bkeep))
	} else {
		nested = "<" + a.bh.Value() + ">"
	}
	switch a.bt {
	case '!':
		nested = "!" + nested
	case '=':
		nested = "=" + nested
	}
	return val{t: a.bt, nested: nested, value: value, count: -1, code: errCode(a.bkeep)}
}

// errCode is an error message's first word: its code.
func errCode(msg []byte) string {
	if i := bytes.IndexByte(msg, ' '); i >= 0 {
		msg = msg[:i]
	}
	return compare.Value(msg)
}

// done takes a complete value at the current depth: it adds it to its
// aggregate, completing the aggregates it completes; a complete top-level
// value is an answer (or an attribute, kept for the next one). A val with
// t == 0 means the innermost frame just completed (an empty aggregate).
func (a *answers) done(out []compare.Answer, v val) []compare.Answer {
	for {
		if v.t != 0 {
			if len(a.stack) == 0 {
				return a.top(out, v)
			}
			fr := &a.stack[len(a.stack)-1]
			a.add(fr, v.nested)
			if fr.remain--; fr.remain > 0 {
				return out
			}
		}
		fr := a.stack[len(a.stack)-1]
		a.stack = a.stack[:len(a.stack)-1]
		v = a.close(&fr)
		if fr.t == '|' {
			if len(a.stack) == 0 {
				a.attr, a.isAttr = v.value, true
			}
			// An attribute is not a value of its parent.
			return out
		}
	}
}

// add adds an element's rendering to an aggregate, within the budget of
// kept bytes.
func (a *answers) add(fr *frame, part string) {
	if fr.t == '%' || fr.t == '|' {
		if !fr.haveKey {
			fr.key, fr.haveKey = part, true
			return
		}
		part, fr.key, fr.haveKey = fr.key+": "+part, "", false
	}
	fr.h.Feed([]byte(part))
	fr.h.Feed([]byte(", "))
	if fr.over {
		return
	}
	if a.kept+len(part) > a.c.lim.Body {
		fr.over = true
		a.kept -= fr.kept
		fr.parts, fr.kept = nil, 0
		return
	}
	fr.parts = append(fr.parts, part)
	fr.kept += len(part)
	a.kept += len(part)
}

// close renders a complete aggregate.
func (a *answers) close(fr *frame) val {
	v := val{t: fr.t, count: fr.count}
	if fr.over {
		v.value = fr.h.Value()
		v.nested = "<" + v.value + ">"
		return v
	}
	a.kept -= fr.kept
	open, end := "[", "]"
	switch fr.t {
	case '~':
		open = "~["
	case '>':
		open = ">["
	case '%', '|':
		open, end = "{", "}"
	}
	switch fr.t {
	case '~', '%', '|':
		slices.Sort(fr.parts)
	}
	v.value = open + strings.Join(fr.parts, ", ") + end
	v.nested = v.value
	return v
}

// top makes an answer of a complete top-level value.
func (a *answers) top(out []compare.Answer, v val) []compare.Answer {
	ans := compare.Answer{Size: a.size, Sample: compare.Sample(a.raw, a.c.lim.Sample)}
	typ := typeName(v.t)
	if v.null {
		typ = "null"
	}
	ans.Fields = append(ans.Fields, compare.Field{Name: "type", Value: typ})
	if v.t == '-' || v.t == '!' {
		ans.Error = true
		ans.Fields = append(ans.Fields, compare.Field{Name: "error", Value: v.code})
	}
	if v.count >= 0 {
		ans.Fields = append(ans.Fields, compare.Field{Name: "length", Value: strconv.FormatInt(v.count, 10)})
	}
	ans.Fields = append(ans.Fields, compare.Field{Name: "value", Value: v.value})
	if a.isAttr {
		ans.Fields = append(ans.Fields, compare.Field{Name: "attribute", Value: a.attr})
	}
	a.attr, a.isAttr = "", false
	a.size, a.raw = 0, a.raw[:0]
	a.held = append(a.held, held{a: ans, reset: v.t == '+' && v.value == "RESET", push: v.t == '>'})
	return a.flush(out, false)
}

// flush pairs the held replies with the commands they answer, in order;
// at the end (or beyond maxHeld), those without one answer nothing.
func (a *answers) flush(out []compare.Answer, end bool) []compare.Answer {
	for len(a.held) > 0 {
		h := &a.held[0]
		switch {
		case h.push:
			h.a.Req = -1 // a push answers nothing
		case a.extra > 0:
			a.extra--
			h.a.Req = -1
		case a.passive:
			h.a.Req = -1
			e, ok := a.c.entryAt(a.cur)
			switch {
			case ok && h.reset && e.flags&fReset != 0:
				h.a.Req = e.id
				a.cur++
				a.passive = false
			case !ok && h.reset && !end && len(a.held) <= maxHeld:
				return out // the RESET it answers may be still to come
			}
		default:
			e, ok := a.c.entryAt(a.cur)
			switch {
			case ok:
				h.a.Req = e.id
				a.cur++
				a.passive = e.flags&fPassive != 0
				a.extra = e.extra
			case end || len(a.held) > maxHeld:
				h.a.Req = -1
			default:
				return out // its command is still to come
			}
		}
		out = append(out, h.a)
		a.held[0] = held{}
		a.held = a.held[1:]
	}
	a.held = nil // what the flushed replies held is garbage now
	return out
}
