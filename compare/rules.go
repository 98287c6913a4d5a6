package compare

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// A Rule makes the comparison ignore something. Its text form is
//
//	[KEY_GLOB::]KIND:PATTERN
//
// where KEY_GLOB limits the rule to the groups whose request key (or
// "protocol key") it matches, and KIND is one of
//
//	header:NAME  the field "header:<lowercased NAME>" (NAME may be a glob)
//	json:PATH    the fields "json:PATH": $.user.id, $.items[*].ts; "*" is
//	             one member or index, "**" any number of them
//	field:GLOB   any field whose name matches GLOB
//	regex:RE     in every field value on every side, what RE matches is
//	             replaced by "<ignored>" before comparing
//
// Globs have "*" for any run of characters and "?" for one character.
type Rule struct {
	scope   string
	kind    string
	pattern string
	glob    string // header and field: the glob on the field name
	path    []seg  // json
	re      *regexp.Regexp
}

// String is the rule's text form, which ParseRule reads back.
func (r Rule) String() string {
	s := r.kind + ":" + r.pattern
	if r.scope != "" {
		s = r.scope + "::" + s
	}
	return s
}

// ParseRule reads one rule in its text form.
func ParseRule(s string) (Rule, error) {
	text := strings.TrimSpace(s)
	r := Rule{}
	if !hasKindPrefix(text) {
		if i := strings.Index(text, "::"); i >= 0 {
			r.scope, text = text[:i], text[i+2:]
			if r.scope == "" {
				return Rule{}, fmt.Errorf("compare: rule %q: empty group scope before \"::\"", s)
			}
		}
	}
	kind, pat, ok := strings.Cut(text, ":")
	if !ok || !validKind(kind) {
		return Rule{}, fmt.Errorf("compare: rule %q: want header:NAME, json:PATH, field:GLOB or regex:RE (optionally scoped: KEY_GLOB::RULE)", s)
	}
	if pat == "" {
		return Rule{}, fmt.Errorf("compare: rule %q: empty %s pattern", s, kind)
	}
	r.kind, r.pattern = kind, pat
	switch kind {
	case "header":
		r.glob = "header:" + strings.ToLower(pat)
	case "field":
		r.glob = pat
	case "json":
		p, err := parsePath(pat, true)
		if err != nil {
			return Rule{}, fmt.Errorf("compare: rule %q: %w", s, err)
		}
		r.path = p
	case "regex":
		re, err := regexp.Compile(pat)
		if err != nil {
			return Rule{}, fmt.Errorf("compare: rule %q: bad regular expression: %w", s, err)
		}
		r.re = re
	}
	return r, nil
}

func hasKindPrefix(s string) bool {
	k, _, ok := strings.Cut(s, ":")
	return ok && validKind(k)
}

func validKind(k string) bool {
	switch k {
	case "header", "json", "field", "regex":
		return true
	}
	return false
}

// LoadRules reads a file of rules, one a line; blank lines and lines
// starting with '#' are skipped. Errors name the file and line.
func LoadRules(path string) ([]Rule, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("compare: rules: %w", err)
	}
	defer f.Close()
	var rules []Rule
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		r, err := ParseRule(t)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		rules = append(rules, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", path, line+1, err)
	}
	return rules, nil
}

// DefaultRules are the rules applied unless Config.NoDefaultRules: the
// headers that differ on every answer whatever the version (times, request
// and trace ids, caches and proxies). A new slice each call.
func DefaultRules() []Rule {
	defaultRuleText := [...]string{
		"header:date", "header:age", "header:expires", "header:server-timing",
		"header:x-request-id", "header:x-correlation-id", "header:traceparent",
		"header:tracestate", "header:x-runtime", "header:x-amzn-trace-id",
		"header:cf-ray", "header:via", "header:x-served-by", "header:x-cache",
		"header:report-to", "header:nel",
		// memcached's cas unique is the server's own counter.
		"field:cas:*",
	}
	rules := make([]Rule, 0, len(defaultRuleText))
	for _, t := range defaultRuleText {
		r, err := ParseRule(t)
		if err != nil {
			panic(err) // a constant above is wrong
		}
		rules = append(rules, r)
	}
	return rules
}

