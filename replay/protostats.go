package replay

import (
	"sync"
	"sync/atomic"
	"time"
)

// How a turn's wait for the target's answer ended.
type turnEnd int

const (
	endFramed   turnEnd = iota // the protocol's framing: as many answers as the capture shows
	endSize                    // as many bytes as the captured answer
	endQuiet                   // a shorter answer, then Quiet of silence
	endClosed                  // the target closed or reset
	endTurnWait                // TurnWait passed without an answer
	endStopped                 // the replay was cancelled
	numTurnEnds
)

// ProtocolStats counts one protocol's sessions and turns, and how far the
// replay ran behind the captured schedule (paced replays only).
type ProtocolStats struct {
	Sessions uint64 `json:"sessions"`
	Turns    uint64 `json:"turns"`
	// How turns ended: by the protocol's framing, by the captured answer's
	// size, by a shorter answer and silence, by the target closing, or
	// after --turn-wait without an answer.
	Framed   uint64 `json:"framed"`
	BySize   uint64 `json:"by_size"`
	ByQuiet  uint64 `json:"by_quiet"`
	ByClose  uint64 `json:"by_close"`
	TurnWait uint64 `json:"turn_wait"`
	// Lag of the client's writes behind the captured schedule: the largest,
	// and the typical (median, to a power of two of milliseconds).
	LagMaxMs float64 `json:"lag_max_ms"`
	LagP50Ms float64 `json:"lag_p50_ms"`
	Writes   uint64  `json:"paced_writes"`
	// Flow control (HTTP/2): WINDOW_UPDATE frames the replayer added
	// because the target's answers used up windows the capture's own did
	// not refill; client DATA frames held until the target's window had
	// room; of those, frames sent after --turn-wait without it.
	WindowUpdates uint64 `json:"window_updates,omitempty"`
	DataHeld      uint64 `json:"data_held,omitempty"`
	WindowWait    uint64 `json:"window_wait,omitempty"`
	// Renumbering (MySQL's prepared statements): client commands whose
	// statement id was replaced by the target's, and those left as
	// captured because the id had no partner on the target.
	Renumbered    uint64 `json:"renumbered,omitempty"`
	NotRenumbered uint64 `json:"not_renumbered,omitempty"`
}

// lagBuckets: bucket i holds lags below 2^i ms (bucket 0: under 1 ms).
const lagBuckets = 24

type protoCounters struct {
	sessions, turns atomic.Uint64
	ends            [numTurnEnds]atomic.Uint64
	lag             [lagBuckets]atomic.Uint64
	lagMax          atomic.Int64 // nanoseconds
	// Flow control (h2flow.go).
	windowUpdates, dataHeld, windowWait atomic.Uint64
	// Renumbering (framing.go).
	renumbered, unknownIDs atomic.Uint64
}

// protoTable holds the counters of each protocol seen; protocols are few,
// and each player looks its counters up once.
type protoTable struct {
	mu sync.Mutex
	m  map[string]*protoCounters
}

func (t *protoTable) get(name string) *protoCounters {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]*protoCounters)
	}
	c := t.m[name]
	if c == nil {
		c = new(protoCounters)
		t.m[name] = c
	}
	return c
}

func (c *protoCounters) lagged(d time.Duration) {
	if d < 0 {
		d = 0
	}
	for {
		m := c.lagMax.Load()
		if int64(d) <= m || c.lagMax.CompareAndSwap(m, int64(d)) {
			break
		}
	}
	i, ms := 0, d.Milliseconds()
	for ms > 0 && i < lagBuckets-1 {
		ms >>= 1
		i++
	}
	c.lag[i].Add(1)
}

func (t *protoTable) stats() map[string]ProtocolStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) == 0 {
		return nil
	}
	out := make(map[string]ProtocolStats, len(t.m))
	for name, c := range t.m {
		ps := ProtocolStats{
			Sessions: c.sessions.Load(), Turns: c.turns.Load(),
			Framed: c.ends[endFramed].Load(), BySize: c.ends[endSize].Load(), ByQuiet: c.ends[endQuiet].Load(),
			ByClose: c.ends[endClosed].Load(), TurnWait: c.ends[endTurnWait].Load(),
			LagMaxMs:      float64(c.lagMax.Load()) / 1e6,
			WindowUpdates: c.windowUpdates.Load(), DataHeld: c.dataHeld.Load(), WindowWait: c.windowWait.Load(),
			Renumbered: c.renumbered.Load(), NotRenumbered: c.unknownIDs.Load(),
		}
		var n uint64
		for i := range c.lag {
			n += c.lag[i].Load()
		}
		ps.Writes = n
		var seen uint64
		for i := range c.lag {
			if seen += c.lag[i].Load(); n > 0 && seen*2 >= n {
				// The bucket's upper bound, but never above the largest
				// lag seen (which bounds every bucket).
				ps.LagP50Ms = min(float64(uint64(1)<<i), max(ps.LagMaxMs, 1))
				break
			}
		}
		out[name] = ps
	}
	return out
}
