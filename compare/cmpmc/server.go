package cmpmc

import (
	"bytes"
	"encoding/binary"
	"strconv"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/internal/framekit"
)

// The server side: answer lines and the data blocks of VALUE and VA, and
// the pairing of answers with requests (quiet mode).

type sstate uint8

const (
	sLine   sstate = iota // an answer line
	sData                 // a data block and its CRLF
	sBinary               // a binary protocol header
	sDead                 // malformed: the rest is dropped
)

// Message kinds: answers of several lines.
const (
	mNone  uint8 = iota // between answers
	mGet                // VALUE blocks up to END
	mStats              // lines up to END
)

type answers struct {
	c    *conv
	cur  *compare.Cursor // the next entry to answer
	st   sstate
	line []byte

	// The answer being read.
	mkind  uint8
	fields []compare.Field // meta and one-line answers; a get's items
	names  map[string]int  // a get's keys so far, to keep names unique
	hits   int
	lines  int // stats lines
	more   compare.Hasher
	isErr  bool
	size   int
	raw    []byte
	code   string
	hasO   bool
	o      string
	hasK   bool
	k      string

	// The data block being read: a VALUE item's or a VA's.
	va    bool
	item  *names // the item's key and field names
	flags string
	cas   string
	block framekit.Block
	dkeep []byte
	dh    compare.Hasher

	passive bool // after a stream started: answers answer nothing
	held    []held
	toks    [][]byte
	arena   []byte // where samples are copied to
}

// tokens splits l into a reused buffer, valid until the next call.
func (a *answers) tokens(l []byte) [][]byte {
	a.toks = tokens(a.toks, l)
	return a.toks
}

// codes are the answers' first words that are kept as their code.
var codes = func() map[string]string {
	m := map[string]string{}
	for _, w := range []string{"VALUE", "END", "STAT", "ITEM", "PREFIX", "VA", "HD", "EN", "NF", "NS", "EX", "MN", "ME",
		"VERSION", "ERROR", "CLIENT_ERROR", "SERVER_ERROR", "STORED", "NOT_STORED", "EXISTS", "NOT_FOUND",
		"DELETED", "TOUCHED", "OK", "RESET", "BUSY", "BADCLASS", "NOSPARE", "NOTFULL", "UNSAFE", "SAME"} {
		m[w] = w
	}
	return m
}()

// code is w as a string, without an allocation for the usual words.
func code(w []byte) string {
	if s, ok := codes[string(w)]; ok {
		return s
	}
	return string(w)
}

// flagNames are the field names of meta flags, by flag byte.
var flagNames = func() (n [256]string) {
	for i := range n {
		n[i] = "flag:" + compare.Value([]byte{byte(i)})
	}
	return n
}()

func (a *answers) sampler() func() string {
	return sampler(&a.arena, a.raw, a.c.lim.Sample)
}

// held is a complete answer waiting to be paired.
type held struct {
	a    compare.Answer
	code string
	hasO bool
	o    string
	hasK bool
	k    string
	// bareEnd: a lone END, a get's answer or a stats answer, as the
	// request it pairs with tells.
	bareEnd bool
}

func isError(code string) bool {
	return code == "ERROR" || code == "CLIENT_ERROR" || code == "SERVER_ERROR"
}

func isMeta(code string) bool {
	switch code {
	case "VA", "HD", "EN", "NF", "NS", "EX", "MN", "ME":
		return true
	}
	return false
}

