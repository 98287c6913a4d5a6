package compare

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSideString(t *testing.T) {
	for s, want := range map[Side]string{Production: "production", Target: "target", Baseline: "baseline"} {
		if s.String() != want {
			t.Errorf("%d: %q", s, s.String())
		}
	}
}

// Answers come before and after their requests on each side, in pieces.
func TestPairingOrder(t *testing.T) {
	c := newCol(Config{})
	cn := c.Open(cli, srv)
	cn.Decide("line")
	// The target answers the first two requests before the client's bytes
	// are seen (live mode), production after.
	cn.Server(Target, []byte("VAL a=1\nVAL a="), at(1))
	cn.Client([]byte("GET x\nGET "), at(0))
	cn.Server(Target, []byte("2\n"), at(2))
	cn.Client([]byte("y\nGET z\n"), at(0))
	cn.Server(Production, []byte("VAL a=1\nVAL a=2\nVAL a=3\n"), at(3))
	if s := c.Stats(); s.Compared != 2 || s.Identical != 2 || s.Requests != 3 {
		t.Fatalf("stats before the third target answer: %+v", s)
	}
	cn.Server(Target, []byte("VAL a=4\n"), at(4))
	cn.EndClient()
	cn.End(Production)
	cn.End(Target)
	r := c.Report()
	if r.Requests != 3 || r.Compared != 3 || r.Identical != 2 || r.Different != 1 {
		t.Fatalf("report: %+v", r)
	}
	g := groupOf(t, r, "GET z")
	if g.Different != 1 || g.Fields["a"] != 1 || len(g.Samples) != 1 {
		t.Fatalf("group: %+v", g)
	}
	d := g.Samples[0].Diffs
	if len(d) != 1 || d[0].Field != "a" || d[0].Production != "3" || d[0].Target != "4" {
		t.Fatalf("diffs: %+v", d)
	}
	if g.Samples[0].Client != cli.String() || g.Samples[0].Request != "GET z" {
		t.Fatalf("sample: %+v", g.Samples[0])
	}
	if s := c.Stats(); s.Conns != 1 || s.BytesFed == 0 || s.Different != 1 {
		t.Fatalf("stats: %+v", s)
	}
}

func TestAbsentField(t *testing.T) {
	c := newCol(Config{})
	conv(c, "GET x\n", "VAL a=1 b=2\n", "VAL a=1\n")
	r := c.Report()
	g := groupOf(t, r, "GET x")
	if g.Different != 1 || g.Fields["b"] != 1 {
		t.Fatalf("%+v", g)
	}
	if d := g.Samples[0].Diffs[0]; d.Target != "(absent)" || d.Production != "2" {
		t.Fatalf("%+v", d)
	}
}

func TestMissingTarget(t *testing.T) {
	c := newCol(Config{})
	cn := c.Open(cli, srv)
	cn.Decide("line")
	cn.Client([]byte("GET a\nGET b\nGET c\n"), t0)
	cn.Server(Production, []byte("VAL 1\nVAL 2\nVAL 3\n"), t0)
	cn.Server(Target, []byte("VAL 1\n"), t0)
	cn.Fail(Target, "target reset")
	cn.EndClient()
	cn.End(Production)
	r := c.Report()
	if r.MissingTarget != 2 || r.Compared != 1 || r.MissingReasons["target"]["target reset"] != 2 {
		t.Fatalf("%+v", r)
	}
	g := groupOf(t, r, "GET b")
	if g.MissingTarget != 1 || g.Samples[0].Kind != "missing_target" || g.Samples[0].Target.Missing != "target reset" {
		t.Fatalf("%+v %+v", g, g.Samples[0].Target)
	}
	if c.Stats().Missing != 2 {
		t.Fatalf("%+v", c.Stats())
	}
}

// The capture ends first: production's answers are missing.
func TestMissingProduction(t *testing.T) {
	c := newCol(Config{})
	cn := c.Open(cli, srv)
	cn.Decide("line")
	cn.Client([]byte("GET a\nGET b\n"), t0)
	cn.Server(Production, []byte("VAL 1\n"), t0)
	cn.End(Production)
	cn.Server(Target, []byte("VAL 1\nVAL 2\n"), t0)
	cn.End(Target)
	cn.EndClient()
	r := c.Report()
	if r.MissingProduction != 1 || r.Compared != 1 || r.MissingReasons["production"]["closed"] != 1 {
		t.Fatalf("%+v", r)
	}
}

