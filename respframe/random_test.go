package respframe

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/gomodule/redigo/redis"
	"github.com/stackcopy/stackcopy/internal/framekit/framekittest"
)

// A grammar-aware generator of whole conversations: pipelined batches of
// commands of every kind the framer follows (ordinary, inline, MULTI/EXEC,
// pub/sub in RESP2 and RESP3, HELLO, RESET) with replies of every RESP2
// and RESP3 type, pushes and attributes between and inside them, empty
// and huge values. A model of the server (protocol, subscriptions)
// produces the replies, and the offsets where each answer unit completes,
// so Requests and Answers are checked exactly after every chunk.

func pick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

type model struct {
	rng     *rand.Rand
	resp3   bool
	ch      []string // subscriptions, in order
	pat     []string
	shard   []string
	inMulti bool

	client []byte
	server strings.Builder
	ends   []int // server offsets where a unit completes
	reqs   int
}

func (m *model) subscribed() bool { return len(m.ch)+len(m.pat)+len(m.shard) > 0 }

// send encodes a command: mostly as redigo sends it (the reference
// encoder), sometimes inline.
func (m *model) send(args ...string) {
	m.reqs++
	if m.rng.IntN(8) == 0 && inlineSafe(args) {
		sep := pick(m.rng, " ", "  ", "\t")
		m.client = append(m.client, strings.Join(args, sep)+pick(m.rng, "\r\n", "\n")...)
		return
	}
	bc := &framekittest.ByteConn{}
	conn := redis.NewConn(bc, 0, 0)
	rest := make([]any, len(args)-1)
	for i, a := range args[1:] {
		rest[i] = a
	}
	if err := conn.Send(args[0], rest...); err != nil {
		panic(err)
	}
	if err := conn.Flush(); err != nil {
		panic(err)
	}
	m.client = append(m.client, bc.Out.Bytes()...)
}

func inlineSafe(args []string) bool {
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\r\n\"'\x00\v\f") || len(a) > 100 {
			return false
		}
	}
	return true
}

// reply appends a server value; unit tells whether it completes a unit.
func (m *model) reply(s string, unit bool) {
	m.server.WriteString(s)
	if unit {
		m.ends = append(m.ends, m.server.Len())
	}
	m.maybePush()
}

// maybePush adds out-of-band pushes between replies: RESP3 pushes any
// time, RESP2 messages while subscribed.
func (m *model) maybePush() {
	for m.rng.IntN(6) == 0 {
		switch {
		case m.resp3:
			m.server.WriteString(pick(m.rng,
				push(msg("news", m.str())),
				">4\r\n"+bulk("pmessage")+bulk("n*")+bulk("news")+bulk("x"),
				">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n",
				">2\r\n$10\r\ninvalidate\r\n_\r\n"))
		case m.subscribed():
			m.server.WriteString(pick(m.rng,
				msg("news", m.str()),
				"*4\r\n"+bulk("pmessage")+bulk("n*")+bulk("news")+bulk(m.str()),
				"*3\r\n"+bulk("smessage")+bulk("s")+bulk(m.str())))
		default:
			return
		}
	}
}

func (m *model) str() string {
	switch m.rng.IntN(40) {
	case 0:
		return ""
	case 1:
		return strings.Repeat("v", 70000) // larger than a chunk, a bufio buffer
	case 2:
		return "a\r\nb\r\n$3\r\n*1\r\n" // framing bytes inside a value
	}
	return fmt.Sprintf("val%d", m.rng.IntN(1000))
}

