package h2frame

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// FuzzFramer feeds arbitrary bytes as a conversation: the client's and the
// server's bytes, cut into chunks and interleaved as seed says. The framer
// must never panic, counts never go down or change after Err, and the
// result does not depend on where the chunks of one side were cut.
func FuzzFramer(f *testing.F) {
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	f.Add(cat(preface, settings(), headers(1, eh|es, "\x82")), cat(settings(4, 10), settingsAck(), headers(1, eh, "\x88"), data(1, es, 3)), uint64(1))
	f.Add([]byte("GET / HTTP/1.1\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nhi"+clientPreface), cat([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n"), settings(), headers(1, eh|es, "x")), uint64(2))
	f.Add(cat(preface, settings(), headers(1, eh, "a"), data(1, flagPadded, 4), rst(1), ping(0), headers(3, 0, "b"), cont(3, eh|es, "c")), cat(settings(), ping(ack), goaway(1, 0), windowUpdate(0, 5), windowUpdate(3, 7)), uint64(3))
	f.Fuzz(func(t *testing.T, cli, srv []byte, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 1))
		play := func() (*Framer, int, int) {
			fr := New()
			c, s := cli, srv
			lastReq, lastAns := 0, 0
			for len(c) > 0 || len(s) > 0 {
				if len(c) > 0 && (len(s) == 0 || rng.IntN(2) == 0) {
					k := 1 + rng.IntN(len(c))
					fr.Client(c[:k])
					c = c[k:]
				} else {
					k := 1 + rng.IntN(len(s))
					fr.Server(s[:k])
					s = s[k:]
				}
				req, ans := fr.Requests(), fr.Answers()
				if req < lastReq || ans < lastAns {
					t.Fatalf("counts went down: %d %d after %d %d", req, ans, lastReq, lastAns)
				}
				lastReq, lastAns = req, ans
				fr.SendWindow(uint32(rng.IntN(8)))
			}
			return fr, lastReq, lastAns
		}
		fr, req, ans := play()
		if fr.Err() != nil {
			fr.Client(preface)
			fr.Server(settings())
			if fr.Requests() != req || fr.Answers() != ans {
				t.Fatal("counts changed after Err")
			}
		}
		// All client bytes first, then all server bytes, cut
		// differently: if neither run failed, the totals agree only
		// when no server frame needed a client frame first, which
		// this order always provides.
		g := New()
		for p := cli; len(p) > 0; {
			k := 1 + rng.IntN(len(p))
			g.Client(p[:k])
			p = p[k:]
		}
		for p := srv; len(p) > 0; {
			k := 1 + rng.IntN(len(p))
			g.Server(p[:k])
			p = p[k:]
		}
		h := New()
		h.Client(cli)
		h.Server(srv)
		if g.Requests() != h.Requests() || g.Answers() != h.Answers() || (g.Err() == nil) != (h.Err() == nil) {
			t.Fatalf("split changed the result: %d %d %v, unsplit %d %d %v", g.Requests(), g.Answers(), g.Err(), h.Requests(), h.Answers(), h.Err())
		}
	})
}
