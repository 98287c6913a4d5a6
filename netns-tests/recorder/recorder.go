// Package recorder is a small TCP server for lab tests that records exactly
// which bytes arrived: per request (HTTP/1.1), per command (SMTP) or per
// connection (raw), as byte counts and SHA-256 digests in a JSON-lines log.
// Tests compare those digests with what the original client sent to prove
// byte-exact delivery through stackcopy. It also records whether a client
// sent the next request before the answer to the previous one was written
// ("early"), which is how tests see that replayed turns were not pipelined.
//
// Bodies are hashed as they stream in; nothing is buffered beyond one
// header line, so multi-gigabyte uploads cost no memory.
package recorder

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Mode selects the protocol the recorder speaks.
type Mode string

const (
	ModeHTTP Mode = "http" // HTTP/1.1 requests, keep-alive, pipelining detected
	ModeSMTP Mode = "smtp" // server-first: banner, then one record per command
	ModeRaw  Mode = "raw"  // no parsing, no answer: one record per connection at EOF
)

// ParseMode validates a -mode flag value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeHTTP, ModeSMTP, ModeRaw:
		return m, nil
	}
	return "", fmt.Errorf("recorder: unknown mode %q (want http, smtp or raw)", s)
}

// Record describes one request (HTTP), command or DATA body (SMTP), or a
// whole connection (raw), as a line of the log.
type Record struct {
	Conn   uint64         `json:"conn"`   // connection number, from 1, in accept order
	Client netip.AddrPort `json:"client"` // the peer address (the forged client under replay)
	Index  int            `json:"index"`  // request index within the connection, from 0
	Bytes  int64          `json:"bytes"`  // all bytes of the request: request line, headers, body with any chunk framing
	SHA256 string         `json:"sha256"` // hex SHA-256 of exactly those bytes
	// Early: bytes of the next request had arrived before the answer to
	// this one was written (after the response delay), i.e. the client did
	// not wait for the answer. For SMTP's first record it is also set when
	// the client spoke before the banner.
	Early bool `json:"early"`

	// BodyBytes and BodySHA256 cover the HTTP body with chunked framing
	// removed, to compare with an uploaded file.
	BodyBytes  int64  `json:"body_bytes,omitempty"`
	BodySHA256 string `json:"body_sha256,omitempty"`
	// Line is the request line or SMTP command, shortened, for humans (the
	// DATA body is "<data>").
	Line string `json:"line,omitempty"`
	// Error is set when the request was malformed or cut short; Bytes and
	// SHA256 then cover what did arrive.
	Error string `json:"error,omitempty"`
}

// ConnSummary is the last line logged for a connection.
type ConnSummary struct {
	Conn       uint64         `json:"conn"`
	Client     netip.AddrPort `json:"client"`
	TotalBytes int64          `json:"total_bytes"` // every byte received on the connection
	SHA256All  string         `json:"sha256_all"`  // hex SHA-256 of all of them in order
	Requests   int            `json:"requests"`    // records logged for the connection
	// Closed is how the client's side ended: "fin" (orderly close), "rst"
	// (reset), "timeout" (nothing within the drain timeout after the server
	// closed), "shutdown" (the recorder was stopped) or "error".
	Closed string `json:"closed"`
	// ServerClosed: the recorder closed first (HTTP Connection: close, SMTP
	// QUIT, a malformed request); Closed then tells how the client answered.
	ServerClosed bool   `json:"server_closed,omitempty"`
	Error        string `json:"error,omitempty"`
}

// Config configures a Server.
type Config struct {
	Mode Mode
	// Delay is waited after a request has been read and before the check
	// for early bytes and the answer, so that a pipelining client's next
	// request has time to arrive, and to give replay a slow server.
	Delay time.Duration
	// GreetDelay is waited before the SMTP banner.
	GreetDelay time.Duration
	// Log receives the JSON lines; each is written with a single Write.
	Log io.Writer
	// Logger gets operational errors; nil discards them.
	Logger *slog.Logger
	// DrainTimeout bounds how long the recorder waits for the client's FIN
	// after it closed its own side. Default 5s.
	DrainTimeout time.Duration
}

// Server accepts connections and records them.
type Server struct {
	cfg Config
	log *slog.Logger

	logMu    sync.Mutex
	nextConn atomic.Uint64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if _, err := ParseMode(string(cfg.Mode)); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		return nil, errors.New("recorder: no log writer")
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: lg, conns: map[net.Conn]struct{}{}}, nil
}

// Serve accepts connections on ln until ctx is done, then closes ln and all
// open connections (their summaries say "shutdown") and waits for their
// handlers. It returns nil after a cancellation, else the accept error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	defer stop()
	var err error
	for {
		var nc net.Conn
		nc, err = ln.Accept()
		if err != nil {
			break
		}
		s.mu.Lock()
		if ctx.Err() != nil {
			s.mu.Unlock()
			nc.Close()
			break
		}
		s.conns[nc] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			s.serveConn(ctx, nc)
			s.mu.Lock()
			delete(s.conns, nc)
			s.mu.Unlock()
		})
	}
	s.wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("recorder: accept: %w", err)
}

