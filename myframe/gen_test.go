package myframe

import (
	"bytes"
	"math/rand/v2"
)

// A generator of valid conversations, with the counts the framer must show
// after each step: every message kind the framer follows, pipelined and
// not, empty and huge values.

type gen struct {
	rng  *rand.Rand
	conv conversation
	caps uint64
	req  int
	ans  int
	seq  byte

	huge      bool // allow messages over 16 MiB
	oracle    bool // only what go-sql-driver can take
	batch     bool // pipelining: collect client and server bytes apart
	bcli, bsv []byte
}

func (g *gen) pick(n int) int { return g.rng.IntN(n) }

func (g *gen) cli(payload []byte) {
	b := packets(&g.seq, payload)
	if g.batch {
		g.bcli = append(g.bcli, b...)
		return
	}
	g.conv.add(true, b, g.req, g.ans)
}

func (g *gen) srv(payload []byte) {
	b := packets(&g.seq, payload)
	if g.batch {
		g.bsv = append(g.bsv, b...)
		return
	}
	g.conv.add(false, b, g.req, g.ans)
}

// reqDone and ansDone count a request or unit whose last packet was the
// last one added (outside batches the step's counts follow).
func (g *gen) reqDone() {
	g.req++
	if !g.batch {
		g.conv.steps[len(g.conv.steps)-1].req = g.req
	}
}

func (g *gen) ansDone() {
	g.ans++
	if !g.batch {
		g.conv.steps[len(g.conv.steps)-1].ans = g.ans
	}
}

func (g *gen) has(c uint64) bool { return g.caps&c != 0 }

// connect generates the connection phase; false if it ended the session.
func (g *gen) connect() bool {
	srvCaps := uint64(0xf7fe) | capProtocol41 | 1<<15 | 1<<16 | 1<<17 | 1<<19 | 1<<20 | 1<<21 | 1<<23 | 1<<29
	srvCaps &^= capCompress | capSSL
	cliCaps := uint64(capProtocol41 | 1<<15 | 1<<3 | 1<<13 | 1<<7 | 1<<16 | 1<<17 | 1<<19)
	if !g.oracle {
		if g.pick(2) == 0 {
			srvCaps |= capDeprecateEOF
			cliCaps |= capDeprecateEOF
		}
		if g.pick(2) == 0 { // MariaDB
			srvCaps &^= capMySQL
			cliCaps &^= capMySQL
			if g.pick(2) == 0 {
				srvCaps |= capMariaProgress
				cliCaps |= capMariaProgress
			}
			if g.pick(3) == 0 {
				srvCaps |= capMariaCacheMetadata | 1<<34
				cliCaps |= capMariaCacheMetadata | 1<<34
			}
		} else {
			srvCaps |= capMySQL
			cliCaps |= capMySQL
		}
	}
	g.caps = srvCaps & cliCaps
	if srvCaps&capMySQL != 0 || cliCaps&capMySQL != 0 {
		g.caps &= 0xffffffff
	}
	g.seq = 0
	g.srv(greetingPayload("5.5.5-10.11.6-MariaDB-0+deb12u1", srvCaps, "mysql_native_password"))
	g.ansDone()
	g.cli(handshakeResponse(cliCaps, "app", bytes.Repeat([]byte{7}, 20), "mysql_native_password"))
	g.reqDone()
	return g.auth(true)
}

// auth generates an authentication exchange after a HandshakeResponse or
// COM_CHANGE_USER; false if it failed the connection.
func (g *gen) auth(conn bool) bool {
	if g.oracle {
		return g.oracleAuth()
	}
	switch g.pick(7) {
	case 0, 1:
	case 2: // switch to another plugin
		g.srv(cat([]byte{0xfe}, []byte("client_ed25519\x00"), bytes.Repeat([]byte{1}, 32)))
		g.ansDone()
		g.cli(bytes.Repeat([]byte{2}, 64))
		g.reqDone()
	case 3: // caching_sha2_password fast auth
		g.srv([]byte{0x01, 0x03})
	case 4: // caching_sha2_password full auth with the public key
		g.srv([]byte{0x01, 0x04})
		g.ansDone()
		g.cli([]byte{0x02})
		g.reqDone()
		g.srv(cat([]byte{0x01}, []byte(testPEM)))
		g.ansDone()
		g.cli(bytes.Repeat([]byte{3}, 256))
		g.reqDone()
	case 5: // switch, then fast auth
		g.srv(cat([]byte{0xfe}, []byte("caching_sha2_password\x00"), bytes.Repeat([]byte{1}, 20), []byte{0}))
		g.ansDone()
		g.cli(bytes.Repeat([]byte{2}, 32))
		g.reqDone()
		g.srv([]byte{0x01, 0x03})
	case 6:
		g.srv(errPayload(1045, "Access denied"))
		g.ansDone()
		return !conn
	}
	g.srv(okPayload(0, 2))
	g.ansDone()
	return true
}

