package cmppg

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/compare/cmptest"
)

func msg(typ byte, body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	out := []byte{typ}
	out = binary.BigEndian.AppendUint32(out, uint32(4+len(b)))
	return append(out, b...)
}

func cs(s string) []byte { return append([]byte(s), 0) }
func i16(v int) []byte   { return binary.BigEndian.AppendUint16(nil, uint16(v)) }
func i32(v int) []byte   { return binary.BigEndian.AppendUint32(nil, uint32(v)) }

func startupMsg() []byte {
	body := append(i32(3<<16), cs("user")...)
	body = append(body, cs("app")...)
	body = append(body, cs("database")...)
	body = append(body, cs("db")...)
	body = append(body, 0)
	return append(i32(4+len(body)), body...)
}

func rowDesc(cols ...string) []byte {
	b := i16(len(cols))
	for _, c := range cols {
		b = append(b, cs(c)...)
		b = append(b, i32(0)...)
		b = append(b, i16(0)...)
		b = append(b, i32(23)...)
		b = append(b, i16(4)...)
		b = append(b, i32(-1)...)
		b = append(b, i16(0)...)
	}
	return msg('T', b)
}

func dataRow(vals ...string) []byte {
	b := i16(len(vals))
	for _, v := range vals {
		if v == "NULL" {
			b = append(b, i32(-1)...)
			continue
		}
		b = append(b, i32(len(v))...)
		b = append(b, v...)
	}
	return msg('D', b)
}

func errResp(code, m string) []byte {
	return msg('E', []byte("SERROR\x00C"+code+"\x00M"+m+"\x00\x00"))
}

var (
	ready    = msg('Z', []byte("I"))
	authOK   = msg('R', i32(0))
	loggedIn = bytes.Join([][]byte{authOK, msg('S', cs("server_version"), cs("16.1")), msg('S', cs("application_name"), cs("x")),
		msg('K', i32(1), i32(2)), ready}, nil)
)

type turn struct {
	client bool
	b      []byte
}

func run(t *testing.T, turns []turn) ([]compare.Request, []compare.Answer) {
	t.Helper()
	c := Protocol().New(compare.DefaultLimits)
	a := c.Answers()
	var reqs []compare.Request
	var ans []compare.Answer
	for _, tn := range turns {
		if tn.client {
			reqs = append(reqs, c.Requests(tn.b)...)
		} else {
			ans = append(ans, a.Feed(tn.b)...)
		}
	}
	reqs = cmptest.Rendered(append(reqs, c.EndRequests()...))
	ans = cmptest.Detailed(append(ans, a.End()...))
	return reqs, ans
}

func C(b ...[]byte) turn { return turn{true, bytes.Join(b, nil)} }
func S(b ...[]byte) turn { return turn{false, bytes.Join(b, nil)} }

func field(a compare.Answer, name string) string {
	for _, f := range a.Fields {
		if f.Name == name {
			return f.Value
		}
	}
	return "<missing>"
}

func check(t *testing.T, ans []compare.Answer, i int, want map[string]string) {
	t.Helper()
	if i >= len(ans) {
		t.Fatalf("no answer %d", i)
	}
	if ans[i].Req != i {
		t.Errorf("answer %d answers %d", i, ans[i].Req)
	}
	for k, v := range want {
		if got := field(ans[i], k); got != v {
			t.Errorf("answer %d: %s = %q, want %q (%+v)", i, k, got, v, ans[i].Fields)
		}
	}
}

func TestSimpleQueries(t *testing.T) {
	reqs, ans := run(t, []turn{
		C(startupMsg()), S(msg('R', i32(3))),
		C(msg('p', cs("secret"))), S(loggedIn),
		C(msg('Q', cs("select a, b from t where id = 5; select 1/0"))),
		S(rowDesc("a", "b"), dataRow("1", "NULL"), msg('C', cs("SELECT 1")), msg('N', []byte("SNOTICE\x00\x00")), errResp("22012", "division by zero"), ready),
		C(msg('X')),
	})
	keys := []string{"STARTUP", "AUTH", "SELECT a, b FROM t WHERE id = ?; SELECT ? / ?", "TERMINATE"}
	for i, k := range keys {
		if reqs[i].Key != k {
			t.Errorf("request %d %q, want %q", i, reqs[i].Key, k)
		}
	}
	if reqs[1].Sample != "AUTH "+compare.Redacted || !reqs[3].NoAnswer {
		t.Errorf("requests %+v", reqs)
	}
	if len(ans) != 3 {
		t.Fatalf("answers %+v", ans)
	}
	check(t, ans, 0, map[string]string{"result": "auth", "auth": "CleartextPassword"})
	check(t, ans, 1, map[string]string{"result": "ok", "auth": "Ok", "param:server_version": "16.1", "param:application_name": "<missing>"})
	check(t, ans, 2, map[string]string{"result": "error", "command": "SELECT 1", "columns": "a,b", "column_types": "23,23",
		"rows": "1", "row[0]": "1 | NULL", "result[1].error": "22012", "result[1].error_message": "division by zero"})
	if !ans[2].Error || ans[1].Error {
		t.Error("Error flags")
	}
}

