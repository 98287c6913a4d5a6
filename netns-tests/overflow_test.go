package netnstests

import (
	"crypto/rand"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLiveSlowSessionShed: a live upload that the mirror cannot carry as
// fast as the client sends it (5% loss towards the target) fills its
// memory queue and a deliberately small spill budget (--spill-max 8 MiB).
// That one session is shed and counted as overflowed; the capture never
// waits for it (no kernel drop), and 100 real requests on other sessions
// captured meanwhile all reach the target intact.
func TestLiveSlowSessionShed(t *testing.T) {
	ll := newLiveLab(t, false, 1)
	ll.serveFiles(t)
	uploadSrv := netip.AddrPortFrom(onlineAddr, 8080)
	startRecorder(t, ll.online, uploadSrv, "http")
	upload := filepath.Join(ll.l.Dir(), "upload.bin")
	body := make([]byte, 64<<20)
	rand.Read(body)
	if err := os.WriteFile(upload, body, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ll.target.IPTables("-I", "INPUT", "1", "-p", "tcp", "--dport", "80", "-m", "statistic",
		"--mode", "random", "--probability", "0.05", "-j", "DROP"); err != nil {
		t.Fatal(err)
	}
	if err := ll.online.DisableGSO("eth1"); err != nil {
		t.Fatal(err)
	}
	mp, stats := ll.startMirror(t, "-x", "198.18.1.1:8080-198.18.2.2:80,198.18.1.1:80-198.18.2.2:80", "--spill-max", "8")

	// The upload and the other sessions run at the same time.
	var wg sync.WaitGroup
	wg.Go(func() {
		mustExec(t, ll.client, "curl", "-sS", "--fail", "-o", "/dev/null", "--limit-rate", "20M", "-H", "Expect:",
			"--data-binary", "@"+upload, "http://"+uploadSrv.String()+"/upload")
	})
	time.Sleep(500 * time.Millisecond) // the upload session is open and falling behind
	requests, conns := ll.load(t, 1, 50)
	wg.Wait()

	// The shed upload ends at the target too (reset): conns + 1 summaries.
	recs, sums := readRecords(t, ll.targetLog, conns+1, time.Minute)
	st := stopMirror(t, mp, stats)
	var small int
	for _, r := range recs {
		switch {
		case strings.HasPrefix(r.Line, "GET /a.txt"):
			if r.Error != "" || r.Early || !clientNet.Contains(r.Client.Addr()) {
				t.Errorf("mirrored request %+v: want intact, from a client address, not early", r)
			}
			small++
		case r.BodyBytes == int64(len(body)):
			t.Errorf("the shed upload arrived whole at the target (%d bytes): it was not shed", r.BodyBytes)
		}
	}
	if small != requests {
		t.Errorf("target got %d of the %d requests captured while the upload was being shed", small, requests)
	}
	var reset int
	for _, s := range sums {
		if s.TotalBytes > 1<<20 && s.Closed != "fin" {
			reset++
		}
	}
	if reset != 1 {
		t.Errorf("%d large connections ended without FIN at the target, want 1 (the shed upload): %+v", reset, sums)
	}
	if st.Replay.Overflowed != 1 || st.Replay.Completed != uint64(conns) || st.Drops != 0 {
		t.Errorf("stats %+v: want 1 session overflowed, %d completed, no capture drops", st.Replay, conns)
	}
	if st.Replay.SpillPeak > 8<<20 {
		t.Errorf("spill files held %d bytes at once, over --spill-max 8 MiB", st.Replay.SpillPeak)
	}
}
