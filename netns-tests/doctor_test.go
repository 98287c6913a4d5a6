package netnstests

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// The doctors against a broken deployment, then against the same
// deployment repaired with the commands they print. Run as root:
//
//	go test -count=1 -v -run TestDoctor ./netns-tests/
//
//	online 198.18.2.1/24 (stackcopy doctor) ── target 198.18.2.2/24 (intercept -q 0, intercept doctor)
//
// Broken: the online host does not forward (a TUN replay needs it), its
// relay key is world-readable and not the intercept's key, and the target
// has no iptables rule feeding queue 0. The doctors must exit 1 and name
// each problem with its fix; the test then runs the printed fixes (the
// key's scp is done as a local copy) and expects exit 0.

// doctorRun runs `BIN doctor ARGS...` in h's namespace and returns its
// output and exit status.
func doctorRun(t *testing.T, h *lab.Host, bin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Name(), bin, "doctor"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no STACKCOPY_RELAY_KEY from the caller
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("%s doctor: %v\n%s", filepath.Base(bin), err, out)
	return "", -1
}

// doctorLine returns the line of check name with the given status, or
// fails the test.
func doctorLine(t *testing.T, out, status, name string) string {
	t.Helper()
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, status) && strings.HasPrefix(strings.TrimSpace(strings.TrimPrefix(l, status)), name+":") {
			return strings.TrimSpace(l)
		}
	}
	t.Fatalf("no %q line for %q in:\n%s", status, name, out)
	return ""
}

// doctorFix is the command of a line's "fix:" part, without its comment.
func doctorFix(t *testing.T, line string) string {
	t.Helper()
	_, fix, ok := strings.Cut(line, "; fix: ")
	if !ok {
		t.Fatalf("no fix on %q", line)
	}
	fix, _, _ = strings.Cut(fix, "  #")
	return strings.TrimSpace(fix)
}

