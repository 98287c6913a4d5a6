package netnstests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
	"github.com/stackcopy/stackcopy/netns-tests/rawprobe"
	"github.com/stackcopy/stackcopy/netns-tests/recorder"
)

// The send-only wires (stack.Raw, stack.AFPacket) in a two-host lab:
//
//	sender 198.18.2.1/24 ── receiver 198.18.2.2/24 (recorder, raw mode)
//
// rawprobe runs the stack in the sender namespace and uploads from the
// forged 198.18.1.50, which no host owns. The receiver routes
// 198.18.1.0/24 back to the sender, where rawprobe captures the answers
// with an AF_PACKET socket and injects them into the stack; the sender's
// kernel, forwarding off, drops its own copy silently. Run as root:
//
//	go test -run RawWire -v ./netns-tests/
//	STACKCOPY_RAWWIRE_BYTES=268435456 go test -run RawWire -v ./netns-tests/  # throughput

func TestRawWire(t *testing.T) {
	t.Parallel()
	l := lab.NewT(t)
	probe := labBinary(t, pkgRawprobe)
	sender, err := l.Host("sender")
	if err != nil {
		t.Fatal(err)
	}
	receiver, err := l.Host("receiver")
	if err != nil {
		t.Fatal(err)
	}
	senderIf, _, err := l.Link(sender, netip.PrefixFrom(replayAddr, 24), receiver, netip.PrefixFrom(targetAddr, 24))
	if err != nil {
		t.Fatal(err)
	}
	if err := receiver.AddRoute(clientNet, replayAddr); err != nil {
		t.Fatal(err)
	}
	// The sender owns no forged address: with forwarding off its kernel
	// drops the answers for them instead of forwarding them or resetting.
	if err := sender.Sysctl("net.ipv4.ip_forward", "0"); err != nil {
		t.Fatal(err)
	}
	// Counters: every RST from a forged client, every ICMP error from the
	// sender, as the receiver gets them.
	if err := receiver.IPTables("-A", "INPUT", "-s", clientNet.String(), "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "ACCEPT"); err != nil {
		t.Fatal(err)
	}
	if err := receiver.IPTables("-A", "INPUT", "-s", replayAddr.String(), "-p", "icmp", "-j", "ACCEPT"); err != nil {
		t.Fatal(err)
	}
	target := netip.AddrPortFrom(targetAddr, 80)
	logPath := startRecorder(t, receiver, target, "raw")
	addrErrsBefore := ipInAddrErrors(t, sender)

	// STACKCOPY_RAWWIRE_BYTES sets the upload size per case (default 8 MiB),
	// for throughput measurements.
	size := 8 << 20
	if v := os.Getenv("STACKCOPY_RAWWIRE_BYTES"); v != "" {
		if size, err = strconv.Atoi(v); err != nil || size <= 0 {
			t.Fatalf("STACKCOPY_RAWWIRE_BYTES=%q: want a positive byte count", v)
		}
	}
	cases := []struct{ wire, gso string }{
		{"raw", "off"}, {"raw", "coalesce"}, {"raw", "host"},
		{"afpacket", "off"}, {"afpacket", "coalesce"}, {"afpacket", "host"},
	}
	var summary []string
	for i, tc := range cases {
		t.Run(tc.wire+"/"+tc.gso, func(t *testing.T) {
			client := netip.AddrPortFrom(netip.MustParseAddr("198.18.1.50"), uint16(40000+i))
			out := filepath.Join(l.Dir(), fmt.Sprintf("rawprobe-%s-%s.json", tc.wire, tc.gso))
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if log, err := sender.Exec(ctx, probe, "-wire", tc.wire, "-gso", tc.gso, "-iface", senderIf,
				"-src", client.String(), "-dst", target.String(), "-bytes", strconv.Itoa(size), "-out", out); err != nil {
				t.Fatalf("rawprobe: %v\n%s", err, log)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			var res rawprobe.Result
			if err := json.Unmarshal(b, &res); err != nil {
				t.Fatalf("rawprobe result %s: %v", b, err)
			}
			wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer wcancel()
			var got *recorder.ConnSummary
			_, _, err = recorder.WaitLog(wctx, logPath, func(_ []recorder.Record, sums []recorder.ConnSummary) bool {
				for i := range sums {
					if sums[i].Client == client {
						got = &sums[i]
						return true
					}
				}
				return false
			})
			if err != nil {
				t.Fatalf("no recorder summary for %v: %v", client, err)
			}
			if got.TotalBytes != int64(size) || got.SHA256All != res.SHA256 || res.Bytes != int64(size) {
				t.Errorf("recorder got %d bytes sha256 %s from %v; rawprobe sent %d bytes sha256 %s",
					got.TotalBytes, got.SHA256All, got.Client, res.Bytes, res.SHA256)
			}
			if got.Closed != "fin" {
				t.Errorf("recorder saw the client's side end with %q, want fin", got.Closed)
			}
			if res.Stats.WriteErrors != 0 || res.Stats.ResetsReceived != 0 {
				t.Errorf("stack: %d wire write errors, %d resets received", res.Stats.WriteErrors, res.Stats.ResetsReceived)
			}
			if res.Stats.PacketsInjected == 0 {
				t.Error("no answer was injected into the stack")
			}
			line := fmt.Sprintf("%-8s gso=%-8s %4.0f Mbit/s  %d bytes in %.2fs  %d wire writes  %d retransmits  %d answers",
				tc.wire, tc.gso, res.Mbps, res.Bytes, res.Seconds, res.Stats.PacketsWritten, res.Stats.Retransmits, res.Answers)
			t.Log(line)
			summary = append(summary, line)
		})
	}

	// Next-hop resolution (on-link, via a gateway, unanswered) and the
	// wires' errors for an oversized packet, against the real kernel.
	t.Run("errors", func(t *testing.T) {
		if err := sender.AddRoute(netip.MustParsePrefix("198.18.4.0/24"), targetAddr); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		log, err := sender.Exec(ctx, probe, "-check", "-iface", senderIf, "-src", "198.18.1.50:40000", "-dst", target.String(),
			"-routed", "198.18.4.1", "-absent", "198.18.2.99")
		if err != nil {
			t.Fatalf("rawprobe -check: %v", err)
		}
		t.Logf("rawprobe -check:\n%s", log)
	})

	rst, icmp := rawWireCounters(t, receiver)
	if rst != 0 {
		t.Errorf("the receiver got %d RSTs from forged clients", rst)
	}
	if icmp != 0 {
		t.Errorf("the receiver got %d ICMP packets from the sender", icmp)
	}
	t.Logf("sender kernel dropped %d packets for addresses it does not own (Ip InAddrErrors)", ipInAddrErrors(t, sender)-addrErrsBefore)
	t.Log("throughput:\n" + strings.Join(summary, "\n"))
}

// rawWireCounters reads the packet counts of the receiver's RST and ICMP
// counting rules.
func rawWireCounters(t *testing.T, h *lab.Host) (rst, icmp uint64) {
	t.Helper()
	out, err := h.IPTablesOutput("-L", "INPUT", "-v", "-n", "-x")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch {
		case (f[3] == "tcp" || f[3] == "6") && strings.Contains(line, "flags:0x04/0x04"):
			rst, found = n, found+1
		case f[3] == "icmp" || f[3] == "1":
			icmp, found = n, found+1
		}
	}
	if found != 2 {
		t.Fatalf("counting rules not found in:\n%s", out)
	}
	return rst, icmp
}

// ipInAddrErrors reads the Ip InAddrErrors counter of h's namespace.
func ipInAddrErrors(t *testing.T, h *lab.Host) uint64 {
	t.Helper()
	out := mustExec(t, h, "cat", "/proc/net/snmp")
	var names, values []string
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "Ip: "); ok {
			if names == nil {
				names = strings.Fields(rest)
			} else {
				values = strings.Fields(rest)
			}
		}
	}
	for i, n := range names {
		if n == "InAddrErrors" && i < len(values) {
			v, err := strconv.ParseUint(values[i], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no Ip InAddrErrors in /proc/net/snmp:\n%s", out)
	return 0
}
