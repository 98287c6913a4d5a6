package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stackcopy/stackcopy/internal/syncbuf"
)

// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
const stopGrace = 3 * time.Second

// killWait is how long Stop waits for a process to go after SIGKILL.
const killWait = 10 * time.Second

// Proc is a background process started in a lab namespace.
type Proc struct {
	// PID is the process ID (as seen from the root PID namespace). The
	// process leads its own process group, so PID is also its group ID.
	PID int

	host    *Host
	name    string
	logPath string
	cmd     *exec.Cmd
	stdout  *syncbuf.Buffer // nil unless StartOptions.Stdout
	started time.Time

	done     chan struct{}
	waitErr  error     // valid after done is closed
	ended    time.Time // valid after done is closed
	signaled atomic.Bool
	stopOnce sync.Once
	stopErr  error
}

// StartOptions change how StartWith runs a program.
type StartOptions struct {
	// Stdout keeps the program's standard output apart, in memory, for
	// Proc.Stdout: for programs whose output is their result (a JSON
	// object, a summary to parse). Standard error still goes to the log.
	Stdout bool
}

// Start runs name with args in the background inside the host's namespace.
// stdout and stderr go to a log file in the lab directory (see LogPath).
// The process gets its own process group so that Stop also reaches its
// children (nginx workers, shells' children). The lab stops it at Close.
//
// No Pdeathsig is set: it fires when the creating OS thread exits, which
// goroutines that lock threads to switch namespaces can cause at any time.
// Processes of a killed test are removed by the next New instead.
func (h *Host) Start(name string, args ...string) (*Proc, error) {
	return h.StartWith(StartOptions{}, name, args...)
}

// StartWith is Start with options.
func (h *Host) StartWith(opts StartOptions, name string, args ...string) (*Proc, error) {
	what := "lab: start " + filepath.Base(name) + " on " + h.name
	// `ip netns exec` reports a missing binary only in its own output after
	// the fact; look it up first (same mount namespace) for a clear error.
	if _, err := exec.LookPath(name); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	l := h.lab
	logPath := filepath.Join(l.dir, fmt.Sprintf("%s-%s-%d.log", h.name, filepath.Base(name), l.nextLogSeq()))
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	// The child writes to the file directly; the parent's copy can go as
	// soon as the child has it.
	defer logFile.Close()

	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
	cmd.Env = labEnv()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &Proc{host: h, name: filepath.Base(name), logPath: logPath, cmd: cmd, done: make(chan struct{})}
	if opts.Stdout {
		p.stdout = new(syncbuf.Buffer)
		cmd.Stdout = p.stdout
		// The output now goes through a pipe that Wait drains; a child
		// the program left behind could hold it open for ever.
		cmd.WaitDelay = 2 * time.Second
	}
	// Start and register under the lab lock, so that a concurrent Close
	// either refuses this start or sees the process and stops it.
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fmt.Errorf("%s: lab is closed", what)
	}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	// `ip netns exec` execs the program after setns, so this PID is the
	// program itself, not a wrapper.
	p.PID = cmd.Process.Pid
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	go func() {
		p.waitErr = cmd.Wait()
		p.ended = time.Now()
		close(p.done)
	}()
	return p, nil
}

// String names the process for messages: "stackcopy (pid 4711) on replay".
func (p *Proc) String() string {
	return fmt.Sprintf("%s (pid %d) on %s", p.name, p.PID, p.host.name)
}

// Wait waits for the process to exit and returns its exit error.
func (p *Proc) Wait() error {
	<-p.done
	return p.waitErr
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// exited reports whether the process has been reaped.
func (p *Proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Pause stops the process (SIGSTOP to its group) until Resume: a server
// that neither reads nor answers, with the kernel still accepting for it.
func (p *Proc) Pause() error { return p.signal(syscall.SIGSTOP) }

// Kill ends the process at once (SIGKILL to its group), giving it no
// chance to clean up, as a crash would. Wait or Stop reaps it.
func (p *Proc) Kill() error { return p.signal(syscall.SIGKILL) }

// Resume continues a paused process.
func (p *Proc) Resume() error { return p.signal(syscall.SIGCONT) }

func (p *Proc) signal(sig syscall.Signal) error {
	if p.exited() {
		return fmt.Errorf("lab: signal %s: it has exited", p)
	}
	// Not reaped yet: the group ID cannot belong to anyone else.
	if err := syscall.Kill(-p.PID, sig); err != nil {
		return fmt.Errorf("lab: signal %s: %w", p, err)
	}
	return nil
}

// Stop ends the process: SIGTERM to its process group, SIGKILL after 3 s.
// It returns nil when the process ended because of the signal or with
// status 0, and the exit error if it had already failed on its own (a
// server that crashed during the test). Safe to call more than once.
func (p *Proc) Stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.stop() })
	return p.stopErr
}

func (p *Proc) stop() error {
	if _, _, err := p.terminate(stopGrace); err != nil {
		return err
	}
	return p.exitError()
}

// StopWithin ends the process like Stop, but waits grace (not 3 s) after
// SIGTERM before SIGKILL, and reports how long the process took to exit
// after SIGTERM and whether it exited on SIGTERM alone: how fast a
// program shuts down is itself a measurement. Its exit status is for
// ExitCode and Wait; the error is only for a process SIGKILL did not end.
// A process that has already exited takes 0 s.
func (p *Proc) StopWithin(grace time.Duration) (took time.Duration, graceful bool, err error) {
	return p.terminate(grace)
}

