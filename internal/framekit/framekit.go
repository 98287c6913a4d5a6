// Package framekit holds the part of a protocol framer (respframe, mcframe,
// myframe, pgframe) that does not depend on the protocol: the mutex that
// the client and server directions both take, the counts kept under it and
// their atomic copies for Requests, Answers and Err on any goroutine, the
// first error that stops the framer, and a bounded buffer for a line split
// across chunks.
//
// A framer keeps a Shell in an unexported field, not embedded, so that its
// own exported API and doc comments stay its own.
//
// framekit imports only the standard library.
package framekit

import (
	"sync"
	"sync/atomic"
)

// Shell is a framer's locked counts, their published copies and its error.
// The zero value is ready. Requested, Answered, Failed, Fail, Stop,
// Publish and PublishErr are for the holder of the lock; Requests, Answers
// and Err for any goroutine.
type Shell struct {
	mu  sync.Mutex
	err error // under mu; set once

	// Requested and Answered are the framer's counts, under the lock.
	// Publish makes them visible to Requests and Answers.
	Requested, Answered int

	pubRequested, pubAnswered atomic.Int64
	pubErr                    atomic.Pointer[error]
}

// Lock takes the lock both directions share.
func (s *Shell) Lock() { s.mu.Lock() }

// Unlock releases it.
func (s *Shell) Unlock() { s.mu.Unlock() }

// Failed reports whether the framer stopped following the session.
func (s *Shell) Failed() bool { return s.err != nil }

// Publish stores the counts for Requests and Answers.
func (s *Shell) Publish() {
	s.pubRequested.Store(int64(s.Requested))
	s.pubAnswered.Store(int64(s.Answered))
}

// PublishErr stores the error of a framer that Stop stopped, for Err; a
// framer calls it after Publish, so that a reader who sees Err sees the
// counts it came with.
func (s *Shell) PublishErr() {
	if s.err != nil {
		s.pubErr.Store(&s.err)
	}
}

// Fail stops the framer with err and makes err visible to Err at once.
// The first failure wins: later calls change nothing.
func (s *Shell) Fail(err error) {
	if s.err != nil {
		return
	}
	s.err = err
	s.pubErr.Store(&s.err)
}

// Stop stops the framer with err, which Err returns once PublishErr
// has run. The first failure wins.
func (s *Shell) Stop(err error) {
	if s.err == nil {
		s.err = err
	}
}

// Requests returns the published count of requests.
func (s *Shell) Requests() int { return int(s.pubRequested.Load()) }

// Answers returns the published count of answer units.
func (s *Shell) Answers() int { return int(s.pubAnswered.Load()) }

// Err returns the published error, or nil while the framer follows the
// session.
func (s *Shell) Err() error {
	if e := s.pubErr.Load(); e != nil {
		return *e
	}
	return nil
}

// LineBuf holds a line split across chunks, up to a bound. Init it before
// use.
type LineBuf struct {
	b   []byte
	max int
}

// Init sets the bound on a line's length (without its LF) and gives the
// buffer room for short lines, so that they never allocate.
func (lb *LineBuf) Init(max int) {
	lb.b = make([]byte, 0, 256)
	lb.max = max
}

// Next returns the line that ends in p (without its LF) and what follows;
// ok is false when p ends inside the line, whose bytes are kept. over
// reports a line (without its LF) longer than the bound; its bytes are not
// kept. The line returned may be the buffer itself: use it before the next
// call.
func (lb *LineBuf) Next(p []byte) (line, rest []byte, ok, over bool) {
	i := indexLF(p)
	if i < 0 {
		if len(lb.b)+len(p) > lb.max {
			return nil, nil, false, true
		}
		lb.b = append(lb.b, p...)
		return nil, nil, false, false
	}
	if len(lb.b)+i > lb.max {
		return nil, nil, false, true
	}
	if len(lb.b) == 0 {
		return p[:i], p[i+1:], true, false
	}
	lb.b = append(lb.b, p[:i]...)
	line = lb.b
	lb.b = lb.b[:0]
	return line, p[i+1:], true, false
}

// Held returns the bytes of the line begun so far (empty between lines).
func (lb *LineBuf) Held() []byte { return lb.b }

// Drop forgets the bytes of the line begun so far.
func (lb *LineBuf) Drop() { lb.b = lb.b[:0] }

func indexLF(p []byte) int {
	for i, c := range p {
		if c == '\n' {
			return i
		}
	}
	return -1
}

// Block is a payload of announced length followed by CRLF, as memcached's
// data blocks and RESP's bulk strings are. Its bytes are counted, never
// held.
type Block struct {
	remain uint64 // payload bytes to go
	crlf   uint8  // bytes of the CRLF still to come: 2, 1, or 0 (done)
}

// Start begins a block of n payload bytes.
func (b *Block) Start(n uint64) { b.remain, b.crlf = n, 2 }

// Take consumes from p what belongs to the block. payload is the part of
// p that is payload (for a caller that looks at it), rest what follows
// the block. done reports that the block ended in p; bad that a byte where
// the CRLF belongs is something else (the block is then not done).
func (b *Block) Take(p []byte) (payload, rest []byte, done, bad bool) {
	n := min(uint64(len(p)), b.remain)
	payload, p = p[:n], p[n:]
	b.remain -= n
	for b.remain == 0 && b.crlf > 0 && len(p) > 0 {
		want := byte('\r')
		if b.crlf == 1 {
			want = '\n'
		}
		if p[0] != want {
			return payload, p, false, true
		}
		p = p[1:]
		b.crlf--
	}
	return payload, p, b.remain == 0 && b.crlf == 0, false
}
