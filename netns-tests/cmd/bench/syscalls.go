package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// errNoPerf: perf(1) is not installed; the bench then prints no syscall
// counts.
var errNoPerf = errors.New("perf not found (install linux-perf for syscall counts)")

// syscallCount counts one process's system calls, in all its threads
// (those it starts later too), from countSyscalls until stop: perf stat
// on the raw_syscalls:sys_enter tracepoint, which counts in the kernel
// without stopping the process (unlike strace).
type syscallCount struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

func countSyscalls(pid int) (*syscallCount, error) {
	path, err := exec.LookPath("perf")
	if err != nil {
		return nil, errNoPerf
	}
	c := &syscallCount{}
	c.cmd = exec.Command(path, "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", strconv.Itoa(pid))
	c.cmd.Stderr = &c.out // perf stat reports on standard error
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf stat -p %d: %w", pid, err)
	}
	return c, nil
}

// stop ends the count (perf prints it on SIGINT) and returns it. On a
// nil or already stopped count it does nothing.
func (c *syscallCount) stop() (uint64, error) {
	if c == nil || c.cmd == nil {
		return 0, nil
	}
	cmd := c.cmd
	c.cmd = nil
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		return 0, fmt.Errorf("perf stat: %w", err)
	}
	_ = cmd.Wait() // perf exits non-zero on SIGINT
	return parsePerfCount(c.out.String())
}

// parsePerfCount reads the count from perf stat -x, output:
// "12345,,raw_syscalls:sys_enter,...".
func parsePerfCount(out string) (uint64, error) {
	for line := range strings.Lines(out) {
		fields := strings.Split(strings.TrimSpace(line), ",")
		if len(fields) < 3 || fields[2] != "raw_syscalls:sys_enter" {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("perf stat: count %q: %w", fields[0], err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("perf stat printed no count: %q", strings.TrimSpace(out))
}
