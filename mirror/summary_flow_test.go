package mirror

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/replay"
)

// TestSummaryFlowControl: a protocol line tells HTTP/2's flow control only
// when the replayer added window updates or held DATA frames.
func TestSummaryFlowControl(t *testing.T) {
	s := &Summary{Replay: replay.Stats{Protocols: map[string]replay.ProtocolStats{
		"http2": {Sessions: 2, Turns: 5, Framed: 5, WindowUpdates: 7, DataHeld: 3, WindowWait: 1},
		"redis": {Sessions: 1, Turns: 2, Framed: 2},
	}}}
	var b bytes.Buffer
	s.WriteText(&b)
	lines := strings.Split(b.String(), "\n")
	var h2, redis string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "  protocol  http2:"):
			h2 = l
		case strings.HasPrefix(l, "  protocol  redis:"):
			redis = l
		}
	}
	if !strings.HasSuffix(h2, "; flow control: 7 window updates added, 3 DATA frames held for the target's window (1 sent after --turn-wait without it)") {
		t.Errorf("http2 line %q", h2)
	}
	if redis == "" || strings.Contains(redis, "flow control") {
		t.Errorf("redis line %q", redis)
	}
}