func (a *answers) Feed(b []byte) []compare.Answer {
	out := a.flush(nil, false)
	for len(b) > 0 && a.st != sDead {
		switch a.st {
		case sLine:
			if a.mkind == mNone && len(a.line) == 0 && (b[0] == 0x81 || b[0] == 0x80) {
				a.st = sBinary
				continue
			}
			i := bytes.IndexByte(b, '\n')
			if room := MaxLine + 1 - len(a.line); i < 0 || i >= room {
				// Bytes past MaxLine are not counted: the stream
				// fails at the same byte however it was cut.
				n := min(len(b), room)
				a.consume(b[:n])
				a.line = append(a.line, b[:n]...)
				if len(a.line) > MaxLine {
					return a.fail(out, "answer line longer than MaxLine")
				}
				return out
			}
			a.consume(b[:i+1])
			line := b[:i]
			if len(a.line) > 0 {
				line = append(a.line, line...)
				a.line = a.line[:0]
			}
			b = b[i+1:]
			n := len(line)
			if n > MaxLine {
				return a.fail(out, "answer line longer than MaxLine")
			}
			if n == 0 || line[n-1] != '\r' {
				return a.fail(out, "answer line not ended by CRLF")
			}
			var why string
			if out, why = a.answerLine(out, line[:n-1]); why != "" {
				return a.fail(out, why)
			}
		case sBinary:
			n := min(len(b), binaryHeader-len(a.line))
			a.consume(b[:n])
			a.line = append(a.line, b[:n]...)
			b = b[n:]
			if len(a.line) == binaryHeader {
				// The size is the first packet's, which the header
				// tells, however the stream was cut.
				a.size += int(binary.BigEndian.Uint32(a.line[8:12]))
				return a.fail(out, "binary protocol not compared")
			}
		case sData:
			payload, rest, done, bad := a.block.Take(b)
			a.consume(b[:len(b)-len(rest)])
			a.dh.Feed(payload)
			if room := min(a.c.lim.Body, 64<<10) - len(a.dkeep); room > 0 {
				a.dkeep = append(a.dkeep, payload[:min(len(payload), room)]...)
			}
			b = rest
			switch {
			case bad:
				return a.fail(out, "data block not followed by CRLF")
			case done:
				a.st = sLine
				out = a.dataDone(out)
			}
		}
	}
	return out
}

func (a *answers) consume(b []byte) {
	a.size += len(b)
	if room := a.c.lim.Sample - len(a.raw); room > 0 {
		a.raw = append(a.raw, b[:min(len(b), room)]...)
	}
}

// fail ends the stream with an answer that says why, paired as an answer
// would be.
func (a *answers) fail(out []compare.Answer, why string) []compare.Answer {
	a.st = sDead
	a.held = append(a.held, held{a: compare.Answer{Malformed: why, Size: a.size, Render: a.sampler()}})
	a.reset()
	return a.flush(out, false)
}

func (a *answers) End() []compare.Answer {
	switch {
	case a.st == sBinary:
		a.held = append(a.held, held{a: compare.Answer{Malformed: "binary protocol not compared", Size: a.size, Render: a.sampler()}})
	case a.st != sDead && (a.size > 0 || a.mkind != mNone || a.st != sLine):
		a.held = append(a.held, held{a: compare.Answer{Truncated: true, Size: a.size, Render: a.sampler()}, code: a.code})
	}
	a.st = sDead
	return a.flush(nil, true)
}

// reset clears the answer being read.
func (a *answers) reset() {
	a.mkind, a.fields, a.names, a.hits, a.lines = mNone, nil, nil, 0, 0
	a.isErr, a.size, a.raw, a.code = false, 0, a.raw[:0], ""
	a.hasO, a.o, a.hasK, a.k = false, "", false, ""
}

func (a *answers) field(name, value string) {
	if a.fields == nil {
		a.fields = make([]compare.Field, 0, 4)
	}
	a.fields = append(a.fields, compare.Field{Name: name, Value: value})
}

