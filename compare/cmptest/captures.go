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
