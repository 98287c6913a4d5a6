package wire_test

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/wire"
)

// TestTUNReadAfterClose: a reader blocked on the TUN ends with an error
// wrapping os.ErrClosed when the device is closed, so the engine can tell
// a normal shutdown from a failure (it once logged "use of closed file" as
// a warning on every exit).
func TestTUNReadAfterClose(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (creates a TUN device)")
	}
	tun, err := wire.OpenTUN(fmt.Sprintf("sctest%d", os.Getpid()%100000))
	if err != nil {
		t.Fatal(err)
	}
	bufs := [][]byte{make([]byte, wire.ReadBufferSize)}
	pkts := make([][]byte, 1)
	done := make(chan error, 1)
	go func() {
		_, err := tun.Read(bufs, pkts)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the reader block
	if err := tun.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return within 5s of Close")
	}
	if _, err := tun.Write([]wire.Packet{{Bufs: [][]byte{{0x45}}}}); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close: %v, want os.ErrClosed", err)
	}
}