func TestExtendedBatch(t *testing.T) {
	bind := func(stmt string, v string) []byte {
		return msg('B', cs(""), cs(stmt), i16(0), i16(1), i32(len(v)), []byte(v), i16(0))
	}
	reqs, ans := run(t, []turn{
		C(startupMsg()), S(loggedIn),
		C(msg('P', cs("s1"), cs("select v from t where id = $1"), i16(0)), msg('S')),
		S(msg('1'), ready),
		C(bind("s1", "7"), msg('D', []byte("P\x00")), msg('E', cs(""), i32(0)),
			msg('P', cs(""), cs("update t set v = v + 1 where id = $1"), i16(0)), bind("", "7"), msg('E', cs(""), i32(0)), msg('S')),
		S(msg('2'), rowDesc("v"), dataRow("41"), msg('C', cs("SELECT 1")), msg('1'), msg('2'), msg('C', cs("UPDATE 1")), ready),
		C(bind("nope", "1"), msg('E', cs(""), i32(0)), msg('S')),
		S(errResp("26000", "prepared statement \"nope\" does not exist"), ready),
	})
	keys := []string{"STARTUP", "PREPARE SELECT v FROM t WHERE id = ?", "SELECT v FROM t WHERE id = ?", "(unknown portal)"}
	for i, k := range keys {
		if reqs[i].Key != k {
			t.Errorf("request %d %q, want %q", i, reqs[i].Key, k)
		}
	}
	check(t, ans, 1, map[string]string{"result": "ok", "command": "<missing>"})
	check(t, ans, 2, map[string]string{"command": "SELECT 1", "row[0]": "41", "result[1].command": "UPDATE 1"})
	check(t, ans, 3, map[string]string{"result": "error", "error": "26000"})
}

// COPY FROM STDIN through the extended protocol: libpq's two Syncs get one
// ReadyForQuery, and the copy belongs to the request that started it.
func TestCopy(t *testing.T) {
	reqs, ans := run(t, []turn{
		C(startupMsg()), S(loggedIn),
		C(msg('P', cs(""), cs("copy t from stdin"), i16(0)), msg('B', cs(""), cs(""), i16(0), i16(0), i16(0)), msg('E', cs(""), i32(0)), msg('S')),
		S(msg('1'), msg('2'), msg('G', []byte{0}, i16(0))),
		C(msg('d', []byte("1\tone\n")), msg('c'), msg('S')),
		S(msg('C', cs("COPY 1")), ready),
		C(msg('Q', cs("copy t to stdout"))),
		S(msg('H', []byte{0}, i16(0)), msg('d', []byte("1\tone\n")), msg('c'), msg('C', cs("COPY 1")), ready),
	})
	if len(reqs) != 3 || len(ans) != 3 {
		t.Fatalf("requests %+v\nanswers %+v", reqs, ans)
	}
	check(t, ans, 1, map[string]string{"command": "COPY 1", "copy_data": "<missing>"})
	h := compare.NewHasher()
	h.Feed([]byte("1\tone\n"))
	check(t, ans, 2, map[string]string{"command": "COPY 1", "copy_data": h.Value()})
}

func TestSASLAndSSL(t *testing.T) {
	ssl := append(i32(8), i32(codeSSL)...)
	reqs, ans := run(t, []turn{
		C(ssl), S([]byte("N")),
		C(startupMsg()), S(msg('R', i32(10), cs("SCRAM-SHA-256"), []byte{0})),
		C(msg('p', cs("SCRAM-SHA-256"), i32(3), []byte("n,,"))), S(msg('R', i32(11), []byte("r=abc"))),
		C(msg('p', []byte("c=biws"))), S(msg('R', i32(12), []byte("v=xyz")), loggedIn),
	})
	if len(reqs) != 4 || reqs[0].Key != "SSL_REQUEST" || reqs[2].Key != "AUTH" || reqs[3].Key != "AUTH" {
		t.Fatalf("requests %+v", reqs)
	}
	check(t, ans, 0, map[string]string{"result": "N"})
	check(t, ans, 1, map[string]string{"result": "auth", "auth": "SASL SCRAM-SHA-256"})
	check(t, ans, 2, map[string]string{"result": "auth", "auth": "SASLContinue"})
	check(t, ans, 3, map[string]string{"result": "ok", "auth": "SASLFinal,Ok"})

	// An accepted SSLRequest: nothing after it is cut.
	reqs, ans = run(t, []turn{C(ssl), S([]byte("S")), C([]byte("\x16\x03\x01\x02\x00 client hello")), S([]byte("\x16\x03\x03 server hello"))})
	if len(reqs) != 1 || len(ans) != 2 || field(ans[0], "result") != "S" || ans[1].Req != -1 || ans[1].Malformed != "" {
		t.Errorf("requests %+v\nanswers %+v", reqs, ans)
	}
}

func TestColumnRenamed(t *testing.T) {
	one := func(col string) compare.Answer {
		_, ans := run(t, []turn{C(startupMsg()), S(loggedIn), C(msg('Q', cs("select 1"))),
			S(rowDesc(col), dataRow("1"), msg('C', cs("SELECT 1")), ready)})
		return ans[1]
	}
	a, b := one("a"), one("b")
	n := 0
	for _, f := range a.Fields {
		if field(b, f.Name) != f.Value {
			n++
			if f.Name != "columns" {
				t.Errorf("%s differs", f.Name)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d fields differ", n)
	}
}

func TestMalformed(t *testing.T) {
	_, ans := run(t, []turn{C(startupMsg()), S(loggedIn), C(msg('Q', cs("select 1"))), S([]byte("\x00\x00\x00\x00\x01"), []byte("more"))})
	if len(ans) != 3 || ans[1].Malformed == "" || ans[1].Req != 1 || ans[2].Req != -1 {
		t.Errorf("answers %+v", ans)
	}
}
