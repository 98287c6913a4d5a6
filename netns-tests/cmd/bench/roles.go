package main

// Helper roles: the bench re-executes itself inside the lab's namespaces
// (`ip netns exec NS /proc/self/exe -role NAME ...`) to play the target
// servers and the kernel-TCP clients. Every role stops by itself: servers
// after -life, clients after -timeout.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/benchrole"
)

// uploadAnswer is what the upload sink answers after the client's EOF.
const uploadAnswer = "ok"

// httpAnswerSize is the size of the short-session answer, headers included.
const httpAnswerSize = 200

// httpRequest is the ~100-byte request of a short session, the same bytes
// in the capture and from the kernel client.
func httpRequest() []byte {
	r := "GET /bench/object HTTP/1.1\r\nHost: 198.18.1.1\r\nUser-Agent: stackcopy-bench\r\nAccept: */*\r\nX-Pad: 0\r\n\r\n"
	return []byte(r)
}

// httpAnswer is the httpAnswerSize-byte answer to httpRequest.
func httpAnswer() []byte {
	const head = "HTTP/1.1 200 OK\r\nServer: bench-sink\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: "
	for body := 0; body < httpAnswerSize; body++ {
		h := fmt.Sprintf("%s%d\r\n\r\n", head, body)
		if len(h)+body == httpAnswerSize {
			return append([]byte(h), bytes.Repeat([]byte("x"), body)...)
		}
	}
	panic("no answer of httpAnswerSize bytes")
}

// runRole runs the helper role name with its own flags; it returns the
// process exit status.
func runRole(name string, args []string) int {
	var err error
	switch name {
	case "sink":
		err = roleServer(name, args, serveUpload)
	case "http":
		err = roleServer(name, args, serveHTTP)
	case "upload":
		err = roleUpload(args)
	case "short":
		err = roleShort(args)
	case "idle":
		err = roleIdle(args)
	case "pcap":
		err = rolePcap(args)
	case "liveload":
		err = roleLiveLoad(args)
	default:
		err = fmt.Errorf("unknown role %q (sink, http, upload, short, idle, pcap, liveload)", name)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench -role %s: %v\n", name, err)
		return 1
	}
	return 0
}

// server is the state of a server role.
type server struct {
	answer []byte // httpAnswer(), built once

	mu    sync.Mutex
	conns map[*net.TCPConn]struct{}
	log   *json.Encoder
	logMu sync.Mutex

	accepted, open, answered, idleOpen, completed, failed, reset atomic.Int64
}

func (s *server) status() benchrole.ServerStatus {
	return benchrole.ServerStatus{
		Accepted: s.accepted.Load(), Open: s.open.Load(), Answered: s.answered.Load(), IdleOpen: s.idleOpen.Load(),
		Completed: s.completed.Load(), Failed: s.failed.Load(), Reset: s.reset.Load(),
	}
}

func (s *server) record(r benchrole.ConnRecord) {
	if s.log == nil {
		return
	}
	s.logMu.Lock()
	defer s.logMu.Unlock()
	_ = s.log.Encode(r)
}

// closeAll resets every open connection (SIGUSR1): a replayer killed
// without closing its sessions leaves them established forever otherwise.
func (s *server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.SetLinger(0)
		_ = c.Close()
		s.reset.Add(1)
	}
}

// serveFunc handles one accepted connection; it returns the client bytes
// read, the accept → EOF duration and whether it answered.
type serveFunc func(s *server, c *net.TCPConn, accepted time.Time) (n int64, d time.Duration, err error)

