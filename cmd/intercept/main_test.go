package main

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/intercept"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		check func(*testing.T, *options)
	}{
		{nil, func(t *testing.T, o *options) {
			c := o.cfg
			if c.Mode != intercept.ModeNFQueue || c.Queue != 0 || c.QueueLen != intercept.DefaultQueueLen || c.Listen != ":36524" ||
				c.FullPayload || c.FailOpen || c.Hold != intercept.DefaultHold || c.StatsInterval != intercept.DefaultStatsInterval {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{[]string{"-q", "7", "--queue-len", "100", "--fail-open", "-x", "198.18.1.1, 198.18.1.2", "-b", "198.18.2.2", "-p", "4000",
			"--key-file", "/k", "-P", "/run/i.pid", "-l", "/var/log/i.log", "--full-payload", "--hold", "0", "--stats-interval", "1m", "-vv"},
			func(t *testing.T, o *options) {
				c := o.cfg
				want := []netip.Addr{netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("198.18.1.2")}
				if c.Queue != 7 || c.QueueLen != 100 || !c.FailOpen || len(c.Pass) != 2 || c.Pass[0] != want[0] || c.Pass[1] != want[1] ||
					c.Listen != "198.18.2.2:4000" || c.KeyFile != "/k" || o.pidFile != "/run/i.pid" || !c.FullPayload ||
					c.Hold >= 0 || c.StatsInterval != time.Minute || o.logFile != "/var/log/i.log" || o.verbose != 2 {
					t.Errorf("nfqueue options: %+v %+v", c, o)
				}
			}},
		{[]string{"--queue-num=3", "--pass=198.18.1.9", "--bind=::1", "--port=36525"}, func(t *testing.T, o *options) {
			if o.cfg.Queue != 3 || o.cfg.Listen != "[::1]:36525" || len(o.cfg.Pass) != 1 {
				t.Errorf("long forms: %+v", o.cfg)
			}
		}},
		{[]string{"-i", "eth1", "-F", "tcp and src port 80", "--capture-buffer", "64"}, func(t *testing.T, o *options) {
			c := o.cfg
			if c.Mode != intercept.ModeCapture || c.Interface != "eth1" || c.Filter != "tcp and src port 80" || c.CaptureBuffer != 64<<20 {
				t.Errorf("capture: %+v", c)
			}
		}},
		{[]string{"--mode", "capture", "--interface", "eth1", "--filter", "tcp", "--allow-forwarding"}, func(t *testing.T, o *options) {
			if o.cfg.Mode != intercept.ModeCapture || !o.cfg.AllowForwarding {
				t.Errorf("capture long forms: %+v", o.cfg)
			}
		}},
		{[]string{"-V"}, func(t *testing.T, o *options) {
			if !o.version {
				t.Error("-V")
			}
		}},
	} {
		o, err := parseFlags(tc.args, &bytes.Buffer{})
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		tc.check(t, o)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // the flag the one-line error must name
	}{
		{[]string{"-q", "70000"}, "-q/--queue-num"},
		{[]string{"-q", "x"}, "--queue-num"},
		{[]string{"--queue-len", "0"}, "--queue-len"},
		{[]string{"-p", "0"}, "-p/--port"},
		{[]string{"-b", "example.org"}, "-b/--bind"},
		{[]string{"-x", "198.18.1.1,nope"}, "-x/--pass"},
		{[]string{"--mode", "pcap"}, "--mode"},
		{[]string{"--mode", "capture"}, "-i/--interface"},
		{[]string{"-i", "eth0"}, "-F/--filter"},
		{[]string{"-i", "eth0", "-F", " "}, "-F/--filter"},
		{[]string{"-i", "eth0", "-F", "tcp", "-q", "1"}, "-q"},
		{[]string{"-i", "eth0", "-F", "tcp", "--fail-open"}, "--fail-open"},
		{[]string{"-i", "eth0", "-F", "tcp", "--capture-buffer", "0"}, "--capture-buffer"},
		{[]string{"-F", "tcp"}, "-F/--filter"},
		{[]string{"--allow-forwarding"}, "--allow-forwarding"},
		{[]string{"--hold", "-1s"}, "--hold"},
		{[]string{"--stats-interval", "soon"}, "--stats-interval"},
		{[]string{"--key", "secret"}, "--key"},
		{[]string{"extra"}, "extra"},
	} {
		_, err := parseFlags(tc.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v; want a one-line error naming %s", tc.args, err, tc.want)
		}
	}
}

func TestRunExitCodes(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-h"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("-h: exit %d", code)
	}
	for _, want := range []string{
		"iptables -I OUTPUT -p tcp --sport 80 -j NFQUEUE --queue-num 0",
		"ip route add 198.18.1.0/24 via",
		"sysctl -w net.ipv4.ip_forward=0",
		"-F 'tcp and src port 80'",
		"--queue-bypass",
		"--full-payload",
		"STACKCOPY_RELAY_KEY",
		"Exit status",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}

	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"--queue-num", "-3"}, &stdout, &stderr); code != exitUsage {
		t.Fatalf("bad flag: exit %d", code)
	}
	if lines := strings.Split(strings.TrimSpace(stderr.String()), "\n"); len(lines) != 2 || !strings.Contains(lines[0], "--queue-num") {
		t.Fatalf("bad flag: stderr %q; want the error naming the flag and a hint", stderr.String())
	}

	// No key: fatal, before anything is opened (so no root needed).
	t.Setenv(intercept.KeyEnv, "")
	os.Unsetenv(intercept.KeyEnv)
	stderr.Reset()
	if code := run([]string{"-q", "1"}, &stdout, &stderr); code != exitFatal {
		t.Fatalf("no key: exit %d (%s)", code, stderr.String())
	}
	if s := stderr.String(); !strings.HasPrefix(s, "intercept: no relay key") || strings.Count(s, "\n") != 1 {
		t.Fatalf("no key: stderr %q", s)
	}

	// With -l the failure is in the log file too.
	logPath := filepath.Join(t.TempDir(), "intercept.log")
	stderr.Reset()
	if code := run([]string{"-q", "1", "-l", logPath}, &stdout, &stderr); code != exitFatal {
		t.Fatalf("no key, -l: exit %d", code)
	}
	if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), "no relay key") {
		t.Fatalf("log file: %q", b)
	}

	stdout.Reset()
	if code := run([]string{"--version"}, &stdout, &stderr); code != exitOK || !strings.HasPrefix(stdout.String(), "intercept ") {
		t.Fatalf("--version: exit %d, %q", code, stdout.String())
	}
}

