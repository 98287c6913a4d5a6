package compare

import (
	"fmt"
	"html/template"
	"io"
	"sort"
)

// htmlPage is the template of WriteHTML: one page, its style and script
// inline, nothing fetched. html/template escapes every value in its
// context, samples included (they hold arbitrary bytes).
const htmlPage = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stackcopy: response comparison</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin: 0; display: inline; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
th.sorted-asc::after { content: " ▲"; } th.sorted-desc::after { content: " ▼"; }
td.num, th.num { text-align: right; }
tr.group td.different.bad { background: #fdd; font-weight: bold; }
tr.group td.errors.bad, tr.group td.missing.bad { background: #ffe6c0; }
.noise { color: #777; } .noise .tag { font-size: .8em; background: #eee; padding: 0 .3em; border-radius: 3px; }
details.group-details { border: 1px solid #ddd; margin: .6em 0; padding: .4em .8em; }
.samples { display: flex; flex-direction: column; gap: .8em; }
.sample { border-left: 4px solid #aaa; padding-left: .6em; }
.sample[data-kind="different"] { border-color: #d33; }
.sample[data-kind^="error"], .sample[data-kind^="missing"] { border-color: #e90; }
.sides { display: grid; grid-template-columns: repeat({{.Columns}}, 1fr); gap: .5em; }
pre { white-space: pre-wrap; word-break: break-all; background: #f8f8f8; margin: .2em 0; padding: .3em; max-height: 20em; overflow: auto; }
td.val { font-family: monospace; white-space: pre-wrap; word-break: break-all; }
tr.diff-field:not(.noise) td.val.differs { background: #fee; }
.missing-side { color: #b60; font-style: italic; }
#summary .count { font-weight: bold; }
</style>
</head>
<body>
<h1>Response comparison</h1>
<section id="summary" data-compared="{{.R.Compared}}" data-identical="{{.R.Identical}}" data-different="{{.R.Different}}" data-noise="{{.R.Noise}}" data-missing-target="{{.R.MissingTarget}}" data-missing-production="{{.R.MissingProduction}}">
<p>Compared <span class="count compared">{{.R.Compared}}</span> of {{.R.Requests}} requests on {{.R.Conns}} connections:
<span class="count identical">{{.R.Identical}}</span> identical,
<span class="count different">{{.R.Different}}</span> different,
<span class="count noise">{{.R.Noise}}</span> noise-only.
Missing: <span class="count missing-target">{{.R.MissingTarget}}</span> on the target, <span class="count missing-production">{{.R.MissingProduction}}</span> in production.
Errors only on the target: <span class="count errors-target-only">{{.R.ErrorsTargetOnly}}</span>, only in production: <span class="count errors-production-only">{{.R.ErrorsProductionOnly}}</span>.</p>
<p>Not compared: {{.R.NoAnswer}} expect no answer, {{.R.Unanswered}} unanswered, {{.R.Overflow}} overflow, {{.R.Abandoned}} abandoned.{{if .R.Baseline}} A baseline was replayed: fields that differ between production and the baseline are noise.{{end}}</p>
{{if .Missing}}<p class="missing-reasons">Missing because: {{range .Missing}}<span class="reason" data-side="{{.Side}}">{{.Side}}: {{.Reason}} ×{{.N}}</span> {{end}}</p>{{end}}
{{if .Malformed}}<p class="malformed">Malformed: {{range .Malformed}}<span class="reason" data-side="{{.Side}}">{{.Side}}: {{.Reason}} ×{{.N}}</span> {{end}}</p>{{end}}
{{if .R.Rules}}<details class="rules"><summary>{{len .R.Rules}} ignore rules</summary><ul>{{range .R.Rules}}<li><code>{{.}}</code></li>{{end}}</ul></details>{{end}}
</section>

<table id="groups">
<thead><tr>
<th data-type="text" data-sort="key">Group</th><th data-type="text" data-sort="protocol">Protocol</th><th class="num" data-type="num" data-sort="requests">Requests</th><th class="num" data-type="num" data-sort="compared">Compared</th>
<th class="num" data-type="num" data-sort="identical">Identical</th><th class="num" data-type="num" data-sort="different">Different</th><th class="num" data-type="num" data-sort="noise">Noise</th>
<th class="num" data-type="num" data-sort="missing">Missing</th><th class="num" data-type="num" data-sort="errors">One-side errors</th>
<th class="num" data-type="num" data-sort="p50-production">p50 ms prod</th><th class="num" data-type="num" data-sort="p50-target">p50 ms target</th><th class="num" data-type="num" data-sort="p99-production">p99 ms prod</th><th class="num" data-type="num" data-sort="p99-target">p99 ms target</th>
</tr></thead>
<tbody>
{{range .Groups}}<tr class="group" data-group="{{.G.Key}}" data-protocol="{{.G.Protocol}}" data-requests="{{.G.Requests}}" data-compared="{{.G.Compared}}" data-identical="{{.G.Identical}}" data-different="{{.G.Different}}" data-noise="{{.G.Noise}}" data-missing="{{.Missing}}" data-errors="{{.Errors}}">
<td class="key"><a href="#{{.ID}}">{{.G.Key}}</a></td><td class="protocol">{{.G.Protocol}}</td>
<td class="num requests">{{.G.Requests}}</td><td class="num compared">{{.G.Compared}}</td>
<td class="num identical">{{.G.Identical}}</td><td class="num different{{if .G.Different}} bad{{end}}">{{.G.Different}}</td><td class="num noise">{{.G.Noise}}</td>
<td class="num missing{{if .Missing}} bad{{end}}">{{.Missing}}</td><td class="num errors{{if .Errors}} bad{{end}}">{{.Errors}}</td>
<td class="num p50-production">{{.G.Latency.Production.P50}}</td><td class="num p50-target">{{.G.Latency.Target.P50}}</td>
<td class="num p99-production">{{.G.Latency.Production.P99}}</td><td class="num p99-target">{{.G.Latency.Target.P99}}</td>
</tr>
{{end}}</tbody>
</table>

{{range .Groups}}<details class="group-details"{{if or .G.Different .Missing .Errors}} open{{end}} id="{{.ID}}" data-group="{{.G.Key}}" data-protocol="{{.G.Protocol}}">
<summary><h2>{{.G.Key}}</h2> <span class="protocol">[{{.G.Protocol}}]</span> — {{.G.Requests}} requests, {{.G.Different}} different, {{.G.Noise}} noise-only, {{.Missing}} missing, {{.Errors}} one-side errors</summary>
{{if .Fields}}<table class="fields"><thead><tr><th>Field</th><th class="num">Requests differing</th>{{if $.R.Baseline}}<th class="num">prod≠baseline</th><th class="num">baseline≠target</th>{{end}}</tr></thead><tbody>
{{range .Fields}}<tr class="diff-field{{if .Noise}} noise{{end}}" data-field="{{.Name}}" data-count="{{.N}}" data-noise="{{.Noise}}"><td>{{.Name}}{{if .Noise}} <span class="tag">noise</span>{{end}}</td><td class="num">{{.N}}</td>{{if $.R.Baseline}}<td class="num">{{.PB}}</td><td class="num">{{.BT}}</td>{{end}}</tr>
{{end}}</tbody></table>{{end}}
{{if .Ignored}}<p class="ignored">Ignored by rules: {{range .Ignored}}<span class="ignored-field" data-field="{{.Name}}" data-count="{{.N}}">{{.Name}} ×{{.N}}</span> {{end}}</p>{{end}}
{{with .Plot}}<svg class="latency" xmlns="http://www.w3.org/2000/svg" width="{{.W}}" height="{{.H}}" role="img" aria-label="latency p50 p90 p99 in ms">
{{range .Bars}}<text x="0" y="{{.TY}}" font-size="11">{{.Label}}</text><rect class="bar {{.Side}}" data-side="{{.Side}}" data-q="{{.Q}}" x="110" y="{{.Y}}" width="{{.W}}" height="10" fill="{{.Color}}"></rect><text x="{{.VX}}" y="{{.TY}}" font-size="11">{{.Value}} ms</text>
{{end}}</svg>{{end}}
<div class="samples">
{{range .G.Samples}}<div class="sample" data-kind="{{.Kind}}">
<div><b>{{.Kind}}</b> — client {{.Client}} → {{.Server}}{{with .Latency.Production}}; production {{.}} ms{{end}}{{with .Latency.Target}}; target {{.}} ms{{end}}{{with .Latency.Baseline}}; baseline {{.}} ms{{end}}</div>
<div>Request:</div><pre class="request">{{.Request}}</pre>
{{if .Diffs}}<table class="diffs"><thead><tr><th>Field</th><th>Production</th><th>Target</th>{{if $.R.Baseline}}<th>Baseline</th>{{end}}</tr></thead><tbody>
{{range .Diffs}}<tr class="diff-field{{if .Noise}} noise{{end}}" data-field="{{.Field}}" data-noise="{{.Noise}}"><td>{{.Field}}{{if .Noise}} <span class="tag">noise</span>{{end}}</td><td class="val production differs">{{.Production}}</td><td class="val target differs">{{.Target}}</td>{{if $.R.Baseline}}<td class="val baseline">{{.Baseline}}</td>{{end}}</tr>
{{end}}</tbody></table>{{end}}
<div class="sides">
{{template "side" (side "production" .Production)}}{{template "side" (side "target" .Target)}}{{if $.R.Baseline}}{{template "side" (side "baseline" .Baseline)}}{{end}}
</div>
</div>
{{end}}</div>
</details>
{{end}}
<script>
// Sort the groups table by the clicked column (numbers numerically, text
// by code units, as Go sorts), or on load by the column the URL names:
// #sort=different (descending: #sort=-different). body gets data-ready
// once the table is set up.
(function () {
  var table = document.getElementById("groups");
  var heads = table.tHead.rows[0].cells;
  function sortBy(col, desc) {
    var th = heads[col];
    for (var j = 0; j < heads.length; j++) heads[j].classList.remove("sorted-asc", "sorted-desc");
    th.classList.add(desc ? "sorted-desc" : "sorted-asc");
    var num = th.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].textContent, y = b.cells[col].textContent;
      var c = num ? (parseFloat(x) || 0) - (parseFloat(y) || 0) : (x < y ? -1 : x > y ? 1 : 0);
      return desc ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  for (var i = 0; i < heads.length; i++) {
    heads[i].addEventListener("click", (function (col) {
      return function () { sortBy(col, !heads[col].classList.contains("sorted-desc")); };
    })(i));
  }
  var m = /[#&]sort=(-?)([a-z0-9-]+)/.exec(location.hash);
  if (m) {
    for (var k = 0; k < heads.length; k++) {
      if (heads[k].getAttribute("data-sort") === m[2]) sortBy(k, m[1] === "-");
    }
  }
  document.body.setAttribute("data-ready", "true");
})();
</script>
</body>
</html>
{{define "side"}}<div class="side {{.Name}}" data-side="{{.Name}}"><div><b>{{.Name}}</b>{{with .A}}{{if .Error}} (error){{end}}{{if .Truncated}} (truncated){{end}}{{if .Malformed}} (malformed: {{.Malformed}}){{end}}{{end}}</div>
{{with .A}}{{if .Missing}}<div class="missing-side">missing: {{.Missing}}</div>{{else}}<pre class="answer">{{.Sample}}</pre>{{end}}{{else}}<div class="missing-side">no answer</div>{{end}}</div>{{end}}
`

type htmlData struct {
	R         *Report
	Columns   int
	Groups    []htmlGroup
	Missing   []htmlReason
	Malformed []htmlReason
}

type htmlGroup struct {
	G       *Group
	ID      string
	Missing int64
	Errors  int64
	Fields  []htmlField
	Ignored []htmlField
	Plot    *htmlPlot
}

type htmlField struct {
	Name   string
	N      int64
	PB, BT int64
	Noise  bool
}

type htmlReason struct {
	Side, Reason string
	N            int64
}

type htmlPlot struct {
	W, H int
	Bars []htmlBar
}

type htmlBar struct {
	Label, Side, Q, Color string
	Y, TY, W, VX          int
	Value                 float64
}

type htmlSide struct {
	Name string
	A    *AnswerSample
}

// WriteHTML writes the report as one self-contained page: totals, a
// sortable table of groups, and per group its fields, latency and samples.
// Stable hooks for tools: id="summary"; rows class="group" with
// data-group, data-different, data-identical...; class="diff-field" with
// data-field and data-noise.
func (r *Report) WriteHTML(w io.Writer) error {
	t, err := template.New("page").Funcs(template.FuncMap{
		"side": func(name string, a *AnswerSample) htmlSide { return htmlSide{name, a} },
	}).Parse(htmlPage)
	if err != nil {
		return fmt.Errorf("compare: the HTML template: %w", err)
	}
	d := htmlData{R: r, Columns: 2}
	if r.Baseline {
		d.Columns = 3
	}
	d.Missing = flatReasons(r.MissingReasons)
	d.Malformed = flatReasons(r.Malformed)
	for i := range r.Groups {
		g := &r.Groups[i]
		hg := htmlGroup{
			G:       g,
			ID:      fmt.Sprintf("group-%d", i),
			Missing: g.MissingTarget + g.MissingProduction,
			Errors:  g.ErrorsTargetOnly + g.ErrorsProductionOnly,
			Plot:    plot(g.Latency, r.Baseline),
		}
		for name, n := range g.Fields {
			tw := g.ThreeWay[name]
			hg.Fields = append(hg.Fields, htmlField{Name: name, N: n, PB: tw.ProductionBaseline, BT: tw.BaselineTarget})
		}
		for name, n := range g.NoiseFields {
			tw := g.ThreeWay[name]
			hg.Fields = append(hg.Fields, htmlField{Name: name, N: n, PB: tw.ProductionBaseline, BT: tw.BaselineTarget, Noise: true})
		}
		sort.Slice(hg.Fields, func(i, j int) bool {
			a, b := hg.Fields[i], hg.Fields[j]
			if a.Noise != b.Noise {
				return !a.Noise
			}
			if a.N != b.N {
				return a.N > b.N
			}
			return a.Name < b.Name
		})
		for _, name := range sortedKeys(g.Ignored) {
			hg.Ignored = append(hg.Ignored, htmlField{Name: name, N: g.Ignored[name]})
		}
		d.Groups = append(d.Groups, hg)
	}
	if err := t.Execute(w, d); err != nil {
		return fmt.Errorf("compare: writing the HTML report: %w", err)
	}
	return nil
}

func flatReasons(m map[string]map[string]int64) []htmlReason {
	var out []htmlReason
	for _, side := range sortedKeys(m) {
		for _, why := range sortedKeys(m[side]) {
			out = append(out, htmlReason{side, why, m[side][why]})
		}
	}
	return out
}

// plot lays out the latency bars: per quantile, one bar per side, scaled
// to the group's largest.
func plot(l GroupLatency, baseline bool) *htmlPlot {
	type side struct {
		name, color string
		p           Percentiles
	}
	sides := []side{{"production", "#4a7bd0", l.Production}, {"target", "#d0704a", l.Target}}
	if baseline {
		sides = append(sides, side{"baseline", "#8a8a8a", l.Baseline})
	}
	top := 0.0
	any := false
	for _, s := range sides {
		if s.p.Count > 0 {
			any = true
			top = max(top, s.p.P99, s.p.P90, s.p.P50)
		}
	}
	if !any {
		return nil
	}
	const width = 300
	p := &htmlPlot{W: 110 + width + 90}
	y := 4
	for _, q := range []string{"p50", "p90", "p99"} {
		for _, s := range sides {
			if s.p.Count == 0 {
				continue
			}
			v := map[string]float64{"p50": s.p.P50, "p90": s.p.P90, "p99": s.p.P99}[q]
			w := 1
			if top > 0 {
				w = max(1, int(v/top*width))
			}
			p.Bars = append(p.Bars, htmlBar{
				Label: q + " " + s.name, Side: s.name, Q: q, Color: s.color,
				Y: y, TY: y + 9, W: w, VX: 110 + w + 4, Value: v,
			})
			y += 13
		}
		y += 5
	}
	p.H = y
	return p
}
