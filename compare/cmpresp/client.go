package cmpresp

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/internal/framekit"
	"github.com/stackcopy/stackcopy/respframe"
)

// The client side: commands, parsed as Redis's processMultibulkBuffer and
// processInlineBuffer parse them, strict where Redis answers a protocol
// error and closes the connection.

type cstate uint8

const (
	cStart   cstate = iota // between commands
	cMBLen                 // the "*N" line
	cArgLen                // a "$L" line
	cArgData               // an argument's bytes and their CRLF
	cInline                // an inline command line
	cDead                  // malformed: the rest is dropped
)

// maxArgs bounds the arguments kept for the key and the sample; later
// ones are counted.
const maxArgs = 1024

type client struct {
	st    cstate
	line  []byte // a line being gathered across chunks
	nargs int64
	argi  int64
	block framekit.Block // the argument being read

	args   [][]byte // the arguments kept (each cut to the budget)
	lens   []int64  // their full lengths
	budget int      // bytes of arguments still to keep
	size   int      // wire bytes of the command so far
	nextID int

	// Session state, as the commands set it.
	resp3    bool // after HELLO 3
	passive  bool // after a RESP2 SUBSCRIBE or MONITOR: replies answer nothing
	replyOff bool // after CLIENT REPLY OFF
	skipNext bool // after CLIENT REPLY SKIP
}

func (c *conv) Requests(b []byte) []Request {
	var out []Request
	cl := &c.c
	for len(b) > 0 && cl.st != cDead {
		switch cl.st {
		case cStart:
			cl.startCommand(c.lim)
			if b[0] == '*' {
				cl.st = cMBLen
			} else {
				cl.st = cInline
			}
		case cArgData:
			payload, rest, done, bad := cl.block.Take(b)
			cl.keep(payload)
			cl.size += len(b) - len(rest)
			b = rest
			switch {
			case bad:
				out = append(out, c.malformed("argument not followed by CRLF"))
				return out
			case done:
				cl.argi++
				if cl.argi == cl.nargs {
					cl.st = cStart
					out = append(out, c.command())
				} else {
					cl.st = cArgLen
				}
			}
		default: // line states
			if cl.st == cArgLen && len(cl.line) == 0 && b[0] != '$' {
				out = append(out, c.malformed("expected '$' before an argument"))
				return out
			}
			line, rest, ok := cl.readLine(b)
			if !ok {
				if len(cl.line) > MaxLine {
					out = append(out, c.malformed("line longer than MaxLine"))
					return out
				}
				return out
			}
			cl.size += len(b) - len(rest)
			b = rest
			if r, ok := c.clientLine(line); ok {
				out = append(out, r)
			}
		}
	}
	return out
}

// readLine gathers a line up to its LF; line excludes the LF and is valid
// until the next call. Not ok: the line goes on in the next chunk (its
// bytes are held, and counted in size then).
func (cl *client) readLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if room := MaxLine + 1 - len(cl.line); i < 0 || i >= room {
		// Bytes past MaxLine are not counted: the stream fails at
		// the same byte however it was cut.
		n := min(len(b), room)
		cl.size += n
		cl.line = append(cl.line, b[:n]...)
		return nil, nil, false
	}
	if len(cl.line) == 0 {
		return b[:i], b[i+1:], true
	}
	cl.line = append(cl.line, b[:i]...)
	line = cl.line
	cl.line = cl.line[:0]
	return line, b[i+1:], true
}

func (cl *client) startCommand(lim compare.Limits) {
	cl.args, cl.lens = cl.args[:0], cl.lens[:0]
	cl.budget = max(lim.Sample, 256)
}

// newArg starts a kept argument of full length n, reusing the buffers of
// earlier commands (a request's sample is made from a copy).
func (cl *client) newArg(n int64) {
	if k := len(cl.args); k < cap(cl.args) {
		cl.args = cl.args[:k+1]
		cl.args[k] = cl.args[k][:0]
	} else {
		cl.args = append(cl.args, nil)
	}
	cl.lens = append(cl.lens, n)
}

