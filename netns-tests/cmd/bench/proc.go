package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// syncBuffer is a bytes.Buffer safe to read while a child writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// child is a program run with `ip netns exec NS prog args...`. ip execs
// the program in place, so the PID, the exit status and the rusage are the
// program's own.
type child struct {
	what   string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
	err    error // valid after done
	wall   time.Duration
}

// startChild starts prog in h's namespace. ctx bounds its life: when it
// ends the child gets SIGTERM, and SIGKILL 10 s later.
func startChild(ctx context.Context, h *lab.Host, prog string, args ...string) (*child, error) {
	c := &child{what: fmt.Sprintf("%s on %s", baseName(prog), h.Label()), done: make(chan struct{})}
	c.cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Name(), prog}, args...)...)
	c.cmd.Stdout = &c.stdout
	c.cmd.Stderr = &c.stderr
	c.cmd.Cancel = func() error { return c.cmd.Process.Signal(syscall.SIGTERM) }
	c.cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", c.what, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		c.wall = time.Since(start)
		close(c.done)
	}()
	return c, nil
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// wait waits for the child; it returns the exit error with the tail of its
// stderr.
func (c *child) wait() error {
	<-c.done
	if c.err != nil {
		return fmt.Errorf("%s: %w%s", c.what, c.err, outputTail(c.stderr.String()))
	}
	return nil
}

// exitCode is the child's exit status, -1 if it was killed by a signal.
func (c *child) exitCode() int {
	<-c.done
	return c.cmd.ProcessState.ExitCode()
}

// cpu is the child's user+system CPU time (valid after it exited).
func (c *child) cpu() time.Duration {
	<-c.done
	ru, ok := c.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// terminate sends SIGTERM and waits up to grace, then SIGKILL. It returns
// how long the child took to exit after SIGTERM.
func (c *child) terminate(grace time.Duration) (time.Duration, bool) {
	if c.exited() {
		return 0, true
	}
	t0 := time.Now()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return time.Since(t0), true
	case <-time.After(grace):
	}
	_ = c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
	}
	return time.Since(t0), false
}

func outputTail(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return ": " + s
}

// vmRSS returns a process's resident set size in bytes.
func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: VmRSS %q: %w", pid, v, err)
			}
			return kb << 10, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// meminfo reads fields of /proc/meminfo (machine-wide) in bytes.
func meminfo(fields ...string) (map[string]int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(fields))
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		for _, f := range fields {
			if name == f {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				if err != nil {
					return nil, fmt.Errorf("/proc/meminfo %s: %w", name, err)
				}
				out[name] = kb << 10
			}
		}
	}
	for _, f := range fields {
		if _, ok := out[f]; !ok {
			return nil, fmt.Errorf("/proc/meminfo: no %s", f)
		}
	}
	return out, nil
}

