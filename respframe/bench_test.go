package respframe

import (
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/internal/framekit/framekittest"
)

// pipeline is what redis-benchmark -P 16 and a typical cache client send:
// GET/SET/INCR/LPUSH/LRANGE/HSET/MGET in pipelines of 16, and their
// replies. It returns both sides and the number of commands.
func pipeline() (client, server []byte, n int) {
	var c, s strings.Builder
	val := strings.Repeat("x", 64)
	for range 16 {
		c.WriteString(cmd("SET", "key:000000001234", val))
		s.WriteString("+OK\r\n")
		c.WriteString(cmd("GET", "key:000000001234"))
		s.WriteString(bulk(val))
		c.WriteString(cmd("INCR", "counter:rand_int"))
		s.WriteString(":1234\r\n")
		c.WriteString(cmd("LPUSH", "mylist", val))
		s.WriteString(":100\r\n")
		c.WriteString(cmd("LRANGE", "mylist", "0", "9"))
		s.WriteString("*10\r\n" + strings.Repeat(bulk(val), 10))
		c.WriteString(cmd("HSET", "myhash", "field:1", val))
		s.WriteString(":0\r\n")
		c.WriteString(cmd("MGET", "k1", "k2", "k3"))
		s.WriteString("*3\r\n" + bulk(val) + "$-1\r\n" + bulk(val))
		c.WriteString(cmd("GET", "missing"))
		s.WriteString("$-1\r\n")
		n += 8
	}
	return []byte(c.String()), []byte(s.String()), n
}

// BenchmarkFramer feeds both sides as 1448-byte segments (a TCP MSS), a
// pipeline of 16 commands' worth of client bytes, then their replies.
// One op is one message: a command and its reply.
func BenchmarkFramer(b *testing.B) {
	client, server, n := pipeline()
	f := New()
	framekittest.Bench(b, f, []framekittest.Turn{{Client: true, Data: client}, {Data: server}}, n, 1448)
	if f.Requests() != f.Answers() {
		b.Fatal(f.Requests(), f.Answers(), f.Err())
	}
}
