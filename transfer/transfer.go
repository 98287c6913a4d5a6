package transfer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Transfer is one tcpcopy -x item: captured traffic to Online is replayed to
// Target. An invalid Online.Addr() matches any server address on that port.
type Transfer struct {
	Online netip.AddrPort
	Target netip.AddrPort
}

func (t Transfer) String() string {
	on := strconv.Itoa(int(t.Online.Port()))
	if t.Online.Addr().IsValid() {
		on = t.Online.String()
	}
	return on + "-" + t.Target.String()
}

// Transfers is a parsed -x list.
type Transfers []Transfer

// ParseTransfers parses tcpcopy's -x syntax: a comma-separated list of
// [onlineIP:]onlinePort-targetIP:targetPort, e.g.
// "80-198.18.2.2:8080,198.18.1.1:443-198.18.2.3:443". IPv6 addresses go in
// brackets. An online IP of 0.0.0.0 means any, like an omitted one.
func ParseTransfers(s string) (Transfers, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("transfer list is empty (want [onlineIP:]onlinePort-targetIP:targetPort[,...])")
	}
	var ts Transfers
	seen := make(map[netip.AddrPort]string)
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		t, err := parseTransfer(item)
		if err != nil {
			return nil, fmt.Errorf("transfer %d %q: %w", i+1, item, err)
		}
		if prev, dup := seen[t.Online]; dup {
			return nil, fmt.Errorf("transfer %d %q: online address %s already given in %q", i+1, item, onlineString(t.Online), prev)
		}
		seen[t.Online] = item
		ts = append(ts, t)
	}
	return ts, nil
}

func onlineString(ap netip.AddrPort) string {
	if ap.Addr().IsValid() {
		return ap.String()
	}
	return "port " + strconv.Itoa(int(ap.Port()))
}

func parseTransfer(item string) (Transfer, error) {
	if item == "" {
		return Transfer{}, errors.New("empty item")
	}
	online, target, ok := strings.Cut(item, "-")
	if !ok {
		return Transfer{}, errors.New("missing '-' between online and target (want [onlineIP:]onlinePort-targetIP:targetPort)")
	}
	if strings.Contains(target, "@") {
		// tcpcopy's "@MAC" picks the next hop's MAC for raw-socket
		// egress; accepting and ignoring it would silently send elsewhere.
		return Transfer{}, errors.New("target@MAC is not supported (it selects the next hop for raw egress, which is not implemented); drop the @MAC part")
	}
	var t Transfer
	if !strings.ContainsAny(online, ":[") {
		p, err := parsePort(online)
		if err != nil {
			return Transfer{}, fmt.Errorf("online %q: %w", online, err)
		}
		t.Online = netip.AddrPortFrom(netip.Addr{}, p)
	} else {
		ap, err := netip.ParseAddrPort(online)
		if err != nil {
			return Transfer{}, fmt.Errorf("online %q: want port or ip:port", online)
		}
		if ap.Port() == 0 {
			return Transfer{}, fmt.Errorf("online %q: port 0", online)
		}
		t.Online = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if ap.Addr().IsUnspecified() {
			t.Online = netip.AddrPortFrom(netip.Addr{}, ap.Port())
		}
	}
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return Transfer{}, fmt.Errorf("target %q: want ip:port", target)
	}
	if ap.Port() == 0 {
		return Transfer{}, fmt.Errorf("target %q: port 0", target)
	}
	if ap.Addr().IsUnspecified() {
		return Transfer{}, fmt.Errorf("target %q: unspecified address", target)
	}
	t.Target = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return t, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q (want 1-65535)", s)
	}
	return uint16(n), nil
}

// Match returns the target for captured traffic to server. An item naming
// the server's IP wins over a port-only item, whatever their order.
func (ts Transfers) Match(server netip.AddrPort) (target netip.AddrPort, ok bool) {
	addr, port := server.Addr().Unmap(), server.Port()
	for _, t := range ts {
		if t.Online.Port() != port {
			continue
		}
		if t.Online.Addr() == addr {
			return t.Target, true
		}
		if !t.Online.Addr().IsValid() && !ok {
			target, ok = t.Target, true
		}
	}
	return target, ok
}

// IsServer reports whether ap is an online server address; it suits
// TrackerConfig.IsServer.
func (ts Transfers) IsServer(ap netip.AddrPort) bool {
	_, ok := ts.Match(ap)
	return ok
}

