package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// BuildBinary builds a main package (an import path such as
// "github.com/stackcopy/stackcopy/netns-tests/cmd/recorder", or a path
// relative to the working directory) into out with CGO_ENABLED=0: a static
// binary runs the same in every namespace and needs no C toolchain. Meant
// for a test's TestMain. `go test` puts its own go first in PATH.
func BuildBinary(pkg, out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("lab: build %s: %w", pkg, err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("lab: build %s: %w", pkg, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args, cgo := []string{"build", "-o", out, pkg}, "CGO_ENABLED=0"
	if os.Getenv("STACKCOPY_LAB_RACE") != "" {
		// The lab's programs with the race detector, for `make lab-race`:
		// real traffic drives paths the unit tests reach only in part.
		args, cgo = append([]string{"build", "-race"}, args[1:]...), "CGO_ENABLED=1"
	}
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Env = append(os.Environ(), cgo)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("lab: build %s: %s: %w%s", pkg, cmdline(goBin, cmd.Args[1:]), err, outputSuffix(b))
	}
	return nil
}