// glob reports whether s matches pat, where '*' is any run of bytes and
// '?' one byte (or one rune: a multi-byte rune matches "?" or "*").
func glob(pat, s string) bool {
	// Iterative matching with one backtrack point: linear in practice,
	// never exponential.
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pat) && pat[p] == '*':
			star, mark = p, i
			p++
		case p < len(pat) && (pat[p] == '?' || pat[p] == s[i]):
			p++
			i++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pat) && pat[p] == '*' {
		p++
	}
	return p == len(pat)
}

func isGlob(s string) bool { return strings.ContainsAny(s, "*?") }

// A seg is one step of a JSON path: a member name, an index, or in a
// pattern "*" (one step) and "**" (any number).
type seg struct {
	kind byte // 'm' member, 'i' index, '*' one, '2' any number
	name string
}

// parsePath reads $.a.b[0]["c d"][*].** (pattern allows * and **). A path
// without the leading "$" is taken as relative to it.
func parsePath(p string, pattern bool) ([]seg, error) {
	s := p
	if strings.HasPrefix(s, "$") {
		s = s[1:]
	} else if s != "" && s[0] != '.' && s[0] != '[' {
		s = "." + s
	}
	var out []seg
	for len(s) > 0 {
		switch s[0] {
		case '.':
			s = s[1:]
			n := strings.IndexAny(s, ".[")
			if n < 0 {
				n = len(s)
			}
			name := s[:n]
			s = s[n:]
			if name == "" {
				return nil, fmt.Errorf("json path %q: empty member name", p)
			}
			out = append(out, nameSeg(name, pattern))
		case '[':
			end := strings.IndexByte(s, ']')
			if end < 0 {
				return nil, fmt.Errorf("json path %q: '[' without ']'", p)
			}
			in := s[1:end]
			if len(in) > 0 && (in[0] == '"' || in[0] == '\'') {
				// A quoted member may hold ']' and '.': find its closing
				// quote, skipping escaped characters.
				q := s[1]
				j := 2
				for j < len(s) && s[j] != q {
					if s[j] == '\\' {
						j++
					}
					j++
				}
				if j+1 >= len(s) || s[j+1] != ']' {
					return nil, fmt.Errorf("json path %q: unterminated quoted member", p)
				}
				raw := s[1 : j+1]
				name := raw[1 : len(raw)-1]
				if q == '"' {
					if u, err := strconv.Unquote(raw); err == nil {
						name = u
					}
				}
				out = append(out, seg{'m', name})
				s = s[j+2:]
				continue
			}
			s = s[end+1:]
			switch {
			case in == "*" && pattern, in == "":
				// "[]" is how an unordered array's element may be named.
				out = append(out, seg{'*', ""})
			case in == "**" && pattern:
				out = append(out, seg{'2', ""})
			default:
				if _, err := strconv.Atoi(in); err != nil {
					return nil, fmt.Errorf("json path %q: index %q is not a number", p, in)
				}
				out = append(out, seg{'i', in})
			}
		default:
			return nil, fmt.Errorf("json path %q: unexpected %q", p, s[:1])
		}
	}
	return out, nil
}

func nameSeg(name string, pattern bool) seg {
	if pattern {
		switch name {
		case "*":
			return seg{'*', ""}
		case "**":
			return seg{'2', ""}
		}
	}
	return seg{'m', name}
}

