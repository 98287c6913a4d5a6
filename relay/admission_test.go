package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestAdmission: one source holds at most MaxHandshakesPerSource slots;
// once only the reserve is free, only sources holding none get one; a
// full server refuses everyone; released slots are reused.
func TestAdmission(t *testing.T) {
	a := newAdmission(16, 8) // reserve: 4
	flood, other, third := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	for i := range 8 {
		if r, ok := a.acquire(flood); !ok {
			t.Fatalf("flood slot %d refused: %v", i, r)
		}
	}
	if r, ok := a.acquire(flood); ok || r != rejectPerSource {
		t.Fatalf("9th slot of one source: %v %v, want %v", ok, r, rejectPerSource)
	}
	for i := range 4 { // total 12: 4 free, all reserved
		if r, ok := a.acquire(other); !ok {
			t.Fatalf("other slot %d refused: %v", i, r)
		}
	}
	if r, ok := a.acquire(other); ok || r != rejectReserved {
		t.Fatalf("a source holding slots, only the reserve left: %v %v, want %v", ok, r, rejectReserved)
	}
	for i := range 4 { // the reserve: one each for sources holding none
		src := netip.AddrFrom4([4]byte{10, 1, 0, byte(i)})
		if r, ok := a.acquire(src); !ok {
			t.Fatalf("reserved slot %d refused to a new source: %v", i, r)
		}
	}
	if r, ok := a.acquire(third); ok || r != rejectFull {
		t.Fatalf("full: %v %v, want %v", ok, r, rejectFull)
	}
	a.release(flood)
	if _, ok := a.acquire(third); !ok {
		t.Fatal("a released slot is not reused")
	}
	if n := a.inProgress(); n != 16 {
		t.Fatalf("in progress %d, want 16", n)
	}
	for range 8 {
		a.release(flood)
	}
	if _, ok := a.active[flood]; ok || a.inProgress() != 8 {
		t.Fatalf("after releasing every slot of a source: %v in progress, entry kept %v", a.inProgress(), a.active[flood])
	}
}

