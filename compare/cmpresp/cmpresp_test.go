package cmpresp

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/compare/cmptest"
)

// run cuts a client stream and a server stream of one connection, the
// client's first, both whole.
func run(lim compare.Limits, client, server string) ([]compare.Request, []compare.Answer) {
	c := Protocol().New(lim)
	a := c.Answers()
	reqs := append(c.Requests([]byte(client)), c.EndRequests()...)
	ans := append(a.Feed([]byte(server)), a.End()...)
	return cmptest.Rendered(reqs), cmptest.Detailed(ans)
}

// chunked does as run, cutting both streams at random and interleaving
// them (a reply may come before its command).
func chunked(lim compare.Limits, client, server []byte, rng *rand.Rand) ([]compare.Request, []compare.Answer) {
	c := Protocol().New(lim)
	a := c.Answers()
	var reqs []compare.Request
	var ans []compare.Answer
	for len(client) > 0 || len(server) > 0 {
		if len(client) > 0 && (len(server) == 0 || rng.IntN(2) == 0) {
			n := 1 + rng.IntN(len(client))
			reqs = append(reqs, c.Requests(client[:n])...)
			client = client[n:]
			continue
		}
		n := 1 + rng.IntN(len(server))
		ans = append(ans, a.Feed(server[:n])...)
		server = server[n:]
	}
	reqs = append(reqs, c.EndRequests()...)
	ans = append(ans, a.End()...)
	return cmptest.Rendered(reqs), cmptest.Detailed(ans)
}

// fields renders an answer's fields as "name=value" joined by "; ".
func fields(a compare.Answer) string {
	var s []string
	for _, f := range a.Fields {
		s = append(s, f.Name+"="+f.Value)
	}
	return strings.Join(s, "; ")
}

// cmd encodes a command as an array of bulk strings.
func cmd(args ...string) string {
	var b strings.Builder
	b.WriteString("*" + itoa(len(args)) + "\r\n")
	for _, a := range args {
		b.WriteString("$" + itoa(len(a)) + "\r\n" + a + "\r\n")
	}
	return b.String()
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var d []byte
	for ; n > 0; n /= 10 {
		d = append([]byte{byte('0' + n%10)}, d...)
	}
	return string(d)
}

type want struct {
	req    int
	fields string
	err    bool
}

func check(t *testing.T, name, client, server string, keys []string, noAnswer []int, answers []want) {
	t.Helper()
	reqs, ans := run(compare.DefaultLimits, client, server)
	var gotKeys []string
	var gotNo []int
	for _, r := range reqs {
		gotKeys = append(gotKeys, r.Key)
		if r.NoAnswer {
			gotNo = append(gotNo, r.ID)
		}
	}
	if !reflect.DeepEqual(gotKeys, keys) {
		t.Errorf("%s: keys %q, want %q", name, gotKeys, keys)
	}
	if !reflect.DeepEqual(gotNo, noAnswer) {
		t.Errorf("%s: NoAnswer %v, want %v", name, gotNo, noAnswer)
	}
	if len(ans) != len(answers) {
		t.Errorf("%s: %d answers, want %d", name, len(ans), len(answers))
	}
	for i := range min(len(ans), len(answers)) {
		g, w := ans[i], answers[i]
		if g.Req != w.req || fields(g) != w.fields || g.Error != w.err || g.Malformed != "" || g.Truncated {
			t.Errorf("%s: answer %d: Req %d %q error %v (%q %v), want Req %d %q error %v", name, i, g.Req, fields(g), g.Error, g.Malformed, g.Truncated, w.req, w.fields, w.err)
		}
	}
	// Whatever the cuts, the same.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		r2, a2 := chunked(compare.DefaultLimits, []byte(client), []byte(server), rng)
		if !reflect.DeepEqual(r2, reqs) || !reflect.DeepEqual(a2, ans) {
			t.Errorf("%s: cut streams decode differently", name)
			break
		}
	}
}

