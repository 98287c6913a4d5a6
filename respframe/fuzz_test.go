package respframe

import (
	"math/rand/v2"
	"testing"
)

// Realistic traffic to seed the fuzzers.

var seedReplies = []string{
	"+OK\r\n+PONG\r\n-ERR unknown command 'FOO'\r\n:42\r\n:-1\r\n",
	"$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n",
	"*2\r\n$3\r\nfoo\r\n*2\r\n:1\r\n$3\r\nbar\r\n",
	"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
	"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n",
	"%2\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n_\r\n#t\r\n,3.14\r\n(12345678901234567890\r\n",
	"!21\r\nSYNTAX invalid syntax\r\n=15\r\ntxt:Some string\r\n~2\r\n+a\r\n+b\r\n",
	"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n:7\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
	"$3\r\nab\r\n",
	"+OK\n",
	"*2\r\n$1\r\na\r\n",
}

var seedCommands = []string{
	"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
	"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\nx\r\n*1\r\n$4\r\nEXEC\r\n",
	"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n*1\r\n$11\r\nUNSUBSCRIBE\r\n",
	"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n",
	"PING\r\nSET \"a b\" 'c'\r\n\r\n",
	"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n",
	"*4\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n",
	"*1\r\n+PING\r\n",
	"\x16\x03\x01\x00\xa5",
}

// FuzzServer checks reply boundaries against redigo.
func FuzzServer(f *testing.F) {
	for _, s := range seedReplies {
		f.Add([]byte(s), uint64(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		if err := checkServer(data, rand.New(rand.NewPCG(seed, 1))); err != nil {
			t.Fatalf("%v\ndata: %q", err, data)
		}
	})
}

// FuzzClient checks command boundaries against redigo, and that any
// bytes of both sides, cut anywhere, neither panic nor depend on the cut.
func FuzzClient(f *testing.F) {
	for i, s := range seedCommands {
		f.Add([]byte(s), []byte(seedReplies[i%len(seedReplies)]), uint64(i))
	}
	f.Fuzz(func(t *testing.T, client, server []byte, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 2))
		if err := checkClient(client, rng); err != nil {
			t.Fatalf("%v\nclient: %q", err, client)
		}
		// Both sides, interleaved at random cuts, against both whole.
		whole := New()
		whole.Client(client)
		whole.Server(server)
		cut := New()
		c, s := client, server
		for len(c) > 0 || len(s) > 0 {
			if len(c) > 0 && (len(s) == 0 || rng.IntN(2) == 0) {
				n := 1 + rng.IntN(len(c))
				cut.Client(c[:n])
				c = c[n:]
				continue
			}
			// Server bytes may only follow the client bytes they answer:
			// send them once the client side is done.
			if len(c) > 0 {
				continue
			}
			n := 1 + rng.IntN(len(s))
			cut.Server(s[:n])
			s = s[n:]
		}
		if whole.Requests() != cut.Requests() || whole.Answers() != cut.Answers() || (whole.Err() == nil) != (cut.Err() == nil) {
			t.Fatalf("whole: %d %d %v; cut: %d %d %v", whole.Requests(), whole.Answers(), whole.Err(), cut.Requests(), cut.Answers(), cut.Err())
		}
		if whole.Answers() > whole.Requests() {
			t.Fatalf("answers %d > requests %d", whole.Answers(), whole.Requests())
		}
	})
}
