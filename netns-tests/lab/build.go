package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
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

// Binaries builds the programs a test binary's lab tests run, each once
// per test binary run, into one directory (TestMain's temporary one): tests
// in parallel share one build of a program instead of each paying for its
// own. A build that fails is not retried; every test that needs the
// program gets the error.
type Binaries struct {
	dir string

	mu     sync.Mutex
	builds map[string]*binaryBuild // by package
	names  map[string]string       // file name → package, to refuse clashes
}

type binaryBuild struct {
	once sync.Once
	path string
	err  error
}

// NewBinaries returns a Binaries that builds into dir (which must exist
// and is the caller's to remove).
func NewBinaries(dir string) *Binaries {
	return &Binaries{dir: dir, builds: map[string]*binaryBuild{}, names: map[string]string{}}
}

// Path returns the binary of the main package pkg (as for BuildBinary),
// building it on first use. The file is named after pkg's last element.
func (b *Binaries) Path(pkg string) (string, error) {
	name := path.Base(pkg)
	b.mu.Lock()
	if other, ok := b.names[name]; ok && other != pkg {
		b.mu.Unlock()
		return "", fmt.Errorf("lab: build %s: %s is already the binary of %s", pkg, name, other)
	}
	b.names[name] = pkg
	bb := b.builds[pkg]
	if bb == nil {
		bb = &binaryBuild{path: filepath.Join(b.dir, name)}
		b.builds[pkg] = bb
	}
	b.mu.Unlock()
	bb.once.Do(func() { bb.err = BuildBinary(pkg, bb.path) })
	return bb.path, bb.err
}