func TestReplies(t *testing.T) {
	check(t, "null vs bulk",
		cmd("GET", "missing")+cmd("GET", "k")+cmd("MGET", "k", "missing"),
		"$-1\r\n$3\r\nfoo\r\n*2\r\n$3\r\nfoo\r\n$-1\r\n",
		[]string{"GET", "GET", "MGET"}, nil,
		[]want{{0, "type=null; value=$-1", false}, {1, "type=bulk; value=foo", false}, {2, `type=array; length=2; value=["foo", nil]`, false}})
	check(t, "errors",
		cmd("INCR", "list")+cmd("EVALSHA", "abc", "0")+cmd("FOO"),
		"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n-NOSCRIPT No matching script.\r\n!21\r\nSYNTAX invalid syntax\r\n",
		[]string{"INCR", "EVALSHA", "FOO"}, nil,
		[]want{
			{0, "type=error; error=WRONGTYPE; value=WRONGTYPE Operation against a key holding the wrong kind of value", true},
			{1, "type=error; error=NOSCRIPT; value=NOSCRIPT No matching script.", true},
			{2, "type=bulk_error; error=SYNTAX; value=SYNTAX invalid syntax", true},
		})
	check(t, "scalars",
		cmd("A")+cmd("B")+cmd("C")+cmd("D")+cmd("E")+cmd("F")+cmd("G")+cmd("H"),
		":-42\r\n,3.14\r\n#f\r\n(3492890328409238509324850943850943825024385\r\n=15\r\ntxt:Some string\r\n_\r\n*-1\r\n$0\r\n\r\n",
		[]string{"A", "B", "C", "D", "E", "F", "G", "H"}, nil,
		[]want{
			{0, "type=integer; value=-42", false},
			{1, "type=double; value=3.14", false},
			{2, "type=boolean; value=false", false},
			{3, "type=bignum; value=3492890328409238509324850943850943825024385", false},
			{4, "type=verbatim; value=txt:Some string", false},
			{5, "type=null; value=_", false},
			{6, "type=null; value=*-1", false},
			{7, "type=bulk; value=", false},
		})
	// A map's pairs and a set's elements in another order are equal.
	check(t, "RESP3 aggregates",
		cmd("HELLO", "3")+cmd("HGETALL", "h")+cmd("HGETALL", "h")+cmd("SMEMBERS", "s")+cmd("X"),
		"%1\r\n+proto\r\n:3\r\n"+
			"%2\r\n$1\r\nb\r\n:2\r\n$1\r\na\r\n:1\r\n"+
			"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n"+
			"~3\r\n+b\r\n+a\r\n*2\r\n:1\r\n#t\r\n"+
			"*3\r\n%0\r\n~0\r\n*1\r\n*0\r\n",
		[]string{"HELLO", "HGETALL", "HGETALL", "SMEMBERS", "X"}, nil,
		[]want{
			{0, `type=map; length=1; value={+"proto": 3}`, false},
			{1, `type=map; length=2; value={"a": 1, "b": 2}`, false},
			{2, `type=map; length=2; value={"a": 1, "b": 2}`, false},
			{3, `type=set; length=3; value=~[+"a", +"b", [1, true]]`, false},
			{4, `type=array; length=3; value=[{}, ~[], [[]]]`, false},
		})
	check(t, "pushes answer nothing",
		cmd("HELLO", "3")+cmd("SUBSCRIBE", "a")+cmd("GET", "k")+cmd("UNSUBSCRIBE"),
		"%0\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n$1\r\nv\r\n>3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n",
		[]string{"HELLO", "SUBSCRIBE", "GET", "UNSUBSCRIBE"}, []int{1, 3},
		[]want{
			{0, "type=map; length=0; value={}", false},
			{-1, `type=push; length=3; value=>["subscribe", "a", 1]`, false},
			{-1, `type=push; length=3; value=>["message", "a", "hi"]`, false},
			{2, "type=bulk; value=v", false},
			{-1, `type=push; length=3; value=>["unsubscribe", "a", 0]`, false},
		})
	check(t, "attributes",
		cmd("HELLO", "3")+cmd("GET", "a")+cmd("LRANGE", "l", "0", "-1"),
		"%0\r\n|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n$1\r\n7\r\n*2\r\n|1\r\n+ttl\r\n:3\r\n:1\r\n:2\r\n",
		[]string{"HELLO", "GET", "LRANGE"}, nil,
		[]want{
			{0, "type=map; length=0; value={}", false},
			{1, `type=bulk; value=7; attribute={+"key-popularity": {"a": ,0.19}}`, false},
			{2, `type=array; length=2; value=[1, 2]`, false},
		})
}