// oracleAuth generates the exchanges go-sql-driver follows after a
// mysql_native_password greeting.
func (g *gen) oracleAuth() bool {
	switch g.pick(6) {
	case 0, 1:
	case 2:
		g.srv(cat([]byte{0xfe}, []byte("mysql_native_password\x00"), bytes.Repeat([]byte{1}, 20), []byte{0}))
		g.ansDone()
		g.cli(bytes.Repeat([]byte{2}, 20))
		g.reqDone()
	case 3, 4:
		g.srv(cat([]byte{0xfe}, []byte("caching_sha2_password\x00"), bytes.Repeat([]byte{1}, 20), []byte{0}))
		g.ansDone()
		g.cli(bytes.Repeat([]byte{2}, 32))
		g.reqDone()
		if g.pick(2) == 0 {
			g.srv([]byte{0x01, 0x03})
			break
		}
		g.srv([]byte{0x01, 0x04})
		g.ansDone()
		g.cli([]byte{0x02})
		g.reqDone()
		g.srv(cat([]byte{0x01}, oracleKey()))
		g.ansDone()
		g.cli(bytes.Repeat([]byte{3}, 256))
		g.reqDone()
	case 5:
		g.srv(errPayload(1045, "Access denied"))
		g.ansDone()
		return false
	}
	g.srv(okPayload(0, 2))
	g.ansDone()
	return true
}

// progress may add MariaDB progress reports.
func (g *gen) progress() {
	for g.has(capMariaProgress) && g.pick(4) == 0 {
		g.srv(cat([]byte{0xff, 0xff, 0xff, 1, 1, 0, 0, 0, 0}, lenencStr([]byte("stage"))))
	}
}

func (g *gen) status(more bool) uint16 {
	st := uint16(0x0002)
	if more {
		st |= statusMoreResults
	}
	return st
}

// end generates a result set's closing packet.
func (g *gen) end(st uint16) {
	if g.has(capDeprecateEOF) {
		g.srv(okPayload(0xfe, st))
	} else {
		g.srv(eofPayload(st))
	}
}

func (g *gen) textRow(cols int) []byte {
	var b []byte
	for range cols {
		switch g.pick(8) {
		case 0:
			b = append(b, 0xfb) // NULL
		case 1:
			b = append(b, lenencStr(nil)...)
		case 2:
			b = append(b, lenencStr(bytes.Repeat([]byte("w"), 251+g.pick(70000)))...)
		default:
			b = append(b, lenencStr([]byte("value"))...)
		}
	}
	if g.huge && g.pick(50) == 0 {
		// A value of 16 MiB or more: the row starts with 0xFE and spans
		// packets; sometimes exactly one full packet, then an empty one.
		n := 1 << 24
		if g.pick(2) == 0 {
			n = maxPacket - 9
		}
		b = lenencStr(bytes.Repeat([]byte("h"), n))
	}
	if len(b) == 0 {
		b = []byte{0xfb}
	}
	return b
}

