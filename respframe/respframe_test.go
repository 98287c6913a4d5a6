package respframe

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/internal/framekit/framekittest"
)

// cmd encodes a command as clients send it: an array of bulk strings.
func cmd(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

func bulk(s string) string { return fmt.Sprintf("$%d\r\n%s\r\n", len(s), s) }

// conf is a RESP2 subscription confirmation (RESP3 sends it as a push:
// replace the leading '*' by '>').
func conf(kind, ch string, count int) string {
	c := "$-1\r\n"
	if ch != "" {
		c = bulk(ch)
	}
	return "*3\r\n" + bulk(kind) + c + fmt.Sprintf(":%d\r\n", count)
}

func push(s string) string { return ">" + s[1:] }

func msg(ch, data string) string { return "*3\r\n" + bulk("message") + bulk(ch) + bulk(data) }

// The step tables and their runner are shared with the other framers.
type step = framekittest.Step

var (
	C = framekittest.C
	S = framekittest.S
)

var tableTests = []framekittest.Case{
	{Name: "pipelined PING", Steps: []step{
		C(cmd("PING")+cmd("PING")+cmd("PING"), 3, 0),
		S("+PONG\r\n+PONG\r\n", 3, 2),
		S("+PONG\r\n", 3, 3),
	}, Err: nil},
	{Name: "nulls and nesting", Steps: []step{
		C(cmd("GET", "a")+cmd("LRANGE", "l", "0", "-1")+cmd("XREAD", "STREAMS", "s", "0")+cmd("EXEC")+cmd("GET", "e"), 5, 0),
		S("$-1\r\n*0\r\n", 5, 2),
		S("*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n", 5, 3),
		S("*-1\r\n$0\r\n\r\n", 5, 5),
	}, Err: nil},
	{Name: "inline commands", Steps: []step{
		C("PING\r\n\r\n\nping\n  \r\nSET \"a b\" 'c\\'d'\r\n", 3, 0),
		S("+PONG\r\n+PONG\r\n+OK\r\n", 3, 3),
	}, Err: nil},
	{Name: "empty multibulk is no command", Steps: []step{
		C("*0\r\n*-1\r\n"+cmd("PING"), 1, 0),
		S("+PONG\r\n", 1, 1),
	}, Err: nil},
	{Name: "MULTI/EXEC", Steps: []step{
		C(cmd("MULTI")+cmd("SET", "a", "1")+cmd("INCR", "a"), 3, 0),
		S("+OK\r\n+QUEUED\r\n", 3, 2),
		S("+QUEUED\r\n", 3, 3),
		C(cmd("EXEC"), 4, 3),
		S("*2\r\n+OK\r\n:2\r\n", 4, 4),
	}, Err: nil},
	{Name: "EXECABORT", Steps: []step{
		C(cmd("MULTI")+cmd("NOSUCH")+cmd("EXEC"), 3, 0),
		S("+OK\r\n-ERR unknown command 'NOSUCH'\r\n-EXECABORT Transaction discarded because of previous errors.\r\n", 3, 3),
	}, Err: nil},
	{Name: "RESP2 pub/sub", Steps: []step{
		C(cmd("SUBSCRIBE", "a", "b"), 1, 0),
		S(conf("subscribe", "a", 1), 1, 0),
		S(conf("subscribe", "b", 2), 1, 1),
		S(msg("a", "hello")+msg("b", "x"), 1, 1),
		C(cmd("PSUBSCRIBE", "p*")+cmd("PING"), 3, 1),
		S(conf("psubscribe", "p*", 3)+msg("a", "y"), 3, 2),
		S("*4\r\n"+bulk("pmessage")+bulk("p*")+bulk("px")+bulk("z"), 3, 2),
		S("*2\r\n$4\r\npong\r\n$0\r\n\r\n", 3, 3),
		C(cmd("UNSUBSCRIBE"), 4, 3),
		S(conf("unsubscribe", "a", 2), 4, 3),
		S(conf("unsubscribe", "b", 1), 4, 4),
		C(cmd("UNSUBSCRIBE"), 5, 4),
		S(conf("unsubscribe", "", 1), 5, 5),
		C(cmd("PUNSUBSCRIBE")+cmd("GET", "k"), 7, 5),
		S(conf("punsubscribe", "p*", 0), 7, 6),
		// Not subscribed any more: an array starting with "message" is a reply.
		S(msg("a", "b"), 7, 7),
	}, Err: nil},
	{Name: "unsubscribe channels not subscribed", Steps: []step{
		C(cmd("UNSUBSCRIBE", "x", "y"), 1, 0),
		S(conf("unsubscribe", "x", 0), 1, 0),
		S(conf("unsubscribe", "y", 0), 1, 1),
	}, Err: nil},
	{Name: "subscribe error answers the command", Steps: []step{
		C(cmd("SUBSCRIBE", "a", "b")+cmd("SUBSCRIBE"), 2, 0),
		S("-NOAUTH Authentication required.\r\n", 2, 1),
		S("-ERR wrong number of arguments for 'subscribe' command\r\n", 2, 2),
	}, Err: nil},
	{Name: "shard channels", Steps: []step{
		C(cmd("SSUBSCRIBE", "s1", "s2")+cmd("SUBSCRIBE", "c"), 2, 0),
		S(conf("ssubscribe", "s1", 1)+conf("ssubscribe", "s2", 2), 2, 1),
		S(conf("subscribe", "c", 1), 2, 2),
		S("*3\r\n"+bulk("smessage")+bulk("s1")+bulk("v"), 2, 2),
		C(cmd("SUNSUBSCRIBE"), 3, 2),
		S(conf("sunsubscribe", "s1", 1)+conf("sunsubscribe", "s2", 0), 3, 3),
	}, Err: nil},
	{Name: "RESP3", Steps: []step{
		C(cmd("HELLO", "3"), 1, 0),
		S("%2\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n", 1, 1),
		C(cmd("SUBSCRIBE", "a")+cmd("GET", "k")+cmd("LRANGE", "l", "0", "1"), 4, 1),
		S(push(conf("subscribe", "a", 1)), 4, 2),
		S(push(msg("a", "hi")), 4, 2),
		S("_\r\n", 4, 3),
		S(push(msg("a", "again")), 4, 3),
		S(msg("a", "b"), 4, 4), // an array reply in RESP3, even subscribed
		C(cmd("X")+cmd("X")+cmd("X")+cmd("X")+cmd("X")+cmd("X")+cmd("X")+cmd("X")+cmd("X"), 13, 4),
		S("#t\r\n,3.14\r\n,-inf\r\n(3492890328409238509324850943850943825024385\r\n", 13, 8),
		S("!21\r\nSYNTAX invalid syntax\r\n=15\r\ntxt:Some string\r\n", 13, 10),
		S("%1\r\n+k\r\n*2\r\n:1\r\n:2\r\n~2\r\n+a\r\n+b\r\n", 13, 12),
		S("|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.19\r\n$1\r\nb\r\n,0.01\r\n", 13, 12),
		S("*2\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n:2\r\n", 13, 13),
		S(">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n", 13, 13),
	}, Err: nil},
	{Name: "HELLO error keeps RESP2", Steps: []step{
		C(cmd("HELLO", "4")+cmd("SUBSCRIBE", "a"), 2, 0),
		S("-NOPROTO unsupported protocol version\r\n"+conf("subscribe", "a", 1), 2, 2),
		S(msg("a", "x"), 2, 2),
	}, Err: nil},
	{Name: "HELLO 2 reply is an array", Steps: []step{
		C(cmd("HELLO", "3")+cmd("HELLO", "2")+cmd("SUBSCRIBE", "a"), 3, 0),
		S("%1\r\n+proto\r\n:3\r\n*2\r\n+proto\r\n:2\r\n"+conf("subscribe", "a", 1)+msg("a", "m"), 3, 3),
	}, Err: nil},
	{Name: "RESET", Steps: []step{
		C(cmd("HELLO", "3")+cmd("SUBSCRIBE", "a")+cmd("RESET")+cmd("GET", "a"), 4, 0),
		S("%0\r\n"+push(conf("subscribe", "a", 1))+"+RESET\r\n", 4, 3),
		S(msg("a", "b"), 4, 4),
	}, Err: nil},
	{Name: "blocking command", Steps: []step{
		C(cmd("BLPOP", "q", "0"), 1, 0),
		S("*2\r\n$1\r\nq\r\n$1\r\nv\r\n", 1, 1),
	}, Err: nil},
	{Name: "CLIENT REPLY OFF", Steps: []step{
		C(cmd("PING")+cmd("CLIENT", "REPLY", "OFF")+cmd("PING"), 1, 0),
	}, Err: ErrUnsupported},
	{Name: "CLIENT REPLY SKIP inline", Steps: []step{C("client reply skip\r\n", 0, 0)}, Err: ErrUnsupported},
	{Name: "CLIENT REPLY ON", Steps: []step{C(cmd("CLIENT", "REPLY", "ON"), 1, 0), S("+OK\r\n", 1, 1)}, Err: nil},
	{Name: "MONITOR", Steps: []step{C(cmd("MONITOR"), 0, 0)}, Err: ErrUnsupported},
	{Name: "SUBSCRIBE in MULTI", Steps: []step{C(cmd("MULTI")+cmd("SUBSCRIBE", "a"), 1, 0)}, Err: ErrUnsupported},
	{Name: "DISCARD ends MULTI", Steps: []step{
		C(cmd("MULTI")+cmd("DISCARD")+cmd("SUBSCRIBE", "a"), 3, 0),
		S("+OK\r\n+OK\r\n"+conf("subscribe", "a", 1), 3, 3),
	}, Err: nil},
	{Name: "unpaired reply", Steps: []step{S("-ERR max number of clients reached\r\n", 0, 0)}, Err: ErrUnpaired},
	{Name: "reply before its command", Steps: []step{C(cmd("PING")[:5], 0, 0), S("+PONG\r\n", 0, 0)}, Err: ErrUnpaired},
	{Name: "missing $", Steps: []step{C("*1\r\n+PING\r\n", 0, 0)}, Err: ErrMalformed},
	{Name: "bad multibulk length", Steps: []step{C("*01\r\n", 0, 0)}, Err: ErrMalformed},
	{Name: "bad bulk length", Steps: []step{C("*1\r\n$-1\r\n", 0, 0)}, Err: ErrMalformed},
	{Name: "argument without CRLF", Steps: []step{C("*1\r\n$4\r\nPINGxx", 0, 0)}, Err: ErrMalformed},
	{Name: "unbalanced quotes", Steps: []step{C("SET \"a b\r\n", 0, 0)}, Err: ErrMalformed},
	{Name: "quote not followed by space", Steps: []step{C("SET \"a\"b c\r\n", 0, 0)}, Err: ErrMalformed},
	{Name: "bad type byte", Steps: []step{C(cmd("PING"), 1, 0), S("PONG\r\n", 1, 0)}, Err: ErrMalformed},
	{Name: "bulk without CRLF", Steps: []step{C(cmd("GET", "a"), 1, 0), S("$1\r\nab\r\n", 1, 0)}, Err: ErrMalformed},
	{Name: "bad boolean", Steps: []step{C(cmd("X"), 1, 0), S("#x\r\n", 1, 0)}, Err: ErrMalformed},
	{Name: "line without CR", Steps: []step{C(cmd("X"), 1, 0), S("+OK\n", 1, 0)}, Err: ErrMalformed},
	{Name: "too deep", Steps: []step{C(cmd("X"), 1, 0), S(strings.Repeat("*1\r\n", MaxDepth+1), 1, 0)}, Err: ErrTooDeep},
	{Name: "line too long", Steps: []step{C(cmd("X"), 1, 0), S("+"+strings.Repeat("a", MaxLine), 1, 0)}, Err: ErrTooLong},
	{Name: "counts freeze at Err", Steps: []step{
		C(cmd("PING")+cmd("PING"), 2, 0),
		S("+PONG\r\n?", 2, 1),
		S("+PONG\r\n", 2, 1),
		C(cmd("PING"), 2, 1),
	}, Err: ErrMalformed},
}

func TestTable(t *testing.T) { framekittest.Table(t, New, tableTests) }

// A 64 MiB value is counted, not stored.
func TestHugeBulk(t *testing.T) {
	f := New()
	f.Client([]byte(cmd("GET", "big")))
	const size = 64 << 20
	f.Server([]byte(fmt.Sprintf("$%d\r\n", size)))
	chunk := make([]byte, 1<<20)
	// AllocsPerRun calls the function twice (a warm-up, then the run).
	allocs := testing.AllocsPerRun(1, func() {
		for range size / 2 / len(chunk) {
			f.Server(chunk)
		}
	})
	f.Server([]byte("\r\n"))
	if f.Answers() != 1 || f.Err() != nil {
		t.Fatalf("answers %d err %v", f.Answers(), f.Err())
	}
	if allocs > 0 {
		t.Fatalf("%v allocations while counting a value", allocs)
	}
}

func TestDetect(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{"", false}, {"*", true}, {"*3\r\n$3\r\nSET", true}, {"*x", false},
		{"PING\r\n", true}, {"ping\n", true}, {"PI", true}, {"hello 3\r\n", true},
		{"PINGX", false}, {"GET / HTTP/1.1\r\n", false}, {"get foo\r\n", false},
		{"set k 0 0 1\r\n", false}, {"\x16\x03\x01", false}, {"AUTH pw\r\n", true},
	} {
		if got := Detect([]byte(c.in)); got != c.want {
			t.Errorf("Detect(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

// Client and Server run on two goroutines, as the replayer calls them.
func TestConcurrent(t *testing.T) { framekittest.Concurrent(t, New(), cmd("SET", "k", "v"), "+OK\r\n") }
