package cmpmc

import (
	"bytes"
	"encoding/binary"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/internal/framekit"
)

// The client side: command lines, tokenised the way memcached's
// proto_text.c does, and the data blocks of storage commands and ms.

type cstate uint8

const (
	cLine   cstate = iota // a command line
	cSkip                 // the rest of a get line over MaxLine
	cData                 // a data block and its CRLF
	cBinary               // a binary protocol header
	cDead                 // malformed or binary: the rest is dropped
)

type client struct {
	st   cstate
	line []byte // a line being gathered across chunks
	size int    // wire bytes of the request so far

	// The request waiting for its data block (or the rest of its line).
	req   compare.Request
	head  []byte // its line and the kept start of its data, for the sample
	block framekit.Block

	nextID  int
	passive bool // after watch: the server streams
	toks    [][]byte
}

// knownVerbs are the commands memcached knows; other words are keyed "?".
var knownVerbs = func() map[string]string {
	m := map[string]string{}
	for _, w := range []string{"set", "add", "replace", "append", "prepend", "cas", "get", "gets", "gat", "gats",
		"delete", "incr", "decr", "touch", "flush_all", "version", "verbosity", "stats",
		"quit", "shutdown", "mg", "ms", "md", "ma", "mn", "me", "cache_memlimit",
		"slabs", "lru", "lru_crawler", "watch", "misbehave", "debugtime"} {
		m[w] = w
	}
	return m
}()

// knownKey is w as a key when memcached knows the command, else "".
func knownKey(w []byte) string { return knownVerbs[string(w)] }

func (c *conv) Requests(b []byte) []compare.Request {
	var out []compare.Request
	cl := &c.c
	for len(b) > 0 && cl.st != cDead {
		switch cl.st {
		case cLine:
			if len(cl.line) == 0 && b[0] == 0x80 {
				cl.st = cBinary
				continue
			}
			i := bytes.IndexByte(b, '\n')
			if room := MaxLine + 1 - len(cl.line); i < 0 || i >= room {
				// Bytes past MaxLine are not counted but in a get
				// line: the stream fails at the same byte however it
				// was cut.
				n := min(len(b), room)
				cl.size += n
				cl.line = append(cl.line, b[:n]...)
				b = b[n:]
				if len(cl.line) > MaxLine {
					if isGet(firstWord(cl.line)) {
						// A get line may be long: its keys past
						// MaxLine need not be kept.
						cl.st = cSkip
						continue
					}
					out = append(out, c.malformed("command line longer than MaxLine"))
					return out
				}
				return out
			}
			cl.size += i + 1
			line := b[:i]
			if len(cl.line) > 0 {
				line = append(cl.line, line...)
				cl.line = cl.line[:0]
			}
			b = b[i+1:]
			if r, ok := c.commandLine(line); ok {
				out = append(out, r)
			}
		case cBinary:
			n := min(len(b), binaryHeader-len(cl.line))
			cl.line = append(cl.line, b[:n]...)
			b = b[n:]
			if len(cl.line) == binaryHeader {
				out = append(out, c.binary())
				return out
			}
		case cSkip:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				cl.size += len(b)
				return out
			}
			cl.size += i + 1
			b = b[i+1:]
			cl.st = cLine
			line := cl.line[:MaxLine]
			cl.line = cl.line[:0]
			if r, ok := c.commandLine(line); ok {
				if render := r.Render; render != nil {
					r.Render = func() string { return render() + "…" }
				} else {
					r.Sample += "…"
				}
				out = append(out, r)
			}
		case cData:
			payload, rest, done, bad := cl.block.Take(b)
			if room := c.lim.Sample - len(cl.head); room > 0 {
				cl.head = append(cl.head, payload[:min(len(payload), room)]...)
			}
			cl.size += len(b) - len(rest)
			b = rest
			switch {
			case bad:
				// memcached answers "CLIENT_ERROR bad data chunk" and
				// reads on from a point that depends on its version.
				out = append(out, c.malformed("data block not followed by CRLF"))
				return out
			case done:
				cl.st = cLine
				r := cl.req // its Size holds its line's
				r.Size, r.Render = r.Size+cl.size, sampler(&c.arena, cl.head, c.lim.Sample)
				cl.size = 0
				out = append(out, r)
			}
		}
	}
	return out
}