// conn is the per-connection state shared by the protocol handlers.
type conn struct {
	s      *Server
	ctx    context.Context
	nc     net.Conn
	id     uint64
	client netip.AddrPort
	in     *countingReader
	br     *bufio.Reader
	index  int
	// serverClosed is set when the protocol decided to close first.
	serverClosed bool
}

// countingReader sits between the socket and the bufio.Reader and hashes
// every byte received, for the connection summary.
type countingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.h.Write(p[:n])
		c.n += int64(n)
	}
	return n, err
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	c := &conn{s: s, ctx: ctx, nc: nc, id: s.nextConn.Add(1)}
	if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
		c.client = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	c.in = &countingReader{r: nc, h: sha256.New()}
	c.br = bufio.NewReaderSize(c.in, 64*1024)

	var endErr error
	switch s.cfg.Mode {
	case ModeHTTP:
		endErr = c.serveHTTP()
	case ModeSMTP:
		endErr = c.serveSMTP()
	case ModeRaw:
		endErr = c.serveRaw()
	}
	sum := ConnSummary{Conn: c.id, Client: c.client, Requests: c.index, ServerClosed: c.serverClosed}
	if c.serverClosed && endErr == nil {
		endErr = c.drain()
	}
	sum.Closed = classify(ctx, endErr)
	if sum.Closed == "error" {
		sum.Error = endErr.Error()
	}
	sum.TotalBytes = c.in.n
	sum.SHA256All = hex.EncodeToString(c.in.h.Sum(nil))
	s.writeLine(sum)
}

// drain half-closes the connection and reads until the client ends its
// side, so the summary can tell FIN from RST and count late bytes.
func (c *conn) drain() error {
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.DrainTimeout))
	_, err := io.Copy(io.Discard, c.br)
	if err == nil {
		err = io.EOF
	}
	return err
}

// classify names how a connection ended, from the error that ended it.
func classify(ctx context.Context, err error) string {
	var ne net.Error
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return "fin"
	case errors.Is(err, syscall.ECONNRESET):
		return "rst"
	case ctx.Err() != nil && (errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled)):
		return "shutdown"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "error"
}

// record logs one request record and advances the index.
func (c *conn) record(r Record) {
	r.Conn, r.Client, r.Index = c.id, c.client, c.index
	c.index++
	c.s.writeLine(r)
}

func (s *Server) writeLine(v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep "MAIL FROM:<a@b>" readable
	if err := enc.Encode(v); err != nil {
		s.log.Error("recorder: encode log line", "err", err)
		return
	}
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if _, err := s.cfg.Log.Write(buf.Bytes()); err != nil {
		s.log.Error("recorder: write log", "err", err)
	}
}

// wait sleeps d unless the server is stopping.
func (c *conn) wait(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

// pendingInput reports whether any byte from the client is waiting: in the
// bufio buffer or in the socket's receive queue. SIOCINQ asks the kernel
// without consuming anything (a read with an expired deadline would not
// even look: Go fails it before the syscall).
func (c *conn) pendingInput() bool {
	if c.br.Buffered() > 0 {
		return true
	}
	if sc, ok := c.nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			n, ierr := 0, error(nil)
			if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err == nil && ierr == nil {
				return n > 0
			}
		}
	}
	// Not a socket (tests with net.Pipe): peek with a short deadline.
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := c.br.Peek(1)
	_ = c.nc.SetReadDeadline(time.Time{})
	return err == nil
}

// reqHash accumulates the bytes of one request as the parser consumes them.
type reqHash struct {
	h hash.Hash
	n int64
}

func newReqHash() *reqHash { return &reqHash{h: sha256.New()} }

func (r *reqHash) Write(p []byte) (int, error) {
	r.h.Write(p)
	r.n += int64(len(p))
	return len(p), nil
}

func (r *reqHash) sum() string { return hex.EncodeToString(r.h.Sum(nil)) }

// readLine consumes one line including its LF into rh and returns a copy
// of it. Lines longer than max are consumed whole (their bytes must be
// hashed) but only the first max bytes are kept, and truncated is set.
func (c *conn) readLine(rh *reqHash, max int) (line []byte, truncated bool, err error) {
	n := 0
	for {
		frag, err := c.br.ReadSlice('\n')
		rh.Write(frag)
		n += len(frag)
		if keep := max - len(line); keep > 0 {
			line = append(line, frag[:min(keep, len(frag))]...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && n > 0 {
			err = io.ErrUnexpectedEOF
		}
		return line, n > max, err
	}
}

// serveRaw reads until the client ends and logs one record.
func (c *conn) serveRaw() error {
	_, err := io.Copy(io.Discard, c.br)
	r := Record{Bytes: c.in.n, SHA256: hex.EncodeToString(c.in.h.Sum(nil))}
	if err != nil && !errors.Is(err, syscall.ECONNRESET) && c.ctx.Err() == nil {
		r.Error = err.Error()
	}
	c.record(r)
	if err == nil {
		err = io.EOF
	}
	return err
}

// shorten keeps log lines readable.
func shorten(b []byte) string {
	s := string(b)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	return s
}

// OpenLog opens (appending) a log file, "-" meaning stdout.
func OpenLog(path string) (io.WriteCloser, error) {
	if path == "-" || path == "" {
		return nopCloser{os.Stdout}, nil
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
