package respframe

import "github.com/stackcopy/stackcopy/internal/framekit"

// The server side: replies, RESP2 and RESP3, parsed as redigo's readReply
// parses RESP2 (a line ends at the first LF, which a CR must precede;
// lengths are digits or "-1") and as the RESP3 specification adds types.

type sstate uint8

const (
	sLine sstate = iota // a type line
	sBulk               // bulk bytes and their CRLF
)

// frame is an aggregate being parsed.
type frame struct {
	n, remain int64 // elements in all, elements to go
	attr      bool  // an attribute: not a value of its parent
}

type server struct {
	st    sstate
	lb    framekit.LineBuf
	blk   framekit.Block
	depth int
	stack [MaxDepth]frame

	// The top-level value being parsed.
	top       byte    // its type
	first     capture // its first element, for arrays and pushes
	capturing bool    // the bulk being read is that first element
	third     int64   // its third element, when an integer
	thirdOK   bool
}

// lineTypes are the RESP2 and RESP3 type bytes.
var lineTypes = func() (t [256]bool) {
	for _, c := range "+-:$*_,#(!=%~>|" {
		t[c] = true
	}
	return t
}()

func (f *Framer) server(p []byte) {
	s := &f.s
	for len(p) > 0 && !f.sh.Failed() {
		switch s.st {
		case sLine:
			if len(s.lb.Held()) == 0 && !lineTypes[p[0]] {
				f.fail("server", ErrMalformed, "unknown type byte")
				return
			}
			line, rest, ok, over := s.lb.Next(p)
			if over {
				f.fail("server", ErrTooLong, "reply line")
				return
			}
			if !ok {
				return
			}
			p = rest
			n := len(line)
			if n < 2 || line[n-1] != '\r' {
				f.fail("server", ErrMalformed, "reply line not ended by CRLF")
				return
			}
			f.typeLine(line[0], line[1:n-1])
		case sBulk:
			bulk, rest, done, bad := s.blk.Take(p)
			if s.capturing {
				s.first.add(bulk)
			}
			if bad {
				f.fail("server", ErrMalformed, "bulk string not followed by CRLF")
				return
			}
			if p = rest; !done {
				return
			}
			s.st, s.capturing = sLine, false
			f.valueDone()
		}
	}
}