// answerLine handles an answer line without its CRLF; why is set when it
// is malformed.
func (a *answers) answerLine(out []compare.Answer, l []byte) ([]compare.Answer, string) {
	switch a.mkind {
	case mGet:
		return a.getLine(out, l)
	case mStats:
		return a.statsLine(out, l), ""
	}
	t := a.tokens(l)
	if len(t) == 0 {
		return out, "empty answer line"
	}
	code := code(t[0])
	a.code = code
	switch {
	case code == "VALUE" || code == "END":
		// A bare END also ends an empty stats answer ("stats
		// cachedump" of an empty class): which one it is is settled
		// when it is paired.
		a.mkind = mGet
		a.more = compare.NewHasher()
		return a.getLine(out, l)
	case code == "STAT" || code == "ITEM" || code == "PREFIX":
		a.mkind = mStats
		return a.statsLine(out, l), ""
	case code == "VA":
		if len(t) < 2 {
			return out, "VA without a length"
		}
		n, ok := parseUint(t[1], 1<<32-1)
		if !ok {
			return out, "VA length"
		}
		a.field("status", code)
		a.metaFlags(t[2:])
		a.startData(n, true)
		return out, ""
	case code == "ME":
		// The debug line's fields (last access, expiry) are the
		// server's own.
		a.field("status", code)
	case isMeta(code):
		a.field("status", code)
		a.metaFlags(t[1:])
	case code == "VERSION":
		a.field("status", code)
		a.field("version", compare.Value(bytes.TrimSpace(l[len("VERSION"):])))
	case isError(code):
		a.isErr = true
		a.field("status", code)
		if msg := bytes.TrimSpace(l[bytes.Index(l, t[0])+len(t[0]):]); len(msg) > 0 {
			a.field("message", compare.Value(msg))
		}
	case len(t) == 1 && allDigits(t[0]):
		a.field("status", "NUMBER")
		a.field("value", code)
	default:
		a.field("status", compare.Value(t[0]))
	}
	return a.complete(out), ""
}

func allDigits(b []byte) bool {
	for _, x := range b {
		if x < '0' || x > '9' {
			return false
		}
	}
	return len(b) > 0
}

// metaFlags adds the returned flags of a meta answer, but those that are
// the server's own (c cas, h hit before, l last access, t TTL left), and
// notes the O and k tokens, which pair the answer.
func (a *answers) metaFlags(t [][]byte) {
	var seen [256]bool
	for _, tok := range t {
		f := tok[0]
		switch f {
		case 'O':
			a.hasO, a.o = true, string(tok[1:min(len(tok), 33)])
		case 'k':
			a.hasK, a.k = true, string(tok[1:])
		}
		switch {
		case f == 'c' || f == 'h' || f == 'l' || f == 't' || seen[f]:
			continue
		}
		seen[f] = true
		a.field(flagNames[f], compare.Value(tok[1:]))
	}
}

func (a *answers) startData(n uint64, va bool) {
	a.va = va
	a.block.Start(n)
	a.dkeep = a.dkeep[:0]
	a.dh = compare.NewHasher()
	a.st = sData
}

// dataValue renders the data block just read.
func (a *answers) dataValue() string {
	if a.dh.Len() <= len(a.dkeep) {
		return compare.Value(a.dkeep)
	}
	return a.dh.Value()
}

func (a *answers) dataDone(out []compare.Answer) []compare.Answer {
	if a.va {
		a.field("value", a.dataValue())
		return a.complete(out)
	}
	a.hits++
	if a.hits > maxItems {
		for _, s := range []string{a.item.item, a.flags, a.dataValue()} {
			a.more.Feed([]byte(s))
			a.more.Feed([]byte{0})
		}
		return out
	}
	if a.names == nil {
		a.names = map[string]int{}
	}
	n := a.item
	if a.names[n.item]++; a.names[n.item] > 1 {
		name := n.item + "#" + strconv.Itoa(a.names[n.item])
		n = &names{value: "value:" + name, flags: "flags:" + name, cas: "cas:" + name}
	}
	a.field(n.value, a.dataValue())
	a.field(n.flags, a.flags)
	if a.cas != "" {
		a.field(n.cas, a.cas)
	}
	return out
}

