package mirror

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/stackcopy/stackcopy/capture"
	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/hostnet"
	"github.com/stackcopy/stackcopy/netstack"
	"github.com/stackcopy/stackcopy/relay"
	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/session"
)

// Monitor watches a Run while it works: the progress line, the periodic
// stats line, SIGUSR1 and the metrics endpoint all read Snapshot, which
// loads the same atomic counters the summary is made of (the replayer's,
// the stack's, the relay client's), so watching costs nothing on the
// packet and session paths. The zero value is ready; one Monitor watches
// one Run at a time.
type Monitor struct {
	cur  atomic.Pointer[watched]
	last atomic.Pointer[Snapshot] // the final counters of the Run that ended
}

// watched is what a running Run exposes to its Monitor.
type watched struct {
	start   time.Time
	live    bool
	copies  uint64 // players per captured session (-n)
	rp      *replay.Replayer
	st      *netstack.Stack
	rc      *relay.Client   // nil: no intercepts
	routes  *hostnet.Device // nil: no TUN
	cmp     *compare.Collector
	pre     *prepass      // files: the pre-pass count
	sink    *countingSink // files: sessions the reader reached
	liveSrc atomic.Pointer[capture.LiveSource]
}

// RunMonitored is Run, watched by m (nil: not watched).
func RunMonitored(ctx context.Context, cfg Config, log *slog.Logger, m *Monitor) (*Summary, error) {
	return run(ctx, cfg, log, m)
}

// Snapshot is a Run's counters at one moment. Running is false before a
// Run starts (the zero Snapshot) and after it ended (its final counters).
type Snapshot struct {
	Running bool
	Live    bool
	Elapsed time.Duration

	Replay replay.Stats
	Stack  netstack.Stats
	Relay  *relay.ClientStats // with intercepts
	// Compare: the comparison's counts so far, with --compare.
	Compare *compare.Stats

	// Files: Total is the sessions (players: -n copies and baseline
	// included) the capture files hold for all passes, once the pre-pass
	// counted them (TotalKnown); before, TotalSoFar is the count so far.
	Total      uint64
	TotalKnown bool
	// Reached: sessions the reader has handed to the replayer.
	Reached uint64
	// PerSession: sessions replayed per captured session (-n).
	PerSession uint64
	// NotMatching: client SYNs in the capture files whose server matches
	// no -x entry (pre-pass, per pass).
	NotMatching uint64

	// Live: packets captured and lost by the kernel before they were read.
	CapturePackets, CaptureDrops uint64
	// TUN drops (when there is a TUN).
	TUN                    bool
	TUNTxDrops, TUNRxDrops uint64
}

// Ended is the number of sessions that ended, in any way.
func (s Snapshot) Ended() uint64 {
	r := s.Replay
	return r.Completed + r.ClientResets + r.TargetResets + r.Refused + r.TimedOut + r.Gaps + r.Overflowed + r.Interrupted + r.Failed
}

// NotCompleted is the number of sessions that ended without completing.
func (s Snapshot) NotCompleted() uint64 {
	return s.Ended() - s.Replay.Completed - s.Replay.ClientResets
}

// Open is the number of sessions being replayed now.
func (s Snapshot) Open() uint64 {
	if e := s.Ended(); s.Replay.Sessions > e {
		return s.Replay.Sessions - e
	}
	return 0
}

// Snapshot returns the counters of the Run being watched now.
func (m *Monitor) Snapshot() Snapshot {
	w := m.cur.Load()
	if w == nil {
		if last := m.last.Load(); last != nil {
			return *last
		}
		return Snapshot{}
	}
	s := Snapshot{Running: true, Live: w.live, Elapsed: time.Since(w.start), Replay: w.rp.Stats(), Stack: w.st.Stats(), PerSession: w.copies}
	if w.rc != nil {
		rs := w.rc.Stats()
		s.Relay = &rs
	}
	if w.cmp != nil {
		cs := w.cmp.Stats()
		s.Compare = &cs
	}
	if w.pre != nil {
		s.Total, s.TotalKnown = w.pre.players.Load(), w.pre.done.Load()
		s.NotMatching = w.pre.unmatched.Load()
		s.Reached = w.sink.players.Load()
	}
	if src := w.liveSrc.Load(); src != nil {
		c := src.Counts()
		s.CapturePackets, s.CaptureDrops = c.Packets, c.Drops
	}
	if w.routes != nil {
		s.TUN = true
		tx, rx := w.routes.Drops()
		s.TUNTxDrops, s.TUNRxDrops = tx, rx
	}
	return s
}

