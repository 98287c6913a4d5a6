package compare

import (
	"slices"
	"strings"
	"time"
)

// What became of a request.
type outKind int

const (
	outResolved  outKind = iota // every enabled side answered or will not
	outNoAnswer                 // the protocol sends no answer
	outOverflow                 // too many requests of its connection waited
	outAbandoned                // its connection's decoding failed
)

// Bounds of one group: the field names it tracks (field names may carry
// data, a JSON object keyed by ids), the sets of differing fields kept for
// the noise classification, the length of one value in a sample.
const (
	maxKeyLen      = 200
	maxGroupFields = 256
	maxDiffSets    = 1024
	maxValueLen    = 1024
	otherFields    = "(other fields)"
	otherKey       = "(other)"
	absent         = "(absent)"
)

// Sample ranks: which samples a group keeps first.
const (
	rankIdentical = 1 + iota
	rankNoise
	rankMissing
	rankError
	rankDifferent
)

type fieldStats struct {
	pt, pb, bt, ignored int64
}

type keyGroup struct {
	proto, key string

	// n counts the group's requests; Different and Noise are only known
	// at the end (report), from diffSets.
	n Counts

	fields map[string]*fieldStats
	// diffSets counts the compared requests by their set of fields that
	// differ between production and the target (names sorted, joined by
	// "\n"): which of them are noise is known only at the end.
	diffSets     map[string]int64
	diffOverflow int64 // requests whose set did not fit: counted different
	lat          [numSides]hist
	samples      []*GroupSample
}

// field returns the name the group tracks name under and its counts.
func (g *keyGroup) field(name string) (string, *fieldStats) {
	if f := g.fields[name]; f != nil {
		return name, f
	}
	if len(g.fields) >= maxGroupFields {
		name = otherFields
		if f := g.fields[name]; f != nil {
			return name, f
		}
	}
	f := &fieldStats{}
	g.fields[name] = f
	return name, f
}

func (g *keyGroup) isNoise(name string) bool {
	f := g.fields[name]
	return f != nil && f.pb > 0
}

func (g *keyGroup) allNoise(names []string) bool {
	for _, n := range names {
		if !g.isNoise(n) {
			return false
		}
	}
	return len(names) > 0
}

// group returns the group of key, folding keys past MaxGroups into one
// "(other)" group per protocol. Called under c.mu.
func (c *Collector) group(proto, key string) *keyGroup {
	full := proto + " " + key
	if g := c.groups[full]; g != nil {
		return g
	}
	if c.nkeys >= c.cfg.MaxGroups {
		key = otherKey
		full = proto + " " + key
		if g := c.groups[full]; g != nil {
			return g
		}
	} else {
		c.nkeys++
	}
	g := &keyGroup{
		proto:    proto,
		key:      key,
		fields:   make(map[string]*fieldStats),
		diffSets: make(map[string]int64),
	}
	c.groups[full] = g
	return g
}

// sampleCap bounds one sample string. Decoders bound their samples by
// Limits.Sample already; this is the defence against one that does not.
func (c *Collector) sampleCap() int {
	n := c.lim.Sample
	if n <= 0 {
		n = DefaultLimits.Sample
	}
	return 2*n + 256
}

func (c *Collector) lateLatency(g *keyGroup, s Side, d time.Duration) {
	c.mu.Lock()
	g.lat[s].add(d)
	c.mu.Unlock()
}

