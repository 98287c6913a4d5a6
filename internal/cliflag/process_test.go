package cliflag

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPIDFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "intercept.pid")
	if _, err := WritePIDFile(path); err != nil {
		t.Fatal(err)
	}
	// Our own PID in it: a restart of the same process is fine.
	if _, err := WritePIDFile(path); err != nil {
		t.Fatal(err)
	}
	// A live other process (PID 1) in it: refused.
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WritePIDFile(path); err == nil || !strings.Contains(err.Error(), "running") || !strings.Contains(err.Error(), path) {
		t.Fatalf("pid file of a live process: %v", err)
	}
	if err := os.WriteFile(path, []byte("999999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	remove, err := WritePIDFile(path)
	if err != nil {
		t.Fatalf("stale pid file: %v", err)
	}
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) == "999999999" {
		t.Fatal("stale pid file not overwritten")
	}
	// Taken over by another process meanwhile: left alone at exit.
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("removed another process's pid file: %v", err)
	}
	// Ours: removed.
	os.Remove(path)
	if remove, err = WritePIDFile(path); err != nil {
		t.Fatal(err)
	}
	if err := remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("our pid file survived: %v", err)
	}
	if _, err := WritePIDFile(filepath.Join(t.TempDir(), "no", "dir")); err == nil || !strings.HasPrefix(err.Error(), "pid file: ") {
		t.Fatalf("unwritable: %v", err)
	}
}

func TestLevel(t *testing.T) {
	for _, tc := range []struct {
		base    slog.Level
		verbose int
		want    slog.Level
	}{
		{slog.LevelInfo, 0, slog.LevelInfo}, // intercept
		{slog.LevelInfo, 1, slog.LevelDebug},
		{slog.LevelInfo, 3, slog.LevelDebug},
		{slog.LevelWarn, 0, slog.LevelWarn}, // stackcopy
		{slog.LevelWarn, 1, slog.LevelInfo},
		{slog.LevelWarn, 2, slog.LevelDebug},
	} {
		if got := Level(tc.base, tc.verbose); got != tc.want {
			t.Errorf("Level(%v, %d) = %v, want %v", tc.base, tc.verbose, got, tc.want)
		}
	}
}

func TestNewLogger(t *testing.T) {
	var stderr bytes.Buffer
	log, closeLog, err := NewLogger("", &stderr, slog.LevelInfo, 0)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	log.Info("shown")
	if err := closeLog(); err != nil {
		t.Fatal(err)
	}
	if s := stderr.String(); strings.Contains(s, "hidden") || !strings.Contains(s, "shown") {
		t.Fatalf("stderr: %q", s)
	}

	path := filepath.Join(t.TempDir(), "x.log")
	if err := os.WriteFile(path, []byte("earlier run\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log, closeLog, err = NewLogger(path, &stderr, slog.LevelInfo, 1)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("debug line")
	if err := closeLog(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !strings.HasPrefix(string(b), "earlier run\n") || !strings.Contains(string(b), "debug line") {
		t.Fatalf("log file (appended, debug): %q", b)
	}
	if _, _, err := NewLogger(filepath.Join(t.TempDir(), "no", "x.log"), &stderr, slog.LevelInfo, 0); err == nil || !strings.Contains(err.Error(), "x.log") {
		t.Fatalf("unopenable log file: %v", err)
	}
}
