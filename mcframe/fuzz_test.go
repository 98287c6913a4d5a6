package mcframe

import (
	"math/rand/v2"
	"testing"
)

// Realistic traffic to seed the fuzzers.

var seedAnswers = []string{
	"VALUE k 0 2\r\nhi\r\nEND\r\n",
	"VALUE a 5 3 99\r\nabc\r\nVALUE key:1 0 0\r\n\r\nEND\r\n",
	"END\r\n",
	"SERVER_ERROR out of memory writing get response\r\n",
	"VALUE a 0 1\r\nxy\r\nEND\r\n",
	"VALUE a 0 99999999999\r\n",
	"END\n",
}

var seedCommands = []struct{ client, server string }{
	{"set k 0 0 2\r\nhi\r\nget k\r\n", "STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\n"},
	{"gets a b\r\ndelete a\r\nincr n 1\r\ntouch a 1\r\n", "END\r\nNOT_FOUND\r\n2\r\nTOUCHED\r\n"},
	{"stats\r\nversion\r\nflush_all noreply\r\n", "STAT pid 1\r\nEND\r\nVERSION 1.6.18\r\n"},
	{"mg a v q O1 k\r\nmg b v q O2 k\r\nmn\r\n", "VA 1 O2 kb\r\nx\r\nMN\r\n"},
	{"ms k 2 T0 F1\r\nhi\r\nmd k q\r\nma n v\r\nme k\r\n", "HD\r\nVA 1\r\n5\r\nEN\r\n"},
	{"\x80\x00\x00\x03", ""},
	{"set k 0 0 1 noreply\r\nx\r\nquit\r\n", ""},
}

// FuzzServer checks get answers against gomemcache.
func FuzzServer(f *testing.F) {
	for _, s := range seedAnswers {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := checkGet(data, []string{"a", "k"}); err != nil {
			t.Fatalf("%v\ndata: %q", err, data)
		}
	})
}

// FuzzSession feeds any bytes of both sides, cut anywhere: no panic, the
// cut does not change the counts, answers never outnumber requests by
// more than the storage commands answered before their data blocks.
func FuzzSession(f *testing.F) {
	for i, s := range seedCommands {
		f.Add([]byte(s.client), []byte(s.server), uint64(i))
	}
	f.Fuzz(func(t *testing.T, client, server []byte, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 2))
		whole := New()
		whole.Client(client)
		whole.Server(server)
		cut := New()
		for p := client; len(p) > 0; {
			n := 1 + rng.IntN(len(p))
			cut.Client(p[:n])
			p = p[n:]
		}
		for p := server; len(p) > 0; {
			n := 1 + rng.IntN(len(p))
			cut.Server(p[:n])
			p = p[n:]
		}
		if whole.Requests() != cut.Requests() || whole.Answers() != cut.Answers() || (whole.Err() == nil) != (cut.Err() == nil) {
			t.Fatalf("whole: %d %d %v; cut: %d %d %v", whole.Requests(), whole.Answers(), whole.Err(), cut.Requests(), cut.Answers(), cut.Err())
		}
		if whole.Answers() > whole.Requests()+1 {
			t.Fatalf("answers %d > requests %d + 1", whole.Answers(), whole.Requests())
		}
	})
}
