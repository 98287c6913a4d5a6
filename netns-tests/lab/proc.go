package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
const stopGrace = 3 * time.Second

// Proc is a background process started in a lab namespace.
type Proc struct {
	// PID is the process ID (as seen from the root PID namespace). The
	// process leads its own process group, so PID is also its group ID.
	PID int

	host    *Host
	name    string
	logPath string
	cmd     *exec.Cmd

	done     chan struct{}
	waitErr  error // valid after done is closed
	signaled atomic.Bool
	stopOnce sync.Once
	stopErr  error
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
	// Start and register under the lab lock, so that a concurrent Close
	// either refuses this start or sees the process and stops it.
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fmt.Errorf("%s: lab is closed", what)
	}
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
		close(p.done)
	}()
	return p, nil
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
		return fmt.Errorf("lab: signal %s (pid %d) on %s: it has exited", p.name, p.PID, p.host.name)
	}
	// Not reaped yet: the group ID cannot belong to anyone else.
	if err := syscall.Kill(-p.PID, sig); err != nil {
		return fmt.Errorf("lab: signal %s (pid %d) on %s: %w", p.name, p.PID, p.host.name, err)
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
	if p.exited() {
		return p.exitError()
	}
	p.signaled.Store(true)
	// The process is not reaped yet (done is open), so its PID and group ID
	// cannot have been reused by an unrelated process. SIGCONT first: a
	// paused process would not act on SIGTERM.
	_ = syscall.Kill(-p.PID, syscall.SIGTERM)
	_ = syscall.Kill(-p.PID, syscall.SIGCONT)
	select {
	case <-p.done:
		return p.exitError()
	case <-time.After(stopGrace):
	}
	_ = syscall.Kill(-p.PID, syscall.SIGKILL)
	select {
	case <-p.done:
		return p.exitError()
	case <-time.After(10 * time.Second):
		return fmt.Errorf("lab: stop %s (pid %d) on %s: still running 10s after SIGKILL", p.name, p.PID, p.host.name)
	}
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
	return fmt.Errorf("lab: %s (pid %d) on %s: %w%s", p.name, p.PID, p.host.name, err, outputSuffix([]byte(tail(p.Log(), 1024))))
}

// Log returns the process's output so far (stdout and stderr interleaved).
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