// resultSet generates one result set (binary rows for COM_STMT_EXECUTE).
func (g *gen) resultSet(binary bool, more bool) {
	cols := 1 + g.pick(4)
	if g.pick(20) == 0 {
		cols = 251 + g.pick(300) // a two-byte column count
	}
	count := lenencInt(uint64(cols))
	meta := true
	if g.has(capMariaCacheMetadata) {
		if binary && g.pick(2) == 0 {
			meta = false
			count = append(count, 0)
		} else {
			count = append(count, 1)
		}
	}
	g.srv(count)
	if meta {
		for i := range cols {
			g.srv(columnDef("c" + string(rune('a'+i%26))))
		}
	}
	if !g.has(capDeprecateEOF) {
		g.srv(eofPayload(2))
	}
	for range g.pick(6) {
		if binary {
			row := cat([]byte{0}, make([]byte, (cols+9)/8))
			for range cols {
				row = append(row, lenencStr([]byte("bin"))...)
			}
			g.srv(row)
		} else {
			g.srv(g.textRow(cols))
		}
	}
	if g.pick(12) == 0 {
		g.srv(errPayload(1317, "Query execution was interrupted"))
		return
	}
	g.end(g.status(more))
}

// answer generates a COM_QUERY or COM_STMT_EXECUTE answer: results while
// SERVER_MORE_RESULTS_EXISTS, maybe a LOCAL INFILE exchange. It returns
// false if the answer ended with an ERR.
func (g *gen) answer(binary bool) {
	for {
		g.progress()
		// go-sql-driver reads no result after a prepared statement's
		// first one when that is an OK (binaryRows has no connection
		// then): the oracle's binary answers have one result.
		more := g.pick(4) == 0 && !(g.oracle && binary)
		switch g.pick(8) {
		case 0:
			g.srv(errPayload(1146, "Table 't.x' doesn't exist"))
			g.ansDone()
			return
		case 1, 2:
			g.srv(okPayload(0, g.status(more)))
		case 3:
			if !binary && !g.batch {
				g.srv(cat([]byte{0xfb}, []byte("Reader::data")))
				g.ansDone()
				chunks := g.pick(4)
				if g.oracle {
					chunks = 1 // the driver sends oracleFile in one packet
				}
				for range chunks {
					n := 1 + g.pick(3000)
					if g.huge && g.pick(40) == 0 {
						n = maxPacket
					}
					g.cli(bytes.Repeat([]byte("1,a\n"), n/4+1)[:n])
				}
				g.cli(nil)
				g.reqDone()
				// The LOAD DATA's own answer, then maybe more results.
				g.progress()
				if g.pick(4) == 0 {
					g.srv(errPayload(1062, "Duplicate entry"))
					g.ansDone()
					return
				}
				g.srv(okPayload(0, g.status(more)))
				if !more {
					g.ansDone()
					return
				}
				continue
			}
			fallthrough
		default:
			g.resultSet(binary, more)
			// A result set cut by an ERR ends the answer.
			if last := g.lastServerByte(); last == 0xff {
				g.ansDone()
				return
			}
		}
		if !more {
			g.ansDone()
			return
		}
	}
}

// lastServerByte returns the first payload byte of the last server packet
// added, which resultSet uses to tell an ERR.
func (g *gen) lastServerByte() byte {
	var b []byte
	if g.batch {
		b = g.bsv
	} else {
		b = g.conv.steps[len(g.conv.steps)-1].data
	}
	// Walk the packets to the last one.
	var first byte
	for len(b) >= 4 {
		n := le24(b)
		if len(b) >= 5 {
			first = b[4]
		}
		b = b[min(len(b), 4+n):]
	}
	return first
}

func (g *gen) defs(n int) {
	for range n {
		g.srv(columnDef("p"))
	}
	if n > 0 && !g.has(capDeprecateEOF) {
		g.srv(eofPayload(2))
	}
}