// keep adds bytes to the argument being read, within the budget.
func (cl *client) keep(b []byte) {
	if cl.argi >= maxArgs || len(cl.args) == 0 {
		return
	}
	last := len(cl.args) - 1
	n := min(len(b), cl.budget)
	cl.args[last] = append(cl.args[last], b[:n]...)
	cl.budget -= n
}

// clientLine handles a complete line without its LF; ok when it completes
// a command (or fails the stream).
func (c *conv) clientLine(l []byte) (Request, bool) {
	cl := &c.c
	if len(l) > MaxLine {
		return c.malformed("line longer than MaxLine"), true
	}
	if cl.st == cInline {
		if n := len(l); n > 0 && l[n-1] == '\r' {
			l = l[:n-1]
		}
		cl.st = cStart
		args, ok := splitArgs(l)
		if !ok {
			return c.malformed("unbalanced quotes in an inline command"), true
		}
		if len(args) == 0 {
			return Request{}, false // skipped, its bytes go to the next command
		}
		for _, a := range args {
			cl.argi = int64(len(cl.args))
			if cl.argi < maxArgs {
				cl.newArg(int64(len(a)))
				cl.keep(a)
			}
		}
		cl.nargs = int64(len(args))
		return c.command(), true
	}
	n := len(l)
	if n < 2 || l[n-1] != '\r' {
		return c.malformed("length line not ended by CRLF"), true
	}
	v, ok := respframe.ParseInt(l[1 : n-1])
	if cl.st == cMBLen {
		if !ok || v > 1<<31-1 {
			return c.malformed("bad multibulk length"), true
		}
		if v <= 0 {
			cl.st = cStart // Redis skips it: no command, no reply
			return Request{}, false
		}
		cl.st, cl.nargs, cl.argi = cArgLen, v, 0
		return Request{}, false
	}
	if !ok || v < 0 || v > 1<<40 {
		return c.malformed("bad bulk length"), true
	}
	if cl.argi < maxArgs {
		cl.newArg(v)
	}
	cl.block.Start(uint64(v))
	cl.st = cArgData
	return Request{}, false
}

// Request is compare.Request, named for brevity.
type Request = compare.Request

// malformed ends the client stream with a request that says why.
func (c *conv) malformed(why string) Request {
	cl := &c.c
	cl.st = cDead
	r := Request{ID: cl.nextID, Key: "(malformed)", Size: cl.size, Sample: "malformed: " + why}
	cl.nextID++
	cl.size = 0
	// The server answers a protocol error, which pairs with this.
	c.pending.Add(entry{id: r.ID})
	return r
}

func (c *conv) EndRequests() []Request {
	cl := &c.c
	if cl.st == cDead || (cl.st == cStart && cl.size == 0) {
		return nil
	}
	if cl.st == cStart || (cl.st == cInline && len(bytes.TrimSpace(cl.line)) == 0) {
		return nil // only skipped bytes
	}
	r := Request{ID: cl.nextID, Key: "(partial)", Partial: true, NoAnswer: true, Size: cl.size}
	if len(cl.args) > 0 {
		r.Key = c.key()
		r.Sample = c.sample()
	} else if cl.st == cInline {
		r.Sample = compare.Sample(cl.line, c.lim.Sample)
	}
	cl.nextID++
	cl.st = cDead
	return []Request{r}
}

// argIs tells whether argument i is s, in any case (s is upper case).
func (cl *client) argIs(i int, s string) bool {
	if i >= len(cl.args) || len(cl.args[i]) != len(s) {
		return false
	}
	for j, x := range cl.args[i] {
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if x != s[j] {
			return false
		}
	}
	return true
}

// upper is args[i] in upper case, "" when absent.
func upper(args [][]byte, i int) string {
	if i >= len(args) {
		return ""
	}
	return strings.ToUpper(string(args[i]))
}

