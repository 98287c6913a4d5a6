package netnstests

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// compareReport is the --compare-json document as its schema documents
// it (compare.Report): the lab decodes the keys users' scripts rely on,
// not the Go type, so a renamed key fails here.
type compareReport struct {
	Requests             uint64         `json:"requests"`
	Compared             uint64         `json:"compared"`
	Identical            uint64         `json:"identical"`
	Different            uint64         `json:"different"`
	Noise                uint64         `json:"noise"`
	NoAnswer             uint64         `json:"no_answer"`
	MissingTarget        uint64         `json:"missing_target"`
	MissingProduction    uint64         `json:"missing_production"`
	ErrorsTargetOnly     uint64         `json:"errors_target_only"`
	ErrorsProductionOnly uint64         `json:"errors_production_only"`
	Baseline             bool           `json:"baseline"`
	Groups               []compareGroup `json:"groups"`
}

type compareGroup struct {
	Key                  string            `json:"key"`
	Protocol             string            `json:"protocol"`
	Requests             uint64            `json:"requests"`
	Compared             uint64            `json:"compared"`
	Identical            uint64            `json:"identical"`
	Different            uint64            `json:"different"`
	Noise                uint64            `json:"noise"`
	MissingTarget        uint64            `json:"missing_target"`
	MissingProduction    uint64            `json:"missing_production"`
	ErrorsTargetOnly     uint64            `json:"errors_target_only"`
	ErrorsProductionOnly uint64            `json:"errors_production_only"`
	Fields               map[string]uint64 `json:"fields"`
	NoiseFields          map[string]uint64 `json:"noise_fields"`
	Ignored              map[string]uint64 `json:"ignored"`
	Latency              map[string]struct {
		P50   float64 `json:"p50"`
		P90   float64 `json:"p90"`
		P99   float64 `json:"p99"`
		Count uint64  `json:"count"`
	} `json:"latency"`
	Samples []json.RawMessage `json:"samples"`
}

func readCompareReport(t *testing.T, path string) compareReport {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("comparison report: %v", err)
	}
	var r compareReport
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("comparison report %s: %v", path, err)
	}
	return r
}

// group returns the report's group of key (of protocol), failing the test
// if there is none.
func (r compareReport) group(t *testing.T, protocol, key string) compareGroup {
	t.Helper()
	for _, g := range r.Groups {
		if g.Key == key && g.Protocol == protocol {
			return g
		}
	}
	var keys []string
	for _, g := range r.Groups {
		keys = append(keys, g.Protocol+" "+g.Key)
	}
	t.Fatalf("no group %s %q in the report; groups: %q", protocol, key, keys)
	return compareGroup{}
}

// wantChanges checks that exactly the groups of want differ, each in
// exactly its fields, every request of those groups different, and every
// other group identical throughout.
func (r compareReport) wantChanges(t *testing.T, want map[string][]string) {
	t.Helper()
	var total uint64
	for _, g := range r.Groups {
		id := g.Protocol + " " + g.Key
		fields, changed := want[id]
		if !changed {
			if g.Different != 0 || g.Identical != g.Compared || len(g.Fields) != 0 {
				t.Errorf("group %s: %d of %d requests different %v; want all identical", id, g.Different, g.Requests, g.Fields)
			}
			continue
		}
		total += g.Different
		if g.Different == 0 || g.Different != g.Requests || g.Identical != 0 {
			t.Errorf("group %s: %d different, %d identical of %d requests; want every request different", id, g.Different, g.Identical, g.Requests)
		}
		if got := slices.Sorted(maps.Keys(g.Fields)); !slices.Equal(got, slices.Sorted(slices.Values(fields))) {
			t.Errorf("group %s: fields %v; want exactly %v", id, g.Fields, fields)
		}
		for _, f := range fields {
			if g.Fields[f] != g.Different {
				t.Errorf("group %s: field %s differs in %d requests; want %d", id, f, g.Fields[f], g.Different)
			}
		}
		if len(g.Samples) == 0 {
			t.Errorf("group %s: no sample of the difference", id)
		}
	}
	for id := range want {
		found := false
		for _, g := range r.Groups {
			found = found || g.Protocol+" "+g.Key == id
		}
		if !found {
			t.Errorf("no group %s in the report", id)
		}
	}
	// Every request was compared, but those the protocol answers never
	// (QUIT, Terminate).
	if r.Different != total || r.MissingTarget != 0 || r.MissingProduction != 0 || r.Compared+r.NoAnswer != r.Requests || r.Compared == 0 {
		t.Errorf("report: %d requests, %d compared, %d expecting no answer, %d different (groups say %d), %d missing on the target, %d in production",
			r.Requests, r.Compared, r.NoAnswer, r.Different, total, r.MissingTarget, r.MissingProduction)
	}
}