// command generates one command and its answer. open is the number of
// prepared statements; exchanges (LOCAL INFILE, COM_CHANGE_USER) are left
// out of batches.
func (g *gen) command() {
	g.seq = 0
	choice := g.pick(16)
	if g.oracle {
		choice = []int{0, 0, 0, 1, 2, 3, 5}[g.pick(7)]
	}
	switch choice {
	case 0, 1, 2, 3:
		g.cli(cat([]byte{0x03}, []byte("SELECT * FROM a; CALL p()")))
		g.reqDone()
		g.answer(false)
	case 4:
		g.cli(cat([]byte{0x16}, []byte("SELECT ? FROM a WHERE id = ?")))
		g.reqDone()
		if g.pick(5) == 0 {
			g.srv(errPayload(1064, "syntax"))
		} else {
			p, c := g.pick(3), g.pick(3)
			g.srv(cat([]byte{0}, u32(1), u16(uint16(c)), u16(uint16(p)), []byte{0}, u16(0)))
			g.defs(p)
			g.defs(c)
		}
		g.ansDone()
	case 5, 6:
		cursor := byte(0)
		if g.pick(3) == 0 && !g.oracle {
			cursor = 1
		}
		g.cli(cat([]byte{0x17}, u32(1), []byte{cursor}, u32(1)))
		g.reqDone()
		if cursor == 0 || g.pick(4) == 0 {
			g.answer(true)
			return
		}
		// A cursor: the answer ends with the metadata.
		cols := 1 + g.pick(3)
		g.srv(append(lenencInt(uint64(cols)), map[bool][]byte{true: {1}}[g.has(capMariaCacheMetadata)]...))
		for range cols {
			g.srv(columnDef("c"))
		}
		if g.has(capDeprecateEOF) {
			g.srv(okPayload(0xfe, 2|statusCursorExists))
		} else {
			g.srv(eofPayload(2 | statusCursorExists))
		}
		g.ansDone()
		for range g.pick(3) {
			g.seq = 0
			g.cli(cat([]byte{0x1c}, u32(1), u32(2)))
			g.reqDone()
			for range g.pick(3) {
				g.srv(cat([]byte{0}, []byte{0}, []byte("row")))
			}
			g.end(2 | statusCursorExists | 0x80)
			g.ansDone()
		}
	case 7:
		g.cli(cat([]byte{0x19}, u32(1))) // COM_STMT_CLOSE: no answer
	case 8:
		g.cli(cat([]byte{0x18}, u32(1), u16(0), bytes.Repeat([]byte("L"), g.pick(5000))))
	case 9:
		cmd := []byte{0x0e, 0x02, 0x1f, 0x1a, 0x1b, 0x07}[g.pick(6)]
		g.cli(cat([]byte{cmd}, []byte("x")))
		g.reqDone()
		switch g.pick(3) {
		case 0:
			g.srv(errPayload(1049, "Unknown database"))
		case 1:
			g.srv(eofPayload(2))
		default:
			g.srv(okPayload(0, 2))
		}
		g.ansDone()
	case 10:
		g.cli([]byte{0x09})
		g.reqDone()
		g.srv([]byte("Uptime: 120  Threads: 1  Questions: 5  Slow queries: 0  Opens: 17"))
		g.ansDone()
	case 11:
		g.cli(cat([]byte{0x04}, []byte("a\x00")))
		g.reqDone()
		if g.pick(4) == 0 {
			g.srv(errPayload(1146, "no table"))
		} else {
			for range g.pick(4) {
				g.srv(columnDef("f"))
			}
			g.end(2)
		}
		g.ansDone()
	case 12:
		if g.batch {
			return
		}
		g.cli(cat([]byte{0x11}, []byte("other\x00"), []byte{20}, bytes.Repeat([]byte{5}, 20), []byte("t\x00"), u16(45), []byte("mysql_native_password\x00")))
		g.reqDone()
		g.auth(false)
	default:
		g.cli(cat([]byte{0x03}, []byte("SET @x = 1")))
		g.reqDone()
		g.progress()
		g.srv(okPayload(0, 2))
		g.ansDone()
	}
}

// conversation generates a whole session.
func (g *gen) session() {
	if !g.connect() {
		return
	}
	for range g.pick(12) {
		if !g.oracle && g.pick(5) == 0 {
			// Pipelined commands: all sent before the first answer.
			g.batch = true
			before := g.ans
			for range 2 + g.pick(4) {
				g.command()
			}
			g.batch = false
			// The client step completes all the requests and none of
			// the answers.
			g.conv.add(true, g.bcli, g.req, before)
			if len(g.bsv) > 0 {
				g.conv.add(false, g.bsv, g.req, g.ans)
			}
			g.bcli, g.bsv = nil, nil
			continue
		}
		g.command()
	}
	if g.pick(2) == 0 {
		g.seq = 0
		g.cli([]byte{0x01}) // COM_QUIT
	}
}

const testPEM = `-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzO3+example+key+bytes+AB
-----END PUBLIC KEY-----
`
