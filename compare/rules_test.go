package compare

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRule(t *testing.T) {
	for _, c := range []struct {
		rule    string
		ignores []string
		keeps   []string
	}{
		{"header:X-Request-ID", []string{"header:x-request-id"}, []string{"header:x-request-idx", "x-request-id"}},
		{"header:x-amz-*", []string{"header:x-amz-date", "header:x-amz-"}, []string{"header:x-am"}},
		{"field:rows", []string{"rows"}, []string{"rows2"}},
		{"field:greeting.*", []string{"greeting.version", "greeting."}, []string{"greeting"}},
		{"json:$.user.id", []string{"json:$.user.id"}, []string{"json:$.user.ids", "json:$.user", "json:$.user.id.x", "header:id"}},
		{"json:user.id", []string{"json:$.user.id"}, nil},
		{"json:$.items[*].ts", []string{"json:$.items[0].ts", "json:$.items[12].ts", "json:$.items[].ts"}, []string{"json:$.items.ts", "json:$.items[0].ts2"}},
		{"json:$.items.*.ts", []string{"json:$.items[0].ts", "json:$.items.a.ts"}, []string{"json:$.items.a.b.ts"}},
		{"json:$.items[2]", []string{"json:$.items[2]"}, []string{"json:$.items[3]", "json:$.items.a"}},
		{"json:$.**.ts", []string{"json:$.ts", "json:$.a.ts", "json:$.a[1].b.ts"}, []string{"json:$.a.ts.b"}},
		{"json:$.a.**", []string{"json:$.a", "json:$.a.b.c"}, []string{"json:$.b"}},
		{`json:$["a.b"].c`, []string{`json:$["a.b"].c`}, []string{"json:$.a.b.c"}},
		{"json:$.meta_*", []string{"json:$.meta_x"}, []string{"json:$.meta"}},
	} {
		r, err := ParseRule(c.rule)
		if err != nil {
			t.Errorf("%s: %v", c.rule, err)
			continue
		}
		for _, f := range c.ignores {
			if !r.ignores(f) {
				t.Errorf("%s does not ignore %s", c.rule, f)
			}
		}
		for _, f := range c.keeps {
			if r.ignores(f) {
				t.Errorf("%s ignores %s", c.rule, f)
			}
		}
	}
}

func TestRuleScopeAndString(t *testing.T) {
	r, err := ParseRule("  GET /users/*::header:ETag ")
	if err != nil {
		t.Fatal(err)
	}
	if r.String() != "GET /users/*::header:ETag" {
		t.Fatalf("%q", r.String())
	}
	if !r.matchesKey("http", "GET /users/{id}") || !r.matchesKey("http", "GET /users/{id}/posts") || r.matchesKey("http", "POST /users/{id}") {
		t.Fatal("scope")
	}
	if r2, _ := ParseRule("http GET *::field:x"); !r2.matchesKey("http", "GET /") {
		t.Fatal("scope with the protocol")
	}
	// A regex rule may hold "::" without being scoped.
	r, err = ParseRule("regex:a::b")
	if err != nil || r.scope != "" || r.re.String() != "a::b" {
		t.Fatalf("%+v %v", r, err)
	}
	back, err := ParseRule(r.String())
	if err != nil || back.String() != r.String() {
		t.Fatal(back, err)
	}
}

func TestParseRuleErrors(t *testing.T) {
	for rule, want := range map[string]string{
		"":                 "want header:NAME",
		"bogus":            "want header:NAME",
		"cookie:x":         "want header:NAME",
		"header:":          "empty header pattern",
		"::header:x":       "empty group scope",
		"regex:(unclosed":  "bad regular expression",
		"json:$.a[":        "'[' without ']'",
		"json:$.a[x]":      `index "x" is not a number`,
		"json:$..a":        "empty member name",
		`json:$["a`:        "'[' without ']'",
		`json:$["a].b`:     "unterminated quoted member",
		"GET /::field:":    "empty field pattern",
		"GET /::nothing:x": "want header:NAME",
	} {
		_, err := ParseRule(rule)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", rule, err, want)
		}
	}
}

func TestLoadRules(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("# comment\n\nheader:etag\n  GET *::json:$.ts  \nregex:\\d+\n"), 0o644)
	rules, err := LoadRules(good)
	if err != nil || len(rules) != 3 || rules[1].String() != "GET *::json:$.ts" {
		t.Fatalf("%v %v", rules, err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("header:etag\n\nregex:(\n"), 0o644)
	if _, err := LoadRules(bad); err == nil || !strings.Contains(err.Error(), bad+":3:") || !strings.Contains(err.Error(), "regular expression") {
		t.Fatalf("%v", err)
	}
	if _, err := LoadRules(filepath.Join(dir, "none")); err == nil || !strings.Contains(err.Error(), "none") {
		t.Fatalf("%v", err)
	}
}

func TestDefaultRules(t *testing.T) {
	rs := DefaultRules()
	if len(rs) != 17 {
		t.Fatal(len(rs))
	}
	rs[0] = Rule{} // a copy: mutating it changes nothing
	if DefaultRules()[0].String() != "header:date" {
		t.Fatal("DefaultRules shares its slice")
	}
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		pat, s string
		ok     bool
	}{
		{"", "", true}, {"*", "", true}, {"*", "abc", true}, {"a*c", "abbbc", true},
		{"a*c", "abcd", false}, {"a?c", "abc", true}, {"a?c", "ac", false},
		{"*a*b*", "xxaxxbxx", true}, {"*a*b", "xxbxxa", false},
		{"GET /users/*", "GET /users/{id}/x", true},
	} {
		if glob(c.pat, c.s) != c.ok {
			t.Errorf("glob(%q, %q) != %v", c.pat, c.s, c.ok)
		}
	}
	// No exponential backtracking.
	if glob(strings.Repeat("*a", 30)+"b", strings.Repeat("a", 5000)) {
		t.Fatal("matched")
	}
}
