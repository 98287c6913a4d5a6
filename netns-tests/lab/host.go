package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Host is one network namespace of a lab.
type Host struct {
	lab  *Lab
	name string
	ns   string

	mu    sync.Mutex
	ifSeq int
}

// Host creates a namespace named <prefix>-<name> with lo up and IPv6 off.
func (l *Lab) Host(name string) (*Host, error) {
	if !hostNameRE.MatchString(name) {
		return nil, fmt.Errorf("lab: add host %q: name must match %s", name, hostNameRE)
	}
	h := &Host{lab: l, name: name, ns: l.prefix + "-" + name}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: add host %s: lab is closed", name)
	}
	if slices.ContainsFunc(l.hosts, func(o *Host) bool { return o.name == name }) {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: add host %s: exists", name)
	}
	// Registered before creation so that Close removes the namespace even
	// if a later setup step fails (removeNamespace ignores a missing one).
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()

	if _, err := run(context.Background(), "ip", "netns", "add", h.ns); err != nil {
		return nil, fmt.Errorf("lab: add host %s: %w", name, err)
	}
	if _, err := run(context.Background(), "ip", "-n", h.ns, "link", "set", "lo", "up"); err != nil {
		return nil, fmt.Errorf("lab: add host %s: %w", name, err)
	}
	// IPv6 off before any link exists, so veths get no fe80:: address (the
	// lab uses 198.18.0.0/15 only) and captures stay free of RS/MLD noise.
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
			if err := h.Sysctl(k, "1"); err != nil {
				return nil, fmt.Errorf("lab: add host %s: %w", name, err)
			}
		}
	}
	return h, nil
}

// Name returns the namespace name, e.g. "sc1a2b3c-client", for use with
// `ip netns exec` or `ip -n`.
func (h *Host) Name() string { return h.ns }

// Label returns the short host name given to Lab.Host.
func (h *Host) Label() string { return h.name }

// Lab returns the lab the host belongs to.
func (h *Host) Lab() *Lab { return h.lab }

// nextIf returns the next free interface name: eth0, eth1, ... Names only
// need to be unique inside one namespace.
func (h *Host) nextIf() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	name := "eth" + strconv.Itoa(h.ifSeq)
	h.ifSeq++
	return name
}

// Link joins hosts a and b with a veth pair, assigns the addresses (an
// invalid prefix assigns none), raises txqueuelen to 10000 (the default 1000
// drops bursts from a fast sender before TCP can react) and sets both ends
// up. The pair is created inside a's namespace with its peer placed
// directly into b's, so it never exists in the root namespace. It returns
// the interface names in a and b.
func (l *Lab) Link(a *Host, aAddr netip.Prefix, b *Host, bAddr netip.Prefix) (aIf, bIf string, err error) {
	if a == nil || b == nil || a.lab != l || b.lab != l {
		return "", "", errors.New("lab: link: hosts must belong to this lab")
	}
	what := "link " + a.name + "-" + b.name
	for _, p := range []netip.Prefix{aAddr, bAddr} {
		if p.IsValid() && !InLab(p) {
			return "", "", fmt.Errorf("lab: %s: address %s outside the lab range %s", what, p, labNet)
		}
	}
	aIf, bIf = a.nextIf(), b.nextIf()
	ctx := context.Background()
	if _, err := run(ctx, "ip", "-n", a.ns, "link", "add", aIf, "txqueuelen", "10000", "type", "veth",
		"peer", "name", bIf, "txqueuelen", "10000", "netns", b.ns); err != nil {
		return "", "", fmt.Errorf("lab: %s: %w", what, err)
	}
	for _, end := range []struct {
		h    *Host
		ifc  string
		addr netip.Prefix
	}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		if end.addr.IsValid() {
			if _, err := run(ctx, "ip", "-n", end.h.ns, "addr", "add", end.addr.String(), "dev", end.ifc); err != nil {
				return "", "", fmt.Errorf("lab: %s: %w", what, err)
			}
		}
		if _, err := run(ctx, "ip", "-n", end.h.ns, "link", "set", end.ifc, "up"); err != nil {
			return "", "", fmt.Errorf("lab: %s: %w", what, err)
		}
	}
	return aIf, bIf, nil
}