func TestModes(t *testing.T) {
	check(t, "RESP2 pub/sub",
		cmd("GET", "x")+cmd("SUBSCRIBE", "a", "b")+cmd("PING")+cmd("UNSUBSCRIBE"),
		"$1\r\n1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"+
			"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n",
		[]string{"GET", "SUBSCRIBE", "PING", "UNSUBSCRIBE"}, []int{2, 3},
		[]want{
			{0, "type=bulk; value=1", false},
			{1, `type=array; length=3; value=["subscribe", "a", 1]`, false},
			{-1, `type=array; length=3; value=["subscribe", "b", 2]`, false},
			{-1, `type=array; length=3; value=["message", "a", "hi"]`, false},
			{-1, `type=array; length=2; value=["pong", ""]`, false},
		})
	check(t, "RESP2 unsubscribe without subscriptions",
		cmd("UNSUBSCRIBE", "a", "b")+cmd("PING"),
		"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n+PONG\r\n",
		[]string{"UNSUBSCRIBE", "PING"}, nil,
		[]want{
			{0, `type=array; length=3; value=["unsubscribe", "a", 0]`, false},
			{-1, `type=array; length=3; value=["unsubscribe", "b", 0]`, false},
			{1, "type=simple; value=PONG", false},
		})
	check(t, "MONITOR then RESET",
		cmd("MONITOR")+cmd("GET", "k")+cmd("RESET")+cmd("PING"),
		"+OK\r\n+1700000000.1 [0 127.0.0.1:5] \"GET\" \"k\"\r\n$-1\r\n+RESET\r\n+PONG\r\n",
		[]string{"MONITOR", "GET", "RESET", "PING"}, []int{1},
		[]want{
			{0, "type=simple; value=OK", false},
			{-1, `type=simple; value=1700000000.1 [0 127.0.0.1:5] "GET" "k"`, false},
			{-1, "type=null; value=$-1", false},
			{2, "type=simple; value=RESET", false},
			{3, "type=simple; value=PONG", false},
		})
	check(t, "CLIENT REPLY",
		cmd("CLIENT", "REPLY", "OFF")+cmd("SET", "a", "1")+cmd("CLIENT", "REPLY", "SKIP")+cmd("CLIENT", "REPLY", "ON")+
			cmd("CLIENT", "REPLY", "SKIP")+cmd("SET", "b", "2")+cmd("GET", "b"),
		"+OK\r\n$1\r\n2\r\n",
		[]string{"CLIENT REPLY", "SET", "CLIENT REPLY", "CLIENT REPLY", "CLIENT REPLY", "SET", "GET"}, []int{0, 1, 2, 4, 5},
		[]want{{3, "type=simple; value=OK", false}, {6, "type=bulk; value=2", false}})
	check(t, "MULTI",
		cmd("MULTI")+cmd("INCR", "a")+cmd("EXEC"),
		"+OK\r\n+QUEUED\r\n*1\r\n:1\r\n",
		[]string{"MULTI", "INCR", "EXEC"}, nil,
		[]want{{0, "type=simple; value=OK", false}, {1, "type=simple; value=QUEUED", false}, {2, "type=array; length=1; value=[1]", false}})
}

func TestRequests(t *testing.T) {
	reqs, _ := run(compare.DefaultLimits,
		"PING\r\nset \"a b\" 'c'\r\n\r\n  \r\n*0\r\nconfig get maxmemory\n"+cmd("client", "setname", "x")+cmd("XINFO", "STREAM", "s")+
			cmd("COMMAND")+cmd("\x00bad", "x")+cmd("GET", "\xff\x00")+cmd("OBJECT", "ENCODING", "k")+cmd("SET", "k", strings.Repeat("v", 10000)), "")
	want := []struct{ key, sample string }{
		{"PING", "PING"},
		{"SET", `set "a b" c`},
		{"CONFIG GET", "config get maxmemory"},
		{"CLIENT SETNAME", "client setname x"},
		{"XINFO STREAM", "XINFO STREAM s"},
		{"COMMAND", "COMMAND"},
		{"?", `"\x00bad" x`},
		{"GET", `GET "\xff\x00"`},
		{"OBJECT ENCODING", "OBJECT ENCODING k"},
	}
	if len(reqs) != len(want)+1 {
		t.Fatalf("%d requests: %+v", len(reqs), reqs)
	}
	for i, w := range want {
		if reqs[i].Key != w.key || reqs[i].Sample != w.sample || reqs[i].ID != i {
			t.Errorf("request %d: %q %q, want %q %q", i, reqs[i].Key, reqs[i].Sample, w.key, w.sample)
		}
	}
	if got := reqs[1].Size; got != len("set \"a b\" 'c'\r\n") {
		t.Errorf("inline size %d", got)
	}
	if got := reqs[2].Size; got != len("\r\n  \r\n*0\r\nconfig get maxmemory\n") {
		t.Errorf("size with skipped lines %d", got)
	}
	last := reqs[len(reqs)-1]
	if len(last.Sample) > compare.DefaultLimits.Sample+100 || !strings.Contains(last.Sample, "more bytes") {
		t.Errorf("long sample: %d bytes: %.80q", len(last.Sample), last.Sample)
	}
}

