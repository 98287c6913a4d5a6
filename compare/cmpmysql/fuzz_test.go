package cmpmysql

import (
	"testing"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/compare/cmptest"
)

// FuzzMySQL feeds random client and server bytes in random chunks: the
// decoder never panics and what it returns stays bounded.
func FuzzMySQL(f *testing.F) {
	s := connected(baseCaps | capDeprecateEOF).c(pkt(0, []byte("\x03SELECT 1"))).s(textResult(1, 2, []string{"a"}, []string{"1"}))
	var cli, srv []byte
	for _, tn := range s.turns {
		if tn.client {
			cli = append(cli, tn.b...)
		} else {
			srv = append(srv, tn.b...)
		}
	}
	f.Add(cli, srv, uint64(7))
	f.Add([]byte{}, pkt(0, greetingPayload(baseCaps)), uint64(1))
	f.Fuzz(func(t *testing.T, cli, srv []byte, cuts uint64) {
		lim := compare.Limits{Body: 100, Sample: 64}
		c := Protocol().New(lim)
		a, b := c.Answers(), c.Answers()
		check := func(as []compare.Answer) {
			for _, x := range cmptest.Detailed(as) {
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
	})
}
