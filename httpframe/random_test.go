package httpframe

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// A grammar-aware generator: messages assembled from pieces that are
// mostly valid and sometimes subtly not, checked against net/http. It
// reaches combinations (a fold after a framing field, HEAD with chunked,
// trailers after pipelined bodies) that byte-level fuzzing finds slowly.

func pick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

func genFields(rng *rand.Rand, eol string, body *string) string {
	var b strings.Builder
	for range rng.IntN(6) {
		switch rng.IntN(12) {
		case 0, 1:
			n := rng.IntN(12)
			*body = strings.Repeat("b", n)
			fmt.Fprintf(&b, "%s:%s%d%s%s", pick(rng, "Content-Length", "content-length", "CONTENT-LENGTH"), pick(rng, " ", "", "  ", "\t"), n, pick(rng, "", " "), eol)
		case 2:
			b.WriteString(pick(rng, "Content-Length: x", "Content-Length:", "Content-Length: 1,1", "Content-Length: -1", "Content-Length : 1", "Content-Length: 3") + eol)
		case 3, 4:
			b.WriteString("Transfer-Encoding: " + pick(rng, "chunked", "Chunked", "gzip, chunked", "gzip", "chunked, gzip", "identity", "", " chunked ") + eol)
		case 5:
			b.WriteString(pick(rng, " folded", "\tfolded", "  ", " 5") + eol)
		case 6:
			b.WriteString(pick(rng, "X Y: z", "X\x80: y", "X: \x80", "X: \x01", ": empty", "NoColon", "X:y") + eol)
		default:
			b.WriteString(pick(rng, "Server: nginx", "Connection: keep-alive", "Connection: close", "Upgrade: websocket", "Trailer: X", "Expect: 100-continue", "Host: x") + eol)
		}
	}
	return b.String()
}

func genChunked(rng *rand.Rand, eol string) string {
	var b strings.Builder
	for range rng.IntN(3) {
		n := 1 + rng.IntN(20)
		fmt.Fprintf(&b, "%s%s%s%s%s", pick(rng, fmt.Sprintf("%x", n), fmt.Sprintf("%X", n), fmt.Sprintf("0%x", n)), pick(rng, "", "", ";a=b", " ;a", " ", ";\"q\""), pick(rng, "\r\n", "\r\n", "\n"), strings.Repeat("c", n+pick(rng, 0, 0, 0, 1, -1)), pick(rng, "\r\n", "\r\n", "\r\n", "\n", ""))
	}
	b.WriteString(pick(rng, "0\r\n", "0\r\n", "000\r\n", "0;x\r\n", "0\n"))
	switch rng.IntN(4) {
	case 0:
		b.WriteString("X-T: 1" + eol + pick(rng, " fold"+eol, "") + "Y: 2" + eol)
	case 1:
		b.WriteString(pick(rng, " bad", "bad", "Content-Length: 9") + eol)
	}
	b.WriteString(pick(rng, "\r\n", "\r\n", "\n"))
	return b.String()
}

func genResponse(rng *rand.Rand) string {
	eol := pick(rng, "\r\n", "\r\n", "\r\n", "\n")
	line := fmt.Sprintf("%s %s%s", pick(rng, "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "http/1.1", "HTTP/1.1 "),
		pick(rng, "200 OK", "200 OK", "204 No Content", "304 Not Modified", "404 Not Found", "100 Continue", "101 Switching", "103 Hints", "199", "+12 X", "-00", "2000", "200", "200 ", "500\tX"), eol)
	body := ""
	fields := genFields(rng, eol, &body)
	if strings.Contains(strings.ToLower(fields), "transfer-encoding") && rng.IntN(3) > 0 {
		body = genChunked(rng, eol)
	}
	return line + fields + eol + body
}

func genRequest(rng *rand.Rand) string {
	eol := pick(rng, "\r\n", "\r\n", "\r\n", "\n")
	line := fmt.Sprintf("%s %s %s%s", pick(rng, "GET", "POST", "HEAD", "CONNECT", "get", "G\"T", ""), pick(rng, "/", "/a?b=c", "*", "example.com:443", "http://x/", "", "/\x01"),
		pick(rng, "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 ", "HTTP/1"), eol)
	body := ""
	fields := genFields(rng, eol, &body)
	if strings.Contains(strings.ToLower(fields), "transfer-encoding") && rng.IntN(3) > 0 {
		body = genChunked(rng, eol)
	}
	return pick(rng, "", "", "", "\r\n") + line + fields + eol + body
}

func TestRandomAgainstNetHTTP(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 4000
	if testing.Short() {
		n = 500
	}
	for i := range n {
		var resp, req strings.Builder
		for range 1 + rng.IntN(3) {
			resp.WriteString(genResponse(rng))
			req.WriteString(genRequest(rng))
		}
		r := resp.String()
		if rng.IntN(4) == 0 {
			r = r[:rng.IntN(len(r)+1)]
		}
		sel := pick(rng, "G", "GG", "HG", "H", "C", "P", "GH", "CG")
		if err := checkResponses(sel, []byte(r)); err != nil {
			t.Fatalf("case %d: %v\ndata: %q", i, err, r)
		}
		if err := checkRequests([]byte(req.String())); err != nil {
			t.Fatalf("case %d: %v\ndata: %q", i, err, req.String())
		}
	}
}