// TestRunPIDFileAndPrefix: the command owns the pid file: it refuses one
// of a running process, and removes its own when Run fails; errors carry
// one "intercept: " prefix.
func TestRunPIDFileAndPrefix(t *testing.T) {
	var stdout, stderr bytes.Buffer
	pid := filepath.Join(t.TempDir(), "intercept.pid")
	if err := os.WriteFile(pid, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"-q", "1", "-P", pid}, &stdout, &stderr); code != exitFatal {
		t.Fatalf("pid file of a running process: exit %d", code)
	}
	if s := stderr.String(); !strings.HasPrefix(s, "intercept: pid file "+pid+": process 1 is running") || strings.Count(s, "\n") != 1 {
		t.Fatalf("stderr %q", s)
	}

	os.Remove(pid)
	t.Setenv(intercept.KeyEnv, "")
	os.Unsetenv(intercept.KeyEnv)
	stderr.Reset()
	if code := run([]string{"-q", "1", "-P", pid}, &stdout, &stderr); code != exitFatal {
		t.Fatalf("no key: exit %d", code)
	}
	if _, err := os.Stat(pid); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pid file left after a failed run: %v", err)
	}
	t.Setenv(intercept.KeyEnv, "unit-test-relay-key-0123456789")
	stderr.Reset()
	if code := run([]string{"--mode", "capture", "-i", "no-such-if0", "-F", "tcp", "-b", "127.0.0.1"}, &stdout, &stderr); code != exitFatal {
		t.Fatalf("bad interface: exit %d (%s)", code, stderr.String())
	}
	if s := stderr.String(); !strings.HasPrefix(s, "intercept: ") || strings.Contains(s, "intercept: intercept:") {
		t.Fatalf("stderr %q: want one prefix", s)
	}
}

// TestCoresDefault: intercept runs on one core unless --cores or
// $GOMAXPROCS says otherwise.
func TestCoresDefault(t *testing.T) {
	for _, tc := range []struct {
		env  string
		args []string
		want int
	}{
		{"", nil, 1},
		{"", []string{"--cores", "0"}, 0},
		{"", []string{"--cores", "4"}, 4},
		{"3", nil, 0}, // the runtime reads $GOMAXPROCS itself
	} {
		t.Setenv("GOMAXPROCS", tc.env)
		o, err := parseFlags(tc.args, &bytes.Buffer{})
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if o.cores != tc.want {
			t.Errorf("GOMAXPROCS=%q %v: cores %d, want %d", tc.env, tc.args, o.cores, tc.want)
		}
	}
	if _, err := parseFlags([]string{"--cores", "-1"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--cores") {
		t.Errorf("--cores -1: %v, want an error naming --cores", err)
	}
}
