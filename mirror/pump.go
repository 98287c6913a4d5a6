package mirror

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/stackcopy/stackcopy/capture"
	"github.com/stackcopy/stackcopy/session"
)

// pumpConfig says how one pass over a source is read.
type pumpConfig struct {
	tracker session.TrackerConfig
	// ahead is how many segments the reader may decode ahead of the
	// tracker. Live capture needs a deep queue so a burst of tracker work
	// does not leave the kernel ring full; a file is read at the
	// replayer's pace, and a deep queue would only hold memory (segments
	// of up to 64 KiB each) beside the replayer's own bounded queues.
	ahead int
	// idle, when not 0, expires sessions with no captured traffic for that
	// long, checked once a second: a live capture has no end at which the
	// tracker would flush them.
	idle time.Duration
	// report, when not 0, logs the capture's counters this often.
	report time.Duration
}

// pump is the one read loop, for files and live capture alike: segments
// from src go to a tracker that hands session events to sink. A reader
// goroutine decodes while the tracker and the replayer work. pump returns
// at src's end (io.EOF: nil), on src's error, or when ctx ends (nil),
// after the segments already read were fed and the open sessions flushed.
// The reader checks ctx between segments, so a source whose Next blocks
// (live) must be closed by its owner when ctx ends. pump does not close
// src.
func pump(ctx context.Context, src capture.Source, sink session.Sink, pc pumpConfig, log *slog.Logger) (session.TrackerStats, error) {
	segs := make(chan capture.Segment, pc.ahead)
	var readErr error // written before segs is closed
	go func() {
		defer close(segs)
		for ctx.Err() == nil {
			seg, err := src.Next()
			if err != nil {
				if err != io.EOF {
					readErr = err
				}
				return
			}
			segs <- seg
		}
	}()

	tr := session.NewTracker(pc.tracker, sink)
	var tick <-chan time.Time // nil: no expiry
	if pc.idle > 0 {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
	}
	report := time.Now()
	for {
		select {
		case seg, ok := <-segs:
			if !ok { // the reader is done
				tr.Flush()
				if ctx.Err() != nil {
					return tr.Stats(), nil // asked to stop: the normal way out of a live capture
				}
				return tr.Stats(), readErr
			}
			tr.Add(seg)
		case now := <-tick:
			tr.Expire(now, pc.idle)
			if pc.report > 0 && now.Sub(report) >= pc.report {
				report = now
				c := src.Counts()
				log.Info("capture", "packets", c.Packets, "tcp", c.TCP, "kernel_drops", c.Drops, "sessions", tr.Stats().Sessions)
			}
		}
	}
}
