package compare

import (
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
)

// A Side is one server whose answers are compared: production (the
// capture), the target (the replay), and optionally a baseline (a second
// replay of the same version as production, which tells noise apart).
type Side int

const (
	Production Side = iota
	Target
	Baseline
)

// numSides is how many sides a connection has at most.
const numSides = 3

func (s Side) String() string {
	switch s {
	case Production:
		return "production"
	case Target:
		return "target"
	case Baseline:
		return "baseline"
	}
	return "side(" + strconv.Itoa(int(s)) + ")"
}

// Config says what a Collector compares and how much it keeps.
type Config struct {
	// Limits bound what decoders keep of a message; a zero Body or Sample
	// is DefaultLimits'.
	Limits Limits
	// Protocols decode connections; Conn.Decide's name picks one by its
	// Name ("http1" also finds a protocol named "http": a trailing version
	// number is dropped when nothing matches exactly). A name that matches
	// none falls back to the raw comparison ("tcp").
	Protocols []Protocol
	// Baseline: a baseline side is replayed too, so that fields that
	// differ between production and the baseline are known as noise.
	Baseline bool
	// Rules are the user's ignore rules, applied on top of DefaultRules.
	Rules []Rule
	// NoDefaultRules drops DefaultRules.
	NoDefaultRules bool
	// Samples is how many samples each group keeps; 0 means 3.
	Samples int
	// MaxPending bounds the requests of one connection that wait for
	// their answers (and the answers that wait for their request); 0 means
	// 1024. Requests beyond it are counted as overflow, not compared.
	MaxPending int
	// MaxGroups bounds the distinct group keys; 0 means 1000. Later keys
	// are folded into one "(other)" group per protocol.
	MaxGroups int
}

// preDecideMax bounds the bytes of one stream kept while the connection's
// protocol is not decided yet; beyond it the connection is compared raw.
const preDecideMax = 64 << 10

// Stats are cheap running counters. Different and Noise are provisional
// until Report: a field is known as noise only once the baseline differed
// on it, which may come after a request was counted as different.
type Stats struct {
	Conns     int64 `json:"conns"`
	Requests  int64 `json:"requests"`
	Compared  int64 `json:"compared"`
	Identical int64 `json:"identical"`
	Different int64 `json:"different"`
	Noise     int64 `json:"noise"`
	// Missing counts requests answered on one of production and the target
	// only.
	Missing int64 `json:"missing"`
	// BytesFed counts the bytes given to Client and Server.
	BytesFed int64 `json:"bytes_fed"`
}

type stats struct {
	conns, requests, compared, identical, different, noise, missing, bytes atomic.Int64
}

// A Collector gathers the comparisons of many connections into groups.
// Its methods and its connections' methods are safe for concurrent use.
type Collector struct {
	cfg    Config
	lim    Limits
	protos map[string]Protocol
	rules  ruleSet
	st     stats

	// mu guards everything below. Lock order: a Conn's mu, then this one.
	mu     sync.Mutex
	open   map[*Conn]struct{}
	groups map[string]*keyGroup
	nkeys  int // distinct keys, "(other)" groups not counted
	tot    totals
}

// totals are the counts that belong to streams rather than to groups.
type totals struct {
	malformed   map[string]map[string]int64 // stream → reason → count
	truncated   map[string]int64            // side → count
	unsolicited map[string]int64            // side → count
	unmatched   map[string]int64            // side → count
	missingWhy  map[string]map[string]int64 // side → reason → count
	partial     int64
}

// Bounds of the maps of reasons: a reason is text from a decoder or the
// replay, so it may vary without limit.
const (
	maxReasons   = 64
	maxReasonLen = 200
	otherReason  = "(other)"
)

