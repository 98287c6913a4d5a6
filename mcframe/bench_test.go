package mcframe

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/internal/framekit/framekittest"
)

// pipeline is a typical cache client's traffic: sets, multi-gets with
// hits and misses, deletes, incr, and a meta pipeline of quiet gets
// closed by mn. It returns both sides and the number of requests.
func pipeline() (client, server []byte, n int) {
	var c, s strings.Builder
	val := strings.Repeat("x", 100)
	for i := range 16 {
		fmt.Fprintf(&c, "set user:%08d 0 3600 %d\r\n%s\r\n", i, len(val), val)
		s.WriteString("STORED\r\n")
		fmt.Fprintf(&c, "get user:%08d user:%08d missing:1\r\n", i, i+1)
		fmt.Fprintf(&s, "VALUE user:%08d 0 %d\r\n%s\r\nVALUE user:%08d 0 %d\r\n%s\r\nEND\r\n", i, len(val), val, i+1, len(val), val)
		fmt.Fprintf(&c, "incr hits:%d 1\r\ndelete old:%d\r\n", i, i)
		s.WriteString("42\r\nNOT_FOUND\r\n")
		fmt.Fprintf(&c, "mg user:%08d v q O1 k\r\nmg miss:%d v q O2 k\r\nmn\r\n", i, i)
		fmt.Fprintf(&s, "VA %d O1 kuser:%08d\r\n%s\r\nMN\r\n", len(val), i, val)
		n += 7
	}
	return []byte(c.String()), []byte(s.String()), n
}

// BenchmarkFramer feeds both sides as 1448-byte segments (a TCP MSS).
// One op is one message: a request and its answer.
func BenchmarkFramer(b *testing.B) {
	client, server, n := pipeline()
	f := New()
	framekittest.Bench(b, f, []framekittest.Turn{{Client: true, Data: client}, {Data: server}}, n, 1448)
	if f.Requests() != f.Answers() {
		b.Fatal(f.Requests(), f.Answers(), f.Err())
	}
}
