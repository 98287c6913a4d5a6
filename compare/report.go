package compare

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"sort"
	"strings"
)

// ReportVersion is the version of the report's JSON schema.
const ReportVersion = 1

// A Report is the result of a comparison. Its JSON form (WriteJSON, read
// back by ReadJSON or encoding/json) is documented by the json tags:
//
//	version                 ReportVersion
//	requests                requests the clients sent (every kind below)
//	compared                requests answered by production and the target
//	identical, different,   compared requests by outcome: no differing field;
//	noise                   a differing field that is not noise; only noise
//	no_answer               requests the protocol sends no answer to
//	missing_target          answered by production only (reasons in missing_reasons)
//	missing_production      answered by the target only (the capture ended first)
//	missing_baseline        not answered by the baseline (with a baseline)
//	unanswered              answered by neither
//	errors_target_only      compared requests the target answered with an
//	errors_production_only  error and production did not, and the reverse
//	overflow                requests not kept: too many waited on their connection
//	abandoned               requests not compared: their connection's decoder failed
//	partial                 requests the client's stream ended inside
//	malformed               stream ("client", "production", ...) → reason → count
//	truncated, unsolicited, side → answers cut short by the stream's end;
//	unmatched               answering no request; answering one not kept
//	missing_reasons         side → reason ("closed", a Fail reason) → count
//	conns, baseline, rules  connections; whether a baseline was replayed; the rules in force
//	groups                  per group key, worst first (Group)
type Report struct {
	Version int `json:"version"`
	Counts
	Partial        int64                       `json:"partial"`
	Malformed      map[string]map[string]int64 `json:"malformed"`
	Truncated      map[string]int64            `json:"truncated"`
	Unsolicited    map[string]int64            `json:"unsolicited"`
	Unmatched      map[string]int64            `json:"unmatched"`
	MissingReasons map[string]map[string]int64 `json:"missing_reasons"`
	Conns          int64                       `json:"conns"`
	Baseline       bool                        `json:"baseline"`
	Rules          []string                    `json:"rules"`
	Groups         []Group                     `json:"groups"`
}

// A Group is the requests of one key. Its counts are as in Report, for the
// group; fields counts, per field, the compared requests where production
// and the target differed on it and it is not noise; noise_fields the same
// for the fields that are noise (they also differed between production and
// the baseline in some request of the group); ignored the requests where a
// rule hid a difference; three_way (empty without a baseline) the
// per-field counts of each pair of sides that differed.
type Group struct {
	Key      string `json:"key"`
	Protocol string `json:"protocol"`
	Counts
	Fields      map[string]int64       `json:"fields"`
	NoiseFields map[string]int64       `json:"noise_fields"`
	Ignored     map[string]int64       `json:"ignored"`
	ThreeWay    map[string]FieldCounts `json:"three_way"`
	Latency     GroupLatency           `json:"latency"`
	Samples     []GroupSample          `json:"samples"`
}

// Counts are a group's or the whole report's requests by what became of
// them (see Report); embedded, their keys stand at the top level of the
// JSON object.
type Counts struct {
	Requests             int64 `json:"requests"`
	Compared             int64 `json:"compared"`
	Identical            int64 `json:"identical"`
	Different            int64 `json:"different"`
	Noise                int64 `json:"noise"`
	NoAnswer             int64 `json:"no_answer"`
	MissingTarget        int64 `json:"missing_target"`
	MissingProduction    int64 `json:"missing_production"`
	MissingBaseline      int64 `json:"missing_baseline"`
	Unanswered           int64 `json:"unanswered"`
	ErrorsTargetOnly     int64 `json:"errors_target_only"`
	ErrorsProductionOnly int64 `json:"errors_production_only"`
	Overflow             int64 `json:"overflow"`
	Abandoned            int64 `json:"abandoned"`
}

// add adds o's counts.
func (c *Counts) add(o Counts) {
	c.Requests += o.Requests
	c.Compared += o.Compared
	c.Identical += o.Identical
	c.Different += o.Different
	c.Noise += o.Noise
	c.NoAnswer += o.NoAnswer
	c.MissingTarget += o.MissingTarget
	c.MissingProduction += o.MissingProduction
	c.MissingBaseline += o.MissingBaseline
	c.Unanswered += o.Unanswered
	c.ErrorsTargetOnly += o.ErrorsTargetOnly
	c.ErrorsProductionOnly += o.ErrorsProductionOnly
	c.Overflow += o.Overflow
	c.Abandoned += o.Abandoned
}