// record folds what became of one request into its group. The answers are
// compared before the collector's lock is taken.
func (c *Collector) record(cn *Conn, p *pend, kind outKind) {
	prod, tgt := p.ans[Production], p.ans[Target]
	var res *cmpResult
	var lat [numSides]time.Duration
	var latOK [numSides]bool
	if kind == outResolved {
		if prod != nil && tgt != nil {
			res = c.rules.compare(cn.proto, p.req.Key, p.ans)
		}
		if prod != nil && !p.at.IsZero() && !p.ansAt[Production].IsZero() {
			lat[Production], latOK[Production] = p.ansAt[Production].Sub(p.at), true
		}
		for _, s := range [...]Side{Target, Baseline} {
			if p.ans[s] != nil && p.sendOK[s] && !p.ansAt[s].IsZero() {
				lat[s], latOK[s] = p.ansAt[s].Sub(p.sendAt[s]), true
			}
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.group(cn.proto, p.req.Key)
	p.g = g
	g.n.Requests++
	switch kind {
	case outNoAnswer:
		g.n.NoAnswer++
		return
	case outOverflow:
		g.n.Overflow++
		return
	case outAbandoned:
		g.n.Abandoned++
		return
	}
	for s := range lat {
		if latOK[s] {
			g.lat[s].add(lat[s])
		}
	}
	rank, what := 0, ""
	var names []string
	switch {
	case res != nil:
		g.n.Compared++
		c.st.compared.Add(1)
		for _, n := range res.pb {
			_, f := g.field(n)
			f.pb++
		}
		for _, n := range res.bt {
			_, f := g.field(n)
			f.bt++
		}
		for _, n := range res.ignored {
			_, f := g.field(n)
			f.ignored++
		}
		if len(res.pt) == 0 {
			g.n.Identical++
			c.st.identical.Add(1)
			rank, what = rankIdentical, "identical"
		} else {
			names = g.trackDiffs(res.pt)
			if g.allNoise(names) {
				c.st.noise.Add(1)
				rank, what = rankNoise, "noise"
			} else {
				c.st.different.Add(1)
				rank, what = rankDifferent, "different"
			}
		}
		if prod.Error != tgt.Error {
			if tgt.Error {
				g.n.ErrorsTargetOnly++
			} else {
				g.n.ErrorsProductionOnly++
			}
			if rank < rankError {
				rank, what = rankError, "error_production_only"
				if tgt.Error {
					what = "error_target_only"
				}
			}
		}
	case prod != nil:
		g.n.MissingTarget++
		c.st.missing.Add(1)
		c.missingWhy(Target, p.miss[Target])
		rank, what = rankMissing, "missing_target"
	case tgt != nil:
		g.n.MissingProduction++
		c.st.missing.Add(1)
		c.missingWhy(Production, p.miss[Production])
		rank, what = rankMissing, "missing_production"
	default:
		g.n.Unanswered++
		rank, what = rankMissing, "unanswered"
	}
	if c.cfg.Baseline && p.ans[Baseline] == nil {
		g.n.MissingBaseline++
		c.missingWhy(Baseline, p.miss[Baseline])
	}
	sig := what + "\n" + strings.Join(names, "\n")
	if i := g.admit(c.cfg.Samples, rank, sig); i >= 0 {
		s := c.sample(cn, p, res, what, rank, sig, lat, latOK)
		if i == len(g.samples) {
			g.samples = append(g.samples, s)
		} else {
			g.samples[i] = s
		}
	}
}

// trackDiffs counts the differing fields and the request's set of them; it
// returns the names as the group tracks them, sorted.
func (g *keyGroup) trackDiffs(pt []fieldDiff) []string {
	names := make([]string, 0, len(pt))
	other := false
	for _, n := range sortedNames(pt) {
		tn, f := g.field(n)
		if tn == otherFields {
			if other {
				continue // counted once per request
			}
			other = true
		}
		f.pt++
		names = append(names, tn)
	}
	slices.Sort(names)
	k := strings.Join(names, "\n")
	if _, ok := g.diffSets[k]; ok || len(g.diffSets) < maxDiffSets {
		g.diffSets[k]++
	} else {
		g.diffOverflow++
	}
	return names
}

func (c *Collector) missingWhy(s Side, reason string) {
	if reason == "" {
		reason = "closed"
	}
	m := c.tot.missingWhy[s.String()]
	if m == nil {
		m = make(map[string]int64)
		c.tot.missingWhy[s.String()] = m
	}
	countReason(m, reason)
}

// admit says where a sample of rank goes: an index to replace, len to
// append, or -1 to drop it. Higher ranks win; among equal ranks a sample
// whose set of differing fields is new replaces one whose set is repeated,
// so the samples show different problems rather than one problem thrice.
func (g *keyGroup) admit(max, rank int, sig string) int {
	if len(g.samples) < max {
		return len(g.samples)
	}
	seen := make(map[string]int, len(g.samples))
	for _, s := range g.samples {
		seen[s.sig]++
	}
	victim := -1
	for i, s := range g.samples {
		if victim < 0 || s.rank < g.samples[victim].rank ||
			s.rank == g.samples[victim].rank && seen[s.sig] > 1 && seen[g.samples[victim].sig] == 1 {
			victim = i
		}
	}
	if victim < 0 {
		return -1
	}
	v := g.samples[victim]
	if v.rank < rank || v.rank == rank && seen[v.sig] > 1 && seen[sig] == 0 {
		return victim
	}
	return -1
}

func (c *Collector) sample(cn *Conn, p *pend, res *cmpResult, what string, rank int, sig string, lat [numSides]time.Duration, latOK [numSides]bool) *GroupSample {
	lim := c.sampleCap()
	s := &GroupSample{
		Kind:    what,
		Client:  cn.client.String(),
		Server:  cn.server.String(),
		Request: capString(rendered(p.req.Sample, p.req.Render), lim),
		rank:    rank,
		sig:     sig,
	}
	side := func(sd Side) *AnswerSample {
		if !c.enabled(sd) {
			return nil
		}
		a := p.ans[sd]
		if a == nil {
			why := p.miss[sd]
			if why == "" {
				why = "closed"
			}
			return &AnswerSample{Missing: why}
		}
		return &AnswerSample{
			Sample:    capString(rendered(a.Sample, a.Render), lim),
			Error:     a.Error,
			Truncated: a.Truncated,
			Malformed: capString(a.Malformed, maxReasonLen),
			Size:      a.Size,
		}
	}
	s.Production, s.Target, s.Baseline = side(Production), side(Target), side(Baseline)
	if res != nil {
		for _, d := range res.pt {
			df := Diff{
				Field:      capString(d.name, maxKeyLen),
				Production: d.render(Production),
				Target:     d.render(Target),
			}
			if p.ans[Baseline] != nil {
				df.Baseline = d.render(Baseline)
			}
			s.Diffs = append(s.Diffs, df)
		}
	}
	msp := func(sd Side) *float64 {
		if !latOK[sd] {
			return nil
		}
		v := ms(max(lat[sd], 0))
		return &v
	}
	s.Latency = SampleLatency{Production: msp(Production), Target: msp(Target), Baseline: msp(Baseline)}
	return s
}

func (d *fieldDiff) render(s Side) string {
	if !d.has[s] {
		return absent
	}
	return capString(d.vals[s], maxValueLen)
}

// rendered is a message's sample: as given, or rendered now (a decoder
// may leave the work for the few samples a report keeps).
func rendered(sample string, render func() string) string {
	if sample == "" && render != nil {
		return render()
	}
	return sample
}
