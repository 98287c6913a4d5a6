package myframe

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Real traffic: MariaDB 10.11 on loopback, captured with tcpdump (see
// testdata/README.md for how).

// turn is one side's bytes between two changes of direction.
type turn struct {
	client bool
	data   []byte
}

// sessions reads a capture of one server port into its TCP sessions, each
// a list of turns, in the order of the connections' first packets.
func sessions(t *testing.T, path string, port layers.TCPPort) [][]turn {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := pcapgo.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	type conn struct {
		turns []turn
		next  [2]uint32
		seen  [2]bool
	}
	byPort := map[layers.TCPPort]*conn{}
	var order []layers.TCPPort
	src := gopacket.NewPacketSource(r, r.LinkType())
	for pkt := range src.Packets() {
		tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if tcp == nil {
			continue
		}
		client, other := tcp.DstPort == port, tcp.DstPort
		if client {
			other = tcp.SrcPort
		}
		c := byPort[other]
		if c == nil {
			c = &conn{}
			byPort[other] = c
			order = append(order, other)
		}
		d := 0
		if client {
			d = 1
		}
		seq := tcp.Seq
		if tcp.SYN {
			c.next[d], c.seen[d] = seq+1, true
			continue
		}
		p := tcp.Payload
		if len(p) == 0 || !c.seen[d] {
			continue
		}
		if off := c.next[d] - seq; off != 0 { // a retransmission, maybe in part
			if int(off) >= len(p) || int32(off) < 0 {
				continue
			}
			p = p[off:]
		}
		c.next[d] += uint32(len(p))
		if n := len(c.turns); n > 0 && c.turns[n-1].client == client {
			c.turns[n-1].data = append(c.turns[n-1].data, p...)
		} else {
			c.turns = append(c.turns, turn{client, append([]byte(nil), p...)})
		}
	}
	var out [][]turn
	for _, p := range order {
		out = append(out, byPort[p].turns)
	}
	return out
}

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
		ss := sessions(t, tc.file, 33061)
		if len(ss) != len(tc.want) {
			t.Fatalf("%s: %d sessions, want %d", tc.file, len(ss), len(tc.want))
		}
		for i, turns := range ss {
			rng := rand.New(rand.NewPCG(uint64(i), 9))
			f := New()
			if !DetectServer(turns[0].data) || turns[0].client {
				t.Errorf("%s session %d: greeting not detected", tc.file, i)
			}
			if !Detect(turns[1].data) {
				t.Errorf("%s session %d: HandshakeResponse not detected", tc.file, i)
			}
			for k, tn := range turns {
				if tn.client && f.Answers() != f.Requests()+1 {
					t.Errorf("%s session %d turn %d: client speaks with Requests %d Answers %d", tc.file, i, k, f.Requests(), f.Answers())
				}
				feedSplit(rng, f, tn.client, tn.data)
				if err := f.Err(); err != nil {
					t.Fatalf("%s session %d turn %d: %v\n%s", tc.file, i, k, err, dump(tn.data))
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