// startSite serves files with nginx on h, with extra server directives.
func startSite(t *testing.T, h *lab.Host, listen netip.AddrPort, name string, files map[string]string, server string) {
	t.Helper()
	root := filepath.Join(h.Lab().Dir(), "site-"+name)
	b := make(map[string][]byte, len(files))
	for name, s := range files {
		b[name] = []byte(s)
	}
	if err := lab.WriteSite(root, b); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(h.Lab().Dir(), "nginx-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.StartNginxConfig(h, lab.NginxConfig{Listen: listen, Root: root, Dir: dir, Server: server}); err != nil {
		t.Fatal(err)
	}
}

// siteV1 is production's site; siteV2 the new build's: one JSON field
// added to every user, one script changed (same length), the health
// check answering 503 (same body).
func siteV1() map[string]string {
	return map[string]string{
		"index.html":       "<!doctype html><title>shop</title><p>welcome</p>\n",
		"static/app.js":    "console.log('build 1');\n",
		"static/style.css": "body { font-family: sans-serif }\n",
		"api/users/1":      `{"id":1,"name":"ann","roles":["admin","dev"]}`,
		"api/users/2":      `{"id":2,"name":"bob","roles":["dev"]}`,
		"api/users/3":      `{"id":3,"name":"cyd","roles":[]}`,
		"api/items":        `[{"sku":"a-1","qty":3},{"sku":"b-2","qty":0}]`,
	}
}

func siteV2() map[string]string {
	s := siteV1()
	s["static/app.js"] = "console.log('build 2');\n"
	s["api/users/1"] = `{"id":1,"name":"ann","roles":["admin","dev"],"email":"ann@example.com"}`
	s["api/users/2"] = `{"id":2,"name":"bob","roles":["dev"],"email":"bob@example.com"}`
	s["api/users/3"] = `{"id":3,"name":"cyd","roles":[],"email":"cyd@example.com"}`
	return s
}

const siteServer = `        location /api/ { default_type application/json; }
        location = /health { default_type text/plain; return %d "ok\n"; }
`

// siteTraffic drives real curl clients: each client one keep-alive
// connection through every endpoint.
func siteTraffic(t *testing.T, c *captureLab) {
	t.Helper()
	paths := []string{"/", "/static/app.js", "/static/style.css", "/api/users/1", "/api/users/2", "/api/users/3", "/api/items", "/health"}
	for i, a := range c.clients {
		args := []string{"curl", "-sS", "--interface", a.String()}
		for j := range paths {
			p := paths[(i+j)%len(paths)]
			args = append(args, "-o", "/dev/null", fmt.Sprintf("http://%v%s", onlineAddr, p))
		}
		mustExec(t, c.client, args...)
	}
}