// FieldCounts are how often each pair of sides differed on a field.
type FieldCounts struct {
	ProductionTarget   int64 `json:"production_target"`
	ProductionBaseline int64 `json:"production_baseline"`
	BaselineTarget     int64 `json:"baseline_target"`
}

// GroupLatency is a group's answer latency per side: production's from the
// capture (request's last byte to answer's last byte), the replayed sides'
// from the replay (request's last byte sent to answer's last byte read).
type GroupLatency struct {
	Production Percentiles `json:"production"`
	Target     Percentiles `json:"target"`
	Baseline   Percentiles `json:"baseline"`
}

// A GroupSample is one request of a group and its answers. Kind is "different",
// "noise", "identical", "error_target_only", "error_production_only",
// "missing_target", "missing_production" or "unanswered". Diffs are the
// fields production and the target differ on ("(absent)" where a side has
// no such field).
type GroupSample struct {
	Kind       string        `json:"kind"`
	Client     string        `json:"client"`
	Server     string        `json:"server"`
	Request    string        `json:"request"`
	Production *AnswerSample `json:"production,omitempty"`
	Target     *AnswerSample `json:"target,omitempty"`
	Baseline   *AnswerSample `json:"baseline,omitempty"`
	Diffs      []Diff        `json:"diffs,omitempty"`
	Latency    SampleLatency `json:"latency"`

	rank int
	sig  string
}

