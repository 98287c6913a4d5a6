package httpframe

import (
	"strings"
	"testing"
)

// Realistic traffic to seed the fuzzers and the oracle test.

var seedResponses = []struct{ methods, data string }{
	{"G", crlf("HTTP/1.1 200 OK\nServer: nginx/1.24.0\nDate: Mon, 01 Jan 2024 00:00:00 GMT\nContent-Type: text/html\nContent-Length: 12\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\nConnection: keep-alive\nETag: \"65920080-c\"\nAccept-Ranges: bytes\n\n") + "hello world\n"},
	{"GGG", crlf("HTTP/1.1 304 Not Modified\nServer: nginx\nETag: \"x\"\n\nHTTP/1.1 404 Not Found\nServer: nginx\nContent-Type: text/html\nContent-Length: 9\n\n") + "not found" + crlf("HTTP/1.1 204 No Content\nContent-Length: 0\n\n")},
	{"G", crlf("HTTP/1.1 200 OK\nContent-Type: text/plain\nTransfer-Encoding: chunked\nTrailer: Expires\n\n7\n") + "Mozilla" + crlf("\n11;name=value\n") + "Developer Network" + crlf("\n0\nExpires: Wed, 21 Oct 2015 07:28:00 GMT\n\n")},
	{"PG", crlf("HTTP/1.1 100 Continue\n\nHTTP/1.1 201 Created\nLocation: /x\nContent-Length: 2\n\nokHTTP/1.1 200 OK\nContent-Length: 0\n\n")},
	{"G", crlf("HTTP/1.1 103 Early Hints\nLink: </style.css>; rel=preload; as=style\n\nHTTP/1.1 200 OK\nContent-Length: 3\n\nabc")},
	{"HG", crlf("HTTP/1.1 200 OK\nContent-Length: 1024\n\nHTTP/1.1 200 OK\nContent-Length: 4\n\nbody")},
	{"G", crlf("HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n\n") + "\x81\x05hello"},
	{"C", crlf("HTTP/1.1 200 Connection established\n\n") + "\x16\x03\x01\x02\x00"},
	{"CG", crlf("HTTP/1.1 407 Proxy Authentication Required\nProxy-Authenticate: Basic\nContent-Length: 0\n\nHTTP/1.1 200 OK\n\n")},
	{"G", crlf("HTTP/1.0 200 OK\nContent-Type: text/plain\n\n") + "until the close"},
	{"G", crlf("HTTP/1.1 200 OK\nContent-Length: 5\nContent-Length: 5\n\n") + "abcde"},
	{"G", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nContent-Length: 3\n\n3\n") + "abc" + crlf("\n0\n\n")},
	{"GG", crlf("HTTP/1.1 500 Internal Server Error\nContent-Length: 0\nConnection: close\n\n")},
	{"G", "HTTP/1.1 200 OK\nContent-Length: 2\n\nhi"},
	{"G", crlf("HTTP/1.1 200 OK\nX-Folded: a\n b\nContent-Length: 1\n\n") + "x"},
	{"G", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: gzip, chunked\n\n1\n") + "x" + crlf("\n0\n\n")},
	{"G", crlf("HTTP/1.1 200 OK\nContent-Length: 3\n\n") + "ab"},
	{"G", "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"},
	{"G", crlf("HTTP/2.0 200 OK\nContent-Length: 0\n\n")},
	{"G", crlf("HTTP/1.1 200 OK\nContent-Length : 3\n\nabc")},
}

var seedRequests = []string{
	crlf("GET / HTTP/1.1\nHost: example.com\nUser-Agent: curl/8.5.0\nAccept: */*\n\n"),
	crlf("GET /a HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\nHost: x\n\nHEAD /c HTTP/1.1\nHost: x\n\n"),
	crlf("POST /form HTTP/1.1\nHost: x\nContent-Type: application/x-www-form-urlencoded\nContent-Length: 7\n\n") + "a=1&b=2" + crlf("GET / HTTP/1.1\nHost: x\n\n"),
	crlf("POST /upload HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n4;ext=1\n") + "Wiki" + crlf("\n5\n") + "pedia" + crlf("\n0\nX-Checksum: 1\n\n"),
	crlf("PUT /big HTTP/1.1\nHost: x\nExpect: 100-continue\nContent-Length: 5\n\n") + "12345",
	crlf("CONNECT example.com:443 HTTP/1.1\nHost: example.com:443\n\n"),
	crlf("GET /chat HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\n"),
	crlf("GET / HTTP/1.0\n\n"),
	"GET / HTTP/1.1\nHost: x\n\n",
	crlf("POST / HTTP/1.1\nContent-Length: 3\n\n") + "abc\r\n" + crlf("GET / HTTP/1.1\n\n"),
	crlf("GET / HTTP/1.1\nHost: x\nContent-Length: 1\nContent-Length: 2\n\n"),
	crlf("POST / HTTP/1.0\nTransfer-Encoding: chunked\nContent-Length: 2\n\nab"),
	crlf("PRI * HTTP/2.0\n\nSM\n\n"),
	"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
	"\x00\x00\x00\x00\x00\x00\x00\x00",
	crlf("GET /x HTTP/1.1\nHost: x\n") + strings.Repeat("X-Pad: 0123456789\r\n", 10) + "\r\n",
}

func FuzzResponses(f *testing.F) {
	for _, s := range seedResponses {
		f.Add(s.methods, []byte(s.data))
	}
	f.Fuzz(func(t *testing.T, sel string, data []byte) {
		if err := checkResponses(sel, data); err != nil {
			t.Fatalf("%v\ndata: %q", err, data)
		}
	})
}

func FuzzRequests(f *testing.F) {
	for _, s := range seedRequests {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := checkRequests(data); err != nil {
			t.Fatalf("%v\ndata: %q", err, data)
		}
		// Sniff never refuses a stream whose first request frames, and
		// what it accepts, it accepts on every prefix (a request line
		// split across chunks).
		r := &Requests{}
		r.Write(data)
		sniff := Sniff(data)
		if r.Complete() > 0 && !sniff {
			t.Fatalf("Sniff false on a stream whose first request frames: %q", data)
		}
		if sniff {
			for k := 1; k < len(data) && k <= 300; k++ {
				if !Sniff(data[:k]) && strings.Trim(string(data[:k]), "\r\n") != "" {
					t.Fatalf("Sniff true on %q, false on its prefix %q", data, data[:k])
				}
			}
		}
	})
}
