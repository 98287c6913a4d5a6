package netnstests

import (
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLiveSlowSessionShed: a live upload whose target stops reading (its
// server is paused, the kernel keeps accepting until the window closes)
// fills the session's memory queue and a deliberately small spill budget
// (--spill-max 8 MiB). That one session is shed and counted as
// overflowed; the capture never waits for it (no kernel drop), and 100
// real requests on other sessions captured meanwhile all reach the other
// target server intact.
func TestLiveSlowSessionShed(t *testing.T) {
	ll := newLiveLab(t, false, 1)
	ll.serveFiles(t)
	uploadSrv := netip.AddrPortFrom(onlineAddr, 8080)
	startRecorder(t, ll.online, uploadSrv, "http")
	// The upload's target: a second recorder, on 8080, whose answers the
	// intercept catches too.
	slowTarget := netip.AddrPortFrom(targetAddr, 8080)
	slowLog := filepath.Join(ll.l.Dir(), "slow-target.jsonl")
	slow, err := ll.target.Start(recorderPath(t), "-listen", slowTarget.String(), "-mode", "http", "-log", slowLog)
	if err != nil {
		t.Fatal(err)
	}
	if err := ll.target.IPTables("-I", "OUTPUT", "-p", "tcp", "--sport", "8080", "-j", "NFQUEUE", "--queue-num", "3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slow target to listen", 10*time.Second, func() bool { return strings.Contains(slow.Log(), "recorder listening") })
	const size = 64 << 20
	upload := filepath.Join(ll.l.Dir(), "upload.bin")
	writeRandomFile(t, upload, size)
	mp, stats := ll.startMirror(t, "-x", "198.18.1.1:8080-198.18.2.2:8080,198.18.1.1:80-198.18.2.2:80", "--spill-max", "8")
	if err := slow.Pause(); err != nil {
		t.Fatal(err)
	}
	defer slow.Resume()

	// The upload and the other sessions run at the same time.
	var wg sync.WaitGroup
	wg.Go(func() {
		mustExec(t, ll.client, "curl", "-sS", "--fail", "-o", "/dev/null", "--limit-rate", "20M", "-H", "Expect:",
			"--data-binary", "@"+upload, "http://"+uploadSrv.String()+"/upload")
	})
	time.Sleep(500 * time.Millisecond) // the upload session is open and falling behind
	requests, conns := ll.load(t, 1, 50)
	wg.Wait()

	recs, _ := readRecords(t, ll.targetLog, conns, time.Minute)
	st := stopMirror(t, mp, stats)
	var small int
	for _, r := range recs {
		if r.Error != "" || r.Early || !clientNet.Contains(r.Client.Addr()) || !strings.HasPrefix(r.Line, "GET /a.txt") {
			t.Errorf("mirrored request %+v: want an intact GET from a client address, not early", r)
			continue
		}
		small++
	}
	if small != requests {
		t.Errorf("target got %d of the %d requests captured while the upload was being shed", small, requests)
	}
	if st.Replay.Overflowed != 1 || st.Replay.Completed != uint64(conns) || st.Drops != 0 {
		t.Errorf("stats %+v: want 1 session overflowed, %d completed, no capture drops", st.Replay, conns)
	}
	if st.Replay.SpillPeak > 8<<20 {
		t.Errorf("spill files held %d bytes at once, over --spill-max 8 MiB", st.Replay.SpillPeak)
	}
	// The paused server, once it reads again, finds a reset connection
	// with part of the upload (or nothing, if the kernel dropped the reset
	// connection before handing it over), never the whole body.
	if err := slow.Resume(); err != nil {
		t.Fatal(err)
	}
	slowRecs, slowSums := readRecords(t, slowLog, 1, 10*time.Second)
	for _, r := range slowRecs {
		if r.BodyBytes == int64(size) {
			t.Errorf("the shed upload arrived whole at its target (%d bytes)", r.BodyBytes)
		}
	}
	if len(slowSums) > 1 || len(slowSums) == 1 && (slowSums[0].Closed == "fin" || slowSums[0].TotalBytes >= int64(size)) {
		t.Errorf("the shed upload's connection at its target: %+v; want at most one, reset, with part of the body", slowSums)
	}
}
