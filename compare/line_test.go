package compare

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// lineProto is a tiny protocol for the tests. Requests are lines "VERB
// arg...\n", keyed by the whole line; "NOP ...\n" expects no answer and
// "BOOM\n" makes the decoder panic. Answers are lines: "VAL k=v k=v\n"
// (fields k; a word without '=' is the field "value"), "ERR ...\n" (an
// error), "PUSH ...\n" (unsolicited); anything else is malformed and stops
// the stream's cutting. The n-th answer answers the n-th request that
// expects one; an answer ahead of the requests guesses the ID (as a real
// decoder of a pipelined protocol could not, which is what the early
// answers of the collector are for).
type lineProto struct{}

func (lineProto) Name() string { return "line" }

func (lineProto) New(lim Limits) Conversation { return &lineConv{lim: lim} }

type lineConv struct {
	lim     Limits
	buf     []byte
	next    int
	answerd []int // IDs of requests that expect an answer, in order
}

func (c *lineConv) Requests(b []byte) []Request {
	c.buf = append(c.buf, b...)
	var out []Request
	for {
		i := bytes.IndexByte(c.buf, '\n')
		if i < 0 {
			return out
		}
		line := string(c.buf[:i])
		c.buf = c.buf[i+1:]
		if line == "BOOM" {
			panic("boom")
		}
		r := Request{ID: c.next, Key: line, Size: i + 1, Sample: Sample([]byte(line), c.lim.Sample)}
		c.next++
		if strings.HasPrefix(line, "NOP") {
			r.NoAnswer = true
		} else {
			c.answerd = append(c.answerd, r.ID)
		}
		out = append(out, r)
	}
}

func (c *lineConv) EndRequests() []Request {
	if len(c.buf) == 0 {
		return nil
	}
	r := Request{ID: c.next, Key: string(c.buf), Partial: true, Size: len(c.buf), Sample: string(c.buf)}
	c.next++
	c.buf = nil
	c.answerd = append(c.answerd, r.ID)
	return []Request{r}
}

func (c *lineConv) Answers() Answers { return &lineAnswers{c: c} }

type lineAnswers struct {
	c      *lineConv
	buf    []byte
	n      int
	broken bool
}

func (a *lineAnswers) id() int {
	k := a.n
	a.n++
	if k < len(a.c.answerd) {
		return a.c.answerd[k]
	}
	last := -1
	if len(a.c.answerd) > 0 {
		last = a.c.answerd[len(a.c.answerd)-1]
	}
	return last + k - len(a.c.answerd) + 1
}

func (a *lineAnswers) Feed(b []byte) []Answer {
	a.buf = append(a.buf, b...)
	var out []Answer
	for !a.broken {
		i := bytes.IndexByte(a.buf, '\n')
		if i < 0 {
			break
		}
		line := string(a.buf[:i])
		a.buf = a.buf[i+1:]
		out = append(out, a.answer(line, i+1))
	}
	return out
}

func (a *lineAnswers) answer(line string, size int) Answer {
	verb, rest, _ := strings.Cut(line, " ")
	ans := Answer{Size: size, Sample: line}
	switch verb {
	case "PUSH":
		ans.Req = -1
		return ans
	case "ERR":
		ans.Error = true
		ans.Fields = []Field{{"error", rest}}
	case "VAL":
		for _, w := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(w, "="); ok {
				ans.Fields = append(ans.Fields, Field{k, v})
			} else {
				ans.Fields = append(ans.Fields, Field{"value", w})
			}
		}
	default:
		a.broken = true
		ans.Malformed = "bad verb " + verb
		ans.Fields = []Field{{"bytes", Value([]byte(line))}}
	}
	ans.Req = a.id()
	return ans
}

func (a *lineAnswers) End() []Answer {
	if len(a.buf) == 0 || a.broken {
		return nil
	}
	ans := a.answer(string(a.buf), len(a.buf))
	ans.Truncated = true
	a.buf = nil
	return []Answer{ans}
}

var (
	cli = netip.MustParseAddrPort("10.0.0.1:40000")
	srv = netip.MustParseAddrPort("10.0.0.2:7000")
	t0  = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func newCol(cfg Config) *Collector {
	cfg.Protocols = append(cfg.Protocols, lineProto{})
	return NewCollector(cfg)
}

// conv runs one whole connection: the client's lines, then each side's.
func conv(c *Collector, client string, sides ...string) {
	cn := c.Open(cli, srv)
	cn.Decide("line")
	cn.Client([]byte(client), t0)
	cn.EndClient()
	for s, b := range sides {
		if b != "" {
			cn.Server(Side(s), []byte(b), t0)
		}
		cn.End(Side(s))
	}
	if len(sides) < 2 {
		cn.End(Target)
	}
}

func groupOf(t *testing.T, r *Report, key string) *Group {
	t.Helper()
	for i := range r.Groups {
		if r.Groups[i].Key == key {
			return &r.Groups[i]
		}
	}
	t.Fatalf("no group %q in %+v", key, r.Groups)
	return nil
}
