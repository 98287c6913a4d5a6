package afpacket

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

func TestLookupInterface(t *testing.T) {
	lo, err := LookupInterface("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Name != "lo" || lo.Index <= 0 || lo.HWType != unix.ARPHRD_LOOPBACK || !lo.Up || lo.Cooked() {
		t.Fatalf("lo: %+v (cooked %v)", lo, lo.Cooked())
	}
	if ifi, err := net.InterfaceByName("lo"); err != nil || ifi.Index != lo.Index {
		t.Fatalf("index %d, net says %v (%v)", lo.Index, ifi, err)
	}
	if (Interface{HWType: unix.ARPHRD_NONE}).Cooked() != true || (Interface{HWType: unix.ARPHRD_ETHER}).Cooked() {
		t.Error("cooked: only non-Ethernet, non-loopback links")
	}
	for _, tc := range []struct{ name, want string }{
		{"nosuch0", "no such network interface"},
		{"averyveryverylongname", "bad interface name"},
	} {
		_, err := LookupInterface(tc.name)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if tc.name == "nosuch0" && !errors.Is(err, unix.ENODEV) {
			t.Errorf("%v does not match ENODEV", err)
		}
	}
}

// TestSocket opens a filtered packet socket on lo and reads its counters:
// the filter is in place before anything is queued, and a packet it
// accepts is counted.
func TestSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_RAW)")
	}
	lo, err := LookupInterface("lo")
	if err != nil {
		t.Fatal(err)
	}
	fd, err := Open(lo.Cooked())
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := AttachFilter(fd, nil); err == nil {
		t.Error("an empty program was attached")
	}
	// Accept UDP to port 9 only (IPv4 in an Ethernet frame, no options).
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 23, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_UDP, SkipFalse: 3},
		bpf.LoadAbsolute{Off: 36, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 9, SkipFalse: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := AttachFilter(fd, prog); err != nil {
		t.Fatal(err)
	}
	if err := Bind(fd, lo.Index, ProtoAll); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadStats(fd); err != nil { // reset
		t.Fatal(err)
	}
	c, err := net.Dial("udp4", "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var total Stats
	for deadline := time.Now().Add(5 * time.Second); total.Packets < 2; {
		c.Write([]byte("x"))
		st, err := ReadStats(fd)
		if err != nil {
			t.Fatal(err)
		}
		total.Packets += st.Packets
		total.Drops += st.Drops
		if time.Now().After(deadline) {
			t.Fatalf("no packets counted: %+v", total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 2048)
	n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
	if err != nil || n < 14+20+8 || buf[14+9] != unix.IPPROTO_UDP {
		t.Fatalf("read %d bytes (%v): %x", n, err, buf[:n])
	}
}

func TestSendOnlySocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_RAW)")
	}
	lo, err := LookupInterface("lo")
	if err != nil {
		t.Fatal(err)
	}
	fd, err := Open(false)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := Bind(fd, lo.Index, ProtoNone); err != nil {
		t.Fatal(err)
	}
	if err := Bind(fd, 1<<30, ProtoNone); err == nil || !strings.HasPrefix(err.Error(), "bind: ") {
		t.Fatalf("bind to no interface: %v", err)
	}
}
