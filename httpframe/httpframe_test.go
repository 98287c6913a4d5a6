package httpframe

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// want is the end state of a framer after a stream (and, for responses,
// EOF when eof is set).
type want = snapshot

var ok1 = want{final: 1, idle: true}

var responseCases = []struct {
	name    string
	methods string // one letter a request: G(ET), H(EAD), C(ONNECT), P(OST)
	data    string
	eof     bool
	want    want
}{
	{"nginx 200", "G", seedResponses[0].data, false, ok1},
	{"keep-alive 304 404 204", "GGG", seedResponses[1].data, false, want{final: 3, idle: true}},
	{"304 ignores Content-Length", "GG", crlf("HTTP/1.1 304 Not Modified\nContent-Length: 50\n\nHTTP/1.1 200 OK\nContent-Length: 1\n\nx"), false, want{final: 2, idle: true}},
	{"204 ignores Content-Length", "GG", crlf("HTTP/1.1 204 No Content\nContent-Length: 5\n\nHTTP/1.1 200 OK\nContent-Length: 0\n\n"), false, want{final: 2, idle: true}},
	{"HEAD ignores Content-Length", "HG", seedResponses[5].data, false, want{final: 2, idle: true}},
	{"HEAD ignores chunked", "H", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n"), false, ok1},
	{"chunked, extensions, trailers", "G", seedResponses[2].data, false, ok1},
	{"chunked, bare trailer LF", "G", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n0\n") + "X: y\n\n", false, ok1},
	{"chunked wins over Content-Length", "G", seedResponses[11].data, false, ok1},
	{"chunked last of gzip, chunked", "G", seedResponses[15].data, false, ok1},
	{"chunked in two fields", "G", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: gzip\nTransfer-Encoding: Chunked\n\n0\n\n"), false, ok1},
	{"chunk size upper-case hex, BWS", "G", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\nA ; x=\"y\"\n") + "0123456789" + crlf("\n0\n\n"), false, ok1},
	{"gzip not chunked: until close", "G", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: gzip\n\nabc"), false, want{until: true}},
	{"no length: until close", "G", seedResponses[9].data, false, want{until: true}},
	{"no length: complete at EOF", "G", seedResponses[9].data, true, ok1},
	{"100 Continue", "PG", seedResponses[3].data, false, want{final: 2, interim: 1, idle: true}},
	{"103 Early Hints", "G", seedResponses[4].data, false, want{final: 1, interim: 1, idle: true}},
	{"101 switches", "G", seedResponses[6].data, false, want{final: 1, err: ErrSwitched}},
	{"CONNECT 200 switches", "C", seedResponses[7].data, false, want{final: 1, err: ErrSwitched}},
	{"CONNECT 407 does not", "CG", seedResponses[8].data, false, want{final: 1, until: true}},
	{"GET 200 without length after CONNECT 407", "CG", seedResponses[8].data, true, want{final: 2, idle: true}},
	{"same Content-Length twice", "G", seedResponses[10].data, false, ok1},
	{"conflicting Content-Length", "G", crlf("HTTP/1.1 200 OK\nContent-Length: 5\nContent-Length: 6\n\nabcdef"), false, want{err: ErrMalformed}},
	{"Content-Length list", "G", crlf("HTTP/1.1 200 OK\nContent-Length: 5, 5\n\nabcde"), false, want{err: ErrMalformed}},
	{"Content-Length empty", "G", crlf("HTTP/1.1 200 OK\nContent-Length:\n\n"), false, want{err: ErrMalformed}},
	{"Content-Length sign", "G", crlf("HTTP/1.1 200 OK\nContent-Length: +5\n\nabcde"), false, want{err: ErrMalformed}},
	{"Content-Length over 2^63-1", "G", crlf("HTTP/1.1 200 OK\nContent-Length: 9223372036854775808\n\n"), false, want{err: ErrMalformed}},
	{"Content-Length 2^63-1", "G", crlf("HTTP/1.1 200 OK\nContent-Length: 9223372036854775807\n\nabc"), false, want{}},
	{"bare LF lines", "G", seedResponses[13].data, false, ok1},
	{"empty lines between responses", "GG", crlf("HTTP/1.1 200 OK\nContent-Length: 1\n\nx\n\nHTTP/1.1 200 OK\nContent-Length: 0\n\n"), false, want{final: 2, idle: true}},
	{"folded ordinary field", "G", seedResponses[14].data, false, ok1},
	{"folded Content-Length", "G", crlf("HTTP/1.1 200 OK\nContent-Length:\n 1\n\nx"), false, want{err: ErrAmbiguous}},
	{"folded empty Content-Length", "G", "HTTP/1.0 000 \nContent-Length:\n 0\n\n00000", false, want{err: ErrAmbiguous}},
	{"bad Content-Length, then a field", "G", crlf("HTTP/1.1 200 OK\nContent-Length: x\nServer: y\n\n"), false, want{err: ErrMalformed}},
	{"space before colon", "G", seedResponses[19].data, false, want{err: ErrAmbiguous}},
	{"space in another name", "G", crlf("HTTP/1.1 200 OK\nX Y: z\nContent-Length: 0\n\n"), false, ok1},
	{"folded first field", "G", crlf("HTTP/1.1 200 OK\n X: y\n\n"), false, want{err: ErrMalformed}},
	{"Transfer-Encoding in HTTP/1.0", "G", crlf("HTTP/1.0 200 OK\nTransfer-Encoding: chunked\n\n0\n\n"), false, want{err: ErrAmbiguous}},
	{"HTTP/2.0", "G", seedResponses[18].data, false, want{err: ErrVersion}},
	{"HTTP/1.1 status without reason", "G", crlf("HTTP/1.1 200\nContent-Length: 0\n\n"), false, ok1},
	{"status with two spaces", "G", crlf("HTTP/1.1  200 OK\nContent-Length: 0\n\n"), false, ok1},
	{"status of four digits", "G", crlf("HTTP/1.1 2000 OK\n\n"), false, want{err: ErrMalformed}},
	{"lower-case version", "G", crlf("http/1.1 200 OK\n\n"), false, want{err: ErrMalformed}},
	{"zeros", "G", seedResponses[17].data, false, want{err: ErrMalformed}},
	{"zeros in a field", "G", "HTTP/1.1 200 OK\r\nX: \x00\x00\x00", false, want{err: ErrMalformed}},
	{"zeros as chunk size", "G", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n") + "\x00\x00\x00", false, want{err: ErrMalformed}},
	{"zeros as body", "G", crlf("HTTP/1.1 200 OK\nContent-Length: 4\n\n") + "\x00\x00\x00\x00", false, ok1},
	{"bad chunk size", "G", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\nzz\n"), false, want{err: ErrMalformed}},
	{"chunk size of 17 digits", "G", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n00000000000000001\n"), false, want{err: ErrMalformed}},
	{"chunk size line with bare LF", "G", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n") + "1\nx\r\n0\r\n\r\n", false, want{err: ErrMalformed}},
	{"chunk data without CRLF", "G", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n1\n") + "xy\r\n0\r\n\r\n", false, want{err: ErrMalformed}},
	{"TLS", "G", "\x16\x03\x03\x00\x2a\x02\x00\x00\x26\x03\x03", false, want{err: ErrMalformed}},
	{"truncated header", "G", "HTTP/1.1 200 OK\r\nContent-Le", false, want{}},
	{"truncated body", "G", crlf("HTTP/1.1 200 OK\nContent-Length: 3\n\nab"), true, want{}},
	{"truncated chunked", "G", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nab"), false, want{}},
	{"partial next status line", "GG", crlf("HTTP/1.1 200 OK\nContent-Length: 0\n\nHTTP/1."), false, want{final: 1}},
	{"unsolicited response", "", crlf("HTTP/1.1 408 Request Timeout\nContent-Length: 0\nConnection: close\n\n"), false, ok1},
	{"long header block", "G", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Long: "+strings.Repeat("a", 1000)+"\r\n", 66) + "\r\n", false, want{err: ErrTooLong}},
	{"long line", "G", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", MaxHeader), false, want{err: ErrTooLong}},
	{"long chunk extension", "G", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n") + "1;" + strings.Repeat("e", MaxHeader), false, want{err: ErrTooLong}},
}

func TestResponses(t *testing.T) {
	for _, c := range responseCases {
		t.Run(c.name, func(t *testing.T) {
			got, err := runResponses(methodsOf(c.methods), []byte(c.data), c.eof)
			if err != nil {
				t.Fatal(err)
			}
			if got.snap != c.want {
				t.Fatalf("got %v (%s), want %v", got.snap, got.why, c.want)
			}
			if err := checkResponses(c.methods, []byte(c.data)); err != nil {
				t.Errorf("against net/http: %v", err)
			}
		})
	}
}

var requestCases = []struct {
	name string
	data string
	want want
}{
	{"GET", seedRequests[0], ok1},
	{"pipelined", seedRequests[1], want{final: 3, idle: true}},
	{"POST Content-Length then GET", seedRequests[2], want{final: 2, idle: true}},
	{"chunked with trailer", seedRequests[3], ok1},
	{"Expect 100-continue", seedRequests[4], ok1},
	{"Expect 100-continue, body not sent yet", crlf("PUT /big HTTP/1.1\nHost: x\nExpect: 100-continue\nContent-Length: 5\n\n"), want{}},
	{"CONNECT", seedRequests[5], ok1},
	{"upgrade", seedRequests[6], ok1},
	{"HTTP/1.0", seedRequests[7], ok1},
	{"bare LF", seedRequests[8], ok1},
	{"CRLF after a body", seedRequests[9], want{final: 2, idle: true}},
	{"POST without length has no body", crlf("POST / HTTP/1.1\nHost: x\n\nGET / HTTP/1.1\n\n"), want{final: 2, idle: true}},
	{"conflicting Content-Length", seedRequests[10], want{err: ErrMalformed}},
	{"Transfer-Encoding in HTTP/1.0", seedRequests[11], want{err: ErrAmbiguous}},
	{"Transfer-Encoding gzip", crlf("POST / HTTP/1.1\nTransfer-Encoding: gzip\n\n"), want{err: ErrMalformed}},
	{"HTTP/2 preface", seedRequests[12], want{err: ErrVersion}},
	{"TLS", seedRequests[13], want{err: ErrMalformed}},
	{"zeros", seedRequests[14], want{err: ErrMalformed}},
	{"many fields", seedRequests[15], ok1},
	{"lower-case method is a method", crlf("get / HTTP/1.1\n\n"), ok1},
	{"bad method byte", crlf("GE\"T / HTTP/1.1\n\n"), want{err: ErrMalformed}},
	{"no version", crlf("GET /\n\n"), want{err: ErrMalformed}},
	{"empty target", crlf("GET  HTTP/1.1\n\n"), want{err: ErrMalformed}},
	{"control byte in target", "GET /\x01 HTTP/1.1\r\n\r\n", want{err: ErrMalformed}},
	{"space in target", crlf("GET /a b HTTP/1.1\n\n"), want{err: ErrMalformed}},
	{"trailing space after version", crlf("GET / HTTP/1.1 \n\n"), want{err: ErrMalformed}},
	{"SMTP", crlf("EHLO example.com\n"), want{err: ErrMalformed}},
	{"partial request line", "GET /index.ht", want{}},
	{"long target", "GET /" + strings.Repeat("a", 1000) + " HTTP/1.1\r\n\r\n", ok1},
	{"long target, control byte past the checked prefix", "GET /" + strings.Repeat("a", 300) + "\x00 HTTP/1.1\r\n\r\n", want{err: ErrMalformed}},
	{"long request line", "GET /" + strings.Repeat("a", MaxHeader), want{err: ErrTooLong}},
}

func TestRequests(t *testing.T) {
	for _, c := range requestCases {
		t.Run(c.name, func(t *testing.T) {
			got, err := runRequests([]byte(c.data))
			if err != nil {
				t.Fatal(err)
			}
			if got.snap != c.want {
				t.Fatalf("got %v (%s), want %v", got.snap, got.why, c.want)
			}
			if err := checkRequests([]byte(c.data)); err != nil {
				t.Errorf("against net/http: %v", err)
			}
		})
	}
}

// TestEverySplit cuts a few streams in two and in three at every position:
// the framer must end the same way as when fed whole.
func TestEverySplit(t *testing.T) {
	resp := []byte(seedResponses[1].data + seedResponses[2].data + crlf("HTTP/1.1 100 Continue\n\n") + seedResponses[0].data)
	req := []byte(seedRequests[3] + seedRequests[2] + seedRequests[1])
	feedResp := func(chunks ...[]byte) snapshot {
		s := NewResponses(nil)
		for _, c := range chunks {
			s.Write(c)
		}
		return respSnap(s)
	}
	feedReq := func(chunks ...[]byte) snapshot {
		r := &Requests{}
		for _, c := range chunks {
			r.Write(c)
		}
		return reqSnap(r)
	}
	wantResp, wantReq := feedResp(resp), feedReq(req)
	if wantResp != (snapshot{final: 5, interim: 1, idle: true}) || wantReq != (snapshot{final: 6, idle: true}) {
		t.Fatalf("whole: %v, %v", wantResp, wantReq)
	}
	for i := range resp {
		if got := feedResp(resp[:i], resp[i:]); got != wantResp {
			t.Fatalf("responses cut at %d: %v", i, got)
		}
		for j := i; j < len(resp); j += 7 {
			if got := feedResp(resp[:i], resp[i:j], resp[j:]); got != wantResp {
				t.Fatalf("responses cut at %d and %d: %v", i, j, got)
			}
		}
	}
	for i := range req {
		if got := feedReq(req[:i], req[i:]); got != wantReq {
			t.Fatalf("requests cut at %d: %v", i, got)
		}
	}
}

// TestBoundaries checks, byte by byte, that each message is counted at its
// last byte and not before.
func TestBoundaries(t *testing.T) {
	msgs := []string{
		crlf("HTTP/1.1 100 Continue\n\n"),
		seedResponses[0].data,
		seedResponses[2].data,
		crlf("HTTP/1.1 204 No Content\n\n"),
		crlf("HTTP/1.1 200 OK\nContent-Length: 3\n\nabc"),
	}
	var ends []int
	var all string
	for _, m := range msgs {
		all += m
		ends = append(ends, len(all))
	}
	got, err := runResponses(nil, []byte(all), false)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.bounds) != fmt.Sprint(ends) {
		t.Fatalf("messages end at %v, want %v", got.bounds, ends)
	}
	if fmt.Sprint(got.interim) != "[true false false false false]" {
		t.Fatalf("interim %v", got.interim)
	}
}

func TestPairing(t *testing.T) {
	r := &Requests{}
	s := NewResponses(r)
	// Requests arrive (and are sent) one by one, each answered in turn;
	// a HEAD among them announces a length it does not send.
	turns := []struct{ req, resp string }{
		{"GET /a HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"HEAD /a HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"},
		{"POST /b HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n", "HTTP/1.1 100 Continue\r\n\r\n"},
		{"abc", "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"},
	}
	for i, turn := range turns {
		r.Write([]byte(turn.req))
		s.Write([]byte(turn.resp))
		if !s.Idle() || s.Opaque() {
			t.Fatalf("turn %d: responses %v", i, respSnap(s))
		}
	}
	if r.Complete() != 3 || s.Final() != 3 || s.Interim() != 1 {
		t.Fatalf("requests %v, responses %v", reqSnap(r), respSnap(s))
	}

	// Pipelined: three requests, then their answers.
	r = &Requests{}
	s = NewResponses(r)
	r.Write([]byte("HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\n\r\n"))
	s.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))
	if s.Final() != 3 || !s.Idle() {
		t.Fatalf("pipelined: %v", respSnap(s))
	}
}

func TestSwitchStopsRequests(t *testing.T) {
	r := &Requests{}
	s := NewResponses(r)
	r.Write([]byte(seedRequests[6]))
	s.Write([]byte(seedResponses[6].data))
	if !errors.Is(s.Err(), ErrSwitched) || s.Final() != 1 {
		t.Fatalf("responses %v", respSnap(s))
	}
	if !errors.Is(r.Err(), ErrSwitched) || r.Idle() {
		t.Fatalf("requests %v", reqSnap(r))
	}
	r.Write([]byte("GET / HTTP/1.1\r\n\r\n")) // websocket bytes that happen to look like HTTP
	if r.Complete() != 1 || !errors.Is(r.Err(), ErrSwitched) {
		t.Fatalf("requests after the switch %v", reqSnap(r))
	}
}

func TestUnpaired(t *testing.T) {
	// The client's bytes stop framing before its second request.
	r := &Requests{}
	s := NewResponses(r)
	r.Write([]byte("GET / HTTP/1.1\r\n\r\n\x16\x03\x01"))
	s.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"))
	if s.Final() != 1 || !errors.Is(s.Err(), ErrUnpaired) {
		t.Fatalf("%v", respSnap(s))
	}

	// More HEAD requests outstanding than remembered: those that fit
	// frame, then the framer gives up rather than guess.
	r = &Requests{}
	s = NewResponses(r)
	r.Write(bytes.Repeat([]byte("HEAD / HTTP/1.1\r\n\r\n"), maxSpecial+1))
	s.Write(bytes.Repeat([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), maxSpecial+1))
	if s.Final() != maxSpecial || !errors.Is(s.Err(), ErrUnpaired) {
		t.Fatalf("%v", respSnap(s))
	}
}

// TestHeadRingOnDemand: the ring remembering HEAD and CONNECT requests
// is made by the first of them; sessions that send none (most, and the
// idle ones kept by the thousand) do not carry it.
func TestHeadRingOnDemand(t *testing.T) {
	r := &Requests{}
	s := NewResponses(r)
	r.Write([]byte("GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"))
	if r.special != nil {
		t.Fatalf("GET and POST made the ring (%d entries)", len(r.special))
	}
	r.Write([]byte("HEAD / HTTP/1.1\r\n\r\n"))
	if len(r.special) != maxSpecial {
		t.Fatalf("after a HEAD the ring has %d entries, want %d", len(r.special), maxSpecial)
	}
	// The HEAD's answer still frames without a body.
	s.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"))
	if s.Final() != 3 || s.Err() != nil {
		t.Fatalf("%v", respSnap(s))
	}
}

func TestZerosFailAtOnce(t *testing.T) {
	r := &Requests{}
	r.Write([]byte{0})
	s := NewResponses(nil)
	s.Write([]byte{0})
	if !r.Opaque() || !s.Opaque() {
		t.Fatalf("one zero byte: %v, %v", reqSnap(r), respSnap(s))
	}
	// Zeros where a field line goes fail at their first byte too.
	s = NewResponses(nil)
	s.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"))
	s.Write([]byte{0})
	if !s.Opaque() {
		t.Fatal(respSnap(s))
	}
}

func TestBoundedMemory(t *testing.T) {
	s := NewResponses(nil)
	s.Write([]byte("HTTP/1.1 200 OK\r\nX: "))
	chunk := bytes.Repeat([]byte("a"), 1024)
	for i := 0; i < 100 && !s.Opaque(); i++ {
		s.Write(chunk)
		if len(s.f.buf) > MaxHeader {
			t.Fatalf("buffered %d bytes", len(s.f.buf))
		}
	}
	if !errors.Is(s.Err(), ErrTooLong) || s.f.buf != nil {
		t.Fatalf("%v, %d bytes kept", respSnap(s), cap(s.f.buf))
	}
	// A 1 GiB body is counted, not stored.
	s = NewResponses(nil)
	s.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n"))
	for i := 0; i < 1<<20; i++ {
		s.Write(chunk)
	}
	if s.Final() != 1 || !s.Idle() || cap(s.f.buf) > 64 {
		t.Fatalf("%v, buffer %d", respSnap(s), cap(s.f.buf))
	}
}

func TestEOF(t *testing.T) {
	s := NewResponses(nil)
	s.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"))
	s.EOF()
	if !s.Idle() || s.Final() != 1 {
		t.Fatal(respSnap(s))
	}
	s.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	if s.Final() != 1 {
		t.Fatalf("bytes after EOF counted: %v", respSnap(s))
	}
	s = NewResponses(nil)
	s.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nx"))
	s.EOF()
	if s.Idle() || s.Final() != 0 || s.Opaque() {
		t.Fatalf("truncated: %v", respSnap(s))
	}
}

func TestZeroValues(t *testing.T) {
	var r Requests
	var s Responses
	if !r.Idle() || r.Opaque() || r.Complete() != 0 || !s.Idle() || s.Opaque() || s.Final() != 0 {
		t.Fatalf("%v %v", reqSnap(&r), respSnap(&s))
	}
	s.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	if s.Final() != 1 {
		t.Fatal(respSnap(&s))
	}
}

func TestSniff(t *testing.T) {
	for _, c := range []struct {
		p    string
		want bool
	}{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"GET / HTTP/1.1", true},
		{"GET / HTTP/1.", true},
		{"GET / HTTP/1.1\r", true},
		{"G", true},
		{"GET /index.html?q=1", true},
		{"OPTIONS * HTTP/1.0\n", true},
		{"CONNECT example.com:443 HTTP/1.1\r\n", true},
		{"\r\nGET / HTTP/1.1\r\n", true},
		{"", false},
		{"\r\n", false},
		{"\r", false},
		{"GET / HTTP/2.0\r\n", false},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false},
		{"GET / HTTP/1.1 x\r\n", false},
		{"GET / HTTP/1.1x", false},
		{"GET /\r\n", false},
		{"GET\r\n", false},
		{" GET / HTTP/1.1", false},
		{"\x16\x03\x01\x02\x00", false},
		{"\x00\x00\x00", false},
		{"EHLO example.com\r\n", false},
		{"SSH-2.0-OpenSSH_9.6\r\n", false},
		{"*1\r\n$4\r\nPING\r\n", false},
	} {
		if got := Sniff([]byte(c.p)); got != c.want {
			t.Errorf("Sniff(%q) = %v, want %v", c.p, got, c.want)
		}
	}
}

// TestConcurrent feeds both sides from their own goroutines while a third
// polls, as the replayer would; run with -race.
func TestConcurrent(t *testing.T) {
	r := &Requests{}
	s := NewResponses(r)
	const n = 2000
	var wg sync.WaitGroup
	answered := make(chan int, 16) // at most a few HEADs outstanding, as in a replay that waits
	wg.Add(3)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			m := "GET"
			if i%3 == 0 {
				m = "HEAD"
			}
			fmt.Fprintf(r, "%s /%d HTTP/1.1\r\nHost: x\r\n\r\n", m, i)
			answered <- i
		}
		close(answered)
	}()
	go func() {
		defer wg.Done()
		for i := range answered {
			// The answer to a HEAD announces a body it does not send.
			if i%3 == 0 {
				s.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"))
			} else {
				s.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"))
			}
		}
	}()
	go func() {
		defer wg.Done()
		for s.Final() < n && !s.Opaque() {
			_ = r.Complete() + s.Interim()
			_ = r.Idle() && s.Idle() && s.UntilClose() && r.Opaque()
		}
	}()
	wg.Wait()
	if s.Final() != n || r.Complete() != n || !s.Idle() {
		t.Fatalf("requests %v, responses %v", reqSnap(r), respSnap(s))
	}
}

func TestSteadyStateAllocs(t *testing.T) {
	stream := []byte(strings.Repeat(seedResponses[0].data+seedResponses[2].data, 4))
	s := NewResponses(nil)
	feed := func() {
		for p := stream; len(p) > 0; {
			n := min(len(p), 1448)
			s.Write(p[:n])
			p = p[n:]
		}
	}
	feed() // the line buffer grows once
	if a := testing.AllocsPerRun(100, feed); a != 0 {
		t.Fatalf("%v allocations a stream", a)
	}
	if s.Opaque() || !s.Idle() {
		t.Fatal(respSnap(s))
	}
}