// container tells the commands whose first argument is a subcommand.
func container(name string) bool {
	switch name {
	case "CONFIG", "CLIENT", "XINFO", "OBJECT", "SCRIPT", "FUNCTION", "ACL", "CLUSTER",
		"COMMAND", "MEMORY", "MODULE", "XGROUP", "PUBSUB", "SLOWLOG", "LATENCY", "DEBUG":
		return true
	}
	return false
}

// maxWords bounds the command names and keys a conversation remembers,
// so that a repeated command costs no allocation.
const maxWords = 512

// plainName tells a command or subcommand name fit for a key: a short
// printable word, whole.
func plainName(b []byte, full int64) bool {
	if len(b) == 0 || len(b) > 32 || full != int64(len(b)) {
		return false
	}
	for _, x := range b {
		if x <= ' ' || x > '~' {
			return false
		}
	}
	return true
}

// intern returns the string of b from m, adding it (made by mk) while m
// is small.
func intern(m *map[string]string, b []byte, mk func() string) string {
	if s, ok := (*m)[string(b)]; ok {
		return s
	}
	s := mk()
	if *m == nil {
		*m = make(map[string]string)
	}
	if len(*m) < maxWords {
		(*m)[string(b)] = s
	}
	return s
}

// word renders argument i, a command or subcommand name, for a key:
// upper case, or "?" when it is not a short printable word (keys must
// stay few).
func (c *conv) word(i int) string {
	cl := &c.c
	b := cl.args[i]
	if !plainName(b, cl.lens[i]) {
		return "?"
	}
	return intern(&c.words, b, func() string { return strings.ToUpper(string(b)) })
}

func (c *conv) key() string {
	cl := &c.c
	k := c.word(0)
	if !container(k) || len(cl.args) < 2 {
		return k
	}
	var buf [80]byte
	raw := append(append(append(buf[:0], cl.args[0]...), ' '), cl.args[1]...)
	return intern(&c.keys, raw, func() string { return k + " " + c.word(1) })
}

// command completes a command: its request, and what it does to the
// session and to the replies awaited.
func (c *conv) command() Request {
	cl := &c.c
	r := Request{ID: cl.nextID, Key: c.key(), Size: cl.size, Render: c.sampler()}
	cl.nextID++
	cl.size = 0
	name := c.word(0)
	e := entry{id: r.ID}
	switch {
	case name == "RESET":
		// RESET clears subscriptions, reply mode and protocol, and is
		// answered whatever the mode.
		cl.passive, cl.replyOff, cl.skipNext, cl.resp3 = false, false, false, false
		e.flags = fReset
	case cl.passive:
		r.NoAnswer = true
	case name == "CLIENT" && cl.argIs(1, "REPLY") && cl.argIs(2, "ON"):
		cl.replyOff, cl.skipNext = false, false
	case cl.replyOff:
		r.NoAnswer = true
	case name == "CLIENT" && cl.argIs(1, "REPLY") && (cl.argIs(2, "OFF") || cl.argIs(2, "SKIP")):
		r.NoAnswer = true
		if cl.argIs(2, "OFF") {
			cl.replyOff = true
		} else {
			cl.skipNext = true
		}
		return r // a SKIP does not consume a pending skip: it is itself silent
	case cl.skipNext:
		r.NoAnswer = true
	}
	cl.skipNext = false
	if r.NoAnswer {
		return r
	}
	switch name {
	case "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE":
		switch {
		case cl.nargs < 2: // an error reply
		case cl.resp3:
			r.NoAnswer = true // confirmations are pushes
			return r
		default:
			e.flags |= fPassive
			cl.passive = true
		}
	case "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE":
		if cl.resp3 {
			r.NoAnswer = true
			return r
		}
		e.extra = max(cl.nargs-2, 0)
	case "MONITOR", "SYNC", "PSYNC":
		e.flags |= fPassive
		cl.passive = true
	case "HELLO":
		switch string(cl.args[min(1, len(cl.args)-1)]) {
		case "3":
			cl.resp3 = true
		case "2":
			cl.resp3 = false
		}
	}
	c.pending.Add(e)
	return r
}

