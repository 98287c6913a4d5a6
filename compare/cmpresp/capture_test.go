package cmpresp

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/compare/cmptest"
)

// TestCapture decodes traffic captured from redis-server 7.0.15 (see
// respframe's TestCapture for what it holds).
func TestCapture(t *testing.T) {
	keys := slices.Sorted(maps.Keys(cmptest.CheckCapture(t, Protocol(), "../../respframe/testdata/redis.pcap", 26379, 10)))
	t.Logf("keys: %s", strings.Join(keys, ", "))
	for _, k := range []string{"PING", "SET", "GET", "INCR", "LPUSH", "MSET", "LRANGE", "MULTI", "EXEC", "HELLO", "BLPOP", "SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "RESET", "DEBUG PROTOCOL"} {
		if !slices.Contains(keys, k) {
			t.Errorf("no %s request in the capture", k)
		}
	}
}
