package replay_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/stackcopy/stackcopy/h2frame"
	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/session"
)

var http2Protocol = replay.Protocol{Name: "http2", New: func() replay.Framer { return h2frame.New() }, Detect: h2frame.Detect, NoJoin: true}

// h2Target is a real HTTP/2 server taking prior-knowledge h2c
// connections: net/http's, which is golang.org/x/net/http2's bundled
// (http2.Server is deprecated in its favour).
type h2Target struct {
	addr netip.AddrPort
}

func newH2Target(t *testing.T, conf *http.HTTP2Config, h http.Handler) *h2Target {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, HTTP2: conf, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return &h2Target{addr: netip.MustParseAddrPort(ln.Addr().String())}
}

// h2Bytes writes HTTP/2 frames for a captured session, either side.
type h2Bytes struct {
	buf bytes.Buffer
	fr  *http2.Framer
	hb  bytes.Buffer
	enc *hpack.Encoder
}

func newH2Bytes() *h2Bytes {
	b := &h2Bytes{}
	b.fr = http2.NewFramer(&b.buf, nil)
	b.enc = hpack.NewEncoder(&b.hb)
	return b
}

// take returns the bytes written so far and starts anew.
func (b *h2Bytes) take() []byte {
	p := bytes.Clone(b.buf.Bytes())
	b.buf.Reset()
	return p
}

func (b *h2Bytes) headers(t *testing.T, stream uint32, end bool, fields ...string) {
	t.Helper()
	b.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		b.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := b.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: b.hb.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

func get(path string) []string {
	return []string{":method", "GET", ":scheme", "http", ":authority", "t", ":path", path}
}

// split cuts p into events of n bytes, as TCP segments cut a stream.
func split(p []byte, n int) []session.Event {
	var evs []session.Event
	for len(p) > 0 {
		k := min(n, len(p))
		evs = append(evs, dataB(p[:k]))
		p = p[k:]
	}
	return evs
}

// TestHTTP2WindowUpdatesKeepTheTargetSending: production's client granted
// 16 KiB stream windows and production's answers were 100 bytes, so the
// capture holds no WINDOW_UPDATE; the target answers 300 kB a request.
// The replayer grants window as a client that reads does, so no turn waits
// for --turn-wait and every answer arrives.
func TestHTTP2WindowUpdatesKeepTheTargetSending(t *testing.T) {
	t.Parallel()
	const answer = 300_000
	var requests atomic.Int64
	target := newH2Target(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Write(bytes.Repeat([]byte("a"), answer))
	}))
	r, _ := newReplayer(t, target.addr, &dialer{tap: true}, func(c *replay.Config) {
		c.Protocols = []replay.Protocol{http2Protocol}
		c.TurnWait = 3 * time.Second
	}, nil)

	cli, srv := newH2Bytes(), newH2Bytes()
	cli.buf.WriteString(http2.ClientPreface)
	cli.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 16 << 10})
	srv.fr.WriteSettings()
	srv.fr.WriteSettingsAck()
	evs := []session.Event{open(), dataB(cli.take()), srvData(string(srv.take())), turn(18)}
	cli.fr.WriteSettingsAck()
	for i, path := range []string{"/a", "/b", "/c"} {
		id := uint32(2*i + 1)
		cli.headers(t, id, true, get(path)...)
		srv.headers(t, id, false, ":status", "200")
		srv.fr.WriteData(id, true, bytes.Repeat([]byte("p"), 100))
		sb := srv.take()
		evs = append(evs, dataB(cli.take()), srvData(string(sb)), turn(len(sb)))
	}
	evs = append(evs, fin())
	feed(r, key(1), evs...)
	r.CloseInput()
	if !waitReplay(r, bound) {
		t.Fatal("Wait did not return")
	}
	st := r.Stats()
	ps := st.Protocols["http2"]
	t.Logf("http2: %+v; received %d bytes", ps, st.BytesReceived)
	if requests.Load() != 3 || st.Completed != 1 {
		t.Fatalf("target got %d requests, stats %+v: want 3, the session completed", requests.Load(), st)
	}
	if ps.Turns != 4 || ps.Framed != 4 || ps.TurnWait != 0 {
		t.Errorf("turns %d, framed %d, after --turn-wait %d: want 4 framed", ps.Turns, ps.Framed, ps.TurnWait)
	}
	if ps.WindowUpdates == 0 {
		t.Errorf("no window updates added")
	}
	if st.BytesReceived < 3*answer {
		t.Errorf("received %d bytes, want the 3 answers of %d", st.BytesReceived, answer)
	}
}

