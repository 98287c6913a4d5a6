package h2frame

import (
	"bytes"
	"testing"
)

func cat(fs ...[]byte) []byte { return bytes.Join(fs, nil) }

// TestNextClientData: the DATA frames of client bytes are found from
// wherever the client side stands, a frame or header split across calls
// included, and showing the bytes up to and past each one keeps the
// framer where it was.
func TestNextClientData(t *testing.T) {
	p := cat(preface, settings(), headers(1, eh, "\x82"), data(1, 0, 10), ping(0), data(1, es, 20), headers(3, eh|es, "\x82"))
	type hit struct {
		at, end int
		stream  uint32
		length  int64
	}
	d1 := len(preface) + 9 + 10
	d2 := d1 + 19 + 17
	want := []hit{{d1, d1 + 9, 1, 10}, {d2, d2 + 9, 1, 20}}

	// Whole, from the start: the preface is looked past.
	f := New()
	var got []hit
	for pos := 0; ; {
		at, end, id, n, ok := f.NextClientData(p[pos:])
		if !ok {
			f.Client(p[pos:])
			break
		}
		got = append(got, hit{pos + at, pos + end, id, n})
		f.Client(p[pos : pos+end])
		pos += end
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("found %+v, want %+v", got, want)
	}
	if f.Err() != nil || f.Requests() != 5 || !f.ClientAtFrameBoundary() {
		t.Fatalf("err %v, requests %d, at a boundary %v", f.Err(), f.Requests(), f.ClientAtFrameBoundary())
	}

	// From every cut: the part shown before the cut stands for bytes
	// already written.
	for cut := 1; cut < len(p); cut++ {
		f := New()
		f.Client(p[:cut])
		var got []hit
		for pos := cut; ; {
			at, end, id, n, ok := f.NextClientData(p[pos:])
			if !ok {
				break
			}
			got = append(got, hit{pos + at, pos + end, id, n})
			f.Client(p[pos : pos+end])
			pos += end
		}
		var w []hit
		for _, h := range want {
			switch {
			case cut <= h.at:
				w = append(w, h)
			case cut < h.end:
				w = append(w, hit{cut, h.end, h.stream, h.length}) // its header began before
			}
		}
		if len(got) != len(w) || (len(w) > 0 && got[0] != w[0]) || (len(w) > 1 && got[1] != w[1]) {
			t.Fatalf("cut %d: found %+v, want %+v", cut, got, w)
		}
	}

	// A DATA header that does not complete in the bytes given is not found.
	f = New()
	f.Client(p[:d1])
	if _, _, _, _, ok := f.NextClientData(p[d1 : d1+8]); ok {
		t.Errorf("a DATA frame found from 8 bytes of its header")
	}
	// Neither are frames after an h2c upgrade request still in HTTP/1.1.
	f = New()
	if _, _, _, _, ok := f.NextClientData([]byte("GET / HTTP/1.1\r\nUpgrade: h2c\r\n")); ok {
		t.Errorf("a DATA frame found in an HTTP/1.1 request")
	}
}

// TestSendAllowance: nothing before the target's SETTINGS; then the
// smaller of the stream's and the connection's windows, the connection's
// alone for a stream the client ended.
func TestSendAllowance(t *testing.T) {
	f := New()
	f.Client(cat(preface, settings(), headers(1, eh, "\x82")))
	if a := f.SendAllowance(1); a != 0 {
		t.Errorf("allowance before the target's SETTINGS %d, want 0", a)
	}
	f.Server(settings(settingInitialWindowSize, 1000))
	if a := f.SendAllowance(1); a != 1000 {
		t.Errorf("allowance %d, want the stream's 1000", a)
	}
	if a := f.SendAllowance(3); a != 1000 {
		t.Errorf("allowance of a stream not open yet %d, want the initial 1000", a)
	}
	f.Server(windowUpdate(1, 200000))
	if a := f.SendAllowance(1); a != 65535 {
		t.Errorf("allowance %d, want the connection's 65535", a)
	}
	f.Client(data(1, 0, 535))
	if a, c := f.SendAllowance(1), f.ConnSendWindow(); a != 65000 || c != 65000 {
		t.Errorf("allowance %d, connection window %d: want 65000", a, c)
	}
	f.Client(data(1, es, 0))
	if a, w := f.SendAllowance(1), f.SendWindow(1); a != 65000 || w != 0 {
		t.Errorf("ended stream: allowance %d, window %d: want the connection's 65000, 0", a, w)
	}
}

