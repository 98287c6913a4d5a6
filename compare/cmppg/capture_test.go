package cmppg

import (
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/internal/pcaptest"
)

// The framer's fixtures: PostgreSQL 15 on loopback (see
// pgframe/testdata/captures/README).
const capturePort = 54329

var captureFiles = []string{"psql_simple.pcap", "pgbench_extended.pcap", "pgbench_prepared.pcap", "copy.pcap"}

// session is one connection decoded: its requests and the answers of
// each server stream.
type session struct {
	reqs    []compare.Request
	answers [][]compare.Answer
}

// decode feeds a connection's segments to a Conversation with n answer
// streams, each fed the server's bytes; split cuts every chunk in pieces
// (1 for byte at a time, 0 for whole segments, -1 for random cuts).
func decode(t testing.TB, segs []pcaptest.Segment, n, split int, rng *rand.Rand) session {
	t.Helper()
	c := Protocol().New(compare.DefaultLimits)
	var s session
	streams := make([]compare.Answers, n)
	s.answers = make([][]compare.Answer, n)
	for i := range streams {
		streams[i] = c.Answers()
	}
	for _, seg := range segs {
		for _, p := range cut(seg.Data, split, rng) {
			if seg.Client {
				s.reqs = append(s.reqs, c.Requests(p)...)
				continue
			}
			for i, a := range streams {
				s.answers[i] = append(s.answers[i], a.Feed(p)...)
			}
		}
	}
	s.reqs = renderedReqs(append(s.reqs, c.EndRequests()...))
	for i, a := range streams {
		s.answers[i] = detailed(append(s.answers[i], a.End()...))
	}
	return s
}

func cut(b []byte, split int, rng *rand.Rand) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		k := len(b)
		switch {
		case split > 0:
			k = min(split, len(b))
		case split < 0:
			k = 1 + rng.IntN(len(b))
		}
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}

func (s session) String() string {
	var w strings.Builder
	byReq := map[int][]compare.Answer{}
	for _, a := range s.answers[0] {
		byReq[a.Req] = append(byReq[a.Req], a)
	}
	for _, r := range s.reqs {
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
func checkPairing(t *testing.T, name string, s session) {
	t.Helper()
	want := map[int]bool{}
	for _, r := range s.reqs {
		if r.Partial || r.Key == "MALFORMED" {
			t.Errorf("%s: request %d %q partial=%v", name, r.ID, r.Key, r.Partial)
		}
		if !r.NoAnswer {
			want[r.ID] = true
		}
	}
	for i, as := range s.answers {
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

func TestCaptures(t *testing.T) {
	for _, file := range captureFiles {
		conns := pcaptest.Conns(t, "../../pgframe/testdata/captures/"+file, capturePort)
		for ci, segs := range conns {
			name := fmt.Sprintf("%s#%d", file, ci)
			whole := decode(t, segs, 2, 0, nil)
			if os.Getenv("CMP_DUMP") != "" {
				t.Logf("%s\n%s", name, whole)
			}
			checkPairing(t, name, whole)
			// Two streams fed the same bytes answer alike.
			if !reflect.DeepEqual(whole.answers[0], whole.answers[1]) {
				t.Errorf("%s: two streams of the same bytes differ", name)
			}
			// Byte at a time and random cuts give the same result.
			for _, split := range []int{1, -1} {
				other := decode(t, segs, 1, split, rand.New(rand.NewPCG(uint64(ci), 1)))
				if !reflect.DeepEqual(whole.reqs, other.reqs) {
					t.Errorf("%s split %d: requests differ", name, split)
				}
				if !reflect.DeepEqual(whole.answers[0], other.answers[0]) {
					t.Errorf("%s split %d: answers differ\n%s\n%s", name, split, whole, other)
				}
			}
		}
	}
}