// TestCompareHTTP: real curl traffic to production's nginx is replayed to
// an nginx serving the next build, which differs in three known ways. The
// report names exactly those groups and fields, with the right counts,
// and nothing else; the HTML report shows the same in a real browser.
func TestCompareHTTP(t *testing.T) {
	needPrograms(t, "nginx", "curl")
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 3)
	startSite(t, c.online, netip.AddrPortFrom(onlineAddr, 80), "v1", siteV1(), fmt.Sprintf(siteServer, 200))
	pc := captureTraffic(t, c, 80, func() { siteTraffic(t, c) })
	if pc.sessions != len(c.clients) {
		t.Fatalf("captured %d sessions, want %d", pc.sessions, len(c.clients))
	}

	r := newReplayLab(t, l)
	startSite(t, r.target, netip.AddrPortFrom(targetAddr, 80), "v2", siteV2(), fmt.Sprintf(siteServer, 503))
	jsonPath := filepath.Join(l.Dir(), "compare.json")
	htmlPath := filepath.Join(l.Dir(), "compare.html")
	res := runStackcopy(t, r.replay, 2*time.Minute, "-x", fmt.Sprintf("80-%v", netip.AddrPortFrom(targetAddr, 80)), "-i", pc.pcap,
		"--speed", "0", "--compare-json", jsonPath, "--compare-html", htmlPath)
	if res.exit != 0 {
		t.Fatalf("stackcopy exit %d, want 0", res.exit)
	}
	rep := readCompareReport(t, jsonPath)
	n := uint64(len(c.clients))
	rep.wantChanges(t, map[string][]string{
		"http1 GET /api/users/{id}": {"json:$.email", "header:content-length", "header:etag"},
		"http1 GET /static/app.js":  {"body"},
		"http1 GET /health":         {"status"},
	})
	if g := rep.group(t, "http1", "GET /api/users/{id}"); g.Requests != 3*n {
		t.Errorf("GET /api/users/{id}: %d requests, want %d", g.Requests, 3*n)
	}
	if g := rep.group(t, "http1", "GET /health"); g.ErrorsTargetOnly != n || rep.ErrorsTargetOnly != n || rep.ErrorsProductionOnly != 0 {
		t.Errorf("GET /health: %d errors only on the target (report: %d, production only %d), want %d", g.ErrorsTargetOnly, rep.ErrorsTargetOnly, rep.ErrorsProductionOnly, n)
	}
	for _, key := range []string{"GET /", "GET /static/style.css", "GET /api/items"} {
		g := rep.group(t, "http1", key)
		if g.Requests != n || g.Identical != n {
			t.Errorf("%s: %d requests, %d identical; want %d of each", key, g.Requests, g.Identical, n)
		}
		for _, side := range []string{"production", "target"} {
			if l := g.Latency[side]; l.Count != n || l.P50 <= 0 || l.P50 > l.P99 {
				t.Errorf("%s: %s latency %+v: want %d answers timed, 0 < p50 <= p99", key, side, l, n)
			}
		}
	}
	// The text summary on stdout names the worst groups.
	for _, want := range []string{"GET /api/users/{id}", "json:$.email", "GET /health"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("the summary on stdout does not mention %q:\n%s", want, res.stdout)
		}
	}
	checkHTMLReport(t, l, htmlPath, rep)
}

// checkHTMLReport opens the HTML report in Debian's chromium, headless,
// in a namespace of its own with no network at all, and checks the DOM
// after the page's script ran: the summary, a row per group of the JSON
// report, the differing fields, nothing fetched from anywhere. A
// screenshot is kept (STACKCOPY_ARTIFACTS, default /tmp/stackcopy-artifacts).
func checkHTMLReport(t *testing.T, l *lab.Lab, path string, rep compareReport) {
	t.Helper()
	needPrograms(t, "chromium")
	page, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := externalRef.Find(page); m != nil {
		t.Errorf("the HTML report refers to %q: it must be self-contained", m)
	}
	browser, err := l.Host("browser")
	if err != nil {
		t.Fatal(err)
	}
	profile := filepath.Join(l.Dir(), "chromium")
	chromium := func(args ...string) string {
		base := []string{"chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
			"--disable-background-networking", "--user-data-dir=" + profile}
		return string(mustExec(t, browser, append(base, args...)...))
	}
	dom := chromium("--dump-dom", "file://"+path)
	if !strings.Contains(dom, `data-ready="true"`) {
		t.Errorf("the page's script did not run to its end (no data-ready on body)")
	}
	if !strings.Contains(dom, `id="summary"`) {
		t.Errorf("no summary (id=summary) in the DOM")
	}
	for _, g := range rep.Groups {
		attr := fmt.Sprintf(`data-group="%s"`, htmlAttr(g.Key))
		if !strings.Contains(dom, attr) {
			t.Errorf("no row %s in the DOM", attr)
		}
		for f := range g.Fields {
			if attr := fmt.Sprintf(`data-field="%s"`, htmlAttr(f)); !strings.Contains(dom, attr) {
				t.Errorf("group %s: differing field %s not shown (%s)", g.Key, f, attr)
			}
		}
	}
	// Sorting runs in the browser: the page sorts by the column its URL
	// names, so the dumped DOM shows the script's order.
	sorted := chromium("--dump-dom", "file://"+path+"#sort=key")
	var order []string
	for _, tag := range rowTag.FindAllString(sorted, -1) {
		if !groupClass.MatchString(tag) {
			continue
		}
		if m := groupAttr.FindStringSubmatch(tag); m != nil {
			order = append(order, m[1])
		}
	}
	if len(order) != len(rep.Groups) || !slices.IsSorted(order) {
		t.Errorf("rows sorted by key in the browser: %q; want all %d groups in order", order, len(rep.Groups))
	}
	dir := os.Getenv("STACKCOPY_ARTIFACTS")
	if dir == "" {
		dir = "/tmp/stackcopy-artifacts"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, t.Name()+".png")
	chromium("--screenshot="+shot, "--window-size=1280,1800", "file://"+path)
	if b, err := os.ReadFile(shot); err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
		t.Errorf("screenshot %s: %d bytes, %v", shot, len(b), err)
	}
	t.Logf("HTML report screenshot: %s", shot)
}