// readStatus reads a server role's status file.
func readStatus(path string) (serverStatus, error) {
	var s serverStatus
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// readRecords reads a server role's JSON-lines log.
func readRecords(path string) ([]connRecord, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []connRecord
	for i, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r connRecord
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, i+1, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// poll calls cond every interval until it reports true, it fails, or
// timeout passes.
func poll(ctx context.Context, timeout, interval time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

// linkStats are an interface's drop counters.
type linkStats struct{ RxDropped, TxDropped, RxErrors, TxErrors uint64 }

func (a linkStats) sub(b linkStats) linkStats {
	return linkStats{a.RxDropped - b.RxDropped, a.TxDropped - b.TxDropped, a.RxErrors - b.RxErrors, a.TxErrors - b.TxErrors}
}

func (a linkStats) String() string {
	return fmt.Sprintf("rx dropped %d, tx dropped %d, rx errors %d, tx errors %d", a.RxDropped, a.TxDropped, a.RxErrors, a.TxErrors)
}

// readLinkStats runs `ip -s -j link show dev IF` in h.
func readLinkStats(ctx context.Context, h *lab.Host, ifname string) (linkStats, error) {
	out, err := h.Exec(ctx, "ip", "-s", "-j", "link", "show", "dev", ifname)
	if err != nil {
		return linkStats{}, err
	}
	var v []struct {
		Stats64 struct {
			Rx struct{ Dropped, Errors uint64 } `json:"rx"`
			Tx struct{ Dropped, Errors uint64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &v); err != nil || len(v) != 1 {
		return linkStats{}, fmt.Errorf("ip -s -j link show dev %s on %s: unexpected output %.200q", ifname, h.Label(), out)
	}
	s := v[0].Stats64
	return linkStats{s.Rx.Dropped, s.Tx.Dropped, s.Rx.Errors, s.Tx.Errors}, nil
}

// netCounters reads /proc/net/snmp and /proc/net/netstat of h's namespace
// as "Tcp.RetransSegs", "TcpExt.ListenOverflows", ...
func netCounters(ctx context.Context, h *lab.Host) (map[string]uint64, error) {
	out, err := h.Exec(ctx, "cat", "/proc/net/snmp", "/proc/net/netstat")
	if err != nil {
		return nil, err
	}
	m := make(map[string]uint64)
	lines := strings.Split(string(out), "\n")
	for i := 0; i+1 < len(lines); i++ {
		k, v := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(k) < 2 || len(k) != len(v) || k[0] != v[0] {
			continue
		}
		if _, err := strconv.ParseUint(v[1], 10, 64); err != nil {
			continue // a header line followed by another header
		}
		proto := strings.TrimSuffix(k[0], ":")
		for j := 1; j < len(k); j++ {
			if n, err := strconv.ParseUint(v[j], 10, 64); err == nil {
				m[proto+"."+k[j]] = n
			}
		}
		i++
	}
	return m, nil
}

// counterDelta lists the counters among names that grew between a and b.
func counterDelta(a, b map[string]uint64, names ...string) string {
	var parts []string
	for _, n := range names {
		if d := b[n] - a[n]; b[n] > a[n] {
			parts = append(parts, fmt.Sprintf("%s +%d", n, d))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// procNetDev reads the interface counters of pid's network namespace from
// /proc/PID/net/dev (no process spawned, so it can poll during a run).
func procNetDev(pid int) (map[string]linkStats, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
	if err != nil {
		return nil, err
	}
	out := make(map[string]linkStats)
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			continue
		}
		var v [16]uint64
		for i := range v {
			v[i], _ = strconv.ParseUint(f[i], 10, 64)
		}
		// rx: bytes packets errs drop ...; tx from field 8: bytes packets errs drop ...
		out[strings.TrimSpace(name)] = linkStats{RxDropped: v[3], RxErrors: v[2], TxDropped: v[11], TxErrors: v[10]}
	}
	return out, nil
}

// devWatcher polls a child's /proc/PID/net/dev every 25 ms until it exits
// and keeps the last reading: stackcopy's TUN disappears with it, so its
// counters can only be read while it runs.
type devWatcher struct {
	mu   sync.Mutex
	last map[string]linkStats
	done chan struct{}
}

func watchNetDev(c *child) *devWatcher {
	w := &devWatcher{last: make(map[string]linkStats), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(25 * time.Millisecond)
		defer t.Stop()
		for {
			// Merge: an interface that disappeared (the TUN closed
			// before exit) keeps its last counters.
			if m, err := procNetDev(c.pid()); err == nil {
				w.mu.Lock()
				maps.Copy(w.last, m)
				w.mu.Unlock()
			}
			select {
			case <-c.done:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// get returns the last counters of ifname seen (ok false if never seen).
func (w *devWatcher) get(ifname string) (linkStats, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.last[ifname]
	return s, ok
}

// softnetDrops sums the dropped column of /proc/net/softnet_stat (per-CPU
// backlog overflows, machine-wide).
func softnetDrops() (uint64, error) {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return 0, err
	}
	var sum uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, err := strconv.ParseUint(f[1], 16, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/net/softnet_stat: %w", err)
		}
		sum += n
	}
	return sum, nil
}
