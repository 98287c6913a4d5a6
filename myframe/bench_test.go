package myframe

import (
	"bytes"
	"sync/atomic"
	"testing"

	"github.com/stackcopy/stackcopy/internal/framekit/framekittest"
)

// benchStream is a realistic steady-state stream of one connection after
// its handshake: point queries, a 20-row page, an INSERT, a prepared
// statement's execution with 10 binary rows, a ping. It returns the turns
// of one round and the number of messages (packets) in it.
func benchStream() (turns []framekittest.Turn, msgs int) {
	var seq byte
	add := func(client bool, payloads ...[]byte) {
		if client {
			seq = 0
		}
		var b []byte
		for _, p := range payloads {
			b = append(b, packets(&seq, p)...)
			msgs++
		}
		turns = append(turns, framekittest.Turn{Client: client, Data: b})
	}
	cols := func(names ...string) [][]byte {
		out := [][]byte{lenencInt(uint64(len(names)))}
		for _, n := range names {
			out = append(out, columnDef(n))
		}
		return append(out, eofPayload(2))
	}
	row := func(vals ...string) []byte {
		var b []byte
		for _, v := range vals {
			b = append(b, lenencStr([]byte(v))...)
		}
		return b
	}
	user := row("42", "Ada Lovelace", "ada@example.com", "2024-01-01 00:00:00")
	for range 4 {
		add(true, []byte("\x03SELECT id, name, email, created_at FROM users WHERE id = 42"))
		add(false, append(cols("id", "name", "email", "created_at"), user, eofPayload(2))...)
	}
	page := cols("id", "name", "email", "created_at")
	for range 20 {
		page = append(page, user)
	}
	add(true, []byte("\x03SELECT id, name, email, created_at FROM users ORDER BY id LIMIT 20"))
	add(false, append(page, eofPayload(2))...)
	add(true, []byte("\x03INSERT INTO events (user_id, kind) VALUES (42, 'login')"))
	add(false, okPayload(0, 2))
	bin := cols("id", "payload")
	for range 10 {
		bin = append(bin, cat([]byte{0, 0}, bytes.Repeat([]byte{1}, 8), lenencStr(bytes.Repeat([]byte("p"), 120))))
	}
	add(true, cat([]byte{0x17}, u32(1), []byte{0}, u32(1), []byte{0, 1, 8, 0}, u32(42), u32(0)))
	add(false, append(bin, eofPayload(2))...)
	add(true, []byte{0x0e})
	add(false, okPayload(0, 2))
	return turns, msgs
}

// BenchmarkFramer feeds the stream turn by turn, in 1448-byte segments (a
// TCP MSS), as the replayer does. It reports ns per message (packet, either
// direction); steady state allocates nothing.
func BenchmarkFramer(b *testing.B) {
	turns, msgs := benchStream()
	f := New()
	// The handshake first.
	var seq byte
	f.Server(packets(&seq, greetingPayload("5.5.5-10.11.6-MariaDB", 0xf7fe|capProtocol41|1<<15|1<<16|1<<17, "mysql_native_password")))
	f.Client(packets(&seq, handshakeResponse(capProtocol41|1<<15|1<<16|1<<17, "app", bytes.Repeat([]byte{7}, 20), "mysql_native_password")))
	f.Server(packets(&seq, okPayload(0, 2)))
	rounds := framekittest.Bench(b, f, turns, msgs, 1448)
	if want := 1 + len(turns)/2*rounds; f.Requests() != want || f.Answers() != want+1 {
		b.Fatalf("Requests %d Answers %d, want %d %d", f.Requests(), f.Answers(), want, want+1)
	}
}

// BenchmarkRenumber rewrites the benchmark stream's client side, in
// 1448-byte segments, with every statement id renumbered: the cost the
// replayer adds to each MySQL client write (a second walk of the packet
// headers beside the framer's). ns per client message.
func BenchmarkRenumber(b *testing.B) {
	turns, _ := benchStream()
	var client []byte
	for _, tn := range turns {
		if tn.Client {
			client = append(client, tn.Data...)
		}
	}
	_, ids := statementIDs(client)
	msgs := 0
	for i := 0; i+4 <= len(client); msgs++ {
		i += 4 + (int(client[i]) | int(client[i+1])<<8 | int(client[i+2])<<16)
	}
	var seq byte
	hello := packets(&seq, handshakeResponse(capProtocol41, "app", nil, "mysql_native_password"))
	var renumbered, unknown atomic.Uint64
	r := NewRenumber(&renumbered, &unknown)
	r.Rewrite(hello)
	for _, id := range ids {
		r.Production([]uint32{id}, true)
		r.Target([]uint32{id + 1000}, true)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for p := client; len(p) > 0; {
			n := min(len(p), 1448)
			r.Rewrite(p[:n])
			p = p[n:]
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*msgs), "ns/message")
	if len(ids) > 0 && renumbered.Load() == 0 {
		b.Fatal("nothing renumbered: the benchmark measures the wrong path")
	}
}
