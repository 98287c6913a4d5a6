package compare

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// sampleReport has a bit of everything: differences, noise, errors,
// missing answers, and a sample that tries to run a script.
func sampleReport(t *testing.T) *Report {
	t.Helper()
	c := newCol(Config{Baseline: true})
	conv(c, "GET u\n", "VAL ts=1 id=5\n", "VAL ts=3 id=6\n", "VAL ts=2 id=5\n")
	conv(c, "GET u\n", "VAL ts=1 id=5\n", "VAL ts=9 id=5\n", "VAL ts=1 id=5\n")
	conv(c, "GET <script>alert(1)</script>\n", "VAL x=<script>alert(2)</script>\n", "VAL x=</pre><script>alert(3)</script>\n", "VAL x=1\n")
	conv(c, "GET e\n", "VAL 1\n", "ERR boom\n", "VAL 1\n")
	cn := c.Open(cli, srv)
	cn.Decide("line")
	cn.Client([]byte("GET m\n"), t0)
	cn.Server(Production, []byte("VAL 1\n"), at(3))
	cn.Fail(Target, "target reset")
	cn.Fail(Baseline, "refused")
	cn.EndClient()
	cn.End(Production)
	return c.Report()
}

func TestJSONRoundTrip(t *testing.T) {
	r := sampleReport(t)
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	// The documented keys, snake_case.
	var raw map[string]any
	if err := json.Unmarshal(buf.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "requests", "compared", "identical", "different", "noise", "no_answer",
		"missing_target", "missing_production", "errors_target_only", "errors_production_only", "malformed",
		"truncated", "overflow", "conns", "baseline", "rules", "groups"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("no key %q", k)
		}
	}
	g := raw["groups"].([]any)[0].(map[string]any)
	for _, k := range []string{"key", "protocol", "requests", "compared", "identical", "different", "noise",
		"missing_target", "missing_production", "errors_target_only", "errors_production_only", "fields",
		"noise_fields", "ignored", "latency", "samples"} {
		if _, ok := g[k]; !ok {
			t.Errorf("no group key %q", k)
		}
	}
	lat := g["latency"].(map[string]any)
	for _, side := range []string{"production", "target", "baseline"} {
		p := lat[side].(map[string]any)
		for _, k := range []string{"p50", "p90", "p99", "count"} {
			if _, ok := p[k]; !ok {
				t.Errorf("no latency key %s.%s", side, k)
			}
		}
	}
	back, err := ReadJSON(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	// Unexported ranks do not travel; everything else does.
	want := *r
	want.Groups = append([]Group(nil), r.Groups...)
	for i := range want.Groups {
		ss := append([]GroupSample(nil), want.Groups[i].Samples...)
		for j := range ss {
			ss[j].rank, ss[j].sig = 0, ""
		}
		want.Groups[i].Samples = ss
	}
	if !reflect.DeepEqual(&want, back) {
		t.Fatalf("round trip differs:\n%+v\n%+v", want, *back)
	}
	// Stable: equal reports give equal bytes.
	var again bytes.Buffer
	back.WriteJSON(&again)
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Fatal("not stable")
	}
	if _, err := ReadJSON(strings.NewReader(`{"version":2}`)); err == nil {
		t.Fatal("version 2 read")
	}
	// Worst first.
	if r.Groups[0].Different < r.Groups[len(r.Groups)-1].Different {
		t.Fatal("order")
	}
}

func TestWriteText(t *testing.T) {
	r := sampleReport(t)
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"compared 4 requests: 0 identical, 2 different, 2 noise-only; missing: 1 on the target, 0 in production; errors only on the target: 1\n",
		"5 requests in 4 groups on 5 connections; 1 missing on the baseline",
		"x×1 (noise)",
		"GET u [line]: 2 requests, 1 different; fields id×1; ts×2 (noise); p50/p99 ms",
		"target target reset×1",
		"1 one-side errors",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n > 25 {
		t.Errorf("%d lines", n)
	}
	// More than ten groups: the rest are counted.
	c := newCol(Config{})
	for i := 0; i < 15; i++ {
		conv(c, fmt.Sprintf("GET %d\n", i), "VAL 1\n", "VAL 2\n")
	}
	buf.Reset()
	c.Report().WriteText(&buf)
	if !strings.Contains(buf.String(), "… and 5 more groups") || strings.Count(buf.String(), "[line]") != 10 {
		t.Fatal(buf.String())
	}
}

