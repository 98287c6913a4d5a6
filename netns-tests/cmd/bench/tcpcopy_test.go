package main

import (
	"strings"
	"testing"
	"time"
)

func TestPeerTableComparesLikeForLike(t *testing.T) {
	step := func(rate int, cpu, icpu time.Duration, mirrored, lost int) liveStep {
		return liveStep{rate: rate, scCPU: cpu, icCPU: icpu, mirrored: mirrored, answers: uint64(mirrored), lost: lost, served: mirrored + lost}
	}
	peer := []liveStep{step(250, 50*time.Millisecond, 25*time.Millisecond, 1000, 0), step(500, 40*time.Millisecond, 20*time.Millisecond, 2000, 0)}
	adv := []liveStep{step(250, 100*time.Millisecond, 30*time.Millisecond, 1000, 0), step(500, 60*time.Millisecond, 10*time.Millisecond, 2000, 0)}
	trad := []liveStep{step(250, 200*time.Millisecond, 50*time.Millisecond, 1000, 0)}
	details, rows, err := peerTable(peer, adv, trad)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || !strings.Contains(rows[0].workload, "@500/s") {
		t.Fatalf("rows %+v: want the two comparisons at 500/s, the highest rate both ran", rows)
	}
	// 60 ms / 2000 = 30 µs against 40 ms / 2000 = 20 µs; intercepts 5 µs against 10 µs.
	if rows[0].sc != "30 µs" || rows[0].kernel != "tcpcopy 20 µs" || rows[0].verdict != "MISS" {
		t.Errorf("CPU row %+v", rows[0])
	}
	if rows[1].sc != "5 µs" || rows[1].kernel != "tcpcopy 10 µs" || rows[1].verdict != "PASS" {
		t.Errorf("intercept row %+v", rows[1])
	}
	if got := strings.Join(details, "\n"); !strings.Contains(got, "      500 |") || !strings.Contains(got, "-       -      -") {
		t.Errorf("details lack the 500/s line or the missing traditional cell:\n%s", got)
	}

	// A peer that lost requests at its only rate leaves nothing to compare.
	if _, _, err := peerTable([]liveStep{step(250, time.Millisecond, time.Millisecond, 900, 100)}, adv, trad); err == nil {
		t.Error("no error for a peer with losses at every rate")
	}
}
