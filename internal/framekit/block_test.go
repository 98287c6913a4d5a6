package framekit

import "testing"

// TestBlock: a block's payload and CRLF are taken across any split, what
// follows is handed back, and a wrong byte where the CRLF belongs is
// reported at that byte.
func TestBlock(t *testing.T) {
	for _, tc := range []struct {
		n       uint64
		in      string
		payload string
		rest    string
		bad     bool
	}{
		{n: 5, in: "hello\r\nNEXT", payload: "hello", rest: "NEXT"},
		{n: 0, in: "\r\nNEXT", rest: "NEXT"},
		{n: 3, in: "abc\rX", payload: "abc", rest: "X", bad: true},
		{n: 3, in: "abcX", payload: "abc", rest: "X", bad: true},
	} {
		for split := 0; split <= len(tc.in); split++ {
			var b Block
			b.Start(tc.n)
			var payload, rest string
			var done, bad bool
			for _, chunk := range []string{tc.in[:split], tc.in[split:]} {
				if done || bad || chunk == "" {
					rest += chunk
					continue
				}
				pl, r, d, bd := b.Take([]byte(chunk))
				payload += string(pl)
				rest += string(r)
				done, bad = d, bd
			}
			if payload != tc.payload || rest != tc.rest || bad != tc.bad || done == tc.bad {
				t.Errorf("%q (n %d) split at %d: payload %q rest %q done %v bad %v; want %q %q bad %v",
					tc.in, tc.n, split, payload, rest, done, bad, tc.payload, tc.rest, tc.bad)
			}
		}
	}
}
