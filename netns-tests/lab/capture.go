package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Capture is a running tcpdump writing a pcap file.
type Capture struct {
	proc *Proc
	path string

	stopOnce sync.Once
	stats    CaptureStats
	err      error
}

// CaptureStats are tcpdump's own counters, printed when it exits.
type CaptureStats struct {
	Captured uint64 // "packets captured": written to the file
	Received uint64 // "packets received by filter"
	Dropped  uint64 // "packets dropped by kernel": the ring buffer overflowed
}

// Missing is the number of packets that matched the filter but are not in
// the file: kernel drops plus any still unread when tcpdump stopped. A test
// that reasons about absent packets wants 0.
func (s CaptureStats) Missing() uint64 {
	if s.Received <= s.Captured {
		return 0
	}
	return s.Received - s.Captured
}

// Capture starts `tcpdump -i iface -w path -U --immediate-mode -B 65536 -s 0
// filter` in the host's namespace and returns once tcpdump is capturing. A
// relative path is taken relative to the lab directory. -U writes every
// packet through at once, and --immediate-mode hands each packet to tcpdump
// as it arrives: without it libpcap's TPACKET_V3 ring passes packets on in
// blocks, up to a second late, and those still in the ring when tcpdump is
// stopped are lost (counted "received by filter" but never written). -B
// 65536 (KiB) gives the ring room for bursts at veth speed; -Z root keeps
// Debian's tcpdump from switching to the tcpdump user, which could not
// write into a root-owned directory.
func (h *Host) Capture(iface, filter, path string) (*Capture, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(h.lab.dir, path)
	}
	args := []string{"-i", iface, "-w", path, "-U", "--immediate-mode", "-B", "65536", "-s", "0", "-n", "-Z", "root"}
	if filter != "" {
		args = append(args, filter)
	}
	p, err := h.Start("tcpdump", args...)
	if err != nil {
		return nil, fmt.Errorf("lab: capture on %s %s: %w", h.name, iface, err)
	}
	c := &Capture{proc: p, path: path}
	// tcpdump prints "listening on" after the capture is active; packets
	// sent before that would be missed.
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(p.Log(), "listening on") {
			return c, nil
		}
		select {
		case <-p.Done():
			return nil, fmt.Errorf("lab: capture on %s %s: tcpdump exited: %v%s", h.name, iface, p.Wait(), outputSuffix([]byte(p.Log())))
		case <-deadline.C:
			_ = p.Stop()
			return nil, fmt.Errorf("lab: capture on %s %s: tcpdump not listening after 10s%s", h.name, iface, outputSuffix([]byte(p.Log())))
		case <-tick.C:
		}
	}
}

// Path returns the pcap file's path.
func (c *Capture) Path() string { return c.path }

// Stop ends tcpdump (SIGTERM: it flushes the file and prints its counters),
// waits for it and returns the number of packets the kernel dropped, as
// tcpdump reported it. Nonzero means the pcap is missing packets and a
// test reading it should not trust absence of a packet. Safe to call more
// than once.
func (c *Capture) Stop() (dropped uint64, err error) {
	c.stopOnce.Do(func() {
		c.waitQuiet()
		if err := c.proc.Stop(); err != nil {
			c.err = fmt.Errorf("lab: capture %s: %w", c.path, err)
			return
		}
		c.stats, c.err = parseTcpdumpStats(c.proc.Log())
		if c.err != nil {
			c.err = fmt.Errorf("lab: capture %s: %w", c.path, c.err)
		}
	})
	return c.stats.Dropped, c.err
}

// waitQuiet gives tcpdump time to write what it has not processed yet: it
// returns once the file has not grown for 200 ms (each packet is written
// as soon as tcpdump reads it), or after 5 s of continuous traffic.
func (c *Capture) waitQuiet() {
	const quiet = 200 * time.Millisecond
	var last int64 = -1
	lastChange := time.Now()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		var size int64
		if fi, err := os.Stat(c.path); err == nil {
			size = fi.Size()
		}
		if size != last {
			last, lastChange = size, time.Now()
		} else if time.Since(lastChange) >= quiet {
			return
		}
		select {
		case <-c.proc.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stats returns all of tcpdump's counters; valid after Stop.
func (c *Capture) Stats() CaptureStats { return c.stats }

var tcpdumpStatRE = regexp.MustCompile(`(?m)^(\d+) packets? (captured|received by filter|dropped by kernel)$`)

// parseTcpdumpStats reads tcpdump's exit summary, e.g.
//
//	12 packets captured
//	12 packets received by filter
//	0 packets dropped by kernel
func parseTcpdumpStats(log string) (CaptureStats, error) {
	var st CaptureStats
	seen := 0
	for _, m := range tcpdumpStatRE.FindAllStringSubmatch(log, -1) {
		n, err := strconv.ParseUint(m[1], 10, 64)
		if err != nil {
			return st, fmt.Errorf("tcpdump summary %q: %w", m[0], err)
		}
		switch m[2] {
		case "captured":
			st.Captured = n
		case "received by filter":
			st.Received = n
		case "dropped by kernel":
			st.Dropped = n
			seen++
		}
	}
	if seen == 0 {
		return st, fmt.Errorf("no \"packets dropped by kernel\" line in tcpdump output%s", outputSuffix([]byte(tail(log, 1024))))
	}
	return st, nil
}
