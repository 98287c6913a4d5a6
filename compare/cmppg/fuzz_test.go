package cmppg

import (
	"testing"

	"github.com/stackcopy/stackcopy/compare/cmptest"
)

// FuzzPostgres feeds random client and server bytes in random chunks: the
// decoder never panics and what it returns stays bounded.
func FuzzPostgres(f *testing.F) {
	var cli, srv []byte
	for _, tn := range []turn{C(startupMsg()), S(loggedIn), C(msg('Q', cs("select 1"))), S(rowDesc("a"), dataRow("1"), msg('C', cs("SELECT 1")), ready)} {
		if tn.client {
			cli = append(cli, tn.b...)
		} else {
			srv = append(srv, tn.b...)
		}
	}
	f.Add(cli, srv, uint64(7))
	f.Add(append(i32(8), i32(codeSSL)...), []byte("N"), uint64(1))
	f.Fuzz(func(t *testing.T, cli, srv []byte, cuts uint64) {
		cmptest.FuzzConversation(t, Protocol(), cli, srv, cuts)
	})
}