// sampler copies the command's kept arguments (a few kilobytes at most)
// for its sample to be rendered from when the report keeps it.
func (c *conv) sampler() func() string {
	cl := &c.c
	n := binary.MaxVarintLen64
	for _, a := range cl.args {
		n += len(a) + 2*binary.MaxVarintLen64
	}
	if cap(c.arena)-len(c.arena) < n {
		// The buffers grow from small: a connection may have few
		// commands.
		c.arena = make([]byte, 0, max(min(arenaSize, 2*cap(c.arena)), 512, n))
	}
	start := len(c.arena)
	b := binary.AppendUvarint(c.arena, uint64(cl.nargs))
	for i, a := range cl.args {
		b = binary.AppendUvarint(b, uint64(cl.lens[i]))
		b = binary.AppendUvarint(b, uint64(len(a)))
		b = append(b, a...)
	}
	c.arena = b
	enc, lim := b[start:len(b):len(b)], c.lim
	return func() string { return sample(decodeArgs(enc), lim) }
}

// sample renders the command of c's current arguments.
func (c *conv) sample() string {
	cl := &c.c
	return sample(cmdArgs{args: cl.args, lens: cl.lens, nargs: cl.nargs}, c.lim)
}

// cmdArgs are a command's kept arguments, their full lengths and the
// number of arguments.
type cmdArgs struct {
	args  [][]byte
	lens  []int64
	nargs int64
}

// decodeArgs reads what sampler copied.
func decodeArgs(b []byte) cmdArgs {
	var c cmdArgs
	v, k := binary.Uvarint(b)
	c.nargs, b = int64(v), b[max(k, 0):]
	for len(b) > 0 {
		full, k1 := binary.Uvarint(b)
		if k1 <= 0 {
			break
		}
		n, k2 := binary.Uvarint(b[k1:])
		if k2 <= 0 || n > uint64(len(b)-k1-k2) {
			break
		}
		b = b[k1+k2:]
		c.args = append(c.args, b[:n])
		c.lens = append(c.lens, int64(full))
		b = b[n:]
	}
	return c
}

// secrets tells which arguments of the command a sample redacts.
func secrets(args [][]byte) map[int]bool {
	s := map[int]bool{}
	name := upper(args, 0)
	switch name {
	case "AUTH": // AUTH password, AUTH username password
		if len(args) > 1 {
			s[len(args)-1] = true
		}
	case "HELLO": // HELLO 3 AUTH username password SETNAME name
		for i := 2; i < len(args); i++ {
			if upper(args, i) == "AUTH" {
				s[i+2] = true
				i += 2
			}
		}
	case "MIGRATE": // … AUTH password | AUTH2 username password … KEYS …
		for i := 6; i < len(args); i++ {
			switch upper(args, i) {
			case "AUTH":
				s[i+1] = true
				i++
			case "AUTH2":
				s[i+2] = true
				i += 2
			case "KEYS":
				return s
			}
		}
	case "CONFIG": // CONFIG SET requirepass x masterauth y
		if upper(args, 1) == "SET" {
			for i := 2; i+1 < len(args); i += 2 {
				switch strings.ToLower(string(args[i])) {
				case "requirepass", "masterauth", "masteruser":
					s[i+1] = true
				}
			}
		}
	case "ACL": // ACL SETUSER name on >password #hash
		if upper(args, 1) == "SETUSER" {
			for i := 3; i < len(args); i++ {
				if a := args[i]; len(a) > 0 && (a[0] == '>' || a[0] == '<' || a[0] == '#' || a[0] == '!') {
					s[i] = true
				}
			}
		}
	}
	return s
}

