package transfer

import (
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseTransfers(t *testing.T) {
	ap := netip.MustParseAddrPort
	any := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.Addr{}, port) }
	tests := []struct {
		in   string
		want Transfers
		err  string
	}{
		{in: "80-198.18.2.2:8080", want: Transfers{{any(80), ap("198.18.2.2:8080")}}},
		{in: "80-198.18.2.2:8080,198.18.1.1:443-198.18.2.3:443", want: Transfers{
			{any(80), ap("198.18.2.2:8080")}, {ap("198.18.1.1:443"), ap("198.18.2.3:443")}}},
		{in: " 0.0.0.0:80-198.18.2.2:80 , 81-198.18.2.2:81", want: Transfers{{any(80), ap("198.18.2.2:80")}, {any(81), ap("198.18.2.2:81")}}},
		{in: "[2001:db8::1]:80-[2001:db8::2]:8080", want: Transfers{{ap("[2001:db8::1]:80"), ap("[2001:db8::2]:8080")}}},
		{in: "", err: "transfer list is empty"},
		{in: "80-198.18.2.2:8080,", err: `transfer 2 "": empty item`},
		{in: "80", err: `transfer 1 "80": missing '-'`},
		{in: "80-198.18.2.2", err: `transfer 1 "80-198.18.2.2": target "198.18.2.2": want ip:port`},
		{in: "80-198.18.2.2:0", err: "port 0"},
		{in: "0-198.18.2.2:80", err: `online "0": bad port "0"`},
		{in: "70000-198.18.2.2:80", err: `bad port "70000"`},
		{in: "http-198.18.2.2:80", err: `bad port "http"`},
		{in: "1.2.3:80-198.18.2.2:80", err: `online "1.2.3:80": want port or ip:port`},
		{in: "80-0.0.0.0:80", err: "unspecified address"},
		{in: "80-198.18.2.2:80@00:11:22:33:44:55", err: "target@MAC is not supported"},
		{in: "80-198.18.2.2:80,80-198.18.2.3:80", err: `transfer 2 "80-198.18.2.3:80": online address port 80 already given in "80-198.18.2.2:80"`},
	}
	for _, tt := range tests {
		got, err := ParseTransfers(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseTransfers(%q) error %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseTransfers(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestTransfersMatch(t *testing.T) {
	ts, err := ParseTransfers("80-198.18.2.2:8080,198.18.1.1:80-198.18.2.3:80,443-198.18.2.4:443")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		server string
		want   string
	}{
		{"198.18.1.1:80", "198.18.2.3:80"}, // the IP-specific item wins, though listed second
		{"198.18.1.2:80", "198.18.2.2:8080"},
		{"[::ffff:198.18.1.1]:80", "198.18.2.3:80"},
		{"198.18.1.1:443", "198.18.2.4:443"},
		{"198.18.1.1:22", ""},
	} {
		got, ok := ts.Match(netip.MustParseAddrPort(tt.server))
		if tt.want == "" {
			if ok || ts.IsServer(netip.MustParseAddrPort(tt.server)) {
				t.Errorf("Match(%s) = %v, want no match", tt.server, got)
			}
			continue
		}
		if !ok || got != netip.MustParseAddrPort(tt.want) {
			t.Errorf("Match(%s) = %v, %v; want %s", tt.server, got, ok, tt.want)
		}
	}
	if got := ts.Targets(); len(got) != 3 {
		t.Errorf("Targets() = %v", got)
	}
	if s := ts[0].String() + "," + ts[1].String(); s != "80-198.18.2.2:8080,198.18.1.1:80-198.18.2.3:80" {
		t.Errorf("String() = %q", s)
	}
}

func TestParseClientPool(t *testing.T) {
	target := netip.MustParseAddr("198.18.5.7")
	tests := []struct {
		in      string
		exclude []netip.Addr
		n       int
		err     string
	}{
		{in: "198.18.5.1,198.18.5.2", n: 2},
		{in: "198.18.5.1, 198.18.5.1", n: 1},
		{in: "198.18.5.x", n: 254},
		{in: "198.18.5.x", exclude: []netip.Addr{target}, n: 253},
		{in: "198.18.5.x,198.18.6.x,198.18.5.3", n: 508},
		{in: "198.18.5.7", exclude: []netip.Addr{target}, err: "empty once the target addresses are excluded"},
		{in: "", err: "client pool is empty"},
		{in: "198.18.5.1,", err: `item 2 "": not an IPv4 address`},
		{in: "198.18.x", err: `item 1 "198.18.x": want a.b.c.x`},
		{in: "2001:db8::1", err: "only IPv4"},
		{in: "0.0.0.0", err: "not a unicast address"},
		{in: "224.0.0.1", err: "not a unicast address"},
		{in: func() string {
			var items []string
			for a := range 259 {
				items = append(items, "10."+strconv.Itoa(a/256)+"."+strconv.Itoa(a%256)+".x")
			}
			return strings.Join(items, ",")
		}(), err: "more than 65536 addresses"},
	}
	for _, tt := range tests {
		p, err := ParseClientPool(tt.in, tt.exclude...)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseClientPool(%.40q) error %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || p.Len() != tt.n {
			t.Errorf("ParseClientPool(%q) = %v addresses, %v; want %d", tt.in, p, err, tt.n)
			continue
		}
		if slices.Contains(p.Addrs(), target) && len(tt.exclude) > 0 {
			t.Errorf("ParseClientPool(%q) kept excluded %v", tt.in, target)
		}
	}
}

func TestClientPoolMap(t *testing.T) {
	p, err := ParseClientPool("198.18.5.x")
	if err != nil {
		t.Fatal(err)
	}
	hits := make(map[netip.Addr]int)
	for i := range 10000 {
		c := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		m := p.Map(c)
		if m != p.Map(c) || m != p.Map(netip.AddrFrom16(c.As16())) {
			t.Fatalf("Map(%v) is not stable", c)
		}
		hits[m]++
	}
	if len(hits) != 254 {
		t.Errorf("10000 clients used %d of 254 pool addresses", len(hits))
	}
	// Stable across runs and builds: FNV-1a of the address bytes.
	c := netip.MustParseAddr("192.0.2.1")
	h := fnv.New64a()
	h.Write(c.AsSlice())
	if got, want := p.Map(c), p.Addrs()[h.Sum64()%254]; got != want || got != netip.MustParseAddr("198.18.5.195") {
		t.Errorf("Map(%v) = %v, want %v (198.18.5.195)", c, got, want)
	}
}

func TestSampler(t *testing.T) {
	if _, err := NewSampler(101); err == nil {
		t.Error("NewSampler(101) accepted")
	}
	if _, err := NewSampler(-1); err == nil {
		t.Error("NewSampler(-1) accepted")
	}
	for _, pct := range []int{0, 1, 10, 33, 50, 100} {
		s, err := NewSampler(pct)
		if err != nil {
			t.Fatal(err)
		}
		kept := 0
		const n = 100000
		for i := range n {
			// A few clients with sequential ports, as real captures have.
			client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i % 7)}), uint16(32768+i/7))
			if s.Keep(client) {
				kept++
			}
			if s.Keep(client) != s.Keep(netip.AddrPortFrom(netip.AddrFrom16(client.Addr().As16()), client.Port())) {
				t.Fatal("Keep differs for the IPv4-mapped form of the same client")
			}
		}
		if got := float64(kept) * 100 / n; got < float64(pct)-0.5 || got > float64(pct)+0.5 {
			t.Errorf("NewSampler(%d) kept %.2f%%", pct, got)
		}
	}
}
