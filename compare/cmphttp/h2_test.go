package cmphttp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/compare/cmptest"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// oracle reads a fixture with x/net/http2's Framer: for each client
// stream in opening order, its key; for each stream, the final status or
// the reset code.
type oracle struct {
	keys   []string
	stream []uint32
	status map[uint32]string
	rst    map[uint32]string
}

func readOracle(t *testing.T, recs []record) oracle {
	var cb, sb []byte
	for _, r := range recs {
		if r.client {
			cb = append(cb, r.b...)
		} else {
			sb = append(sb, r.b...)
		}
	}
	o := oracle{status: map[uint32]string{}, rst: map[uint32]string{}}
	cr := bufio.NewReader(bytes.NewReader(cb))
	if !bytes.HasPrefix(cb, []byte("PRI ")) {
		req, err := http.ReadRequest(cr)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, req.Body)
		o.keys = append(o.keys, req.Method+" "+pathTemplate(req.RequestURI))
		o.stream = append(o.stream, 1)
	}
	if _, err := io.ReadFull(cr, make([]byte, len(clientPreface))); err == nil {
		fr := http2.NewFramer(nil, cr)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				break
			}
			if h, ok := f.(*http2.MetaHeadersFrame); ok && (len(o.stream) == 0 || h.StreamID > o.stream[len(o.stream)-1]) {
				o.keys = append(o.keys, h.PseudoValue("method")+" "+pathTemplate(h.PseudoValue("path")))
				o.stream = append(o.stream, h.StreamID)
			}
		}
	}
	sr := bufio.NewReader(bytes.NewReader(sb))
	if bytes.HasPrefix(sb, []byte("HTTP/1.1")) {
		resp, err := http.ReadResponse(sr, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade answer %v %v", resp, err)
		}
	}
	fr := http2.NewFramer(nil, sr)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "" && s[0] != '1' {
				o.status[f.StreamID] = s
			}
		case *http2.RSTStreamFrame:
			o.rst[f.StreamID] = f.ErrCode.String()
		}
	}
	return o
}

// TestH2Fixtures decodes real captures of curl, nghttp and h2load against
// nghttpd and Go's h2c server, prior knowledge and upgrade, and checks
// them against x/net/http2's reading of the same bytes.
func TestH2Fixtures(t *testing.T) {
	names, _ := filepath.Glob("../../h2frame/testdata/*.h2")
	if len(names) == 0 {
		t.Fatal("no fixtures")
	}
	wantReqs := map[string]int{
		"curl-go-upgrade.h2": 1, "curl-go-upgrade-post.h2": 1, "nghttp-go-upgrade.h2": 2,
		"nghttp-go-multiplexed.h2": 5, "nghttp-go-post.h2": 1, "nghttp-nghttpd-multiplexed.h2": 4,
		"curl-nghttpd-prior.h2": 1, "h2load-nghttpd.h2": 60, "nghttp-nghttpd-upgrade.h2": 1,
	}
	for _, name := range names {
		t.Run(filepath.Base(name), func(t *testing.T) {
			recs := readFixture(t, name)
			o := readOracle(t, recs)
			res := run(HTTP2(), compare.DefaultLimits, recs, 2, whole)
			if want, ok := wantReqs[filepath.Base(name)]; !ok || len(res.reqs) != want {
				t.Fatalf("%d requests, want %d:\n%s", len(res.reqs), want, dump(res))
			}
			for i, r := range res.reqs {
				if r.ID != i || r.Key != o.keys[i] || r.Partial {
					t.Errorf("request %d: %+v, want key %q", i, r, o.keys[i])
				}
			}
			// nghttpd does not take the upgrade: its SETTINGS answer
			// nothing.
			wantAns := len(o.status) + len(o.rst)
			for s := range o.rst {
				if _, ok := o.status[s]; ok {
					wantAns--
				}
			}
			if len(res.ans[0]) != wantAns {
				t.Fatalf("%d answers, want %d:\n%s", len(res.ans[0]), wantAns, dump(res))
			}
			seen := map[int]bool{}
			for _, a := range res.ans[0] {
				if a.Req < 0 || a.Req >= len(o.stream) || seen[a.Req] || a.Malformed != "" || a.Truncated {
					t.Fatalf("answer %+v", a)
				}
				seen[a.Req] = true
				s := o.stream[a.Req]
				if st, ok := o.status[s]; ok {
					mustField(t, a, "status", st)
				}
				if code, ok := o.rst[s]; ok {
					mustField(t, a, "rst_stream", code)
					if !a.Error {
						t.Errorf("reset answer without Error")
					}
				}
			}
			checkFields(t, res.ans[0])
			// Production's bytes through two Answers: the same.
			if !equalAnswers(res.ans[0], res.ans[1]) {
				t.Fatalf("two Answers of the same bytes differ:\n%s", dump(res))
			}
			// Any cutting of the records gives the same.
			same(t, "bytewise", res, run(HTTP2(), compare.DefaultLimits, recs, 2, bytewise))
			rng := rand.New(rand.NewPCG(1, uint64(len(recs))))
			for range 10 {
				same(t, "random cuts", res, run(HTTP2(), compare.DefaultLimits, recs, 2, randomCuts(rng)))
			}
		})
	}
}

