package compare

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestFingerprint(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		// Literals, keywords, whitespace.
		{"select * from t where id = 5", "SELECT * FROM t WHERE id = ?"},
		{"SELECT  *\n\tFROM t\r\nWHERE id=5;", "SELECT * FROM t WHERE id = ?"},
		{"select a, b from Users u where u.name = 'bob' and u.age > 3.5e2", "SELECT a, b FROM Users u WHERE u.name = ? AND u.age > ?"},
		{"select 1", "SELECT ?"},
		{"select -1, x - 1, x-1, (-2)", "SELECT ?, x - ?, x - ?, (?)"},
		{"select * from t where a = -5 and b in (-1, +2)", "SELECT * FROM t WHERE a = ? AND b IN (?+)"},
		{"select null - 1, true, FALSE, NULL", "SELECT NULL - ?, TRUE, FALSE, NULL"},
		// Strings: escapes, doubling, prefixes.
		{`select 'it''s', 'a\'b', "ident", 'x\\'`, `SELECT ?, ?, "ident", ?`},
		{`select E'a\nb', N'n', x'0F', X'ff', b'01', 0xDEAD, 0b101, _utf8mb4'x' from t`, "SELECT ?, ?, ?, ?, ?, ?, ?, ? FROM t"},
		{"select U&'d\\0061t'", "SELECT ?"},
		{"select $$a 'b' c$$, $tag$ x $tag$", "SELECT ?, ?"},
		// Comments.
		{"select 1 -- trailing\n from t", "SELECT ? FROM t"},
		{"select 1 # mysql\nfrom t", "SELECT ? FROM t"},
		{"/* hi */ select /*+ BKA(t) */ 1 /*!40101 , 2 */ from t", "SELECT ? FROM t"},
		{"select 1--2", "SELECT ? - ?"},
		{"select data #> '{a,b}' from t", "SELECT data #> ? FROM t"},
		{"select 1 /* unterminated", "SELECT ?"},
		// Placeholders.
		{"select * from t where a = $1 and b = $12", "SELECT * FROM t WHERE a = ? AND b = ?"},
		{"select * from t where a = ? and b = ?", "SELECT * FROM t WHERE a = ? AND b = ?"},
		// IN lists.
		{"select * from t where id in (1, 2, 3)", "SELECT * FROM t WHERE id IN (?+)"},
		{"select * from t where id IN ($1,$2)", "SELECT * FROM t WHERE id IN (?+)"},
		{"select * from t where id in (1)", "SELECT * FROM t WHERE id IN (?+)"},
		{"select * from t where id in (select id from u)", "SELECT * FROM t WHERE id IN (SELECT id FROM u)"},
		{"select * from t where id in (1, null)", "SELECT * FROM t WHERE id IN (?, NULL)"},
		// VALUES.
		{"insert into t (a, b) values (1, 'x'), (2, 'y'), (3, 'z')", "INSERT INTO t(a, b) VALUES (?, ?)+"},
		{"INSERT INTO t VALUES (1, now())", "INSERT INTO t VALUES (?, now())"},
		{"insert into t values (1, now()), (2, now()) on duplicate key update b = values(b)", "INSERT INTO t VALUES (?, now())+ ON DUPLICATE KEY UPDATE b = VALUES (b)"},
		{"insert into t values (1, 2), (3, null)", "INSERT INTO t VALUES (?, ?), (?, NULL)"},
		// Identifiers as written, quoted ones kept.
		{"SELECT `Col` FROM `My Table` WHERE \"Mixed\".x = 1", "SELECT `Col` FROM `My Table` WHERE \"Mixed\".x = ?"},
		{"select count(*), t1.c2 from t1", "SELECT count(*), t1.c2 FROM t1"},
		{"select @x := 1, @@session.sql_mode", "SELECT @x := ?, @@session.sql_mode"},
		{"select a::int, b::text[] from t", "SELECT a::int, b::text[] FROM t"},
		// PostgreSQL pgbench and the captures' statements.
		{"UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;", "UPDATE pgbench_accounts SET abalance = abalance + ? WHERE aid = ?"},
		{"copy t from stdin", "COPY t FROM STDIN"},
		{"select 1 as one; select 'two'", "SELECT ? AS one; SELECT ?"},
		{"", ""},
		{"  ;  ", ""},
	} {
		if got := Fingerprint(tc.in); got != tc.want {
			t.Errorf("Fingerprint(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestFingerprintCap(t *testing.T) {
	long := "select " + strings.Repeat("column_é, ", 100) + " from t"
	got := Fingerprint(long)
	if len(got) > 200 || !strings.HasSuffix(got, "…") || !utf8.ValidString(got) {
		t.Errorf("len %d %q", len(got), got)
	}
	// Statements that differ only beyond the cap share a key.
	if Fingerprint(long+" where a = 1") != got {
		t.Error("cap is not stable")
	}
}

func FuzzFingerprint(f *testing.F) {
	for _, s := range []string{"select 1", "insert into t values (1,2),(3,4)", "x in (1,2", "'\\", "$a", "$$", "/*", "--", "#", "e'", "U&'", "- -1", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Fingerprint(s)
		if len(got) > 200 {
			t.Fatalf("len %d", len(got))
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("invalid UTF-8 from valid input: %q", got)
		}
	})
}

func TestFingerprintFunctionKeywords(t *testing.T) {
	for in, want := range map[string]string{
		"select database(), if(a, 1, 2), left(s, 3)": "SELECT DATABASE(), IF(a, ?, ?), LEFT(s, ?)",
		"select * from t where x in(1,2)":            "SELECT * FROM t WHERE x IN (?+)",
	} {
		if got := Fingerprint(in); got != want {
			t.Errorf("Fingerprint(%q) = %q, want %q", in, got, want)
		}
	}
}
