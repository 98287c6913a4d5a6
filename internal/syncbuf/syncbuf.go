// Package syncbuf holds the one goroutine-safe byte buffer that tests and
// the lab share for logs and child output read while still being written.
// It imports only the standard library.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that one goroutine may write to while
// another reads it: a child's output copied in by os/exec, or a logger's
// lines, read by the test while the writer may still be going.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