// An AnswerSample is one side's answer in a sample, or why it is missing.
type AnswerSample struct {
	Sample    string `json:"sample"`
	Size      int    `json:"size"`
	Error     bool   `json:"error,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
	Malformed string `json:"malformed,omitempty"`
	Missing   string `json:"missing,omitempty"`
}

// A Diff is one differing field in a sample.
type Diff struct {
	Field      string `json:"field"`
	Production string `json:"production"`
	Target     string `json:"target"`
	Baseline   string `json:"baseline,omitempty"`
	Noise      bool   `json:"noise"`
}

// SampleLatency is a sample's latencies in milliseconds, where measured.
type SampleLatency struct {
	Production *float64 `json:"production_ms,omitempty"`
	Target     *float64 `json:"target_ms,omitempty"`
	Baseline   *float64 `json:"baseline_ms,omitempty"`
}

// buildReport is called under c.mu.
func (c *Collector) buildReport() *Report {
	r := &Report{
		Version:        ReportVersion,
		Malformed:      deepCopy(c.tot.malformed),
		Truncated:      maps.Clone(c.tot.truncated),
		Unsolicited:    maps.Clone(c.tot.unsolicited),
		Unmatched:      maps.Clone(c.tot.unmatched),
		MissingReasons: deepCopy(c.tot.missingWhy),
		Partial:        c.tot.partial,
		Conns:          c.st.conns.Load(),
		Baseline:       c.cfg.Baseline,
		Rules:          c.rules.strings(),
		Groups:         make([]Group, 0, len(c.groups)),
	}
	for _, g := range c.groups {
		gr := g.report(c.cfg.Baseline)
		r.add(gr.Counts)
		r.Groups = append(r.Groups, gr)
	}
	sort.Slice(r.Groups, func(i, j int) bool { return worse(&r.Groups[i], &r.Groups[j]) })
	if r.Rules == nil {
		r.Rules = []string{}
	}
	return r
}

// worse orders groups worst first: most different, then most errors on one
// side, then most missing, then by key.
func worse(a, b *Group) bool {
	if a.Different != b.Different {
		return a.Different > b.Different
	}
	if ea, eb := a.ErrorsTargetOnly+a.ErrorsProductionOnly, b.ErrorsTargetOnly+b.ErrorsProductionOnly; ea != eb {
		return ea > eb
	}
	if ma, mb := a.MissingTarget+a.MissingProduction, b.MissingTarget+b.MissingProduction; ma != mb {
		return ma > mb
	}
	if a.Key != b.Key {
		return a.Key < b.Key
	}
	return a.Protocol < b.Protocol
}

func deepCopy(m map[string]map[string]int64) map[string]map[string]int64 {
	out := make(map[string]map[string]int64, len(m))
	for k, v := range m {
		out[k] = maps.Clone(v)
	}
	return out
}

// report classifies the group's requests now that its noise is known.
func (g *keyGroup) report(baseline bool) Group {
	gr := Group{
		Key:         g.key,
		Protocol:    g.proto,
		Counts:      g.n,
		Fields:      map[string]int64{},
		NoiseFields: map[string]int64{},
		Ignored:     map[string]int64{},
		Latency: GroupLatency{
			Production: g.lat[Production].percentiles(),
			Target:     g.lat[Target].percentiles(),
			Baseline:   g.lat[Baseline].percentiles(),
		},
		Samples: make([]GroupSample, 0, len(g.samples)),
	}
	for k, n := range g.diffSets {
		if g.allNoise(strings.Split(k, "\n")) {
			gr.Noise += n
		} else {
			gr.Different += n
		}
	}
	gr.Different += g.diffOverflow
	gr.ThreeWay = map[string]FieldCounts{}
	for name, f := range g.fields {
		noise := f.pb > 0
		switch {
		case noise:
			gr.NoiseFields[name] = f.pt
		case f.pt > 0:
			gr.Fields[name] = f.pt
		}
		if f.ignored > 0 {
			gr.Ignored[name] = f.ignored
		}
		if baseline && (f.pt > 0 || f.pb > 0 || f.bt > 0) {
			gr.ThreeWay[name] = FieldCounts{ProductionTarget: f.pt, ProductionBaseline: f.pb, BaselineTarget: f.bt}
		}
	}
	for _, s := range g.samples {
		cp := *s
		cp.Diffs = make([]Diff, len(s.Diffs))
		all := len(s.Diffs) > 0
		for i, d := range s.Diffs {
			d.Noise = g.isNoise(d.Field)
			all = all && d.Noise
			cp.Diffs[i] = d
		}
		if cp.Kind == "different" && all {
			cp.Kind, cp.rank = "noise", rankNoise
		}
		if len(cp.Diffs) == 0 {
			cp.Diffs = nil
		}
		gr.Samples = append(gr.Samples, cp)
	}
	sort.SliceStable(gr.Samples, func(i, j int) bool { return gr.Samples[i].rank > gr.Samples[j].rank })
	return gr
}

// WriteJSON writes the report as indented JSON; map keys are sorted, so
// equal reports give equal bytes.
func (r *Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	if err := e.Encode(r); err != nil {
		return fmt.Errorf("compare: writing the JSON report: %w", err)
	}
	return nil
}

// ReadJSON reads a report WriteJSON wrote.
func ReadJSON(rd io.Reader) (*Report, error) {
	var r Report
	if err := json.NewDecoder(rd).Decode(&r); err != nil {
		return nil, fmt.Errorf("compare: reading a JSON report: %w", err)
	}
	if r.Version != ReportVersion {
		return nil, fmt.Errorf("compare: report version %d, want %d", r.Version, ReportVersion)
	}
	return &r, nil
}

// textGroups is how many groups the text summary lists.
const textGroups = 10

// WriteText writes a one-screen summary: the totals, then the worst groups
// one a line.
func (r *Report) WriteText(w io.Writer) error {
	b := bufio.NewWriter(w)
	fmt.Fprintf(b, "compared %d requests: %d identical, %d different, %d noise-only; missing: %d on the target, %d in production; errors only on the target: %d",
		r.Compared, r.Identical, r.Different, r.Noise, r.MissingTarget, r.MissingProduction, r.ErrorsTargetOnly)
	if r.ErrorsProductionOnly > 0 {
		fmt.Fprintf(b, ", only in production: %d", r.ErrorsProductionOnly)
	}
	fmt.Fprintln(b)
	fmt.Fprintf(b, "%d request%s in %d group%s on %d connection%s", r.Requests, plural(r.Requests), len(r.Groups), plural(int64(len(r.Groups))), r.Conns, plural(r.Conns))
	var not []string
	for _, c := range []struct {
		n    int64
		what string
	}{
		{r.NoAnswer, "expect no answer"}, {r.Unanswered, "unanswered"},
		{r.Overflow, "overflow"}, {r.Abandoned, "abandoned (decoder failed)"},
		{r.MissingBaseline, "missing on the baseline"},
	} {
		if c.n > 0 {
			not = append(not, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	if len(not) > 0 {
		fmt.Fprintf(b, "; %s", strings.Join(not, ", "))
	}
	fmt.Fprintln(b)
	if r.Baseline {
		fmt.Fprintln(b, "with a baseline: fields that differ between production and the baseline are noise")
	}
	if m := reasons(r.MissingReasons); m != "" {
		fmt.Fprintf(b, "missing because: %s\n", m)
	}
	if m := reasons(r.Malformed); m != "" {
		fmt.Fprintf(b, "malformed: %s\n", m)
	}
	if len(r.Groups) > 0 {
		fmt.Fprintln(b)
	}
	for i := range r.Groups {
		if i == textGroups {
			fmt.Fprintf(b, "… and %d more groups\n", len(r.Groups)-textGroups)
			break
		}
		g := &r.Groups[i]
		fmt.Fprintf(b, "%s [%s]: %d request%s, %d different", oneLine(g.Key, 60), g.Protocol, g.Requests, plural(g.Requests), g.Different)
		if e := g.ErrorsTargetOnly + g.ErrorsProductionOnly; e > 0 {
			fmt.Fprintf(b, ", %d one-side errors", e)
		}
		if m := g.MissingTarget + g.MissingProduction; m > 0 {
			fmt.Fprintf(b, ", %d missing", m)
		}
		if f := topFields(g.Fields, 3, ""); f != "" {
			fmt.Fprintf(b, "; fields %s", f)
		}
		if f := topFields(g.NoiseFields, 3, " (noise)"); f != "" {
			fmt.Fprintf(b, "; %s", f)
		}
		if g.Latency.Production.Count > 0 || g.Latency.Target.Count > 0 {
			fmt.Fprintf(b, "; p50/p99 ms production %s target %s",
				pp(g.Latency.Production), pp(g.Latency.Target))
		}
		fmt.Fprintln(b)
	}
	if err := b.Flush(); err != nil {
		return fmt.Errorf("compare: writing the text report: %w", err)
	}
	return nil
}

func pp(p Percentiles) string {
	if p.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3g/%.3g", p.P50, p.P99)
}

// topFields lists the n fields with the highest counts: "status×30".
func topFields(m map[string]int64, n int, mark string) string {
	type kv struct {
		k string
		v int64
	}
	var l []kv
	for k, v := range m {
		if v > 0 || mark != "" {
			l = append(l, kv{k, v})
		}
	}
	sort.Slice(l, func(i, j int) bool {
		if l[i].v != l[j].v {
			return l[i].v > l[j].v
		}
		return l[i].k < l[j].k
	})
	var parts []string
	for i, e := range l {
		if i == n {
			parts = append(parts, fmt.Sprintf("+%d more", len(l)-n))
			break
		}
		parts = append(parts, fmt.Sprintf("%s×%d%s", oneLine(e.k, 40), e.v, mark))
	}
	return strings.Join(parts, " ")
}

func reasons(m map[string]map[string]int64) string {
	var parts []string
	for _, side := range sortedKeys(m) {
		for _, why := range sortedKeys(m[side]) {
			parts = append(parts, fmt.Sprintf("%s %s×%d", side, oneLine(why, 60), m[side][why]))
		}
	}
	if len(parts) > 6 {
		parts = append(parts[:6], fmt.Sprintf("+%d more", len(parts)-6))
	}
	return strings.Join(parts, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// oneLine makes s fit on a line of the summary: control characters quoted,
// at most n runes.
func oneLine(s string, n int) string {
	var b strings.Builder
	i := 0
	for _, r := range s {
		if i == n {
			b.WriteString("…")
			break
		}
		if r < ' ' || r == 0x7f {
			fmt.Fprintf(&b, "\\x%02x", r)
		} else {
			b.WriteRune(r)
		}
		i++
	}
	return b.String()
}

func plural(n int64) string {
	if n == 1 {
		return ""
	}
	return "s"
}
