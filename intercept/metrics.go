package intercept

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Snapshot is intercept's counters as Run last reported them (its
// "intercept stats" and "intercept stopped" log lines).
type Snapshot struct {
	At     time.Time
	Values map[string]uint64 // by the log line's keys: packets, relayed, kernel_drops, ...
}

// StatsTap reads Run's counters from its stats log lines, so the metrics
// endpoint needs no second set of counters and no hook into the packet
// loop: Run builds the line from its atomic counters every
// Config.StatsInterval, the tap keeps the latest, and forwards the line to
// the real log only every `every` (the operator's --stats-interval).
// Metrics are then as fresh as Config.StatsInterval (the command sets 1 s
// when it serves them).
type StatsTap struct {
	st *tapState
}

type tapState struct {
	every      time.Duration // forward a stats line this often; <= 0: never (the final one always)
	last       atomic.Pointer[Snapshot]
	lastLogged atomic.Int64 // unix nanoseconds of the last forwarded stats line
}

// Stats messages Run logs.
const (
	msgStats   = "intercept stats"
	msgStopped = "intercept stopped"
)

// NewStatsTap returns a tap forwarding stats lines every `every`.
func NewStatsTap(every time.Duration) *StatsTap {
	return &StatsTap{st: &tapState{every: every}}
}

// Handler wraps next: records pass on unchanged, except stats lines,
// which are read and forwarded only every `every`.
func (t *StatsTap) Handler(next slog.Handler) slog.Handler {
	return &tapHandler{next: next, st: t.st}
}

// Snapshot returns the counters last reported (ok false: none yet).
func (t *StatsTap) Snapshot() (Snapshot, bool) {
	s := t.st.last.Load()
	if s == nil {
		return Snapshot{}, false
	}
	return *s, true
}

type tapHandler struct {
	next slog.Handler
	st   *tapState
}

func (h *tapHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// Stats lines are Info: they must reach Handle even when the log is
	// quieter, to be read.
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *tapHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == msgStats || r.Message == msgStopped {
		s := &Snapshot{At: r.Time, Values: make(map[string]uint64, r.NumAttrs())}
		r.Attrs(func(a slog.Attr) bool {
			switch v := a.Value.Resolve(); v.Kind() {
			case slog.KindUint64:
				s.Values[a.Key] = v.Uint64()
			case slog.KindInt64:
				if n := v.Int64(); n >= 0 {
					s.Values[a.Key] = uint64(n)
				}
			}
			return true
		})
		h.st.last.Store(s)
		if r.Message == msgStats {
			now := r.Time.UnixNano()
			if h.st.every <= 0 || now-h.st.lastLogged.Load() < int64(h.st.every) {
				return nil // read, not logged: not due
			}
			h.st.lastLogged.Store(now)
		}
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *tapHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &tapHandler{next: h.next.WithAttrs(as), st: h.st}
}

func (h *tapHandler) WithGroup(name string) slog.Handler {
	return &tapHandler{next: h.next.WithGroup(name), st: h.st}
}

// metric is one intercept_* metric and the stats key it reads.
type metric struct {
	key   string
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	label string // the class label's value, for intercept_packets_classified_total
}

// Collector exposes a StatsTap's counters to Prometheus.
type Collector struct {
	tap     *StatsTap
	metrics []metric
	age     *prometheus.Desc
}

// NewCollector returns the collector of tap's counters.
func NewCollector(tap *StatsTap) *Collector {
	c := &Collector{tap: tap,
		age: prometheus.NewDesc("intercept_stats_age_seconds", "Age of the counters below (they are refreshed every stats interval).", nil, nil)}
	add := func(key, name, help string, typ prometheus.ValueType) {
		c.metrics = append(c.metrics, metric{key: key, typ: typ, desc: prometheus.NewDesc(name, help, nil, nil)})
	}
	add("packets", "intercept_packets_total", "Packets the source (NFQUEUE or capture) delivered.", prometheus.CounterValue)
	classified := prometheus.NewDesc("intercept_packets_classified_total", "Packets by class: relayed to a mirror, passed (pass-list or nobody's), unknown, held (a mirror left), other.", []string{"class"}, nil)
	for _, k := range []string{"relayed", "passed", "unknown", "held", "other"} {
		c.metrics = append(c.metrics, metric{key: k, typ: prometheus.CounterValue, desc: classified, label: k})
	}
	add("mirrors", "intercept_mirrors_connected", "Mirror (stackcopy) connections now.", prometheus.GaugeValue)
	add("clients", "intercept_registered_clients", "Forged clients registered by mirrors now.", prometheus.GaugeValue)
	add("relay_delivered", "intercept_relay_delivered_total", "Answers handed to mirrors.", prometheus.CounterValue)
	add("relay_dropped", "intercept_relay_dropped_total", "Answers to registered clients the relay could not take (dropped, not passed).", prometheus.CounterValue)
	add("auth_failures", "intercept_relay_auth_failures_total", "Mirror handshakes that failed authentication.", prometheus.CounterValue)
	add("kernel_drops", "intercept_kernel_drops_total", "Packets the kernel dropped before intercept read them (NFQUEUE queue full, capture ring full).", prometheus.CounterValue)
	add("verdict_errors", "intercept_verdict_errors_total", "NFQUEUE verdicts that failed.", prometheus.CounterValue)
	add("skipped", "intercept_skipped_total", "Packets the source skipped (not IP, truncated).", prometheus.CounterValue)
	add("hold_table", "intercept_hold_table_entries", "Forged clients whose answers are held (dropped) after their mirror left.", prometheus.GaugeValue)
	add("hold_overflow", "intercept_hold_overflow_total", "Holds refused because the hold table was full.", prometheus.CounterValue)
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	seen := map[*prometheus.Desc]bool{}
	for _, m := range c.metrics {
		if !seen[m.desc] {
			seen[m.desc] = true
			ch <- m.desc
		}
	}
	ch <- c.age
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s, ok := c.tap.Snapshot()
	if !ok {
		return // nothing reported yet
	}
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, time.Since(s.At).Seconds())
	for _, m := range c.metrics {
		v, ok := s.Values[m.key]
		if !ok {
			continue // a key this build's Run does not report
		}
		if m.label != "" {
			ch <- prometheus.MustNewConstMetric(m.desc, m.typ, float64(v), m.label)
		} else {
			ch <- prometheus.MustNewConstMetric(m.desc, m.typ, float64(v))
		}
	}
}
