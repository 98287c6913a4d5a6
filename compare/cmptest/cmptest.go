// Package cmptest is test support for the comparison's protocol packages
// (compare/cmp*): it makes what a decoder leaves lazy concrete, so answers
// can be compared with reflect.DeepEqual, and feeds captured connections
// to a conversation cut in the ways the tests cut them. Only tests import
// it.
package cmptest

import (
	"math/rand/v2"

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
