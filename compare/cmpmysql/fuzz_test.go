package cmpmysql

import (
	"testing"

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
		cmptest.FuzzConversation(t, Protocol(), cli, srv, cuts)
	})
}
