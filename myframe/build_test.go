package myframe

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
)

// Builders of protocol messages for the tests.

// packets frames one message as packets from sequence id *seq on, split
// at 0xFFFFFF bytes (with the empty packet after an exact multiple).
func packets(seq *byte, payload []byte) []byte {
	var b []byte
	for {
		n := min(len(payload), maxPacket)
		b = append(b, byte(n), byte(n>>8), byte(n>>16), *seq)
		b = append(b, payload[:n]...)
		*seq++
		payload = payload[n:]
		if n < maxPacket {
			return b
		}
	}
}

func lenencInt(n uint64) []byte {
	switch {
	case n < 0xfb:
		return []byte{byte(n)}
	case n < 1<<16:
		return []byte{0xfc, byte(n), byte(n >> 8)}
	case n < 1<<24:
		return []byte{0xfd, byte(n), byte(n >> 8), byte(n >> 16)}
	}
	b := []byte{0xfe, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint64(b[1:], n)
	return b
}

func lenencStr(s []byte) []byte { return append(lenencInt(uint64(len(s))), s...) }

func u16(v uint16) []byte { return []byte{byte(v), byte(v >> 8)} }
func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// greetingPayload is a protocol-10 greeting with the given capabilities
// (the upper 32 bits go to MariaDB's extended field).
func greetingPayload(version string, caps uint64, plugin string) []byte {
	return cat([]byte{10}, []byte(version), []byte{0}, u32(42), []byte("abcdefgh"), []byte{0},
		u16(uint16(caps)), []byte{0x2d}, u16(0x0002), u16(uint16(caps>>16)), []byte{21},
		make([]byte, 6), u32(uint32(caps>>32)), []byte("ijklmnopqrst\x00"), []byte(plugin), []byte{0})
}

// handshakeResponse is a HandshakeResponse41 with the given capabilities.
func handshakeResponse(caps uint64, user string, auth []byte, plugin string) []byte {
	return cat(u32(uint32(caps)), u32(1<<24), []byte{0x2d}, make([]byte, 19), u32(uint32(caps>>32)),
		[]byte(user), []byte{0}, []byte{byte(len(auth))}, auth, []byte(plugin), []byte{0})
}

func okPayload(hdr byte, status uint16) []byte {
	return cat([]byte{hdr}, lenencInt(1), lenencInt(300), u16(status), u16(0))
}

func eofPayload(status uint16) []byte { return cat([]byte{0xfe}, u16(0), u16(status)) }

func errPayload(code uint16, msg string) []byte {
	return cat([]byte{0xff}, u16(code), []byte("#HY000"), []byte(msg))
}

// columnDef is a ColumnDefinition41 of a VARCHAR column.
func columnDef(name string) []byte {
	return cat(lenencStr([]byte("def")), lenencStr([]byte("t")), lenencStr([]byte("a")), lenencStr([]byte("a")),
		lenencStr([]byte(name)), lenencStr([]byte(name)), []byte{0x0c}, u16(33), u32(255), []byte{0xfd}, u16(0), []byte{0}, u16(0))
}

// conversation is a session as the tests build it: steps of one side's
// bytes, with the counts the framer must show after each.
type conversation struct {
	steps []step
}

type step struct {
	client   bool
	data     []byte
	req, ans int
}

func (c *conversation) add(client bool, data []byte, req, ans int) {
	if n := len(c.steps); n > 0 && c.steps[n-1].client == client {
		c.steps[n-1].data = append(c.steps[n-1].data, data...)
		c.steps[n-1].req, c.steps[n-1].ans = req, ans
		return
	}
	c.steps = append(c.steps, step{client, data, req, ans})
}

func (c *conversation) String() string {
	var b bytes.Buffer
	for _, s := range c.steps {
		fmt.Fprintf(&b, "client=%v req=%d ans=%d %q\n", s.client, s.req, s.ans, s.data[:min(len(s.data), 120)])
	}
	return b.String()
}

// feedSplit shows p to one side of f in random chunks.
func feedSplit(rng *rand.Rand, f *Framer, client bool, p []byte) {
	for len(p) > 0 {
		var n int
		switch rng.IntN(4) {
		case 0:
			n = 1
		case 1:
			n = 1 + rng.IntN(8)
		case 2:
			n = 1 + rng.IntN(1500)
		default:
			n = len(p)
		}
		n = min(n, len(p))
		if client {
			f.Client(p[:n])
		} else {
			f.Server(p[:n])
		}
		p = p[n:]
	}
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x5eed)) }

func yieldCPU() { runtime.Gosched() }
