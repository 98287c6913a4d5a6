package pcapfilter

import (
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

func needTcpdump(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump not installed")
	}
}

func TestParse(t *testing.T) {
	got, err := Parse([]byte("2\n40 0 0 12\n6 0 0 262144\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []bpf.RawInstruction{{Op: 40, K: 12}, {Op: 6, K: 262144}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %v, want %v", got, want)
	}
	// tcpdump -ddd -y EN10MB 'tcp' (IPv4 and IPv6), announced one short.
	out := "8\n40 0 0 12\n21 0 5 34525\n48 0 0 20\n21 6 4 6\n21 0 3 2048\n48 0 0 23\n21 0 1 6\n6 0 0 262144\n6 0 0 0\n"
	if _, err := Parse([]byte(out)); err == nil || !strings.Contains(err.Error(), "8 instructions announced, 9 given") {
		t.Fatalf("miscounted program: %v", err)
	}
	for _, bad := range []string{
		"", "0\n", "x\n", "4097\n",
		"2\n40 0 0 12\n",
		"1\n40 0 0\n",
		"1\n40 0 0 99999999999\n",
		"1\n70000 0 0 1\n",
		"1\n6 0 256 0\n",
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

// TestCompile: the program accepts with the snap length, for both links.
func TestCompile(t *testing.T) {
	needTcpdump(t)
	for _, link := range []Link{Ethernet, Raw} {
		prog, err := Compile("tcp and src port 80", link, 256)
		if err != nil {
			t.Fatalf("link %d: %v", link, err)
		}
		accepts := false
		for _, in := range prog {
			if in.Op == unix.BPF_RET|unix.BPF_K && in.K == 256 {
				accepts = true
			}
		}
		if !accepts {
			t.Fatalf("link %d: no 'ret #256' in %+v", link, prog)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	needTcpdump(t)
	for _, expr := range []string{"tcp and srcport 80", "tcp prot 80"} {
		_, err := Compile(expr, Ethernet, 262144)
		if err == nil || !strings.Contains(err.Error(), `filter "`+expr+`": `) || !strings.Contains(err.Error(), "syntax error") || strings.Contains(err.Error(), "\n") {
			t.Errorf("bad expression %q: %v; want one line naming the filter and tcpdump's complaint", expr, err)
		}
	}
}

func TestCompileNoTcpdump(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Compile("tcp", Ethernet, 65535)
	if err == nil || !strings.Contains(err.Error(), "Debian package tcpdump") {
		t.Fatalf("got %v, want an error naming the Debian package", err)
	}
}
