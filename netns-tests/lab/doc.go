// Package lab builds throw-away networks of Linux network namespaces for
// stackcopy's end-to-end tests and demos: hosts (one namespace each) joined
// by veth pairs, routes, sysctls, iptables rules, background processes,
// tcpdump captures and a Debian nginx.
//
// It is the one toolkit of netns-tests: the lab tests, the bench and the
// demo use it rather than keep their own. It owns
//
//   - the network: Lab, Host, Link, ForwardPath (a link the far side routes
//     answers back over), AddAddrs, AddRoute, Sysctl, IPTables;
//   - every process run in a lab: Proc (Host.Start, StartWith, StartServer),
//     its PID, output, exit status, CPU time and memory, and its end by the
//     PID recorded at start;
//   - building the lab's programs once per test binary run: BuildBinary,
//     Binaries;
//   - what tests read back: Capture (tcpdump), Nginx and its access log,
//     ReadJSONLines for the programs' JSON-lines logs, syncbuf.Buffer for
//     output read while it is written, WriteKey for relay keys.
//
// The programs' own result types live beside their commands, in packages
// the tests import (liveprobe, rawprobe, relayprobe, benchrole, recorder).
//
// Lab rules, enforced here where they can be:
//
//   - Only addresses in 198.18.0.0/15 (RFC 2544 benchmarking range) are
//     assigned or routed; Link and AddRoute refuse anything else. IPv6 is
//     switched off in every lab namespace so no link-local addresses (and no
//     router solicitations or MLD reports in captures) appear either.
//   - A lab never touches the root namespace: veth pairs are created inside
//     a lab namespace with their peer placed directly in another one, so no
//     interface ever exists in the root namespace, and nothing routes out.
//   - Every namespace name starts with a per-lab prefix: "sc", 6 hex
//     digits and "-". The creating process records itself in
//     /run/stackcopy-lab/<prefix>.pid before it creates any namespace; New
//     removes labs whose creator is gone (a test killed by a timeout or
//     SIGKILL never runs its cleanup), and never a lab whose creator lives,
//     so tests in parallel processes do not disturb each other.
//   - Every process started in a lab is ended by PID when the lab closes.
//
// A two-host lab in a test:
//
//	l := lab.NewT(t) // skips without root; closed at test cleanup
//	client, err := l.Host("client")
//	online, err := l.Host("online")
//	cIf, oIf, err := l.Link(client, netip.MustParsePrefix("198.18.1.2/24"),
//		online, netip.MustParsePrefix("198.18.1.1/24"))
//	ngx, err := lab.StartNginx(online, netip.MustParseAddrPort("198.18.1.1:80"), root)
//	out, err := client.Exec(ctx, "curl", "-sS", "http://198.18.1.1/index.html")
//
// Host.Start runs a program in the background (like exec.Command: the
// program, then its arguments) with its output in a log file in Dir();
// Host.Capture runs tcpdump; Host.IPTables adds rules such as random loss
// (use DisableGSO on the sending interface so loss hits single segments).
//
// The package needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the Debian
// packages iproute2, procps, iptables and tcpdump; StartNginx needs nginx
// (nginx-light is enough). Tests call NewT, which skips when not root.
//
// Set STACKCOPY_KEEP_LAB=1 to keep a lab's directory (logs, captures,
// configs) after Close; namespaces are removed regardless. Set
// STACKCOPY_LAB_REQUIRED=1 (CI) to make RequireRoot fail instead of skip,
// so a misconfigured runner cannot silently skip the lab tests.
package lab
