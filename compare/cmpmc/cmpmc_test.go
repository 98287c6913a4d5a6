package cmpmc

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
	reqs := cmptest.Rendered(append(c.Requests([]byte(client)), c.EndRequests()...))
	ans := cmptest.Detailed(append(a.Feed([]byte(server)), a.End()...))
	return reqs, ans
}

// chunked does as run, cutting both streams at random and interleaving
// them (an answer may come before its request).
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
	reqs = cmptest.Rendered(append(reqs, c.EndRequests()...))
	ans = cmptest.Detailed(append(ans, a.End()...))
	return reqs, ans
}

func fields(a compare.Answer) string {
	var s []string
	for _, f := range a.Fields {
		s = append(s, f.Name+"="+f.Value)
	}
	return strings.Join(s, "; ")
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
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		r2, a2 := chunked(compare.DefaultLimits, []byte(client), []byte(server), rng)
		if !reflect.DeepEqual(r2, reqs) || !reflect.DeepEqual(a2, ans) {
			t.Errorf("%s: cut streams decode differently", name)
			break
		}
	}
}

func TestText(t *testing.T) {
	check(t, "get hits and misses",
		"get a b c\r\nget missing\r\ngets a\r\ngat 10 a c\r\n",
		"VALUE a 5 3\r\nxyz\r\nVALUE c 0 1\r\n1\r\nEND\r\nEND\r\nVALUE a 5 3 42\r\nxyz\r\nEND\r\nVALUE a 5 3\r\nxyz\r\nEND\r\n",
		[]string{"get", "get", "gets", "gat"}, nil,
		[]want{
			{0, "hits=2; value:a=xyz; flags:a=5; value:c=1; flags:c=0", false},
			{1, "hits=0", false},
			{2, "hits=1; value:a=xyz; flags:a=5; cas:a=42", false},
			{3, "hits=1; value:a=xyz; flags:a=5", false},
		})
	check(t, "storage and noreply",
		"set a 0 0 3\r\nabc\r\nadd a 0 0 1 noreply\r\nx\r\ncas a 1 0 2 99\r\nhi\r\nappend a 0 0 0\r\n\r\ndelete a noreply\r\ndelete a\r\nincr n 1 noreply\r\nincr n 1\r\ndecr n 5\r\ntouch a 1\r\nflush_all\r\n",
		"STORED\r\nEXISTS\r\nSTORED\r\nNOT_FOUND\r\n6\r\n0\r\nNOT_FOUND\r\nOK\r\n",
		[]string{"set", "add", "cas", "append", "delete", "delete", "incr", "incr", "decr", "touch", "flush_all"}, []int{1, 4, 6},
		[]want{
			{0, "status=STORED", false}, {2, "status=EXISTS", false}, {3, "status=STORED", false},
			{5, "status=NOT_FOUND", false}, {7, "status=NUMBER; value=6", false}, {8, "status=NUMBER; value=0", false},
			{9, "status=NOT_FOUND", false}, {10, "status=OK", false},
		})
	check(t, "misc",
		"version\r\nstats\r\nstats reset\r\nstats cachedump 1 1\r\nverbosity 1\r\nbogus\r\n\r\nincr s 1\r\nget "+strings.Repeat("k", 300)+"\r\nquit\r\n",
		"VERSION 1.6.18\r\nSTAT pid 1\r\nSTAT uptime 5\r\nEND\r\nRESET\r\nEND\r\nOK\r\nERROR\r\nERROR\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nCLIENT_ERROR bad command line format\r\n",
		[]string{"version", "stats", "stats", "stats", "verbosity", "?", "(empty)", "incr", "get", "quit"}, []int{9},
		[]want{
			{0, "status=VERSION; version=1.6.18", false},
			{1, "status=END; stats=2", false},
			{2, "status=RESET", false},
			{3, "status=END; stats=0", false},
			{4, "status=OK", false},
			{5, "status=ERROR", true},
			{6, "status=ERROR", true},
			{7, "status=CLIENT_ERROR; message=cannot increment or decrement non-numeric value", true},
			{8, "status=CLIENT_ERROR; message=bad command line format", true},
		})
}

