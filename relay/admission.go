package relay

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Handshake admission. Before a peer proves it holds the key it costs the
// server a goroutine and a slot, and it is anonymous: one host connecting
// as fast as it can (850k connects in 45 s were measured) used to keep all
// 256 slots busy, and a real mirror could not get in for 30 s. So slots
// are shared out by source: one source holds at most a few handshakes at a
// time, and the last quarter of the slots only goes to sources holding
// none, so it takes many flooding addresses, not one, to fill them.
const (
	defaultMaxHandshakes          = 256
	defaultMaxHandshakesPerSource = 8
	// defaultServerHandshakeTimeout is short: a mirror completes the
	// handshake in one round trip and an HMAC, and a slot held by a silent
	// peer is a slot a mirror cannot have.
	defaultServerHandshakeTimeout = 3 * time.Second
	defaultRejectLogInterval      = 10 * time.Second
	// maxRejectSources bounds the addresses the rejection log tells
	// apart within one interval; the rest are counted together.
	maxRejectSources = 4096
	// rejectDetails is how many rejections of one interval are logged
	// with their address and reason, before the rest are only counted.
	rejectDetails = 4
	// rejectTop is how many of the busiest addresses the summary names.
	rejectTop = 3
)

// sourceOf is the unit handshakes are counted by: an IPv4 address, or
// an IPv6 /64, which one host can fill with addresses of its own.
func sourceOf(a net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.AddrPort().Addr().Unmap()
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr().Unmap()
		}
	}
	if ip.Is6() {
		if p, err := ip.WithZone("").Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip.WithZone("")
}

// rejectReason is why a connection was closed before it was served.
type rejectReason uint8

const (
	rejectPerSource rejectReason = iota // its source has too many handshakes in progress
	rejectReserved                      // only the reserved slots are left, for sources with none
	rejectFull                          // every slot is taken
	rejectHandshake                     // its handshake failed: wrong key, not a relay peer, timeout
	numRejectReasons
)

var rejectReasonNames = [numRejectReasons]string{
	"too many handshakes from its address",
	"only reserved slots left",
	"all handshake slots busy",
	"handshake failed",
}

func (r rejectReason) String() string { return rejectReasonNames[r] }

// admission counts handshakes in progress, in all and per source.
type admission struct {
	max, perSource, reserve int

	mu     sync.Mutex
	total  int
	active map[netip.Addr]int
}

func newAdmission(maxAll, perSource int) *admission {
	return &admission{
		max:       maxAll,
		perSource: perSource,
		reserve:   maxAll / 4,
		active:    make(map[netip.Addr]int),
	}
}

// acquire takes a handshake slot for src, or says why not. A source at its
// own limit is refused; once the free slots are down to the reserve, so is
// any source that already holds one.
func (a *admission) acquire(src netip.Addr) (rejectReason, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.active[src]
	switch {
	case a.total >= a.max:
		return rejectFull, false
	case n >= a.perSource:
		return rejectPerSource, false
	case n > 0 && a.max-a.total <= a.reserve:
		return rejectReserved, false
	}
	a.active[src] = n + 1
	a.total++
	return 0, true
}

// release returns a slot acquire gave src.
func (a *admission) release(src netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := a.active[src]; n > 1 {
		a.active[src] = n - 1
	} else {
		delete(a.active, src)
	}
	a.total--
}

// inProgress reports the handshakes in progress.
func (a *admission) inProgress() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

// rejectLog turns rejections into a bounded number of log lines: the
// first few of an interval in full (address and reason: a mirror with the
// wrong key must be diagnosable), the rest as one line at the end of the
// interval naming how many, from how many addresses, the busiest ones,
// and why. A flood used to write one line per connection (113 MB in 45 s).
type rejectLog struct {
	log *slog.Logger

	mu       sync.Mutex
	start    time.Time
	detailed int                   // rejections logged in full this interval
	n        uint64                // rejections this interval
	bySource map[netip.Addr]uint64 // of those, per source (bounded)
	others   uint64                // of those, from sources beyond maxRejectSources
	byReason [numRejectReasons]uint64
}

func newRejectLog(log *slog.Logger, now time.Time) *rejectLog {
	return &rejectLog{log: log, start: now, bySource: make(map[netip.Addr]uint64)}
}

// note records one rejection; err is the handshake's error, if any.
func (l *rejectLog) note(src netip.Addr, remote string, reason rejectReason, err error) {
	l.mu.Lock()
	l.n++
	l.byReason[reason]++
	if _, ok := l.bySource[src]; ok || len(l.bySource) < maxRejectSources {
		l.bySource[src]++
	} else {
		l.others++
	}
	detail := l.detailed < rejectDetails
	if detail {
		l.detailed++
	}
	last := l.detailed == rejectDetails
	l.mu.Unlock()
	if !detail {
		return
	}
	attrs := []any{"remote", remote, "reason", reason.String()}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	if last {
		attrs = append(attrs, "note", "further rejections in this interval are summed up at its end")
	}
	msg := "relay: rejected connection"
	if reason == rejectHandshake {
		msg = "relay: rejected unauthenticated peer"
	}
	l.log.Warn(msg, attrs...)
}

// flush logs the interval's summary, if anything was left out, and
// starts the next interval.
func (l *rejectLog) flush(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n > uint64(l.detailed) { // some were not logged in full
		l.log.Warn(l.summary(now.Sub(l.start)), "rejected", l.n, "addresses", l.addresses())
	}
	l.start, l.detailed, l.n, l.others = now, 0, 0, 0
	clear(l.bySource)
	clear(l.byReason[:])
}

func (l *rejectLog) addresses() int {
	n := len(l.bySource)
	if l.others > 0 {
		n++ // at least one more
	}
	return n
}

// summary is the interval's line, e.g. "relay: rejected 85000
// connections from 1 address (top: 198.18.5.2 ×85000) in the last 10s:
// too many handshakes from its address 84990, handshake failed 10".
// Called with mu held.
func (l *rejectLog) summary(d time.Duration) string {
	type count struct {
		a netip.Addr
		n uint64
	}
	top := make([]count, 0, len(l.bySource))
	for a, n := range l.bySource {
		top = append(top, count{a, n})
	}
	slices.SortFunc(top, func(x, y count) int {
		if c := cmp.Compare(y.n, x.n); c != 0 {
			return c
		}
		return x.a.Compare(y.a)
	})
	var b strings.Builder
	addrs := "addresses"
	if l.addresses() == 1 {
		addrs = "address"
	}
	more := ""
	if l.addresses() > len(top) {
		more = " or more"
	}
	fmt.Fprintf(&b, "relay: rejected %d connections from %d%s %s (top:", l.n, l.addresses(), more, addrs)
	for i, c := range top[:min(len(top), rejectTop)] {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %s ×%d", c.a, c.n)
	}
	fmt.Fprintf(&b, ") in the last %v:", d.Round(time.Second))
	sep := " "
	for r, n := range l.byReason {
		if n > 0 {
			fmt.Fprintf(&b, "%s%s %d", sep, rejectReason(r), n)
			sep = ", "
		}
	}
	return b.String()
}
