package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/intercept"
)

// TestKeyFileErrors: the key pasted as --key-file's argument is never
// written to stderr or the log; a key file others can read is refused in
// one line naming the fix. Both fail before anything is opened.
func TestKeyFileErrors(t *testing.T) {
	t.Setenv(intercept.KeyEnv, "")
	os.Unsetenv(intercept.KeyEnv)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "intercept.log")
	const pasted = "q1w2e3r4t5y6/u7i8o9p0+a1s2d3f4g5h6j7k8l9z0x="
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-q", "1", "--key-file", pasted, "-l", logPath}, &stdout, &stderr); code != exitFatal {
		t.Fatalf("key as --key-file: exit %d (%s)", code, stderr.String())
	}
	logged, _ := os.ReadFile(logPath)
	for where, s := range map[string]string{"stderr": stderr.String(), "log": string(logged)} {
		if strings.Contains(s, pasted) || strings.Contains(s, "q1w2e3r4") {
			t.Fatalf("%s repeats the key: %q", where, s)
		}
		if !strings.Contains(s, "--key-file") || !strings.Contains(s, "not a readable file") {
			t.Fatalf("%s: %q; want it to say --key-file is not a readable file", where, s)
		}
	}
	if s := stderr.String(); strings.Count(s, "\n") != 1 || strings.Contains(s, "intercept: intercept:") {
		t.Fatalf("stderr %q: want one line, one prefix", s)
	}

	key := filepath.Join(dir, "relay.key")
	if err := os.WriteFile(key, []byte("a-relay-key-of-enough-bytes\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	os.Chmod(key, 0o640)
	stderr.Reset()
	if code := run([]string{"-q", "1", "--key-file", key}, &stdout, &stderr); code != exitFatal {
		t.Fatalf("group-readable key: exit %d (%s)", code, stderr.String())
	}
	if s := strings.TrimSuffix(stderr.String(), "\n"); strings.Contains(s, "\n") || !strings.HasSuffix(s, "run: chmod 600 "+key) ||
		strings.Contains(s, "a-relay-key") {
		t.Fatalf("group-readable key: stderr %q; want one line ending with the chmod", stderr.String())
	}
}
