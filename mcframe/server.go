package mcframe

import "github.com/stackcopy/stackcopy/internal/framekit"

// The server side: answer lines and the data blocks of VALUE and VA.

type sstate uint8

const (
	sLine sstate = iota // an answer line
	sData               // a data block and its CRLF
)

type server struct {
	st    sstate
	lb    framekit.LineBuf
	blk   framekit.Block
	cont  bool // inside a get or stats answer of the front request
	lines int  // lines of the stats answer so far
	va    bool // the data block is a VA's: it completes the request
	// debt counts answers credited to quiet requests by a guess that
	// no later answer has shown wrong or MN has settled.
	debt int
	tok  [maxTokens][]byte
}

func (f *Framer) server(p []byte) {
	s := &f.s
	for len(p) > 0 && !f.sh.Failed() {
		switch s.st {
		case sLine:
			line, rest, ok, over := s.lb.Next(p)
			if over {
				f.fail("server", ErrTooLong, "answer line")
				return
			}
			if !ok {
				return
			}
			p = rest
			n := len(line)
			if n == 0 || line[n-1] != '\r' {
				f.fail("server", ErrMalformed, "answer line not ended by CRLF")
				return
			}
			f.answerLine(line[:n-1])
		case sData:
			_, rest, done, bad := s.blk.Take(p)
			if bad {
				f.fail("server", ErrMalformed, "data block not followed by CRLF")
				return
			}
			if p = rest; !done {
				return
			}
			s.st = sLine
			if s.va {
				f.complete()
			}
		}
	}
}

func (f *Framer) complete() {
	f.q.done()
	f.sh.Answered++
	f.s.cont = false
}

func (f *Framer) data(size []byte, va bool) {
	s := &f.s
	n, ok := parseUint(size, 1<<32-1)
	if !ok {
		f.fail("server", ErrMalformed, "data length")
		return
	}
	s.va, s.st = va, sData
	s.blk.Start(n)
}

func isError(code []byte) bool {
	switch string(code) {
	case "ERROR", "CLIENT_ERROR", "SERVER_ERROR":
		return true
	}
	return false
}

// answerLine handles an answer line, without its CRLF.
func (f *Framer) answerLine(l []byte) {
	s := &f.s
	if s.cont {
		f.contLine(l)
		return
	}
	n := tokens(l, &s.tok)
	if n == 0 {
		f.fail("server", ErrMalformed, "empty answer line")
		return
	}
	code := s.tok[0]
	// The request this answers: the oldest one awaiting an answer that
	// can have it. Quiet requests skipped on the way had theirs
	// suppressed. A quiet request before a request that can have the
	// answer is credited with it if it can give it too (a code it does
	// not suppress, the O and k flags it asked for); without an O or k
	// flag to prove it, that is a guess, and a later answer that the
	// oldest request cannot have (by its code or flags) shows that the
	// guess took its answer: it is complete too. MN answers the oldest mn
	// and proves every request before it complete.
	hasO, o, hasK, k := f.answerFlags(code, n)
	idx := -1
	for i := 0; i < f.q.size && idx < 0; i++ {
		e := f.q.at(i)
		switch {
		case string(code) == "MN":
			if e.kind == kMn {
				idx, s.debt = i, 0
			}
		case e.quiet:
			if f.canGive(e, code, hasO, o, hasK, k) {
				idx = i
				if !hasO && !hasK {
					s.debt++
				}
			}
		case valid(e.kind, code) && flagsMatch(e, code, hasO, o, hasK, k), s.debt == 0:
			idx = i
		default:
			s.debt--
		}
	}
	if idx < 0 {
		f.fail("server", ErrUnpaired, "answer")
		return
	}
	for range idx {
		f.complete()
	}
	e := f.q.at(0)
	switch e.kind {
	case kGet, kStats:
		s.cont, s.lines = true, 0
		f.contLine(l)
		return
	}
	if isError(code) {
		f.complete()
		return
	}
	if string(code) == "VA" && (e.kind == kMg || e.kind == kMa) {
		if n < 2 {
			f.fail("server", ErrMalformed, "VA without a length")
			return
		}
		f.data(s.tok[1], true)
		return
	}
	if !valid(e.kind, code) {
		f.fail("server", ErrMalformed, "answer that the request cannot have")
		return
	}
	f.complete()
}