// attach starts watching w; detach stops (the Run returned).
func (m *Monitor) attach(w *watched) {
	if m != nil {
		m.cur.Store(w)
	}
}

func (m *Monitor) detach() {
	if m != nil {
		last := m.Snapshot()
		last.Running = false
		m.last.Store(&last)
		m.cur.Store(nil)
	}
}

// ProgressLine formats one line of progress from cur, with rates over the
// time since prev (a zero prev: since the start). It fits a terminal line
// of about 160 columns and is also the periodic stats line in a log.
func ProgressLine(cur, prev Snapshot) string {
	var b strings.Builder
	r := cur.Replay
	dt := (cur.Elapsed - prev.Elapsed).Seconds()
	rate := func(now, before uint64) float64 {
		if dt <= 0 || now < before {
			return 0
		}
		return float64(now-before) / dt
	}
	ended := cur.Ended()
	if cur.Live {
		fmt.Fprintf(&b, "live %s: %d sessions (%.1f/s), %d open", roundDur(cur.Elapsed), r.Sessions, rate(r.Sessions, prev.Replay.Sessions), cur.Open())
	} else {
		done := ended + r.Shed*max(1, cur.PerSession)
		switch {
		case cur.TotalKnown && cur.Total > 0:
			fmt.Fprintf(&b, "%d/%d sessions (%.0f%%)", done, cur.Total, 100*float64(min(done, cur.Total))/float64(cur.Total))
		default:
			fmt.Fprintf(&b, "%d sessions of at least %d read so far", done, max(cur.Total, r.Sessions))
		}
		fmt.Fprintf(&b, ", %.1f/s, %d open", rate(ended, prev.Ended()), cur.Open())
	}
	fmt.Fprintf(&b, ", sent %s (%s/s), received %s, %d turns",
		bytesIEC(r.BytesSent), bytesIEC(uint64(rate(r.BytesSent, prev.Replay.BytesSent))), bytesIEC(r.BytesReceived), r.Turns)
	if !cur.Live {
		if lagMax, lagP50, ok := lag(r); ok {
			fmt.Fprintf(&b, ", lag %.0f ms (max %.0f ms)", lagP50, lagMax)
		}
	}
	if n := cur.NotCompleted(); n > 0 {
		fmt.Fprintf(&b, ", %d not completed", n)
	}
	if r.Shed > 0 {
		fmt.Fprintf(&b, ", %d shed (-m)", r.Shed)
	}
	if cur.Live {
		fmt.Fprintf(&b, ", %d kernel drops", cur.CaptureDrops)
	}
	if rs := cur.Relay; rs != nil {
		fmt.Fprintf(&b, ", relay %d/%d up, %d reconnects", rs.Connected, rs.Channels, rs.Reconnects)
	}
	if !cur.Live && cur.TotalKnown && cur.Total > 0 {
		done := ended + r.Shed*max(1, cur.PerSession)
		if perSec := float64(done) / cur.Elapsed.Seconds(); done > 0 && done < cur.Total && perSec > 0 {
			fmt.Fprintf(&b, ", ETA %s", roundDur(time.Duration(float64(cur.Total-done)/perSec*float64(time.Second))))
		}
	}
	return b.String()
}

