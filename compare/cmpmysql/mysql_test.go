package cmpmysql

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/compare/cmptest"
)

// Hand-built sessions for the rules the captures do not all show.

func pkt(seq byte, payload []byte) []byte {
	var out []byte
	for {
		n := min(len(payload), maxPacket)
		out = append(out, byte(n), byte(n>>8), byte(n>>16), seq)
		out = append(out, payload[:n]...)
		payload = payload[n:]
		seq++
		if n < maxPacket {
			return out
		}
	}
}

func lenc(s string) []byte { return append([]byte{byte(len(s))}, s...) }

const baseCaps = capLongPassword | capProtocol41 | capSecureConn | capPluginAuth | 1<<16 | 1<<17

func greetingPayload(caps uint64) []byte {
	p := []byte{10}
	p = append(p, "8.0.36\x00"...)
	p = append(p, 1, 2, 3, 4)        // thread id
	p = append(p, "abcdefgh\x00"...) // scramble, filler
	p = binary.LittleEndian.AppendUint16(p, uint16(caps))
	p = append(p, 45, 2, 0) // charset, status
	p = binary.LittleEndian.AppendUint16(p, uint16(caps>>16))
	p = append(p, 21)                    // scramble length
	p = append(p, make([]byte, 10)...)   // reserved
	p = append(p, "ijklmnopqrst\x00"...) // scramble rest
	p = append(p, "mysql_native_password\x00"...)
	return p
}

func loginPayload(caps uint64) []byte {
	p := binary.LittleEndian.AppendUint32(nil, uint32(caps))
	p = append(p, 0, 0, 0, 1, 45)
	p = append(p, make([]byte, 23)...)
	p = append(p, "app\x00"...)
	p = append(p, 20)
	p = append(p, bytes.Repeat([]byte{7}, 20)...)
	p = append(p, "mysql_native_password\x00"...)
	return p
}

func okPayload(affected, insertID byte, status uint16, info string) []byte {
	p := []byte{0, affected, insertID}
	p = binary.LittleEndian.AppendUint16(p, status)
	p = append(p, 0, 0)
	if info != "" {
		p = append(p, lenc(info)...)
	}
	return p
}

func errPayload(code uint16, state, msg string) []byte {
	p := []byte{0xff}
	p = binary.LittleEndian.AppendUint16(p, code)
	return append(append(p, '#'), state+msg...)
}

func eofPayload(status uint16) []byte {
	return binary.LittleEndian.AppendUint16([]byte{0xfe, 0, 0}, status)
}

func colDef(name string, typ byte) []byte {
	var p []byte
	for _, s := range []string{"def", "t", "a", "a", name, name} {
		p = append(p, lenc(s)...)
	}
	p = append(p, 0x0c, 45, 0, 11, 0, 0, 0, typ, 0, 0, 0, 0, 0)
	return p
}

// textResult is a text result set: column count, definitions, EOF, rows,
// EOF, starting at sequence id seq.
func textResult(seq byte, status uint16, cols []string, rows ...[]string) []byte {
	out := pkt(seq, []byte{byte(len(cols))})
	seq++
	for _, c := range cols {
		out = append(out, pkt(seq, colDef(c, 253))...)
		seq++
	}
	out = append(out, pkt(seq, eofPayload(0))...)
	seq++
	for _, r := range rows {
		var p []byte
		for _, v := range r {
			p = append(p, lenc(v)...)
		}
		out = append(out, pkt(seq, p)...)
		seq++
	}
	return append(out, pkt(seq, eofPayload(status))...)
}

// script is one session: the client's bytes and the server's, in turns.
type script struct {
	turns []turn
}

type turn struct {
	client bool
	b      []byte
}

func (s *script) c(b ...[]byte) *script {
	s.turns = append(s.turns, turn{true, bytes.Join(b, nil)})
	return s
}
func (s *script) s(b ...[]byte) *script {
	s.turns = append(s.turns, turn{false, bytes.Join(b, nil)})
	return s
}

