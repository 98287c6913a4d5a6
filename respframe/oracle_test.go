package respframe

// The oracle: redigo's reply parser (redis.NewConn + Receive) reads the
// same bytes, and the framer must agree with it wherever it accepts them.
// Shared by the fuzzers and the random test.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/gomodule/redigo/redis"
	"github.com/stackcopy/stackcopy/internal/framekit/framekittest"
)

// goResult is how far redigo got through a stream.
type goResult struct {
	ends    []int // offsets just past each reply
	replies []any
	clean   bool // stopped at the end, on a reply boundary
	trunc   bool // the data ended inside a reply
	err     error
}

// sane tells whether redigo can be trusted with data: it allocates what a
// length says before reading it (and lets lengths overflow), so inputs
// with large lengths are left out.
func sane(data []byte) bool {
	for i := 0; i < len(data); i++ {
		if (i == 0 || data[i-1] == '\n') && (data[i] == '$' || data[i] == '*') {
			n := 0
			for j := i + 1; j < len(data) && data[j] >= '0' && data[j] <= '9'; j++ {
				n = n*10 + int(data[j]-'0')
				if n > 1<<10 {
					return false
				}
			}
		}
	}
	return true
}

// goReplies parses data with redigo.
func goReplies(data []byte) (res goResult) {
	bc := &framekittest.ByteConn{Data: data}
	conn := redis.NewConn(bc, 0, 0)
	for {
		v, err := conn.Receive()
		var re redis.Error
		if err == nil || errors.As(err, &re) {
			res.ends = append(res.ends, bc.Pos)
			if err != nil {
				v = re
			}
			res.replies = append(res.replies, v)
			continue
		}
		last := 0
		if len(res.ends) > 0 {
			last = res.ends[len(res.ends)-1]
		}
		switch {
		case errors.Is(err, io.EOF) && bc.Pos == last:
			res.clean = true
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			res.trunc = true
		}
		res.err = err
		return res
	}
}

// pingStream is enough commands for any reply in data to pair with.
func pingStream(n int) []byte {
	return bytes.Repeat([]byte(cmd("PING")), n)
}

// trace feeds data to f's server side in chunks cut by rng (nil: a byte
// at a time) and reports the offsets where Answers moved, and where Err
// appeared (-1: never).
func trace(f *Framer, client bool, data []byte, rng *rand.Rand) (ends []int, errAt int) {
	errAt = -1
	count := func() int {
		if client {
			return f.Requests()
		}
		return f.Answers()
	}
	before := count()
	for pos := 0; pos < len(data); {
		n := 1
		if rng != nil {
			n = 1 + rng.IntN(min(len(data)-pos, 16))
		}
		if client {
			f.Client(data[pos : pos+n])
		} else {
			f.Server(data[pos : pos+n])
		}
		pos += n
		for c := count(); before < c; before++ {
			ends = append(ends, pos)
		}
		if errAt < 0 && f.Err() != nil {
			errAt = pos
		}
	}
	return ends, errAt
}

// resp3Bytes tells whether data holds a RESP3 type byte at a line start,
// which redigo rejects and the framer takes.
func resp3Bytes(data []byte) bool {
	for i := range data {
		if i == 0 || data[i-1] == '\n' {
			switch data[i] {
			case '_', ',', '#', '(', '!', '=', '%', '~', '>', '|':
				return true
			}
		}
	}
	return false
}

// checkServer compares the framer's reply boundaries with redigo's, data
// being the server's side of a session whose client sent enough PINGs.
func checkServer(data []byte, rng *rand.Rand) error {
	if !sane(data) {
		return nil
	}
	gr := goReplies(data)
	f := New()
	f.Client(pingStream(len(data) + 1))
	ends, errAt := trace(f, false, data, nil)
	err := f.Err()
	// Where the framer stops short of redigo, it must be for a bound.
	allowed := errors.Is(err, ErrTooDeep) || errors.Is(err, ErrTooLong)
	for i, e := range gr.ends {
		if i >= len(ends) {
			if err != nil && allowed && errAt <= e {
				return nil
			}
			return fmt.Errorf("redigo reply %d ends at %d; framer stopped after %d replies (err %v at %d)", i, e, len(ends), err, errAt)
		}
		if ends[i] != e {
			return fmt.Errorf("reply %d ends at %d for redigo, %d for the framer", i, e, ends[i])
		}
	}
	switch {
	case gr.clean || gr.trunc:
		if len(ends) != len(gr.ends) {
			return fmt.Errorf("redigo: %d replies (clean %v), framer %d", len(gr.ends), gr.clean, len(ends))
		}
		last := 0
		if len(gr.ends) > 0 {
			last = gr.ends[len(gr.ends)-1]
		}
		if err != nil && (gr.clean || errAt <= last) && !allowed {
			return fmt.Errorf("framer failed (%v at %d) where redigo reads on", err, errAt)
		}
	default: // redigo rejected a reply
		if err == nil && !resp3Bytes(data) {
			return fmt.Errorf("redigo rejects reply %d (%v), the framer does not", len(gr.ends), gr.err)
		}
	}
	return checkSplits(data, false, rng)
}

// checkSplits checks that the cut of data into chunks does not change
// what the framer makes of it.
func checkSplits(data []byte, client bool, rng *rand.Rand) error {
	run := func(r *rand.Rand) (int, int, bool) {
		f := New()
		if !client {
			f.Client(pingStream(len(data) + 1))
		}
		trace(f, client, data, r)
		return f.Requests(), f.Answers(), f.Err() != nil
	}
	r1, a1, e1 := run(nil)
	r2, a2, e2 := run(rng)
	if r1 != r2 || a1 != a2 || e1 != e2 {
		return fmt.Errorf("byte by byte: %d %d %v; in chunks: %d %d %v", r1, a1, e1, r2, a2, e2)
	}
	return nil
}

// canonical encodes v as a command array, if it is one (a non-empty
// array of bulk strings).
func canonical(v any) ([]byte, bool) {
	a, ok := v.([]any)
	if !ok || len(a) == 0 {
		return nil, false
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(a))
	for _, x := range a {
		s, ok := x.([]byte)
		if !ok {
			return nil, false
		}
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(s), s)
	}
	return b.Bytes(), true
}

// checkClient compares the framer's command boundaries with redigo's
// parse of the same bytes as RESP arrays, as far as they are command
// arrays in canonical form (what Redis parses exactly as redigo does).
func checkClient(data []byte, rng *rand.Rand) error {
	if !sane(data) {
		return nil
	}
	gr := goReplies(data)
	f := New()
	ends, _ := trace(f, true, data, nil)
	start := 0
	for i, e := range gr.ends {
		enc, ok := canonical(gr.replies[i])
		if !ok || !bytes.Equal(enc, data[start:e]) {
			break
		}
		if i >= len(ends) && (errors.Is(f.Err(), ErrUnsupported) || errors.Is(f.Err(), ErrPipeline)) {
			break // a command the framer does not follow
		}
		if i >= len(ends) || ends[i] != e {
			return fmt.Errorf("command %d ends at %d for redigo; framer ends %v (err %v)", i, e, ends, f.Err())
		}
		start = e
	}
	return checkSplits(data, true, rng)
}
