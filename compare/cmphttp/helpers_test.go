package cmphttp

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/compare/cmptest"
)

// A record is one read or write of a connection, in wire order.
type record struct {
	client bool
	b      []byte
}

// result is what a conversation made of a connection's records.
type result struct {
	reqs []compare.Request
	ans  [][]compare.Answer // per Answers
}

// run feeds records to a conversation of p and to n Answers (each gets the
// same server bytes), cutting every record with cut.
func run(p compare.Protocol, lim compare.Limits, recs []record, n int, cut func(int) []int) result {
	c := p.New(lim)
	var as []compare.Answers
	for range n {
		as = append(as, c.Answers())
	}
	res := result{ans: make([][]compare.Answer, n)}
	for _, r := range recs {
		prev := 0
		for _, k := range append(cut(len(r.b)), len(r.b)) {
			piece := r.b[prev:k]
			prev = k
			if r.client {
				res.reqs = append(res.reqs, c.Requests(piece)...)
			} else {
				for i, a := range as {
					res.ans[i] = append(res.ans[i], a.Feed(piece)...)
				}
			}
		}
	}
	res.reqs = cmptest.Rendered(append(res.reqs, c.EndRequests()...))
	for i, a := range as {
		res.ans[i] = cmptest.Detailed(append(res.ans[i], a.End()...))
	}
	return res
}

func whole(int) []int { return nil }

func bytewise(n int) []int {
	var cuts []int
	for i := 1; i < n; i++ {
		cuts = append(cuts, i)
	}
	return cuts
}

func randomCuts(rng *rand.Rand) func(int) []int {
	return func(n int) []int {
		var cuts []int
		for i := 0; i < n; {
			i += 1 + rng.IntN(max(1, min(n, 3000)))
			if i < n {
				cuts = append(cuts, i)
			}
		}
		return cuts
	}
}

// same fails unless two results are identical.
// The size of a malformed message is what the decoder read before it
// gave up, which depends on how the bytes came: it is not compared.
func same(t *testing.T, what string, a, b result) {
	t.Helper()
	if !reflect.DeepEqual(sizeless(a), sizeless(b)) {
		t.Fatalf("%s differs:\n%s\n---\n%s", what, dump(a), dump(b))
	}
}

func dump(r result) string {
	var sb strings.Builder
	for _, q := range r.reqs {
		fmt.Fprintf(&sb, "req %d %q partial=%v noanswer=%v size=%d\n", q.ID, q.Key, q.Partial, q.NoAnswer, q.Size)
	}
	for i, as := range r.ans {
		for _, a := range as {
			fmt.Fprintf(&sb, "ans[%d] req=%d err=%v trunc=%v mal=%q size=%d %v\n", i, a.Req, a.Error, a.Truncated, a.Malformed, a.Size, a.Fields)
		}
	}
	return sb.String()
}

// field is the value of the field name, and whether there is one.
func field(a compare.Answer, name string) (string, bool) {
	for _, f := range a.Fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

func mustField(t *testing.T, a compare.Answer, name, want string) {
	t.Helper()
	got, ok := field(a, name)
	if !ok {
		t.Fatalf("no field %s in %v", name, a.Fields)
	}
	if got != want {
		t.Fatalf("field %s = %q, want %q", name, got, want)
	}
}

// checkFields checks the contract's rules on fields: unique names.
func checkFields(t testing.TB, as []compare.Answer) {
	t.Helper()
	for _, a := range as {
		seen := map[string]bool{}
		for _, f := range a.Fields {
			if seen[f.Name] {
				t.Fatalf("field %s twice in %v", f.Name, a.Fields)
			}
			seen[f.Name] = true
		}
	}
}

// recConn records a client connection's bytes.
type recConn struct {
	net.Conn
	mu  *sync.Mutex
	log *[]record
}

func (c recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	*c.log = append(*c.log, record{true, bytes.Clone(p)})
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		*c.log = append(*c.log, record{false, bytes.Clone(p[:n])})
		c.mu.Unlock()
	}
	return n, err
}

// recorder is an HTTP client whose connections are recorded.
type recorder struct {
	mu     sync.Mutex
	conns  [][]record
	client *http.Client
}

func newRecorder(t *testing.T, h2 bool) *recorder {
	r := &recorder{}
	tr := &http.Transport{
		DisableCompression: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			r.conns = append(r.conns, nil)
			return recConn{Conn: c, mu: &r.mu, log: &r.conns[len(r.conns)-1]}, nil
		},
	}
	if h2 {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	t.Cleanup(tr.CloseIdleConnections)
	r.client = &http.Client{Transport: tr}
	return r
}

// log is connection i's records (the slice header may move while the
// connection is in use, so it is read under the lock).
func (r *recorder) log(i int) []record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]record(nil), r.conns[i]...)
}

// readFixture reads an h2frame capture: records of 'C' or 'S', a 4-byte
// big-endian length and the bytes.
func readFixture(t testing.TB, name string) []record {
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var log []record
	for len(b) >= 5 {
		n := int(binary.BigEndian.Uint32(b[1:5]))
		log = append(log, record{b[0] == 'C', b[5 : 5+n]})
		b = b[5+n:]
	}
	return log
}

func sizeless(r result) result {
	out := result{reqs: slices.Clone(r.reqs)}
	for i := range out.reqs {
		if out.reqs[i].Key == "(malformed)" {
			out.reqs[i].Size = 0
			out.reqs[i].Sample = ""
		}
	}
	for _, as := range r.ans {
		as = slices.Clone(as)
		for i := range as {
			if as[i].Malformed != "" {
				as[i].Size = 0
				as[i].Sample = ""
			}
		}
		out.ans = append(out.ans, as)
	}
	return out
}
