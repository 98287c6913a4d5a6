package recorder

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

const (
	maxLine        = 64 << 10 // one request line, header line or chunk-size line
	maxHeaderBytes = 1 << 20  // all header lines of one request
)

// errBadRequest marks requests the recorder cannot parse; it answers 400
// and closes, like a real server would.
var errBadRequest = errors.New("bad request")

// errLineTooLong marks a header or command line over maxLine.
var errLineTooLong = errors.New("line too long")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// httpReq is what the recorder needs to know about one request.
type httpReq struct {
	line      []byte
	method    string
	proto     string
	keepAlive bool
	body      *reqHash // decoded body; nil without a body
}

// serveHTTP parses requests from the raw byte stream, logs a record per
// request and answers each with 200 and a short text body naming the
// digest. It returns the error that ended the connection (nil when the
// recorder decided to close).
func (c *conn) serveHTTP() error {
	for {
		// Between requests a clean EOF or a reset ends the connection
		// without a record.
		if _, err := c.br.Peek(1); err != nil {
			return err
		}
		rh := newReqHash()
		req, err := c.readHTTPRequest(rh)
		rec := Record{Bytes: rh.n, SHA256: rh.sum(), Line: shorten(req.line)}
		if req.body != nil {
			rec.BodyBytes, rec.BodySHA256 = req.body.n, req.body.sum()
		}
		if err != nil {
			rec.Error = err.Error()
			c.record(rec)
			if errors.Is(err, errBadRequest) {
				c.serverClosed = true
				msg := err.Error() + "\n"
				_, werr := io.WriteString(c.nc, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: "+
					strconv.Itoa(len(msg))+"\r\n\r\n"+msg)
				return werr
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return io.EOF // the client sent FIN mid-request
			}
			return err
		}
		if err := c.wait(c.s.cfg.Delay); err != nil {
			c.record(rec)
			return err
		}
		rec.Early = c.pendingInput()
		// Logged before the answer, so a client that has its answer can
		// rely on the record being in the log.
		idx := c.index
		c.record(rec)
		if err := c.writeHTTPResponse(req, idx, rec); err != nil {
			return err
		}
		if !req.keepAlive {
			c.serverClosed = true
			return nil
		}
	}
}

// readHTTPRequest consumes one request (line, headers, body) into rh.
func (c *conn) readHTTPRequest(rh *reqHash) (httpReq, error) {
	var req httpReq
	var line []byte
	var err error
	// RFC 9112 §2.2: ignore at least one empty line before the request
	// line (a client's stray CRLF after a body). Bounded.
	for range 4 {
		var long bool
		line, long, err = c.readLine(rh, maxLine)
		req.line = line
		if err == nil && long {
			err = errLineTooLong
		}
		if err != nil {
			return req, lineErr("request line", err)
		}
		if len(bytes.TrimRight(line, "\r\n")) > 0 {
			break
		}
	}
	parts := strings.Fields(string(line))
	if len(parts) != 3 || !strings.HasPrefix(parts[2], "HTTP/1.") {
		return req, badRequest("malformed request line %q", shorten(line))
	}
	req.method, req.proto = parts[0], parts[2]
	req.keepAlive = req.proto != "HTTP/1.0"

	contentLength := int64(-1)
	chunked, expectContinue := false, false
	headerBytes := len(line)
	for {
		hl, long, err := c.readLine(rh, maxLine)
		if err == nil && long {
			err = errLineTooLong
		}
		if err != nil {
			return req, lineErr("header", err)
		}
		if headerBytes += len(hl); headerBytes > maxHeaderBytes {
			return req, badRequest("headers over %d bytes", maxHeaderBytes)
		}
		t := bytes.TrimRight(hl, "\r\n")
		if len(t) == 0 {
			break
		}
		name, value, ok := bytes.Cut(t, []byte(":"))
		if !ok {
			return req, badRequest("malformed header %q", shorten(t))
		}
		v := strings.TrimSpace(string(value))
		switch strings.ToLower(strings.TrimSpace(string(name))) {
		case "content-length":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || (contentLength >= 0 && n != contentLength) {
				return req, badRequest("bad Content-Length %q", v)
			}
			contentLength = n
		case "transfer-encoding":
			codings := strings.Split(strings.ToLower(v), ",")
			if strings.TrimSpace(codings[len(codings)-1]) != "chunked" {
				return req, badRequest("unsupported Transfer-Encoding %q", v)
			}
			chunked = true
		case "connection":
			for _, tok := range strings.Split(strings.ToLower(v), ",") {
				switch strings.TrimSpace(tok) {
				case "close":
					req.keepAlive = false
				case "keep-alive":
					req.keepAlive = true
				}
			}
		case "expect":
			expectContinue = strings.EqualFold(v, "100-continue")
		}
	}
	if !chunked && contentLength <= 0 {
		return req, nil
	}
	// Like nginx: tell a client that waits for it to send the body. Replay
	// sees this as a server turn, as it was in the capture.
	if expectContinue && req.proto == "HTTP/1.1" {
		if _, err := io.WriteString(c.nc, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return req, err
		}
	}
	req.body = newReqHash()
	if chunked {
		return req, c.readChunked(rh, req.body)
	}
	if _, err := io.CopyN(io.MultiWriter(rh, req.body), c.br, contentLength); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return req, fmt.Errorf("body: %d of %d bytes: %w", req.body.n, contentLength, err)
	}
	return req, nil
}