// value generates a random reply value of depth at most d.
func (m *model) value(d int) string {
	var s string
	n := 10
	if m.resp3 {
		n = 20
	}
	if d == 0 {
		n = 5
	}
	switch m.rng.IntN(n) {
	case 0:
		s = "+" + pick(m.rng, "OK", "PONG", "QUEUED", "message", "subscribe", "") + "\r\n"
	case 1:
		s = "-" + pick(m.rng, "ERR wrong type", "WRONGTYPE Operation against a key holding the wrong kind of value", "MOVED 3999 127.0.0.1:6381") + "\r\n"
	case 2:
		s = fmt.Sprintf(":%d\r\n", m.rng.IntN(2000)-1000)
	case 3:
		s = pick(m.rng, "$-1\r\n", bulk(m.str()))
	case 4:
		s = bulk(pick(m.rng, "message", "subscribe", "pong", m.str()))
	case 5, 6, 7, 8, 9:
		if d == 0 {
			return ":0\r\n"
		}
		k := m.rng.IntN(5)
		if m.rng.IntN(10) == 0 {
			return "*-1\r\n"
		}
		s = fmt.Sprintf("*%d\r\n", k)
		for range k {
			s += m.value(d - 1)
		}
	// RESP3 only.
	case 10:
		s = "_\r\n"
	case 11:
		s = pick(m.rng, "#t\r\n", "#f\r\n")
	case 12:
		s = pick(m.rng, ",1.5\r\n", ",inf\r\n", ",-inf\r\n", ",nan\r\n", ",10\r\n")
	case 13:
		s = pick(m.rng, "(3492890328409238509324850943850943825024385\r\n", "(-1\r\n")
	case 14:
		e := pick(m.rng, "SYNTAX invalid syntax", "", "ERR\r\nwith CRLF")
		s = fmt.Sprintf("!%d\r\n%s\r\n", len(e), e)
	case 15:
		v := "txt:" + m.str()
		s = fmt.Sprintf("=%d\r\n%s\r\n", len(v), v)
	case 16, 17, 18:
		if d == 0 {
			return "_\r\n"
		}
		t := pick(m.rng, "%", "~", "*")
		k := m.rng.IntN(4)
		s = fmt.Sprintf("%s%d\r\n", t, k)
		if t == "%" {
			k *= 2
		}
		for range k {
			s += m.value(d - 1)
		}
	case 19:
		return m.attr(d) + m.value(d)
	}
	return s
}

func (m *model) attr(d int) string {
	k := m.rng.IntN(3)
	s := fmt.Sprintf("|%d\r\n", k)
	for range 2 * k {
		s += m.value(min(d, 1))
	}
	return s
}

// confirm sends a confirmation of kind for channel (nil: "").
func (m *model) confirm(kind, channel string, count int, last bool) {
	c := conf(kind, channel, count)
	if m.resp3 {
		c = push(c)
	}
	m.reply(c, last)
}

func (m *model) subscribe(kind int, chans []string) {
	set := [...]*[]string{&m.ch, &m.pat, &m.shard}[kind%3]
	for i, c := range chans {
		if kind < 3 {
			if !slices.Contains(*set, c) {
				*set = append(*set, c)
			}
		} else if j := slices.Index(*set, c); j >= 0 {
			*set = slices.Delete(*set, j, j+1)
		}
		count := len(m.ch) + len(m.pat)
		if kind%3 == 2 {
			count = len(m.shard)
		}
		m.confirm(kindName[kind], c, count, i == len(chans)-1)
	}
}

// step generates one command and its answer.
func (m *model) step() {
	r := m.rng
	names := [][]string{{"news", "sport"}, {"news"}, {"a", "a"}, {"x", "y", "z"}}
	if !m.resp3 && m.subscribed() && !m.inMulti {
		// RESP2 subscribed mode: only pub/sub commands, PING, RESET.
		switch r.IntN(9) {
		case 0:
			m.send("PING")
			m.reply("*2\r\n$4\r\npong\r\n$0\r\n\r\n", true)
		case 1:
			m.send("GET", "k")
			m.reply("-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n", true)
		case 2:
			m.send("RESET")
			m.reset()
		default:
			m.pubsub()
		}
		return
	}
	switch k := r.IntN(20); {
	case k < 9:
		name := pick(r, "GET", "SET", "HGETALL", "LRANGE", "BLPOP", "XREAD", "EVAL", "INCR")
		args := []string{name, "key"}
		if name == "SET" {
			args = append(args, m.str())
		}
		m.send(args...)
		if m.inMulti {
			m.reply(pick(r, "+QUEUED\r\n", "+QUEUED\r\n", "-ERR unknown command\r\n"), true)
			return
		}
		m.reply(m.value(3), true)
	case k == 9 && !m.inMulti:
		m.send("MULTI")
		m.inMulti = true
		m.reply("+OK\r\n", true)
	case k == 10 && m.inMulti:
		m.inMulti = false
		if r.IntN(3) == 0 {
			m.send("DISCARD")
			m.reply("+OK\r\n", true)
			return
		}
		m.send("EXEC")
		m.reply(pick(r, "*3\r\n+OK\r\n:1\r\n$-1\r\n", "-EXECABORT Transaction discarded\r\n", "*-1\r\n", "*0\r\n"), true)
	case k == 11 && !m.inMulti:
		v := pick(r, "3", "2", "", "4")
		if v == "" {
			m.send("HELLO")
		} else {
			m.send("HELLO", v)
		}
		switch v {
		case "4":
			m.reply("-NOPROTO unsupported protocol version\r\n", true)
			return
		case "3":
			m.resp3 = true
		case "2":
			m.resp3 = false
		}
		if m.resp3 {
			m.reply("%3\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n+modules\r\n*0\r\n", true)
		} else {
			m.reply("*4\r\n+server\r\n+redis\r\n+proto\r\n:2\r\n", true)
		}
	case k == 12:
		m.send("RESET")
		m.reset()
	case k == 13 && !m.inMulti:
		m.send("PING")
		m.reply("+PONG\r\n", true)
	case k >= 14 && !m.inMulti:
		m.pubsub()
	default:
		m.send("ECHO", m.str())
		m.reply(bulk("x"), true)
	}
	_ = names
}

