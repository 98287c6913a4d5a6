package myframe

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stackcopy/stackcopy/internal/pcaptest"
)

// Real traffic: MariaDB 10.11 on loopback, captured with tcpdump (see
// testdata/README.md for how).

// TestCaptures frames real sessions, split anywhere: no Err; whenever the
// client speaks again every request has been answered (these clients do
// not pipeline); and the totals are as counted by hand from the
// sessions' commands.
func TestCaptures(t *testing.T) {
	for _, tc := range []struct {
		file string
		// Requests per session (Answers is one more, the greeting).
		want []int
	}{
		// The mariadb client: -e's statements one COM_QUERY each, LOAD
		// DATA LOCAL INFILE's file a request of its own, with a progress
		// report before its OK: HandshakeResponse + 8 + 1; ed25519:
		// HandshakeResponse, the AuthSwitchRequest's reply, 2 queries;
		// interactive (select, use, status, a multi-statement line):
		// HandshakeResponse + 9 (COM_INIT_DB, COM_STATISTICS among
		// them); mariadb-admin ping status: HandshakeResponse + 2.
		{"testdata/mariadb-cli.pcap", []int{10, 4, 10, 3}},
		// go-sql-driver, interpolateParams=false: two prepares, three
		// executes, a failed prepare, CALL, ping (COM_STMT_CLOSE and
		// COM_QUIT get no answer): HandshakeResponse + 8.
		{"testdata/go-sql-driver.pcap", []int{9}},
		// A raw client with CLIENT_DEPRECATE_EOF, MARIADB_CLIENT_PROGRESS
		// and MARIADB_CLIENT_CACHE_METADATA: text and multi results, a
		// cursor and three COM_STMT_FETCH, COM_STMT_RESET, two executes
		// (the second without metadata), COM_SET_OPTION (answered by an
		// EOF), COM_STATISTICS, COM_FIELD_LIST, COM_PING, COM_INIT_DB,
		// COM_RESET_CONNECTION, LOAD DATA LOCAL INFILE (2 requests),
		// COM_CHANGE_USER with an AuthSwitchRequest (2), a query:
		// HandshakeResponse + 22.
		{"testdata/raw-client.pcap", []int{23}},
	} {
		ss := pcaptest.Conns(t, tc.file, 33061)
		if len(ss) != len(tc.want) {
			t.Fatalf("%s: %d sessions, want %d", tc.file, len(ss), len(tc.want))
		}
		for i, segs := range ss {
			turns := pcaptest.Turns(segs)
			rng := rand.New(rand.NewPCG(uint64(i), 9))
			f := New()
			if !DetectServer(turns[0].Data) || turns[0].Client {
				t.Errorf("%s session %d: greeting not detected", tc.file, i)
			}
			if !Detect(turns[1].Data) {
				t.Errorf("%s session %d: HandshakeResponse not detected", tc.file, i)
			}
			for k, tn := range turns {
				if tn.Client && f.Answers() != f.Requests()+1 {
					t.Errorf("%s session %d turn %d: client speaks with Requests %d Answers %d", tc.file, i, k, f.Requests(), f.Answers())
				}
				feedSplit(rng, f, tn.Client, tn.Data)
				if err := f.Err(); err != nil {
					t.Fatalf("%s session %d turn %d: %v\n%s", tc.file, i, k, err, dump(tn.Data))
				}
			}
			if f.Requests() != tc.want[i] || f.Answers() != tc.want[i]+1 {
				t.Errorf("%s session %d: at the end Requests %d Answers %d, want %d %d", tc.file, i, f.Requests(), f.Answers(), tc.want[i], tc.want[i]+1)
			}
		}
	}
}

func dump(b []byte) string {
	var w bytes.Buffer
	for len(b) >= 4 {
		n := le24(b)
		fmt.Fprintf(&w, "seq %d len %d %q\n", b[3], n, b[4:4+min(n, 40, len(b)-4)])
		b = b[min(len(b), 4+n):]
	}
	return w.String()
}