// externalRef finds anything a page would fetch from elsewhere.
var externalRef = regexp.MustCompile(`(?i)(src|href|action)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?(https?:)?//`)

// The group rows of the report's table, in DOM order: <tr> tags of
// class group, with the group's key in data-group.
var (
	rowTag     = regexp.MustCompile(`<tr\b[^>]*>`)
	groupClass = regexp.MustCompile(`\bclass="([^"]* )?group( [^"]*)?"`)
	groupAttr  = regexp.MustCompile(`\bdata-group="([^"]*)"`)
)

// htmlAttr escapes s as chromium serializes an attribute value.
func htmlAttr(s string) string {
	return strings.NewReplacer("&", "&amp;", `"`, "&quot;", "\u00a0", "&nbsp;").Replace(s)
}

// stampServer answers with what changes on every request even on one
// build: the time and nginx's request id.
const stampServer = `        location = /api/now {
            default_type application/json;
            return 200 '{"time":"$time_iso8601","msec":"$msec","request":"$request_id","build":"1"}';
        }
`

// TestCompareBaseline: production, a baseline copy of production's build
// and the target all run the same build, whose answers carry timestamps
// and generated ids. Against production alone those fields differ; the
// baseline shows them to be noise: 0 regressions, the noise named.
func TestCompareBaseline(t *testing.T) {
	needPrograms(t, "nginx", "curl")
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 2)
	site := map[string]string{"index.html": "<p>same</p>\n"}
	startSite(t, c.online, netip.AddrPortFrom(onlineAddr, 80), "prod", site, stampServer)
	pc := captureTraffic(t, c, 80, func() {
		for _, a := range c.clients {
			mustExec(t, c.client, "curl", "-sS", "--interface", a.String(), "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
				fmt.Sprintf("http://%v/api/now", onlineAddr), fmt.Sprintf("http://%v/", onlineAddr), fmt.Sprintf("http://%v/api/now", onlineAddr))
		}
	})
	r := newReplayLab(t, l)
	target, baseline := netip.AddrPortFrom(targetAddr, 80), netip.AddrPortFrom(targetAddr, 8081)
	startSite(t, r.target, target, "target", site, stampServer)
	startSite(t, r.target, baseline, "baseline", site, stampServer)
	// The capture's second is over before the replay starts: every
	// timestamp differs from production's.
	time.Sleep(1100 * time.Millisecond)

	jsonPath := filepath.Join(l.Dir(), "compare.json")
	res := runStackcopy(t, r.replay, 2*time.Minute, "-x", fmt.Sprintf("80-%v", target), "-i", pc.pcap,
		"--speed", "0", "--baseline", baseline.String(), "--compare-json", jsonPath)
	if res.exit != 0 {
		t.Fatalf("stackcopy exit %d, want 0", res.exit)
	}
	rep := readCompareReport(t, jsonPath)
	n := uint64(len(c.clients))
	if !rep.Baseline || rep.Different != 0 || rep.Compared != 3*n || rep.Noise != 2*n || rep.MissingTarget != 0 {
		t.Errorf("report: baseline %v, %d compared, %d different, %d noise only, %d missing on the target; want %d compared, 0 different, %d noise only",
			rep.Baseline, rep.Compared, rep.Different, rep.Noise, rep.MissingTarget, 3*n, 2*n)
	}
	g := rep.group(t, "http1", "GET /api/now")
	if g.Different != 0 || g.Noise != 2*n || len(g.Fields) != 0 {
		t.Errorf("GET /api/now: %d different %v, %d noise only; want 0 different, %d noise", g.Different, g.Fields, g.Noise, 2*n)
	}
	for _, f := range []string{"json:$.time", "json:$.msec", "json:$.request"} {
		if g.NoiseFields[f] == 0 {
			t.Errorf("GET /api/now: %s not reported as noise: %v", f, g.NoiseFields)
		}
	}
	if _, ok := g.NoiseFields["json:$.build"]; ok {
		t.Errorf("GET /api/now: json:$.build reported as noise, but it never changed: %v", g.NoiseFields)
	}
	if g := rep.group(t, "http1", "GET /"); g.Identical != n {
		t.Errorf("GET /: %d identical, want %d", g.Identical, n)
	}
	// Every session went to both.
	if st := res.stats.Replay; st.Sessions != 2*n || st.Completed != 2*n {
		t.Errorf("replay: %d sessions, %d completed; want %d (each to the target and the baseline)", st.Sessions, st.Completed, 2*n)
	}
}

