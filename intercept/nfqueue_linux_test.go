package intercept

import (
	"strings"
	"testing"
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
