package cmphttp

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/compare"
)

// testServer serves the routes the tests record, over HTTP/1.1 and, with
// h2c, HTTP/2 with prior knowledge too. It returns the base URL.
func testServer(t *testing.T, h2c bool) string {
	mux := http.NewServeMux()
	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"items":[{"name":"a","id":1},{"name":"b","id":2}],"total":2}`)
	})
	mux.HandleFunc("/users/{id}/orders", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "orders of "+r.PathValue("id"))
	})
	mux.HandleFunc("/trailers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "body")
		w.Header().Set("X-Checksum", "abc")
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/abort", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("/gzip", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		z := gzip.NewWriter(w)
		io.WriteString(z, `{"compressed":true}`)
		z.Close()
	})
	mux.HandleFunc("/cookie", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: fmt.Sprint(time.Now().UnixNano())})
		http.SetCookie(w, &http.Cookie{Name: "csrf", Value: "x"})
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			fmt.Fprintf(w, "part %d;", i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/etag", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		io.WriteString(w, "content")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("0123456789"), 10000))
	})
	srv := httptest.NewUnstartedServer(mux)
	if h2c {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		srv.Config.Protocols = &p
	}
	srv.Config.ErrorLog = nil
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

func do(t *testing.T, c *http.Client, req *http.Request) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// TestH1Real records a keep-alive connection of net/http's client and
// server: JSON, a path template, trailers, a 503, gzip, cookies, chunked,
// HEAD, a 304, a 100-continue upload and a large body.
func TestH1Real(t *testing.T) {
	base := testServer(t, false)
	rec := newRecorder(t, false)
	get := func(path string) { do(t, rec.client, must(http.NewRequest("GET", base+path, nil))) }
	get("/json")
	get("/users/42/orders?page=2")
	get("/trailers")
	get("/fail")
	get("/gzip")
	req := must(http.NewRequest("GET", base+"/cookie", nil))
	req.Header.Set("Authorization", "Bearer s3cret")
	req.Header.Set("Cookie", "id=hidden")
	do(t, rec.client, req)
	get("/chunked")
	do(t, rec.client, must(http.NewRequest("HEAD", base+"/big", nil)))
	req = must(http.NewRequest("GET", base+"/etag", nil))
	req.Header.Set("If-None-Match", `"v1"`)
	do(t, rec.client, req)
	req = must(http.NewRequest("POST", base+"/echo", strings.NewReader(strings.Repeat("u", 5000))))
	req.Header.Set("Expect", "100-continue")
	do(t, rec.client, req)
	get("/big")
	rec.client.Transport.(*http.Transport).CloseIdleConnections()
	if len(rec.conns) != 1 {
		t.Fatalf("%d connections", len(rec.conns))
	}
	recs := rec.log(0)
	lim := compare.DefaultLimits
	res := run(HTTP1(), lim, recs, 2, whole)
	keys := []string{"GET /json", "GET /users/{id}/orders", "GET /trailers", "GET /fail", "GET /gzip", "GET /cookie",
		"GET /chunked", "HEAD /big", "GET /etag", "POST /echo", "GET /big"}
	if len(res.reqs) != len(keys) || len(res.ans[0]) != len(keys) {
		t.Fatalf("requests and answers:\n%s", dump(res))
	}
	for i, r := range res.reqs {
		if r.ID != i || r.Key != keys[i] || r.Partial {
			t.Fatalf("request %d: %+v, want %s", i, r, keys[i])
		}
	}
	as := res.ans[0]
	for i, a := range as {
		if a.Req != i || a.Truncated || a.Malformed != "" {
			t.Fatalf("answer %d: %+v", i, a)
		}
	}
	checkFields(t, as)
	mustField(t, as[0], "status", "200")
	mustField(t, as[0], "header:content-type", "application/json")
	mustField(t, as[0], "json:$.items.length", "2")
	mustField(t, as[0], "json:$.items[0].name", `"a"`)
	mustField(t, as[0], "json:$.items[1].id", "2")
	mustField(t, as[0], "json:$.total", "2")
	if _, ok := field(as[0], "body"); ok {
		t.Error("JSON answer with a body field")
	}
	mustField(t, as[1], "body", "orders of 42")
	mustField(t, as[2], "trailer:x-checksum", "abc")
	mustField(t, as[2], "body", "body")
	if _, ok := field(as[2], "header:transfer-encoding"); ok {
		t.Error("hop-by-hop field kept")
	}
	mustField(t, as[3], "status", "503")
	if !as[3].Error || as[0].Error {
		t.Error("Error not by status")
	}
	mustField(t, as[4], "json:$.compressed", "true")
	mustField(t, as[5], "header:set-cookie", "csrf; session")
	if strings.Contains(res.reqs[5].Sample, "s3cret") || strings.Contains(res.reqs[5].Sample, "hidden") || !strings.Contains(res.reqs[5].Sample, "Authorization: "+compare.Redacted) {
		t.Errorf("request sample not redacted: %q", res.reqs[5].Sample)
	}
	if strings.Contains(as[5].Sample, "session=") && !strings.Contains(as[5].Sample, "Set-Cookie: "+compare.Redacted) {
		t.Errorf("answer sample not redacted: %q", as[5].Sample)
	}
	mustField(t, as[6], "body", "part 0;part 1;part 2;")
	mustField(t, as[7], "body", "")
	mustField(t, as[8], "status", "304")
	mustField(t, as[9], "body", "5000")
	mustField(t, as[10], "body", compare.Digest(bytes.Repeat([]byte("0123456789"), 10000)))
	// Two Answers of the same bytes agree; any cutting gives the same.
	if !equalAnswers(res.ans[0], res.ans[1]) {
		t.Fatal("two Answers differ")
	}
	same(t, "bytewise", res, run(HTTP1(), lim, recs, 2, bytewise))
	// With secrets shown.
	lim.ShowSecrets = true
	res = run(HTTP1(), lim, recs, 1, whole)
	if !strings.Contains(res.reqs[5].Sample, "s3cret") || !strings.Contains(res.reqs[5].Sample, "hidden") {
		t.Errorf("ShowSecrets sample: %q", res.reqs[5].Sample)
	}
	// A body limit below the big body's size: the digest is the same,
	// taken from the hasher.
	lim = compare.Limits{Body: 1000, Sample: 100}
	res2 := run(HTTP1(), lim, recs, 1, whole)
	mustField(t, res2.ans[0][10], "body", compare.Digest(bytes.Repeat([]byte("0123456789"), 10000)))
	for _, r := range res2.reqs {
		if len(r.Sample) > 100+40 {
			t.Errorf("sample of %d bytes: %q", len(r.Sample), r.Sample)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestH1Pipelined: raw pipelined requests in one write, answered in
// order by net/http's server.
func TestH1Pipelined(t *testing.T) {
	base := testServer(t, false)
	addr := strings.TrimPrefix(base, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reqs := "GET /json HTTP/1.1\r\nHost: x\r\n\r\n" +
		"HEAD /big HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
		"GET /users/7f3c9a2e-1d4b-4c8e-9a6f-0b1c2d3e4f5a/orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	c.Write([]byte(reqs))
	answers, _ := io.ReadAll(c)
	recs := []record{{true, []byte(reqs)}, {false, answers}}
	res := run(HTTP1(), compare.DefaultLimits, recs, 1, whole)
	keys := []string{"GET /json", "HEAD /big", "POST /echo", "GET /users/{id}/orders"}
	if len(res.reqs) != 4 || len(res.ans[0]) != 4 {
		t.Fatalf("%s", dump(res))
	}
	for i := range keys {
		if res.reqs[i].Key != keys[i] || res.ans[0][i].Req != i {
			t.Fatalf("%s", dump(res))
		}
	}
	mustField(t, res.ans[0][2], "body", "3")
	same(t, "bytewise", res, run(HTTP1(), compare.DefaultLimits, recs, 1, bytewise))
}

// h1 runs one raw client and server stream.
func h1(t *testing.T, lim compare.Limits, client, server string) result {
	t.Helper()
	recs := []record{{true, []byte(client)}, {false, []byte(server)}}
	res := run(HTTP1(), lim, recs, 1, whole)
	same(t, "bytewise", res, run(HTTP1(), lim, recs, 1, bytewise))
	checkFields(t, res.ans[0])
	return res
}

func TestH1Rules(t *testing.T) {
	lim := compare.DefaultLimits
	get := "GET / HTTP/1.1\r\nHost: h\r\n\r\n"

	t.Run("headers", func(t *testing.T) {
		res := h1(t, lim, get, "HTTP/1.1 200 OK\r\nVary: a\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-B: 1\r\nvary: b\r\nContent-Length: 0\r\n\r\n")
		a := res.ans[0][0]
		want := []compare.Field{{Name: "status", Value: "200"}, {Name: "header:content-length", Value: "0"}, {Name: "header:vary", Value: "a, b"}, {Name: "header:x-b", Value: "1"}, {Name: "body", Value: ""}}
		if fmt.Sprint(a.Fields) != fmt.Sprint(want) {
			t.Fatalf("fields %v, want %v", a.Fields, want)
		}
	})
	t.Run("interim", func(t *testing.T) {
		res := h1(t, lim, "POST /u HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\nx",
			"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
		if len(res.ans[0]) != 1 || res.ans[0][0].Size != len("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n") {
			t.Fatalf("%s", dump(res))
		}
		mustField(t, res.ans[0][0], "status", "204")
	})
	t.Run("101", func(t *testing.T) {
		res := h1(t, lim, "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
			"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello")
		if len(res.reqs) != 1 || len(res.ans[0]) != 1 || res.ans[0][0].Malformed != "" {
			t.Fatalf("%s", dump(res))
		}
		mustField(t, res.ans[0][0], "status", "101")
	})
	t.Run("close delimited", func(t *testing.T) {
		res := h1(t, lim, get, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
		if len(res.ans[0]) != 1 || res.ans[0][0].Truncated {
			t.Fatalf("%s", dump(res))
		}
		mustField(t, res.ans[0][0], "body", "until the end")
	})
	t.Run("truncated", func(t *testing.T) {
		res := h1(t, lim, get+get+get, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
		as := res.ans[0]
		if len(as) != 2 || as[0].Truncated || !as[1].Truncated || as[1].Req != 1 {
			t.Fatalf("%s", dump(res))
		}
		mustField(t, as[1], "body", "01234")
		res = h1(t, lim, get, "HTTP/1.1 200 OK\r\nContent-")
		if len(res.ans[0]) != 1 || !res.ans[0][0].Truncated || res.ans[0][0].Req != 0 {
			t.Fatalf("%s", dump(res))
		}
		res = h1(t, lim, get, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
		if len(res.ans[0]) != 1 || !res.ans[0][0].Truncated {
			t.Fatalf("%s", dump(res))
		}
	})
	t.Run("malformed", func(t *testing.T) {
		for _, server := range []string{
			"HTTP/1.1 abc\r\n\r\n",
			"\x00\x01binary",
			"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
			"HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", maxHeader) + "\r\n\r\n",
		} {
			res := h1(t, lim, get+get, server+"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
			if len(res.ans[0]) != 1 || res.ans[0][0].Malformed == "" || res.ans[0][0].Req != 0 {
				t.Fatalf("%q:\n%s", server, dump(res))
			}
		}
		res := h1(t, lim, "NOT HTTP\r\n\r\nGET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		if len(res.reqs) != 1 || res.reqs[0].Key != "(malformed)" || res.ans[0][0].Req != 0 {
			t.Fatalf("%s", dump(res))
		}
	})
	t.Run("partial request", func(t *testing.T) {
		res := h1(t, lim, "POST /a/1 HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", "")
		if len(res.reqs) != 1 || !res.reqs[0].Partial || res.reqs[0].Key != "POST /a/{id}" {
			t.Fatalf("%s", dump(res))
		}
		res = h1(t, lim, "GET /b/2 HTTP/1.1\r\nHost", "")
		if len(res.reqs) != 1 || !res.reqs[0].Partial || res.reqs[0].Key != "GET /b/{id}" {
			t.Fatalf("%s", dump(res))
		}
	})
	t.Run("json", func(t *testing.T) {
		body := `{"a.b":{"c":[]},"e":{},"s":"x\"y","n":1.50,"z":null,"arr":[3,1,2],"o":[{"k":2},{"k":1}]}`
		srv := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/problem+json; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		a := h1(t, lim, get, srv).ans[0][0]
		for name, want := range map[string]string{
			`json:$["a.b"].c.length`: "0", "json:$.e": "{}", "json:$.s": `"x\"y"`, "json:$.n": "1.50", "json:$.z": "null",
			"json:$.arr[0]": "3", "json:$.o[0].k": "2",
		} {
			mustField(t, a, name, want)
		}
		u := lim
		u.UnorderedArrays = true
		a = h1(t, u, get, srv).ans[0][0]
		mustField(t, a, "json:$.arr[0]", "1")
		mustField(t, a, "json:$.o[0].k", "1")
		// Reordered arrays compare equal when unordered.
		body2 := `{"o":[{"k":1},{"k":2}],"arr":[2,3,1],"n":1.50,"z":null,"s":"x\"y","e":{},"a.b":{"c":[]}}`
		srv2 := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body2), body2)
		b := h1(t, u, get, srv2).ans[0][0]
		if fmt.Sprint(a.Fields[3:]) != fmt.Sprint(b.Fields[3:]) {
			t.Fatalf("unordered:\n%v\n%v", a.Fields, b.Fields)
		}
		// Invalid JSON.
		a = h1(t, lim, get, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{\"a\":").ans[0][0]
		mustField(t, a, "body", `{"a":`)
		if _, ok := field(a, "body_json_error"); !ok {
			t.Fatal("no body_json_error")
		}
		// Many fields: capped, the rest one digest.
		var sb strings.Builder
		sb.WriteString("[")
		for i := range 3000 {
			if i > 0 {
				sb.WriteString(",")
			}
			fmt.Fprint(&sb, i)
		}
		sb.WriteString("]")
		a = h1(t, lim, get, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", sb.Len(), sb.String())).ans[0][0]
		if len(a.Fields) != 1+2+maxJSONFields+1 {
			t.Fatalf("%d fields", len(a.Fields))
		}
		mustField(t, a, "json:$.length", "3000")
		if v, _ := field(a, "json:(more)"); !strings.HasPrefix(v, "1001 fields len=") {
			t.Fatalf("json:(more) = %q", v)
		}
		// Deep nesting: bounded names.
		deep := strings.Repeat(`{"key":`, 200) + "1" + strings.Repeat("}", 200)
		a = h1(t, lim, get, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(deep), deep)).ans[0][0]
		for _, f := range a.Fields {
			if len(f.Name) > maxPath+100 {
				t.Fatalf("field name of %d bytes", len(f.Name))
			}
		}
		// A JSON body beyond Limits.Body is a digest.
		small := compare.Limits{Body: 10, Sample: 64}
		a = h1(t, small, get, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n[1,2,3,4,5,6,7,8,9,0]").ans[0][0]
		mustField(t, a, "body", compare.Digest([]byte("[1,2,3,4,5,6,7,8,9,0]")))
	})
	t.Run("gzip limits", func(t *testing.T) {
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		w.Write(bytes.Repeat([]byte("a"), 5000))
		w.Close()
		srv := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s", z.Len(), z.String())
		a := h1(t, lim, get, srv).ans[0][0]
		mustField(t, a, "body", compare.Digest(bytes.Repeat([]byte("a"), 5000)))
		// Decoded beyond Limits.Body: the compressed bytes.
		a = h1(t, compare.Limits{Body: 1000, Sample: 10}, get, srv).ans[0][0]
		mustField(t, a, "body", compare.Value(z.Bytes()))
	})
	t.Run("head", func(t *testing.T) {
		res := h1(t, lim, "HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
		if len(res.ans[0]) != 2 {
			t.Fatalf("%s", dump(res))
		}
		mustField(t, res.ans[0][0], "body", "")
		mustField(t, res.ans[0][1], "body", "hello")
	})
}

// TestH1ServerFirst: an answer whose request is not seen yet waits (it
// may answer a HEAD), then comes out when the request does.
func TestH1ServerFirst(t *testing.T) {
	c := HTTP1().New(compare.DefaultLimits)
	a := c.Answers()
	if got := a.Feed([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")); len(got) != 0 {
		t.Fatalf("answered before the request: %v", got)
	}
	c.Requests([]byte("HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"))
	got := a.Feed(nil)
	if len(got) != 2 {
		t.Fatalf("%v", got)
	}
	mustField(t, got[1], "body", "hello")
}

func TestTemplate(t *testing.T) {
	for in, want := range map[string]string{
		"/users/42/orders":       "/users/{id}/orders",
		"/users/42/orders?x=1#f": "/users/{id}/orders",
		"":                       "/",
		"*":                      "*",
		"http://h:80/a/1?q":      "/a/{id}",
		"http://h":               "/",
		"/o/7f3c9a2e-1d4b-4c8e-9a6f-0b1c2d3e4f5a": "/o/{id}",
		"/c/deadbeef12":                         "/c/{id}",
		"/c/deadbeef":                           "/c/deadbeef",
		"/t/abcDEF123456ghij":                   "/t/{id}",
		"/t/abcdefghijklmnop":                   "/t/abcdefghijklmnop",
		"/t/dGhpcyBpcyBhIHRva2VuXw":             "/t/{id}",
		"/t/eyJhbGciOiJIUzI1NiJ9-x_y":           "/t/{id}",
		"/api/getUserPreferencesSettings":       "/api/getUserPreferencesSettings",
		"/blog/my-very-long-article-title-here": "/blog/my-very-long-article-title-here",
		"/v1/static/app.js":                     "/v1/static/app.js",
		"/a//b/":                                "/a//b/",
	} {
		if got := pathTemplate(in); got != want {
			t.Errorf("pathTemplate(%q) = %q, want %q", in, got, want)
		}
	}
	if k := requestKey("GET", "/"+strings.Repeat("é", 300)); len(k) > maxKey+len("…") {
		t.Errorf("key of %d bytes", len(k))
	}
	if k := requestKey("CONNECT", "host:443"); k != "CONNECT {authority}" {
		t.Error(k)
	}
}

// TestDeepJSON: deeply nested arrays compared unordered take time linear
// in depth per level, not exponential.
func TestDeepJSON(t *testing.T) {
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	start := time.Now()
	fs, err := jsonFields([]byte(deep), true)
	if err != nil || len(fs) == 0 {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}
