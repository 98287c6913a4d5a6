package cmptest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/internal/pcaptest"
)

// String lists the requests, each with its answers (of the first stream)
// and their fields.
func (s Result) String() string {
	var w strings.Builder
	byReq := map[int][]compare.Answer{}
	for _, a := range s.Answers[0] {
		byReq[a.Req] = append(byReq[a.Req], a)
	}
	for _, r := range s.Reqs {
		fmt.Fprintf(&w, "req %d %q noanswer=%v size=%d sample=%q\n", r.ID, r.Key, r.NoAnswer, r.Size, r.Sample)
		for _, a := range byReq[r.ID] {
			fmt.Fprintf(&w, "   ans err=%v trunc=%v malformed=%q size=%d\n", a.Error, a.Truncated, a.Malformed, a.Size)
			for _, f := range a.Fields {
				fmt.Fprintf(&w, "      %s = %s\n", f.Name, f.Value)
			}
		}
	}
	for _, a := range byReq[-1] {
		fmt.Fprintf(&w, "unpaired answer %+v\n", a)
	}
	return w.String()
}

// checkPairing: every request gets exactly one answer unless it has none,
// answers are in request order, nothing is malformed, truncated or
// unpaired.
func checkPairing(t *testing.T, name string, s Result) {
	t.Helper()
	want := map[int]bool{}
	for _, r := range s.Reqs {
		if r.Partial || r.Key == "MALFORMED" {
			t.Errorf("%s: request %d %q partial=%v", name, r.ID, r.Key, r.Partial)
		}
		if !r.NoAnswer {
			want[r.ID] = true
		}
	}
	for i, as := range s.Answers {
		got := map[int]int{}
		prev := -1
		for _, a := range as {
			if a.Malformed != "" || a.Truncated || a.Req < 0 {
				t.Errorf("%s stream %d: answer %+v", name, i, a)
				continue
			}
			if a.Req <= prev {
				t.Errorf("%s stream %d: answer to %d after %d", name, i, a.Req, prev)
			}
			prev = a.Req
			got[a.Req]++
		}
		for id := range want {
			if got[id] != 1 {
				t.Errorf("%s stream %d: request %d has %d answers", name, i, id, got[id])
			}
		}
		for id := range got {
			if !want[id] {
				t.Errorf("%s stream %d: answer to request %d, which wants none", name, i, id)
			}
		}
	}
}

// CheckCaptures decodes every connection to port in the captures at
// paths: every request has exactly one answer, in order (or none, when it
// asks for none), nothing is malformed, truncated, partial or unpaired;
// two streams fed the same bytes answer alike; byte-at-a-time and random
// cuts decode as whole segments do. CMP_DUMP=1 logs every decoding.
func CheckCaptures(t *testing.T, p compare.Protocol, paths []string, port uint16) {
	t.Helper()
	for _, path := range paths {
		conns := pcaptest.Conns(t, path, port)
		for ci, segs := range conns {
			name := fmt.Sprintf("%s#%d", filepath.Base(path), ci)
			whole := Decode(p, compare.DefaultLimits, segs, 2, Whole)
			if os.Getenv("CMP_DUMP") != "" {
				t.Logf("%s\n%s", name, whole)
			}
			checkPairing(t, name, whole)
			// Two streams fed the same bytes answer alike.
			if !reflect.DeepEqual(whole.Answers[0], whole.Answers[1]) {
				t.Errorf("%s: two streams of the same bytes differ", name)
			}
			// Byte at a time and random cuts give the same result.
			for _, split := range []int{1, -1} {
				cut := Bytewise
				if split < 0 {
					cut = RandomCuts(rand.New(rand.NewPCG(uint64(ci), 1)))
				}
				other := Decode(p, compare.DefaultLimits, segs, 1, cut)
				if !reflect.DeepEqual(whole.Reqs, other.Reqs) {
					t.Errorf("%s split %d: requests differ", name, split)
				}
				if !reflect.DeepEqual(whole.Answers[0], other.Answers[0]) {
					t.Errorf("%s split %d: answers differ\n%s\n%s", name, split, whole, other)
				}
			}
		}
	}
}

// ClientFirst reorders a connection's segments: all of the client's, then
// all of the server's, so that every request is cut before any answer
// arrives; the pairing must not depend on it.
func ClientFirst(segs []pcaptest.Segment) []pcaptest.Segment {
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

// CheckAnswered checks, in the first stream, that every request that calls for an answer has
// exactly one, that NoAnswer requests have none, and that no answer names
// a request that does not exist; and that the second stream, fed the same
// bytes, answers alike.
func CheckAnswered(t *testing.T, where string, r Result) {
	t.Helper()
	ids := map[int]compare.Request{}
	for i, q := range r.Reqs {
		if q.ID != i {
			t.Errorf("%s: request %d has ID %d", where, i, q.ID)
		}
		ids[q.ID] = q
	}
	got := map[int]int{}
	for _, a := range r.Answers[0] {
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
	for _, q := range r.Reqs {
		want := 1
		if q.NoAnswer {
			want = 0
		}
		if got[q.ID] != want {
			t.Errorf("%s: request %d %q (%s, NoAnswer %v): %d answers", where, q.ID, q.Key, q.Sample, q.NoAnswer, got[q.ID])
		}
	}
	if !reflect.DeepEqual(r.Answers[0], r.Answers[1]) {
		t.Errorf("%s: two Answers fed the same bytes differ", where)
	}
}

// CheckCapture decodes every connection to port in the capture at path
// (at least minConns of them): CheckAnswered, and feeding byte at a time
// or all the client's bytes first decodes as whole segments do. It
// returns how many requests each key had, for the caller's own checks.
func CheckCapture(t *testing.T, p compare.Protocol, path string, port uint16, minConns int) map[string]int {
	t.Helper()
	conns := pcaptest.Conns(t, path, port)
	if len(conns) < minConns {
		t.Fatalf("%s: %d connections, want at least %d", path, len(conns), minConns)
	}
	keys := map[string]int{}
	for i, segs := range conns {
		where := fmt.Sprintf("conn %d", i)
		r := Decode(p, compare.DefaultLimits, segs, 2, Whole)
		CheckAnswered(t, where, r)
		for _, q := range r.Reqs {
			keys[q.Key]++
		}
		if b := Decode(p, compare.DefaultLimits, segs, 2, Bytewise); !reflect.DeepEqual(b, r) {
			t.Errorf("%s: byte-at-a-time feeding differs from whole segments", where)
		}
		if c := Decode(p, compare.DefaultLimits, ClientFirst(segs), 2, Whole); !reflect.DeepEqual(c, r) {
			t.Errorf("%s: client-first feeding differs", where)
		}
	}
	return keys
}
