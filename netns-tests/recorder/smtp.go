package recorder

import (
	"bytes"
	"errors"
	"io"
	"strings"
)

// serveSMTP speaks just enough SMTP for `curl smtp://` and replays of it:
// banner after GreetDelay, then one record per command line and one for
// the DATA body (its lines up to and including the terminating ".\r\n",
// dot-stuffing untouched: the bytes as they arrived).
func (c *conn) serveSMTP() error {
	if err := c.wait(c.s.cfg.GreetDelay); err != nil {
		return err
	}
	// A client that speaks before the banner did not wait for the server's
	// turn: the replay of a server-first protocol went wrong.
	bannerEarly := c.pendingInput()
	if _, err := io.WriteString(c.nc, "220 recorder ESMTP stackcopy lab\r\n"); err != nil {
		return err
	}
	first := true
	for {
		if _, err := c.br.Peek(1); err != nil {
			return err
		}
		rh := newReqHash()
		line, long, err := c.readLine(rh, maxLine)
		rec := Record{Bytes: rh.n, SHA256: rh.sum(), Line: shorten(line)}
		if err != nil {
			rec.Error = err.Error()
			c.record(rec)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return io.EOF // FIN in the middle of a command line
			}
			return err
		}
		if long {
			rec.Error = errLineTooLong.Error()
			c.record(rec)
			if _, err := io.WriteString(c.nc, "500 5.5.2 line too long\r\n"); err != nil {
				return err
			}
			continue
		}
		verb, _, _ := strings.Cut(strings.TrimRight(string(line), "\r\n"), " ")
		verb = strings.ToUpper(verb)
		early, err := c.afterRequest()
		if first {
			early = early || bannerEarly
			first = false
		}
		rec.Early = early
		c.record(rec)
		if err != nil {
			return err
		}
		var reply string
		switch verb {
		case "EHLO":
			reply = "250-recorder\r\n250 8BITMIME\r\n"
		case "HELO":
			reply = "250 recorder\r\n"
		case "MAIL", "RCPT", "RSET", "NOOP":
			reply = "250 2.0.0 OK\r\n"
		case "DATA":
			reply = "354 End data with <CR><LF>.<CR><LF>\r\n"
		case "QUIT":
			reply = "221 2.0.0 Bye\r\n"
		default:
			reply = "502 5.5.2 command not implemented\r\n"
		}
		if _, err := io.WriteString(c.nc, reply); err != nil {
			return err
		}
		switch verb {
		case "QUIT":
			c.serverClosed = true
			return nil
		case "DATA":
			if err := c.readSMTPData(); err != nil {
				return err
			}
		}
	}
}

// readSMTPData records the message body, answers 250 and returns.
func (c *conn) readSMTPData() error {
	rh := newReqHash()
	var endErr error
	for {
		line, long, err := c.readLine(rh, maxLine)
		if err != nil {
			endErr = err
			break
		}
		// A truncated copy of a long line cannot be the terminator.
		if !long && (bytes.Equal(line, []byte(".\r\n")) || bytes.Equal(line, []byte(".\n"))) {
			break
		}
	}
	rec := Record{Bytes: rh.n, SHA256: rh.sum(), Line: "<data>"}
	if endErr != nil {
		rec.Error = "data: " + endErr.Error()
		c.record(rec)
		if errors.Is(endErr, io.ErrUnexpectedEOF) {
			return io.EOF
		}
		return endErr
	}
	early, err := c.afterRequest()
	rec.Early = early
	c.record(rec)
	if err != nil {
		return err
	}
	_, err = io.WriteString(c.nc, "250 2.0.0 OK: queued\r\n")
	return err
}

// afterRequest waits the response delay and reports whether the client
// already sent more.
func (c *conn) afterRequest() (early bool, err error) {
	if err := c.wait(c.s.cfg.Delay); err != nil {
		return false, err
	}
	return c.pendingInput(), nil
}
