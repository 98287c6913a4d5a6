package cliflag

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// WritePIDFile writes the process ID to path (-P), refusing if the file
// names another process that is still running: two instances would
// otherwise fight over one pid file, and the second's exit would remove
// the first's. remove deletes the file if it still holds our ID (a
// successor's file is left alone); call it at exit.
func WritePIDFile(path string) (remove func() error, err error) {
	self := strconv.Itoa(os.Getpid())
	if b, err := os.ReadFile(path); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 && pid != os.Getpid() {
			// EPERM: it exists, and belongs to someone else.
			if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
				return nil, fmt.Errorf("pid file %s: process %d is running (another instance?)", path, pid)
			}
		}
	}
	if err := os.WriteFile(path, []byte(self+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("pid file: %w", err)
	}
	return func() error {
		b, err := os.ReadFile(path)
		if err != nil || strings.TrimSpace(string(b)) != self {
			return nil // gone, or not ours any more
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pid file: %w", err)
		}
		return nil
	}, nil
}

// Level is the log level for verbose -v flags given: each one a step
// (slog's levels are 4 apart) more detailed than base, down to Debug.
func Level(base slog.Level, verbose int) slog.Level {
	return max(base-slog.Level(4*verbose), slog.LevelDebug)
}

// NewLogger returns the text logger of a command's -l and -v flags: to
// the file at path if given (created 0640 or appended to: several runs, or
// a log rotator, may share it), else to stderr, at Level(base, verbose).
// closeLog closes the file; it does nothing for stderr.
func NewLogger(path string, stderr io.Writer, base slog.Level, verbose int) (log *slog.Logger, closeLog func() error, err error) {
	w, closeLog := stderr, func() error { return nil }
	if path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, nil, err // *PathError: "open PATH: reason"
		}
		w, closeLog = f, f.Close
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: Level(base, verbose)})), closeLog, nil
}
