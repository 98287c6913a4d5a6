package intercept

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseFilter(t *testing.T) {
	// tcpdump -ddd -y EN10MB 'tcp' (IPv4 and IPv6).
	out := "8\n40 0 0 12\n21 0 5 34525\n48 0 0 20\n21 6 4 6\n21 0 3 2048\n48 0 0 23\n21 0 1 6\n6 0 0 262144\n6 0 0 0\n"
	_, err := parseFilter([]byte(out))
	if err == nil || !strings.Contains(err.Error(), "8 instructions announced, 9 given") {
		t.Fatalf("miscounted program: %v", err)
	}
	out = "2\n40 0 0 12\n6 0 0 262144\n"
	prog, err := parseFilter([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []unix.SockFilter{{Code: 40, K: 12}, {Code: 6, K: 262144}}
	if len(prog) != 2 || prog[0] != want[0] || prog[1] != want[1] {
		t.Fatalf("parsed %+v, want %+v", prog, want)
	}
	for _, bad := range []string{"", "0\n", "x\n", "1\n40 0 0\n", "1\n40 0 0 99999999999\n", "1\n70000 0 0 1\n"} {
		if _, err := parseFilter([]byte(bad)); err == nil {
			t.Errorf("parseFilter(%q) accepted", bad)
		}
	}
}

func TestCompileFilter(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump not installed")
	}
	prog, err := compileFilter("tcp and src port 80", false, 256)
	if err != nil {
		t.Fatal(err)
	}
	// The program accepts with the snap length.
	accepts := false
	for _, in := range prog {
		if in.Code == unix.BPF_RET|unix.BPF_K && in.K == 256 {
			accepts = true
		}
	}
	if !accepts {
		t.Fatalf("no 'ret #256' in %+v", prog)
	}
	if _, err := compileFilter("tcp and src port 80", true, 256); err != nil {
		t.Fatalf("cooked: %v", err)
	}
	_, err = compileFilter("tcp and srcport 80", false, 256)
	if err == nil || !strings.Contains(err.Error(), `filter "tcp and srcport 80"`) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("bad expression: %v; want a one-line error naming the filter", err)
	}
}

func TestStripEthernet(t *testing.T) {
	ip := tcp4(t, serverAP, forgedAP, true, true, nil)
	eth := append(bytes.Repeat([]byte{0xaa}, 12), 0x08, 0x00)
	vlan := append(bytes.Repeat([]byte{0xaa}, 12), 0x81, 0x00, 0x00, 0x05, 0x08, 0x00)
	qinq := append(bytes.Repeat([]byte{0xaa}, 12), 0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00)
	for _, tc := range []struct {
		name  string
		frame []byte
		ok    bool
	}{
		{"ethernet", append(eth, ip...), true},
		{"vlan", append(vlan, ip...), true},
		{"qinq", append(qinq, ip...), true},
		{"arp", append(append(bytes.Repeat([]byte{0xaa}, 12), 0x08, 0x06), ip...), false},
		{"short", eth[:13], false},
	} {
		got, ok := stripEthernet(tc.frame)
		if ok != tc.ok || (ok && !bytes.Equal(got, ip)) {
			t.Errorf("%s: %v, %x", tc.name, ok, got)
		}
	}
}

func TestOpenCaptureErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  CaptureConfig
		want string
	}{
		{CaptureConfig{Filter: "tcp"}, "-i IFACE"},
		{CaptureConfig{Interface: "any", Filter: "tcp"}, `"any"`},
		{CaptureConfig{Interface: "lo"}, "filter (-F) is required"},
		{CaptureConfig{Interface: "no-such-if0", Filter: "tcp"}, "no-such-if0"},
	} {
		if _, err := OpenCapture(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
}