// matchPath reports whether the path f matches the pattern pat.
func matchPath(pat, f []seg) bool {
	for len(pat) > 0 {
		switch p := pat[0]; p.kind {
		case '2':
			for k := 0; k <= len(f); k++ {
				if matchPath(pat[1:], f[k:]) {
					return true
				}
			}
			return false
		case '*':
			if len(f) == 0 {
				return false
			}
		case 'm':
			if len(f) == 0 || f[0].kind != 'm' || !(f[0].name == p.name || isGlob(p.name) && glob(p.name, f[0].name)) {
				return false
			}
		case 'i':
			if len(f) == 0 || f[0].kind != 'i' && f[0].kind != '*' || f[0].kind == 'i' && f[0].name != p.name {
				return false
			}
		}
		pat, f = pat[1:], f[1:]
	}
	return len(f) == 0
}

// matchesKey reports whether the rule applies in the group of key.
func (r *Rule) matchesKey(proto, key string) bool {
	return r.scope == "" || glob(r.scope, key) || glob(r.scope, proto+" "+key)
}

// ignores reports whether the rule ignores the field name.
func (r *Rule) ignores(name string) bool {
	switch r.kind {
	case "header", "field":
		return glob(r.glob, name)
	case "json":
		rest, ok := strings.CutPrefix(name, "json:")
		if !ok {
			return false
		}
		f, err := parsePath(rest, false)
		return err == nil && matchPath(r.path, f)
	}
	return false
}

// A ruleSet is the rules in force, sorted for a quick check: unscoped
// literal names go in a set, the rest are tried one by one.
type ruleSet struct {
	all    []Rule
	exact  map[string]bool
	fields []*Rule // field rules that need matching
	res    []*Rule // regex rules
}

func newRuleSet(rules []Rule) ruleSet {
	rs := ruleSet{all: rules, exact: make(map[string]bool)}
	for i := range rules {
		r := &rs.all[i]
		switch {
		case r.kind == "regex":
			rs.res = append(rs.res, r)
		case r.scope == "" && (r.kind == "header" || r.kind == "field") && !isGlob(r.glob):
			rs.exact[r.glob] = true
		default:
			rs.fields = append(rs.fields, r)
		}
	}
	return rs
}

func (rs *ruleSet) strings() []string {
	out := make([]string, len(rs.all))
	for i, r := range rs.all {
		out[i] = r.String()
	}
	return out
}

// A cmpResult is how the answers of one request compare.
type cmpResult struct {
	pt      []fieldDiff // fields production and the target differ on, not ignored
	pb, bt  []string    // fields production and the baseline, the baseline and the target differ on
	ignored []string    // fields that differ between production and the target but are ignored
}

type fieldDiff struct {
	name string
	vals [numSides]string
	has  [numSides]bool
}

const ignoredText = "<ignored>"

// compare compares the answers field by field under the rules that apply
// to the group (proto, key). Production and the target must be present.
func (rs *ruleSet) compare(proto, key string, ans [numSides]*Answer) *cmpResult {
	var fields, res []*Rule
	for _, r := range rs.fields {
		if r.matchesKey(proto, key) {
			fields = append(fields, r)
		}
	}
	for _, r := range rs.res {
		if r.matchesKey(proto, key) {
			res = append(res, r)
		}
	}
	fs := expandDetails(ans)
	out := &cmpResult{}
	base := ans[Baseline] != nil
	if sameNames(fs) {
		// The usual case: every side lists the same fields in the same
		// order. Fields equal on every side need no rule at all.
		for i, f := range fs[Production] {
			d := fieldDiff{name: f.Name}
			for s := range fs {
				if fs[s] != nil {
					d.vals[s], d.has[s] = fs[s][i].Value, true
				}
			}
			if d.differ(Production, Target) || base && (d.differ(Production, Baseline) || d.differ(Baseline, Target)) {
				rs.judge(&d, fields, res, base, out)
			}
		}
		return out
	}
	var vals [numSides]map[string]string
	var names []string
	seen := make(map[string]bool)
	for s := range fs {
		if ans[s] == nil {
			continue
		}
		vals[s] = make(map[string]string, len(fs[s]))
		for _, f := range fs[s] {
			if !seen[f.Name] {
				seen[f.Name] = true
				names = append(names, f.Name)
			}
			vals[s][f.Name] = f.Value
		}
	}
	for _, name := range names {
		d := fieldDiff{name: name}
		for s := range vals {
			if vals[s] != nil {
				d.vals[s], d.has[s] = vals[s][name]
			}
		}
		rs.judge(&d, fields, res, base, out)
	}
	return out
}

