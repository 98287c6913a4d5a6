package lab

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Unit tests of the parts that need no root; the lab itself is tested in
// netns-tests (lab_selftest_test.go).

func TestInLab(t *testing.T) {
	for s, want := range map[string]bool{
		"198.18.0.0/15":   true,
		"198.18.1.2/24":   true,
		"198.19.255.1/32": true,
		"198.16.0.0/14":   false, // wider than the lab range
		"198.20.0.1/32":   false,
		"10.0.0.1/8":      false,
		"0.0.0.0/0":       false,
		"2001:db8::1/64":  false,
	} {
		if got := InLab(netip.MustParsePrefix(s)); got != want {
			t.Errorf("InLab(%s) = %v, want %v", s, got, want)
		}
	}
}

func TestParseTcpdumpStats(t *testing.T) {
	log := "tcpdump: listening on eth0, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n" +
		"1234 packets captured\n1240 packets received by filter\n6 packets dropped by kernel\n"
	st, err := parseTcpdumpStats(log)
	if err != nil {
		t.Fatal(err)
	}
	if st != (CaptureStats{Captured: 1234, Received: 1240, Dropped: 6}) {
		t.Errorf("got %+v", st)
	}
	if st, err := parseTcpdumpStats("1 packet captured\n1 packet received by filter\n0 packets dropped by kernel\n"); err != nil || st.Captured != 1 {
		t.Errorf("singular: %+v %v", st, err)
	}
	if _, err := parseTcpdumpStats("tcpdump: eth9: No such device exists\n"); err == nil {
		t.Error("no summary accepted")
	}
}

func TestNginxRender(t *testing.T) {
	cfg := NginxConfig{Listen: netip.MustParseAddrPort("198.18.1.1:80"), Root: "/srv/www", Dir: "/tmp/x"}
	text, err := cfg.Render()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"listen 198.18.1.1:80;", "root /srv/www;", "client_max_body_size 0;",
		"keepalive_requests 1000000;", "pid /tmp/x/nginx.pid;", "$remote_addr:$remote_port", "$request_length",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
	cfg.Listen = netip.MustParseAddrPort("10.0.0.1:80")
	if _, err := cfg.Render(); err == nil {
		t.Error("listen outside the lab range accepted")
	}
}

func TestNamesAndLabels(t *testing.T) {
	if got := sanitizeLabel("TestLab/sub case#1"); got != "TestLab_sub_case_1" {
		t.Errorf("sanitizeLabel = %q", got)
	}
	if got := sanitizeLabel(strings.Repeat("x", 100)); len(got) != 40 {
		t.Errorf("sanitizeLabel length %d", len(got))
	}
	p, err := newPrefix()
	if err != nil {
		t.Fatal(err)
	}
	if !nsNameRE.MatchString(p+"-client") || nsNameRE.MatchString("sc12345-client") || nsNameRE.MatchString("other-ns") {
		t.Errorf("namespace pattern wrong for %s", p)
	}
	if got := cmdline("ip", []string{"netns", "exec", "x", "sh", "-c", "echo 'a b'"}); got != `ip netns exec x sh -c 'echo '\''a b'\'''` {
		t.Errorf("cmdline = %s", got)
	}
}

func TestProcessAlive(t *testing.T) {
	start, err := procStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !processAlive(os.Getpid(), start) {
		t.Error("self not alive")
	}
	if processAlive(os.Getpid(), start+1) {
		t.Error("start time mismatch not detected (PID reuse)")
	}
	if processAlive(0, 0) {
		t.Error("PID 0 alive")
	}
}

func TestIsLabDir(t *testing.T) {
	tmp := os.TempDir()
	if !isLabDir(tmp+"/stackcopy-lab-sc123456-TestX", "sc123456") {
		t.Error("lab dir refused")
	}
	for _, d := range []string{"/", "", tmp, tmp + "/stackcopy-lab-sc999999-x", "/etc/stackcopy-lab-sc123456-x", tmp + "/a/stackcopy-lab-sc123456-x"} {
		if isLabDir(d, "sc123456") {
			t.Errorf("isLabDir(%q) accepted", d)
		}
	}
}

func TestProcCPU(t *testing.T) {
	// Burn a little CPU so the figure cannot be zero.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	user, sys, err := ProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if user+sys <= 0 {
		t.Fatalf("ProcCPU of a busy process: user %v sys %v", user, sys)
	}
	if _, _, err := ProcCPU(-1); err == nil {
		t.Fatal("ProcCPU of no process succeeded")
	}
}

func TestReadJSONLines(t *testing.T) {
	type rec struct {
		N int `json:"n"`
	}
	dir := t.TempDir()
	got, err := ReadJSONLines[rec](filepath.Join(dir, "missing.jsonl"))
	if err != nil || len(got) != 0 {
		t.Fatalf("missing file: %v, %v; want an empty log", got, err)
	}
	// The last line has no newline yet: a writer is still at it.
	path := filepath.Join(dir, "log.jsonl")
	if err := os.WriteFile(path, []byte("{\"n\":1}\n\n{\"n\":2}\n{\"n\":"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = ReadJSONLines[rec](path)
	if err != nil || len(got) != 2 || got[0].N != 1 || got[1].N != 2 {
		t.Fatalf("got %v, %v; want records 1 and 2", got, err)
	}
	if err := os.WriteFile(path, []byte("{\"n\":1}\nnot json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadJSONLines[rec](path); err == nil || !strings.Contains(err.Error(), ":2:") {
		t.Fatalf("a broken complete line: %v; want an error naming line 2", err)
	}
}