// TestCompareLive: the traditional live deployment — stackcopy mirrors
// real curl traffic on the online host, intercept on the target relays
// whole answers (--full-payload) — gives the same report as replaying the
// capture of that same traffic offline through the same intercept.
func TestCompareLive(t *testing.T) {
	needPrograms(t, "nginx", "curl")
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 3)
	target := c.addTarget(t, clientNet) // answers to forged (= real) clients would leak to them but for intercept
	key, err := l.WriteKey("relay.key")
	if err != nil {
		t.Fatal(err)
	}
	startSite(t, c.online, netip.AddrPortFrom(onlineAddr, 80), "v1", siteV1(), fmt.Sprintf(siteServer, 200))
	startSite(t, target, netip.AddrPortFrom(targetAddr, 80), "v2", siteV2(), fmt.Sprintf(siteServer, 503))
	if err := target.IPTables("-I", "OUTPUT", "-p", "tcp", "--sport", "80", "-j", "NFQUEUE", "--queue-num", "5"); err != nil {
		t.Fatal(err)
	}
	icpt, err := target.Start(interceptPath(t), "--key-file", key, "-v", "--stats-interval", "0", "-q", "5", "--full-payload")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "intercept to listen", 15*time.Second, func() bool { return strings.Contains(icpt.Log(), "intercept ready") })
	mirror := []string{"-x", "198.18.1.1:80-198.18.2.2:80", "-s", targetAddr.String(), "--key-file", key, "-o", "raw"}

	liveJSON := filepath.Join(l.Dir(), "live.json")
	var live *lab.Proc
	pc := captureTraffic(t, c, 80, func() {
		live, err = c.online.Start(stackcopyPath(t), append([]string{"-v", "-i", c.onlineIf, "--compare-json", liveJSON}, mirror...)...)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "stackcopy to capture", 20*time.Second, func() bool { return strings.Contains(live.Log(), "mirroring live traffic") })
		siteTraffic(t, c)
	})
	// Every mirrored session ends with the client's close; give the
	// target's last answers a moment, then stop (one turn's grace).
	time.Sleep(2 * time.Second)
	if _, _, err := live.StopWithin(20 * time.Second); err != nil {
		t.Logf("stackcopy live: %v", err)
	}
	t.Logf("stackcopy live:\n%s", tailLines(live.Stdout()+live.Log(), 30))
	liveRep := readCompareReport(t, liveJSON)

	offJSON := filepath.Join(l.Dir(), "offline.json")
	res := runStackcopy(t, c.online, 2*time.Minute, append([]string{"-i", pc.pcap, "--speed", "0", "--compare-json", offJSON}, mirror...)...)
	if res.exit != 0 {
		t.Fatalf("offline replay: exit %d", res.exit)
	}
	offRep := readCompareReport(t, offJSON)
	want := map[string][]string{
		"http1 GET /api/users/{id}": {"json:$.email", "header:content-length", "header:etag"},
		"http1 GET /static/app.js":  {"body"},
		"http1 GET /health":         {"status"},
	}
	offRep.wantChanges(t, want)
	liveRep.wantChanges(t, want)
	summary := func(r compareReport) []string {
		var out []string
		for _, g := range r.Groups {
			out = append(out, fmt.Sprintf("%s %s: %d requests, %d identical, %d different %v, %d errors only on the target",
				g.Protocol, g.Key, g.Requests, g.Identical, g.Different, g.Fields, g.ErrorsTargetOnly))
		}
		slices.Sort(out)
		return out
	}
	if l, o := summary(liveRep), summary(offRep); !slices.Equal(l, o) {
		t.Errorf("live and offline reports differ:\nlive:\n  %s\noffline:\n  %s", strings.Join(l, "\n  "), strings.Join(o, "\n  "))
	}
}