func equalAnswers(a, b []compare.Answer) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Req != b[i].Req || len(a[i].Fields) != len(b[i].Fields) {
			return false
		}
		for j := range a[i].Fields {
			if a[i].Fields[j] != b[i].Fields[j] {
				return false
			}
		}
	}
	return true
}

// TestH2ServerBytesFirst feeds all the server's bytes before the client's:
// the answers wait for the streams' requests and come out the same.
func TestH2ServerBytesFirst(t *testing.T) {
	for _, name := range []string{"nghttp-go-multiplexed.h2", "curl-go-upgrade-post.h2", "h2load-nghttpd.h2"} {
		recs := readFixture(t, "../../h2frame/testdata/"+name)
		want := run(HTTP2(), compare.DefaultLimits, recs, 1, whole)
		var reordered []record
		for _, r := range recs {
			if !r.client {
				reordered = append(reordered, r)
			}
		}
		for _, r := range recs {
			if r.client {
				reordered = append(reordered, r)
			}
		}
		c := HTTP2().New(compare.DefaultLimits)
		a := c.Answers()
		var got []compare.Answer
		for _, r := range reordered {
			if !r.client {
				got = append(got, a.Feed(r.b)...)
			}
		}
		for _, r := range reordered {
			if r.client {
				c.Requests(r.b)
			}
		}
		c.EndRequests()
		got = append(got, a.Feed(nil)...)
		got = cmptest.Detailed(append(got, a.End()...))
		if !sameSet(got, want.ans[0]) {
			t.Fatalf("%s: server first:\n%v\nwant\n%v", name, got, want.ans[0])
		}
	}
}

// sameSet says whether two answer lists hold the same answers, by request.
func sameSet(a, b []compare.Answer) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[int]compare.Answer{}
	for _, x := range a {
		m[x.Req] = x
	}
	for _, y := range b {
		if x, ok := m[y.Req]; !ok || !equalAnswers([]compare.Answer{x}, []compare.Answer{y}) {
			return false
		}
	}
	return true
}

