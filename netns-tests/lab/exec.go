package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// cmdTimeout bounds every helper command (ip, sysctl, iptables) that the
// caller gives no context for: they normally take milliseconds, and a hung
// one must not hang a test until the global go test timeout.
const cmdTimeout = 30 * time.Second

// maxErrOutput caps how much of a failed command's output goes into an error
// message: enough for any diagnostic, not a megabyte of curl progress.
const maxErrOutput = 4096

// run executes a command and returns its combined output. The error names
// the full command line, the exit status and the (trimmed) output, so a test
// failure reads like a shell transcript.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return runInput(ctx, nil, name, args...)
}

// runInput is run with stdin read from in (nil: none).
func runInput(ctx context.Context, in io.Reader, name string, args ...string) ([]byte, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cmdTimeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = labEnv()
	cmd.Stdin = in
	// A killed command's grandchildren may hold the output pipe open; do not
	// wait for them forever.
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w%s", cmdline(name, args), err, outputSuffix(out))
	}
	return out, nil
}

// cmdline renders a command for error messages.
func cmdline(name string, args []string) string {
	var b strings.Builder
	b.WriteString(name)
	for _, a := range args {
		b.WriteByte(' ')
		if a == "" || strings.ContainsAny(a, " \t\n'\"$*?;&|<>()") {
			b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
		} else {
			b.WriteString(a)
		}
	}
	return b.String()
}

// outputSuffix formats command output for an error message: ": <output>",
// keeping the tail (where errors usually are) when it is long.
func outputSuffix(out []byte) string {
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return ""
	}
	if len(out) > maxErrOutput {
		out = append([]byte("…"), out[len(out)-maxErrOutput:]...)
	}
	return ": " + string(out)
}

// labEnv is the environment for every process run in a lab. Proxy variables
// are removed: a lab namespace has no route out, and a curl that tried a
// proxy would fail in confusing ways (or, worse, aim at an address outside
// the lab range).
func labEnv() []string {
	env := os.Environ()
	out := env[:0:0]
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(name) {
		case "http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy":
			continue
		}
		out = append(out, kv)
	}
	return out
}
