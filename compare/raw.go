package compare

import (
	"strconv"
)

// rawName is the raw fallback's protocol name in reports.
const rawName = "tcp"

// rawProtocol compares a connection whose protocol no decoder knows: the
// client's bytes are one request, each server's bytes one answer, compared
// by length and hash.
type rawProtocol struct {
	port uint16 // the server's port, which names the group
}

func (p rawProtocol) Name() string { return rawName }

func (p rawProtocol) New(lim Limits) Conversation {
	return &rawConv{port: p.port, lim: lim}
}

// rawConv is one raw connection. Its one request (ID 0) is emitted when
// the first server byte arrives (the client's bytes so far are the request)
// or when the client's stream ends.
type rawConv struct {
	port    uint16
	lim     Limits
	size    int
	sample  []byte
	emitted bool
}

func (c *rawConv) Requests(b []byte) []Request {
	if !c.emitted {
		c.size += len(b)
		c.sample = keep(c.sample, b, c.lim.Sample)
	}
	return nil
}

func (c *rawConv) EndRequests() []Request { return c.emit() }

// emit returns the connection's one request the first time.
func (c *rawConv) emit() []Request {
	if c.emitted {
		return nil
	}
	c.emitted = true
	r := Request{
		ID:     0,
		Key:    rawName + "/" + strconv.Itoa(int(c.port)),
		Size:   c.size,
		Sample: sampleOf(c.sample, c.size, c.lim.Sample),
	}
	c.sample = nil
	return []Request{r}
}

func (c *rawConv) Answers() Answers {
	return &rawAnswers{lim: c.lim, h: NewHasher()}
}

type rawAnswers struct {
	lim    Limits
	h      Hasher
	sample []byte
	ended  bool
}

func (a *rawAnswers) Feed(b []byte) []Answer {
	a.h.Feed(b)
	a.sample = keep(a.sample, b, a.lim.Sample)
	return nil
}

func (a *rawAnswers) End() []Answer {
	if a.ended {
		return nil
	}
	a.ended = true
	ans := Answer{
		Req: 0,
		Fields: []Field{
			{Name: "bytes", Value: a.h.Value()},
			{Name: "length", Value: strconv.Itoa(a.h.Len())},
		},
		Size:   a.h.Len(),
		Sample: sampleOf(a.sample, a.h.Len(), a.lim.Sample),
	}
	a.sample = nil
	return []Answer{ans}
}

// keep appends to dst what of b fits in limit bytes (a copy).
func keep(dst, b []byte, limit int) []byte {
	if room := limit - len(dst); room > 0 {
		if len(b) > room {
			b = b[:room]
		}
		dst = append(dst, b...)
	}
	return dst
}

// sampleOf renders the first bytes kept of a stream of total bytes.
func sampleOf(kept []byte, total, limit int) string {
	s := Sample(kept, limit)
	if total > len(kept) && len(kept) >= limit {
		s += "… (" + strconv.Itoa(total-len(kept)) + " more bytes)"
	}
	return s
}