func firstWord(l []byte) []byte {
	l = l[:min(len(l), 64)]
	i := 0
	for i < len(l) && l[i] == ' ' {
		i++
	}
	j := i
	for j < len(l) && l[j] != ' ' {
		j++
	}
	if i == j {
		return nil
	}
	return l[i:j]
}

func isGet(w []byte) bool {
	switch string(w) {
	case "get", "gets", "gat", "gats":
		return true
	}
	return false
}

// newRequest starts a request of the line l.
func (c *conv) newRequest(key string, l []byte) compare.Request {
	cl := &c.c
	r := compare.Request{ID: cl.nextID, Key: key, Size: cl.size}
	if l != nil {
		r.Render = sampler(&c.arena, l, c.lim.Sample)
	}
	cl.nextID++
	cl.size = 0
	return r
}

// malformed ends the client stream with a request that says why.
func (c *conv) malformed(why string) compare.Request {
	cl := &c.c
	key := "(malformed)"
	if cl.st == cData {
		// The request of the data block already has its ID and entry:
		// it is the one that failed.
		r := cl.req
		r.Key, r.Size, r.Sample = key, r.Size+cl.size, "malformed: "+why
		cl.size, cl.st = 0, cDead
		return r
	}
	r := c.newRequest(key, nil)
	r.Sample = "malformed: " + why
	cl.st = cDead
	c.pending.Add(entry{id: r.ID, kind: kLine}) // memcached answers an error
	return r
}

// binaryHeader is the length of a binary protocol packet's header.
const binaryHeader = 24

// binary ends the client stream at the header of a binary request (or at
// what the stream had of it): the binary protocol is not compared. The
// request's size is the first packet's, which the header tells.
func (c *conv) binary() compare.Request {
	cl := &c.c
	r := c.newRequest("binary", nil)
	r.Size = len(cl.line)
	if len(cl.line) == binaryHeader {
		r.Size += int(binary.BigEndian.Uint32(cl.line[8:12]))
	} else {
		r.Partial = true
	}
	r.Sample = "binary protocol not compared"
	cl.st = cDead
	c.pending.Add(entry{id: r.ID, kind: kBinary})
	return r
}

func (c *conv) EndRequests() []compare.Request {
	cl := &c.c
	switch cl.st {
	case cBinary:
		return []compare.Request{c.binary()}
	case cData:
		r := cl.req
		r.Partial, r.Size, r.Render = true, r.Size+cl.size, sampler(&c.arena, cl.head, c.lim.Sample)
		cl.st = cDead
		return []compare.Request{r}
	case cLine, cSkip:
		if len(bytes.TrimSpace(cl.line)) == 0 {
			return nil
		}
		key := "?"
		if w := knownKey(firstWord(cl.line)); w != "" {
			key = w
		}
		r := c.newRequest(key, cl.line)
		r.Partial, r.NoAnswer = true, true
		cl.st = cDead
		return []compare.Request{r}
	}
	return nil
}

