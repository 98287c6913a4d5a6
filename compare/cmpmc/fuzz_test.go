package cmpmc

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/stackcopy/stackcopy/compare"
)

var seeds = [][2]string{
	{"set a 0 0 1\r\nx\r\nget a b\r\n", "STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n"},
	{"gets a\r\ndelete a noreply\r\nincr a 1\r\n", "VALUE a 1 1 9\r\nx\r\nEND\r\nNOT_FOUND\r\n"},
	{"mg a v q O1\r\nmg b v k\r\nmn\r\n", "VA 1 O1\r\nx\r\nEN\r\nMN\r\n"},
	{"stats\r\nversion\r\n", "STAT pid 1\r\nEND\r\nVERSION 1\r\n"},
	{"ms a 1 q\r\nx\r\nmd a q\r\nma a\r\nme a\r\n", "NF\r\nHD\r\nME a x\r\n"},
	{"\x80\x01\x00", "\x81\x01"},
}

// FuzzMemcached feeds any bytes, cut anywhere: no panic, output bounded,
// and the same whatever the cuts.
func FuzzMemcached(f *testing.F) {
	for i, s := range seeds {
		f.Add([]byte(s[0]), []byte(s[1]), uint64(i))
	}
	f.Fuzz(func(t *testing.T, client, server []byte, seed uint64) {
		lim := compare.Limits{Body: 300, Sample: 100}
		rng := rand.New(rand.NewPCG(seed, 3))
		wr, wa := chunked(lim, client, server, rand.New(rand.NewPCG(0, 0)))
		cr, ca := chunked(lim, client, server, rng)
		if !reflect.DeepEqual(wr, cr) || !reflect.DeepEqual(wa, ca) {
			t.Fatalf("cut streams decode differently\nclient %q\nserver %q", client, server)
		}
		if len(wr) > len(client)+1 || len(wa) > len(server)+1 {
			t.Fatalf("%d requests, %d answers from %d and %d bytes", len(wr), len(wa), len(client), len(server))
		}
		for _, r := range wr {
			if len(r.Sample) > 4*lim.Sample+64 || len(r.Key) > 40 {
				t.Fatalf("request unbounded: %q %q", r.Key, r.Sample)
			}
		}
		for _, a := range wa {
			if len(a.Sample) > 4*lim.Sample+64 || len(a.Fields) > 3*maxItems+8 {
				t.Fatalf("answer unbounded: %d sample bytes, %d fields", len(a.Sample), len(a.Fields))
			}
			for _, fl := range a.Fields {
				if len(fl.Value) > 4*lim.Body+64 || len(fl.Name) > 1100 {
					t.Fatalf("field %.40q of %d bytes", fl.Name, len(fl.Value))
				}
			}
		}
	})
}