// A Report before the connection ends finalizes it.
func TestReportFinalizesOpen(t *testing.T) {
	c := newCol(Config{})
	cn := c.Open(cli, srv)
	cn.Decide("line")
	cn.Client([]byte("GET a\nGET b\n"), t0)
	cn.Server(Production, []byte("VAL 1\nVAL 2\n"), t0)
	cn.Server(Target, []byte("VAL 1\n"), t0)
	r := c.Report()
	if r.MissingTarget != 1 || r.MissingReasons["target"]["still open"] != 1 || r.Compared != 1 {
		t.Fatalf("%+v", r)
	}
	// Calls after the report are ignored, a second report agrees.
	cn.Server(Target, []byte("VAL 2\n"), t0)
	cn.End(Target)
	if r2 := c.Report(); r2.Compared != 1 || r2.MissingTarget != 1 {
		t.Fatalf("%+v", r2)
	}
}

func TestNoAnswerUnsolicitedMalformed(t *testing.T) {
	c := newCol(Config{})
	conv(c, "NOP 1\nGET a\nNOP 2\nGET b\nGET c\nGET d",
		"PUSH hi\nVAL 1\nVAL 2\nVAL 3\nVAL 4",
		"VAL 1\nVAL 2\n???\n")
	r := c.Report()
	if r.NoAnswer != 2 || r.Requests != 6 || r.Partial != 1 {
		t.Fatalf("%+v", r)
	}
	if r.Unsolicited["production"] != 1 || r.Truncated["production"] != 1 {
		t.Fatalf("%+v %+v", r.Unsolicited, r.Truncated)
	}
	if r.Malformed["target"]["bad verb ???"] != 1 {
		t.Fatalf("%+v", r.Malformed)
	}
	// GET c's target answer is the malformed one; GET d has none.
	if r.Compared != 3 || r.MissingTarget != 1 {
		t.Fatalf("%+v", r)
	}
}

func TestErrorsOneSide(t *testing.T) {
	c := newCol(Config{})
	conv(c, "GET a\nGET b\nGET c\n", "VAL 1\nERR x\nERR y\n", "ERR z\nVAL 2\nERR y\n")
	r := c.Report()
	if r.ErrorsTargetOnly != 1 || r.ErrorsProductionOnly != 1 || r.Identical != 1 {
		t.Fatalf("%+v", r)
	}
	g := groupOf(t, r, "GET a")
	if g.Samples[0].Kind != "different" || !g.Samples[0].Target.Error {
		t.Fatalf("%+v", g.Samples[0])
	}
}

// Diffy-style noise: a field production and the baseline differ on in one
// request of a group is noise in the whole group; a field that differs only
// against the target is a difference.
func TestNoiseBaseline(t *testing.T) {
	c := newCol(Config{Baseline: true})
	// Request 1 of "GET u": ts differs everywhere (noise), id only on the
	// target (a difference).
	conv(c, "GET u\n", "VAL ts=1 id=5\n", "VAL ts=3 id=6\n", "VAL ts=2 id=5\n")
	// Request 2, a later connection: ts differs on the target only, but it
	// is noise in the group: noise-only.
	conv(c, "GET u\n", "VAL ts=1 id=5\n", "VAL ts=9 id=5\n", "VAL ts=1 id=5\n")
	// Another group, where ts never differed against the baseline: a
	// difference there.
	conv(c, "GET v\n", "VAL ts=1\n", "VAL ts=9\n", "VAL ts=1\n")
	r := c.Report()
	if !r.Baseline || r.Different != 2 || r.Noise != 1 || r.Compared != 3 {
		t.Fatalf("%+v", r)
	}
	g := groupOf(t, r, "GET u")
	if g.Different != 1 || g.Noise != 1 || g.Fields["id"] != 1 || g.NoiseFields["ts"] != 2 || len(g.Fields) != 1 {
		t.Fatalf("%+v", g)
	}
	if tw := g.ThreeWay["ts"]; tw != (FieldCounts{ProductionTarget: 2, ProductionBaseline: 1, BaselineTarget: 2}) {
		t.Fatalf("three way %+v", g.ThreeWay)
	}
	kinds := map[string]bool{}
	for _, s := range g.Samples {
		kinds[s.Kind] = true
		for _, d := range s.Diffs {
			if d.Noise != (d.Field == "ts") {
				t.Errorf("diff %+v", d)
			}
		}
	}
	if !kinds["different"] || !kinds["noise"] || g.Samples[0].Kind != "different" {
		t.Fatalf("samples %+v", g.Samples)
	}
	if g.Samples[0].Baseline == nil || g.Samples[0].Diffs[0].Baseline == "" {
		t.Fatalf("baseline sample %+v", g.Samples[0])
	}
	gv := groupOf(t, r, "GET v")
	if gv.Different != 1 || gv.Fields["ts"] != 1 {
		t.Fatalf("%+v", gv)
	}
	if r.Groups[0].Key != "GET u" && r.Groups[0].Key != "GET v" {
		t.Fatalf("order %+v", r.Groups)
	}
}