func (m *model) reset() {
	m.resp3, m.inMulti = false, false
	m.ch, m.pat, m.shard = nil, nil, nil
	m.reply("+RESET\r\n", true)
}

func (m *model) pubsub() {
	r := m.rng
	kind := r.IntN(6)
	var chans []string
	if r.IntN(3) > 0 || kind < 3 {
		chans = pick(r, []string{"news", "sport"}, []string{"news"}, []string{"a", "a"}, []string{"x", "y", "z"}, nil)
	}
	args := append([]string{strings.ToUpper(kindName[kind])}, chans...)
	m.send(args...)
	switch {
	case len(chans) == 0 && kind < 3:
		m.reply("-ERR wrong number of arguments for '"+kindName[kind]+"' command\r\n", true)
	case len(chans) == 0:
		set := [...][]string{m.ch, m.pat, m.shard}[kind%3]
		if len(set) == 0 {
			count := len(m.ch) + len(m.pat)
			if kind%3 == 2 {
				count = len(m.shard)
			}
			m.confirm(kindName[kind], "", count, true)
			return
		}
		m.subscribe(kind, slices.Clone(set))
	default:
		m.subscribe(kind, chans)
	}
}

// feedChecked feeds one side in random chunks and checks the counts after
// each chunk.
func feedChecked(t *testing.T, f *Framer, client bool, data []byte, base int, ends []int, rng *rand.Rand, wantReqs int) {
	t.Helper()
	for pos := 0; pos < len(data); {
		n := 1 + rng.IntN(min(len(data)-pos, pick(rng, 1, 7, 100, 5000)))
		if client {
			f.Client(data[pos : pos+n])
		} else {
			f.Server(data[pos : pos+n])
		}
		pos += n
		if f.Err() != nil {
			t.Fatalf("err %v", f.Err())
		}
		if client {
			continue
		}
		want := base
		for _, e := range ends {
			if e <= pos {
				want++
			}
		}
		if f.Answers() != want {
			t.Fatalf("at %d/%d of the answers: Answers %d, want %d\n%q", pos, len(data), f.Answers(), want, data[:min(len(data), 2000)])
		}
	}
	if client && f.Requests() != wantReqs {
		t.Fatalf("Requests %d, want %d", f.Requests(), wantReqs)
	}
}

func TestRandomConversations(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	n := 1500
	if testing.Short() {
		n = 200
	}
	for i := range n {
		m := &model{rng: rng}
		f := New()
		answered := 0
		for range 1 + rng.IntN(12) {
			m.client, m.ends = nil, nil
			m.server.Reset()
			for range 1 + rng.IntN(pick(rng, 1, 4, 16)) {
				m.step()
			}
			feedChecked(t, f, true, m.client, 0, nil, rng, m.reqs)
			feedChecked(t, f, false, []byte(m.server.String()), answered, m.ends, rng, 0)
			answered += len(m.ends)
		}
		if f.Requests() != m.reqs || f.Answers() != m.reqs {
			t.Fatalf("conversation %d: requests %d answers %d, want %d", i, f.Requests(), f.Answers(), m.reqs)
		}
	}
}

// TestRandomRESP2AgainstRedigo checks random RESP2 reply streams against
// redigo, and the commands redigo encodes against the framer's client side.
func TestRandomRESP2AgainstRedigo(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range 3000 {
		m := &model{rng: rng}
		var b strings.Builder
		for range 1 + rng.IntN(6) {
			b.WriteString(m.value(3))
		}
		data := []byte(b.String())
		if rng.IntN(3) == 0 {
			data = data[:rng.IntN(len(data)+1)]
		}
		if err := checkServer(data, rng); err != nil {
			t.Fatalf("case %d: %v\n%q", i, err, data)
		}
		for range 1 + rng.IntN(5) {
			m.send("SET", m.str(), m.str())
		}
		if err := checkClient(m.client, rng); err != nil {
			t.Fatalf("case %d: %v\n%q", i, err, m.client)
		}
	}
}