// terminate sends SIGTERM to the process group (and SIGCONT: a paused
// process would not act on SIGTERM), then SIGKILL after grace.
func (p *Proc) terminate(grace time.Duration) (took time.Duration, graceful bool, err error) {
	if p.exited() {
		return 0, true, nil
	}
	p.signaled.Store(true)
	// The process is not reaped yet (done is open), so its PID and group ID
	// cannot have been reused by an unrelated process.
	t0 := time.Now()
	_ = syscall.Kill(-p.PID, syscall.SIGTERM)
	_ = syscall.Kill(-p.PID, syscall.SIGCONT)
	select {
	case <-p.done:
		return time.Since(t0), true, nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.PID, syscall.SIGKILL)
	select {
	case <-p.done:
		return time.Since(t0), false, nil
	case <-time.After(killWait):
		return time.Since(t0), false, fmt.Errorf("lab: stop %s: still running %v after SIGKILL", p, killWait)
	}
}

// WaitContext waits for the process to exit and returns its exit error,
// with the tail of its log. If ctx ends first, it stops the process
// (SIGTERM, SIGKILL after grace) and returns ctx's error: a bounded run
// of a program that is expected to end by itself.
func (p *Proc) WaitContext(ctx context.Context, grace time.Duration) error {
	select {
	case <-p.done:
	case <-ctx.Done():
		if _, _, err := p.terminate(grace); err != nil {
			return errors.Join(fmt.Errorf("lab: %s: %w", p, ctx.Err()), err)
		}
		return fmt.Errorf("lab: %s: still running, stopped: %w%s", p, ctx.Err(), outputSuffix([]byte(tail(p.Log(), 2048))))
	}
	if p.waitErr != nil {
		return fmt.Errorf("lab: %s: %w%s", p, p.waitErr, outputSuffix([]byte(tail(p.Log(), 2048))))
	}
	return nil
}

// exitError interprets the exit status for Stop.
func (p *Proc) exitError() error {
	err := p.waitErr
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if p.signaled.Load() && errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() &&
			(ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGKILL) {
			return nil
		}
	}
	return fmt.Errorf("lab: %s: %w%s", p, err, outputSuffix([]byte(tail(p.Log(), 1024))))
}

// ExitCode waits for the process to exit and returns its exit status, -1
// if a signal ended it.
func (p *Proc) ExitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

// Wall returns how long the process ran: from start to exit, or so far.
func (p *Proc) Wall() time.Duration {
	select {
	case <-p.done:
		return p.ended.Sub(p.started)
	default:
		return time.Since(p.started)
	}
}

// CPU returns the user+system CPU time the process used: so far (from
// /proc/PID/stat, in 10 ms ticks) while it runs, all of it (its rusage)
// once it has exited. `ip netns exec` execs the program in place, so this
// is the program's own time, not a wrapper's.
func (p *Proc) CPU() (time.Duration, error) {
	select {
	case <-p.done:
		ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
		if !ok {
			return 0, fmt.Errorf("lab: CPU of %s: no rusage", p)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
	default:
	}
	// Not reaped yet: /proc/PID is this process's.
	user, sys, err := ProcCPU(p.PID)
	if err != nil {
		return 0, fmt.Errorf("lab: CPU of %s: %w", p, err)
	}
	return user + sys, nil
}

// RSS returns the resident set size (VmRSS) of the running process in
// bytes.
func (p *Proc) RSS() (int64, error) { return p.statusBytes("VmRSS") }

// PeakRSS returns the running process's peak resident set size so far
// (VmHWM) in bytes.
func (p *Proc) PeakRSS() (int64, error) { return p.statusBytes("VmHWM") }

// statusBytes reads a kB field of the running process's /proc status.
func (p *Proc) statusBytes(field string) (int64, error) {
	if p.exited() {
		return 0, fmt.Errorf("lab: %s of %s: it has exited", field, p)
	}
	kb, err := procStatusKB(p.PID, field)
	if err != nil {
		return 0, fmt.Errorf("lab: %s of %s: %w", field, p, err)
	}
	return kb << 10, nil
}

// Sample calls f every interval until the process exits or ctx ends.
func (p *Proc) Sample(ctx context.Context, every time.Duration, f func()) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-p.Done():
			return
		case <-ctx.Done():
			return
		case <-tick.C:
			f()
		}
	}
}

// procStatusKB reads a "Name:   123 kB" field of /proc/PID/status.
func procStatusKB(pid int, field string) (int64, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/status"
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s %q: %w", path, field, v, err)
			}
			return kb, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return 0, fmt.Errorf("%s: no %s", path, field)
}

// Stdout returns the program's standard output so far, if it was started
// with StartOptions.Stdout ("" otherwise).
func (p *Proc) Stdout() string {
	if p.stdout == nil {
		return ""
	}
	return p.stdout.String()
}

// Log returns the process's output so far: stdout and stderr interleaved,
// or stderr alone if it was started with StartOptions.Stdout.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(log %s: %v)", p.logPath, err)
	}
	return string(b)
}

// LogPath returns the path of the process's log file.
func (p *Proc) LogPath() string { return p.logPath }

// Name returns the program's base name.
func (p *Proc) Name() string { return p.name }

// tail returns at most the last n bytes of s.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
