package cmpresp

import (
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/compare/cmptest"
)

// freePort finds a free loopback port.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// exchange sends the client bytes and reads what the server answers until
// it has been quiet for a while.
func exchange(t *testing.T, addr string, client string) []byte {
	t.Helper()
	var conn net.Conn
	var err error
	for range 50 { // the server may still be starting
		if conn, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(client)); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 64<<10)
	for {
		conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got
		}
	}
}

// TestLive runs a session against a real redis-server on loopback, when
// one is installed.
func TestLive(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil || testing.Short() {
		t.Skip("redis-server not installed (or -short)")
	}
	port := freePort(t)
	dir := t.TempDir()
	srv := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--enable-debug-command", "yes", "--dir", dir)
	if err := srv.Start(); err != nil {
		t.Skipf("redis-server: %v", err)
	}
	t.Cleanup(func() {
		srv.Process.Kill() // by its PID: only the server this test started
		srv.Wait()
	})
	client := strings.Join([]string{
		cmd("HELLO", "3"), cmd("SET", "k", "v"), cmd("GET", "k"), cmd("GET", "missing"),
		cmd("HSET", "h", "a", "1", "b", "2"), cmd("HGETALL", "h"), cmd("SADD", "s", "x", "y", "z"), cmd("SMEMBERS", "s"),
		cmd("LPUSH", "l", "x"), cmd("GET", "l"),
		cmd("DEBUG", "PROTOCOL", "attrib"), cmd("DEBUG", "PROTOCOL", "bignum"), cmd("DEBUG", "PROTOCOL", "true"),
		cmd("DEBUG", "PROTOCOL", "double"), cmd("DEBUG", "PROTOCOL", "verbatim"), cmd("DEBUG", "PROTOCOL", "null"),
		cmd("CLIENT", "REPLY", "OFF"), cmd("SET", "a", "1"), cmd("CLIENT", "REPLY", "ON"),
		cmd("CLIENT", "REPLY", "SKIP"), cmd("GET", "k"), cmd("PING"),
		cmd("SUBSCRIBE", "c"), cmd("PING"), cmd("UNSUBSCRIBE"),
		cmd("HELLO", "2"), cmd("SUBSCRIBE", "c", "d"), cmd("PING"), cmd("RESET"), "PING\r\n",
		cmd("EVALSHA", "0000000000000000000000000000000000000000", "0"), cmd("AUTH", "secret"),
	}, "")
	server := exchange(t, "127.0.0.1:"+strconv.Itoa(port), client)
	c := Protocol().New(compare.DefaultLimits)
	a := [2]compare.Answers{c.Answers(), c.Answers()}
	r := cmptest.Result{Answers: make([][]compare.Answer, 2), Reqs: cmptest.Rendered(append(c.Requests([]byte(client)), c.EndRequests()...))}
	for i := range a {
		r.Answers[i] = cmptest.Detailed(append(a[i].Feed(server), a[i].End()...))
	}
	cmptest.CheckAnswered(t, "live", r)
	byReq := map[int]string{}
	for _, x := range r.Answers[0] {
		if x.Req >= 0 {
			byReq[x.Req] = fields(x)
		}
	}
	for id, w := range map[int]string{
		2:  "type=bulk; value=v",
		3:  "type=null; value=_",
		5:  `type=map; length=2; value={"a": "1", "b": "2"}`,
		7:  `type=set; length=3; value=~["x", "y", "z"]`,
		9:  "type=error; error=WRONGTYPE; value=WRONGTYPE Operation against a key holding the wrong kind of value",
		10: `type=bulk; value=Some real reply following the attribute; attribute={"key-popularity": ["key:123", 90]}`,
		11: "type=bignum; value=1234567999999999999999999999999999999",
		12: "type=boolean; value=true",
		14: `type=verbatim; value="txt:This is a verbatim\nstring"`,
		15: "type=null; value=_",
		18: "type=simple; value=OK",
		21: "type=simple; value=PONG",
		26: `type=array; length=3; value=["subscribe", "c", 1]`,
		28: "type=simple; value=RESET",
		29: "type=simple; value=PONG",
		30: "type=error; error=NOSCRIPT; value=NOSCRIPT No matching script. Please use EVAL.",
	} {
		if byReq[id] != w {
			t.Errorf("request %d (%s): %q, want %q", id, r.Reqs[id].Sample, byReq[id], w)
		}
	}
	if !strings.HasPrefix(byReq[13], "type=double; value=3.14") {
		t.Errorf("double: %q", byReq[13])
	}
	if r.Reqs[31].Sample != "AUTH [redacted]" {
		t.Errorf("AUTH sample %q", r.Reqs[31].Sample)
	}
	if testing.Verbose() {
		for _, x := range r.Answers[0] {
			t.Logf("%d %s", x.Req, fields(x))
		}
	}
}
