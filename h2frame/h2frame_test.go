package h2frame

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// Frame builders for the tests.

func headers(stream uint32, flags uint8, block string) []byte {
	return frame(typeHeaders, flags, stream, []byte(block))
}

func cont(stream uint32, flags uint8, block string) []byte {
	return frame(typeContinuation, flags, stream, []byte(block))
}

func data(stream uint32, flags uint8, n int) []byte {
	return frame(typeData, flags, stream, make([]byte, n))
}

func settings(params ...uint32) []byte {
	var p []byte
	for i := 0; i+1 < len(params); i += 2 {
		p = binary.BigEndian.AppendUint16(p, uint16(params[i]))
		p = binary.BigEndian.AppendUint32(p, params[i+1])
	}
	return frame(typeSettings, 0, 0, p)
}

func settingsAck() []byte     { return frame(typeSettings, flagAck, 0, nil) }
func ping(flags uint8) []byte { return frame(typePing, flags, 0, make([]byte, 8)) }
func rst(stream uint32) []byte {
	return frame(typeRSTStream, 0, stream, []byte{0, 0, 0, 8})
}
func goaway(last, code uint32) []byte {
	return frame(typeGoAway, 0, 0, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, last), code))
}
func windowUpdate(stream, incr uint32) []byte {
	return frame(typeWindowUpdate, 0, stream, binary.BigEndian.AppendUint32(nil, incr))
}
func pushPromise(stream, promised uint32) []byte {
	return frame(typePushPromise, flagEndHeaders, stream, append(binary.BigEndian.AppendUint32(nil, promised), 0x82))
}

const (
	es  = flagEndStream
	eh  = flagEndHeaders
	ack = flagAck
)

// step is one chunk of a table test and the counts after it.
type step struct {
	client   bool
	bytes    []byte
	req, ans int
}

func c(req, ans int, fs ...[]byte) step {
	return step{true, []byte(strings.Join(byteStrings(fs), "")), req, ans}
}
func s(req, ans int, fs ...[]byte) step {
	return step{false, []byte(strings.Join(byteStrings(fs), "")), req, ans}
}

func byteStrings(fs [][]byte) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f)
	}
	return out
}

var preface = []byte(clientPreface)

// run feeds the steps, each split byte by byte and whole, and checks the
// counts after each step and the error at the end.
func run(t *testing.T, steps []step, wantErr error) *Framer {
	t.Helper()
	var last *Framer
	for _, bytewise := range []bool{false, true} {
		f := New()
		for i, st := range steps {
			feed := f.Server
			if st.client {
				feed = f.Client
			}
			if bytewise {
				for j := range st.bytes {
					feed(st.bytes[j : j+1])
				}
			} else {
				feed(st.bytes)
			}
			if f.Requests() != st.req || f.Answers() != st.ans {
				t.Fatalf("bytewise %v, step %d: requests %d answers %d, want %d %d (err %v)", bytewise, i, f.Requests(), f.Answers(), st.req, st.ans, f.Err())
			}
		}
		if !errors.Is(f.Err(), wantErr) {
			t.Fatalf("bytewise %v: Err %v, want %v", bytewise, f.Err(), wantErr)
		}
		last = f
	}
	return last
}