// judge files one field: ignored by a rule, different between production
// and the target (after the regular-expression rules), and where the
// baseline stands.
func (rs *ruleSet) judge(d *fieldDiff, fields, res []*Rule, base bool, out *cmpResult) {
	name := d.name
	rawPT := d.differ(Production, Target)
	if rs.exact[name] || anyIgnores(fields, name) {
		if rawPT {
			out.ignored = append(out.ignored, name)
		}
		return
	}
	for _, r := range res {
		for s := range d.vals {
			if d.has[s] {
				d.vals[s] = r.re.ReplaceAllLiteralString(d.vals[s], ignoredText)
			}
		}
	}
	if d.differ(Production, Target) {
		out.pt = append(out.pt, *d)
	} else if rawPT {
		out.ignored = append(out.ignored, name)
	}
	if base {
		if d.differ(Production, Baseline) {
			out.pb = append(out.pb, name)
		}
		if d.differ(Baseline, Target) {
			out.bt = append(out.bt, name)
		}
	}
}

// sameNames reports whether every present side has the same field names
// in the same order.
func sameNames(fs [numSides][]Field) bool {
	p := fs[Production]
	for s := Target; s < numSides; s++ {
		if fs[s] == nil && s == Baseline {
			continue
		}
		if len(fs[s]) != len(p) {
			return false
		}
		for i := range p {
			if fs[s][i].Name != p[i].Name {
				return false
			}
		}
	}
	return true
}

// expandDetails returns each side's fields, with a field that has a
// Detail (a JSON body) replaced by its finer fields on every side that
// has one, when two sides with a Detail of it disagree on it.
func expandDetails(ans [numSides]*Answer) [numSides][]Field {
	var fs [numSides][]Field
	of := ""
	for s, a := range ans {
		if a == nil {
			continue
		}
		fs[s] = a.Fields
		if a.Detail != nil && a.Detail.Fields != nil && of == "" {
			of = a.Detail.Of
		}
	}
	if of == "" {
		return fs
	}
	var val [numSides]string
	var det [numSides]bool
	for s, a := range ans {
		if a == nil || a.Detail == nil || a.Detail.Of != of || a.Detail.Fields == nil {
			continue
		}
		det[s] = true
		for _, f := range a.Fields {
			if f.Name == of {
				val[s] = f.Value
				break
			}
		}
	}
	differ := false
	for a := range det {
		for b := a + 1; b < len(det); b++ {
			differ = differ || det[a] && det[b] && val[a] != val[b]
		}
	}
	if !differ {
		return fs
	}
	for s := range det {
		if !det[s] {
			continue
		}
		finer := ans[s].Detail.Fields()
		out := make([]Field, 0, len(fs[s])+len(finer))
		for _, f := range fs[s] {
			if f.Name == of {
				out = append(out, finer...)
			} else {
				out = append(out, f)
			}
		}
		fs[s] = out
	}
	return fs
}

func (d *fieldDiff) differ(a, b Side) bool {
	return d.has[a] != d.has[b] || d.vals[a] != d.vals[b]
}

func anyIgnores(rules []*Rule, name string) bool {
	for _, r := range rules {
		if r.ignores(name) {
			return true
		}
	}
	return false
}

// sortedNames returns the diffs' field names sorted, for a group's set of
// differing fields.
func sortedNames(ds []fieldDiff) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.name
	}
	sort.Strings(out)
	return out
}
