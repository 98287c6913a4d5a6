// Package framekittest is test support for the framers (respframe,
// mcframe, myframe, pgframe): a benchmark harness for streams fed in TCP
// segments, the step tables and their runner, the concurrency and capture
// checks, and a net.Conn that lets a reference client parse exactly the
// bytes it is given. Only tests import it.
//
// pgframe's benchmarks keep their own loops: they feed whole turns of a
// few short messages, where the harness's call through the Framer
// interface would show in ns/msg.
package framekittest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/internal/pcaptest"
)

// Framer is what every framer package's *Framer implements.
type Framer interface {
	Client(p []byte)
	Server(p []byte)
	Requests() int
	Answers() int
	Err() error
}

// Turn is one side's bytes between two changes of direction.
type Turn struct {
	Client bool
	Data   []byte
}

// Bench feeds turns to f, round after round, each turn cut into segments
// of seg bytes (a TCP MSS, say; 0 for whole turns), as a replayer would.
// msgs is the number of messages (either direction) in one round; one op
// is one message, and Bench reports ns/msg (the elapsed time over the
// messages of the rounds fed) and allocations. It fails the benchmark if
// f went Err; the caller checks the counts, and may read how many rounds
// were fed.
func Bench(b *testing.B, f Framer, turns []Turn, msgs, seg int) (rounds int) {
	b.Helper()
	var size int
	for _, t := range turns {
		size += len(t.Data)
	}
	b.SetBytes(int64(size / msgs))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += msgs {
		for _, t := range turns {
			for p := t.Data; len(p) > 0; {
				k := len(p)
				if seg > 0 {
					k = min(k, seg)
				}
				if t.Client {
					f.Client(p[:k])
				} else {
					f.Server(p[:k])
				}
				p = p[k:]
			}
		}
		rounds++
	}
	b.StopTimer()
	if err := f.Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(rounds*msgs), "ns/msg")
	return rounds
}

// Step is bytes of one side, and the counts expected after them.
type Step struct {
	Client        bool
	Data          string
	Reqs, Answers int
}

// C is a client step.
func C(data string, reqs, answers int) Step { return Step{true, data, reqs, answers} }

// S is a server step.
func S(data string, reqs, answers int) Step { return Step{false, data, reqs, answers} }

// Feed gives data to f in chunks cut by mode: 0 whole, 1 byte by byte,
// else random cuts.
func Feed(f Framer, client bool, data string, mode int, rng *rand.Rand) {
	p := []byte(data)
	for len(p) > 0 {
		n := len(p)
		switch mode {
		case 1:
			n = 1
		case 2:
			n = 1 + rng.IntN(min(len(p), 7))
		}
		if client {
			f.Client(p[:n])
		} else {
			f.Server(p[:n])
		}
		p = p[n:]
	}
}

// Case is a table test: steps, and the error at the end (errors.Is
// target), or nil.
type Case struct {
	Name  string
	Steps []Step
	Err   error
}

// Table runs each case on a new framer three times, fed whole, byte by
// byte and in random cuts, checking the counts after every step and the
// error at the end.
func Table[F Framer](t *testing.T, newFramer func() F, cases []Case) {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range cases {
		for mode := range 3 {
			t.Run(fmt.Sprintf("%s/%d", tc.Name, mode), func(t *testing.T) {
				f := newFramer()
				for i, s := range tc.Steps {
					Feed(f, s.Client, s.Data, mode, rng)
					if f.Requests() != s.Reqs || f.Answers() != s.Answers {
						t.Fatalf("step %d: requests %d answers %d, want %d %d (err %v)", i, f.Requests(), f.Answers(), s.Reqs, s.Answers, f.Err())
					}
				}
				if err := f.Err(); (tc.Err == nil) != (err == nil) || (err != nil && !errors.Is(err, tc.Err)) {
					t.Fatalf("err %v, want %v", err, tc.Err)
				}
			})
		}
	}
}

// ByteConn is a net.Conn that serves Data one byte per Read, so that the
// bufio.Reader inside a reference client never reads ahead: the bytes
// read (Pos) are the bytes parsed. Writes are kept in Out (what the
// client sent).
type ByteConn struct {
	Data []byte
	Pos  int
	Out  bytes.Buffer
}

func (c *ByteConn) Read(p []byte) (int, error) {
	if c.Pos >= len(c.Data) {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = c.Data[c.Pos]
	c.Pos++
	return 1, nil
}
func (c *ByteConn) Write(p []byte) (int, error)      { return c.Out.Write(p) }
func (c *ByteConn) Close() error                     { return nil }
func (c *ByteConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *ByteConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *ByteConn) SetDeadline(time.Time) error      { return nil }
func (c *ByteConn) SetReadDeadline(time.Time) error  { return nil }
func (c *ByteConn) SetWriteDeadline(time.Time) error { return nil }

// Concurrent calls Client with request n times on this goroutine while
// another, once all n requests are counted, calls Server with answer n
// times, as a replayer's writer and reader do; every request must be
// answered, without Err.
func Concurrent(t *testing.T, f Framer, request, answer string) {
	t.Helper()
	const n = 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f.Requests() < n && f.Err() == nil {
		}
		for range n {
			f.Server([]byte(answer))
		}
	}()
	for range n {
		f.Client([]byte(request))
		_ = f.Answers()
	}
	<-done
	if f.Requests() != n || f.Answers() != n || f.Err() != nil {
		t.Fatalf("requests %d answers %d err %v", f.Requests(), f.Answers(), f.Err())
	}
}

// Capture replays captured connections, each on a new framer: every
// connection must frame without error and have every request answered,
// and at every turn boundary (where the server spoke and the client goes
// on) all the requests sent before it must be answered, as clients that
// wait for their answers show.
func Capture[F Framer](t *testing.T, newFramer func() F, conns [][]pcaptest.Segment) {
	t.Helper()
	for k, segs := range conns {
		f := newFramer()
		for i, s := range segs {
			if s.Client && i > 0 && !segs[i-1].Client && f.Answers() != f.Requests() {
				t.Fatalf("connection %d, segment %d: the client goes on with %d of %d requests answered", k, i, f.Answers(), f.Requests())
			}
			if s.Client {
				f.Client(s.Data)
			} else {
				f.Server(s.Data)
			}
			if f.Err() != nil {
				t.Fatalf("connection %d, segment %d: %v", k, i, f.Err())
			}
		}
		if f.Requests() == 0 || f.Requests() != f.Answers() {
			t.Errorf("connection %d: requests %d answers %d", k, f.Requests(), f.Answers())
		}
	}
}