// commandLine handles a complete command line without its LF; ok when
// it completes a request (a storage command's waits for its data).
func (c *conv) commandLine(l []byte) (compare.Request, bool) {
	cl := &c.c
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1] // memcached also takes a bare LF
	}
	cl.toks = tokens(cl.toks, l)
	t := cl.toks
	if len(t) == 0 {
		r := c.newRequest("(empty)", l)
		c.answerable(&r, entry{kind: kLine}) // memcached answers ERROR
		return r, true
	}
	key := knownKey(t[0])
	if key == "" {
		key = "?"
	}
	verb := key
	noreply := len(t) > 1 && string(t[len(t)-1]) == "noreply"
	switch verb {
	case "set", "add", "replace", "append", "prepend", "cas":
		want := 5
		if verb == "cas" {
			want = 6
		}
		if noreply {
			want++
		}
		if len(t) != want {
			// memcached answers an error and reads the data block as
			// a command.
			return c.malformed("storage command line"), true
		}
		_, ok1 := parseUint(t[2], 1<<32-1)
		size, ok2 := parseUint(t[4], 1<<31-3)
		if !ok1 || !ok2 || len(t[1]) > maxKey || !isInt(t[3]) {
			return c.malformed("storage command line"), true
		}
		r := c.newRequest(key, nil)
		r.NoAnswer = noreply
		c.answerable(&r, entry{kind: kStore})
		c.dataBlock(r, l, size)
		return compare.Request{}, false
	case "get", "gets", "gat", "gats":
		r := c.newRequest(key, l)
		c.answerable(&r, entry{kind: kGet})
		return r, true
	case "stats":
		r := c.newRequest(key, l)
		c.answerable(&r, entry{kind: kStats})
		return r, true
	case "delete", "incr", "decr", "touch", "flush_all", "verbosity":
		r := c.newRequest(key, l)
		r.NoAnswer = noreply
		c.answerable(&r, entry{kind: kLine})
		return r, true
	case "quit":
		r := c.newRequest(key, l)
		r.NoAnswer = true // memcached closes the connection
		return r, true
	case "watch":
		r := c.newRequest(key, l)
		c.answerable(&r, entry{kind: kStream})
		cl.passive = true
		return r, true
	case "lru_crawler":
		r := c.newRequest(key, l)
		e := entry{kind: kLine}
		if len(t) > 1 && (string(t[1]) == "metadump" || string(t[1]) == "mgdump") {
			e.kind = kStream
		}
		c.answerable(&r, e)
		cl.passive = cl.passive || e.kind == kStream
		return r, true
	case "mg", "md", "ma", "me", "ms", "mn":
		return c.meta(key, l, t)
	}
	// version, shutdown, cache_memlimit, slabs, … and unknown words: one
	// line (ERROR for the unknown).
	r := c.newRequest(key, l)
	c.answerable(&r, entry{kind: kLine})
	return r, true
}

// answerable records that r awaits an answer, unless it is NoAnswer (or
// follows a stream, after which nothing is paired).
func (c *conv) answerable(r *compare.Request, e entry) {
	if c.c.passive {
		r.NoAnswer = true
		return
	}
	if r.NoAnswer && !e.quiet {
		return
	}
	e.id = r.ID
	c.pending.Add(e)
}

func isInt(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	_, ok := parseUint(b, 1<<63-1)
	return ok
}

// dataBlock starts reading the data block of request r, whose line is l.
func (c *conv) dataBlock(r compare.Request, l []byte, size uint64) {
	cl := &c.c
	cl.req = r
	cl.head = append(append(cl.head[:0], l...), "\r\n"...)
	cl.block.Start(size)
	cl.st = cData
}

// meta handles a meta command line of tokens t.
func (c *conv) meta(key string, l []byte, t [][]byte) (compare.Request, bool) {
	var e entry
	switch key {
	case "mg":
		e.kind = kMg
	case "ms":
		e.kind = kMs
	case "md":
		e.kind = kMd
	case "ma":
		e.kind = kMa
	case "mn":
		e.kind = kMn
	case "me":
		e.kind = kMe
	}
	if e.kind == kMn {
		r := c.newRequest(key, l)
		c.answerable(&r, e)
		return r, true
	}
	if len(t) < 2 {
		if e.kind == kMs {
			return c.malformed("ms without a key"), true
		}
		r := c.newRequest(key, l)
		c.answerable(&r, entry{kind: kLine}) // memcached answers an error
		return r, true
	}
	if len(t[1]) > maxKey {
		return c.malformed("key longer than 250 bytes"), true
	}
	first := 2
	var size uint64
	if e.kind == kMs {
		var ok bool
		if len(t) < 3 {
			return c.malformed("ms without a data length"), true
		}
		if size, ok = parseUint(t[2], 1<<31-3); !ok {
			return c.malformed("ms data length"), true
		}
		first = 3
	}
	for _, tok := range t[first:] {
		switch tok[0] {
		case 'q':
			e.quiet = true
		case 'k':
			e.kflag = true
		case 'O':
			e.oflag, e.opaque = true, string(tok[1:min(len(tok), 33)])
		}
	}
	e.key = string(t[1])
	r := c.newRequest(key, l)
	// A quiet request's answer may not come: it is not compared, but
	// what does come is told apart from the next request's answers.
	r.NoAnswer = e.quiet
	c.answerable(&r, e)
	if e.kind == kMs {
		c.dataBlock(r, l, size)
		return compare.Request{}, false
	}
	return r, true
}