// TestWindowUpdates: the target's DATA takes the client's windows below
// half their level; WindowUpdates raises them back, only at a client
// frame boundary, and counts its frames as the client's.
func TestWindowUpdates(t *testing.T) {
	f := New()
	f.Client(cat(preface, settings(settingInitialWindowSize, 16384), headers(1, eh|es, "\x82"), headers(3, eh|es, "\x82")))
	f.Server(cat(settings(), settingsAck(), headers(1, eh, "\x88"), headers(3, eh, "\x88")))
	f.Server(data(1, 0, 8000))
	if f.NeedWindowUpdate() {
		t.Fatalf("window update needed with stream 1 at %d of 16384", f.RecvWindow(1))
	}
	f.Server(data(1, 0, 1000))
	if !f.NeedWindowUpdate() || f.RecvWindow(1) != 16384-9000 || f.RecvWindow(0) != 65535-9000 {
		t.Fatalf("need %v, windows %d, %d", f.NeedWindowUpdate(), f.RecvWindow(1), f.RecvWindow(0))
	}

	// Not inside a client frame, nor inside a header block.
	h5 := headers(5, es, "\x82")
	f.Client(h5[:5])
	if b := f.WindowUpdates(nil); len(b) != 0 || f.ClientAtFrameBoundary() {
		t.Fatalf("window updates %x inside a client frame", b)
	}
	f.Client(h5[5:])
	if b := f.WindowUpdates(nil); len(b) != 0 || f.ClientAtFrameBoundary() {
		t.Fatalf("window updates %x inside a header block", b)
	}
	f.Client(cont(5, eh, "\x84"))

	b := f.WindowUpdates([]byte("x"))
	if want := cat([]byte("x"), windowUpdate(1, 9000)); !bytes.Equal(b, want) {
		t.Fatalf("window updates %x, want %x", b, want)
	}
	if f.RecvWindow(1) != 16384 || f.NeedWindowUpdate() || f.Err() != nil {
		t.Fatalf("stream 1's window %d after the update, need %v, err %v", f.RecvWindow(1), f.NeedWindowUpdate(), f.Err())
	}

	// The connection: below half of 65535. A stream the target ends with
	// the frame needs none.
	f.Server(cat(data(3, 0, 2000), data(1, 0, 8000), data(3, 0, 7000), data(1, 0, 7000)))
	f.Server(data(3, es, 6000))
	if got := f.RecvWindow(0); got != 65535-9000-30000 {
		t.Fatalf("connection window %d", got)
	}
	b = f.WindowUpdates(nil)
	if want := cat(windowUpdate(0, 39000), windowUpdate(1, 15000)); !bytes.Equal(b, want) {
		t.Fatalf("window updates %x, want %x", b, want)
	}
	if f.RecvWindow(0) != 65535 || f.RecvWindow(1) != 16384 {
		t.Errorf("windows %d, %d after the updates", f.RecvWindow(0), f.RecvWindow(1))
	}

	// The client's own WINDOW_UPDATEs raise a window's level: a client
	// granting 1 MiB is kept at 1 MiB.
	f.Client(windowUpdate(0, 1<<20))
	f.Server(data(1, 0, 2000))
	if f.NeedWindowUpdate() {
		t.Errorf("window update needed: connection at %d of %d", f.RecvWindow(0), 65535+1<<20)
	}
	f.Server(headers(1, eh|es, "\x88"))
	if f.Answers() != 4 || f.Requests() != 5 {
		t.Errorf("answers %d, requests %d: want 4 of 5 (window updates are not units)", f.Answers(), f.Requests())
	}
}
