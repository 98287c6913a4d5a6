package recorder

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests run the server in-process on loopback; the lab self-test
// (netns-tests) runs the binary against real curl.

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// startServer runs a recorder on 127.0.0.1 and returns its address and log
// path; it is stopped at test cleanup.
func startServer(t *testing.T, cfg Config) (string, string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "rec.jsonl")
	w, err := OpenLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Log = w
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 2 * time.Second
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ctx, ln); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		w.Close()
	})
	return ln.Addr().String(), logPath
}

// waitSums waits for n connection summaries.
func waitSums(t *testing.T, path string, n int) ([]Record, []ConnSummary) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	recs, sums, err := WaitLog(ctx, path, func(_ []Record, s []ConnSummary) bool { return len(s) >= n })
	if err != nil {
		t.Fatalf("%v (records %+v, summaries %+v)", err, recs, sums)
	}
	return recs, sums
}

// readResponse reads one HTTP response with Content-Length from br.
func readResponse(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var clen int
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		if strings.HasPrefix(line, "Content-Length: ") {
			fmt.Sscanf(line, "Content-Length: %d", &clen)
		}
		if line == "\r\n" {
			break
		}
	}
	body := make([]byte, clen)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func TestHTTPKeepAliveChunkedAndPipelining(t *testing.T) {
	addr, logPath := startServer(t, Config{Mode: ModeHTTP, Delay: 30 * time.Millisecond})
	body := bytes.Repeat([]byte("0123456789abcdef"), 10000) // 160000 bytes
	reqs := [][]byte{
		[]byte("GET /a HTTP/1.1\r\nHost: x\r\n\r\n"),
		append([]byte(fmt.Sprintf("POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))), body...),
		[]byte("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"),
		[]byte("GET /d HTTP/1.1\r\nHost: x\r\n\r\n"),
		[]byte("GET /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	// Requests 0..2 wait for their answers; 3 and 4 are pipelined in one
	// write, so 3 must be early and 4 not.
	for _, r := range reqs[:3] {
		if _, err := c.Write(r); err != nil {
			t.Fatal(err)
		}
		resp := readResponse(t, br)
		if !strings.Contains(resp, sha(r)) {
			t.Errorf("response %q does not name sha256 %s", resp, sha(r))
		}
	}
	if _, err := c.Write(append(append([]byte(nil), reqs[3]...), reqs[4]...)); err != nil {
		t.Fatal(err)
	}
	readResponse(t, br)
	readResponse(t, br)
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after Connection: close: got %v, want EOF", err)
	}
	c.Close()

	recs, sums := waitSums(t, logPath, 1)
	if len(recs) != len(reqs) {
		t.Fatalf("got %d records, want %d: %+v", len(recs), len(reqs), recs)
	}
	var all []byte
	for i, r := range reqs {
		all = append(all, r...)
		got := recs[i]
		if got.Index != i || got.Bytes != int64(len(r)) || got.SHA256 != sha(r) || got.Error != "" {
			t.Errorf("record %d = %+v, want %d bytes sha256 %s", i, got, len(r), sha(r))
		}
		if wantEarly := i == 3; got.Early != wantEarly {
			t.Errorf("record %d early = %v, want %v", i, got.Early, wantEarly)
		}
	}
	if recs[1].BodyBytes != int64(len(body)) || recs[1].BodySHA256 != sha(body) {
		t.Errorf("body of record 1: %d %s", recs[1].BodyBytes, recs[1].BodySHA256)
	}
	if recs[2].BodyBytes != 11 || recs[2].BodySHA256 != sha([]byte("hello world")) {
		t.Errorf("chunked body: %d %s", recs[2].BodyBytes, recs[2].BodySHA256)
	}
	s := sums[0]
	if s.TotalBytes != int64(len(all)) || s.SHA256All != sha(all) || s.Closed != "fin" || !s.ServerClosed || s.Requests != len(reqs) {
		t.Errorf("summary %+v, want %d bytes, fin, server closed", s, len(all))
	}
}

func TestHTTPExpectContinueAndTruncated(t *testing.T) {
	addr, logPath := startServer(t, Config{Mode: ModeHTTP})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	head := "PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q %v, want 100 Continue", line, err)
	}
	// Half the body, then FIN: a truncated request.
	io.WriteString(c, "12345")
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, br)
	c.Close()
	recs, sums := waitSums(t, logPath, 1)
	if len(recs) != 1 || recs[0].Error == "" || recs[0].Bytes != int64(len(head)+5) || recs[0].SHA256 != sha([]byte(head+"12345")) {
		t.Errorf("records %+v", recs)
	}
	if sums[0].Closed != "fin" {
		t.Errorf("summary %+v, want closed fin", sums[0])
	}
}

func TestHTTPBadRequest(t *testing.T) {
	addr, logPath := startServer(t, Config{Mode: ModeHTTP})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "HELLO\r\n\r\n")
	resp, _ := io.ReadAll(c)
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 400 ")) {
		t.Errorf("response %q", resp)
	}
	c.Close()
	recs, sums := waitSums(t, logPath, 1)
	if len(recs) != 1 || !strings.Contains(recs[0].Error, "bad request") || !sums[0].ServerClosed {
		t.Errorf("records %+v summaries %+v", recs, sums)
	}
}

