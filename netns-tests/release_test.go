package netnstests

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLiveMirrorGoneBeforeSynAck: the mirror registers a forged client and
// sends its SYN, the target's SYN-ACK is lost (dropped before intercept
// sees it), and the mirror dies (SIGKILL: no reset, no unregister) before
// any answer to that client was relayed. The target keeps retransmitting
// its SYN-ACK; intercept must drop those for --hold although it never
// relayed anything to that client, or they would travel on to the real
// client through the online host, which forwards.
func TestLiveMirrorGoneBeforeSynAck(t *testing.T) {
	ll := newLiveLab(t, false, 1)
	ll.serveFiles(t)
	match := []string{"-p", "tcp", "--sport", "80", "--tcp-flags", "SYN,ACK", "SYN,ACK"}
	drop := append(append([]string{}, match...), "-j", "DROP")
	// Counted (a rule without target) in front of everything, and dropped
	// before intercept's NFQUEUE rule until the mirror is gone.
	for _, rule := range [][]string{
		append([]string{"-I", "OUTPUT", "1"}, match...),
		append([]string{"-I", "OUTPUT", "2"}, drop...),
	} {
		if err := ll.target.IPTables(rule...); err != nil {
			t.Fatal(err)
		}
	}
	mp, _ := ll.startMirror(t)
	ll.noLeak(t, func() {
		mustExec(t, ll.client, "curl", "-sS", "--fail", "-o", "/dev/null", "http://"+onlineAddr.String()+"/a.txt")
		waitFor(t, "intercept to see the registration", 10*time.Second, func() bool { return strings.Contains(ll.icpt.Log(), "relay: registered") })
		waitFor(t, "the target's first SYN-ACK (dropped)", 10*time.Second, func() bool { return ll.synAckCount(t) > 0 })
		if err := mp.Kill(); err != nil {
			t.Fatal(err)
		}
		mp.Wait()
		waitFor(t, "intercept to see the mirror go", 10*time.Second, func() bool { return strings.Contains(ll.icpt.Log(), "mirror disconnected") })
		if err := ll.target.IPTables(append([]string{"-D", "OUTPUT"}, drop...)...); err != nil {
			t.Fatal(err)
		}
		// Linux retransmits a SYN-ACK after 1, 3, 7, 15 s: wait for one
		// that went through intercept, then give a leak time to arrive.
		sent := ll.synAckCount(t)
		waitFor(t, "a retransmitted SYN-ACK", 20*time.Second, func() bool { return ll.synAckCount(t) > sent })
		time.Sleep(500 * time.Millisecond)
	})
	if err := ll.icpt.Stop(); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`held=(\d+) `).FindAllStringSubmatch(ll.icpt.Log(), -1)
	if len(m) == 0 {
		t.Fatalf("intercept logged no stats:\n%s", tailLines(ll.icpt.Log(), 10))
	}
	if held, _ := strconv.Atoi(m[len(m)-1][1]); held == 0 {
		t.Errorf("intercept held no answer to the released client; its last stats: %s", m[len(m)-1][0])
	}
}

// synAckCount reads the packet counter of the target's first OUTPUT rule
// (the SYN-ACK counter TestLiveMirrorGoneBeforeSynAck puts there).
func (ll *liveLab) synAckCount(t *testing.T) int {
	t.Helper()
	out, err := ll.target.IPTablesOutput("-L", "OUTPUT", "1", "-v", "-x", "-n")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		t.Fatalf("iptables -L OUTPUT 1: %q", out)
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatalf("iptables -L OUTPUT 1: %q: %v", out, err)
	}
	return n
}
