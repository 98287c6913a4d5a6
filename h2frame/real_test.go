package h2frame

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c" //lint:ignore SA1019 the only Go server of the h2c upgrade (see testServer)
)

// Real conversations: net/http's HTTP/2 client and h2c server (the
// x/net/http2 code, bundled), with a
// Framer in the connection the way the replayer uses one (Client before a
// write, Server after a read, on different goroutines), and recorded
// captures of curl (libnghttp2) against h2c servers in testdata/.

// recConn shows a connection's bytes to a Framer and records them in order.
type recConn struct {
	net.Conn
	f *Framer

	mu       sync.Mutex
	log      []record
	negative bool // the connection window went negative
}

type record struct {
	client bool
	b      []byte
}

func (c *recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.f.Client(p)
	c.log = append(c.log, record{true, bytes.Clone(p)})
	if c.f.ConnSendWindow() < 0 {
		c.negative = true
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.f.Server(p[:n])
	c.log = append(c.log, record{false, bytes.Clone(p[:n])})
	c.mu.Unlock()
	return n, err
}

// testServer starts an h2c server on 127.0.0.1, taking the h2c upgrade if
// upgrade is set: /size/N answers N bytes, /echo reads the body and answers
// its length, /abort resets the stream.
func testServer(t *testing.T, upgrade bool) (addr string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/size/", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/size/"))
		w.Write(bytes.Repeat([]byte("x"), n))
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	mux.HandleFunc("/abort", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	if upgrade {
		// net/http serves h2c with prior knowledge only; the h2c
		// upgrade (deprecated by RFC 9113, still sent by curl --http2
		// and nghttp -u) needs x/net's handler, kept for recording
		// such fixtures.
		srv.Handler = h2c.NewHandler(mux, &http2.Server{}) //lint:ignore SA1019 the only Go server of the h2c upgrade
	} else {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = &p
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestRealConversation(t *testing.T) {
	addr := testServer(t, false)
	f := New()
	var conn *recConn
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		Protocols: &p,
		HTTP2:     &http.HTTP2Config{SendPingTimeout: 50 * time.Millisecond},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if conn != nil {
				return nil, fmt.Errorf("a second connection")
			}
			conn = &recConn{Conn: c, f: f}
			return conn, nil
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	// One request first, so that the connection exists before the
	// concurrent ones.
	get := func(path string) error {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}
	if err := get("/size/10"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	streams := 1
	for i := range 40 {
		streams++
		wg.Go(func() {
			if err := get(fmt.Sprintf("/size/%d", (i*7919)%70000)); err != nil {
				errs <- err
			}
		})
	}
	for i := range 6 {
		// Bodies larger than the server's initial window (x/net/http2
		// grants 1 MiB a connection, 1 MiB... less a stream).
		streams++
		wg.Go(func() {
			resp, err := client.Post("http://"+addr+"/echo", "application/octet-stream", bytes.NewReader(make([]byte, 300000+i)))
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	streams++
	wg.Go(func() { get("/abort") }) // an error is expected: the stream is reset
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Idle now: the transport's health check PINGs the server.
	deadline := time.Now().Add(5 * time.Second)
	want := 2 + streams // the server preface, the SETTINGS ACK, the streams
	for f.Requests() < want+2 || f.Requests() != f.Answers() {
		if time.Now().After(deadline) || f.Err() != nil {
			t.Fatalf("requests %d answers %d, want %d and two PINGs; err %v", f.Requests(), f.Answers(), want, f.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}
	tr.CloseIdleConnections()
	conn.mu.Lock()
	defer conn.mu.Unlock()
	want = f.Requests()
	if conn.negative {
		t.Error("the connection window went negative: x/net's client respects it")
	}
	// The same bytes through a capture-side framer, fed in recorded
	// order, count the same.
	g := New()
	for _, r := range conn.log {
		if r.client {
			g.Client(r.b)
		} else {
			g.Server(r.b)
		}
	}
	if g.Err() != nil || g.Requests() != want || g.Answers() != want {
		t.Fatalf("replayed log: requests %d answers %d err %v", g.Requests(), g.Answers(), g.Err())
	}
	if os.Getenv("H2FRAME_WRITE_FIXTURES") != "" {
		writeFixture(t, "xnet-multiplexed.h2", conn.log)
	}
}

// Fixtures are a sequence of records: 'C' or 'S', a 4-byte big-endian
// length, the bytes; in the order they were seen on the wire.

func writeFixture(t *testing.T, name string, log []record) {
	var b []byte
	for _, r := range log {
		if len(r.b) == 0 {
			continue
		}
		dir := byte('S')
		if r.client {
			dir = 'C'
		}
		b = append(b, dir)
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.b)))
		b = append(b, r.b...)
	}
	if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFixture(t *testing.T, name string) []record {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var log []record
	for len(b) >= 5 {
		n := int(binary.BigEndian.Uint32(b[1:5]))
		log = append(log, record{b[0] == 'C', b[5 : 5+n]})
		b = b[5+n:]
	}
	return log
}

// TestRecordFixture records a fixture when H2FRAME_RECORD names one: it
// runs H2FRAME_CMD (with {addr} replaced by a recording proxy's address)
// against H2FRAME_UPSTREAM, or against the test's h2c server when that is
// empty; H2FRAME_UPGRADE=1 makes that server take the h2c upgrade. Example:
//
//	H2FRAME_RECORD=curl-parallel.h2 H2FRAME_CMD='curl -s --http2-prior-knowledge --parallel http://{addr}/size/1 http://{addr}/size/2' go test -run TestRecordFixture ./h2frame
func TestRecordFixture(t *testing.T) {
	name := os.Getenv("H2FRAME_RECORD")
	if name == "" {
		t.Skip("H2FRAME_RECORD not set")
	}
	upstream := os.Getenv("H2FRAME_UPSTREAM")
	if upstream == "" {
		upstream = testServer(t, os.Getenv("H2FRAME_UPGRADE") != "")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var log []record
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", upstream)
		if err != nil {
			c.Close()
			return
		}
		var wg sync.WaitGroup
		pipe := func(dst, src net.Conn, client bool) {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					mu.Lock()
					log = append(log, record{client, bytes.Clone(buf[:n])})
					mu.Unlock()
					dst.Write(buf[:n])
				}
				if err != nil {
					dst.(*net.TCPConn).CloseWrite()
					return
				}
			}
		}
		wg.Add(2)
		go pipe(u, c, true)
		go pipe(c, u, false)
		wg.Wait()
		c.Close()
		u.Close()
	}()
	cmd := strings.ReplaceAll(os.Getenv("H2FRAME_CMD"), "{addr}", ln.Addr().String())
	out, err := exec.Command("sh", "-c", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	<-done
	mu.Lock()
	defer mu.Unlock()
	writeFixture(t, name, log)
	f := New()
	for _, r := range log {
		if r.client {
			f.Client(r.b)
		} else {
			f.Server(r.b)
		}
	}
	t.Logf("%s\n%s: %d records, requests %d answers %d err %v", out, name, len(log), f.Requests(), f.Answers(), f.Err())
}

// TestFixtures replays the recorded captures, split at random points, and
// checks the counts after each record and at the end.
func TestFixtures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		req, ans int
		err      error
	}{
		// curl (libnghttp2) and nghttp against x/net/http2's h2c
		// server, and against nghttpd, which sends its SETTINGS first.
		{"curl-go-upgrade.h2", 4, 4, nil},            // 101, stream 1, preface, SETTINGS
		{"curl-go-upgrade-post.h2", 4, 4, nil},       // the same with a body in the upgrade request
		{"nghttp-go-upgrade.h2", 5, 5, nil},          // + a second stream
		{"nghttp-go-multiplexed.h2", 7, 7, nil},      // 5 streams, one reset by the server
		{"nghttp-go-post.h2", 3, 3, nil},             // a body beyond the initial window
		{"nghttp-nghttpd-multiplexed.h2", 6, 6, nil}, // 4 streams, one 404
		{"curl-nghttpd-prior.h2", 3, 3, nil},
		{"h2load-nghttpd.h2", 62, 62, nil}, // 60 streams, 20 at a time
		// nghttpd speaks HTTP/2 at once and does not take the upgrade.
		{"nghttp-nghttpd-upgrade.h2", 0, 1, ErrNoUpgrade},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := readFixture(t, tc.name)
			f := New()
			type counts struct{ req, ans int }
			var want []counts
			for _, r := range log {
				if r.client {
					f.Client(r.b)
				} else {
					f.Server(r.b)
				}
				want = append(want, counts{f.Requests(), f.Answers()})
			}
			if f.Requests() != tc.req || f.Answers() != tc.ans || !errors.Is(f.Err(), tc.err) {
				t.Fatalf("requests %d answers %d err %v, want %d %d %v", f.Requests(), f.Answers(), f.Err(), tc.req, tc.ans, tc.err)
			}
			rng := rand.New(rand.NewPCG(7, uint64(len(log))))
			for range 30 {
				g := New()
				for i, r := range log {
					feed := g.Server
					if r.client {
						feed = g.Client
					}
					prev := 0
					for _, cut := range append(randomCuts(rng, len(r.b)), len(r.b)) {
						feed(r.b[prev:cut])
						prev = cut
					}
					if got := (counts{g.Requests(), g.Answers()}); got != want[i] {
						t.Fatalf("record %d: %+v, unsplit %+v", i, got, want[i])
					}
				}
			}
		})
	}
}