// typeLine handles a type line: its type byte t and its body b, without
// the CRLF.
func (f *Framer) typeLine(t byte, b []byte) {
	s := &f.s
	if s.depth == 0 && t != '|' {
		s.top, s.thirdOK = t, false
		s.first.reset()
		s.first.long = true // nothing captured yet
	}
	// Which element of a top-level array or push this is.
	elem := int64(-1)
	if s.depth == 1 && !s.stack[0].attr && (s.top == '*' || s.top == '>') {
		elem = s.stack[0].n - s.stack[0].remain
	}
	switch t {
	case '+', '-':
		if elem == 0 && t == '+' {
			s.first.reset()
			s.first.add(b)
		}
		f.valueDone()
	case ':':
		// redigo's grammar: an optional '-' and digits.
		d := b
		if len(d) > 0 && d[0] == '-' {
			d = d[1:]
		}
		if len(d) == 0 || !allDigits(d) {
			f.fail("server", ErrMalformed, "bad integer")
			return
		}
		if elem == 2 {
			s.third, s.thirdOK = ParseInt(b)
		}
		f.valueDone()
	case '(':
		d := b
		if len(d) > 0 && (d[0] == '-' || d[0] == '+') {
			d = d[1:]
		}
		if len(d) == 0 || !allDigits(d) {
			f.fail("server", ErrMalformed, "bad big number")
			return
		}
		f.valueDone()
	case '_':
		if len(b) != 0 {
			f.fail("server", ErrMalformed, "bad null")
			return
		}
		f.valueDone()
	case '#':
		if len(b) != 1 || (b[0] != 't' && b[0] != 'f') {
			f.fail("server", ErrMalformed, "bad boolean")
			return
		}
		f.valueDone()
	case ',':
		if len(b) == 0 {
			f.fail("server", ErrMalformed, "bad double")
			return
		}
		f.valueDone()
	case '$', '!', '=':
		n := parseLen(b)
		switch {
		case n == -2:
			f.fail("server", ErrMalformed, "bad bulk length")
		case n == -1:
			f.valueDone()
		default:
			s.st = sBulk
			s.blk.Start(uint64(n))
			if elem == 0 && t == '$' {
				s.first.reset()
				s.capturing = true
			}
		}
	default: // '*', '%', '~', '>', '|'
		n := parseLen(b)
		if n == -2 || (n == -1 && (t == '>' || t == '|')) {
			f.fail("server", ErrMalformed, "bad aggregate length")
			return
		}
		if n == -1 { // a null array (or map, set: hiredis takes them)
			f.valueDone()
			return
		}
		if t == '%' || t == '|' {
			n *= 2
		}
		if n == 0 {
			if t != '|' {
				f.valueDone()
			}
			return
		}
		if s.depth == MaxDepth {
			f.fail("server", ErrTooDeep, "aggregates")
			return
		}
		s.stack[s.depth] = frame{n: n, remain: n, attr: t == '|'}
		s.depth++
	}
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// valueDone is called when a value is complete at the current depth: it
// counts it in its aggregate, completing the aggregates it completes, and
// a complete top-level value is a reply or a push.
func (f *Framer) valueDone() {
	s := &f.s
	for s.depth > 0 {
		fr := &s.stack[s.depth-1]
		fr.remain--
		if fr.remain > 0 {
			return
		}
		s.depth--
		if fr.attr {
			return // an attribute is not a value of its parent
		}
	}
	f.topDone()
}

// topDone classifies a complete top-level value.
func (f *Framer) topDone() {
	s := &f.s
	name := s.first.bytes()
	switch {
	case s.top == '>':
		if k := pubsubKind(name); k != kNone {
			f.confirmation(k, true)
		}
		return // every other push is out of band
	case s.top == '*' && !f.resp3 && (f.global > 0 || f.shard > 0) && isMessage(name):
		return // a RESP2 pub/sub message
	}
	e := f.q.front()
	if e == nil {
		f.fail("server", ErrUnpaired, "reply")
		return
	}
	switch e.kind {
	case eReply:
		e.n--
		if e.n == 0 {
			f.q.pop()
		}
		f.sh.Answered++
	case eHello:
		switch s.top {
		case '%':
			f.resp3 = true
		case '*':
			f.resp3 = false
		}
		f.q.pop()
		f.sh.Answered++
	case eReset:
		if s.top == '+' {
			f.resp3 = false
			f.global, f.ch, f.pat, f.shard = 0, 0, 0, 0
		}
		f.q.pop()
		f.sh.Answered++
	default: // eSub, eUnsubAll
		if s.top == '*' {
			if k := pubsubKind(name); k != kNone {
				f.confirmation(k, false)
				return
			}
		}
		// An error (or anything else) answers the whole command.
		f.q.pop()
		f.sh.Answered++
	}
}

func isMessage(name []byte) bool {
	switch string(name) {
	case "message", "pmessage", "smessage":
		return true
	}
	return false
}

// confirmation handles a subscription confirmation of kind k, from a RESP3
// push or a RESP2 array: it updates the subscription counts and the
// command awaiting it. An unsolicited push (a shard channel dropped by a
// slot migration) only updates the counts; a RESP2 array that no command
// awaits is a reply to the command at the front.
func (f *Framer) confirmation(k uint8, push bool) {
	s := &f.s
	if !s.thirdOK || s.third < 0 {
		f.fail("server", ErrPubSub, "confirmation without a subscription count")
		return
	}
	switch k % 3 {
	case 2: // shard channels are counted on their own
		f.shard = s.third
	default:
		d := s.third - f.global
		f.global = s.third
		if k%3 == 0 {
			f.ch += d
		} else {
			f.pat += d
		}
		if f.ch < 0 || f.pat < 0 {
			f.fail("server", ErrPubSub, "confirmation count")
			return
		}
	}
	e := f.q.front()
	switch {
	case e != nil && e.kind == eSub && e.sub == k:
		e.n--
		if e.n == 0 {
			f.q.pop()
			f.sh.Answered++
		}
	case e != nil && e.kind == eUnsubAll && e.sub == k:
		left := f.ch
		switch k % 3 {
		case 1:
			left = f.pat
		case 2:
			left = f.shard
		}
		if left == 0 {
			f.q.pop()
			f.sh.Answered++
		}
	case !push:
		if e == nil {
			f.fail("server", ErrUnpaired, "confirmation")
			return
		}
		// A pub/sub command awaiting another kind: this answers it.
		f.q.pop()
		f.sh.Answered++
	}
}
