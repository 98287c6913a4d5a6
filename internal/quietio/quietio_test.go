package quietio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback TCP here: %v", err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		a.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a, r.c
}

// pattern returns n bytes that differ from any shifted copy of themselves.
func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8 + seed)
	}
	return b
}

// transfer runs write on a's side (then closes a for writing) while r
// reads b to the end, and checks that r read want.
func transfer(t *testing.T, a net.Conn, r io.Reader, write func() (int64, error), want []byte) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		n, err := write()
		if err == nil && n != int64(len(want)) {
			err = fmt.Errorf("wrote %d of %d bytes without an error", n, len(want))
		}
		a.(*net.TCPConn).CloseWrite()
		errc <- err
	}()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written, in order", len(got), len(want))
	}
}

func TestReadWriteAndEOF(t *testing.T) {
	a, b := tcpPair(t)
	qa, qb := New(a), New(b)
	if qa.rc == nil || qb.rc == nil {
		t.Fatal("a TCP connection has a socket, but New did not take it")
	}
	// More than the socket buffers hold, so Write must wait for the reader.
	want := pattern(8<<20, 1)
	transfer(t, a, qb, func() (int64, error) {
		n, err := qa.Write(want)
		return int64(n), err
	}, want)
	if n, err := qb.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer's FIN: %d, %v; want 0, io.EOF", n, err)
	}
}

func TestWriteBuffers(t *testing.T) {
	a, b := tcpPair(t)
	qa := New(a)
	// More buffers than one writev takes, empty ones among them, and more
	// bytes than the socket buffers hold: partial writes.
	var bufs net.Buffers
	var want []byte
	for i := range 3000 {
		p := pattern(i%7*1500, i)
		bufs = append(bufs, p)
		want = append(want, p...)
	}
	transfer(t, a, b, func() (int64, error) { return qa.WriteBuffers(bufs) }, want)
}

func TestDeadlineAndClose(t *testing.T) {
	a, _ := tcpPair(t)
	qa := New(a)
	a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := qa.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v; want os.ErrDeadlineExceeded", err)
	}
	a.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := qa.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read across Close: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a waiting Read")
	}
	if _, err := qa.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v; want net.ErrClosed", err)
	}
}

func TestPeerReset(t *testing.T) {
	a, b := tcpPair(t)
	qa := New(a)
	b.(*net.TCPConn).SetLinger(0)
	b.Close() // an RST
	var err error
	for range 100 { // the first writes may still be accepted
		if _, err = qa.Write(pattern(64<<10, 0)); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) {
		t.Fatalf("Write to a reset connection: %v; want an *os.SyscallError", err)
	}
}

func TestWithoutSocket(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	qa, qb := New(a), New(b)
	if qa.rc != nil {
		t.Fatal("net.Pipe has no socket, but New found one")
	}
	go func() {
		qa.WriteBuffers(net.Buffers{[]byte("ab"), nil, []byte("cd")})
		qa.Write([]byte("e"))
		a.Close()
	}()
	got, err := io.ReadAll(qb)
	if err != nil || string(got) != "abcde" {
		t.Fatalf("read %q, %v; want \"abcde\", nil", got, err)
	}
}

// BenchmarkWriteRead: one small write and one read, as a relay channel
// makes them. No allocation per call.
func BenchmarkWriteRead(b *testing.B) {
	a, c := tcpPair(b)
	qa, qc := New(a), New(c)
	msg := make([]byte, 64)
	buf := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := qa.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(qc, buf); err != nil {
			b.Fatal(err)
		}
	}
}
