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