// NewCollector returns a collector for cfg.
func NewCollector(cfg Config) *Collector {
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.Samples <= 0 {
		cfg.Samples = 3
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1024
	}
	if cfg.MaxGroups <= 0 {
		cfg.MaxGroups = 1000
	}
	c := &Collector{
		cfg:    cfg,
		lim:    cfg.Limits,
		protos: make(map[string]Protocol),
		open:   make(map[*Conn]struct{}),
		groups: make(map[string]*keyGroup),
		tot: totals{
			malformed:   make(map[string]map[string]int64),
			truncated:   make(map[string]int64),
			unsolicited: make(map[string]int64),
			unmatched:   make(map[string]int64),
			missingWhy:  make(map[string]map[string]int64),
		},
	}
	for _, p := range cfg.Protocols {
		if p == nil {
			continue
		}
		if _, dup := c.protos[p.Name()]; !dup {
			c.protos[p.Name()] = p
		}
	}
	var rules []Rule
	if !cfg.NoDefaultRules {
		rules = append(rules, DefaultRules()...)
	}
	rules = append(rules, cfg.Rules...)
	c.rules = newRuleSet(rules)
	return c
}

// protocol finds the protocol Decide names, or nil for the raw fallback.
func (c *Collector) protocol(name string) Protocol {
	if p, ok := c.protos[name]; ok {
		return p
	}
	base := name
	for len(base) > 0 && base[len(base)-1] >= '0' && base[len(base)-1] <= '9' {
		base = base[:len(base)-1]
	}
	if base != name && base != "" {
		return c.protos[base]
	}
	return nil
}

func (c *Collector) enabled(s Side) bool {
	return s == Production || s == Target || s == Baseline && c.cfg.Baseline
}

// Open starts a connection between client and server.
func (c *Collector) Open(client, server netip.AddrPort) *Conn {
	cn := &Conn{
		col:    c,
		client: client,
		server: server,
		byID:   make(map[int]*pend),
		maxID:  -1,
	}
	c.st.conns.Add(1)
	c.mu.Lock()
	c.open[cn] = struct{}{}
	c.mu.Unlock()
	return cn
}

// Stats returns the running counters; it takes no lock.
func (c *Collector) Stats() Stats {
	return Stats{
		Conns:     c.st.conns.Load(),
		Requests:  c.st.requests.Load(),
		Compared:  c.st.compared.Load(),
		Identical: c.st.identical.Load(),
		Different: c.st.different.Load(),
		Noise:     c.st.noise.Load(),
		Missing:   c.st.missing.Load(),
		BytesFed:  c.st.bytes.Load(),
	}
}

// Report finalizes every connection still open (their unanswered requests
// count as missing, reason "still open") and returns the report. It may be
// called again; connections finalized by it ignore later calls.
func (c *Collector) Report() *Report {
	c.mu.Lock()
	open := make([]*Conn, 0, len(c.open))
	for cn := range c.open {
		open = append(open, cn)
	}
	c.mu.Unlock()
	// Not under c.mu: finalizing takes each connection's lock, which
	// comes before c.mu.
	for _, cn := range open {
		cn.forceEnd()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buildReport()
}

// closed forgets a finalized connection.
func (c *Collector) closed(cn *Conn) {
	c.mu.Lock()
	delete(c.open, cn)
	c.mu.Unlock()
}

func capString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut at a rune boundary so the result stays valid UTF-8.
	i := n
	for i > 0 && i < len(s) && s[i]&0xc0 == 0x80 {
		i--
	}
	return s[:i] + "… (" + strconv.Itoa(len(s)-i) + " more bytes)"
}

// countReason adds one to m[reason], bounded: past maxReasons distinct
// reasons the rest are counted as "(other)".
func countReason(m map[string]int64, reason string) {
	reason = capString(reason, maxReasonLen)
	if _, ok := m[reason]; !ok && len(m) >= maxReasons {
		reason = otherReason
	}
	m[reason]++
}

func (c *Collector) malformed(stream, reason string) {
	c.mu.Lock()
	m := c.tot.malformed[stream]
	if m == nil {
		m = make(map[string]int64)
		c.tot.malformed[stream] = m
	}
	countReason(m, reason)
	c.mu.Unlock()
}

// streamCounts adds a connection's stream counters to the totals at once,
// so the collector's lock is taken once per connection, not per answer.
func (c *Collector) streamCounts(truncated, unsolicited, unmatched [numSides]int64, partial int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := Side(0); s < numSides; s++ {
		if truncated[s] > 0 {
			c.tot.truncated[s.String()] += truncated[s]
		}
		if unsolicited[s] > 0 {
			c.tot.unsolicited[s.String()] += unsolicited[s]
		}
		if unmatched[s] > 0 {
			c.tot.unmatched[s.String()] += unmatched[s]
		}
	}
	c.tot.partial += partial
}