// getLine handles a line of a get answer: VALUE, END, or an error.
func (a *answers) getLine(out []compare.Answer, l []byte) ([]compare.Answer, string) {
	t := a.tokens(l)
	switch {
	case len(t) == 1 && string(t[0]) == "END":
		return a.finishGet(out), ""
	case len(t) > 0 && isError(string(t[0])):
		a.isErr = true
		a.field("status", code(t[0]))
		return a.finishGet(out), ""
	case len(t) < 4 || len(t) > 5 || string(t[0]) != "VALUE":
		return out, "line in a get answer"
	}
	_, ok1 := parseUint(t[2], 1<<32-1)
	n, ok2 := parseUint(t[3], 1<<32-1)
	ok3 := len(t) == 4
	if !ok3 {
		_, ok3 = parseUint(t[4], 1<<64-1)
	}
	if !ok1 || !ok2 || !ok3 || len(t[1]) > maxKey {
		return out, "VALUE line"
	}
	a.item, a.flags, a.cas = a.c.itemNames(t[1]), code(t[2]), ""
	if len(t) == 5 {
		a.cas = string(t[4])
	}
	a.startData(n, false)
	return out, ""
}

func (a *answers) finishGet(out []compare.Answer) []compare.Answer {
	items := a.fields
	a.fields = []compare.Field{{Name: "hits", Value: strconv.Itoa(a.hits)}}
	a.fields = append(a.fields, items...)
	if a.hits > maxItems {
		a.field("more", strconv.Itoa(a.hits-maxItems)+" items "+a.more.Value())
	}
	return a.complete(out)
}

// statsLine handles a line of a stats answer: counted up to END.
func (a *answers) statsLine(out []compare.Answer, l []byte) []compare.Answer {
	t := a.tokens(l)
	switch {
	case len(t) == 1 && string(t[0]) == "END":
		a.field("status", "END")
	case len(t) > 0 && isError(string(t[0])):
		a.isErr = true
		a.field("status", code(t[0]))
	default:
		a.lines++
		return out
	}
	a.field("stats", strconv.Itoa(a.lines))
	return a.complete(out)
}

// complete makes an answer of the one read, to be paired.
func (a *answers) complete(out []compare.Answer) []compare.Answer {
	h := held{
		a:    compare.Answer{Fields: a.fields, Error: a.isErr, Size: a.size, Render: a.sampler()},
		code: a.code, hasO: a.hasO, o: a.o, hasK: a.hasK, k: a.k,
		bareEnd: a.mkind == mGet && a.hits == 0 && !a.isErr,
	}
	a.held = append(a.held, h)
	a.reset()
	return a.flush(out, false)
}

// flush pairs the held answers with the requests they answer, in order;
// at the end (or beyond maxHeld), those without one answer nothing.
func (a *answers) flush(out []compare.Answer, end bool) []compare.Answer {
	for len(a.held) > 0 {
		h := &a.held[0]
		h.a.Req = -1
		if !a.passive {
			i, wait := a.pick(h, end || len(a.held) > maxHeld)
			if wait {
				return out
			}
			if e, ok := a.c.pending.At(i); ok {
				a.cur.At = i + 1
				if !e.quiet {
					h.a.Req = e.id
				}
				if h.bareEnd && e.kind == kStats {
					h.a.Fields = []compare.Field{{Name: "status", Value: "END"}, {Name: "stats", Value: "0"}}
				}
				a.passive = e.kind == kStream
			}
		}
		out = append(out, h.a)
		a.held[0] = held{}
		a.held = a.held[1:]
	}
	a.held = a.held[:0] // the flushed answers were cleared
	return out
}

