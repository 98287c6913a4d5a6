package compare

import "testing"

// A Detail is read only when the field it refines differs, and then its
// finer fields are compared (and ruled) in that field's place.
func TestDetailExpansion(t *testing.T) {
	calls := 0
	answer := func(body string, paths ...Field) *Answer {
		return &Answer{
			Fields: []Field{{Name: "status", Value: "200"}, {Name: "body", Value: body}},
			Detail: &Detail{Of: "body", Fields: func() []Field { calls++; return paths }},
		}
	}
	ignoreTime, err := ParseRule("json:$.time")
	if err != nil {
		t.Fatal(err)
	}
	rs := newRuleSet([]Rule{ignoreTime})

	same := [numSides]*Answer{answer(`{"a":1}`, Field{"json:$.a", "1"}), answer(`{"a":1}`, Field{"json:$.a", "1"})}
	if r := rs.compare("http1", "GET /", same); len(r.pt) != 0 || calls != 0 {
		t.Fatalf("same bodies: %+v, %d detail reads; want no difference and no read", r, calls)
	}

	differ := [numSides]*Answer{
		answer(`{"a":1,"time":"1"}`, Field{"json:$.a", "1"}, Field{"json:$.time", `"1"`}),
		answer(`{"a":2,"time":"2"}`, Field{"json:$.a", "2"}, Field{"json:$.time", `"2"`}),
	}
	r := rs.compare("http1", "GET /", differ)
	if len(r.pt) != 1 || r.pt[0].name != "json:$.a" || len(r.ignored) != 1 || r.ignored[0] != "json:$.time" || calls != 2 {
		t.Fatalf("different bodies: %+v, %d detail reads; want json:$.a different, json:$.time ignored, both read", r, calls)
	}

	// Only one side is JSON: its body is compared as a whole.
	plain := &Answer{Fields: []Field{{Name: "status", Value: "200"}, {Name: "body", Value: "oops"}}}
	r = rs.compare("http1", "GET /", [numSides]*Answer{answer(`{"a":1}`, Field{"json:$.a", "1"}), plain})
	if len(r.pt) != 1 || r.pt[0].name != "body" {
		t.Fatalf("JSON against text: %+v; want body different", r)
	}
}