// lag is the replay's lag behind the captured schedule over all
// protocols: the largest, and the largest of the typical ones.
func lag(r replay.Stats) (maxMs, p50Ms float64, ok bool) {
	for _, p := range r.Protocols {
		if p.Writes == 0 {
			continue
		}
		ok = true
		maxMs = max(maxMs, p.LagMaxMs)
		p50Ms = max(p50Ms, p.LagP50Ms)
	}
	return maxMs, p50Ms, ok
}

func roundDur(d time.Duration) time.Duration {
	if d > time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}

// bytesIEC formats a byte count for people: 12.3 MiB.
func bytesIEC(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// prepass counts, beside the replay, the sessions the capture files hold,
// so progress has a total and an interrupted replay can say how many were
// never started; and the client SYNs whose server matches no -x entry,
// which the tracker never turns into sessions (and so the replayer could
// never count).
type prepass struct {
	players   atomic.Uint64 // sessions (players) in all passes, counted so far
	sessions  atomic.Uint64 // captured sessions matched and kept, one pass
	unmatched atomic.Uint64 // client SYNs not matching -x, one pass
	done      atomic.Bool   // the count is complete
}

// count reads every file once with the same tracker settings as the
// replay and counts the sessions the replayer will be given, until ctx
// ends. players counts what the replayer would make of each session.
func (p *prepass) count(ctx context.Context, cfg *Config, keep func(netip.AddrPort) bool, players func(session.SessionKey) uint64) error {
	sink := &countingSink{cfg: cfg, keep: keep, perSession: players}
	tc := trackerConfig(cfg)
	tc.ServerData = false
	var unmatched synDedup
	for _, path := range cfg.Inputs {
		src, err := capture.OpenFile(path)
		if err != nil {
			return err
		}
		src.LengthsOnly() // counting needs the lengths, not the bytes
		tr := session.NewTracker(tc, sink)
		for ctx.Err() == nil {
			seg, err := src.Next()
			if err != nil {
				break // the replay reports the file's errors
			}
			if seg.Flags&capture.FlagSYN != 0 && seg.Flags&capture.FlagACK == 0 {
				if _, ok := cfg.Transfers.Match(seg.Dst); !ok && unmatched.first(seg) {
					p.unmatched.Add(1)
				}
			}
			tr.Add(seg)
			p.players.Store(sink.players.Load() * uint64(cfg.Loops))
		}
		tr.Flush()
		src.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	p.sessions.Store(sink.sessions.Load())
	p.players.Store(sink.players.Load() * uint64(cfg.Loops))
	p.done.Store(true)
	return nil
}

// synDedup recognizes a retransmitted client SYN (same 4-tuple and ISN).
// It forgets everything past 64 Ki entries: a retransmission across that
// reset counts twice, which is rare and harmless for a count shown to
// people, while the memory stays bounded on any capture.
type synDedup map[[2]netip.AddrPort]uint32

func (d *synDedup) first(seg capture.Segment) bool {
	if *d == nil || len(*d) >= 1<<16 {
		*d = make(synDedup)
	}
	k := [2]netip.AddrPort{seg.Src, seg.Dst}
	if isn, ok := (*d)[k]; ok && isn == seg.Seq {
		return false
	}
	(*d)[k] = seg.Seq
	return true
}

// countingSink counts the sessions handed to the replayer (EvOpen matched
// by -x and kept by -r) and passes every event on to next (nil: counts
// only, for the pre-pass).
type countingSink struct {
	next session.Sink
	cfg  *Config
	keep func(netip.AddrPort) bool
	// perSession is what the replayer makes of a session: -n copies
	// and a baseline copy.
	perSession func(session.SessionKey) uint64
	sessions   atomic.Uint64
	players    atomic.Uint64
}

func (c *countingSink) Event(k session.SessionKey, ev session.Event) {
	if ev.Kind == session.EvOpen {
		if _, ok := c.cfg.Transfers.Match(k.Server); ok && (c.keep == nil || c.keep(k.Client)) {
			c.sessions.Add(1)
			c.players.Add(c.perSession(k))
		}
	}
	if c.next != nil {
		c.next.Event(k, ev)
	}
}
