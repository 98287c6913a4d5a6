package intercept

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func TestParseQueueDrops(t *testing.T) {
	// /proc/net/netfilter/nfnetlink_queue: queue, portid, total, copy
	// mode, copy range, queue dropped, user dropped, last id, 1.
	const proc = "    0  12345     0 2 65531     0     0        0  1\n" +
		"    3  67890    17 2   128     5     7   123456  1\n"
	for _, tc := range []struct {
		queue uint16
		want  uint64
		ok    bool
	}{
		{0, 0, true},
		{3, 12, true},
		{30, 0, false},
	} {
		got, ok := parseQueueDrops(strings.NewReader(proc), tc.queue)
		if got != tc.want || ok != tc.ok {
			t.Errorf("queue %d: %d, %v; want %d, %v", tc.queue, got, ok, tc.want, tc.ok)
		}
	}
	if _, ok := parseQueueDrops(strings.NewReader("3 1 2 3 4 x 6 7 1\n"), 3); ok {
		t.Error("a malformed line was accepted")
	}
}

func TestParseQueueOwner(t *testing.T) {
	const proc = "    0  21718     0 2   128     0     0        0  1\n" +
		"    1  30000     0 2   128     0     0        0  1\n" +
		"    3  40000     0 2   128     0     0        0  1\n"
	port, free, ok := parseQueueOwner(strings.NewReader(proc), 1)
	if !ok || port != 30000 || free != 2 {
		t.Fatalf("queue 1: port %d, free %d, %v; want 30000, 2, true", port, free, ok)
	}
	if _, free, ok := parseQueueOwner(strings.NewReader(proc), 2); ok || free != 2 {
		t.Fatalf("queue 2 is free: %v, free %d", ok, free)
	}
	if _, free, _ := parseQueueOwner(strings.NewReader(""), 0); free != 0 {
		t.Fatalf("nothing bound: free %d, want 0", free)
	}
}

// TestVerdictMessage checks the hand-built verdict against the same
// message encoded by the netlink library, with the kernel's numbers
// (linux/netfilter/nfnetlink_queue.h) written out here.
func TestVerdictMessage(t *testing.T) {
	for _, tc := range []struct {
		queue        uint16
		id           uint32
		drop, batch  bool
		typ, verdict uint32
	}{
		{queue: 0, id: 1, typ: 3<<8 | 1, verdict: 1},                           // NFQNL_MSG_VERDICT, NF_ACCEPT
		{queue: 7, id: 0x01020304, drop: true, typ: 3<<8 | 1, verdict: 0},      // NF_DROP
		{queue: 0x1234, id: 99, batch: true, typ: 3<<8 | 3, verdict: 1},        // NFQNL_MSG_VERDICT_BATCH
		{queue: 65535, id: 0xffffffff, drop: true, batch: true, typ: 3<<8 | 3}, // verdict 0
	} {
		hdr := binary.BigEndian.AppendUint32(nil, tc.verdict)
		hdr = binary.BigEndian.AppendUint32(hdr, tc.id)
		attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: 2, Data: hdr}}) // NFQA_VERDICT_HDR
		if err != nil {
			t.Fatal(err)
		}
		data := append([]byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(tc.queue >> 8), byte(tc.queue)}, attrs...)
		want, err := netlink.Message{
			Header: netlink.Header{Length: uint32(16 + len(data)), Type: netlink.HeaderType(tc.typ), Flags: netlink.Request},
			Data:   data,
		}.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got := appendVerdict(nil, tc.queue, tc.id, tc.drop, tc.batch)
		if !bytes.Equal(got, want) {
			t.Errorf("queue %d id %d drop %v batch %v:\n got %x\nwant %x", tc.queue, tc.id, tc.drop, tc.batch, got, want)
		}
		if len(got) != verdictMsgLen {
			t.Errorf("message of %d bytes, verdictMsgLen says %d", len(got), verdictMsgLen)
		}
	}
}
