package netnstests

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// startMemcached runs memcached on h with -vv: it logs every command of
// every connection, its own record of what it was asked. One worker
// thread (-t 1) keeps the log of a closed connection and of the next one
// on the same descriptor in order.
func startMemcached(t *testing.T, h *lab.Host, listen netip.AddrPort) *lab.Proc {
	t.Helper()
	return startServerProc(t, h, listen, "memcached", "-u", "root", "-l", listen.Addr().String(),
		"-p", fmt.Sprint(listen.Port()), "-U", "0", "-m", "64", "-vv", "-t", "1")
}

var (
	mcNew     = regexp.MustCompile(`^<(\d+) new .*client connection`)
	mcClosed  = regexp.MustCompile(`^<(\d+) connection closed`)
	mcCommand = regexp.MustCompile(`^<(\d+) (.+)$`)
)

// memcachedConnections returns the commands of each connection memcached
// logged (-vv), one string per connection, sorted: connections are told
// apart by their descriptor, which memcached reuses, not by address.
func memcachedConnections(log string) []string {
	open := map[string][]string{}
	var done []string
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if g := mcNew.FindStringSubmatch(l); g != nil {
			open[g[1]] = []string{}
			continue
		}
		if g := mcClosed.FindStringSubmatch(l); g != nil {
			if cmds, ok := open[g[1]]; ok && len(cmds) > 0 {
				done = append(done, strings.Join(cmds, "|"))
			}
			delete(open, g[1])
			continue
		}
		if g := mcCommand.FindStringSubmatch(l); g != nil {
			if _, ok := open[g[1]]; ok {
				open[g[1]] = append(open[g[1]], g[2])
			}
		}
	}
	for _, cmds := range open {
		if len(cmds) > 0 {
			done = append(done, strings.Join(cmds, "|"))
		}
	}
	slices.Sort(done)
	return done
}

// TestReplayMemcached: real memcached clients from Debian's
// libmemcached-tools (memcslap loading and reading keys on 4 connections,
// memccp storing files, memccat and memcexist reading them 50 ms apart,
// memcrm, memctouch) against a real memcached are captured and replayed at
// the captured pace to a fresh memcached whose stored values are other
// sizes. memcached's own log (-vv) of the target holds, connection by
// connection, exactly the commands the online server's log holds; every
// turn ended by memcached framing, none after --turn-wait.
func TestReplayMemcached(t *testing.T) {
	l := lab.NewT(t)
	needPrograms(t, "memcached", "memcslap", "memccp", "memccat")
	c := newCaptureLab(t, l, 1)
	online := netip.AddrPortFrom(onlineAddr, 11211)
	onlineMC := startMemcached(t, c.online, online)
	servers := "--servers=" + online.String()

	dir := filepath.Join(l.Dir(), "mcfiles")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var files []string
	for i, size := range []int{10, 3000, 70_000} {
		p := filepath.Join(dir, fmt.Sprintf("file%d", i))
		if err := os.WriteFile(p, randomBytes(size), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	before := len(onlineMC.Log())
	pc := captureTraffic(t, c, 11211, func() {
		mustExec(t, c.client, "memcslap", servers, "--concurrency=4", "--execute-number=300", "--test=set")
		mustExec(t, c.client, "memcslap", servers, "--concurrency=4", "--execute-number=300", "--test=get")
		mustExec(t, c.client, append([]string{"memccp", servers}, files...)...)
		for range 3 {
			mustExec(t, c.client, "memccat", servers, "file0", "file1", "file2")
			mustExec(t, c.client, "memcexist", servers, "file1")
			time.Sleep(50 * time.Millisecond)
		}
		mustExec(t, c.client, "memctouch", servers, "--expire=600", "file0")
		mustExec(t, c.client, "memcrm", servers, "file2")
	})
	waitFor(t, "memcached to log the last connection's close", 5*time.Second, func() bool {
		return len(mcNew.FindAllString(onlineMC.Log()[before:], -1)) > 0 && strings.Count(onlineMC.Log()[before:], "connection closed") >= pc.sessions
	})
	captured := memcachedConnections(onlineMC.Log()[before:])

	r := newReplayLab(t, l)
	target := netip.AddrPortFrom(targetAddr, 11211)
	targetMC := startMemcached(t, r.target, target)
	// Values of other sizes than production's: the gets answer longer.
	tfiles := filepath.Join(l.Dir(), "mcfiles-target")
	if err := os.MkdirAll(tfiles, 0o755); err != nil {
		t.Fatal(err)
	}
	var tpaths []string
	for i, size := range []int{9000, 5, 120_000} {
		p := filepath.Join(tfiles, fmt.Sprintf("file%d", i))
		if err := os.WriteFile(p, randomBytes(size), 0o644); err != nil {
			t.Fatal(err)
		}
		tpaths = append(tpaths, p)
	}
	mustExec(t, r.target, append([]string{"memccp", "--servers=" + target.String()}, tpaths...)...)
	tbefore := len(targetMC.Log())
	replayAtPace(t, r, pc, 11211, "memcached")
	// memcached logs a connection's close a moment after it happens.
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = memcachedConnections(targetMC.Log()[tbefore:]); len(got) >= len(captured) {
			break
		}
	}
	if len(captured) < 8 {
		t.Fatalf("online memcached logged %d connections, the capture holds %d sessions", len(captured), pc.sessions)
	}
	if !slices.Equal(got, captured) {
		t.Errorf("target's connections differ from production's: %d vs %d connections", len(got), len(captured))
		for i := range max(len(got), len(captured)) {
			var g, w string
			if i < len(got) {
				g = got[i]
			}
			if i < len(captured) {
				w = captured[i]
			}
			if g != w {
				gc, wc := strings.Split(g, "|"), strings.Split(w, "|")
				j := firstDiff(gc, wc)
				t.Logf("connection %d (%d vs %d commands) differs at command %d: target %q, production %q", i, len(gc), len(wc), j, at(gc, j), at(wc, j))
				break
			}
		}
	}
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}
