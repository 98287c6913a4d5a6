package mmsg

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestRecv: datagrams queued on a socket pair come out of one Recv, each
// in its buffer, a longer one cut with its real size, and their source
// addresses where SetName put them; an empty socket says EAGAIN.
func TestRecv(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	// A named sender, so that the datagrams carry a source address.
	if err := unix.Bind(fds[1], &unix.SockaddrUnix{Name: fmt.Sprintf("@stackcopy-mmsg-test-%d", os.Getpid())}); err != nil {
		t.Fatal(err)
	}
	sent := [][]byte{[]byte("one"), []byte("two!"), bytes.Repeat([]byte("x"), 100)}
	for _, p := range sent {
		if _, err := unix.Write(fds[1], p); err != nil {
			t.Fatal(err)
		}
	}
	b := New(4, 64)
	var names [4]unix.RawSockaddrUnix
	for i := range names {
		b.SetName(i, unsafe.Pointer(&names[i]), unsafe.Sizeof(names[i]))
	}
	n, errno := b.Recv(uintptr(fds[0]), unix.MSG_DONTWAIT|unix.MSG_TRUNC)
	if errno != 0 || n != len(sent) {
		t.Fatalf("Recv: %d, %v; want %d", n, errno, len(sent))
	}
	for i, p := range sent {
		want := p[:min(len(p), 64)]
		if !bytes.Equal(b.Data(i), want) || b.Size(i) != len(p) {
			t.Errorf("datagram %d: %q (size %d), want %q (size %d)", i, b.Data(i), b.Size(i), want, len(p))
		}
		if b.NameLen(i) == 0 || names[i].Family != unix.AF_UNIX {
			t.Errorf("datagram %d: source address of %d bytes, family %d", i, b.NameLen(i), names[i].Family)
		}
	}
	if n, errno := b.Recv(uintptr(fds[0]), unix.MSG_DONTWAIT); n != 0 || errno != unix.EAGAIN {
		t.Errorf("Recv on an empty socket: %d, %v; want EAGAIN", n, errno)
	}
}
