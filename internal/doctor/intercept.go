package doctor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/stackcopy/stackcopy/hostnet"
	"github.com/stackcopy/stackcopy/relay"
)

// Intercept is what `intercept doctor` checks.
type Intercept struct {
	Capture         bool   // AF_PACKET on an assistant (-i); false: NFQUEUE on the target
	Queue           uint16 // -q
	ServerPort      int    // doctor --server-port: the port whose answers the rule must queue; 0 = any
	Interface       string // -i
	Filter          string // -F
	AllowForwarding bool   // --allow-forwarding
	KeyFile         string
	KeyEnv          string
	Listen          string // host:port the relay listens on
	// DialTimeout bounds the handshake with an intercept already running
	// here (default 5 s).
	DialTimeout time.Duration
}

// CheckIntercept runs every check an intercept run with c depends on.
func CheckIntercept(ctx context.Context, c Intercept) *Report {
	r := &Report{Program: "intercept"}
	if c.Capture {
		r.checkCapabilities("intercept", map[int]string{capNetRaw: "AF_PACKET capture"})
		r.checkInterface("capture interface", c.Interface)
		r.checkAssistantForwarding(c.Interface, c.AllowForwarding)
		r.checkFilter(c.Filter)
	} else {
		r.checkCapabilities("intercept", map[int]string{capNetAdmin: "bind the NFQUEUE queue, give verdicts"})
		r.checkNFQueueRule(ctx, c.Queue, c.ServerPort)
		r.checkQueueFree(c.Queue)
	}
	var key relay.Key
	loaded := r.checkKey(c.KeyFile, c.KeyEnv, func(file, env string) error {
		k, err := relay.LoadKey(file, env)
		key = k
		return err
	})
	r.checkListen(ctx, c, key, loaded)
	return r
}

// checkAssistantForwarding: an assistant must not forward, or the
// answers it captures also reach the real clients (intercept refuses to
// start, unless --allow-forwarding).
func (r *Report) checkAssistantForwarding(iface string, allowed bool) {
	path := "net/ipv4/ip_forward"
	if iface != "" && iface != "any" {
		path = "net/ipv4/conf/" + iface + "/forwarding"
	}
	name := hostnet.SysctlName(path)
	v, err := hostnet.Sysctl(path)
	switch {
	case err != nil:
		r.warn(name, "", "%v", err)
	case v == "0":
		r.ok(name, "0: answers to forged clients die here after capture, as they must")
	case allowed:
		r.warn(name, "sysctl -w net.ipv4.ip_forward=0", "%s with --allow-forwarding: the captured answers also reach the real clients", v)
	default:
		r.fail(name, "sysctl -w net.ipv4.ip_forward=0  # persist: echo net.ipv4.ip_forward=0 > /etc/sysctl.d/90-intercept.conf",
			"%s: this assistant forwards, so the target's answers would also reach the real clients; intercept refuses to start", v)
	}
}

// nfqRule is one iptables rule that sends packets to NFQUEUE.
type nfqRule struct {
	text   string
	lo, hi uint16 // queues it feeds: --queue-num, or the --queue-balance range
	bypass bool
}

var (
	queueNumRE     = regexp.MustCompile(`--queue-num (\d+)`)
	queueBalanceRE = regexp.MustCompile(`--queue-balance (\d+):(\d+)`)
	nftQueueRE     = regexp.MustCompile(`\bqueue\b.*?\b(?:num|to) (\d+)(?:-(\d+))?`)
)

// parseIptablesSave finds NFQUEUE rules in iptables-save output, with
// their table (for the fix line) and the queues they feed.
func parseIptablesSave(out []byte) []nfqRule {
	var rules []nfqRule
	table := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if t, ok := strings.CutPrefix(line, "*"); ok {
			table = t
			continue
		}
		if !strings.HasPrefix(line, "-A ") || !strings.Contains(line, "-j NFQUEUE") {
			continue
		}
		rule := nfqRule{text: "-t " + table + " " + line, bypass: strings.Contains(line, "--queue-bypass")}
		if m := queueBalanceRE.FindStringSubmatch(line); m != nil {
			rule.lo, rule.hi = atou16(m[1]), atou16(m[2])
		} else if m := queueNumRE.FindStringSubmatch(line); m != nil {
			rule.lo = atou16(m[1])
			rule.hi = rule.lo
		} // else queue 0, NFQUEUE's default
		rules = append(rules, rule)
	}
	return rules
}

