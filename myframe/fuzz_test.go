package myframe

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// FuzzFramer takes any bytes as a session (records of a side flag, a
// 2-byte length and the bytes) and checks what must hold whatever the
// input: no panic; the same Requests, Answers and Err whether a step is
// shown whole or in pieces; counts that only grow, stop growing at Err,
// and never have more answers than requests plus the greeting.

func encodeSession(steps []step) []byte {
	var b []byte
	for _, s := range steps {
		for d := s.data; ; {
			n := min(len(d), 0xffff)
			flag := byte(0)
			if s.client {
				flag = 1
			}
			b = append(b, flag)
			b = binary.LittleEndian.AppendUint16(b, uint16(n))
			b = append(b, d[:n]...)
			d = d[n:]
			if len(d) == 0 {
				break
			}
		}
	}
	return b
}

func decodeSession(b []byte) []step {
	var steps []step
	for len(b) >= 3 {
		client := b[0]&1 == 1
		n := min(int(binary.LittleEndian.Uint16(b[1:])), len(b)-3)
		steps = append(steps, step{client: client, data: b[3 : 3+n]})
		b = b[3+n:]
	}
	return steps
}

func checkAnyInput(data []byte) error {
	steps := decodeSession(data)
	whole, split := New(), New()
	rng := rand.New(rand.NewPCG(uint64(len(data)), 1))
	req, ans := 0, 0
	for i, s := range steps {
		if s.client {
			whole.Client(s.data)
		} else {
			whole.Server(s.data)
		}
		feedSplit(rng, split, s.client, s.data)
		r, a, err := whole.Requests(), whole.Answers(), whole.Err()
		if r != split.Requests() || a != split.Answers() || fmt.Sprint(err) != fmt.Sprint(split.Err()) {
			return fmt.Errorf("step %d: whole %d %d %v, split %d %d %v", i, r, a, err, split.Requests(), split.Answers(), split.Err())
		}
		if r < req || a < ans {
			return fmt.Errorf("step %d: counts went down", i)
		}
		if a > r+1 {
			return fmt.Errorf("step %d: Answers %d > Requests %d + 1", i, a, r)
		}
		if err != nil {
			// Nothing changes after Err.
			whole.Client([]byte{0, 0, 0, 0, 1})
			whole.Server([]byte{7, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0})
			if whole.Requests() != r || whole.Answers() != a {
				return fmt.Errorf("counts changed after Err %v", err)
			}
			return nil
		}
		req, ans = r, a
	}
	return nil
}

func FuzzFramer(f *testing.F) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 24 {
		g := &gen{rng: rng}
		g.session()
		f.Add(encodeSession(g.conv.steps))
	}
	f.Add([]byte{})
	f.Add(encodeSession([]step{{client: false, data: []byte("\x05\x00\x00\x00\xff\x10\x04Too many connections")}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := checkAnyInput(data); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzDetect checks that Detect and DetectServer never panic and accept
// every prefix of what they accept (a greeting split across segments).
func FuzzDetect(f *testing.F) {
	g := &gen{rng: rand.New(rand.NewPCG(1, 1))}
	g.connect()
	f.Add(g.conv.steps[0].data)
	f.Add(g.conv.steps[1].data)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, fn := range []func([]byte) bool{Detect, DetectServer} {
			if fn(data) {
				for k := 1; k < len(data) && k < 64; k++ {
					if !fn(data[:k]) {
						t.Fatalf("true on %q, false on its prefix %q", data, data[:k])
					}
				}
			}
		}
	})
}