// replayCompare replays the capture to the same port on the target with
// --compare-json and returns the report.
func replayCompare(t *testing.T, r *replayLab, pc protoCapture, port uint16, extra ...string) compareReport {
	t.Helper()
	path := filepath.Join(r.l.Dir(), fmt.Sprintf("compare-%d.json", port))
	args := append([]string{"-x", fmt.Sprintf("%d-%v", port, netip.AddrPortFrom(targetAddr, port)), "-i", pc.pcap,
		"--speed", "0", "--compare-json", path}, extra...)
	res := runStackcopy(t, r.replay, 2*time.Minute, args...)
	if res.exit != 0 {
		t.Fatalf("stackcopy exit %d, want 0", res.exit)
	}
	rep := readCompareReport(t, path)
	t.Cleanup(func() {
		if t.Failed() {
			// The lab directory goes with the test: keep what explains it.
			b, _ := os.ReadFile(path)
			t.Logf("comparison report %s:\n%s", path, b)
		}
	})
	return rep
}

// TestCompareRedisMemcached: real redis-cli and libmemcached clients;
// on the target one Redis hash is missing and one memcached value
// changed. The report names the Redis command and the memcached field,
// with one difference per client run, and nothing else.
func TestCompareRedisMemcached(t *testing.T) {
	needPrograms(t, "redis-server", "redis-cli", "memcached", "memccat", "memccp")
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 1)
	online, target := netip.AddrPortFrom(onlineAddr, 6379), netip.AddrPortFrom(targetAddr, 6379)
	mcOnline, mcTarget := netip.AddrPortFrom(onlineAddr, 11211), netip.AddrPortFrom(targetAddr, 11211)
	r := newReplayLab(t, l)
	startRedis(t, c.online, online)
	startRedis(t, r.target, target)
	startMemcached(t, c.online, mcOnline)
	startMemcached(t, r.target, mcTarget)
	seed := "SET user:1 ann\nSET user:2 bob\nRPUSH feed a b c\nHSET cart:1 apples 3 pears 1\n"
	runWithInput(t, c.online, seed, "redis-cli", "-h", online.Addr().String())
	// The target lacks cart:1.
	runWithInput(t, r.target, strings.Replace(seed, "HSET cart:1 apples 3 pears 1\n", "", 1), "redis-cli", "-h", target.Addr().String())
	files := filepath.Join(l.Dir(), "mc")
	put := func(h *lab.Host, server netip.AddrPort, values map[string]string) {
		dir := filepath.Join(files, h.Label())
		var paths []string
		for k, v := range values {
			p := filepath.Join(dir, k)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
			paths = append(paths, p)
		}
		mustExec(t, h, append([]string{"memccp", "--servers=" + server.String()}, paths...)...)
	}
	put(c.online, mcOnline, map[string]string{"banner": "spring sale", "motd": "hello"})
	put(r.target, mcTarget, map[string]string{"banner": "summer sale", "motd": "hello"})

	const runs = 3
	pcRedis := captureTraffic(t, c, 6379, func() {
		for range runs {
			runWithInput(t, c.client, "GET user:1\nGET user:2\nHGETALL cart:1\nLRANGE feed 0 -1\nPING\n", "redis-cli", "-h", onlineAddr.String())
		}
	})
	pcMC := captureTraffic(t, c, 11211, func() {
		for range runs {
			mustExec(t, c.client, "memccat", "--servers="+mcOnline.String(), "banner", "motd")
		}
	})

	// redis-cli asks for COMMAND DOCS first; a RESP2 server lists the
	// docs in its hash table's order, which each server process seeds at
	// random: a difference of no interest, ignored by a scoped rule (and
	// counted as ignored).
	rep := replayCompare(t, r, pcRedis, 6379, "--compare-ignore", "COMMAND DOCS::field:value")
	rep.wantChanges(t, map[string][]string{"redis HGETALL": {"length", "value"}})
	if g := rep.group(t, "redis", "COMMAND DOCS"); g.Ignored["value"] != runs {
		t.Errorf("COMMAND DOCS: ignored %v, want value ignored in all %d", g.Ignored, runs)
	}
	if g := rep.group(t, "redis", "HGETALL"); g.Requests != runs {
		t.Errorf("HGETALL: %d requests, want %d", g.Requests, runs)
	}
	if g := rep.group(t, "redis", "GET"); g.Identical != 2*runs {
		t.Errorf("GET: %d identical, want %d", g.Identical, 2*runs)
	}

	rep = replayCompare(t, r, pcMC, 11211)
	g := rep.group(t, "memcached", "get")
	if g.Requests != 2*runs || g.Different != runs || g.Identical != runs || len(g.Fields) != 1 || g.Fields["value:banner"] != runs {
		t.Errorf("memcached get: %d requests, %d different %v, %d identical; want %d, %d different in value:banner only, %d identical",
			g.Requests, g.Different, g.Fields, g.Identical, 2*runs, runs, runs)
	}
	if rep.Different != runs || rep.MissingTarget != 0 || rep.Compared+rep.NoAnswer != rep.Requests {
		t.Errorf("memcached report: %d requests, %d compared, %d different, %d missing on the target", rep.Requests, rep.Compared, rep.Different, rep.MissingTarget)
	}
}