// roleServer listens on -listen and serves connections with serve until
// -life passes or SIGTERM.
func roleServer(name string, args []string, serve serveFunc) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on")
	logPath := fs.String("log", "", "JSON-lines file of finished connections")
	statusPath := fs.String("status", "", "status file rewritten every 100 ms")
	life := fs.Duration("life", 30*time.Minute, "exit after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s := &server{answer: httpAnswer(), conns: make(map[*net.TCPConn]struct{})}
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("log: %w", err)
		}
		defer f.Close()
		s.log = json.NewEncoder(f)
	}
	// No TCP keepalive: like most servers, and probes to idle forged
	// clients would be extra traffic in the idle-memory measurement.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp4", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *life)
	defer cancel()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for {
			select {
			case <-usr1:
				s.closeAll()
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	if *statusPath != "" {
		go writeStatus(ctx, *statusPath, s)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		at := time.Now()
		tc := c.(*net.TCPConn)
		s.accepted.Add(1)
		s.open.Add(1)
		s.mu.Lock()
		s.conns[tc] = struct{}{}
		s.mu.Unlock()
		go func() {
			n, d, err := serve(s, tc, at)
			s.mu.Lock()
			delete(s.conns, tc)
			s.mu.Unlock()
			tc.Close()
			s.open.Add(-1)
			r := benchrole.ConnRecord{Remote: tc.RemoteAddr().String(), Bytes: n, Seconds: d.Seconds(), OK: err == nil}
			if err != nil {
				r.Err = err.Error()
				s.failed.Add(1)
			} else {
				s.completed.Add(1)
			}
			s.record(r)
		}()
	}
}

func writeStatus(ctx context.Context, path string, s *server) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		b, _ := json.Marshal(s.status())
		tmp := path + ".tmp"
		if os.WriteFile(tmp, b, 0o644) == nil {
			_ = os.Rename(tmp, path)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// connTimeout bounds every read of a server connection: long enough for
// the idle-memory measurement, short enough that nothing hangs forever.
const connTimeout = 10 * time.Minute

// serveUpload reads and counts to EOF, then answers "ok" and closes.
func serveUpload(s *server, c *net.TCPConn, accepted time.Time) (int64, time.Duration, error) {
	buf := make([]byte, 1<<20)
	var n int64
	_ = c.SetReadDeadline(time.Now().Add(connTimeout))
	for {
		k, err := c.Read(buf)
		n += int64(k)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, time.Since(accepted), err
		}
	}
	d := time.Since(accepted)
	if _, err := c.Write([]byte(uploadAnswer)); err != nil {
		return n, d, err
	}
	s.answered.Add(1)
	return n, d, nil
}

// serveHTTP reads until "\r\n\r\n", answers httpAnswerSize bytes, reads to
// EOF and closes.
func serveHTTP(s *server, c *net.TCPConn, accepted time.Time) (int64, time.Duration, error) {
	_ = c.SetReadDeadline(time.Now().Add(connTimeout))
	buf := make([]byte, 0, 512)
	var n int64
	tmp := make([]byte, 512)
	for !bytes.Contains(buf, []byte("\r\n\r\n")) {
		k, err := c.Read(tmp)
		n += int64(k)
		buf = append(buf, tmp[:k]...)
		if err != nil {
			return n, time.Since(accepted), fmt.Errorf("reading request (%d bytes): %w", n, err)
		}
		if len(buf) > 64<<10 {
			return n, time.Since(accepted), errors.New("request head over 64 KiB")
		}
	}
	if _, err := c.Write(s.answer); err != nil {
		return n, time.Since(accepted), err
	}
	s.answered.Add(1)
	s.idleOpen.Add(1)
	defer s.idleOpen.Add(-1)
	for {
		k, err := c.Read(tmp)
		n += int64(k)
		if errors.Is(err, io.EOF) {
			return n, time.Since(accepted), nil
		}
		if err != nil {
			return n, time.Since(accepted), err
		}
	}
}

func printResult(r benchrole.ClientResult) error {
	return json.NewEncoder(os.Stdout).Encode(r)
}

// roleUpload: connect, write -bytes from a reused buffer, CloseWrite, read
// the answer to EOF.
func roleUpload(args []string) error {
	fs := flag.NewFlagSet("upload", flag.ContinueOnError)
	target := fs.String("connect", "", "target address")
	size := fs.Int64("bytes", 0, "bytes to upload")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	start := time.Now()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp4", *target)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + i>>8)
	}
	var sent int64
	for sent < *size {
		k := min(int64(len(buf)), *size-sent)
		n, err := c.Write(buf[:k])
		sent += int64(n)
		if err != nil {
			return fmt.Errorf("write after %d bytes: %w", sent, err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	ans, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	return printResult(benchrole.ClientResult{Seconds: time.Since(start).Seconds(), Bytes: sent, Completed: 1, Answer: string(ans)})
}

// shortSession is one kernel-TCP short session: connect, request, the whole
// answer, FIN, wait for the server's FIN, close; the same exchange as the
// captured sessions stackcopy replays.
func shortSession(ctx context.Context, d *net.Dialer, target string, req []byte) error {
	c, err := d.DialContext(ctx, "tcp4", target)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write(req); err != nil {
		return err
	}
	ans := make([]byte, httpAnswerSize)
	if _, err := io.ReadFull(c, ans); err != nil {
		return fmt.Errorf("answer: %w", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	if n, err := c.Read(ans[:1]); n != 0 || !errors.Is(err, io.EOF) {
		return fmt.Errorf("waiting for the server's FIN: %d bytes, %v", n, err)
	}
	return nil
}

// roleShort runs -n short sessions at once, one goroutine each.
func roleShort(args []string) error {
	fs := flag.NewFlagSet("short", flag.ContinueOnError)
	target := fs.String("connect", "", "target address")
	n := fs.Int("n", 0, "sessions")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req := httpRequest()
	var d net.Dialer
	var wg sync.WaitGroup
	var mu sync.Mutex
	var res benchrole.ClientResult
	start := time.Now()
	for range *n {
		wg.Go(func() {
			err := shortSession(ctx, &d, *target, req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Failed++
				if len(res.Errors) < 5 {
					res.Errors = append(res.Errors, err.Error())
				}
				return
			}
			res.Completed++
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	return printResult(res)
}

// roleIdle opens -n connections from the -src addresses (round robin),
// each sending the request and reading the answer, then holds them idle
// until SIGTERM or -hold. It needs no goroutine per idle connection, as an
// epoll-based client would not either. It writes "ready N" to stdout when
// all are established.
func roleIdle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	target := fs.String("connect", "", "target address")
	n := fs.Int("n", 0, "connections")
	srcList := fs.String("src", "", "comma-separated source addresses")
	hold := fs.Duration("hold", 2*time.Minute, "exit after holding this long")
	timeout := fs.Duration("timeout", time.Minute, "give up opening after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var srcs []netip.Addr
	for _, s := range strings.Split(*srcList, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-src: %w", err)
		}
		srcs = append(srcs, a)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	octx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req := httpRequest()
	conns := make([]net.Conn, *n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 64 {
		wg.Go(func() {
			for i := range jobs {
				c, err := openIdle(octx, srcs[i%len(srcs)], *target, req)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("connection %d from %v: %w", i, srcs[i%len(srcs)], err)
				}
				conns[i] = c
				mu.Unlock()
			}
		})
	}
	for i := range *n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(w, "ready %d\n", len(conns))
	if err := w.Flush(); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-time.After(*hold):
	}
	for _, c := range conns {
		c.Close()
	}
	return nil
}

func openIdle(ctx context.Context, src netip.Addr, target string, req []byte) (net.Conn, error) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), KeepAlive: -1}
	c, err := d.DialContext(ctx, "tcp4", target)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(c, make([]byte, httpAnswerSize)); err != nil {
		c.Close()
		return nil, fmt.Errorf("answer: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// rolePcap writes one of the bench's synthetic captures, to reproduce a
// workload by hand: bench -role pcap -kind idle -n 1000 -out idle.pcap
func rolePcap(args []string) error {
	fs := flag.NewFlagSet("pcap", flag.ContinueOnError)
	kind := fs.String("kind", "short", "upload, short or idle")
	n := fs.Int("n", 1000, "sessions (short, idle) or MiB (upload)")
	out := fs.String("out", "", "output pcap")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch *kind {
	case "upload":
		return writeUploadPcap(*out, int64(*n)<<20)
	case "short":
		return writeShortPcap(*out, *n)
	case "idle":
		return writeIdlePcap(*out, *n, 40*time.Second)
	}
	return fmt.Errorf("unknown -kind %q", *kind)
}