func TestSourceOf(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("198.18.5.2"), Port: 1}, "198.18.5.2"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:198.18.5.2"), Port: 1}, "198.18.5.2"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 1, Zone: "eth0"}, "fe80::"},
	} {
		if got := sourceOf(tc.addr); got.String() != tc.want {
			t.Errorf("sourceOf(%v) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

// TestRejectLogAggregates: a flood makes a bounded number of lines: the
// first few rejections in full, then one summary per interval naming the
// count, the addresses, the busiest and the reasons.
func TestRejectLogAggregates(t *testing.T) {
	var logs logBuffer
	start := time.Now()
	l := newRejectLog(logs.logger(), start)
	flood := netip.MustParseAddr("198.18.5.2")
	for i := range 100000 {
		l.note(flood, fmt.Sprintf("198.18.5.2:%d", i%60000+1024), rejectPerSource, nil)
	}
	for i := range 5 {
		l.note(netip.AddrFrom4([4]byte{198, 18, 6, byte(i)}), "x", rejectHandshake, errors.New("wrong key"))
	}
	l.flush(start.Add(10 * time.Second))
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != rejectDetails+1 {
		t.Fatalf("%d lines for 100005 rejections, want %d:\n%s", len(lines), rejectDetails+1, logs.String())
	}
	sum := lines[len(lines)-1]
	for _, want := range []string{
		"relay: rejected 100005 connections from 6 addresses (top: 198.18.5.2 ×100000, 198.18.6.0 ×1, 198.18.6.1 ×1) in the last 10s",
		"too many handshakes from its address 100000, handshake failed 5",
	} {
		if !strings.Contains(sum, want) {
			t.Fatalf("summary %q lacks %q", sum, want)
		}
	}
	// A quiet interval logs nothing; a few rejections are all in full.
	var quiet logBuffer
	l.log = quiet.logger()
	l.flush(start.Add(20 * time.Second))
	l.note(flood, "198.18.5.2:1", rejectHandshake, errors.New("relay: authentication failed"))
	l.flush(start.Add(30 * time.Second))
	if got := quiet.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "remote=198.18.5.2:1") || !strings.Contains(got, "authentication failed") {
		t.Fatalf("one rejection in an interval: %q, want it in one full line", got)
	}
	// The addresses told apart are bounded.
	for i := range maxRejectSources + 100 {
		l.note(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), "", rejectFull, nil)
	}
	if len(l.bySource) != maxRejectSources || l.others != 100 {
		t.Fatalf("%d sources kept, %d others; want %d, 100", len(l.bySource), l.others, maxRejectSources)
	}
}

// TestFloodDoesNotLockOutMirror: one address opens connections as fast as
// it can and keeps them silent; a mirror from another address still
// connects at once, registers and gets its answers, the flooder never gets
// past the challenge, and the log stays a few lines.
func TestFloodDoesNotLockOutMirror(t *testing.T) {
	srv := startServer(t, ServerConfig{HandshakeTimeout: time.Second}, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	flooder := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	var connects, served atomic.Uint64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for ctx.Err() == nil {
				conn, err := flooder.DialContext(ctx, "tcp", srv.addr)
				if err != nil {
					continue
				}
				connects.Add(1)
				// Silent: a slot is held until the handshake deadline,
				// unless the server refused it. Read what comes.
				conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				b, _ := io.ReadAll(conn)
				if len(b) > len(magic)+frameHeaderLen+challengeLen {
					served.Add(1)
				}
				conn.Close()
			}
		})
	}
	// Let the flood fill what it can.
	waitFor(t, "flood refused", func() bool { return srv.Stats().Rejected > 100 })
	start := time.Now()
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer dcancel()
	c, err := Dial(dctx, []string{srv.addr}, keyA, ClientConfig{Channels: 4})
	if err != nil {
		t.Fatalf("mirror during the flood: %v (flood: %d connects, stats %+v)", err, connects.Load(), srv.Stats())
	}
	defer c.Close()
	took := time.Since(start)
	if err := c.Register(client4, target4); err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	// The server may still be failing the flood's last handshakes: their
	// rejections belong to this interval, before the flush below.
	waitFor(t, "the flood's handshakes to end", func() bool { return srv.Stats().Handshakes == 0 })
	st := srv.Stats()
	t.Logf("flood: %d connects, %d rejected, %d failed handshakes; mirror connected in %v", connects.Load(), st.Rejected, st.AuthFailures, took)
	if took > time.Second {
		t.Errorf("the mirror took %v to connect during the flood", took)
	}
	if served.Load() != 0 {
		t.Errorf("%d flood connections got more than the challenge", served.Load())
	}
	if st.MirrorsConnected != 4 {
		t.Errorf("%d mirror connections, want 4", st.MirrorsConnected)
	}
	srv.rejects.flush(time.Now())
	if n := strings.Count(srv.log.String(), "rejected"); n > rejectDetails+2 {
		t.Errorf("%d log lines of rejections for %d connects:\n%s", n, connects.Load(), srv.log.String())
	}
}

