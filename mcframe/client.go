package mcframe

import (
	"bytes"

	"github.com/stackcopy/stackcopy/internal/framekit"
)

// The client side: command lines, tokenised the way memcached's
// proto_text.c does, and the data blocks of storage commands.

type cstate uint8

const (
	cLine cstate = iota // a command line
	cSkip               // the rest of a long get line
	cData               // a data block and its CRLF
)

type client struct {
	st      cstate
	lb      framekit.LineBuf
	blk     framekit.Block
	tok     [maxTokens][]byte
	noreply bool // the data block being read is a noreply command's
}

func (f *Framer) client(p []byte) {
	c := &f.c
	for len(p) > 0 && !f.sh.Failed() {
		switch c.st {
		case cLine:
			if len(c.lb.Held()) == 0 && p[0] == 0x80 {
				f.fail("client", ErrUnsupported, "binary protocol")
				return
			}
			line, rest, ok, over := c.lb.Next(p)
			if over {
				// A get line may be long: its keys need not be kept.
				if isGet(firstToken(c.lb.Held(), p)) {
					c.lb.Drop()
					c.st = cSkip
					continue
				}
				f.fail("client", ErrTooLong, "command line")
				return
			}
			if !ok {
				return
			}
			p = rest
			f.commandLine(line)
		case cSkip:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				return
			}
			p = p[i+1:]
			c.st = cLine
			f.request(entry{kind: kGet})
		case cData:
			_, rest, done, bad := c.blk.Take(p)
			if bad {
				// memcached answers "CLIENT_ERROR bad data chunk" and
				// reads on from a point that depends on its version.
				f.fail("client", ErrMalformed, "data block not followed by CRLF")
				return
			}
			if p = rest; !done {
				return
			}
			c.st = cLine
			if !c.noreply {
				f.sh.Requested++ // queued at its command line
			}
		}
	}
}

// firstToken returns the first token of the line made of buf and then p.
func firstToken(buf, p []byte) []byte {
	l := buf
	if len(l) == 0 {
		l = p
	}
	for len(l) > 0 && l[0] == ' ' {
		l = l[1:]
	}
	if i := bytes.IndexByte(l, ' '); i >= 0 {
		return l[:i]
	}
	return nil // the word has not ended
}

func isGet(w []byte) bool {
	switch string(w) {
	case "get", "gets", "gat", "gats":
		return true
	}
	return false
}

func (f *Framer) request(e entry) {
	if !f.q.push(e) {
		f.fail("client", ErrPipeline, "more than maxPending entries")
		return
	}
	f.sh.Requested++
}

// commandLine handles a complete command line, without its LF.
func (f *Framer) commandLine(l []byte) {
	c := &f.c
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1] // memcached also takes a bare LF
	}
	t := &c.tok
	n := tokens(l, t)
	if n == 0 {
		f.request(entry{kind: kLine}) // memcached answers ERROR
		return
	}
	noreply := n > 1 && n <= maxTokens && string(t[n-1]) == "noreply"
	switch string(t[0]) {
	case "set", "add", "replace", "append", "prepend", "cas":
		want := 5
		if string(t[0]) == "cas" {
			want = 6
		}
		if noreply {
			want++
		}
		if n != want {
			// memcached answers ERROR and reads the data block as
			// a command.
			f.fail("client", ErrMalformed, "storage command line")
			return
		}
		_, ok1 := parseUint(t[2], 1<<32-1)
		size, ok2 := parseUint(t[4], 1<<31-3)
		if !ok1 || !ok2 || len(t[1]) > maxKey || !isInt(t[3]) {
			f.fail("client", ErrMalformed, "storage command line")
			return
		}
		f.dataBlock(entry{kind: kStore}, size, noreply)
	case "get", "gets", "gat", "gats":
		f.request(entry{kind: kGet})
	case "stats":
		f.request(entry{kind: kStats})
	case "delete", "incr", "decr", "touch", "flush_all", "verbosity":
		if !noreply {
			f.request(entry{kind: kLine})
		}
	case "quit":
		// No answer: memcached closes the connection.
	case "watch":
		f.fail("client", ErrUnsupported, "watch")
	case "lru_crawler":
		if n > 1 && (string(t[1]) == "metadump" || string(t[1]) == "mgdump") {
			f.fail("client", ErrUnsupported, "lru_crawler dump")
			return
		}
		f.request(entry{kind: kLine})
	case "mg", "md", "ma", "me", "ms", "mn":
		f.meta(t, n)
	default:
		// version, shutdown, cache_memlimit, slabs, lru, misbehave, …
		// and unknown words: one line (ERROR for the unknown).
		f.request(entry{kind: kLine})
	}
}

func isInt(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	_, ok := parseUint(b, 1<<63-1)
	return ok
}

// meta handles a meta command line of n tokens.
func (f *Framer) meta(t *[maxTokens][]byte, n int) {
	var e entry
	switch string(t[0]) {
	case "mg":
		e.kind = kMg
	case "md":
		e.kind = kMd
	case "ma":
		e.kind = kMa
	case "me":
		e.kind = kMe
	case "mn":
		f.request(entry{kind: kMn})
		return
	case "ms":
		e.kind = kMs
	}
	if n < 2 {
		// memcached answers an error line ("ERROR"); for ms it cannot
		// tell the data block either.
		if e.kind == kMs {
			f.fail("client", ErrMalformed, "ms without a key")
			return
		}
		f.request(entry{kind: kLine})
		return
	}
	if len(t[1]) > maxKey {
		f.fail("client", ErrMalformed, "key longer than 250 bytes")
		return
	}
	first := 2
	var size uint64
	if e.kind == kMs {
		var ok bool
		if n < 3 {
			f.fail("client", ErrMalformed, "ms without a data length")
			return
		}
		if size, ok = parseUint(t[2], 1<<31-3); !ok {
			f.fail("client", ErrMalformed, "ms data length")
			return
		}
		first = 3
	}
	for i := first; i < min(n, maxTokens); i++ {
		switch tok := t[i]; tok[0] {
		case 'q':
			e.quiet = true
		case 'k':
			e.kflag = true
		case 'O':
			e.oflag, e.opaque = true, hash(tok[1:])
		}
	}
	e.key = hash(t[1])
	if e.kind == kMs {
		f.dataBlock(e, size, false)
		return
	}
	f.request(e)
}

// dataBlock starts reading a storage command's data block. The command is
// a request once the block is complete, but it awaits its answer from its
// command line on: memcached answers a value too large for it ("SERVER_ERROR
// object too large for cache") before the block has arrived.
func (f *Framer) dataBlock(e entry, size uint64, noreply bool) {
	c := &f.c
	if !noreply && !f.q.push(e) {
		f.fail("client", ErrPipeline, "more than maxPending entries")
		return
	}
	c.noreply, c.st = noreply, cData
	c.blk.Start(size)
}