// DisableGSO makes packets leaving iface MTU-sized (gso_max_segs 1):
// veth passes TCP's up-to-64 KiB TSO/GSO super-packets through whole, so
// without this a "5% loss" iptables rule drops 5% of 64 KiB chunks, a few
// dozen drops for a 20 MiB upload instead of hundreds of single segments.
// GSO packets forwarded from a TUN are segmented in software here as well.
func (h *Host) DisableGSO(iface string) error {
	if _, err := run(context.Background(), "ip", "-n", h.ns, "link", "set", "dev", iface, "gso_max_segs", "1"); err != nil {
		return fmt.Errorf("lab: disable GSO on %s %s: %w", h.name, iface, err)
	}
	return nil
}

// Exec runs a command in the host's namespace (`ip netns exec`) and returns
// its combined output; on failure the error includes the command line, the
// exit status and the output. Without a deadline on ctx it is bounded by
// 30 s.
func (h *Host) Exec(ctx context.Context, args ...string) ([]byte, error) {
	return h.ExecInput(ctx, nil, args...)
}

// ExecInput is Exec with the command's standard input read from in: a
// client fed a script, as a user pipes one in.
func (h *Host) ExecInput(ctx context.Context, in io.Reader, args ...string) ([]byte, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("lab: exec on %s: no command", h.name)
	}
	out, err := runInput(ctx, in, "ip", append([]string{"netns", "exec", h.ns}, args...)...)
	if err != nil {
		return out, fmt.Errorf("lab: exec on %s: %w", h.name, err)
	}
	return out, nil
}

// Sysctl sets a sysctl in the host's namespace, e.g.
// Sysctl("net.ipv4.ip_forward", "1"). Only per-namespace (net.*) keys make
// sense; others would change the whole machine.
func (h *Host) Sysctl(key, value string) error {
	if !strings.HasPrefix(key, "net.") {
		return fmt.Errorf("lab: sysctl %s on %s: only net.* keys are per namespace", key, h.name)
	}
	if _, err := run(context.Background(), "ip", "netns", "exec", h.ns, "sysctl", "-q", "-w", key+"="+value); err != nil {
		return fmt.Errorf("lab: sysctl on %s: %w", h.name, err)
	}
	return nil
}

// AddRoute adds a route to dst via a gateway; both must be in the lab range.
func (h *Host) AddRoute(dst netip.Prefix, via netip.Addr) error {
	if !InLab(dst) || !via.IsValid() || !labNet.Contains(via) {
		return fmt.Errorf("lab: route %s via %s on %s: outside the lab range %s", dst, via, h.name, labNet)
	}
	if _, err := run(context.Background(), "ip", "-n", h.ns, "route", "add", dst.Masked().String(), "via", via.String()); err != nil {
		return fmt.Errorf("lab: route on %s: %w", h.name, err)
	}
	return nil
}

// AddDevRoute adds a route to dst out of an interface without a gateway
// (e.g. the forged client prefix into a TUN); dst must be in the lab range.
func (h *Host) AddDevRoute(dst netip.Prefix, dev string) error {
	if !InLab(dst) {
		return fmt.Errorf("lab: route %s dev %s on %s: outside the lab range %s", dst, dev, h.name, labNet)
	}
	if _, err := run(context.Background(), "ip", "-n", h.ns, "route", "add", dst.Masked().String(), "dev", dev); err != nil {
		return fmt.Errorf("lab: route on %s: %w", h.name, err)
	}
	return nil
}

