package cmpmc

import (
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/compare/cmptest"
	"github.com/stackcopy/stackcopy/internal/pcaptest"
)

// result is what a connection decodes to: the requests and each of two
// servers' answers (fed the same bytes).
type result struct {
	reqs []compare.Request
	ans  [2][]compare.Answer
}

// decode feeds segs to a new conversation, each segment cut by cut, and
// to two Answers.
func decode(p compare.Protocol, lim compare.Limits, segs []pcaptest.Segment, cut func([]byte) [][]byte) result {
	r := cmptest.Decode(p, lim, segs, 2, cut)
	return result{reqs: r.Reqs, ans: [2][]compare.Answer{r.Answers[0], r.Answers[1]}}
}

// clientFirst reorders a connection's segments: all of the client's, then
// all of the server's, so that every request is cut before any answer
// arrives; the pairing must not depend on it.
func clientFirst(segs []pcaptest.Segment) []pcaptest.Segment {
	var c, s []pcaptest.Segment
	for _, x := range segs {
		if x.Client {
			c = append(c, x)
		} else {
			s = append(s, x)
		}
	}
	return append(c, s...)
}

// checkPairing checks that every request that calls for an answer has
// exactly one, that NoAnswer requests have none, and that no answer names
// a request that does not exist.
func checkPairing(t *testing.T, where string, r result) {
	t.Helper()
	ids := map[int]compare.Request{}
	for i, q := range r.reqs {
		if q.ID != i {
			t.Errorf("%s: request %d has ID %d", where, i, q.ID)
		}
		ids[q.ID] = q
	}
	got := map[int]int{}
	for _, a := range r.ans[0] {
		if a.Malformed != "" || a.Truncated {
			t.Errorf("%s: answer %+v", where, a)
		}
		if a.Req >= 0 {
			if _, ok := ids[a.Req]; !ok {
				t.Errorf("%s: answer to unknown request %d", where, a.Req)
			}
			got[a.Req]++
		}
	}
	for _, q := range r.reqs {
		want := 1
		if q.NoAnswer {
			want = 0
		}
		if got[q.ID] != want {
			t.Errorf("%s: request %d %q (%s, NoAnswer %v): %d answers", where, q.ID, q.Key, q.Sample, q.NoAnswer, got[q.ID])
		}
	}
	if !reflect.DeepEqual(r.ans[0], r.ans[1]) {
		t.Errorf("%s: two Answers fed the same bytes differ", where)
	}
}

// TestCapture decodes traffic captured from memcached 1.6.18 (see
// mcframe's TestCapture for what it holds).
func TestCapture(t *testing.T) {
	conns := pcaptest.Conns(t, "../../mcframe/testdata/memcached.pcap", 21211)
	if len(conns) < 2 {
		t.Fatalf("%d connections", len(conns))
	}
	keys := map[string]int{}
	for i, segs := range conns {
		where := "conn " + string(rune('A'+i))
		r := decode(Protocol(), compare.DefaultLimits, segs, cmptest.Whole)
		checkPairing(t, where, r)
		for _, q := range r.reqs {
			keys[q.Key]++
		}
		if b := decode(Protocol(), compare.DefaultLimits, segs, cmptest.Bytewise); !reflect.DeepEqual(b, r) {
			t.Errorf("%s: byte-at-a-time feeding differs from cmptest.Whole segments", where)
		}
		if c := decode(Protocol(), compare.DefaultLimits, clientFirst(segs), cmptest.Whole); !reflect.DeepEqual(c, r) {
			t.Errorf("%s: client-first feeding differs", where)
		}
	}
	var ks []string
	for k := range keys {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	t.Logf("keys: %s", strings.Join(ks, ", "))
	for _, k := range []string{"set", "get", "gets", "gat", "touch", "incr", "decr", "delete", "version", "verbosity", "stats", "ms", "mg", "mn", "md", "ma", "me", "quit", "?", "(empty)"} {
		if !slices.Contains(ks, k) {
			t.Errorf("no %q request in the capture", k)
		}
	}
}
