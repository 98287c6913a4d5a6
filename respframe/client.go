package respframe

import "github.com/stackcopy/stackcopy/internal/framekit"

// The client side: commands, parsed the way Redis's processMultibulkBuffer
// and processInframekit.LineBuffer do, but strict where Redis would answer a
// protocol error and close the connection (the framer goes Err there).

type cstate uint8

const (
	cStart   cstate = iota // between commands
	cMBLen                 // the "*N" line
	cArgLen                // a "$L" line
	cArgData               // an argument's bytes and their CRLF
	cInline                // an inline command line
)

type client struct {
	st      cstate
	lb      framekit.LineBuf
	nargs   int64
	argi    int64
	blk     framekit.Block
	args    [3]capture // the first three arguments, lower-cased
	inMulti bool       // between MULTI and EXEC/DISCARD/RESET
}

func (f *Framer) client(p []byte) {
	c := &f.c
	for len(p) > 0 && !f.sh.Failed() {
		switch c.st {
		case cStart:
			if p[0] == '*' {
				c.st = cMBLen
			} else {
				c.st = cInline
			}
		case cArgData:
			arg, rest, done, bad := c.blk.Take(p)
			if c.argi < int64(len(c.args)) {
				c.args[c.argi].add(arg)
			}
			if bad {
				f.fail("client", ErrMalformed, "argument not followed by CRLF")
				return
			}
			if p = rest; !done {
				return
			}
			c.argi++
			if c.argi == c.nargs {
				c.st = cStart
				f.command(c.nargs)
			} else {
				c.st = cArgLen
			}
		default: // line states
			if c.st == cArgLen && len(c.lb.Held()) == 0 && p[0] != '$' {
				// Checked at once, so that garbage fails at its first
				// byte instead of being buffered up to MaxLine.
				f.fail("client", ErrMalformed, "argument does not start with '$'")
				return
			}
			line, rest, ok, over := c.lb.Next(p)
			if over {
				f.fail("client", ErrTooLong, "command line")
				return
			}
			if !ok {
				return
			}
			p = rest
			f.clientLine(line)
		}
	}
}

// clientLine handles a complete line of the client side, without its LF.
func (f *Framer) clientLine(l []byte) {
	c := &f.c
	if c.st == cInline {
		if n := len(l); n > 0 && l[n-1] == '\r' {
			l = l[:n-1]
		}
		c.st = cStart
		for i := range c.args {
			c.args[i].reset()
		}
		n, ok := splitArgs(l, &c.args)
		if !ok {
			f.fail("client", ErrMalformed, "unbalanced quotes in an inline command")
			return
		}
		if n > 0 {
			f.command(n)
		}
		return
	}
	// Redis ends these lines at the CR; it must be there.
	n := len(l)
	if n < 2 || l[n-1] != '\r' {
		f.fail("client", ErrMalformed, "length line not ended by CRLF")
		return
	}
	v, ok := ParseInt(l[1 : n-1])
	if c.st == cMBLen {
		if !ok || v > 1<<31-1 {
			f.fail("client", ErrMalformed, "bad multibulk length")
			return
		}
		if v <= 0 {
			c.st = cStart // Redis skips it: no command, no reply
			return
		}
		c.st, c.nargs, c.argi = cArgLen, v, 0
		for i := range c.args {
			c.args[i].reset()
		}
		return
	}
	if !ok || v < 0 || v > maxLen {
		f.fail("client", ErrMalformed, "bad bulk length")
		return
	}
	c.st = cArgData
	c.blk.Start(uint64(v))
}

// command classifies a complete command of nargs arguments and queues
// what its answer will be.
func (f *Framer) command(nargs int64) {
	c := &f.c
	e := entry{kind: eReply, n: 1}
	name := c.args[0].bytes()
	switch k := pubsubKind(name); {
	case k != kNone:
		if c.inMulti {
			f.fail("client", ErrUnsupported, "pub/sub command inside MULTI")
			return
		}
		switch {
		case nargs > 1:
			e = entry{kind: eSub, sub: k, n: nargs - 1}
		case k >= kUnsubscribe:
			e = entry{kind: eUnsubAll, sub: k}
		}
		// Else a SUBSCRIBE without channels: an ordinary error reply.
	case c.args[0].is("hello"):
		if c.inMulti {
			f.fail("client", ErrUnsupported, "HELLO inside MULTI")
			return
		}
		e.kind = eHello
	case c.args[0].is("reset"):
		c.inMulti = false
		e.kind = eReset
	case c.args[0].is("multi"):
		c.inMulti = true
	case c.args[0].is("exec"), c.args[0].is("discard"):
		c.inMulti = false
	case c.args[0].is("client"):
		if nargs >= 3 && c.args[1].is("reply") && (c.args[2].is("off") || c.args[2].is("skip")) {
			f.fail("client", ErrUnsupported, "CLIENT REPLY OFF or SKIP")
			return
		}
	case c.args[0].is("monitor"), c.args[0].is("sync"), c.args[0].is("psync"), c.args[0].is("replconf"):
		f.fail("client", ErrUnsupported, "MONITOR or replication command")
		return
	}
	if !f.q.push(e) {
		f.fail("client", ErrPipeline, "more than maxPending entries")
		return
	}
	f.sh.Requested++
}

// splitArgs counts the arguments of an inline command the way Redis's
// sdssplitargs splits it (quotes, escapes; a NUL ends the line, as it ends
// the C string there) and captures the first ones; ok is false where Redis
// answers "unbalanced quotes".
func splitArgs(l []byte, caps *[3]capture) (n int64, ok bool) {
	at := func(i int) byte { // the C string's byte i
		if i < len(l) {
			return l[i]
		}
		return 0
	}
	isSpace := func(c byte) bool {
		return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f'
	}
	var one [1]byte
	i := 0
	for {
		for at(i) != 0 && isSpace(at(i)) {
			i++
		}
		if at(i) == 0 {
			return n, true
		}
		var cp *capture
		if n < int64(len(caps)) {
			cp = &caps[n]
		}
		emit := func(c byte) {
			if cp != nil {
				one[0] = c
				cp.add(one[:])
			}
		}
		inq, insq := false, false
		for done := false; !done; {
			c := at(i)
			switch {
			case inq:
				switch {
				case c == '\\' && at(i+1) == 'x' && isHex(at(i+2)) && isHex(at(i+3)):
					emit(unhex(at(i+2))<<4 | unhex(at(i+3)))
					i += 3
				case c == '\\' && at(i+1) != 0:
					i++
					switch e := at(i); e {
					case 'n':
						emit('\n')
					case 'r':
						emit('\r')
					case 't':
						emit('\t')
					case 'b':
						emit('\b')
					case 'a':
						emit('\a')
					default:
						emit(e)
					}
				case c == '"':
					if at(i+1) != 0 && !isSpace(at(i+1)) {
						return n, false
					}
					done = true
				case c == 0:
					return n, false
				default:
					emit(c)
				}
			case insq:
				switch {
				case c == '\\' && at(i+1) == '\'':
					i++
					emit('\'')
				case c == '\'':
					if at(i+1) != 0 && !isSpace(at(i+1)) {
						return n, false
					}
					done = true
				case c == 0:
					return n, false
				default:
					emit(c)
				}
			default:
				switch c {
				case ' ', '\n', '\r', '\t', 0:
					done = true
				case '"':
					inq = true
				case '\'':
					insq = true
				default:
					emit(c)
				}
			}
			if at(i) != 0 {
				i++
			}
		}
		n++
	}
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}