// IPTables runs iptables with args in the host's namespace, with the
// backend found by IPTablesBackend. Example (5% random loss inbound):
//
//	h.IPTables("-A", "INPUT", "-m", "statistic", "--mode", "random", "--probability", "0.05", "-j", "DROP")
func (h *Host) IPTables(args ...string) error {
	bin, err := h.lab.IPTablesBackend()
	if err != nil {
		return fmt.Errorf("lab: iptables on %s: %w", h.name, err)
	}
	// --wait: iptables-legacy serialises on /run/xtables.lock, which is
	// shared by all namespaces, so parallel labs contend for it.
	full := append([]string{"netns", "exec", h.ns, bin, "--wait=10"}, args...)
	if _, err := run(context.Background(), "ip", full...); err != nil {
		return fmt.Errorf("lab: iptables on %s: %w", h.name, err)
	}
	return nil
}

// IPTablesOutput is IPTables returning the output (for -S, -L -v -n -x).
func (h *Host) IPTablesOutput(args ...string) (string, error) {
	bin, err := h.lab.IPTablesBackend()
	if err != nil {
		return "", fmt.Errorf("lab: iptables on %s: %w", h.name, err)
	}
	full := append([]string{"netns", "exec", h.ns, bin, "--wait=10"}, args...)
	out, err := run(context.Background(), "ip", full...)
	if err != nil {
		return string(out), fmt.Errorf("lab: iptables on %s: %w", h.name, err)
	}
	return string(out), nil
}

// IPTablesBackend returns the iptables binary the lab uses: $STACKCOPY_IPTABLES
// if set, else the first of iptables-nft, iptables-legacy, iptables that can
// add a statistic-match rule inside a scratch namespace. Both backends are
// per namespace; nft is Debian's default, so rules show up in `iptables -S`
// for someone debugging a kept lab. The result is cached per lab.
func (l *Lab) IPTablesBackend() (string, error) {
	l.iptOnce.Do(func() {
		if bin := os.Getenv(EnvIPTables); bin != "" {
			l.ipt = bin
			return
		}
		ns := l.prefix + "-iptprobe"
		if _, err := run(context.Background(), "ip", "netns", "add", ns); err != nil {
			l.iptErr = err
			return
		}
		defer func() { _ = removeNamespace(ns) }()
		var errs []error
		for _, bin := range []string{"iptables-nft", "iptables-legacy", "iptables"} {
			_, err := run(context.Background(), "ip", "netns", "exec", ns, bin, "--wait=10",
				"-A", "INPUT", "-m", "statistic", "--mode", "random", "--probability", "0.5", "-j", "ACCEPT")
			if err == nil {
				l.ipt = bin
				return
			}
			errs = append(errs, err)
		}
		l.iptErr = fmt.Errorf("no working iptables (install Debian package iptables): %w", errors.Join(errs...))
	})
	return l.ipt, l.iptErr
}

// WaitListening waits until a TCP socket listens on addr (or on the
// wildcard address with addr's port) in the host's namespace. It polls
// `ss -Hltn`; without a deadline on ctx it gives up after 10 s.
func (h *Host) WaitListening(ctx context.Context, addr netip.AddrPort) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	want := []string{
		addr.String(),
		"0.0.0.0:" + strconv.Itoa(int(addr.Port())),
		"*:" + strconv.Itoa(int(addr.Port())),
		"[::]:" + strconv.Itoa(int(addr.Port())),
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last []byte
	for {
		out, err := run(ctx, "ip", "netns", "exec", h.ns, "ss", "-Hltn")
		if err == nil {
			last = out
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				// State Recv-Q Send-Q Local:Port Peer:Port [Process]
				f := strings.Fields(sc.Text())
				if len(f) >= 4 && slices.Contains(want, f[3]) {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: wait for %s listening on %s: %w; ss -Hltn:%s", addr, h.name, ctx.Err(), outputSuffix(last))
		case <-tick.C:
		}
	}
}