// parseNftRuleset finds queue statements in nft list ruleset output, for
// rules written with nft directly (iptables-save does not show them).
func parseNftRuleset(out []byte) []nfqRule {
	var rules []nfqRule
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		m := nftQueueRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		rule := nfqRule{text: "nft: " + line, lo: atou16(m[1]), bypass: strings.Contains(line, "bypass")}
		rule.hi = rule.lo
		if m[2] != "" {
			rule.hi = atou16(m[2])
		}
		rules = append(rules, rule)
	}
	return rules
}

func atou16(s string) uint16 {
	n, _ := strconv.ParseUint(s, 10, 16)
	return uint16(n)
}

// matchesSport says whether an iptables rule's text matches TCP source
// port p, or has no source port match at all (then it matches any).
func matchesSport(rule string, p int) bool {
	ps := strconv.Itoa(p)
	f := strings.Fields(rule)
	for i := 0; i+1 < len(f); i++ {
		switch f[i] {
		case "--sport", "--source-port":
			if f[i+1] == ps || portInRange(f[i+1], p) {
				return true
			}
			return false
		case "--sports", "--source-ports":
			for _, x := range strings.Split(f[i+1], ",") {
				if x == ps || portInRange(x, p) {
					return true
				}
			}
			return false
		case "sport":
			return f[i+1] == ps || strings.Contains(f[i+1], ps)
		}
	}
	return true
}

func portInRange(spec string, p int) bool {
	lo, hi, ok := strings.Cut(spec, ":")
	if !ok {
		return false
	}
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	return err1 == nil && err2 == nil && a <= p && p <= b
}

// checkNFQueueRule looks for the rule that feeds queue q (iptables-save,
// and nft for native rules). Without it nothing reaches intercept: the
// answers go straight to the real clients.
func (r *Report) checkNFQueueRule(ctx context.Context, q uint16, serverPort int) {
	sport := "SERVER-PORT"
	if serverPort > 0 {
		sport = strconv.Itoa(serverPort)
	}
	fix := fmt.Sprintf("iptables -I OUTPUT -p tcp --sport %s -j NFQUEUE --queue-num %d", sport, q)
	r.checkTool("iptables", "iptables", "the NFQUEUE rule that feeds intercept is an iptables rule", true)
	var rules []nfqRule
	var notes []string
	if path, err := exec.LookPath("iptables-save"); err == nil {
		out, stderr, err := runRead(ctx, path)
		if err != nil {
			r.fail("nfqueue rule", "", "iptables-save: %v: %s", err, stderr)
			return
		}
		rules = append(rules, parseIptablesSave(out)...)
		if strings.Contains(stderr, "legacy tables present") {
			notes = append(notes, "iptables-legacy tables are present too and not inspected (iptables-legacy-save)")
		}
	}
	if path, err := exec.LookPath("nft"); err == nil && len(rules) == 0 {
		if out, _, err := runRead(ctx, path, "list", "ruleset"); err == nil {
			rules = append(rules, parseNftRuleset(out)...)
		}
	}
	var feeding []nfqRule
	for _, rule := range rules {
		if rule.lo <= q && q <= rule.hi {
			feeding = append(feeding, rule)
		}
	}
	if len(feeding) == 0 {
		others := ""
		if len(rules) > 0 {
			others = fmt.Sprintf(" (%d NFQUEUE rule(s) feed other queues)", len(rules))
		}
		r.fail("nfqueue rule", fix, "no iptables rule sends packets to queue %d%s: the target's answers bypass intercept and reach the real clients", q, others)
		return
	}
	if serverPort > 0 {
		matched := false
		for _, rule := range feeding {
			matched = matched || matchesSport(rule.text, serverPort)
		}
		if !matched {
			r.fail("nfqueue rule", fix, "queue %d is fed, but by no rule matching TCP source port %d: %s", q, serverPort, feeding[0].text)
			return
		}
	}
	rule := feeding[0]
	note := "; without --queue-bypass the port goes dark while intercept is not running (with it, answers leak to real clients instead)"
	if rule.bypass {
		note = "; --queue-bypass: while intercept is not running the answers pass (to the real clients)"
	}
	if len(notes) > 0 {
		note += "; " + strings.Join(notes, "; ")
	}
	r.ok("nfqueue rule", "%s%s", rule.text, note)
}

