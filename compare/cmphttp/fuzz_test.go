package cmphttp

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/compare/cmptest"
)

// fuzzRun feeds a client and a server stream, cut at random points and
// interleaved at random, to a conversation and two Answers; it checks the
// output stays within bounds and both Answers agree.
func fuzzRun(t *testing.T, p compare.Protocol, client, server []byte, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	lim := compare.Limits{Body: 1 + rng.IntN(4096), Sample: rng.IntN(512), UnorderedArrays: rng.IntN(2) == 0, ShowSecrets: rng.IntN(2) == 0}
	c := p.New(lim)
	a, b := c.Answers(), c.Answers()
	var reqs []compare.Request
	var as, bs []compare.Answer
	for len(client) > 0 || len(server) > 0 {
		if len(client) > 0 && (len(server) == 0 || rng.IntN(2) == 0) {
			n := 1 + rng.IntN(len(client))
			reqs = append(reqs, c.Requests(client[:n])...)
			client = client[n:]
		} else {
			n := 1 + rng.IntN(len(server))
			as = append(as, a.Feed(server[:n])...)
			bs = append(bs, b.Feed(server[:n])...)
			server = server[n:]
		}
	}
	reqs = cmptest.Rendered(append(reqs, c.EndRequests()...))
	as = cmptest.Detailed(append(as, a.End()...))
	bs = cmptest.Detailed(append(bs, b.End()...))
	checkFields(t, as)
	if !equalAnswers(as, bs) {
		t.Fatalf("two Answers differ:\n%v\n%v", as, bs)
	}
	for i, r := range reqs {
		if lim.Sample > 0 && len(r.Sample) > 4*lim.Sample+64 || len(r.Key) > maxKey+8 {
			t.Fatalf("request %d too large: %d %d", i, len(r.Sample), len(r.Key))
		}
	}
	for _, x := range as {
		if lim.Sample > 0 && len(x.Sample) > 4*lim.Sample+64 || len(x.Fields) > maxJSONFields+2*maxHeader/32 {
			t.Fatalf("answer too large: %d %d", len(x.Sample), len(x.Fields))
		}
		for _, f := range x.Fields {
			if len(f.Value) > 1000 || len(f.Name) > maxHeader+16 {
				t.Fatalf("field too large: %.100q %.100q", f.Name, f.Value)
			}
		}
	}
}

func addH2Seeds(f *testing.F) {
	names, _ := filepath.Glob("../../h2frame/testdata/*.h2")
	for _, name := range names {
		recs := readFixture(f, name)
		var c, s []byte
		for _, r := range recs {
			if r.client {
				c = append(c, r.b...)
			} else {
				s = append(s, r.b...)
			}
		}
		if len(c)+len(s) < 8000 {
			f.Add(c, s, uint64(len(c)))
		}
	}
}

func FuzzHTTP1(f *testing.F) {
	f.Add([]byte("GET /a/1 HTTP/1.1\r\nHost: h\r\n\r\nHEAD / HTTP/1.1\r\n\r\nPOST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n"),
		[]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\":[1,2,3]}HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nHTTP/1.1 500 x\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\n\r\n2\r\nab\r\n0\r\nT: 1\r\n\r\n"), uint64(1))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), []byte("HTTP/1.0 200 OK\r\nContent-Encoding: gzip\r\n\r\n\x1f\x8b\x08\x00"), uint64(2))
	f.Add([]byte("GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"), []byte("HTTP/1.1 101 S\r\n\r\nxx"), uint64(3))
	addH2Seeds(f)
	f.Fuzz(func(t *testing.T, client, server []byte, seed uint64) {
		fuzzRun(t, HTTP1(), client, server, seed)
	})
}

func FuzzHTTP2(f *testing.F) {
	addH2Seeds(f)
	req := hpackBlock(":method", "GET", ":scheme", "http", ":path", "/a/123?x=1", ":authority", "h")
	c := append([]byte(clientPreface), frame(fSettings, 0, 0, []byte{0, 1, 0, 0, 0x10, 0})...)
	c = append(c, frame(fHeaders, flagEndStream|flagEndHeaders, 1, req)...)
	s := frame(fSettings, 0, 0, nil)
	s = append(s, frame(fHeaders, flagEndHeaders, 1, hpackBlock(":status", "200", "content-type", "application/json"))...)
	s = append(s, frame(fData, flagEndStream|flagPadded, 1, []byte{1, '[', ']', 0})...)
	f.Add(c, s, uint64(4))
	f.Fuzz(func(t *testing.T, client, server []byte, seed uint64) {
		fuzzRun(t, HTTP2(), client, server, seed)
	})
}