// TestCompareSQL: real mariadb and psql clients; on each target one
// column of one table is renamed. The report names exactly the statement
// that reads it, in field columns, and no other.
func TestCompareSQL(t *testing.T) {
	needPrograms(t, "mariadbd", "mariadb", "psql")
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 1)
	r := newReplayLab(t, l)
	myOnline := startMariaDB(t, c.online, netip.AddrPortFrom(onlineAddr, 3306))
	myTarget := startMariaDB(t, r.target, netip.AddrPortFrom(targetAddr, 3306))
	pgOnline := startPostgres(t, c.online, netip.AddrPortFrom(onlineAddr, 5432))
	pgTarget := startPostgres(t, r.target, netip.AddrPortFrom(targetAddr, 5432))
	const mySchema = "CREATE USER app@'198.18.0.0/255.254.0.0'; GRANT ALL ON *.* TO app@'198.18.0.0/255.254.0.0';" +
		" CREATE DATABASE shop; USE shop; CREATE TABLE items (id INT PRIMARY KEY, %s VARCHAR(40), qty INT);" +
		" INSERT INTO items VALUES (1, 'apple', 3), (2, 'pear', 0), (3, 'plum', 7);\n"
	myOnline.sql(t, fmt.Sprintf(mySchema, "name"))
	myTarget.sql(t, fmt.Sprintf(mySchema, "title"))
	const pgSchema = "CREATE TABLE items (id INT PRIMARY KEY, %s TEXT, qty INT);" +
		" INSERT INTO items VALUES (1, 'apple', 3), (2, 'pear', 0), (3, 'plum', 7);\n"
	pgOnline.sql(t, fmt.Sprintf(pgSchema, "name"))
	pgTarget.sql(t, fmt.Sprintf(pgSchema, "title"))

	const runs = 2
	queries := []string{"SELECT * FROM items WHERE id = %d", "SELECT id, qty FROM items ORDER BY id", "SELECT COUNT(*) FROM items WHERE qty > %d"}
	script := func(i int) string {
		var b strings.Builder
		for _, q := range queries {
			b.WriteString(strings.ReplaceAll(q, "%d", fmt.Sprint(i+1)) + ";\n")
		}
		return b.String()
	}
	pcMy := captureTraffic(t, c, 3306, func() {
		for i := range runs {
			runWithInput(t, c.client, script(i), "mariadb", "--no-defaults", "-h", onlineAddr.String(), "-u", "app", "-D", "shop")
		}
	})
	pcPG := captureTraffic(t, c, 5432, func() {
		for i := range runs {
			runWithInput(t, c.client, script(i), "psql", "-X", "-q", "-h", onlineAddr.String(), "-U", "postgres", "-d", "postgres")
		}
	})

	rep := replayCompare(t, r, pcMy, 3306)
	rep.wantChanges(t, map[string][]string{"mysql SELECT * FROM items WHERE id = ?": {"columns"}})
	if g := rep.group(t, "mysql", "SELECT * FROM items WHERE id = ?"); g.Requests != runs {
		t.Errorf("mysql SELECT *: %d requests, want %d", g.Requests, runs)
	}
	rep = replayCompare(t, r, pcPG, 5432)
	rep.wantChanges(t, map[string][]string{"postgres SELECT * FROM items WHERE id = ?": {"columns"}})
	if g := rep.group(t, "postgres", "SELECT * FROM items WHERE id = ?"); g.Requests != runs {
		t.Errorf("postgres SELECT *: %d requests, want %d", g.Requests, runs)
	}
}