// TestHeldNotice: an intercept tells the mirror which of its registrations
// it had been holding answers for; the client counts them and warns once
// for a burst. A client that did not ask (an older release) is told
// nothing.
func TestHeldNotice(t *testing.T) {
	var srv *testServer
	srv = startServer(t, ServerConfig{OnRegister: func(clients []netip.AddrPort) {
		for _, c := range clients {
			go srv.NotifyHeld(c, uint64(c.Port()%10)) // as intercept: from another goroutine, later
		}
	}}, "")
	var logs logBuffer
	c, _ := dial(t, []string{srv.addr}, keyA, ClientConfig{Logger: logs.logger()})
	for i := range 100 {
		if err := c.Register(netip.AddrPortFrom(client4.Addr(), uint16(40000+i)), target4); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "held notices", func() bool { return c.Stats().HeldByIntercept == 100 })
	if st := c.Stats(); st.HeldAnswers != 450 {
		t.Fatalf("held answers %d, want 450", st.HeldAnswers)
	}
	c.Close()
	if n := strings.Count(logs.String(), "was holding answers"); n < 1 || n > 2 {
		t.Fatalf("%d warnings for 100 notices, want 1 or 2 (the first, then the rest at close):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "--hold") {
		t.Fatalf("the warning does not name --hold:\n%s", logs.String())
	}
	// NotifyHeld counts a notice after queuing it, so the client may
	// have read the last one before the server counted it.
	waitFor(t, "the server to count 100 notices", func() bool { return srv.Stats().HeldNotices == 100 })

	// An older client: a random nonce, no feature asked for.
	conn, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := oldClientHandshake(conn, keyA); err != nil {
		t.Fatal(err)
	}
	old := netip.MustParseAddrPort("198.18.1.99:40000")
	reg := appendRegisterFrames(nil, []registration{{old, target4}})
	reg = appendFrame(reg, typePing, binary.BigEndian.AppendUint64(nil, 1))
	if _, err := conn.Write(reg); err != nil {
		t.Fatal(err)
	}
	fr := frameReader{r: conn}
	if typ, _, err := fr.next(clientExpects); err != nil || typ != typePong {
		t.Fatalf("old client: %v %v, want a pong", typ, err)
	}
	if srv.NotifyHeld(old, 3) {
		t.Fatal("a held notice was queued for a client that did not ask for them")
	}
}

// oldClientHandshake is clientHandshake as the first release wrote it:
// the nonce all random.
func oldClientHandshake(rw io.ReadWriter, key Key) error {
	rw.Write(magic[:])
	var got [4]byte
	if _, err := io.ReadFull(rw, got[:]); err != nil {
		return err
	}
	fr := frameReader{r: rw}
	_, challenge, err := fr.next(clientExpectsChall)
	if err != nil {
		return err
	}
	challenge = bytes.Clone(challenge)
	nonce := make([]byte, nonceLen)
	rand.Read(nonce)
	if nonceFeatures(nonce) != 0 {
		nonce[0] ^= 0xff // 2^-56: not this time
	}
	rw.Write(appendFrame(nil, typeAuth, append(nonce, clientProof(key, challenge, nonce)...)))
	_, _, err = fr.next(clientExpectsOK)
	return err
}

func TestHeldFrames(t *testing.T) {
	var in []HeldNotice
	for i := range 70000 { // more than one frame's count
		in = append(in, HeldNotice{Client: netip.AddrPortFrom(client4.Addr(), uint16(1+i%60000)), Answers: uint32(i)})
	}
	in = append(in, HeldNotice{Client: client6, Answers: 1<<32 - 1})
	b := appendHeldFrames(nil, in)
	fr := frameReader{r: bytes.NewReader(b)}
	var out, dst []HeldNotice
	for {
		typ, p, err := fr.next(clientExpects)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || typ != typeHeld {
			t.Fatalf("%v %v", typ, err)
		}
		if dst, err = decodeHeld(p, dst); err != nil {
			t.Fatal(err)
		}
		out = append(out, dst...)
	}
	if len(out) != len(in) || out[0] != in[0] || out[len(out)-1] != in[len(in)-1] {
		t.Fatalf("round trip: %d notices, want %d", len(out), len(in))
	}
	for _, bad := range [][]byte{
		{0, 1, 4, 198, 18, 1, 7, 0x9c, 0x41, 0, 0, 0},       // truncated count
		{0, 2, 4, 198, 18, 1, 7, 0x9c, 0x41, 0, 0, 0, 1},    // fewer entries than counted
		{0, 1, 4, 198, 18, 1, 7, 0x9c, 0x41, 0, 0, 0, 1, 9}, // trailing byte
		{0, 1, 4, 0, 0, 0, 0, 0x9c, 0x41, 0, 0, 0, 1},       // unspecified address
	} {
		if _, err := decodeHeld(bad, nil); err == nil {
			t.Errorf("decodeHeld(% x) accepted", bad)
		}
	}
	var nonce [nonceLen]byte
	copy(nonce[:], featureMark)
	nonce[len(featureMark)] = featureHeld
	if nonceFeatures(nonce[:]) != featureHeld || nonceFeatures(make([]byte, nonceLen)) != 0 {
		t.Fatal("nonce features")
	}
}