func TestUnits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []step
		err   error
	}{
		{"prior knowledge, one request", []step{
			c(2, 0, preface, settings(3, 100), windowUpdate(0, 1<<20)),
			s(2, 1, settings(3, 250, 4, 1<<20)),
			s(2, 2, settingsAck()),
			c(3, 2, settingsAck(), headers(1, es|eh, "\x82\x86\x84")),
			s(3, 2, headers(1, eh, "\x88"), data(1, 0, 100)),
			s(3, 3, data(1, es, 0)),
		}, nil},
		{"server preface first", []step{
			s(0, 1, settings()),
			c(2, 1, preface, settings()),
			s(2, 2, settingsAck()),
		}, nil},
		{"one ACK for two SETTINGS", []step{
			c(3, 0, preface, settings(), settings(2, 0)),
			s(3, 3, settings(), settingsAck()), // one ACK answers both
			s(3, 3, settingsAck()),
			s(3, 3, settingsAck()), // nothing outstanding
		}, nil},
		{"later server SETTINGS are units", []step{
			c(2, 0, preface, settings()),
			s(2, 2, settings(), settingsAck()),
			s(2, 3, settings(1, 8192)),
			c(2, 3, settingsAck()),
		}, nil},
		{"PING", []step{
			c(3, 0, preface, settings(), ping(0)),
			s(3, 3, settings(), settingsAck(), ping(ack)),
			s(3, 3, ping(0), ping(ack)), // a server PING; an ACK with no PING
			c(3, 3, ping(ack)),
		}, nil},
		{"CONTINUATION, padding, priority", []step{
			c(2, 0, preface, settings()),
			s(2, 2, settings(), settingsAck()),
			c(2, 2, frame(typeHeaders, es|flagPadded|flagPriority, 1, []byte("\x03\x00\x00\x00\x00\x0f\x82\x00\x00\x00"))),
			c(3, 2, cont(1, 0, "\x86"), cont(1, eh, "\x84")),
			s(3, 2, headers(1, es, "\x88")),
			s(3, 3, cont(1, eh, "")),
		}, nil},
		{"many streams interleaved", []step{
			c(2, 0, preface, settings()),
			s(2, 2, settings(), settingsAck()),
			c(5, 2, headers(1, es|eh, "a"), headers(3, es|eh, "b"), headers(5, es|eh, "c")),
			s(5, 2, headers(5, eh, "x"), headers(1, eh, "x"), data(5, 0, 10), data(3, 0, 0)),
			s(5, 3, data(1, es, 5)),
			s(5, 5, headers(3, eh|es, "x"), data(5, es|flagPadded, 9)),
		}, nil},
		{"early answer: unit when the client ends", []step{
			c(2, 0, preface, settings()),
			s(2, 2, settings(), settingsAck()),
			c(2, 2, headers(1, eh, "post"), data(1, 0, 100)),
			s(2, 2, headers(1, eh|es, "413")),
			c(3, 3, data(1, es, 100)),
			s(3, 3, rst(1)), // after the close: ignored
		}, nil},
		{"early answer, then client reset", []step{
			c(2, 0, preface, settings()),
			s(2, 2, settings(), settingsAck()),
			c(2, 2, headers(1, eh, "post")),
			s(2, 2, headers(1, eh|es, "413")),
			c(3, 3, rst(1)),
		}, nil},
		{"server reset before the request ends", []step{
			c(2, 0, preface, settings()),
			s(2, 2, settings(), settingsAck()),
			c(2, 2, headers(1, eh, "post"), data(1, 0, 10)),
			s(3, 3, rst(1)),
			c(3, 3, data(1, es, 10), headers(1, eh|es, "trailers")), // in flight: ignored
		}, nil},
		{"client reset", []step{
			c(2, 0, preface, settings()),
			s(2, 2, settings(), settingsAck()),
			c(3, 2, headers(1, eh|es, "get")),
			c(3, 3, rst(1)),
			s(3, 3, headers(1, eh, "200"), data(1, es, 3)), // in flight: ignored
		}, nil},
		{"trailers end the request", []step{
			c(2, 0, preface, settings()),
			s(2, 2, settings(), settingsAck()),
			c(2, 2, headers(1, eh, "post"), data(1, 0, 3)),
			c(3, 2, headers(1, eh|es, "trailer")),
			s(3, 2, headers(1, eh, "200"), data(1, 0, 3)),
			s(3, 3, headers(1, eh|es, "trailer")),
		}, nil},
		{"push promises are not units", []step{
			c(2, 0, preface, settings()),
			s(2, 2, settings(), settingsAck()),
			c(3, 2, headers(1, eh|es, "get")),
			s(3, 2, pushPromise(1, 2), headers(1, eh, "200"), headers(2, eh, "200"), data(2, es, 4)),
			c(3, 2, rst(2), windowUpdate(2, 10)),
			s(3, 3, data(1, es, 4)),
		}, nil},
		{"GOAWAY NO_ERROR", []step{
			c(2, 0, preface, settings()),
			s(2, 2, settings(), settingsAck()),
			c(4, 2, headers(1, eh|es, "a"), headers(3, eh|es, "b"), headers(5, eh, "c")),
			s(5, 3, goaway(3, 0)),           // stream 5 answered (and a request now)
			c(6, 4, headers(7, eh|es, "d")), // never processed: answered at once
			s(6, 6, data(1, es, 1), data(3, es, 1)),
		}, nil},
		{"GOAWAY with an error ends everything", []step{
			c(2, 0, preface, settings()),
			s(2, 1, settings()),
			c(4, 1, headers(1, eh|es, "a"), headers(3, eh, "b"), ping(0)),
			s(5, 5, goaway(1, 1)), // streams 1 and 3, the SETTINGS, the PING
		}, nil},
		{"unknown frames and PRIORITY", []step{
			c(2, 0, preface, frame(0x42, 0xff, 0, []byte("x")), settings()),
			s(2, 2, settings(), frame(0xfe, 0, 9, nil), settingsAck()),
			c(3, 2, frame(typePriority, 0, 9, make([]byte, 5)), headers(1, eh|es, "a"), frame(typePriorityUpdate, 0, 0, []byte{0, 0, 0, 1, 'u'})),
			s(3, 3, frame(typePriority, 0, 11, make([]byte, 5)), headers(1, eh|es, "a")),
		}, nil},
		{"h2c upgrade", []step{
			c(2, 0, []byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")),
			s(2, 1, []byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")),
			s(2, 2, settings(3, 100)),
			c(4, 2, preface, settings()),
			s(4, 3, headers(1, eh, "200"), data(1, es, 10)),
			s(4, 4, settingsAck()),
			c(5, 4, settingsAck(), headers(3, eh|es, "a")),
			s(5, 5, headers(3, eh|es, "a")),
		}, nil},
		{"h2c upgrade with a body and 100 Continue", []step{
			c(2, 0, []byte("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: Upgrade, HTTP2-Settings\r\nupgrade: websocket, H2C\r\nHTTP2-Settings: \r\n\r\n")),
			s(2, 0, []byte("HTTP/1.1 100 Continue\r\n\r\n")),
			c(2, 0, []byte("hello")),
			s(2, 2, []byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"), settings()),
			c(3, 2, preface),
			s(3, 3, headers(1, eh|es, "204")),
		}, nil},
		{"upgrade refused", []step{
			c(2, 0, []byte("GET / HTTP/1.1\nHost: x\nUpgrade: h2c\n\n")),
			s(2, 0, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")),
		}, ErrNoUpgrade},
		{"upgrade with a chunked body", []step{
			c(0, 0, []byte("POST / HTTP/1.1\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n")),
		}, ErrUpgrade},
		{"frames instead of 101", []step{
			c(2, 0, []byte("GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n")),
			s(2, 0, settings()),
		}, ErrNoUpgrade},
		{"HTTP/1.1 without upgrade", []step{
			c(0, 0, []byte("POST / HTTP/1.1\r\nHost: x\r\n\r\n")),
		}, ErrNotHTTP2},
		{"not HTTP", []step{
			c(0, 0, []byte("\x16\x03\x01\x02\x00\x01")),
		}, ErrNotHTTP2},
		{"server first frame not SETTINGS", []step{
			c(2, 0, preface, settings()),
			s(2, 0, ping(0)),
		}, ErrProtocol},
		{"server frame on an idle stream", []step{
			c(2, 0, preface, settings()),
			s(2, 1, settings(), headers(1, eh, "x")),
		}, ErrProtocol},
		{"client HEADERS on an even stream", []step{
			c(2, 0, preface, settings(), headers(2, eh, "x")),
		}, ErrProtocol},
		{"client DATA on an idle stream", []step{
			c(2, 0, preface, settings(), data(3, 0, 1)),
		}, ErrProtocol},
		{"client PUSH_PROMISE", []step{
			c(2, 0, preface, settings(), headers(1, eh, "x"), pushPromise(1, 2)),
		}, ErrProtocol},
		{"frame inside a header block", []step{
			c(2, 0, preface, settings(), headers(1, 0, "x"), ping(0)),
		}, ErrFrame},
		{"counts stop at the error", []step{
			c(3, 0, preface, settings(), ping(0), frame(typePing, 0, 0, nil), ping(0)),
			s(3, 0, settings(), settingsAck(), ping(ack)),
		}, ErrFrame},
		{"connection window overflow", []step{
			c(2, 0, preface, settings()),
			s(2, 1, settings(), windowUpdate(0, maxWindow)),
		}, ErrFlowControl},
	} {
		t.Run(tc.name, func(t *testing.T) { run(t, tc.steps, tc.err) })
	}
}

func TestFlowControl(t *testing.T) {
	f := run(t, []step{
		c(2, 0, preface, settings(4, 1<<20)),
		s(2, 1, settings(4, 100)),
		c(2, 1, headers(1, eh, "post"), data(1, 0, 30), headers(3, eh, "post"), frame(typeData, flagPadded, 3, []byte{4, 1, 0, 0, 0, 0})),
		s(2, 1, windowUpdate(1, 50), windowUpdate(0, 1000)),
		s(2, 2, settings(4, 200)),
		c(2, 2, data(1, 0, 10)),
	}, nil)
	for _, w := range []struct {
		stream uint32
		want   int64
	}{
		{0, 65535 - 30 - 6 + 1000 - 10},
		{1, 200 + 50 - 30 - 10},
		{3, 200 - 6},
		{5, 200}, // idle: the initial window
		{2, 0},   // never a client stream
	} {
		if got := f.SendWindow(w.stream); got != w.want {
			t.Errorf("SendWindow(%d) = %d, want %d", w.stream, got, w.want)
		}
	}
	if f.ConnSendWindow() != f.SendWindow(0) {
		t.Errorf("ConnSendWindow %d, SendWindow(0) %d", f.ConnSendWindow(), f.SendWindow(0))
	}
	f.Client(data(1, es, 0))
	if got := f.SendWindow(1); got != 0 {
		t.Errorf("SendWindow of an ended stream = %d, want 0", got)
	}
	// A window may go negative (the client overran it); an initial
	// window change that puts a stream over 2^31-1 is an error.
	f.Client(data(3, 0, 500))
	if got := f.SendWindow(3); got != 200-6-500 {
		t.Errorf("SendWindow(3) = %d, want %d", got, 200-6-500)
	}
	f.Server(windowUpdate(3, 1<<30))
	f.Server(windowUpdate(3, maxWindow-200+6+500-1<<30))
	if got := f.SendWindow(3); got != maxWindow {
		t.Errorf("SendWindow(3) = %d, want 2^31-1", got)
	}
	if f.Err() != nil {
		t.Fatal(f.Err())
	}
	f.Server(settings(4, 201))
	if !errors.Is(f.Err(), ErrFlowControl) {
		t.Fatalf("Err %v, want ErrFlowControl", f.Err())
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"P", true},
		{"PRI * HTTP/2.0\r\n", true},
		{clientPreface + "\x00\x00\x12\x04", true},
		{"", false},
		{"PO", false},
		{"GET / HTTP/1.1\r\n", false},
		{"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n", true},
		{"GET / HTTP/1.1\r\nHost: x\r\nupgrade: websocket, h2c\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", false},
		{"GET / HTTP/1.1\r\n\r\nUpgrade: h2c\r\n", false}, // in the body
		{"\x16\x03\x01", false},
	} {
		if got := Detect([]byte(tc.in)); got != tc.want {
			t.Errorf("Detect(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestTable(t *testing.T) {
	var tb table
	live := map[uint32]bool{}
	next := uint32(1)
	for i := range 20000 {
		switch {
		case len(live) == 0 || (i%3 != 2 && len(live) < MaxStreams):
			if tb.add(next) < 0 {
				t.Fatal("add failed")
			}
			live[next] = true
			next += 2
		default:
			// Close an old one or a recent one.
			var id uint32
			for k := range live {
				id = k
				break
			}
			j := tb.find(id)
			if j < 0 {
				t.Fatalf("stream %d lost", id)
			}
			tb.remove(j)
			delete(live, id)
		}
		if i%1000 == 0 {
			for id := range live {
				if tb.find(id) < 0 {
					t.Fatalf("stream %d lost", id)
				}
			}
			if tb.n != len(live) {
				t.Fatalf("n %d, want %d", tb.n, len(live))
			}
		}
	}
	tb.removeIf(func(s *stream) bool { return s.id%3 == 0 })
	for id := range live {
		if (tb.find(id) >= 0) != (id%3 != 0) {
			t.Fatalf("removeIf: stream %d", id)
		}
	}
}