// queueBinding is one line of /proc/net/netfilter/nfnetlink_queue.
type queueBinding struct {
	queue  uint16
	portID int
}

func parseQueueBindings(b []byte) []queueBinding {
	var out []queueBinding
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		q, err1 := strconv.ParseUint(f[0], 10, 16)
		p, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, queueBinding{queue: uint16(q), portID: p})
	}
	return out
}

// checkQueueFree checks that no other program reads queue q: the kernel
// lets one socket bind a queue.
func (r *Report) checkQueueFree(q uint16) {
	b, err := os.ReadFile("/proc/net/netfilter/nfnetlink_queue")
	if errors.Is(err, os.ErrNotExist) {
		r.ok("nfqueue "+strconv.Itoa(int(q)), "free (nfnetlink_queue is not loaded yet; the kernel loads it when intercept binds)")
		return
	}
	if err != nil {
		r.warn("nfqueue "+strconv.Itoa(int(q)), "", "%v", err)
		return
	}
	for _, qb := range parseQueueBindings(b) {
		if qb.queue != q {
			continue
		}
		// A netlink socket's port id is its process's pid unless that
		// process already had one bound.
		comm := processName(qb.portID)
		if comm == "intercept" {
			r.warn("nfqueue "+strconv.Itoa(int(q)), fmt.Sprintf("systemctl stop intercept  # or kill %d, before starting another", qb.portID),
				"bound by a running intercept (pid %d): a second intercept on -q %d would fail to bind", qb.portID, q)
			return
		}
		who := "netlink port id " + strconv.Itoa(qb.portID)
		if comm != "" {
			who = fmt.Sprintf("%s (pid %d)", comm, qb.portID)
		}
		r.fail("nfqueue "+strconv.Itoa(int(q)), fmt.Sprintf("ps -p %d  # stop that program, or use another queue: -q N and --queue-num N in the rule", qb.portID),
			"already bound by %s: intercept cannot bind it", who)
		return
	}
	r.ok("nfqueue "+strconv.Itoa(int(q)), "free: no program reads it")
}

// checkListen checks the relay port: free, or held by an intercept that
// then must accept this key (the same handshake stackcopy does).
func (r *Report) checkListen(ctx context.Context, c Intercept, key relay.Key, keyLoaded bool) {
	_, portStr, err := net.SplitHostPort(c.Listen)
	if err != nil {
		r.fail("relay listen", "", "%q: %v", c.Listen, err)
		return
	}
	port, _ := strconv.Atoi(portStr)
	name := "relay port " + portStr
	found, pid, comm := portListener(port)
	if !found {
		r.ok(name, "free: stackcopy connects here (TCP %d); let it through the firewall from the mirrors", port)
		return
	}
	if comm != "intercept" {
		who := "another program"
		if pid > 0 {
			who = fmt.Sprintf("%s (pid %d)", comm, pid)
		}
		r.fail(name, "ss -ltnp 'sport = :"+portStr+"'  # stop it, or -p OTHER-PORT here and -s HOST:OTHER-PORT on stackcopy", "TCP %d is taken by %s: intercept cannot listen", port, who)
		return
	}
	r.warn(name, fmt.Sprintf("systemctl stop intercept  # or kill %d, before starting another", pid), "a running intercept (pid %d) listens already: a second one on -p %d would fail", pid, port)
	if !keyLoaded {
		return
	}
	host, _, _ := net.SplitHostPort(c.Listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	timeout := c.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	keyArg := "--key-file " + c.KeyFile
	r.checkIntercept(ctx, net.JoinHostPort(host, portStr), key, keyArg, c.KeyFile, timeout)
}

// runRead runs a read-only command with a bounded time.
func runRead(ctx context.Context, name string, args ...string) (stdout []byte, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var eb bytes.Buffer
	cmd.Stderr = &eb
	out, err := cmd.Output()
	if err != nil {
		return out, oneLine(eb.String()), fmt.Errorf("%s: %w", name, err)
	}
	return out, oneLine(eb.String()), nil
}
