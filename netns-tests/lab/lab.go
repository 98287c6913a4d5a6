package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// runDir holds one <prefix>.pid file per live lab. It is on tmpfs, so a
	// reboot forgets it together with the namespaces it describes.
	runDir = "/run/stackcopy-lab"
	// netnsDir is where `ip netns add` creates its bind mounts.
	netnsDir = "/run/netns"

	// EnvKeep keeps a lab's directory after Close when set to "1".
	EnvKeep = "STACKCOPY_KEEP_LAB"
	// EnvRequired makes RequireRoot fail instead of skip when set to "1".
	EnvRequired = "STACKCOPY_LAB_REQUIRED"
	// EnvIPTables forces an iptables binary (e.g. "iptables-legacy").
	EnvIPTables = "STACKCOPY_IPTABLES"
)

// nsNameRE matches namespace names made by this package: "sc" + 6 hex + "-"
// + host name. Only namespaces matching it are ever considered for stale
// cleanup.
var nsNameRE = regexp.MustCompile(`^(sc[0-9a-f]{6})-[A-Za-z0-9_-]+$`)

// hostNameRE limits host names to something short and shell-safe; it ends up
// in namespace names, file names and error messages.
var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,16}$`)

// labNet is the only range lab addresses and routes may use.
var labNet = netip.MustParsePrefix("198.18.0.0/15")

// InLab reports whether p lies entirely inside 198.18.0.0/15.
func InLab(p netip.Prefix) bool {
	return p.IsValid() && p.Addr().Is4() && p.Bits() >= labNet.Bits() && labNet.Contains(p.Addr())
}

// Lab is a set of network namespaces, the links between them and the
// processes running in them, all removed by Close.
type Lab struct {
	name    string
	prefix  string
	dir     string
	keep    bool
	pidFile string

	mu       sync.Mutex
	hosts    []*Host
	procs    []*Proc
	logSeq   int
	closed   bool
	closeErr error

	iptOnce sync.Once
	ipt     string
	iptErr  error
}

// labRecord is the content of /run/stackcopy-lab/<prefix>.pid.
type labRecord struct {
	PID int `json:"pid"`
	// Start is the creator's start time in clock ticks since boot
	// (/proc/<pid>/stat field 22); with PID it identifies the process even
	// after the PID has been reused.
	Start uint64 `json:"start"`
	Name  string `json:"name"`
	Dir   string `json:"dir"`
	Keep  bool   `json:"keep"`
}

// RequireRoot skips the test unless the process can create network
// namespaces (root with CAP_SYS_ADMIN, iproute2 installed). With
// STACKCOPY_LAB_REQUIRED=1 it fails the test instead.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if err := CheckRoot(); err != nil {
		msg := "needs root: network namespaces, veth, TUN; run `make test` as root or through sudo (" + err.Error() + ")"
		if os.Getenv(EnvRequired) == "1" {
			tb.Fatal(msg + "; " + EnvRequired + "=1 forbids skipping")
		}
		tb.Skip(msg)
	}
}

// CheckRoot returns nil when labs can be built: euid 0, `ip` present and
// `ip netns add` permitted (it is not in an unprivileged container even for
// uid 0). The probe namespace is deleted again at once.
func CheckRoot() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("euid is %d, not 0", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("iproute2 not installed: %w", err)
	}
	prefix, err := newPrefix()
	if err != nil {
		return err
	}
	ns := prefix + "-probe"
	if _, err := run(context.Background(), "ip", "netns", "add", ns); err != nil {
		return err
	}
	// A concurrent CleanStale may already have removed the probe (it has no
	// pid file); that is fine.
	_, _ = run(context.Background(), "ip", "netns", "del", ns)
	return nil
}

// NewT is New for tests: it skips without root, fails the test on error,
// and closes the lab in tb.Cleanup, logging the tails of all process logs
// first if the test failed.
func NewT(tb testing.TB) *Lab {
	tb.Helper()
	RequireRoot(tb)
	l, err := New(tb.Name())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			l.logTails(tb)
		}
		if err := l.Close(); err != nil {
			tb.Errorf("%v", err)
		}
		if l.keep {
			tb.Logf("lab %s: kept %s", l.prefix, l.dir)
		}
	})
	return l
}

// New creates an empty lab. name is a short label (a test name, say) used in
// the lab directory's name and the pid file. Stale labs of dead processes
// are removed first.
func New(name string) (*Lab, error) {
	// Best effort: a stale lab that cannot be removed must not keep new
	// labs from working; its namespaces have distinct names anyway.
	_, _ = CleanStale()

	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: new %s: %w", name, err)
	}
	start, err := procStartTime(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("lab: new %s: %w", name, err)
	}
	label := sanitizeLabel(name)
	keep := os.Getenv(EnvKeep) == "1"
	// Retry on the (unlikely) collision with another live lab's prefix.
	for range 8 {
		prefix, err := newPrefix()
		if err != nil {
			return nil, fmt.Errorf("lab: new %s: %w", name, err)
		}
		l := &Lab{
			name:    name,
			prefix:  prefix,
			dir:     filepath.Join(os.TempDir(), "stackcopy-lab-"+prefix+"-"+label),
			keep:    keep,
			pidFile: filepath.Join(runDir, prefix+".pid"),
		}
		rec, _ := json.Marshal(labRecord{PID: os.Getpid(), Start: start, Name: name, Dir: l.dir, Keep: keep})
		// The pid file is written before anything else exists, so that a
		// namespace with this prefix is never seen without its owner.
		f, err := os.OpenFile(l.pidFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("lab: new %s: %w", name, err)
		}
		_, werr := f.Write(append(rec, '\n'))
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			_ = os.Remove(l.pidFile)
			return nil, fmt.Errorf("lab: new %s: write %s: %w", name, l.pidFile, werr)
		}
		// World-readable: nginx workers and tcpdump may drop privileges.
		if err := os.Mkdir(l.dir, 0o755); err != nil {
			_ = os.Remove(l.pidFile)
			return nil, fmt.Errorf("lab: new %s: %w", name, err)
		}
		return l, nil
	}
	return nil, fmt.Errorf("lab: new %s: no free prefix after 8 tries", name)
}

// Name returns the label given to New.
func (l *Lab) Name() string { return l.name }

// Prefix returns the lab's namespace name prefix, e.g. "sc1a2b3c".
func (l *Lab) Prefix() string { return l.prefix }

// Dir returns the lab's directory for logs, captures and configs. It is
// removed by Close unless STACKCOPY_KEEP_LAB=1.
func (l *Lab) Dir() string { return l.dir }

// Hosts returns the lab's hosts in creation order.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// Close stops all processes started in the lab (SIGTERM, SIGKILL after 3s),
// ends any process still left inside the lab's namespaces, deletes the
// namespaces (which deletes the veth pairs) and the lab directory. It is
// safe to call more than once; later calls return the first result.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return l.closeErr
	}
	l.closed = true
	procs := l.procs
	hosts := l.hosts
	l.mu.Unlock()

	var errs []error
	// Stop concurrently: each may take up to the SIGKILL grace period.
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { _ = p.Stop() })
	}
	wg.Wait()
	for _, p := range procs {
		if !p.exited() {
			errs = append(errs, fmt.Errorf("process %d (%s) did not exit after SIGKILL", p.PID, p.name))
		}
	}
	for _, h := range hosts {
		if err := removeNamespace(h.ns); err != nil {
			errs = append(errs, err)
		}
	}
	// The pid file goes last: while namespaces exist, they have an owner.
	if err := os.Remove(l.pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if !l.keep {
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		l.closeErr = fmt.Errorf("lab: close %s: %w", l.prefix, err)
	}
	return l.closeErr
}

// logTails writes the end of every process log to the test log.
func (l *Lab) logTails(tb testing.TB) {
	tb.Helper()
	l.mu.Lock()
	procs := append([]*Proc(nil), l.procs...)
	l.mu.Unlock()
	for _, p := range procs {
		log := p.Log()
		if len(log) > 4096 {
			log = "…" + log[len(log)-4096:]
		}
		tb.Logf("lab %s: log of %s on %s (pid %d, %s):\n%s", l.prefix, p.name, p.host.name, p.PID, p.logPath, log)
	}
}

// nextLogSeq numbers log files so that restarts of a program do not
// overwrite each other's logs.
func (l *Lab) nextLogSeq() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.logSeq++
	return l.logSeq
}

// CleanStale removes labs whose creating process has exited: it kills the
// processes left in their namespaces (by PID, from `ip netns pids`),
// deletes the namespaces, pid files and (unless kept) directories.
// Namespaces that look like lab namespaces but have no pid file are
// orphans (their pid file is written before any namespace is created) and
// are removed as well. It returns the namespaces it removed. New calls it.
func CleanStale() ([]string, error) {
	owners := map[string]labRecord{}
	alive := map[string]bool{}
	pidFiles, err := os.ReadDir(runDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab: clean stale: %w", err)
	}
	for _, e := range pidFiles {
		prefix, ok := strings.CutSuffix(e.Name(), ".pid")
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(runDir, e.Name()))
		if err != nil {
			continue // removed concurrently by its owner's Close
		}
		var rec labRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			// A creator killed between create and write leaves an empty
			// file: treat as dead, but only once it is old enough that it
			// cannot be a New in progress.
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) < time.Minute {
				alive[prefix] = true
				continue
			}
			owners[prefix] = labRecord{}
			continue
		}
		owners[prefix] = rec
		alive[prefix] = processAlive(rec.PID, rec.Start)
	}

	var removed []string
	var errs []error
	nsEntries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab: clean stale: %w", err)
	}
	for _, e := range nsEntries {
		m := nsNameRE.FindStringSubmatch(e.Name())
		if m == nil || alive[m[1]] {
			continue
		}
		if _, owned := owners[m[1]]; !owned {
			// Re-check: the owner may have written its pid file after we
			// listed runDir.
			if _, err := os.Stat(filepath.Join(runDir, m[1]+".pid")); err == nil {
				continue
			}
		}
		if err := removeNamespace(e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	for prefix, rec := range owners {
		if alive[prefix] {
			continue
		}
		if !rec.Keep && isLabDir(rec.Dir, prefix) {
			if err := os.RemoveAll(rec.Dir); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.Remove(filepath.Join(runDir, prefix+".pid")); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("lab: clean stale: %w", err)
	}
	return removed, nil
}

// removeNamespace kills whatever still runs in a lab namespace, then deletes
// it. Processes must go first: a namespace stays alive (with its veths and
// sockets) as long as a process is in it, even after `ip netns del`.
func removeNamespace(ns string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, ns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := run(context.Background(), "ip", "netns", "pids", ns); err == nil {
		self := os.Getpid()
		for _, f := range strings.Fields(string(out)) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid <= 1 || pid == self {
				continue
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if _, err := run(context.Background(), "ip", "netns", "del", ns); err != nil {
		// Lost a race with a concurrent cleanup: the goal is reached.
		if _, serr := os.Stat(filepath.Join(netnsDir, ns)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return nil
}

// isLabDir guards RemoveAll against a corrupt pid file: only directories
// that this package would have created are removed.
func isLabDir(dir, prefix string) bool {
	return dir != "" && filepath.IsAbs(dir) &&
		filepath.Dir(dir) == filepath.Clean(os.TempDir()) &&
		strings.HasPrefix(filepath.Base(dir), "stackcopy-lab-"+prefix+"-")
}

// processAlive reports whether the process that wrote a pid file still
// runs. A zombie counts as dead, and so does a different process that got
// the same PID (start time mismatch).
func processAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	st, state, err := procStat(pid)
	if err != nil {
		return false
	}
	if state == "Z" || state == "X" {
		return false
	}
	return start == 0 || st == start
}

// procStartTime returns a process's start time in clock ticks since boot.
func procStartTime(pid int) (uint64, error) {
	st, _, err := procStat(pid)
	return st, err
}

// procStat reads the start time and state from /proc/<pid>/stat.
func procStat(pid int) (start uint64, state string, err error) {
	f, err := procStatFields(pid)
	if err != nil {
		return 0, "", err
	}
	// f[0] is field 3 (state); starttime is field 22.
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("/proc/%d/stat: starttime: %w", pid, err)
	}
	return start, f[0], nil
}

// procStatFields returns the fields of /proc/PID/stat from field 3 on.
func procStatFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	// The command name (field 2) may contain spaces and parentheses; the
	// fields after the last ')' are fixed.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return f, nil
}

// clkTck is USER_HZ, the unit of utime and stime in /proc/PID/stat (100
// on every Linux architecture the lab runs on).
const clkTck = 100

// ProcCPU returns the user and system CPU time process pid used so far.
func ProcCPU(pid int) (user, sys time.Duration, err error) {
	f, err := procStatFields(pid)
	if err != nil {
		return 0, 0, err
	}
	// utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut) * time.Second / clkTck, time.Duration(st) * time.Second / clkTck, nil
}

// newPrefix returns "sc" + 6 random hex digits.
func newPrefix() (string, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("lab: random prefix: %w", err)
	}
	return "sc" + hex.EncodeToString(b[:]), nil
}

// sanitizeLabel turns a test name like "TestLab/sub case" into something
// usable in a file name.
func sanitizeLabel(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 40 {
			break
		}
	}
	if b.Len() == 0 {
		return "lab"
	}
	return b.String()
}