// Targets returns the distinct target addresses, e.g. to exclude them from a
// client pool.
func (ts Transfers) Targets() []netip.Addr {
	var out []netip.Addr
	for _, t := range ts {
		a := t.Target.Addr()
		if !containsAddr(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func containsAddr(as []netip.Addr, a netip.Addr) bool {
	for _, b := range as {
		if a == b {
			return true
		}
	}
	return false
}

// maxPool bounds a client pool; a /16 worth of addresses is more than any
// replay needs and keeps a typo from allocating gigabytes.
const maxPool = 65536

// ClientPool is tcpcopy's -c: the addresses replayed sessions use instead of
// the captured client addresses.
type ClientPool struct {
	addrs []netip.Addr
}

// ParseClientPool parses a comma-separated list of IPv4 addresses, where
// "a.b.c.x" stands for a.b.c.1 to a.b.c.254. Addresses in exclude (the
// targets: a forged client must never be the server it talks to) are left
// out, as are duplicates.
func ParseClientPool(s string, exclude ...netip.Addr) (*ClientPool, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("client pool is empty (want a.b.c.d[,...] or a.b.c.x)")
	}
	p := &ClientPool{}
	seen := make(map[netip.Addr]bool)
	add := func(a netip.Addr) error {
		if seen[a] || containsAddr(exclude, a) {
			return nil
		}
		if len(p.addrs) == maxPool {
			return fmt.Errorf("client pool has more than %d addresses", maxPool)
		}
		seen[a] = true
		p.addrs = append(p.addrs, a)
		return nil
	}
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if prefix, ok := strings.CutSuffix(item, ".x"); ok {
			base, err := netip.ParseAddr(prefix + ".0")
			if err != nil || !base.Is4() {
				return nil, fmt.Errorf("client pool item %d %q: want a.b.c.x", i+1, item)
			}
			b := base.As4()
			for h := byte(1); h <= 254; h++ {
				b[3] = h
				if err := add(netip.AddrFrom4(b)); err != nil {
					return nil, err
				}
			}
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("client pool item %d %q: not an IPv4 address", i+1, item)
		}
		a = a.Unmap()
		if !a.Is4() {
			return nil, fmt.Errorf("client pool item %d %q: only IPv4 is replayed", i+1, item)
		}
		if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return nil, fmt.Errorf("client pool item %d %q: not a unicast address", i+1, item)
		}
		if err := add(a); err != nil {
			return nil, err
		}
	}
	if len(p.addrs) == 0 {
		return nil, fmt.Errorf("client pool %q is empty once the target addresses are excluded", s)
	}
	return p, nil
}

// Map returns the pool address for a captured client. The choice is a hash
// of the address, so a client keeps its pool address across runs and loops.
func (p *ClientPool) Map(client netip.Addr) netip.Addr {
	return p.addrs[fnv1a(client.Unmap().AsSlice())%uint64(len(p.addrs))]
}

// Len returns the number of addresses in the pool.
func (p *ClientPool) Len() int { return len(p.addrs) }

// Addrs returns the pool's addresses.
func (p *ClientPool) Addrs() []netip.Addr { return append([]netip.Addr(nil), p.addrs...) }

func fnv1a(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// Sampler is tcpcopy's -r: it keeps a percentage of sessions, chosen by a
// hash of the client address and port so the choice is the same every run.
type Sampler struct {
	percent uint64
}

// NewSampler returns a sampler keeping percent (0-100) of sessions.
func NewSampler(percent int) (*Sampler, error) {
	if percent < 0 || percent > 100 {
		return nil, fmt.Errorf("sample percentage %d out of range 0-100", percent)
	}
	return &Sampler{percent: uint64(percent)}, nil
}

// Keep reports whether the session of client is sampled. Only the client
// side decides, so every copy of a session and both of its directions agree.
func (s *Sampler) Keep(client netip.AddrPort) bool {
	if s.percent >= 100 {
		return true
	}
	var b [18]byte
	a := client.Addr().Unmap().As16()
	copy(b[:], a[:])
	binary.BigEndian.PutUint16(b[16:], client.Port())
	// FNV-1a alone leaves the low digits of consecutive ports correlated;
	// the finalizer (from MurmurHash3) spreads them before the modulo.
	h := fnv1a(b[:])
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h%100 < s.percent
}