func TestDoctor(t *testing.T) {
	l := lab.NewT(t)
	stackcopy, intercept := stackcopyPath(t), interceptPath(t)
	online, err := l.Host("online")
	if err != nil {
		t.Fatal(err)
	}
	target, err := l.Host("target")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Link(online, netip.MustParsePrefix("198.18.2.1/24"), target, netip.MustParsePrefix("198.18.2.2/24")); err != nil {
		t.Fatal(err)
	}
	if err := online.Sysctl("net.ipv4.ip_forward", "0"); err != nil {
		t.Fatal(err)
	}
	icptKey := filepath.Join(l.Dir(), "intercept.key")
	mirrorKey := filepath.Join(l.Dir(), "mirror.key")
	if err := os.WriteFile(icptKey, []byte("lab-relay-key-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mirrorKey, []byte("not-the-relay-key-9876543210\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(mirrorKey, 0o644); err != nil {
		t.Fatal(err)
	}
	icpt := startIntercept(t, target, intercept, "--key-file", icptKey, "-q", "0")
	defer icpt.proc.Stop()

	pcap, err := filepath.Abs("../testdata/demo.pcap")
	if err != nil {
		t.Fatal(err)
	}
	mirrorArgs := []string{"-x", "80-198.18.2.2:80", "-i", pcap, "-s", "198.18.2.2", "--key-file", mirrorKey, "--speed", "0"}
	icptArgs := []string{"--key-file", icptKey, "-q", "0", "--server-port", "80"}
	ctx := context.Background()

	// Broken.
	out, code := doctorRun(t, online, stackcopy, mirrorArgs...)
	t.Logf("stackcopy doctor, broken (exit %d):\n%s", code, out)
	if code != 1 {
		t.Errorf("stackcopy doctor on a broken host: exit %d, want 1", code)
	}
	fwd := doctorLine(t, out, "FAIL", "net.ipv4.ip_forward")
	if fix := doctorFix(t, fwd); fix != "sysctl -w net.ipv4.ip_forward=1" {
		t.Errorf("ip_forward fix %q", fix)
	}
	key := doctorLine(t, out, "FAIL", "relay key")
	if fix := doctorFix(t, key); fix != "chmod 600 "+mirrorKey {
		t.Errorf("key fix %q", fix)
	}
	if strings.Contains(out, "lab-relay-key") || strings.Contains(out, "not-the-relay-key") {
		t.Error("the doctor printed key material")
	}
	doctorLine(t, out, "ok", "route to 198.18.2.2")

	iout, icode := doctorRun(t, target, intercept, icptArgs...)
	t.Logf("intercept doctor, broken (exit %d):\n%s", icode, iout)
	if icode != 1 {
		t.Errorf("intercept doctor without the NFQUEUE rule: exit %d, want 1", icode)
	}
	rule := doctorLine(t, iout, "FAIL", "nfqueue rule")
	if fix := doctorFix(t, rule); fix != "iptables -I OUTPUT -p tcp --sport 80 -j NFQUEUE --queue-num 0" {
		t.Errorf("nfqueue rule fix %q", fix)
	}
	// The running intercept holds queue 0 and the relay port: named, not
	// fatal, and it accepts the key given.
	doctorLine(t, iout, "warn", "nfqueue 0")
	doctorLine(t, iout, "warn", "relay port 36524")
	doctorLine(t, iout, "ok", "relay 127.0.0.1:36524")

	// Apply the printed fixes.
	for _, c := range []struct {
		h   *lab.Host
		fix string
	}{{online, doctorFix(t, fwd)}, {online, doctorFix(t, key)}, {target, doctorFix(t, rule)}} {
		if o, err := c.h.Exec(ctx, "sh", "-c", c.fix); err != nil {
			t.Fatalf("fix %q: %v\n%s", c.fix, err, o)
		}
	}

	// The key is no longer world-readable, so the handshake is tried and
	// shows that it is not the intercept's key.
	out, code = doctorRun(t, online, stackcopy, mirrorArgs...)
	t.Logf("stackcopy doctor, wrong key (exit %d):\n%s", code, out)
	if code != 1 {
		t.Errorf("stackcopy doctor with another key: exit %d, want 1", code)
	}
	doctorLine(t, out, "ok", "net.ipv4.ip_forward")
	doctorLine(t, out, "ok", "relay key")
	relayLine := doctorLine(t, out, "FAIL", "relay 198.18.2.2:36524")
	if !strings.Contains(relayLine, "another key") || doctorFix(t, relayLine) != "scp "+mirrorKey+" 198.18.2.2:"+mirrorKey {
		t.Errorf("relay line %q: want the key named and the scp fix", relayLine)
	}
	// scp to the same machine: copy the intercept's key over the mirror's.
	b, err := os.ReadFile(icptKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mirrorKey, b, 0o600); err != nil {
		t.Fatal(err)
	}

	// Repaired.
	out, code = doctorRun(t, online, stackcopy, mirrorArgs...)
	t.Logf("stackcopy doctor, repaired (exit %d):\n%s", code, out)
	if code != 0 {
		t.Errorf("stackcopy doctor on the repaired host: exit %d, want 0", code)
	}
	doctorLine(t, out, "ok", "relay 198.18.2.2:36524")
	iout, icode = doctorRun(t, target, intercept, icptArgs...)
	t.Logf("intercept doctor, repaired (exit %d):\n%s", icode, iout)
	if icode != 0 {
		t.Errorf("intercept doctor with the rule: exit %d, want 0", icode)
	}
	doctorLine(t, iout, "ok", "nfqueue rule")

	// Read-only: the doctor creates no TUN (it only checks the name is free).
	if o, _ := online.Exec(ctx, "ip", "-br", "link"); strings.Contains(string(o), "stackcopy0") {
		t.Errorf("the doctor created a TUN:\n%s", o)
	}
}