// readChunked consumes a chunked body: framing into rh, data into rh and
// body.
func (c *conn) readChunked(rh, body *reqHash) error {
	for {
		line, long, err := c.readLine(rh, maxLine)
		if err == nil && long {
			err = errLineTooLong
		}
		if err != nil {
			return lineErr("chunk size", err)
		}
		sizeStr, _, _ := strings.Cut(strings.TrimRight(string(line), "\r\n"), ";")
		size, err := strconv.ParseUint(strings.TrimSpace(sizeStr), 16, 63)
		if err != nil {
			return badRequest("bad chunk size %q", shorten(line))
		}
		if size == 0 {
			break
		}
		if _, err := io.CopyN(io.MultiWriter(rh, body), c.br, int64(size)); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("chunk data: %w", err)
		}
		crlf, _, err := c.readLine(rh, maxLine)
		if err != nil {
			return lineErr("chunk end", err)
		}
		if len(bytes.TrimRight(crlf, "\r\n")) != 0 {
			return badRequest("chunk not followed by CRLF")
		}
	}
	// Trailer section, ended by an empty line.
	for n := 0; ; {
		tl, _, err := c.readLine(rh, maxLine)
		if err != nil {
			return lineErr("trailer", err)
		}
		if len(bytes.TrimRight(tl, "\r\n")) == 0 {
			return nil
		}
		if n += len(tl); n > maxHeaderBytes {
			return badRequest("trailers over %d bytes", maxHeaderBytes)
		}
	}
}

// lineErr names where a line read failed; an over-long line is the
// client's fault (400), anything else is the connection's.
func lineErr(what string, err error) error {
	if errors.Is(err, errLineTooLong) {
		return badRequest("%s over %d bytes", what, maxLine)
	}
	if err == io.EOF {
		// EOF after part of a request was consumed (serveHTTP peeked one
		// byte before starting) is a truncated request.
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s: %w", what, err)
}

// writeHTTPResponse answers 200 with a body naming what was recorded.
func (c *conn) writeHTTPResponse(req httpReq, index int, rec Record) error {
	body := fmt.Sprintf("conn=%d index=%d bytes=%d sha256=%s\n", c.id, index, rec.Bytes, rec.SHA256)
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\nServer: stackcopy-recorder\r\nContent-Type: text/plain\r\nContent-Length: ")
	b.WriteString(strconv.Itoa(len(body)))
	b.WriteString("\r\n")
	switch {
	case !req.keepAlive:
		b.WriteString("Connection: close\r\n")
	case req.proto == "HTTP/1.0":
		b.WriteString("Connection: keep-alive\r\n")
	}
	b.WriteString("\r\n")
	if req.method != "HEAD" {
		b.WriteString(body)
	}
	// One write: the answer leaves in as few segments as possible.
	_, err := io.WriteString(c.nc, b.String())
	return err
}
