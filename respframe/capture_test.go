package respframe

import (
	"testing"

	"github.com/stackcopy/stackcopy/internal/framekit/framekittest"
	"github.com/stackcopy/stackcopy/internal/pcaptest"
)

// TestCapture replays real traffic captured on loopback from redis-server
// 7.0.15: redis-benchmark -P 16 (inline and array PING, SET, GET, INCR,
// LPUSH, MSET, LRANGE_100), redis-cli sessions (MULTI/EXEC, HELLO 3,
// BLPOP, RESP3 types from DEBUG PROTOCOL, SUBSCRIBE and PSUBSCRIBE in
// RESP2 and RESP3 with published messages), and an inline session of
// SUBSCRIBE, UNSUBSCRIBE with and without subscriptions, HELLO 3 and
// RESET. Every connection must frame without error, every command be
// answered, and at every turn boundary (where the server spoke after the
// client) all the commands sent before the turn be answered, as the
// clients waited for their answers.
func TestCapture(t *testing.T) {
	conns := pcaptest.Conns(t, "testdata/redis.pcap", 26379)
	if len(conns) < 10 {
		t.Fatalf("%d connections in the capture", len(conns))
	}
	framekittest.Capture(t, New, conns)
}
