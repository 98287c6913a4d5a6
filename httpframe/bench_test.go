package httpframe

import (
	"fmt"
	"strings"
	"testing"
)

// keepAlive is a keep-alive stream of typical answers: nginx static files,
// a 304, a chunked API answer, a 404 page.
func keepAlive() (stream []byte, responses int) {
	page := strings.Repeat("<p>lorem ipsum dolor sit amet</p>\n", 18) // 612 bytes, nginx's index.html size
	hdr := "HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: %d\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"65920080-264\"\r\nAccept-Ranges: bytes\r\n\r\n"
	var b strings.Builder
	for range 8 {
		fmt.Fprintf(&b, hdr, len(page))
		b.WriteString(page)
		b.WriteString("HTTP/1.1 304 Not Modified\r\nServer: nginx/1.24.0\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"65920080-264\"\r\n\r\n")
		b.WriteString("HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n1a\r\n{\"id\":1,\"name\":\"example\"}\n\r\n2\r\n[]\r\n0\r\n\r\n")
		b.WriteString("HTTP/1.1 404 Not Found\r\nServer: nginx/1.24.0\r\nContent-Type: text/html\r\nContent-Length: 153\r\nConnection: keep-alive\r\n\r\n")
		b.WriteString(strings.Repeat("x", 153))
		responses += 4
	}
	return []byte(b.String()), responses
}

// BenchmarkResponses feeds the stream as 1448-byte segments (a TCP MSS),
// so header lines are split across writes as they are on the wire. One op
// is one response.
func BenchmarkResponses(b *testing.B) {
	stream, n := keepAlive()
	s := NewResponses(nil)
	b.SetBytes(int64(len(stream) / n))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += n {
		for p := stream; len(p) > 0; {
			k := min(len(p), 1448)
			s.Write(p[:k])
			p = p[k:]
		}
	}
	b.StopTimer()
	if s.Opaque() || !s.Idle() {
		b.Fatal(respSnap(s))
	}
}

// BenchmarkRequests is the same for a keep-alive stream of browser-like
// requests.
func BenchmarkRequests(b *testing.B) {
	req := "GET /static/app.js?v=123 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nReferer: https://www.example.com/\r\nConnection: keep-alive\r\nCookie: session=0123456789abcdef\r\n\r\n"
	stream := []byte(strings.Repeat(req, 16))
	r := &Requests{}
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += 16 {
		for p := stream; len(p) > 0; {
			k := min(len(p), 1448)
			r.Write(p[:k])
			p = p[k:]
		}
	}
	b.StopTimer()
	if r.Opaque() || !r.Idle() {
		b.Fatal(reqSnap(r))
	}
}
