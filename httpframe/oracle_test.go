package httpframe

// The oracle: net/http frames the same bytes, and the framers must agree
// with it wherever it accepts them. Shared by the fuzzers and the table
// tests.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
)

// goMsg is one message net/http read completely.
type goMsg struct {
	end      int  // offset just past it
	interim  bool // a 1xx response other than 101
	switched bool // 101, or 2xx to CONNECT: net/http's framing is not followed past its header
}

// goResult is how far net/http got through a stream.
type goResult struct {
	msgs []goMsg
	// Why it stopped after msgs: clean (every byte consumed at a message
	// boundary), truncated (the data ended inside the next message), or
	// neither: it rejected the next message, or a switch ended framing.
	clean, truncated bool
	err              error
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// goRequests frames data with http.ReadRequest, reading bodies fully.
func goRequests(data []byte) (res goResult) {
	rd := bytes.NewReader(data)
	br := bufio.NewReader(rd)
	pos := func() int { return len(data) - rd.Len() - br.Buffered() }
	for {
		if _, err := br.Peek(1); err != nil {
			res.clean = true
			return res
		}
		req, err := http.ReadRequest(br)
		if err == nil {
			_, err = io.Copy(io.Discard, req.Body)
		}
		if err != nil {
			res.truncated, res.err = isEOF(err), err
			return res
		}
		res.msgs = append(res.msgs, goMsg{end: pos()})
	}
}

// goResponses frames data with http.ReadResponse, the n-th final response
// answering methods[n] (GET past its end), reading bodies fully (to EOF
// when delimited by the close).
func goResponses(methods []string, data []byte) (res goResult) {
	rd := bytes.NewReader(data)
	br := bufio.NewReader(rd)
	pos := func() int { return len(data) - rd.Len() - br.Buffered() }
	final := 0
	for {
		if _, err := br.Peek(1); err != nil {
			res.clean = true
			return res
		}
		m := "GET"
		if final < len(methods) {
			m = methods[final]
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			res.truncated, res.err = isEOF(err), err
			return res
		}
		code := resp.StatusCode
		if code == 101 || (m == "CONNECT" && code/100 == 2) {
			res.msgs = append(res.msgs, goMsg{end: pos(), switched: true})
			return res
		}
		_, err = io.Copy(io.Discard, resp.Body)
		if err != nil {
			res.truncated, res.err = isEOF(err), err
			return res
		}
		msg := goMsg{end: pos(), interim: code >= 100 && code <= 199}
		res.msgs = append(res.msgs, msg)
		if !msg.interim {
			final++
		}
	}
}

// frameResult is what a framer reported over a stream.
type frameResult struct {
	bounds  []int  // offsets just past each message it completed
	interim []bool // per message: an interim response
	snap    snapshot
	why     string
}

type snapshot struct {
	final, interim int
	idle, until    bool
	err            error
}

func (s snapshot) String() string {
	return fmt.Sprintf("final=%d interim=%d idle=%v untilClose=%v err=%v", s.final, s.interim, s.idle, s.until, s.err)
}

func reqSnap(r *Requests) snapshot {
	return snapshot{final: r.Complete(), idle: r.Idle(), err: r.Err()}
}

func respSnap(s *Responses) snapshot {
	return snapshot{final: s.Final(), interim: s.Interim(), idle: s.Idle(), until: s.UntilClose(), err: s.Err()}
}

// methodsOf turns a fuzzer's string into request methods, one a byte.
func methodsOf(sel string) []string {
	var ms []string
	for i := 0; i < len(sel) && i < 16; i++ {
		switch sel[i] {
		case 'H':
			ms = append(ms, "HEAD")
		case 'C':
			ms = append(ms, "CONNECT")
		case 'P':
			ms = append(ms, "POST")
		default:
			ms = append(ms, "GET")
		}
	}
	return ms
}

// pairedRequests returns a Requests fed one bodiless request per method.
func pairedRequests(methods []string) *Requests {
	r := &Requests{}
	for _, m := range methods {
		target := "/"
		if m == "CONNECT" {
			target = "example.com:443"
		}
		fmt.Fprintf(r, "%s %s HTTP/1.1\r\nHost: example.com\r\n\r\n", m, target)
	}
	return r
}

// splits returns the chunks of data for a feed: one byte at a time
// (seed 0), whole (seed 1), or random cuts.
func splits(data []byte, seed uint64) [][]byte {
	var out [][]byte
	switch seed {
	case 0:
		for i := range data {
			out = append(out, data[i:i+1])
		}
		return out
	case 1:
		return [][]byte{data}
	}
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	for len(data) > 0 {
		n := 1 + rng.IntN(min(len(data), 1+rng.IntN(64)))
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

func seedOf(data []byte) uint64 {
	h := fnv.New64a()
	h.Write(data)
	return h.Sum64() | 2
}

// runResponses feeds data byte by byte to a Responses paired with
// methods, then EOF, recording where messages end; then checks that other
// splits of the same data end in the same state.
func runResponses(methods []string, data []byte, eof bool) (res frameResult, err error) {
	s := NewResponses(pairedRequests(methods))
	count := func() (int, int) { return s.Final(), s.Interim() }
	for i := range data {
		f0, i0 := count()
		s.Write(data[i : i+1])
		f1, i1 := count()
		switch {
		case f1 == f0+1 && i1 == i0:
			res.bounds, res.interim = append(res.bounds, i+1), append(res.interim, false)
		case i1 == i0+1 && f1 == f0:
			res.bounds, res.interim = append(res.bounds, i+1), append(res.interim, true)
		case f1 != f0 || i1 != i0:
			return res, fmt.Errorf("one byte (offset %d) moved the counts from %d/%d to %d/%d", i, f0, i0, f1, i1)
		}
	}
	if eof {
		f0, _ := count()
		s.EOF()
		if f1, _ := count(); f1 != f0 {
			res.bounds, res.interim = append(res.bounds, len(data)), append(res.interim, false)
		}
	}
	res.snap, res.why = respSnap(s), s.f.why
	for _, seed := range []uint64{1, seedOf(data), seedOf(data) + 2} {
		s := NewResponses(pairedRequests(methods))
		for _, c := range splits(data, seed) {
			if n, err := s.Write(c); n != len(c) || err != nil {
				return res, fmt.Errorf("Write = %d, %v", n, err)
			}
		}
		if eof {
			s.EOF()
		}
		if got := respSnap(s); got != res.snap {
			return res, fmt.Errorf("split %d ends in %v, byte by byte in %v", seed, got, res.snap)
		}
	}
	return res, nil
}

// runRequests is runResponses for requests.
func runRequests(data []byte) (res frameResult, err error) {
	r := &Requests{}
	for i := range data {
		c0 := r.Complete()
		r.Write(data[i : i+1])
		switch c1 := r.Complete(); c1 {
		case c0:
		case c0 + 1:
			res.bounds, res.interim = append(res.bounds, i+1), append(res.interim, false)
		default:
			return res, fmt.Errorf("one byte (offset %d) moved the count from %d to %d", i, c0, c1)
		}
	}
	res.snap, res.why = reqSnap(r), r.f.why
	for _, seed := range []uint64{1, seedOf(data), seedOf(data) + 2} {
		r := &Requests{}
		for _, c := range splits(data, seed) {
			if n, err := r.Write(c); n != len(c) || err != nil {
				return res, fmt.Errorf("Write = %d, %v", n, err)
			}
		}
		if got := reqSnap(r); got != res.snap {
			return res, fmt.Errorf("split %d ends in %v, byte by byte in %v", seed, got, res.snap)
		}
	}
	return res, nil
}

// lenient reports whether a framer may go Opaque with err on a message
// net/http accepts. Each is a deliberate strictness, narrow and documented
// at the error:
//   - ErrVersion: net/http parses any "HTTP/d.d" start line.
//   - ErrTooLong: net/http's ReadRequest/ReadResponse have no header bound.
//   - ErrAmbiguous: net/http joins a folded framing field, takes
//     "Content-Length :" for another field, ignores Transfer-Encoding in
//     HTTP/1.0.
//   - ErrUnpaired: more HEAD/CONNECT requests outstanding than remembered.
func lenient(err error) bool {
	return errors.Is(err, ErrVersion) || errors.Is(err, ErrTooLong) ||
		errors.Is(err, ErrAmbiguous) || errors.Is(err, ErrUnpaired)
}

// agree checks a framer's result against net/http's on the same bytes.
func agree(got frameResult, want goResult) error {
	for i, m := range want.msgs {
		if i >= len(got.bounds) {
			if got.snap.err != nil && lenient(got.snap.err) {
				return nil // stopped, allowed, before net/http did
			}
			return fmt.Errorf("net/http read message %d (ending at %d), the framer did not (%v, %s)", i, m.end, got.snap, got.why)
		}
		if got.bounds[i] != m.end || got.interim[i] != m.interim {
			return fmt.Errorf("message %d: net/http ends it at %d (interim %v), the framer at %d (interim %v)", i, m.end, m.interim, got.bounds[i], got.interim[i])
		}
		if m.switched {
			if len(got.bounds) != i+1 || !errors.Is(got.snap.err, ErrSwitched) {
				return fmt.Errorf("message %d switches protocols; framer: %d messages, %v", i, len(got.bounds), got.snap)
			}
			return nil
		}
	}
	k := len(want.msgs)
	switch {
	case want.clean:
		if len(got.bounds) != k || got.snap.err != nil || !got.snap.idle {
			if got.snap.err != nil && lenient(got.snap.err) {
				return nil
			}
			return fmt.Errorf("net/http read %d messages and every byte; framer: %d messages, %v (%s)", k, len(got.bounds), got.snap, got.why)
		}
	case want.truncated:
		if len(got.bounds) != k || got.snap.idle {
			return fmt.Errorf("net/http read %d messages, then the data ended inside one (%v); framer: %d messages, %v (%s)", k, want.err, len(got.bounds), got.snap, got.why)
		}
	}
	return nil
}

// checkResponses is the differential check on one response stream.
func checkResponses(sel string, data []byte) error {
	methods := methodsOf(sel)
	got, err := runResponses(methods, data, true)
	if err != nil {
		return err
	}
	if err := agree(got, goResponses(methods, data)); err != nil {
		return fmt.Errorf("methods %q: %w", methods, err)
	}
	return nil
}

// checkRequests is the differential check on one request stream.
func checkRequests(data []byte) error {
	got, err := runRequests(data)
	if err != nil {
		return err
	}
	return agree(got, goRequests(data))
}

// crlf turns a readable message with "\n" line ends into the wire form.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