// sample renders a command: plain words as they are, other arguments
// quoted, arguments cut to the budget marked with "…".
func sample(c cmdArgs, lim compare.Limits) string {
	var secret map[int]bool
	if !lim.ShowSecrets {
		secret = secrets(c.args)
	}
	var sb strings.Builder
	for i, a := range c.args {
		if sb.Len() > lim.Sample {
			break
		}
		if i > 0 {
			sb.WriteByte(' ')
		}
		switch {
		case secret[i]:
			sb.WriteString(compare.Redacted)
		case plainWord(a):
			sb.Write(a)
		default:
			sb.WriteString(strconv.Quote(string(a)))
		}
		if int64(len(a)) < c.lens[i] {
			sb.WriteString("…")
		}
	}
	if more := c.nargs - int64(len(c.args)); more > 0 {
		sb.WriteString(" … (" + strconv.FormatInt(more, 10) + " more arguments)")
	}
	return compare.Sample([]byte(sb.String()), lim.Sample)
}

func plainWord(a []byte) bool {
	if len(a) == 0 {
		return false
	}
	for _, x := range a {
		if x <= ' ' || x > '~' || x == '"' || x == '\'' || x == '\\' {
			return false
		}
	}
	return true
}

// splitArgs splits an inline command as Redis's sdssplitargs does
// (quotes, escapes; a NUL ends the line, as it ends the C string there);
// ok is false where Redis answers "unbalanced quotes".
func splitArgs(l []byte) (args [][]byte, ok bool) {
	if i := bytes.IndexByte(l, 0); i >= 0 {
		l = l[:i]
	}
	at := func(i int) byte {
		if i < len(l) {
			return l[i]
		}
		return 0
	}
	isSpace := func(x byte) bool {
		return x == ' ' || x == '\n' || x == '\r' || x == '\t' || x == '\v' || x == '\f'
	}
	i := 0
	for {
		for i < len(l) && isSpace(l[i]) {
			i++
		}
		if i >= len(l) {
			return args, true
		}
		var cur []byte
		inq, insq := false, false
		for done := false; !done; {
			x := at(i)
			switch {
			case inq:
				switch {
				case x == '\\' && at(i+1) == 'x' && isHex(at(i+2)) && isHex(at(i+3)):
					cur = append(cur, unhex(at(i+2))<<4|unhex(at(i+3)))
					i += 3
				case x == '\\' && i+1 < len(l):
					i++
					switch e := l[i]; e {
					case 'n':
						cur = append(cur, '\n')
					case 'r':
						cur = append(cur, '\r')
					case 't':
						cur = append(cur, '\t')
					case 'b':
						cur = append(cur, '\b')
					case 'a':
						cur = append(cur, '\a')
					default:
						cur = append(cur, e)
					}
				case x == '"':
					if i+1 < len(l) && !isSpace(l[i+1]) {
						return nil, false
					}
					done = true
				case i >= len(l):
					return nil, false
				default:
					cur = append(cur, x)
				}
			case insq:
				switch {
				case x == '\\' && at(i+1) == '\'':
					i++
					cur = append(cur, '\'')
				case x == '\'':
					if i+1 < len(l) && !isSpace(l[i+1]) {
						return nil, false
					}
					done = true
				case i >= len(l):
					return nil, false
				default:
					cur = append(cur, x)
				}
			default:
				switch {
				case i >= len(l) || isSpace(x):
					done = true
				case x == '"':
					inq = true
				case x == '\'':
					insq = true
				default:
					cur = append(cur, x)
				}
			}
			if i < len(l) {
				i++
			}
		}
		if cur == nil {
			cur = []byte{}
		}
		args = append(args, cur)
	}
}

func isHex(x byte) bool {
	return ('0' <= x && x <= '9') || ('a' <= x && x <= 'f') || ('A' <= x && x <= 'F')
}

func unhex(x byte) byte {
	switch {
	case x <= '9':
		return x - '0'
	case x <= 'F':
		return x - 'A' + 10
	default:
		return x - 'a' + 10
	}
}