// TestHTTP2HoldsDataForTheTargetWindow: production's server granted the
// whole upload at once; the target announces 16 KiB stream windows and a
// 64 KiB connection window. The replayer holds each DATA frame until the
// target's WINDOW_UPDATE makes room, so the target sees no flow-control
// error and gets every byte. The upload is cut into segments that split
// frame headers too; it starts after the target's SETTINGS came, or in
// the client's first segments, with its preface.
func TestHTTP2HoldsDataForTheTargetWindow(t *testing.T) {
	t.Parallel()
	for _, first := range []bool{false, true} {
		name := "after the settings"
		if first {
			name = "with the preface"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testHTTP2Upload(t, first)
		})
	}
}

func testHTTP2Upload(t *testing.T, first bool) {
	const upload = 200_000
	var got atomic.Int64
	var readErr atomic.Value
	target := newH2Target(t, &http.HTTP2Config{MaxReceiveBufferPerStream: 16 << 10, MaxReceiveBufferPerConnection: 65535},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, err := io.Copy(io.Discard, r.Body)
			got.Add(n)
			if err != nil {
				readErr.Store(err.Error())
			}
			io.WriteString(w, "ok")
		}))
	r, _ := newReplayer(t, target.addr, &dialer{tap: true}, func(c *replay.Config) {
		c.Protocols = []replay.Protocol{http2Protocol}
		c.TurnWait = 3 * time.Second
	}, nil)

	cli, srv := newH2Bytes(), newH2Bytes()
	cli.buf.WriteString(http2.ClientPreface)
	cli.fr.WriteSettings()
	srv.fr.WriteSettings()
	srv.fr.WriteSettingsAck()
	srv.fr.WriteWindowUpdate(0, 1<<30)
	evs := []session.Event{open()}
	if !first {
		evs = append(evs, dataB(cli.take()), srvData(string(srv.take())), turn(31))
		cli.fr.WriteSettingsAck()
	}
	cli.headers(t, 1, false, ":method", "POST", ":scheme", "http", ":authority", "t", ":path", "/up")
	body := bytes.Repeat([]byte("u"), upload)
	for len(body) > 0 {
		k := min(len(body), 16<<10)
		cli.fr.WriteData(1, k == len(body), body[:k])
		body = body[k:]
	}
	evs = append(evs, split(cli.take(), 1400)...)
	srv.headers(t, 1, false, ":status", "200")
	srv.fr.WriteData(1, true, []byte("ok"))
	sb := srv.take()
	evs = append(evs, srvData(string(sb)), turn(len(sb)), fin())
	feed(r, key(1), evs...)
	r.CloseInput()
	if !waitReplay(r, bound) {
		t.Fatal("Wait did not return")
	}
	st := r.Stats()
	ps := st.Protocols["http2"]
	t.Logf("http2: %+v", ps)
	if e := readErr.Load(); e != nil {
		t.Errorf("the target's handler read the upload with an error: %v", e)
	}
	if got.Load() != upload || st.Completed != 1 {
		t.Errorf("the target got %d bytes of the upload, stats %+v: want %d, the session completed", got.Load(), st, upload)
	}
	if ps.DataHeld == 0 || ps.WindowWait != 0 || ps.TurnWait != 0 {
		t.Errorf("%d DATA frames held, %d sent without window after --turn-wait, %d turns after --turn-wait: want some held, none late",
			ps.DataHeld, ps.WindowWait, ps.TurnWait)
	}
}