func TestMeta(t *testing.T) {
	check(t, "flags",
		"mg a v f t c k s O123\r\nms b 2 T0 F3\r\nhi\r\nmd c\r\nma n\r\nme a\r\n",
		"VA 3 f0 t-1 c99 ka s3 O123\r\nabc\r\nHD\r\nNF\r\nNF\r\nME a exp=-1 la=1 cas=99 fetch=yes cls=1 size=64\r\n",
		[]string{"mg", "ms", "md", "ma", "me"}, nil,
		[]want{
			{0, "status=VA; flag:f=0; flag:k=a; flag:s=3; flag:O=123; value=abc", false},
			{1, "status=HD", false}, {2, "status=NF", false}, {3, "status=NF", false}, {4, "status=ME", false},
		})
	// A multi-get in quiet mode: the hits come, the misses do not, MN
	// closes it.
	check(t, "quiet closed by mn",
		"mg a v q\r\nmg b v q\r\nmg c v q\r\nmn\r\nmg d v\r\n",
		"VA 1\r\nA\r\nVA 1\r\nC\r\nMN\r\nEN\r\n",
		[]string{"mg", "mg", "mg", "mn", "mg"}, []int{0, 1, 2},
		[]want{{-1, "status=VA; value=A", false}, {-1, "status=VA; value=C", false}, {3, "status=MN", false}, {4, "status=EN", false}})
	// Opaque tokens prove which request an answer is for.
	check(t, "opaque",
		"mg a v q O1\r\nmg b v O2\r\nmg c v q O3\r\nmn\r\n",
		"VA 1 O2\r\nB\r\nVA 1 O3\r\nC\r\nMN\r\n",
		[]string{"mg", "mg", "mg", "mn"}, []int{0, 2},
		[]want{{1, "status=VA; flag:O=2; value=B", false}, {-1, "status=VA; flag:O=3; value=C", false}, {3, "status=MN", false}})
	// A quiet md's NF (memcached sends it) before a non-quiet ma.
	check(t, "quiet md then ma",
		"md a q\r\nmd a q\r\nma n N0 J13 v\r\nma n q\r\nme n\r\nmn\r\n",
		"NF\r\nVA 2\r\n13\r\nME n exp=0 la=0 cas=3 fetch=no cls=1 size=60\r\nMN\r\n",
		[]string{"md", "md", "ma", "ma", "me", "mn"}, []int{0, 1, 3},
		[]want{{-1, "status=NF", false}, {2, "status=VA; value=13", false}, {4, "status=ME", false}, {5, "status=MN", false}})
	// A quiet ms's error still comes.
	check(t, "quiet error",
		"ms a 2 q\r\nhi\r\nms b 2 q\r\nhi\r\nmn\r\n",
		"SERVER_ERROR out of memory storing object\r\nMN\r\n",
		[]string{"ms", "ms", "mn"}, []int{0, 1},
		[]want{{-1, "status=SERVER_ERROR; message=out of memory storing object", true}, {2, "status=MN", false}})
}

func TestBinary(t *testing.T) {
	reqs, ans := run(compare.DefaultLimits, "version\r\n\x80\x0b\x00\x00\x00\x00\x00\x00", "VERSION 1.6.18\r\n\x81\x0b\x00\x00\x00\x00\x00\x00\x00")
	if len(reqs) != 2 || reqs[1].Key != "binary" || reqs[1].NoAnswer {
		t.Fatalf("requests: %+v", reqs)
	}
	if len(ans) != 2 || ans[1].Req != 1 || ans[1].Malformed != "binary protocol not compared" {
		t.Fatalf("answers: %+v", ans)
	}
}

