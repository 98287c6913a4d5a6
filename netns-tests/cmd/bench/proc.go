package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/benchrole"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// startRole starts prog in h's namespace with its standard output kept
// apart (lab.StartOptions.Stdout): the bench's client roles print their
// result there, stackcopy its summary. The lab records the PID and ends
// the process by it at the latest when it closes.
func startRole(h *lab.Host, prog string, args ...string) (*lab.Proc, error) {
	return h.StartWith(lab.StartOptions{Stdout: true}, prog, args...)
}

// roleGrace is how long a bounded run that overran its time gets between
// SIGTERM and SIGKILL.
const roleGrace = 10 * time.Second

// exitCPU is an exited process's user+system CPU time (0 if unknown, as
// the table shows it rather than failing a workload over it).
func exitCPU(p *lab.Proc) time.Duration {
	d, _ := p.CPU()
	return d
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
func readStatus(path string) (benchrole.ServerStatus, error) {
	var s benchrole.ServerStatus
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
func readRecords(path string) ([]benchrole.ConnRecord, error) {
	return lab.ReadJSONLines[benchrole.ConnRecord](path)
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

func watchNetDev(c *lab.Proc) *devWatcher {
	w := &devWatcher{last: make(map[string]linkStats), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(25 * time.Millisecond)
		defer t.Stop()
		for {
			// Merge: an interface that disappeared (the TUN closed
			// before exit) keeps its last counters.
			if m, err := procNetDev(c.PID); err == nil {
				w.mu.Lock()
				maps.Copy(w.last, m)
				w.mu.Unlock()
			}
			select {
			case <-c.Done():
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
