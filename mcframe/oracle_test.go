package mcframe

// The reference: gomemcache, a client, reads the same answers, and the
// framer must end a get answer where gomemcache stops reading it; the
// commands gomemcache sends must be the framer's requests.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stackcopy/stackcopy/internal/framekit/framekittest"
)

// gomc runs op with a gomemcache client whose connection reads answer;
// it returns what the client sent, how far it read, and its error.
func gomc(answer []byte, op func(*memcache.Client) error) (sent []byte, read int, err error) {
	bc := &framekittest.ByteConn{Data: answer}
	c := memcache.New("127.0.0.1:11211")
	c.DialContext = func(context.Context, string, string) (net.Conn, error) { return bc, nil }
	err = op(c)
	return bc.Out.Bytes(), bc.Pos, err
}

// sane leaves out answers with VALUE lengths gomemcache would allocate
// before reading.
func sane(data []byte) bool {
	for i := 0; i+6 < len(data); i++ {
		if (i == 0 || data[i-1] == '\n') && bytes.HasPrefix(data[i:], []byte("VALUE ")) {
			line := data[i:]
			if j := bytes.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			for _, f := range bytes.Fields(line) {
				if len(f) > 5 {
					return false
				}
			}
		}
	}
	return true
}

// traceServer feeds data to f's server side a byte at a time and reports
// the offsets where Answers moved and where Err appeared (-1: never).
func traceServer(f *Framer, data []byte) (ends []int, errAt int) {
	errAt = -1
	before := f.Answers()
	for i := range data {
		f.Server(data[i : i+1])
		for a := f.Answers(); before < a; before++ {
			ends = append(ends, i+1)
		}
		if errAt < 0 && f.Err() != nil {
			errAt = i + 1
		}
	}
	return ends, errAt
}

// checkGet runs data as the answer to a gomemcache GetMulti and to the
// framer, and compares where they end it.
func checkGet(data []byte, keys []string) error {
	if !sane(data) {
		return nil
	}
	sent, read, err := gomc(data, func(c *memcache.Client) error {
		_, err := c.GetMulti(keys)
		return err
	})
	f := New()
	f.Client(sent)
	if f.Requests() != 1 || f.Err() != nil {
		return fmt.Errorf("gomemcache sent %q: framer requests %d err %v", sent, f.Requests(), f.Err())
	}
	ends, errAt := traceServer(f, data)
	switch {
	case err == nil:
		if len(ends) == 0 || ends[0] != read {
			return fmt.Errorf("gomemcache read the answer to %d, framer ends %v (err %v at %d)", read, ends, f.Err(), errAt)
		}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		// The framer may fail early: it checks the CRLF after a data
		// block byte by byte, gomemcache once the block is in.
		if len(ends) > 0 {
			return fmt.Errorf("gomemcache wants more (%v), framer ends %v", err, ends)
		}
	default:
		// gomemcache rejects the answer at the line it stopped in; the
		// framer ends it there only for an error line (which answers the
		// request), or fails.
		if len(ends) > 0 {
			start := bytes.LastIndexByte(data[:ends[0]-1], '\n') + 1
			line := data[start:ends[0]]
			if ends[0] != read || !isError(bytes.Fields(line)[0]) {
				return fmt.Errorf("gomemcache fails (%v), framer ends the answer at %d", err, ends[0])
			}
		} else if f.Err() == nil {
			return fmt.Errorf("gomemcache fails (%v) at %d, framer does not", err, read)
		}
	}
	return nil
}

// checkOps runs gomemcache's other commands against a canned one-line
// answer: each sends one request, which the framer counts, and reads one
// line, where the framer ends the answer.
func checkOps(rng *rand.Rand) error {
	item := &memcache.Item{Key: "k", Value: bytes.Repeat([]byte("v"), rng.IntN(100)), Flags: 7, Expiration: 60}
	ops := []struct {
		answer string
		op     func(*memcache.Client) error
	}{
		{"STORED\r\n", func(c *memcache.Client) error { return c.Set(item) }},
		{"NOT_STORED\r\n", func(c *memcache.Client) error { return c.Add(item) }},
		{"STORED\r\n", func(c *memcache.Client) error { return c.Replace(item) }},
		{"STORED\r\n", func(c *memcache.Client) error { return c.Append(item) }},
		{"STORED\r\n", func(c *memcache.Client) error { return c.Prepend(item) }},
		{"EXISTS\r\n", func(c *memcache.Client) error { return c.CompareAndSwap(item) }},
		{"DELETED\r\n", func(c *memcache.Client) error { return c.Delete("k") }},
		{"NOT_FOUND\r\n", func(c *memcache.Client) error { _, err := c.Increment("k", 3); return err }},
		{"12\r\n", func(c *memcache.Client) error { _, err := c.Decrement("k", 3); return err }},
		{"TOUCHED\r\n", func(c *memcache.Client) error { return c.Touch("k", 10) }},
		{"OK\r\n", func(c *memcache.Client) error { return c.FlushAll() }},
		{"OK\r\n", func(c *memcache.Client) error { return c.DeleteAll() }},
		{"VALUE k 7 3 99\r\nabc\r\nEND\r\n", func(c *memcache.Client) error { _, err := c.Get("k"); return err }},
		{"VALUE k 7 3\r\nabc\r\nEND\r\n", func(c *memcache.Client) error { _, err := c.GetAndTouch("k", 5); return err }},
	}
	for i, o := range ops {
		sent, read, err := gomc([]byte(o.answer), o.op)
		if err != nil && !errors.Is(err, memcache.ErrNotStored) && !errors.Is(err, memcache.ErrCASConflict) && !errors.Is(err, memcache.ErrCacheMiss) {
			return fmt.Errorf("op %d: gomemcache: %v", i, err)
		}
		f := New()
		f.Client(sent)
		ends, _ := traceServer(f, []byte(o.answer))
		if f.Requests() != 1 || len(ends) != 1 || ends[0] != read || f.Err() != nil {
			return fmt.Errorf("op %d: gomemcache sent %q and read %d; framer requests %d ends %v err %v", i, sent, read, f.Requests(), ends, f.Err())
		}
	}
	return nil
}
