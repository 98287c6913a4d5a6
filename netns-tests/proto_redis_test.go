package netnstests

import (
	"bufio"
	"context"
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

// startRedis runs a redis-server on h, nothing saved to disk.
func startRedis(t *testing.T, h *lab.Host, listen netip.AddrPort) {
	t.Helper()
	dir := filepath.Join(h.Lab().Dir(), "redis-"+h.Label())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	startServerProc(t, h, listen, "redis-server", "--bind", listen.Addr().String(), "--port", fmt.Sprint(listen.Port()),
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", dir, "--daemonize", "no")
}

// redisMonitor records every command the server executes (MONITOR),
// with the client address that sent it.
type redisMonitor struct {
	proc *lab.Proc
}

func startRedisMonitor(t *testing.T, h *lab.Host, server netip.AddrPort) *redisMonitor {
	t.Helper()
	p, err := h.StartWith(lab.StartOptions{Stdout: true}, "redis-cli", "-h", server.Addr().String(), "-p", fmt.Sprint(server.Port()), "monitor")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "redis MONITOR to start", 5*time.Second, func() bool { return strings.HasPrefix(p.Stdout(), "OK") })
	return &redisMonitor{proc: p}
}

var monitorLine = regexp.MustCompile(`^\d+\.\d+ \[\d+ ([0-9.]+:\d+)\] (.*)$`)

// commands returns the commands each client address sent, in order.
func (m *redisMonitor) commands(t *testing.T) map[netip.AddrPort][]string {
	t.Helper()
	out := map[netip.AddrPort][]string{}
	sc := bufio.NewScanner(strings.NewReader(m.proc.Stdout()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		g := monitorLine.FindStringSubmatch(sc.Text())
		if g == nil {
			continue
		}
		ap, err := netip.ParseAddrPort(g[1])
		if err != nil {
			t.Fatalf("MONITOR line %q: %v", sc.Text(), err)
		}
		out[ap] = append(out[ap], g[2])
	}
	return out
}

func redisCLI(t *testing.T, h *lab.Host, server netip.AddrPort, args ...string) string {
	t.Helper()
	return string(mustExec(t, h, append([]string{"redis-cli", "-h", server.Addr().String(), "-p", fmt.Sprint(server.Port())}, args...)...))
}

// TestReplayRedis: real redis clients — redis-benchmark pipelining 16
// commands on 4 connections, redis-cli in pipe mode, and redis-cli
// repeating commands 80 ms apart — against a real redis-server are
// captured and replayed at the captured pace to a fresh redis-server whose
// answers differ in size (longer values, a counter six digits further on,
// TIME). The target's own MONITOR shows every command of every session
// once, from the original client address and in order; every turn ended
// by RESP framing, none after --turn-wait, and the replay took about as
// long as the capture.
func TestReplayRedis(t *testing.T) {
	l := lab.NewT(t)
	needPrograms(t, "redis-server", "redis-cli", "redis-benchmark")
	c := newCaptureLab(t, l, 1)
	online := netip.AddrPortFrom(onlineAddr, 6379)
	startRedis(t, c.online, online)
	redisCLI(t, c.online, online, "SET", "greeting", "hi")
	redisCLI(t, c.online, online, "SET", "counter", "0")
	mon := startRedisMonitor(t, c.online, online)

	script := "SELECT 0\nGET greeting\nMULTI\nINCR counter\nTIME\nEXEC\nLPUSH list a b c\nLRANGE list 0 -1\nHSET h f1 v1 f2 v2\nHGETALL h\nDEL list\n"
	pipe := ""
	for i := range 50 {
		pipe += fmt.Sprintf("*3\r\n$3\r\nSET\r\n$6\r\nkey:%02d\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$6\r\nkey:%02d\r\n", i, i)
	}
	pc := captureTraffic(t, c, 6379, func() {
		mustExec(t, c.client, "redis-benchmark", "-h", onlineAddr.String(), "-p", "6379", "-c", "4", "-n", "2000", "-P", "16",
			"-t", "set,get,incr,lpush,lpop,sadd,hset,lrange_100", "-q")
		runWithInput(t, c.client, script, "redis-cli", "-h", onlineAddr.String(), "-p", "6379")
		runWithInput(t, c.client, pipe, "redis-cli", "-h", onlineAddr.String(), "-p", "6379", "--pipe")
		for range 3 {
			mustExec(t, c.client, "redis-cli", "-h", onlineAddr.String(), "-p", "6379", "-r", "8", "-i", "0.08", "GET", "greeting")
			mustExec(t, c.client, "redis-cli", "-h", onlineAddr.String(), "-p", "6379", "-r", "5", "-i", "0.08", "INCR", "counter")
		}
	})
	captured := mon.commands(t)

	r := newReplayLab(t, l)
	target := netip.AddrPortFrom(targetAddr, 6379)
	startRedis(t, r.target, target)
	// Answers of other sizes than production's.
	redisCLI(t, r.target, target, "SET", "greeting", strings.Repeat("a much longer greeting ", 40))
	redisCLI(t, r.target, target, "SET", "counter", "1000000")
	tmon := startRedisMonitor(t, r.target, target)
	replayAtPace(t, r, pc, 6379, "redis")
	// MONITOR shows a command once it ran; the last ones may still be on
	// their way to the monitor connection.
	var got map[netip.AddrPort][]string
	waitFor(t, "the target's MONITOR to show every replayed command", 10*time.Second, func() bool {
		got = tmon.commands(t)
		return total(got) >= total(captured)
	})
	// MONITOR leaves administrative commands out (redis-benchmark's CONFIG
	// GET connection): a few sessions show no command at all.
	if len(captured) < pc.sessions-2 || total(captured) < 16_000 {
		t.Fatalf("online MONITOR saw %d clients, %d commands for %d captured sessions: the capture did not run", len(captured), total(captured), pc.sessions)
	}
	for client, want := range captured {
		if !slices.Equal(got[client], want) {
			t.Errorf("client %v: target ran %d commands, production %d (first difference at %d)", client, len(got[client]), len(want), firstDiff(got[client], want))
		}
	}
	for client := range got {
		if _, ok := captured[client]; !ok {
			t.Errorf("target ran commands from %v, a client production never saw", client)
		}
	}
}

// runWithInput runs a program on h with input on its stdin (bounded).
func runWithInput(t *testing.T, h *lab.Host, input string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := h.ExecInput(ctx, strings.NewReader(input), args...); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}

func total(m map[netip.AddrPort][]string) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
