package cmpmc

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/compare/cmptest"
)

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
// it has been quiet for a while (or closed the connection).
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

// TestLive runs a session against a real memcached on loopback, when one
// is installed.
func TestLive(t *testing.T) {
	bin, err := exec.LookPath("memcached")
	if err != nil || testing.Short() {
		t.Skip("memcached not installed (or -short)")
	}
	port := freePort(t)
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached will not run as root without it
	}
	srv := exec.Command(bin, args...)
	if err := srv.Start(); err != nil {
		t.Skipf("memcached: %v", err)
	}
	t.Cleanup(func() {
		srv.Process.Kill() // by its PID: only the server this test started
		srv.Wait()
	})
	client := strings.Join([]string{
		"set a 3 0 2\r\nhi\r\n", "get a b a\r\n", "gets a\r\n", "add a 0 0 1 noreply\r\nx\r\n", "add a 0 0 1\r\nx\r\n",
		"set n 0 0 1\r\n5\r\n", "incr n 10\r\n", "decr n 100\r\n", "incr a 1\r\n", "delete b\r\n", "touch a 100\r\n",
		"version\r\n", "stats\r\n", "stats cachedump 63 10\r\n", "bogus\r\n",
		"mg a v f t c k s O7\r\n", "mg a v q\r\n", "mg b v q\r\n", "mg a v q k\r\n", "mn\r\n",
		"ms c 3 q\r\nabc\r\n", "md b q\r\n", "ma n\r\n", "ma n q\r\n", "mg n v\r\n", "me a\r\n", "mn\r\n",
		"get " + strings.Repeat("x", 251) + "\r\n", "quit\r\n",
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
	var unpaired []string
	for _, x := range r.Answers[0] {
		if x.Req >= 0 {
			byReq[x.Req] = fields(x)
		} else {
			unpaired = append(unpaired, fields(x))
		}
		if testing.Verbose() {
			t.Logf("%d %s", x.Req, fields(x))
		}
	}
	for id, w := range map[int]string{
		0:  "status=STORED",
		1:  "hits=2; value:a=hi; flags:a=3; value:a#2=hi; flags:a#2=3",
		4:  "status=NOT_STORED",
		6:  "status=NUMBER; value=15",
		7:  "status=NUMBER; value=0",
		8:  "status=CLIENT_ERROR; message=cannot increment or decrement non-numeric value",
		9:  "status=NOT_FOUND",
		10: "status=TOUCHED",
		13: "status=END; stats=0",
		14: "status=ERROR",
		15: "status=VA; flag:f=3; flag:k=a; flag:s=2; flag:O=7; value=hi",
		19: "status=MN",
		22: "status=HD",
		24: "status=VA; value=2 ", // memcached pads a value incremented in place
		25: "status=ME",
		26: "status=MN",
		27: "status=CLIENT_ERROR; message=bad command line format",
	} {
		if byReq[id] != w {
			t.Errorf("request %d (%.40s): %q, want %q", id, r.Reqs[id].Sample, byReq[id], w)
		}
	}
	if !strings.HasPrefix(byReq[2], "hits=1; value:a=hi; flags:a=3; cas:a=") || !strings.HasPrefix(byReq[11], "status=VERSION; version=1.6") ||
		!strings.HasPrefix(byReq[12], "status=END; stats=") {
		t.Errorf("gets, version, stats: %q, %q, %q", byReq[2], byReq[11], byReq[12])
	}
	// The quiet hits of a and the quiet md's NF (memcached 1.6.18 sends it).
	if w := []string{"status=VA; value=hi", "status=VA; flag:k=a; value=hi", "status=NF"}; !slicesEqual(unpaired, w) {
		t.Errorf("quiet answers %q, want %q", unpaired, w)
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }
