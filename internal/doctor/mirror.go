package doctor

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stackcopy/stackcopy/hostnet"
	"github.com/stackcopy/stackcopy/internal/pcapfilter"
	"github.com/stackcopy/stackcopy/relay"
)

// Mirror is what `stackcopy doctor` checks: the parts of a run's
// configuration that touch the host.
type Mirror struct {
	Targets    []netip.Addr // the -x targets
	Live       bool         // Inputs are interfaces, not capture files
	Inputs     []string     // -i
	Filter     string       // -F (compiled by tcpdump)
	Output     string       // -o: tun, raw or IFACE[@MAC]
	TUN        string       // --tun
	NoRoutes   bool         // --no-routes
	Pool       []netip.Addr // -c, only for the return-route hint
	Intercepts []string     // -s
	KeyFile    string       // --key-file
	KeyEnv     string       // the variable read without --key-file
	SpillDir   string       // --spill-dir; "" skips the check (--spill-max 0)
	// DialTimeout bounds the relay handshake with each intercept
	// (default 5 s).
	DialTimeout time.Duration
}

// CheckMirror runs every check a stackcopy run with m depends on.
func CheckMirror(ctx context.Context, m Mirror) *Report {
	r := &Report{Program: "stackcopy"}
	egress := m.Output
	if egress == "" {
		egress = "tun"
	}
	need := map[int]string{}
	if egress == "tun" {
		need[capNetAdmin] = "create the TUN, route forged clients into it"
	} else {
		need[capNetRaw] = "raw or AF_PACKET egress socket"
	}
	if m.Live {
		need[capNetRaw] = "AF_PACKET live capture"
	}
	r.checkCapabilities("stackcopy", need)

	r.checkInputs(m)
	switch {
	case egress == "tun":
		r.checkTUNEgress(m)
	case egress == "raw":
		r.checkTargetRoutes(m.Targets, "")
		r.info("egress raw", "forged packets leave through this host's routing (IP_HDRINCL); no TUN, no forwarding; answers come back only through intercept (-s)")
	default:
		r.checkLinkEgress(egress, m.Targets)
	}
	if len(m.Intercepts) > 0 {
		r.checkRelay(ctx, m)
	}
	if m.SpillDir != "" {
		r.checkSpillDir(m.SpillDir)
	}
	return r
}

func (r *Report) checkInputs(m Mirror) {
	if !m.Live {
		for _, in := range m.Inputs {
			f, err := os.Open(in)
			if err != nil {
				r.fail("capture "+in, "", "%v", err)
				continue
			}
			fi, err := f.Stat()
			f.Close()
			if err != nil {
				r.fail("capture "+in, "", "%v", err)
				continue
			}
			r.ok("capture "+in, "readable, %d bytes", fi.Size())
		}
		return
	}
	for _, in := range m.Inputs {
		r.checkInterface("capture interface", in)
	}
	if m.Filter != "" {
		r.checkFilter(m.Filter)
	}
}

// checkFilter compiles a -F filter the way the run does (tcpdump -ddd):
// a typo fails here instead of at start.
func (r *Report) checkFilter(expr string) {
	r.checkTool("tcpdump", "tcpdump", "compiles the -F filter", true)
	if _, err := pcapfilter.Compile(expr, pcapfilter.Ethernet, 256<<10); err != nil {
		r.fail("filter", "", "%v", err)
		return
	}
	r.ok("filter", "%q compiles", expr)
}

// checkTUNEgress checks the TUN deployment: the device can be created
// under its name, every target is routed out of a real interface, this
// host forwards, and reverse-path filtering lets the forged clients pass.
// The conditions are hostnet.Preflight's, one line each, so every problem
// shows at once instead of the first.
func (r *Report) checkTUNEgress(m Mirror) {
	tun := m.TUN
	if ok, fix := hostnet.TUNAvailable(); !ok {
		r.fail("tun driver", fix, "/dev/net/tun is missing: the TUN device cannot be created")
	} else {
		r.ok("tun driver", "/dev/net/tun present")
	}
	switch st, err := hostnet.Link(tun); {
	case err != nil:
		r.warn("tun "+tun, "", "%v", err)
	case !st.Exists:
		r.ok("tun "+tun, "free: stackcopy creates it")
	case st.Type != "tuntap":
		r.fail("tun "+tun, "--tun stackcopy1  # or another free name", "%s is an existing %s device, not a TUN: stackcopy cannot take it over", tun, st.Type)
	default:
		r.warn("tun "+tun, "--tun stackcopy1  # if another stackcopy is running", "a TUN named %s exists already: another stackcopy running, or a left-over persistent device (ip link del %s)", tun, tun)
	}
	forwarding := r.checkTargetRoutes(m.Targets, tun)
	if forwarding {
		switch v, err := hostnet.Sysctl("net/ipv4/ip_forward"); {
		case err != nil:
			r.fail("net.ipv4.ip_forward", "", "%v", err)
		case v != "1":
			r.fail("net.ipv4.ip_forward", "sysctl -w net.ipv4.ip_forward=1  # persist: echo net.ipv4.ip_forward=1 > /etc/sysctl.d/90-stackcopy.conf",
				"%s: the kernel will not forward forged packets from %s to the target", v, tun)
		default:
			r.ok("net.ipv4.ip_forward", "1: forged packets are forwarded from %s to the target", tun)
		}
	}
	r.checkRPFilter(tun, m.NoRoutes)
	r.returnRouteHint(m)
}

// checkTargetRoutes checks that each target has a route that does not
// lead into the TUN; it says whether any target needs forwarding (is not
// local).
func (r *Report) checkTargetRoutes(targets []netip.Addr, tun string) (forwarding bool) {
	for _, t := range targets {
		name := "route to " + t.String()
		ri, err := hostnet.RouteTo(t)
		switch {
		case err != nil:
			r.fail(name, "ip route add "+t.String()+" via NEXT-HOP", "no route to the target: %v", err)
		case ri.Local:
			r.ok(name, "an address of this host: forged packets reach it without forwarding")
		case tun != "" && ri.Dev == tun:
			r.fail(name, "ip route add "+t.String()+" via NEXT-HOP dev REAL-IFACE", "the route leads into %s itself: forged packets would loop back into the stack", tun)
		default:
			forwarding = true
			via := "dev " + ri.Dev
			if ri.Gateway.IsValid() {
				via = "via " + ri.Gateway.String() + " " + via
			}
			r.ok(name, "%s", via)
		}
	}
	return forwarding
}

// checkRPFilter reads rp_filter where the forged clients enter the IP
// layer: all, default (the TUN inherits it when created) and the TUN.
// Strict mode drops them unless stackcopy routes them into the TUN.
func (r *Report) checkRPFilter(tun string, noRoutes bool) {
	vals := map[string]string{}
	var seen []string
	for _, dev := range []string{"all", "default", tun} {
		v, err := hostnet.Sysctl("net/ipv4/conf/" + dev + "/rp_filter")
		if err != nil {
			continue // the TUN does not exist before the run
		}
		vals[dev] = v
		seen = append(seen, hostnet.SysctlName("net/ipv4/conf/"+dev+"/rp_filter")+"="+v)
	}
	if !noRoutes {
		r.ok("rp_filter", "%s: forged clients are routed into %s, so even strict (1) passes", strings.Join(seen, " "), tun)
		return
	}
	// The kernel applies the larger of all and the device; a new device
	// starts with default.
	dev := tun
	if _, ok := vals[tun]; !ok {
		dev = "default"
	}
	for _, d := range []string{"all", dev} {
		if vals[d] == "1" {
			r.fail("rp_filter", "sysctl -w "+hostnet.SysctlName("net/ipv4/conf/"+d+"/rp_filter")+"=2",
				"%s is 1 (strict) and --no-routes leaves the forged clients unrouted into %s: the kernel drops their packets", hostnet.SysctlName("net/ipv4/conf/"+d+"/rp_filter"), tun)
			return
		}
	}
	r.ok("rp_filter", "%s: loose or off, forged clients pass with --no-routes", strings.Join(seen, " "))
}

// returnRouteHint says what the doctor cannot see from here: the target
// must route the forged clients back to this host.
func (r *Report) returnRouteHint(m Mirror) {
	prefix := "CLIENT-PREFIX"
	if len(m.Pool) > 0 {
		prefix = netip.PrefixFrom(m.Pool[0], 24).Masked().String()
		if len(m.Pool) == 1 {
			prefix = m.Pool[0].String()
		}
	}
	for _, t := range m.Targets {
		ri, err := hostnet.RouteTo(t)
		if err != nil || ri.Local {
			continue
		}
		back := ri.Source.String()
		if !ri.Source.IsValid() {
			back = "THIS-HOST"
		}
		r.info("return route "+t.String(), "not visible from here: the target must route the forged clients back to this host; on %s: ip route add %s via %s", t, prefix, back)
	}
}