func TestSMTPEarlyBanner(t *testing.T) {
	addr, logPath := startServer(t, Config{Mode: ModeSMTP, GreetDelay: 100 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Speak before the banner: the first record must be early.
	io.WriteString(c, "EHLO me\r\n")
	br := bufio.NewReader(c)
	cmds := []string{"MAIL FROM:<a@lab>\r\n", "RCPT TO:<b@lab>\r\n", "DATA\r\n"}
	expectReply := func(prefix string) {
		t.Helper()
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for %s: %v", prefix, err)
			}
			if strings.HasPrefix(line, prefix+" ") {
				return
			}
		}
	}
	expectReply("220")
	expectReply("250")
	for _, cmd := range cmds {
		io.WriteString(c, cmd)
		if cmd == "DATA\r\n" {
			expectReply("354")
		} else {
			expectReply("250")
		}
	}
	data := "Subject: x\r\n\r\n..dot-stuffed\r\n.\r\n"
	io.WriteString(c, data)
	expectReply("250")
	io.WriteString(c, "QUIT\r\n")
	expectReply("221")
	c.Close()

	recs, _ := waitSums(t, logPath, 1)
	want := []string{"EHLO me\r\n", cmds[0], cmds[1], cmds[2], data, "QUIT\r\n"}
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d: %+v", len(recs), len(want), recs)
	}
	for i, w := range want {
		if recs[i].SHA256 != sha([]byte(w)) || recs[i].Bytes != int64(len(w)) {
			t.Errorf("record %d = %+v, want %q", i, recs[i], w)
		}
		if wantEarly := i == 0; recs[i].Early != wantEarly {
			t.Errorf("record %d early = %v, want %v", i, recs[i].Early, wantEarly)
		}
	}
}

func TestRawReset(t *testing.T) {
	addr, logPath := startServer(t, Config{Mode: ModeRaw})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte{0xab}, 1<<20)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	// Let the bytes be read before the reset, which would discard them.
	time.Sleep(200 * time.Millisecond)
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
	recs, sums := waitSums(t, logPath, 1)
	if len(recs) != 1 || recs[0].Bytes != int64(len(payload)) || recs[0].SHA256 != sha(payload) {
		t.Errorf("records %+v", recs)
	}
	if sums[0].Closed != "rst" || sums[0].TotalBytes != int64(len(payload)) {
		t.Errorf("summary %+v, want rst", sums[0])
	}
}

// TestHTTPHugeUploadStreams sends 256 MiB and checks the recorder hashed
// it without holding it: total allocations stay far below the body size.
func TestHTTPHugeUploadStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("256 MiB upload")
	}
	addr, logPath := startServer(t, Config{Mode: ModeHTTP})
	const size = 256 << 20
	chunk := bytes.Repeat([]byte("stackcopy-upload"), 1<<16) // 1 MiB
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	head := fmt.Sprintf("PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", size)
	want := sha256.New()
	body := sha256.New()
	want.Write([]byte(head))

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	io.WriteString(c, head)
	for range size / len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
		want.Write(chunk)
		body.Write(chunk)
	}
	resp, _ := io.ReadAll(c)
	runtime.ReadMemStats(&after)
	if !bytes.Contains(resp, []byte(hex.EncodeToString(want.Sum(nil)))) {
		t.Errorf("response %q lacks the request digest", resp)
	}
	grew := after.TotalAlloc - before.TotalAlloc
	t.Logf("256 MiB upload: %d KiB allocated in all", grew>>10)
	if grew > 32<<20 {
		t.Errorf("allocated %d MiB for a %d MiB upload: the body is being buffered", grew>>20, size>>20)
	}
	recs, _ := waitSums(t, logPath, 1)
	if len(recs) != 1 || recs[0].BodyBytes != size || recs[0].BodySHA256 != hex.EncodeToString(body.Sum(nil)) {
		t.Errorf("records %+v", recs)
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"http", "smtp", "raw"} {
		if _, err := ParseMode(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	if _, err := ParseMode("ftp"); err == nil {
		t.Error("ftp accepted")
	}
}