func connected(caps uint64) *script {
	return (&script{}).s(pkt(0, greetingPayload(caps))).c(pkt(1, loginPayload(caps))).s(pkt(2, okPayload(0, 0, 2, "")))
}

func run(t *testing.T, lim compare.Limits, s *script) ([]compare.Request, []compare.Answer) {
	t.Helper()
	c := Protocol().New(lim)
	a := c.Answers()
	var reqs []compare.Request
	var ans []compare.Answer
	for _, tn := range s.turns {
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

func field(a compare.Answer, name string) string {
	for _, f := range a.Fields {
		if f.Name == name {
			return f.Value
		}
	}
	return "<missing>"
}

func diff(a, b compare.Answer) []string {
	var out []string
	seen := map[string]bool{}
	for _, f := range a.Fields {
		seen[f.Name] = true
		if field(b, f.Name) != f.Value {
			out = append(out, f.Name)
		}
	}
	for _, f := range b.Fields {
		if !seen[f.Name] {
			out = append(out, f.Name)
		}
	}
	return out
}

func TestQueryAnswers(t *testing.T) {
	s := connected(baseCaps).
		c(pkt(0, []byte("\x03SELECT name FROM t WHERE id = 1"))).
		s(textResult(1, 2, []string{"name"}, []string{"x"}, []string{"y"})).
		c(pkt(0, []byte("\x03UPDATE t SET a = 2"))).
		s(pkt(1, okPayload(3, 0, 3, "Rows matched: 3"))).
		c(pkt(0, []byte("\x03SELECT * FROM nope"))).
		s(pkt(1, errPayload(1146, "42S02", "Table 't.nope' doesn't exist"))).
		c(pkt(0, []byte("\x03CALL p()"))).
		s(textResult(1, 2|statusMoreResults, []string{"a"}, []string{"1"}), pkt(6, okPayload(0, 0, 2, ""))).
		c(pkt(0, []byte{0x01}))
	reqs, ans := run(t, compare.DefaultLimits, s)
	keys := []string{"CONNECT", "LOGIN", "SELECT name FROM t WHERE id = ?", "UPDATE t SET a = ?", "SELECT * FROM nope", "CALL p()", "QUIT"}
	if len(reqs) != len(keys) {
		t.Fatalf("%d requests: %+v", len(reqs), reqs)
	}
	for i, k := range keys {
		if reqs[i].Key != k || reqs[i].ID != i {
			t.Errorf("request %d: %d %q, want %q", i, reqs[i].ID, reqs[i].Key, k)
		}
	}
	if !reqs[6].NoAnswer {
		t.Error("COM_QUIT wants an answer")
	}
	if len(ans) != 6 {
		t.Fatalf("%d answers: %+v", len(ans), ans)
	}
	want := []map[string]string{
		{"result": "greeting", "server_version": "8.0.36", "protocol_version": "10"},
		{"result": "ok"},
		{"result": "resultset", "columns": "name", "column_types": "VAR_STRING", "rows": "2", "row[0]": "x", "row[1]": "y", "status_flags": "autocommit"},
		{"result": "ok", "affected_rows": "3", "last_insert_id": "0", "status_flags": "in_trans,autocommit", "info": "Rows matched: 3"},
		{"result": "error", "error": "1146 42S02", "error_message": "Table 't.nope' doesn't exist"},
		{"result": "resultset", "row[0]": "1", "result[1].result": "ok", "result[1].affected_rows": "0"},
	}
	for i, w := range want {
		if ans[i].Req != i {
			t.Errorf("answer %d answers %d", i, ans[i].Req)
		}
		for k, v := range w {
			if got := field(ans[i], k); got != v {
				t.Errorf("answer %d: %s = %q, want %q (%+v)", i, k, got, v, ans[i].Fields)
			}
		}
	}
	if !ans[4].Error || ans[3].Error {
		t.Error("Error flags")
	}
	for _, f := range ans[0].Fields {
		if f.Name != "result" && f.Name != "protocol_version" && f.Name != "server_version" && f.Name != "auth_plugin" {
			t.Errorf("greeting field %s", f.Name)
		}
	}
}

// A renamed column differs in "columns" only; other values in row fields.
func TestColumnRenamed(t *testing.T) {
	one := func(col, val string) compare.Answer {
		_, ans := run(t, compare.DefaultLimits, connected(baseCaps).
			c(pkt(0, []byte("\x03SELECT a FROM t"))).
			s(textResult(1, 2, []string{col}, []string{val})))
		return ans[2]
	}
	if d := diff(one("a", "1"), one("b", "1")); len(d) != 1 || d[0] != "columns" {
		t.Errorf("renamed column: %v", d)
	}
	if d := diff(one("a", "1"), one("a", "2")); len(d) != 2 || d[0] != "row_data" || d[1] != "row[0]" {
		t.Errorf("changed value: %v", d)
	}
}

// DEPRECATE_EOF, a prepared statement and its binary rows.
func TestPreparedBinary(t *testing.T) {
	caps := uint64(baseCaps | capDeprecateEOF)
	prepOK := []byte{0, 7, 0, 0, 0, 3, 0, 1, 0, 0, 0, 0} // id 7, 3 columns, 1 parameter
	row := []byte{0, 0b0001_0000}                        // NULL bitmap: column 2 (offset 2) is NULL
	row = binary.LittleEndian.AppendUint64(row, 42)
	row = append(row, lenc("héllo")...)
	exec := []byte{0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 8, 0, 1, 0, 0, 0, 0, 0, 0, 0}
	s := connected(caps).
		c(pkt(0, []byte("\x16SELECT id, s, n FROM t WHERE id = ?"))).
		s(pkt(1, prepOK), pkt(2, colDef("?", 8)), pkt(3, colDef("id", 8)), pkt(4, colDef("s", 253)), pkt(5, colDef("n", 3))).
		c(pkt(0, exec)).
		s(pkt(1, []byte{3}), pkt(2, colDef("id", 8)), pkt(3, colDef("s", 253)), pkt(4, colDef("n", 3)), pkt(5, row), pkt(6, append([]byte{0xfe}, okPayload(0, 0, 2, "")[1:]...))).
		c(pkt(0, []byte{0x19, 7, 0, 0, 0})).
		c(pkt(0, exec))
	reqs, ans := run(t, compare.DefaultLimits, s)
	if reqs[2].Key != "PREPARE SELECT id, s, n FROM t WHERE id = ?" || reqs[3].Key != "EXECUTE SELECT id, s, n FROM t WHERE id = ?" {
		t.Errorf("keys %q %q", reqs[2].Key, reqs[3].Key)
	}
	if !reqs[4].NoAnswer || reqs[5].Key != "EXECUTE (unknown statement)" {
		t.Errorf("after close: %+v %+v", reqs[4], reqs[5])
	}
	if got := field(ans[2], "params") + "/" + field(ans[2], "columns"); got != "1/id,s,n" {
		t.Errorf("prepared: %s %+v", got, ans[2].Fields)
	}
	if got := field(ans[3], "row[0]"); got != "42 | héllo | NULL" {
		t.Errorf("binary row %q (%+v)", got, ans[3].Fields)
	}
	if field(ans[3], "column_types") != "LONGLONG,VAR_STRING,LONG" || field(ans[3], "rows") != "1" {
		t.Errorf("binary result %+v", ans[3].Fields)
	}
	// The last execute is never answered: End has nothing cut short.
	if len(ans) != 4 {
		t.Errorf("%d answers", len(ans))
	}
}

func TestLocalInfile(t *testing.T) {
	s := connected(baseCaps).
		c(pkt(0, []byte("\x03LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t"))).
		s(pkt(1, []byte("\xfbx.csv"))).
		c(pkt(2, []byte("1,a\n2,b\n")), pkt(3, []byte("3,c\n")), pkt(4, nil)).
		s(pkt(5, okPayload(3, 0, 2, "Records: 3"))).
		c(pkt(0, []byte{0x0e})).
		s(pkt(1, okPayload(0, 0, 2, "")))
	reqs, ans := run(t, compare.DefaultLimits, s)
	if len(reqs) != 4 || reqs[3].Key != "PING" {
		t.Fatalf("requests %+v", reqs)
	}
	if len(ans) != 4 || ans[2].Req != 2 || field(ans[2], "local_infile") != "x.csv" || field(ans[2], "affected_rows") != "3" {
		t.Errorf("answers %+v", ans)
	}
}

func TestAuthSwitch(t *testing.T) {
	s := (&script{}).s(pkt(0, greetingPayload(baseCaps))).
		c(pkt(1, loginPayload(baseCaps))).
		s(pkt(2, []byte("\xfecaching_sha2_password\x00abcdefghijklmnopqrst\x00"))).
		c(pkt(3, bytes.Repeat([]byte{9}, 32))).
		s(pkt(4, []byte{1, 3}), pkt(5, okPayload(0, 0, 2, ""))).
		c(pkt(0, []byte("\x03SELECT 1"))).
		s(pkt(1, errPayload(1045, "28000", "Access denied")))
	reqs, ans := run(t, compare.DefaultLimits, s)
	if len(reqs) != 4 || reqs[2].Key != "AUTH" || reqs[2].Sample != "AUTH "+compare.Redacted {
		t.Fatalf("requests %+v", reqs)
	}
	if field(ans[1], "result") != "auth_switch" || field(ans[1], "auth_plugin") != "caching_sha2_password" || field(ans[2], "result") != "ok" {
		t.Errorf("answers %+v", ans)
	}
	if !ans[3].Error || ans[3].Req != 3 {
		t.Errorf("error answer %+v", ans[3])
	}
}

func TestSSLRequestStops(t *testing.T) {
	ssl := binary.LittleEndian.AppendUint32(nil, uint32(baseCaps|capSSL))
	ssl = append(ssl, make([]byte, 28)...)
	s := (&script{}).s(pkt(0, greetingPayload(baseCaps|capSSL))).
		c(pkt(1, ssl), []byte("\x16\x03\x01 tls client hello")).
		s([]byte("\x16\x03\x03 tls server hello"))
	reqs, ans := run(t, compare.DefaultLimits, s)
	if len(reqs) != 2 || reqs[1].Key != "SSL" || !reqs[1].NoAnswer {
		t.Errorf("requests %+v", reqs)
	}
	if len(ans) != 2 || ans[1].Req != -1 || ans[1].Malformed != "" {
		t.Errorf("answers %+v", ans)
	}
}

// A row longer than a packet (0xFFFFFF bytes and more) and longer than
// what is kept: hashed whole, shown as its digest.
func TestBigRow(t *testing.T) {
	big := bytes.Repeat([]byte("z"), maxPacket+10)
	row := append([]byte{0xfe}, binary.LittleEndian.AppendUint64(nil, uint64(len(big)))...)
	row = append(row, big...)
	res := pkt(1, []byte{1})
	res = append(res, pkt(2, colDef("b", 252))...)
	res = append(res, pkt(3, eofPayload(2))...)
	rowPkts := pkt(4, row)
	res = append(res, rowPkts...)
	res = append(res, pkt(6, eofPayload(2))...)
	s := connected(baseCaps).c(pkt(0, []byte("\x03SELECT b FROM t"))).s(res)
	_, ans := run(t, compare.Limits{Body: 1000, Sample: 100}, s)
	h := compare.NewHasher()
	h.Feed(row)
	if len(ans) != 3 || field(ans[2], "rows") != "1" || field(ans[2], "row_data") != h.Value() || field(ans[2], "row[0]") != h.Value() {
		t.Errorf("answers %+v", ans)
	}
}

// Server bytes before the request they answer wait for it.
func TestServerAhead(t *testing.T) {
	c := Protocol().New(compare.DefaultLimits)
	a := c.Answers()
	var ans []compare.Answer
	ans = append(ans, a.Feed(pkt(0, greetingPayload(baseCaps)))...)
	ans = append(ans, a.Feed(pkt(2, okPayload(0, 0, 2, "")))...)
	if len(ans) != 1 {
		t.Fatalf("answers before the login: %+v", ans)
	}
	c.Requests(pkt(1, loginPayload(baseCaps)))
	ans = append(ans, a.End()...)
	if len(ans) != 2 || ans[1].Req != 1 || field(ans[1], "result") != "ok" {
		t.Errorf("answers %+v", ans)
	}
}

// TestRenumberedTarget: a target that numbered the prepared statement
// otherwise (9 where production said 7; the replayer renumbers the
// client's execute for it) and, with MariaDB's metadata cache, answers the
// execute without column definitions: its binary row is decoded with the
// columns of its own PREPARE_OK, as production's is, and the answers match.
func TestRenumberedTarget(t *testing.T) {
	caps := uint64(baseCaps|capDeprecateEOF|capMariaCacheMetadata) &^ capLongPassword
	greet := greetingPayload(caps)
	// MariaDB's extended capabilities: the last 4 of the 10 reserved bytes.
	at := bytes.Index(greet, []byte("ijklmnopqrst")) - 4
	binary.LittleEndian.PutUint32(greet[at:], uint32(caps>>32))
	login := loginPayload(caps)
	binary.LittleEndian.PutUint32(login[28:], uint32(caps>>32))
	prepOK := func(id byte) []byte { return []byte{0, id, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0} } // 1 column, 1 parameter
	row := binary.LittleEndian.AppendUint64([]byte{0, 0}, 42)
	server := func(id byte) [][]byte {
		return [][]byte{
			pkt(0, greet),
			pkt(2, okPayload(0, 0, 2, "")),
			bytes.Join([][]byte{pkt(1, prepOK(id)), pkt(2, colDef("?", 8)), pkt(3, colDef("id", 8))}, nil),
			// The execute's answer: 1 column, metadata left out (0).
			bytes.Join([][]byte{pkt(1, []byte{1, 0}), pkt(2, row), pkt(3, append([]byte{0xfe}, okPayload(0, 0, 2, "")[1:]...))}, nil),
		}
	}
	client := [][]byte{
		pkt(1, login),
		pkt(0, []byte("\x16SELECT id FROM t WHERE id = ?")),
		pkt(0, []byte{0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 8, 0, 42, 0, 0, 0, 0, 0, 0, 0}),
	}
	c := Protocol().New(compare.DefaultLimits)
	prod, tgt := c.Answers(), c.Answers()
	ps, ts := server(7), server(9)
	var reqs []compare.Request
	var pa, ta []compare.Answer
	for i := range ps {
		// Production answers first, as a capture is read ahead of the
		// replay; the target answers the same turn.
		pa = append(pa, prod.Feed(ps[i])...)
		ta = append(ta, tgt.Feed(ts[i])...)
		if i < len(client) {
			reqs = append(reqs, c.Requests(client[i])...)
		}
	}
	reqs = cmptest.Rendered(append(reqs, c.EndRequests()...))
	pa = cmptest.Detailed(append(pa, prod.End()...))
	ta = cmptest.Detailed(append(ta, tgt.End()...))
	if len(reqs) != 4 || reqs[3].Key != "EXECUTE SELECT id FROM t WHERE id = ?" {
		t.Fatalf("requests %+v", reqs)
	}
	if len(pa) != 4 || len(ta) != 4 {
		t.Fatalf("%d and %d answers, want 4 each:\n%+v\n%+v", len(pa), len(ta), pa, ta)
	}
	if got := field(pa[3], "row[0]"); got != "42" {
		t.Errorf("production's binary row %q (%+v)", got, pa[3].Fields)
	}
	if d := diff(pa[3], ta[3]); len(d) != 0 {
		t.Errorf("the renumbered target's execute answer differs in %v:\n%+v\n%+v", d, pa[3].Fields, ta[3].Fields)
	}
}