func TestWriteHTML(t *testing.T) {
	r := sampleReport(t)
	var buf bytes.Buffer
	if err := r.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "<script>alert") || strings.Contains(out, "</pre><script>") {
		t.Fatal("a sample's script is not escaped")
	}
	if strings.Count(out, "<script>") != 1 {
		t.Fatalf("%d scripts", strings.Count(out, "<script>"))
	}
	for _, want := range []string{
		`id="summary"`, `class="group" data-group="GET u"`, `data-different="1"`,
		`class="diff-field" data-field="id"`, `class="diff-field noise" data-field="ts"`,
		`class="num different bad"`, `class="num identical"`, `<svg class="latency"`,
		`&lt;script&gt;alert(2)&lt;/script&gt;`, `data-group="GET &lt;script&gt;alert(1)&lt;/script&gt;"`,
		`class="missing-side">missing: target reset`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s", want)
		}
	}
	// Self-contained: nothing is fetched.
	if m := regexp.MustCompile(`(?i)(src|href)="(https?:)?//`).FindString(out); m != "" {
		t.Fatalf("external reference %s", m)
	}
	// An empty report renders too.
	buf.Reset()
	if err := newCol(Config{}).Report().WriteHTML(&buf); err != nil || !strings.Contains(buf.String(), `id="summary"`) {
		t.Fatal(err)
	}
}

// The same connection cut in random pieces, with the sides' bytes and the
// client's interleaved at random, gives the same counts; no chunking makes
// anything panic.
func FuzzChunking(f *testing.F) {
	f.Add(int64(1), []byte("GET a\nNOP\nGET b\n"), []byte("VAL 1\nVAL 2\n"), []byte("VAL 1\nVAL 3\n"), false)
	f.Add(int64(2), []byte("GET a\nGET "), []byte("VAL x=1\nPUSH\nVAL"), []byte("junk\n\x00\xff"), true)
	f.Add(int64(3), []byte("BOOM\n"), []byte(""), []byte("VAL 1\n"), false)
	f.Fuzz(func(t *testing.T, seed int64, client, prod, tgt []byte, decideLate bool) {
		if len(client)+len(prod)+len(tgt) > 1<<14 {
			return
		}
		run := func(rng *rand.Rand) Stats {
			c := newCol(Config{MaxPending: 8})
			cn := c.Open(cli, srv)
			if !decideLate {
				cn.Decide("line")
			}
			streams := [][]byte{client, prod, tgt}
			for {
				var live []int
				for i, s := range streams {
					if len(s) > 0 {
						live = append(live, i)
					}
				}
				if len(live) == 0 {
					break
				}
				i := live[rng.Intn(len(live))]
				n := 1 + rng.Intn(len(streams[i]))
				b := streams[i][:n]
				streams[i] = streams[i][n:]
				if i == 0 {
					cn.Client(b, time.Now())
				} else {
					cn.Server(Side(i-1), b, time.Now())
					cn.Sent(Side(i-1), n, time.Now())
				}
				if decideLate && rng.Intn(4) == 0 {
					cn.Decide("line")
				}
			}
			cn.EndClient()
			cn.End(Production)
			cn.End(Target)
			r := c.Report()
			var buf bytes.Buffer
			if err := r.WriteHTML(&buf); err != nil {
				t.Fatal(err)
			}
			if err := r.WriteText(&buf); err != nil {
				t.Fatal(err)
			}
			s := c.Stats()
			s.BytesFed = 0
			return s
		}
		a := run(rand.New(rand.NewSource(seed)))
		if !decideLate {
			// Unless the protocol was decided late (maybe never: raw), the
			// pieces do not change the outcome, as long as no answer came
			// ahead of its request (a guess of the test decoder's).
			if b := run(rand.New(rand.NewSource(seed + 1))); a.Requests != b.Requests {
				t.Fatalf("%+v\n%+v", a, b)
			}
		}
	})
}