func TestSecrets(t *testing.T) {
	client := cmd("AUTH", "pw1") + cmd("AUTH", "user", "pw2") + "HELLO 3 AUTH user pw3 SETNAME me\r\n" +
		cmd("MIGRATE", "h", "6379", "", "0", "5000", "COPY", "AUTH2", "user", "pw4", "KEYS", "k") +
		cmd("MIGRATE", "h", "6379", "k", "0", "5000", "AUTH", "pw5") + cmd("CONFIG", "SET", "requirepass", "pw6") +
		cmd("ACL", "SETUSER", "u", "on", ">pw7", "~*")
	reqs, _ := run(compare.DefaultLimits, client, "")
	want := []string{
		"AUTH [redacted]", "AUTH user [redacted]", "HELLO 3 AUTH user [redacted] SETNAME me",
		`MIGRATE h 6379 "" 0 5000 COPY AUTH2 user [redacted] KEYS k`,
		"MIGRATE h 6379 k 0 5000 AUTH [redacted]", "CONFIG SET requirepass [redacted]",
		"ACL SETUSER u on [redacted] ~*",
	}
	for i, w := range want {
		if reqs[i].Sample != w {
			t.Errorf("request %d: %q, want %q", i, reqs[i].Sample, w)
		}
		if strings.Contains(reqs[i].Sample, "pw") {
			t.Errorf("request %d leaks: %q", i, reqs[i].Sample)
		}
	}
	lim := compare.DefaultLimits
	lim.ShowSecrets = true
	reqs, _ = run(lim, client, "")
	if reqs[0].Sample != "AUTH pw1" || reqs[2].Sample != "HELLO 3 AUTH user pw3 SETNAME me" {
		t.Errorf("ShowSecrets: %q, %q", reqs[0].Sample, reqs[2].Sample)
	}
}

func TestLimits(t *testing.T) {
	lim := compare.Limits{Body: 1000, Sample: 64}
	big := strings.Repeat("x", 5000)
	mid := strings.Repeat("y", 300)
	var arr strings.Builder
	arr.WriteString("*100\r\n")
	for range 100 {
		arr.WriteString("$20\r\n" + strings.Repeat("z", 20) + "\r\n")
	}
	_, ans := run(lim, cmd("GET", "a")+cmd("GET", "b")+cmd("LRANGE", "l")+cmd("X"),
		"$5000\r\n"+big+"\r\n$300\r\n"+mid+"\r\n"+arr.String()+"*2\r\n$300\r\n"+mid+"\r\n:1\r\n")
	if len(ans) != 4 {
		t.Fatalf("%d answers", len(ans))
	}
	if v := ans[0].Fields[1].Value; v != compare.Digest([]byte(big)) {
		t.Errorf("big bulk: %q", v)
	}
	if v := ans[1].Fields[1].Value; v != compare.Value([]byte(mid)) {
		t.Errorf("mid bulk: %q", v)
	}
	if v := ans[2].Fields[2].Value; !strings.HasPrefix(v, "len=") || ans[2].Fields[1].Value != "100" {
		t.Errorf("big array: %q", fields(ans[2]))
	}
	if v := ans[3].Fields[2].Value; v != "[<"+compare.Digest([]byte(mid))+">, 1]" {
		t.Errorf("array of a long string: %q", v)
	}
	for _, a := range ans {
		if len(a.Sample) > 64+30 {
			t.Errorf("sample of %d bytes", len(a.Sample))
		}
	}
	if ans[0].Size != len("$5000\r\n")+5002 {
		t.Errorf("size %d", ans[0].Size)
	}
}