// TestH2Real records net/http's HTTP/2 client (prior knowledge) against
// net/http's h2c server: JSON bodies, trailers, a reset, a 500 and
// concurrent streams.
func TestH2Real(t *testing.T) {
	srv := testServer(t, true)
	rec := newRecorder(t, true)
	get := func(path string) {
		resp, err := rec.client.Get(srv + path)
		if err != nil {
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get("/json")
	done := make(chan bool)
	paths := []string{"/users/42/orders", "/trailers", "/fail", "/abort", "/gzip"}
	for _, p := range paths {
		go func() { get(p); done <- true }()
	}
	for range paths {
		<-done
	}
	rec.client.Transport.(*http.Transport).CloseIdleConnections()
	recs := rec.log(0)
	res := run(HTTP2(), compare.DefaultLimits, recs, 2, whole)
	byKey := map[string]compare.Answer{}
	for _, a := range res.ans[0] {
		if a.Req < 0 {
			t.Fatalf("answer to no request: %+v", a)
		}
		byKey[res.reqs[a.Req].Key] = a
	}
	if len(res.reqs) != 6 || len(byKey) != 6 {
		t.Fatalf("requests and answers:\n%s", dump(res))
	}
	a := byKey["GET /json"]
	mustField(t, a, "status", "200")
	mustField(t, a, `json:$.items.length`, "2")
	mustField(t, a, `json:$.items[1].name`, `"b"`)
	a = byKey["GET /users/{id}/orders"]
	mustField(t, a, "status", "200")
	a = byKey["GET /trailers"]
	mustField(t, a, "trailer:x-checksum", "abc")
	a = byKey["GET /fail"]
	mustField(t, a, "status", "503")
	if !a.Error {
		t.Error("503 not an error")
	}
	a = byKey["GET /abort"]
	mustField(t, a, "rst_stream", "INTERNAL_ERROR")
	a = byKey["GET /gzip"]
	mustField(t, a, "json:$.compressed", "true")
	if !equalAnswers(res.ans[0], res.ans[1]) {
		t.Fatal("two Answers differ")
	}
	same(t, "bytewise", res, run(HTTP2(), compare.DefaultLimits, recs, 2, bytewise))
}

// frame builds one HTTP/2 frame.
func frame(typ, flags byte, stream uint32, payload []byte) []byte {
	b := []byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typ, flags}
	b = append(b, byte(stream>>24), byte(stream>>16), byte(stream>>8), byte(stream))
	return append(b, payload...)
}

func hpackBlock(fields ...string) []byte {
	var buf bytes.Buffer
	e := hpack.NewEncoder(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		e.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return buf.Bytes()
}

// TestH2Frames covers what the fixtures do not: padding and priority in
// HEADERS, CONTINUATION, interim 103, trailers, push promises, a reset
// before any HEADERS, oversized frames, and a truncated stream.
func TestH2Frames(t *testing.T) {
	settings := frame(fSettings, 0, 0, nil)
	client := []byte(clientPreface)
	client = append(client, settings...)
	req := hpackBlock(":method", "GET", ":scheme", "http", ":path", "/a/123?x=1", ":authority", "h")
	// Stream 1: padded and with priority.
	padded := append([]byte{3}, append(append([]byte{0, 0, 0, 0, 16}, req...), 0, 0, 0)...)
	client = append(client, frame(fHeaders, flagEndStream|flagEndHeaders|flagPadded|flagPriority, 1, padded)...)
	// Stream 3: a header block in a HEADERS and a CONTINUATION, body.
	req3 := hpackBlock(":method", "POST", ":scheme", "http", ":path", "/b", ":authority", "h", "authorization", "secret")
	client = append(client, frame(fHeaders, 0, 3, req3[:5])...)
	client = append(client, frame(fContinuation, flagEndHeaders, 3, req3[5:])...)
	client = append(client, frame(fData, flagPadded, 3, []byte{2, 'h', 'i', 0, 0})...)
	client = append(client, frame(fData, flagEndStream, 3, []byte("!"))...)
	// Stream 5: opened, answered by a reset, never ended by the client.
	client = append(client, frame(fHeaders, flagEndHeaders, 5, hpackBlock(":method", "PUT", ":scheme", "http", ":path", "/c", ":authority", "h"))...)

	var sbuf bytes.Buffer
	enc := hpack.NewEncoder(&sbuf)
	block := func(fields ...string) []byte {
		sbuf.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return bytes.Clone(sbuf.Bytes())
	}
	server := append([]byte(nil), settings...)
	server = append(server, frame(fHeaders, flagEndHeaders, 1, block(":status", "103", "link", "</s.css>"))...)
	server = append(server, frame(fHeaders, flagEndHeaders, 1, block(":status", "200", "content-type", "application/json", "set-cookie", "b=2", "set-cookie", "a=1"))...)
	server = append(server, frame(fPushPromise, flagEndHeaders, 1, append([]byte{0, 0, 0, 2}, block(":method", "GET", ":path", "/pushed", ":scheme", "http", ":authority", "h")...))...)
	server = append(server, frame(fData, 0, 1, []byte(`{"a":`))...)
	server = append(server, frame(fData, flagPadded, 1, append([]byte{4}, `[1,2]}`+"\x00\x00\x00\x00"...))...)
	server = append(server, frame(fHeaders, flagEndHeaders|flagEndStream, 1, block("x-trailer", "t"))...)
	server = append(server, frame(fHeaders, flagEndHeaders|flagEndStream, 2, block(":status", "200"))...)
	server = append(server, frame(fRSTStream, 0, 5, []byte{0, 0, 0, 7})...)
	server = append(server, frame(fHeaders, flagEndHeaders, 3, block(":status", "500"))...)
	server = append(server, frame(fData, 0, 3, []byte("partial"))...)

	recs := []record{{true, client}, {false, server}}
	res := run(HTTP2(), compare.DefaultLimits, recs, 1, whole)
	if len(res.reqs) != 3 || res.reqs[0].Key != "GET /a/{id}" || res.reqs[1].Key != "POST /b" || res.reqs[2].Key != "PUT /c" || !res.reqs[2].Partial {
		t.Fatalf("requests:\n%s", dump(res))
	}
	if !strings.Contains(res.reqs[1].Sample, "authorization: "+compare.Redacted) || strings.Contains(res.reqs[1].Sample, "secret") || !strings.Contains(res.reqs[1].Sample, "hi!") {
		t.Errorf("sample %q", res.reqs[1].Sample)
	}
	as := res.ans[0]
	if len(as) != 4 {
		t.Fatalf("answers:\n%s", dump(res))
	}
	a := as[0]
	if a.Req != 0 {
		t.Fatalf("first answer %+v", a)
	}
	mustField(t, a, "status", "200")
	mustField(t, a, "header:set-cookie", "a; b")
	mustField(t, a, "json:$.a[1]", "2")
	mustField(t, a, "trailer:x-trailer", "t")
	if _, ok := field(a, "header:link"); ok {
		t.Error("interim answer's fields kept")
	}
	if as[1].Req != -1 {
		t.Errorf("push answer %+v", as[1])
	}
	if as[2].Req != 2 || !as[2].Error {
		t.Errorf("reset answer %+v", as[2])
	}
	mustField(t, as[2], "rst_stream", "REFUSED_STREAM")
	if as[3].Req != 1 || !as[3].Truncated || !as[3].Error {
		t.Errorf("cut answer %+v", as[3])
	}
	same(t, "bytewise", res, run(HTTP2(), compare.DefaultLimits, recs, 1, bytewise))

	// A frame beyond the maximum frame size is malformed.
	big := append(append([]byte(nil), settings...), frame(fData, 0, 1, make([]byte, 20000))...)
	res = run(HTTP2(), compare.DefaultLimits, []record{{true, client}, {false, big}}, 1, whole)
	if n := len(res.ans[0]); n != 1 || !strings.Contains(res.ans[0][0].Malformed, "maximum frame size") {
		t.Fatalf("oversized frame:\n%s", dump(res))
	}
	// Unless the client allowed it.
	allow := []byte(clientPreface)
	allow = append(allow, frame(fSettings, 0, 0, []byte{0, 5, 0, 0, 0x80, 0})...)
	allow = append(allow, frame(fHeaders, flagEndStream|flagEndHeaders, 1, req)...)
	big = append(append([]byte(nil), settings...), frame(fHeaders, flagEndHeaders, 1, block(":status", "200"))...)
	big = append(big, frame(fData, flagEndStream, 1, make([]byte, 20000))...)
	res = run(HTTP2(), compare.DefaultLimits, []record{{true, allow}, {false, big}}, 1, whole)
	if len(res.ans[0]) != 1 || res.ans[0][0].Malformed != "" {
		t.Fatalf("allowed large frame:\n%s", dump(res))
	}
	mustField(t, res.ans[0][0], "body", compare.Digest(make([]byte, 20000)))
	// A bad hpack block.
	res = run(HTTP2(), compare.DefaultLimits, []record{{true, client}, {false, append(bytes.Clone(settings), frame(fHeaders, flagEndHeaders, 1, []byte{0xff, 0xff, 0xff, 0xff})...)}}, 1, whole)
	if len(res.ans[0]) != 1 || !strings.HasPrefix(res.ans[0][0].Malformed, "hpack") {
		t.Fatalf("bad hpack:\n%s", dump(res))
	}
	// Bad client frames: one request keyed (malformed) that nothing
	// answers.
	bad := []byte(clientPreface)
	bad = append(bad, frame(fContinuation, flagEndHeaders, 1, nil)...)
	res = run(HTTP2(), compare.DefaultLimits, []record{{true, bad}}, 1, whole)
	if len(res.reqs) != 1 || res.reqs[0].Key != "(malformed)" || !res.reqs[0].NoAnswer {
		t.Fatalf("bad frames:\n%s", dump(res))
	}
	// A bad preface is not HTTP/2, and not HTTP/1 either.
	res = run(HTTP2(), compare.DefaultLimits, []record{{true, []byte("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")}}, 1, whole)
	if len(res.reqs) != 1 || res.reqs[0].Key != "(malformed)" {
		t.Fatalf("bad preface:\n%s", dump(res))
	}
}

// TestH2Fallback: an HTTP2 conversation whose client speaks plain HTTP/1,
// or whose upgrade the server declines, is decoded as HTTP/1.
func TestH2Fallback(t *testing.T) {
	plain := []record{
		{true, []byte("GET /x/1 HTTP/1.1\r\nHost: h\r\n\r\n")},
		{false, []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")},
		{true, []byte("POST /y HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nz")},
		{false, []byte("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")},
	}
	declined := []record{
		{true, []byte("GET /up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")},
		{false, []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")},
		{true, []byte("POST /y HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nz")},
		{false, []byte("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")},
	}
	for i, recs := range [][]record{plain, declined} {
		res := run(HTTP2(), compare.DefaultLimits, recs, 1, whole)
		if len(res.reqs) != 2 || len(res.ans[0]) != 2 || res.ans[0][1].Req != 1 {
			t.Fatalf("case %d:\n%s", i, dump(res))
		}
		mustField(t, res.ans[0][0], "status", "200")
		mustField(t, res.ans[0][1], "status", "201")
		same(t, "bytewise", res, run(HTTP2(), compare.DefaultLimits, recs, 1, bytewise))
	}
}

var _ = errors.New
var _ = strconv.Itoa