// pick finds the entry an answer belongs to (see the package doc): its
// absolute index, or -1 for none; wait when it may be a request still to
// come.
func (a *answers) pick(h *held, final bool) (idx int, wait bool) {
	none := func() (int, bool) {
		if final {
			return -1, false
		}
		return -1, true
	}
	p := -1 // the oldest non-quiet entry
	for i := a.cur.At; ; i++ {
		e, ok := a.c.pending.At(i)
		if !ok {
			break
		}
		if h.code == "MN" {
			if e.kind == kMn {
				return i, false
			}
			continue
		}
		if !e.quiet {
			p = i
			break
		}
	}
	if h.code == "MN" {
		return none()
	}
	end := p
	if end < 0 {
		end = a.c.pending.End()
	}
	if h.hasO { // the token proves it
		if p >= 0 {
			if e, _ := a.c.pending.At(p); e.oflag && e.opaque == h.o {
				return p, false
			}
		}
		for i := a.cur.At; i < end; i++ {
			if e, _ := a.c.pending.At(i); e.oflag && e.opaque == h.o {
				return i, false
			}
		}
	}
	// A quiet request before it that can have the answer is taken to
	// have it: memcached answers in order.
	for i := a.cur.At; i < end; i++ {
		if e, _ := a.c.pending.At(i); canGive(e, h) {
			return i, false
		}
	}
	if p < 0 {
		return none()
	}
	if e, _ := a.c.pending.At(p); valid(e.kind, h.code) && flagsMatch(e, h) {
		return p, false
	}
	// The oldest request cannot have it: a guess above gave its answer
	// to a quiet request. The answer is the first later request's that
	// can have it, and the requests passed over go unanswered.
	for i := p + 1; i < p+1+maxSkip; i++ {
		e, ok := a.c.pending.At(i)
		if !ok {
			if !final {
				return -1, true // the request that can have it may be still to come
			}
			break
		}
		if canGive(e, h) || (!e.quiet && valid(e.kind, h.code) && flagsMatch(e, h)) {
			return i, false
		}
	}
	return p, false // the oldest request's answer, odd as it is
}

// maxSkip bounds how far past the oldest request an answer it cannot
// have is looked for.
const maxSkip = 64

// valid tells whether a request of kind can have an answer whose first
// word is code ("" for a malformed or truncated answer).
func valid(kind uint8, code string) bool {
	if isError(code) || code == "" || kind == kStream || kind == kBinary {
		return true
	}
	switch kind {
	case kGet:
		return code == "VALUE" || code == "END"
	case kMg:
		return code == "VA" || code == "HD" || code == "EN"
	case kMa:
		return code == "VA" || code == "HD" || code == "NF" || code == "NS" || code == "EX"
	case kMs:
		return code == "HD" || code == "NS" || code == "EX" || code == "NF"
	case kMd:
		return code == "HD" || code == "NF" || code == "EX"
	case kMn:
		return code == "MN"
	case kMe:
		return code == "ME" || code == "EN"
	}
	// One line (a stats answer's first line too), but neither a data
	// block's nor a meta command's.
	return code != "VALUE" && !isMeta(code)
}

// flagsMatch tells whether a meta answer echoes the O and k tokens that
// request e asked for (other answers echo none).
func flagsMatch(e *entry, h *held) bool {
	if !isMeta(h.code) || h.code == "MN" || h.code == "ME" {
		return true
	}
	return h.hasO == e.oflag && h.o == e.opaque && h.hasK == e.kflag && (!h.hasK || h.k == e.key)
}

// canGive tells whether quiet request e can have the answer: one its
// quiet mode does not suppress, with the tokens it asked for.
func canGive(e *entry, h *held) bool {
	if !e.quiet {
		return false
	}
	if isError(h.code) {
		// A quiet request's own errors are CLIENT_ERROR or
		// SERVER_ERROR; a bare ERROR answers an unknown command.
		return h.code != "ERROR"
	}
	var give bool
	switch e.kind {
	case kMg:
		give = h.code == "VA" || h.code == "HD"
	case kMs:
		give = h.code == "NS" || h.code == "EX" || h.code == "NF"
	case kMd:
		give = h.code == "NF" || h.code == "EX"
	case kMa:
		give = h.code == "NF" || h.code == "NS" || h.code == "EX"
	}
	return give && flagsMatch(e, h)
}