func TestBroken(t *testing.T) {
	// Malformed replies end the stream.
	_, ans := run(compare.DefaultLimits, cmd("GET", "a")+cmd("GET", "b")+cmd("GET", "c"), "+OK\r\n?what\r\n+OK\r\n")
	if len(ans) != 2 || ans[1].Malformed == "" || ans[1].Req != 1 {
		t.Errorf("malformed reply: %+v", ans)
	}
	for _, s := range []string{"$3\r\nabcd\r\n", "+OK\n", ":x\r\n", "#x\r\n", "$-2\r\n", ">-1\r\n", strings.Repeat("*1\r\n", MaxDepth+1)} {
		if _, ans := run(compare.DefaultLimits, cmd("GET", "a"), s); len(ans) != 1 || ans[0].Malformed == "" {
			t.Errorf("%q: %+v", s, ans)
		}
	}
	// A stream cut inside a reply.
	_, ans = run(compare.DefaultLimits, cmd("GET", "a")+cmd("GET", "b"), "$1\r\nx\r\n$10\r\nabc")
	if len(ans) != 2 || !ans[1].Truncated || ans[1].Req != 1 {
		t.Errorf("truncated: %+v", ans)
	}
	// Malformed commands end the client stream with one request.
	for _, s := range []string{"*1\r\nx", "*1\r\n$3\r\nabcd\r\n", "*x\r\n", "SET \"a\r\n", "*1\n"} {
		reqs, _ := run(compare.DefaultLimits, cmd("PING")+s+cmd("PING"), "")
		if len(reqs) != 2 || reqs[1].Key != "(malformed)" {
			t.Errorf("%q: %+v", s, reqs)
		}
	}
	// A command cut short.
	reqs, _ := run(compare.DefaultLimits, cmd("PING")+"*2\r\n$3\r\nGET\r\n$1\r\n", "")
	if len(reqs) != 2 || !reqs[1].Partial || !reqs[1].NoAnswer || reqs[1].Key != "GET" {
		t.Errorf("partial: %+v", reqs)
	}
	// Replies no command awaits answer nothing.
	_, ans = run(compare.DefaultLimits, "", "-ERR max number of clients reached\r\n")
	if len(ans) != 1 || ans[0].Req != -1 || !ans[0].Error {
		t.Errorf("unsolicited: %+v", ans)
	}
}

// TestEarlyReply feeds a reply before its command: it is kept and paired
// once the command is cut.
func TestEarlyReply(t *testing.T) {
	c := Protocol().New(compare.DefaultLimits)
	a := c.Answers()
	if got := a.Feed([]byte("+PONG\r\n+OK\r\n")); len(got) != 0 {
		t.Fatalf("answers before requests: %+v", got)
	}
	c.Requests([]byte(cmd("PING")))
	got := a.Feed(nil)
	if len(got) != 1 || got[0].Req != 0 {
		t.Fatalf("after PING: %+v", got)
	}
	got = a.End()
	if len(got) != 1 || got[0].Req != -1 {
		t.Fatalf("at the end: %+v", got)
	}
}

// TestNames keeps Name and the type names as the report expects them.
func TestNames(t *testing.T) {
	if Protocol().Name() != "redis" {
		t.Error(Protocol().Name())
	}
}

// An aggregate's "value" is the digest of its bytes; its Detail renders
// it canonically, so a set or map reordered compares equal once expanded,
// and a changed element shows in the rendering.
func TestAggregateDetail(t *testing.T) {
	one := func(server string) compare.Answer {
		c := Protocol().New(compare.DefaultLimits)
		a := c.Answers()
		c.Requests([]byte(cmd("SMEMBERS", "s")))
		ans := a.Feed([]byte(server))
		if len(ans) != 1 {
			t.Fatalf("%q: %d answers", server, len(ans))
		}
		return ans[0]
	}
	value := func(fs []compare.Field) string {
		for _, f := range fs {
			if f.Name == "value" {
				return f.Value
			}
		}
		return ""
	}
	x := one("~3\r\n$1\r\nx\r\n$1\r\ny\r\n*2\r\n:1\r\n|1\r\n+a\r\n+b\r\n:2\r\n")
	y := one("~3\r\n*2\r\n:1\r\n:2\r\n$1\r\ny\r\n$1\r\nx\r\n")
	z := one("~3\r\n$1\r\nx\r\n$1\r\nz\r\n*2\r\n:1\r\n:2\r\n")
	if value(x.Fields) == value(y.Fields) || x.Detail == nil || x.Detail.Of != "value" {
		t.Fatalf("reordered sets: values %q %q, detail %v", value(x.Fields), value(y.Fields), x.Detail)
	}
	want := `~["x", "y", [1, 2]]`
	if dx, dy := value(x.Detail.Fields()), value(y.Detail.Fields()); dx != want || dy != want {
		t.Errorf("details %q and %q, want %q", dx, dy, want)
	}
	if dz := value(z.Detail.Fields()); dz != `~["x", "z", [1, 2]]` {
		t.Errorf("detail %q", dz)
	}
	// Beyond Limits.Body, an aggregate is its digest, with no Detail.
	c := Protocol().New(compare.Limits{Body: 16})
	a := c.Answers()
	c.Requests([]byte(cmd("LRANGE", "l", "0", "-1")))
	ans := cmptest.Detailed(a.Feed([]byte("*3\r\n$5\r\nhello\r\n$5\r\nworld\r\n$1\r\n!\r\n")))
	if len(ans) != 1 || ans[0].Detail != nil || !strings.HasPrefix(value(ans[0].Fields), "len=") {
		t.Errorf("over Body: %+v", ans)
	}
}