// TestCompareOneSided: the target drops one endpoint's connections
// without answering (nginx's 444). Its answers, and those of the requests
// after it on the same connection, are reported missing on the target,
// with the reason; the rest compares as before, and nothing crashes.
func TestCompareOneSided(t *testing.T) {
	needPrograms(t, "nginx", "curl")
	l := lab.NewT(t)
	c := newCaptureLab(t, l, 2)
	site := map[string]string{"a": "alpha\n", "b": "beta\n", "c": "gamma\n"}
	startSite(t, c.online, netip.AddrPortFrom(onlineAddr, 80), "prod", site, "")
	pc := captureTraffic(t, c, 80, func() {
		for _, a := range c.clients {
			args := []string{"curl", "-sS", "--interface", a.String()}
			for _, p := range []string{"a", "b", "c"} {
				args = append(args, "-o", "/dev/null", fmt.Sprintf("http://%v/%s", onlineAddr, p))
			}
			mustExec(t, c.client, args...)
		}
	})
	r := newReplayLab(t, l)
	startSite(t, r.target, netip.AddrPortFrom(targetAddr, 80), "target", site, "        location = /b { return 444; }\n")
	path := filepath.Join(l.Dir(), "compare.json")
	res := runStackcopy(t, r.replay, 2*time.Minute, "-x", fmt.Sprintf("80-%v", netip.AddrPortFrom(targetAddr, 80)), "-i", pc.pcap,
		"--speed", "0", "--compare-json", path)
	if res.exit != 0 && res.exit != 3 {
		t.Fatalf("stackcopy exit %d, want 0 or 3 (sessions the target cut)", res.exit)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		compareReport
		MissingReasons map[string]map[string]uint64 `json:"missing_reasons"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	n := uint64(len(c.clients))
	if g := rep.group(t, "http1", "GET /a"); g.Identical != n {
		t.Errorf("GET /a: %d identical, want %d", g.Identical, n)
	}
	for _, key := range []string{"GET /b", "GET /c"} {
		if g := rep.group(t, "http1", key); g.MissingTarget != n || g.Compared != 0 {
			t.Errorf("%s: %d missing on the target, %d compared; want %d missing", key, g.MissingTarget, g.Compared, n)
		}
	}
	var reasons uint64
	for _, k := range rep.MissingReasons["target"] {
		reasons += k
	}
	if rep.MissingTarget != 2*n || rep.Different != 0 || reasons != 2*n {
		t.Errorf("report: %d missing on the target (reasons %v), %d different; want %d missing, each with its reason, 0 different",
			rep.MissingTarget, rep.MissingReasons, rep.Different, 2*n)
	}
	if !strings.Contains(res.stdout, "GET /b") {
		t.Errorf("the summary does not name GET /b:\n%s", res.stdout)
	}
}