// Without a baseline nothing is noise; a baseline that does not answer is
// counted.
func TestBaselineMissing(t *testing.T) {
	c := newCol(Config{Baseline: true})
	conv(c, "GET a\n", "VAL 1\n", "VAL 2\n", "")
	r := c.Report()
	if r.MissingBaseline != 1 || r.Different != 1 || r.MissingReasons["baseline"]["closed"] != 1 {
		t.Fatalf("%+v", r)
	}
	c = newCol(Config{})
	conv(c, "GET a\n", "VAL 1\n", "VAL 2\n")
	if r := c.Report(); r.Noise != 0 || r.Different != 1 || r.MissingBaseline != 0 {
		t.Fatalf("%+v", r)
	}
}

func TestRulesInCollector(t *testing.T) {
	rule := func(s string) Rule {
		r, err := ParseRule(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	c := newCol(Config{Rules: []Rule{
		rule("GET a::field:x"),
		rule(`regex:[0-9a-f]{8}-[0-9a-f]{4}`),
		rule("json:$.items[*].ts"),
	}})
	conv(c, "GET a\nGET b\nGET c\n",
		"VAL x=1 id=deadbeef-0001 header:date=1 json:$.items[3].ts=1\nVAL x=1\nVAL id=deadbeef-0001x\n",
		"VAL x=2 id=cafebabe-0002 header:date=2 json:$.items[3].ts=2\nVAL x=2\nVAL id=deadbeef-0002y\n")
	r := c.Report()
	ga := groupOf(t, r, "GET a")
	if ga.Identical != 1 || ga.Ignored["x"] != 1 || ga.Ignored["id"] != 1 || ga.Ignored["header:date"] != 1 || ga.Ignored["json:$.items[3].ts"] != 1 {
		t.Fatalf("GET a: %+v", ga)
	}
	// The scoped rule does not apply to GET b.
	if gb := groupOf(t, r, "GET b"); gb.Different != 1 || gb.Fields["x"] != 1 {
		t.Fatalf("GET b: %+v", gb)
	}
	// The regex hides the id, not what follows it.
	gc := groupOf(t, r, "GET c")
	if gc.Different != 1 || gc.Samples[0].Diffs[0].Production != "<ignored>x" {
		t.Fatalf("GET c: %+v", gc)
	}
	if len(r.Rules) != len(DefaultRules())+3 || r.Rules[len(r.Rules)-3] != "GET a::field:x" {
		t.Fatalf("rules %q", r.Rules)
	}
	c = newCol(Config{NoDefaultRules: true})
	conv(c, "GET a\n", "VAL header:date=1\n", "VAL header:date=2\n")
	if r := c.Report(); r.Different != 1 || len(r.Rules) != 0 {
		t.Fatalf("%+v", r)
	}
}

func TestLatency(t *testing.T) {
	c := newCol(Config{Baseline: true})
	wall := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	w := func(ms float64) time.Time { return wall.Add(time.Duration(ms * float64(time.Millisecond))) }
	for i := 0; i < 100; i++ {
		cn := c.Open(cli, srv)
		cn.Decide("line")
		// Production: 10ms + i×0.1ms from the request's last byte.
		cn.Client([]byte("GET "), at(0))
		cn.Client([]byte("x\n"), at(5))
		cn.Server(Production, []byte("VAL 1\n"), at(5).Add(time.Duration(10000+100*i)*time.Microsecond))
		// Target: the first send mark does not reach the request's end;
		// the second does. The answer is read 20ms later.
		cn.Sent(Target, 3, w(1))
		cn.Sent(Target, 3, w(2))
		cn.Server(Target, []byte("VAL 1\n"), w(22))
		// Baseline: the answer is read before the send is reported
		// (the reader ran ahead of the writer's report): 0 latency.
		cn.Server(Baseline, []byte("VAL 1\n"), w(3))
		cn.Sent(Baseline, 6, w(4))
		cn.EndClient()
		cn.End(Production)
		cn.End(Target)
		cn.End(Baseline)
	}
	r := c.Report()
	l := groupOf(t, r, "GET x").Latency
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > want*0.02+0.001 {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	near("production p50", l.Production.P50, 14.9)
	near("production p90", l.Production.P90, 18.9)
	near("production p99", l.Production.P99, 19.8)
	near("target p50", l.Target.P50, 20)
	near("target p99", l.Target.P99, 20)
	if l.Production.Count != 100 || l.Target.Count != 100 || l.Baseline.Count != 100 || l.Baseline.P99 != 0 {
		t.Fatalf("%+v", l)
	}
	s := groupOf(t, r, "GET x").Samples[0]
	if s.Latency.Target == nil || math.Abs(*s.Latency.Target-20) > 0.5 {
		t.Fatalf("sample latency %+v", s.Latency)
	}
}

// Send marks that came before the client bytes were fed still time the
// request.
func TestLatencySentFirst(t *testing.T) {
	c := newCol(Config{})
	wall := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cn := c.Open(cli, srv)
	cn.Decide("line")
	cn.Sent(Target, 6, wall)
	cn.Sent(Target, 6, wall.Add(time.Second))
	// Each request ends at the client bytes fed when it was returned.
	cn.Client([]byte("GET x\n"), t0)
	cn.Client([]byte("GET y\n"), t0)
	cn.Server(Target, []byte("VAL 1\nVAL 1\n"), wall.Add(2*time.Second))
	cn.Server(Production, []byte("VAL 1\nVAL 1\n"), t0)
	cn.EndClient()
	cn.End(Production)
	cn.End(Target)
	r := c.Report()
	if l := groupOf(t, r, "GET x").Latency.Target; math.Abs(l.P50-2000) > 40 {
		t.Fatalf("GET x %+v", l)
	}
	if l := groupOf(t, r, "GET y").Latency.Target; math.Abs(l.P50-1000) > 20 {
		t.Fatalf("GET y %+v", l)
	}
}

func TestHistogram(t *testing.T) {
	var h hist
	if p := h.percentiles(); p != (Percentiles{}) {
		t.Fatal(p)
	}
	for _, d := range []time.Duration{-time.Second, 0, 500 * time.Nanosecond, time.Microsecond, time.Hour * 5} {
		h.add(d)
	}
	q := h.quantiles(0.5, 1)
	if q[0] != 0 || q[1] < time.Hour {
		t.Fatal(q)
	}
	for d := time.Microsecond; d < 10*time.Minute; d = d * 3 / 2 {
		v := bucketValue(bucketOf(d))
		if r := float64(v) / float64(d); r < 0.985 || r > 1.015 {
			t.Fatalf("%v → %v", d, v)
		}
	}
}

func TestMaxPending(t *testing.T) {
	c := newCol(Config{MaxPending: 2})
	cn := c.Open(cli, srv)
	cn.Decide("line")
	cn.Client([]byte("GET a\nGET b\nGET c\nGET d\n"), t0)
	if len(cn.byID) != 2 {
		t.Fatalf("pending %d", len(cn.byID))
	}
	// Early answers beyond the bound are not kept either.
	cn.Server(Target, []byte("VAL 1\nVAL 2\nVAL 3\nVAL 4\nVAL 5\nVAL 6\nVAL 7\n"), t0)
	if n := len(cn.early[Target]); n > 2 {
		t.Fatalf("early %d", n)
	}
	cn.Server(Production, []byte("VAL 1\nVAL 2\n"), t0)
	cn.EndClient()
	cn.End(Production)
	cn.End(Target)
	r := c.Report()
	if r.Overflow != 2 || r.Compared != 2 || r.Requests != 4 || r.Unmatched["target"] != 5 {
		t.Fatalf("%+v", r)
	}
}

// A side that failed long before the client's end frees its requests
// rather than overflowing.
func TestFailedSideFreesPending(t *testing.T) {
	c := newCol(Config{MaxPending: 4})
	cn := c.Open(cli, srv)
	cn.Decide("line")
	cn.Fail(Target, "refused")
	for i := 0; i < 20; i++ {
		cn.Client([]byte(fmt.Sprintf("GET %d\n", i)), t0)
		cn.Server(Production, []byte("VAL 1\n"), t0)
	}
	cn.EndClient()
	cn.End(Production)
	r := c.Report()
	if r.MissingTarget != 20 || r.Overflow != 0 || r.MissingReasons["target"]["refused"] != 20 {
		t.Fatalf("%+v", r)
	}
}

func TestMaxGroups(t *testing.T) {
	c := newCol(Config{MaxGroups: 2})
	for _, k := range []string{"a", "b", "c", "d", "a"} {
		conv(c, "GET "+k+"\n", "VAL 1\n", "VAL 1\n")
	}
	r := c.Report()
	if len(r.Groups) != 3 {
		t.Fatalf("%+v", r.Groups)
	}
	if g := groupOf(t, r, "(other)"); g.Requests != 2 || g.Protocol != "line" {
		t.Fatalf("%+v", g)
	}
	if g := groupOf(t, r, "GET a"); g.Requests != 2 {
		t.Fatalf("%+v", g)
	}
}

func TestSamplesBounded(t *testing.T) {
	c := newCol(Config{Samples: 2})
	conv(c, "GET a\n", "VAL 1\n", "VAL 1\n") // identical
	for i := 0; i < 5; i++ {
		conv(c, "GET a\n", "VAL x=1\n", fmt.Sprintf("VAL x=%d\n", i+2)) // different on x
	}
	conv(c, "GET a\n", "VAL x=1 y=1\n", "VAL x=1 y=2\n") // different on y
	conv(c, "GET a\n", "VAL 1\n", "ERR 1\n")             // an error on the target
	r := c.Report()
	g := groupOf(t, r, "GET a")
	if len(g.Samples) != 2 {
		t.Fatalf("%d samples", len(g.Samples))
	}
	fields := map[string]bool{}
	for _, s := range g.Samples {
		if s.Kind != "different" {
			t.Errorf("kept a %s sample", s.Kind)
		}
		fields[s.Diffs[0].Field] = true
	}
	// Different problems are kept rather than the same one twice.
	if !fields["x"] || !fields["y"] {
		t.Fatalf("samples %+v", g.Samples)
	}
	// Long samples are capped.
	c = newCol(Config{Limits: Limits{Sample: 10}})
	conv(c, "GET "+strings.Repeat("z", 5000)+"\n", "VAL "+strings.Repeat("1", 5000)+"\n", "VAL 2\n")
	g = &c.Report().Groups[0]
	if s := g.Samples[0]; len(s.Request) > 300 || len(s.Production.Sample) > 300 || len(s.Diffs[0].Production) > maxValueLen+40 {
		t.Fatalf("sample not capped: %d %d %d", len(s.Request), len(s.Production.Sample), len(s.Diffs[0].Production))
	}
	if len(g.Key) > maxKeyLen+40 {
		t.Fatalf("key not capped: %d", len(g.Key))
	}
}

func TestDecideAfterBytes(t *testing.T) {
	c := newCol(Config{})
	cn := c.Open(cli, srv)
	cn.Client([]byte("GET a\nGE"), at(0))
	cn.Server(Production, []byte("VAL 1\n"), at(1))
	cn.Server(Target, []byte("VAL 2\n"), at(1))
	cn.Client([]byte("T b\n"), at(2))
	cn.Decide("line")
	cn.Decide("other") // only the first counts
	cn.Server(Production, []byte("VAL 1\n"), at(3))
	cn.Server(Target, []byte("VAL 1\n"), at(3))
	cn.EndClient()
	cn.End(Production)
	cn.End(Target)
	r := c.Report()
	if r.Compared != 2 || r.Different != 1 || groupOf(t, r, "GET a").Protocol != "line" {
		t.Fatalf("%+v", r)
	}
	// http1 finds a protocol named "http" when there is no "http1".
	c = NewCollector(Config{Protocols: []Protocol{namedLine{"http"}}})
	cn = c.Open(cli, srv)
	cn.Decide("http1")
	if cn.proto != "http" {
		t.Fatalf("proto %q", cn.proto)
	}
}

type namedLine struct{ name string }

func (n namedLine) Name() string                { return n.name }
func (n namedLine) New(lim Limits) Conversation { return lineProto{}.New(lim) }

// Too many bytes before Decide: compared raw.
func TestUndecidedOverflowRaw(t *testing.T) {
	c := newCol(Config{})
	cn := c.Open(cli, srv)
	big := make([]byte, preDecideMax+1)
	cn.Client(big, t0)
	cn.Decide("line") // too late
	cn.Server(Production, []byte("abc"), t0)
	cn.Server(Target, []byte("abc"), t0)
	cn.EndClient()
	cn.End(Production)
	cn.End(Target)
	r := c.Report()
	if g := groupOf(t, r, "tcp/7000"); g.Protocol != "tcp" || g.Identical != 1 {
		t.Fatalf("%+v", r)
	}
}

func TestRawFallback(t *testing.T) {
	c := newCol(Config{Limits: Limits{Sample: 4}})
	run := func(decide, prod, tgt string) {
		cn := c.Open(cli, srv)
		if decide != "" {
			cn.Decide(decide)
		}
		cn.Client([]byte("hello"), t0)
		for i := 0; i < len(prod); i += 2 {
			cn.Server(Production, []byte(prod[i:min(i+2, len(prod))]), t0)
		}
		cn.Server(Target, []byte(tgt), t0)
		cn.Client([]byte("more"), t0)
		cn.EndClient()
		cn.End(Production)
		cn.End(Target)
	}
	run("smtp", "220 ok\r\n", "220 ok\r\n")
	run("", "220 ok\r\n", "220 ko\r\n")
	run("smtp", "", "")
	r := c.Report()
	g := groupOf(t, r, "tcp/7000")
	if g.Protocol != "tcp" || g.Requests != 3 || g.Identical != 2 || g.Different != 1 || g.Fields["bytes"] != 1 {
		t.Fatalf("%+v", g)
	}
	s := g.Samples[0]
	if s.Request != "hell… (1 more bytes)" || s.Production.Sample != "220 … (4 more bytes)" || s.Production.Size != 8 {
		t.Fatalf("%+v %+v", s, s.Production)
	}
	if s.Diffs[0].Field != "bytes" || !strings.HasPrefix(s.Diffs[0].Production, "len=8 crc=") {
		t.Fatalf("%+v", s.Diffs)
	}
	// A failed side without a byte is missing, not an empty answer.
	c = newCol(Config{})
	cn := c.Open(cli, srv)
	cn.Client([]byte("x"), t0)
	cn.Server(Production, []byte("y"), t0)
	cn.Fail(Target, "refused")
	cn.EndClient()
	cn.End(Production)
	if r := c.Report(); r.MissingTarget != 1 || r.Compared != 0 {
		t.Fatalf("%+v", r)
	}
}

type panicProto struct{ where string }

func (p panicProto) Name() string { return "panicky" }
func (p panicProto) New(lim Limits) Conversation {
	if p.where == "new" {
		panic("in New")
	}
	return &panicConv{lineConv{lim: lim}, p.where}
}

type panicConv struct {
	lineConv
	where string
}

func (c *panicConv) Answers() Answers {
	switch c.where {
	case "answers":
		panic("in Answers")
	case "nil":
		return nil // a nil Answers is a bug too
	}
	return c.lineConv.Answers()
}

// A decoder that panics is counted as a malformed stream, named; nothing
// else breaks.
func TestDecoderPanic(t *testing.T) {
	for _, where := range []string{"new", "requests", "answers", "nil"} {
		c := NewCollector(Config{Protocols: []Protocol{panicProto{where}, lineProto{}}})
		cn := c.Open(cli, srv)
		cn.Decide("panicky")
		cn.Client([]byte("GET a\n"), t0)
		if where == "requests" {
			cn.Client([]byte("BOOM\n"), t0)
		}
		cn.Server(Production, []byte("VAL 1\n"), t0)
		cn.Server(Target, []byte("VAL 1\n"), t0)
		cn.EndClient()
		cn.End(Production)
		cn.End(Target)
		conv(c, "GET b\n", "VAL 1\n", "VAL 1\n")
		r := c.Report()
		n := 0
		for stream, m := range r.Malformed {
			for why, k := range m {
				if strings.Contains(why, "(panicky)") {
					n += int(k)
				} else {
					t.Errorf("%s: %s: %s", where, stream, why)
				}
			}
		}
		if n != 1 || r.Identical != 1 {
			t.Errorf("%s: %+v", where, r)
		}
		// Answers are made at Decide: a decoder that fails there has cut
		// no request to abandon.
		if want := map[string]int64{"requests": 1}[where]; r.Abandoned != want {
			t.Errorf("%s: abandoned %d, want %d", where, r.Abandoned, want)
		}
	}
}

// Client and three sides from their own goroutines, many connections at
// once, Stats and Report alongside (run with -race).
func TestConcurrent(t *testing.T) {
	c := newCol(Config{Baseline: true, MaxGroups: 5})
	const conns, reqs = 40, 50
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		cn := c.Open(cli, srv)
		cn.Decide("line")
		wg.Add(4)
		go func() {
			defer wg.Done()
			for j := 0; j < reqs; j++ {
				cn.Client([]byte(fmt.Sprintf("GET %d\n", j%7)), time.Now())
			}
			cn.EndClient()
		}()
		for s := Side(0); s < numSides; s++ {
			go func() {
				defer wg.Done()
				for j := 0; j < reqs; j++ {
					if s != Production {
						cn.Sent(s, 6, time.Now())
					}
					v := j
					if s == Target && j%5 == 0 {
						v = -1
					}
					cn.Server(s, []byte(fmt.Sprintf("VAL v=%d\n", v)), time.Now())
				}
				cn.End(s)
			}()
		}
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			default:
				c.Stats()
			}
		}
	}()
	wg.Wait()
	close(done)
	r := c.Report()
	if r.Requests != conns*reqs || r.Compared != conns*reqs || r.Different != conns*reqs/5 {
		t.Fatalf("%+v", r)
	}
	if len(r.Groups) != 6 {
		t.Fatalf("%d groups", len(r.Groups))
	}
}

func TestStatsNotRetainingCallerBytes(t *testing.T) {
	c := newCol(Config{})
	cn := c.Open(cli, srv)
	b := []byte("GET a\n")
	cn.Client(b, t0) // buffered before Decide
	copy(b, "XXXXXX")
	a := []byte("VAL 1\n")
	cn.Server(Production, a, t0)
	copy(a, "VAL 2\n")
	cn.Decide("line")
	cn.Server(Target, []byte("VAL 1\n"), t0)
	cn.EndClient()
	cn.End(Production)
	cn.End(Target)
	r := c.Report()
	if g := groupOf(t, r, "GET a"); g.Identical != 1 {
		t.Fatalf("%+v", g)
	}
}

func TestDeepEqualReports(t *testing.T) {
	run := func() *Report {
		c := newCol(Config{Baseline: true})
		for i := 0; i < 10; i++ {
			conv(c, "GET a\nGET b\n", "VAL x=1\nVAL y=1\n", fmt.Sprintf("VAL x=%d\nVAL y=1\n", i%3), "VAL x=1\nVAL y=2\n")
		}
		return c.Report()
	}
	if a, b := run(), run(); !reflect.DeepEqual(a, b) {
		t.Fatal("two runs differ")
	}
}
