// Package cmptest is test support for the comparison's protocol packages
// (compare/cmp*): it makes what a decoder leaves lazy concrete, so answers
// can be compared with reflect.DeepEqual, and feeds captured connections
// to a conversation cut in the ways the tests cut them. Only tests import
// it.
package cmptest

import (
	"math/rand/v2"
	"testing"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/internal/pcaptest"
)

// Rendered renders the requests' samples left to Render (a func, which no
// equality check can compare), as the report does for those it keeps.
func Rendered(rs []compare.Request) []compare.Request {
	for i := range rs {
		if rs[i].Render != nil {
			rs[i].Sample, rs[i].Render = rs[i].Render(), nil
		}
	}
	return rs
}

// Detailed renders each answer's sample and replaces the field its Detail
// refines by the finer fields, as the comparison does when two answers
// disagree on it, and drops the Detail.
func Detailed(as []compare.Answer) []compare.Answer {
	for i := range as {
		if as[i].Render != nil {
			as[i].Sample, as[i].Render = as[i].Render(), nil
		}
		d := as[i].Detail
		if d == nil {
			continue
		}
		var out []compare.Field
		for _, f := range as[i].Fields {
			if f.Name == d.Of {
				out = append(out, d.Fields()...)
			} else {
				out = append(out, f)
			}
		}
		as[i].Fields, as[i].Detail = out, nil
	}
	return as
}

// Result is what a connection decodes to: its requests and the answers of
// each server stream (all fed the same bytes), rendered and detailed.
type Result struct {
	Reqs    []compare.Request
	Answers [][]compare.Answer
}

// Decode feeds segs, in capture order and each cut by cut, to a new
// conversation of p with n answer streams.
func Decode(p compare.Protocol, lim compare.Limits, segs []pcaptest.Segment, n int, cut func([]byte) [][]byte) Result {
	c := p.New(lim)
	streams := make([]compare.Answers, n)
	r := Result{Answers: make([][]compare.Answer, n)}
	for i := range streams {
		streams[i] = c.Answers()
	}
	for _, seg := range segs {
		for _, piece := range cut(seg.Data) {
			if seg.Client {
				r.Reqs = append(r.Reqs, c.Requests(piece)...)
				continue
			}
			for i, a := range streams {
				r.Answers[i] = append(r.Answers[i], a.Feed(piece)...)
			}
		}
	}
	r.Reqs = Rendered(append(r.Reqs, c.EndRequests()...))
	for i, a := range streams {
		r.Answers[i] = Detailed(append(r.Answers[i], a.End()...))
	}
	return r
}

// Whole leaves b whole.
func Whole(b []byte) [][]byte { return [][]byte{b} }

// Bytewise cuts b into single bytes.
func Bytewise(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = b[i : i+1]
	}
	return out
}

// RandomCuts cuts b at random points drawn from rng.
func RandomCuts(rng *rand.Rand) func([]byte) [][]byte {
	return func(b []byte) [][]byte {
		var out [][]byte
		for len(b) > 0 {
			k := 1 + rng.IntN(len(b))
			out = append(out, b[:k])
			b = b[k:]
		}
		return out
	}
}

// FuzzConversation is a fuzz target's body for the SQL decoders: it feeds
// cli and srv to a conversation of p, in chunks that cuts chooses, with
// two answer streams, and fails when a key, a sample or a field value
// outgrows its bound. The decoder must not panic.
func FuzzConversation(t *testing.T, p compare.Protocol, cli, srv []byte, cuts uint64) {
	lim := compare.Limits{Body: 100, Sample: 64}
	c := p.New(lim)
	a, b := c.Answers(), c.Answers()
	check := func(as []compare.Answer) {
		for _, x := range Detailed(as) {
			if len(x.Sample) > 4*lim.Sample+64 {
				t.Fatalf("sample of %d bytes", len(x.Sample))
			}
			for _, f := range x.Fields {
				if len(f.Value) > 2048 {
					t.Fatalf("field %s of %d bytes", f.Name, len(f.Value))
				}
			}
		}
	}
	for len(cli) > 0 || len(srv) > 0 {
		n := int(cuts%7) + 1
		cuts = cuts/7 + cuts<<5
		if len(cli) > 0 {
			k := min(n, len(cli))
			for _, r := range c.Requests(cli[:k]) {
				if len(r.Key) > 256 {
					t.Fatalf("key of %d bytes", len(r.Key))
				}
			}
			cli = cli[k:]
		}
		if len(srv) > 0 {
			k := min(n+1, len(srv))
			check(a.Feed(srv[:k]))
			check(b.Feed(srv[:k]))
			srv = srv[k:]
		}
	}
	c.EndRequests()
	check(a.End())
	check(b.End())
}
