package cmpresp

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/stackcopy/stackcopy/compare"
)

var seeds = [][2]string{
	{cmd("GET", "a") + cmd("SET", "a", "b"), "$-1\r\n+OK\r\n"},
	{cmd("HELLO", "3") + cmd("SUBSCRIBE", "a") + "PING\r\n", "%1\r\n+a\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n+PONG\r\n"},
	{cmd("SUBSCRIBE", "a", "b") + cmd("RESET"), "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n+RESET\r\n"},
	{cmd("CLIENT", "REPLY", "SKIP") + cmd("A") + cmd("B"), "|1\r\n+a\r\n~1\r\n#t\r\n!3\r\nERR\r\n"},
	{"set \"a\\x41\" 'b'\r\n*0\r\n", "*2\r\n%1\r\n(1\r\n,inf\r\n=5\r\ntxt:a\r\n"},
	{"\x00\xff*", "-ERR\r\n*-1\r\n"},
}

// FuzzRESP feeds any bytes, cut anywhere: no panic, output bounded, and
// the same whatever the cuts.
func FuzzRESP(f *testing.F) {
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
			if len(r.Sample) > 4*lim.Sample+64 || len(r.Key) > 80 {
				t.Fatalf("request unbounded: %q %q", r.Key, r.Sample)
			}
		}
		for _, a := range wa {
			if len(a.Sample) > 4*lim.Sample+64 {
				t.Fatalf("answer sample of %d bytes", len(a.Sample))
			}
			for _, fl := range a.Fields {
				if len(fl.Value) > 8*lim.Body+64 {
					t.Fatalf("field %s of %d bytes", fl.Name, len(fl.Value))
				}
			}
		}
	})
}