// checkLinkEgress checks -o IFACE[@MAC]: the interface, and the next hop
// the frames are addressed to (read from the neighbour table; the run
// resolves a missing entry itself).
func (r *Report) checkLinkEgress(out string, targets []netip.Addr) {
	iface, mac, _ := strings.Cut(out, "@")
	st, err := hostnet.Link(iface)
	switch {
	case err != nil:
		r.fail("egress "+iface, "", "%v", err)
		return
	case !st.Exists:
		r.fail("egress "+iface, "ip -br link  # then -o EXISTING-IFACE", "no such interface")
		return
	case !st.Up:
		r.fail("egress "+iface, "ip link set "+iface+" up", "interface is down")
		return
	}
	r.ok("egress "+iface, "AF_PACKET frames, %s up, MTU %d: bypasses this host's IP layer (no forwarding, rp_filter or conntrack involved)", st.Type, st.MTU)
	if mac != "" {
		if _, err := net.ParseMAC(mac); err != nil {
			r.fail("next hop", "-o "+iface+"@aa:bb:cc:dd:ee:ff", "%q is not a MAC address", mac)
		} else {
			r.ok("next hop", "%s given on the command line", mac)
		}
		return
	}
	if len(targets) == 0 {
		return
	}
	hop, hw, state, err := hostnet.CachedNextHop(iface, targets[0])
	switch {
	case err != nil:
		r.fail("next hop", "", "%v", err)
	case hw != nil:
		r.ok("next hop", "%s is %s (%s)", hop, hw, strings.ToLower(state))
	case state == "FAILED":
		r.warn("next hop", "ping -c1 -I "+iface+" "+hop.String(), "%s did not answer ARP (FAILED): stackcopy will try again at start and fail after 3.5 s if it still does not", hop)
	default:
		r.info("next hop", "%s is not in the neighbour table yet; stackcopy resolves it at start (ARP, up to 3.5 s)", hop)
	}
}

// checkRelay loads the key and does the real handshake with every
// intercept, one at a time, so each gets its own line.
func (r *Report) checkRelay(ctx context.Context, m Mirror) {
	var key relay.Key
	loaded := r.checkKey(m.KeyFile, m.KeyEnv, func(file, env string) error {
		k, err := relay.LoadKey(file, env)
		key = k
		return err
	})
	if !loaded {
		r.info("relay", "handshake with %s not tried: it needs the key", strings.Join(m.Intercepts, ","))
		return
	}
	timeout := m.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	var addrs []string
	for _, s := range m.Intercepts {
		for a := range strings.SplitSeq(s, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
			}
		}
	}
	keyArg := "--key-file " + m.KeyFile
	if m.KeyFile == "" {
		keyArg = "(key in $" + m.KeyEnv + ")"
	}
	for _, a := range addrs {
		r.checkIntercept(ctx, a, key, keyArg, m.KeyFile, timeout)
	}
}

// checkIntercept dials one intercept and does the authenticated handshake
// (nothing is registered), classifying the failure for its fix.
func (r *Report) checkIntercept(ctx context.Context, addr string, key relay.Key, keyArg, keyFile string, timeout time.Duration) {
	host, port := addr, strconv.Itoa(relay.DefaultPort)
	if h, p, err := net.SplitHostPort(addr); err == nil {
		host, port = h, p
	}
	name := "relay " + net.JoinHostPort(host, port)
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	c, err := relay.Dial(dctx, []string{addr}, key, relay.ClientConfig{Channels: 1, HandshakeTimeout: timeout})
	if err == nil {
		c.Close()
		r.ok(name, "reachable and authenticated with this key in %v", time.Since(start).Round(time.Millisecond))
		return
	}
	copyKey := "scp " + keyFile + " " + host + ":" + keyFile + "  # the same key on both hosts (or copy the intercept's here); then restart intercept there"
	if keyFile == "" {
		copyKey = "give both sides the same key (--key-file FILE on each, the same file)"
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		copyKey = "systemctl restart intercept  # the running intercept was started with another key than " + keyFile
	}
	switch {
	case errors.Is(err, relay.ErrAuth):
		r.fail(name, copyKey, "reachable, but the handshake failed: the intercept holds another key (%v)", err)
	case errors.Is(err, relay.ErrProtocol):
		r.fail(name, "-s HOST:PORT with intercept's -p port (default "+strconv.Itoa(relay.DefaultPort)+")", "something answers there, but it is not an intercept of this version: %v", err)
	case errors.Is(err, syscall.ECONNREFUSED):
		r.fail(name, "on "+host+": intercept "+keyArg+" -q 0  # or systemctl start intercept", "connection refused: no intercept listens on %s:%s", host, port)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		r.fail(name, "ip route get "+host+"  # add the missing route", "no route to the intercept: %v", err)
	case errors.Is(err, context.DeadlineExceeded):
		r.fail(name, "nc -vz "+host+" "+port+"  # then let TCP "+port+" from this host through the firewall on "+host, "no answer within %v (a firewall dropping TCP %s, or the host is down): %v", timeout, port, err)
	default:
		r.fail(name, "", "%v", err)
	}
}
