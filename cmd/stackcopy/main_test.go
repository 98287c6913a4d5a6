package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/internal/cliflag"
)

// These tests stop before any TUN or route is touched: they are safe as
// root in the root namespace. Replays are tested in netns-tests.

func TestBadUsageNamesTheFlag(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-i", "x.pcap"}, "-x/--transfer is required"},
		{[]string{"-x", "80-198.18.2.2:80"}, "-i/--input is required"},
		{[]string{"-x", "80-nowhere", "-i", "x.pcap"}, "-x:"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "-r", "0"}, "-r: 0 is not a percentage"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "-r", "101"}, "-r: 101"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "--speed", "-1"}, "--speed"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "--loop", "0"}, "--loop"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "-M", "100"}, "-M: MTU 100"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "--cc", "bbr"}, "--cc"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "--spill-dir", "/nonexistent/spill"}, "--spill-dir"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "--spill-max", "-1"}, "--spill-max"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "--copy-ports", "5000-1024"}, "--copy-ports: \"5000-1024\": the range is empty"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "--copy-ports", "0-10"}, "--copy-ports"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "--copy-ports", "1024"}, "want LO-HI"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "-t", "soon"}, "timeout"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "-c", "198.18.2.2"}, "-c:"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "-o", "raw"}, "-o raw: the target's answers can only come back through intercept"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "-F", "tcp"}, "-F: a capture filter applies to live capture"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "nosuchiface0"}, "-i: nosuchiface0: neither a capture file nor a network interface"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "-n", "0"}, "-n: 0 copies"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "-C", "0"}, "-C: 0 channels"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "-D", "20"}, "-D: MSS 20"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "-m", "-5"}, "-m: -5 MiB"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "lo", "--loop", "2"}, "--loop: live traffic cannot be looped"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "lo", "--capture-buffer", "0"}, "--capture-buffer: 0 MiB, want 1 to 4096"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "lo", "--capture-buffer", "5000"}, "--capture-buffer: 5000 MiB"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "--tun", "a/b"}, "--tun"},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "extra"}, "unexpected argument"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := run(tt.args, &out, &errb)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d", tt.args, code, exitUsage)
		}
		first, _, _ := strings.Cut(errb.String(), "\n")
		if !strings.HasPrefix(first, "stackcopy: ") || !strings.Contains(first, tt.want) {
			t.Errorf("%v: first line %q, want it to mention %q", tt.args, first, tt.want)
		}
	}
}

func TestHelpShowsExamplesAndEveryFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != exitOK {
		t.Fatalf("--help exit %d", code)
	}
	// On stdout, as intercept's and most tools' (it was on stderr), so
	// "stackcopy --help | less" works.
	help := out.String()
	if errb.Len() > 0 {
		t.Errorf("--help wrote to stderr: %q", errb.String())
	}
	for _, want := range []string{"Examples:", "stackcopy -x 80-198.18.2.2:80 -i capture.pcap", "--transfer", "--input", "--clients",
		"--percentage", "--speed", "--loop", "--timeout", "--turn-wait", "--no-wait", "--mtu", "--stats-json", "Exit status",
		"--metrics", "--stats-interval", "SIGUSR1", "SIGHUP", "3  work was lost"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestDurationSeconds(t *testing.T) {
	var d time.Duration
	v := cliflag.Duration{D: &d}
	for in, want := range map[string]time.Duration{"120": 120 * time.Second, "1.5": 1500 * time.Millisecond, "90s": 90 * time.Second, "2m": 2 * time.Minute} {
		if err := v.Set(in); err != nil || d != want {
			t.Errorf("Set(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
	for _, bad := range []string{"-1", "-2s", "soon", ""} {
		if err := v.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

// A capture that cannot be read stops stackcopy with one line naming the
// file, before anything on the host is changed.
func TestUnreadableCaptureIsOneLine(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pcap")
	if err := os.WriteFile(garbage, []byte("this is not a capture file at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{garbage, filepath.Join(dir, "missing.pcap")} {
		var out, errb bytes.Buffer
		code := run([]string{"-x", "80-198.18.2.2:80", "-i", path, "--tun", "sctestnever"}, &out, &errb)
		if code != exitFatal {
			t.Errorf("%s: exit %d, want %d", path, code, exitFatal)
		}
		lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], path) {
			t.Errorf("%s: want one line naming the file, got %q", path, errb.String())
		}
		if _, err := os.Stat("/sys/class/net/sctestnever"); err == nil {
			t.Fatalf("a TUN was created for an unreadable capture")
		}
	}
}

// TestOnlySYNFalseJoins: -O=false (tcpcopy's spelling) is accepted and
// means joining sessions seen mid-stream; -O stays the default.
func TestOnlySYNFalseJoins(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		onlySYN bool
	}{
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap"}, true},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "-O=false"}, false},
		{[]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "--only-syn=false"}, false},
	} {
		c, err := parseFlags(tt.args, io.Discard)
		if err != nil {
			t.Errorf("%v: %v", tt.args, err)
			continue
		}
		if c.onlySYN != tt.onlySYN {
			t.Errorf("%v: onlySYN %v, want %v", tt.args, c.onlySYN, tt.onlySYN)
		}
	}
}

// TestSpillDefault: files replayed unpaced do not spill unless asked;
// paced files and given limits do.
func TestSpillDefault(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--speed", "0"}, 0},
		{[]string{"--speed", "1"}, 2048},
		{nil, 2048},
		{[]string{"--speed", "0", "--spill-max", "100"}, 100},
	} {
		args := append([]string{"-x", "80-198.18.2.2:80", "-i", "x.pcap", "--spill-dir", t.TempDir()}, tc.args...)
		c, err := parseFlags(args, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if c.spillMiB != tc.want {
			t.Errorf("%v: spill limit %d MiB, want %d", tc.args, c.spillMiB, tc.want)
		}
	}
}

// TestOutputPathsCheckedFirst: an output path that cannot be used stops
// stackcopy at once, naming the flag, before the capture is read or the
// host touched. A --stats-json into a missing directory used to be found
// only after the whole replay, and the run exited 0.
func TestOutputPathsCheckedFirst(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no", "such", "dir")
	for _, tc := range []struct {
		flag, path string
	}{
		{"--stats-json", filepath.Join(missing, "stats.json")},
		{"-P", filepath.Join(missing, "stackcopy.pid")},
		{"-l", filepath.Join(missing, "stackcopy.log")},
	} {
		var out, errb bytes.Buffer
		// A capture that does not exist: reaching the input check
		// would be the old order.
		code := run([]string{"-x", "80-198.18.2.2:80", "-i", "/nonexistent.pcap", "--tun", "sctestnever", tc.flag, tc.path}, &out, &errb)
		if code != exitUsage {
			t.Errorf("%s %s: exit %d, want %d; stderr %q", tc.flag, tc.path, code, exitUsage, errb.String())
		}
		if first, _, _ := strings.Cut(errb.String(), "\n"); !strings.HasPrefix(first, "stackcopy: "+tc.flag) || strings.Contains(first, "nonexistent.pcap") {
			t.Errorf("%s: first line %q, want it to name %s and nothing about the capture", tc.flag, first, tc.flag)
		}
	}
}

// TestTUNNameTakenByVeth: --tun naming an existing interface that is not
// a TUN says so before work starts (it was "TUNSETIFF: invalid argument"
// after the capture was checked).
func TestTUNNameTakenByVeth(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a veth")
	}
	name := fmt.Sprintf("scv%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "link", "add", name, "type", "veth", "peer", "name", name+"p").CombinedOutput(); err != nil {
		t.Skipf("ip link add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
	var out, errb bytes.Buffer
	code := run([]string{"-x", "80-198.18.2.2:80", "-i", "/nonexistent.pcap", "--tun", name}, &out, &errb)
	want := "--tun " + name + ": the name is taken by a veth interface that is not a TUN"
	if code != exitUsage || !strings.Contains(errb.String(), want) {
		t.Errorf("exit %d, stderr %q; want %d and %q", code, errb.String(), exitUsage, want)
	}
}

// TestHeapFloorOnlyForFiles: the GC headroom floor is for replaying
// capture files; live mirroring and -m keep Go's default.
func TestHeapFloorOnlyForFiles(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"-i", "x.pcap"}, true},
		{[]string{"-i", "x.pcap", "-m", "300"}, false},
		{[]string{"-i", "lo"}, false},
		{[]string{"-i", "lo", "-m", "300"}, false},
	} {
		c, err := parseFlags(append([]string{"-x", "80-198.18.2.2:80"}, tc.args...), io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got := floorsHeap(c); got != tc.want {
			t.Errorf("%v: floorsHeap %v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestCoresDefault: live mirroring runs on one core unless --cores or
// $GOMAXPROCS says otherwise; a capture file keeps every core.
func TestCoresDefault(t *testing.T) {
	for _, tc := range []struct {
		env  string
		args []string
		want int
	}{
		{"", []string{"-i", "x.pcap"}, 0},
		{"", []string{"-i", "lo"}, 1},
		{"", []string{"-i", "lo", "--cores", "2"}, 2},
		{"", []string{"-i", "lo", "--cores", "0"}, 0},
		{"", []string{"-i", "x.pcap", "--cores", "3"}, 3},
		{"2", []string{"-i", "lo"}, 0}, // the runtime reads $GOMAXPROCS itself
	} {
		t.Setenv("GOMAXPROCS", tc.env)
		c, err := parseFlags(append([]string{"-x", "80-198.18.2.2:80"}, tc.args...), io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if c.cores != tc.want {
			t.Errorf("GOMAXPROCS=%q %v: cores %d, want %d", tc.env, tc.args, c.cores, tc.want)
		}
	}
	if _, err := parseFlags([]string{"-x", "80-198.18.2.2:80", "-i", "lo", "--cores", "-1"}, io.Discard); err == nil || !strings.Contains(err.Error(), "--cores") {
		t.Errorf("--cores -1: %v, want an error naming --cores", err)
	}
}