func TestBroken(t *testing.T) {
	// A server stream cut inside a data block.
	_, ans := run(compare.DefaultLimits, "get a\r\nget b\r\n", "END\r\nVALUE b 0 10\r\nabc")
	if len(ans) != 2 || !ans[1].Truncated || ans[1].Req != 1 {
		t.Errorf("truncated: %+v", ans)
	}
	// A client stream cut inside a data block.
	reqs, _ := run(compare.DefaultLimits, "set a 0 0 10\r\nabc", "")
	if len(reqs) != 1 || !reqs[0].Partial || reqs[0].Key != "set" || reqs[0].Size != 17 {
		t.Errorf("partial: %+v", reqs)
	}
	// Malformed commands end the client stream.
	for _, s := range []string{"set a 0 0 x\r\n", "set a 0 0 1\r\nab\r\n", "set a 0\r\n", "ms a\r\n", "mg " + strings.Repeat("k", 251) + "\r\n", "set " + strings.Repeat("k", MaxLine) + "\r\n"} {
		reqs, _ := run(compare.DefaultLimits, "version\r\n"+s+"version\r\n", "")
		if len(reqs) != 2 || reqs[1].Key != "(malformed)" {
			t.Errorf("%.40q: %+v", s, reqs)
		}
	}
	// A get line over MaxLine is a get.
	reqs, _ = run(compare.DefaultLimits, "get "+strings.Repeat("k ", MaxLine)+"\r\nversion\r\n", "")
	if len(reqs) != 2 || reqs[0].Key != "get" || !strings.HasSuffix(reqs[0].Sample, "…") || reqs[1].Key != "version" {
		t.Errorf("long get: %d %+v", len(reqs), reqs[len(reqs)-1])
	}
	// Malformed answers end the server stream.
	for _, s := range []string{"STORED\n", "VALUE a x 1\r\nx\r\nEND\r\n", "VA\r\n", "VALUE a 0 1\r\nab\r\n", "VALUE a 0\r\n", "\r\n"} {
		_, ans := run(compare.DefaultLimits, "get a\r\nget b\r\n", "END\r\n"+s+"END\r\n")
		if len(ans) != 2 || ans[1].Malformed == "" || ans[1].Req != 1 {
			t.Errorf("%q: %+v", s, ans)
		}
	}
	// An answer no request awaits.
	_, ans = run(compare.DefaultLimits, "", "SERVER_ERROR out of memory\r\n")
	if len(ans) != 1 || ans[0].Req != -1 || !ans[0].Error {
		t.Errorf("unsolicited: %+v", ans)
	}
}

func TestLimits(t *testing.T) {
	lim := compare.Limits{Body: 1000, Sample: 64}
	big := strings.Repeat("x", 5000)
	var get, vals strings.Builder
	get.WriteString("get")
	for i := range maxItems + 10 {
		k := " k" + strings.Repeat("0", 3-len(itoa(i))) + itoa(i)
		get.WriteString(k)
		vals.WriteString("VALUE" + k + " 0 1\r\nv\r\n")
	}
	reqs, ans := run(lim, "get a\r\n"+get.String()+"\r\nset b 0 0 5000\r\n"+big+"\r\n",
		"VALUE a 0 5000\r\n"+big+"\r\nEND\r\n"+vals.String()+"END\r\nSTORED\r\n")
	if len(ans) != 3 || len(reqs) != 3 {
		t.Fatalf("%d requests, %d answers", len(reqs), len(ans))
	}
	if v := ans[0].Fields[1].Value; v != compare.Digest([]byte(big)) {
		t.Errorf("big value: %q", v)
	}
	f := ans[1].Fields
	if len(f) != 1+2*maxItems+1 || f[0].Value != itoa(maxItems+10) || f[len(f)-1].Name != "more" || !strings.HasPrefix(f[len(f)-1].Value, "10 items len=") {
		t.Errorf("many items: %d fields, %v … %v", len(f), f[0], f[len(f)-1])
	}
	for _, r := range reqs {
		if len(r.Sample) > 64+30 {
			t.Errorf("request sample of %d bytes", len(r.Sample))
		}
	}
	for _, a := range ans {
		if len(a.Sample) > 64+30 {
			t.Errorf("answer sample of %d bytes", len(a.Sample))
		}
	}
	if reqs[2].Size != len("set b 0 0 5000\r\n")+5002 {
		t.Errorf("storage size %d", reqs[2].Size)
	}
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

func TestName(t *testing.T) {
	if Protocol().Name() != "memcached" {
		t.Error(Protocol().Name())
	}
}