// valid tells whether a request of kind can have an answer starting with
// code.
func valid(kind uint8, code []byte) bool {
	if isError(code) {
		return true
	}
	switch kind {
	case kGet:
		return is(code, "VALUE", "END")
	case kMg:
		return is(code, "VA", "HD", "EN")
	case kMa:
		return is(code, "VA", "HD", "NF", "NS", "EX")
	case kMs:
		return is(code, "HD", "NS", "EX", "NF")
	case kMd:
		return is(code, "HD", "NF", "EX")
	case kMn:
		return is(code, "MN")
	case kMe:
		return is(code, "ME", "EN")
	}
	// One line (a stats answer's first line too), but neither a data
	// block's nor a meta command's.
	return !is(code, "VALUE", "VA", "HD", "EN", "NF", "NS", "EX", "MN", "ME")
}

func is(code []byte, codes ...string) bool {
	for _, c := range codes {
		if string(code) == c {
			return true
		}
	}
	return false
}

// answerFlags finds the O and k flags of a meta answer line (n tokens in
// s.tok), as hashes.
func (f *Framer) answerFlags(code []byte, n int) (hasO bool, o uint64, hasK bool, k uint64) {
	if !isMeta(code) {
		return
	}
	first := 1
	if string(code) == "VA" {
		first = 2
	}
	for i := first; i < min(n, maxTokens); i++ {
		switch t := f.s.tok[i]; t[0] {
		case 'O':
			hasO, o = true, hash(t[1:])
		case 'k':
			hasK, k = true, hash(t[1:])
		}
	}
	return
}

func isMeta(code []byte) bool {
	return is(code, "VA", "HD", "EN", "NF", "NS", "EX", "MN", "ME")
}

// flagsMatch tells whether a meta answer carries the O and k flags that
// request e asked for (errors, text answers, MN and ME carry none).
func flagsMatch(e *entry, code []byte, hasO bool, o uint64, hasK bool, k uint64) bool {
	if !isMeta(code) || string(code) == "MN" || string(code) == "ME" {
		return true
	}
	return hasO == e.oflag && o == e.opaque && hasK == e.kflag && (!hasK || k == e.key)
}

// canGive tells whether quiet request e can give an answer: a code it
// does not suppress, with the O and k flags it asked for.
func (f *Framer) canGive(e *entry, code []byte, hasO bool, o uint64, hasK bool, k uint64) bool {
	if isError(code) {
		// A quiet request's own errors are CLIENT_ERROR or
		// SERVER_ERROR; a bare ERROR answers an unknown command.
		return string(code) != "ERROR"
	}
	var give bool
	switch e.kind {
	case kMg:
		give = is(code, "VA", "HD")
	case kMs:
		give = is(code, "NS", "EX", "NF")
	case kMd:
		give = is(code, "NF", "EX")
	case kMa:
		give = is(code, "NF", "NS", "EX")
	}
	return give && flagsMatch(e, code, hasO, o, hasK, k)
}

// contLine handles a line of a get or stats answer.
func (f *Framer) contLine(l []byte) {
	s := &f.s
	e := f.q.at(0)
	s.lines++
	if e.kind == kStats {
		n := tokens(l, &s.tok)
		switch {
		case n == 0:
			f.fail("server", ErrMalformed, "empty line in stats")
		case n == 1 && string(l) == "END",
			isError(s.tok[0]),
			s.lines == 1 && (string(l) == "RESET" || string(l) == "OK"):
			f.complete()
		}
		return
	}
	// A get answer, parsed as gomemcache parses it: "END", or
	// "VALUE <key> <flags> <bytes> [<cas>]" with single spaces.
	if string(l) == "END" {
		f.complete()
		return
	}
	var fields [6][]byte
	k := 0
	start := 0
	for i := 0; i <= len(l) && k < len(fields); i++ {
		if i == len(l) || l[i] == ' ' {
			fields[k] = l[start:i]
			k++
			start = i + 1
		}
	}
	if k > 0 && isError(fields[0]) {
		f.complete()
		return
	}
	if k < 4 || k > 5 || string(fields[0]) != "VALUE" {
		f.fail("server", ErrMalformed, "line in a get answer")
		return
	}
	_, ok := parseUint(fields[2], 1<<32-1)
	if k == 5 {
		_, ok2 := parseUint(fields[4], 1<<64-1)
		ok = ok && ok2
	}
	if !ok {
		f.fail("server", ErrMalformed, "VALUE line")
		return
	}
	f.data(fields[3], false)
}
