package compare

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxFingerprint bounds a fingerprint: it is a report's group key, and a
// key is a short name, not the statement.
const maxFingerprint = 200

// Fingerprint normalizes a SQL statement (MySQL / MariaDB or PostgreSQL)
// into the key that groups its executions: what stays is the statement's
// shape, what goes is what varies between executions.
//
//   - Comments go: "-- " to the end of the line (a "--" followed by a
//     digit is MySQL's minus minus and stays), "#" to the end of the line
//     (except "#>", PostgreSQL's JSON path operator), and /* */ including
//     MySQL's /*! */ and optimizer hints /*+ */ (not nested: MySQL's rule).
//   - Whitespace collapses: tokens are rejoined with one space, none after
//     "(" and "." or before ")", ",", "." and ";", none between a name and
//     the "(" of its call; trailing semicolons go.
//   - Literals become "?": numbers (with their exponent; a unary minus
//     before one folds into it), quoted strings (backslash escapes and
//     doubled quotes; the E, N, B, X and U& prefixes and MySQL's charset
//     introducers), hex and bit literals (0x.., 0b..), PostgreSQL
//     dollar-quoted strings, and PostgreSQL's $1 placeholders, so that a
//     statement reads the same whether it was sent with placeholders or
//     values (MySQL's ? placeholders are already "?"). TRUE,
//     FALSE and NULL stay: they change what a statement means.
//   - "IN (" followed by only literals ")" becomes "IN (?+)", whatever the
//     list's length; a multi-row VALUES whose rows normalize alike keeps
//     one row followed by "+": "VALUES (?, ?)+".
//   - Keywords are uppercased; identifiers stay as written, quoted ones
//     (`a`, "a") with their quotes: a double-quoted token is an
//     identifier, as in PostgreSQL and MySQL's ANSI_QUOTES.
//   - The result is at most 200 bytes: longer ones are cut on a character
//     boundary and end with "…".
//
// The statement's text is not checked: any input has a fingerprint, and
// Fingerprint never panics.
func Fingerprint(sql string) string {
	toks := sqlTokens(sql)
	toks = foldSigns(toks)
	toks = collapseLists(toks)
	for len(toks) > 0 && toks[len(toks)-1].text == ";" {
		toks = toks[:len(toks)-1]
	}
	var b strings.Builder
	for i, t := range toks {
		if i > 0 && spaceBetween(toks[i-1], t) {
			b.WriteByte(' ')
		}
		b.WriteString(t.text)
		if b.Len() > maxFingerprint {
			break
		}
	}
	return capFingerprint(b.String())
}

func capFingerprint(s string) string {
	if len(s) <= maxFingerprint {
		return s
	}
	const ellipsis = "…"
	cut := maxFingerprint - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

type tokKind uint8

const (
	tkWord    tokKind = iota // an identifier (or a keyword, see kw)
	tkQuoted                 // a quoted identifier
	tkLiteral                // "?"
	tkPunct                  // ( ) , ; .
	tkOp                     // an operator
	tkRepeat                 // the "+" after a VALUES row that repeats
)

type sqlTok struct {
	kind tokKind
	kw   bool // a keyword (uppercased)
	text string
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

const opChars = "<>=!|&+-*/%^~:@?#"

var literal = sqlTok{kind: tkLiteral, text: "?"}

// sqlTokens cuts s into tokens, dropping whitespace and comments and
// turning literals into "?". Every branch consumes at least one byte.
func sqlTokens(s string) []sqlTok {
	var toks []sqlTok
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case isSpace(c):
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-' && !(i+2 < len(s) && isDigit(s[i+2])),
			c == '#' && !(i+1 < len(s) && s[i+1] == '>'):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			end := strings.Index(s[i+2:], "*/")
			if end < 0 {
				i = len(s)
			} else {
				i += 2 + end + 2
			}
		case c == '\'':
			i = skipString(s, i, '\'')
			toks = append(toks, literal)
		case c == '"' || c == '`':
			j := skipQuoted(s, i, c)
			toks = append(toks, sqlTok{kind: tkQuoted, text: s[i:j]})
			i = j
		case isDigit(c) || c == '.' && i+1 < len(s) && isDigit(s[i+1]):
			i = skipNumber(s, i)
			toks = append(toks, literal)
		case c == '$' && i+1 < len(s) && isDigit(s[i+1]):
			i++
			for i < len(s) && isDigit(s[i]) {
				i++
			}
			toks = append(toks, literal)
		case c == '$':
			if j, ok := skipDollar(s, i); ok {
				toks = append(toks, literal)
				i = j
			} else {
				toks = append(toks, sqlTok{kind: tkOp, text: "$"})
				i++
			}
		case c == '?':
			toks = append(toks, literal)
			i++
		case c == '@' && i+1 < len(s) && (isIdentByte(s[i+1]) || s[i+1] == '@'):
			// A MySQL user or system variable: a name.
			j := i + 1
			for j < len(s) && (isIdentByte(s[j]) || s[j] == '@' || s[j] == '.') {
				j++
			}
			toks = append(toks, sqlTok{kind: tkWord, text: s[i:j]})
			i = j
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdentByte(s[j]) {
				j++
			}
			word := s[i:j]
			// A string with a prefix: E'..', N'..', B'..', X'..', U&'..'
			// and MySQL's charset introducers (_utf8mb4'..').
			if j < len(s) && s[j] == '\'' && (len(word) == 1 && strings.ContainsRune("eEnNbBxX", rune(word[0])) || word[0] == '_') {
				i = skipString(s, j, '\'')
				toks = append(toks, literal)
				continue
			}
			if (word == "U" || word == "u") && j+1 < len(s) && s[j] == '&' && s[j+1] == '\'' {
				i = skipString(s, j+1, '\'')
				toks = append(toks, literal)
				continue
			}
			i = j
			if up := strings.ToUpper(word); sqlKeywords[up] {
				toks = append(toks, sqlTok{kind: tkWord, kw: true, text: up})
			} else {
				toks = append(toks, sqlTok{kind: tkWord, text: word})
			}
		case c == '(' || c == ')' || c == ',' || c == ';' || c == '.' || c == '[' || c == ']' || c == '{' || c == '}':
			toks = append(toks, sqlTok{kind: tkPunct, text: s[i : i+1]})
			i++
		case strings.IndexByte(opChars, c) >= 0:
			j := i + 1
			for j < len(s) && strings.IndexByte(opChars, s[j]) >= 0 && s[j] != '?' {
				// A sign before a number is its own token, so that it can
				// fold into the literal; comment starts end the operator.
				if (s[j] == '-' || s[j] == '+') && j+1 < len(s) && (isDigit(s[j+1]) || s[j+1] == '.') {
					break
				}
				if s[j] == '-' && j+1 < len(s) && s[j+1] == '-' || s[j] == '/' && j+1 < len(s) && s[j+1] == '*' {
					break
				}
				if s[j] == '#' && !(j+1 < len(s) && s[j+1] == '>') {
					break
				}
				j++
			}
			toks = append(toks, sqlTok{kind: tkOp, text: s[i:j]})
			i = j
		default:
			// Anything else (a control byte, a stray character): kept
			// whole as an operator, valid UTF-8 or not.
			_, n := utf8.DecodeRuneInString(s[i:])
			toks = append(toks, sqlTok{kind: tkOp, text: s[i : i+n]})
			i += n
		}
	}
	return toks
}

// skipString returns the index after the string literal opening at i
// (s[i] == q): a backslash escapes the next byte, a doubled quote is one
// quote. An unterminated string runs to the end.
func skipString(s string, i int, q byte) int {
	for i++; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case q:
			if i+1 < len(s) && s[i+1] == q {
				i++
				continue
			}
			return i + 1
		}
	}
	return len(s)
}

// skipQuoted returns the index after the quoted identifier opening at i;
// a doubled quote is one quote, backslashes are plain characters.
func skipQuoted(s string, i int, q byte) int {
	for i++; i < len(s); i++ {
		if s[i] == q {
			if i+1 < len(s) && s[i+1] == q {
				i++
				continue
			}
			return i + 1
		}
	}
	return len(s)
}

func skipNumber(s string, i int) int {
	if s[i] == '0' && i+1 < len(s) && (s[i+1] == 'x' || s[i+1] == 'X' || s[i+1] == 'b' || s[i+1] == 'B') {
		j := i + 2
		for j < len(s) && isIdentByte(s[j]) {
			j++
		}
		return j
	}
	j := i
	for j < len(s) && (isDigit(s[j]) || s[j] == '.' || s[j] == '_') {
		j++
	}
	if j < len(s) && (s[j] == 'e' || s[j] == 'E') {
		k := j + 1
		if k < len(s) && (s[k] == '+' || s[k] == '-') {
			k++
		}
		if k < len(s) && isDigit(s[k]) {
			j = k
			for j < len(s) && isDigit(s[j]) {
				j++
			}
		}
	}
	// 1abc is an identifier in MySQL: swallow its letters with the number.
	for j < len(s) && isIdentByte(s[j]) {
		j++
	}
	return j
}

// skipDollar reads a PostgreSQL dollar-quoted string ($$..$$, $tag$..$tag$)
// opening at i.
func skipDollar(s string, i int) (int, bool) {
	j := i + 1
	for j < len(s) && s[j] != '$' && isIdentByte(s[j]) {
		j++
	}
	if j >= len(s) || s[j] != '$' {
		return 0, false
	}
	tag := s[i : j+1]
	end := strings.Index(s[j+1:], tag)
	if end < 0 {
		return len(s), true
	}
	return j + 1 + end + len(tag), true
}

// foldSigns folds a unary minus or plus into the literal after it: "= -5"
// reads as "= ?" like "= 5". A sign is unary after an operator, an opening
// or a keyword, or at the start.
func foldSigns(toks []sqlTok) []sqlTok {
	out := toks[:0]
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if t.kind == tkOp && (t.text == "-" || t.text == "+") && i+1 < len(toks) && toks[i+1].kind == tkLiteral {
			unary := len(out) == 0
			if !unary {
				p := out[len(out)-1]
				unary = p.kind == tkOp || p.kw && !valueKeywords[p.text] || p.kind == tkPunct && p.text != ")" && p.text != "]"
			}
			if unary {
				continue
			}
		}
		out = append(out, t)
	}
	return out
}

// collapseLists rewrites IN lists of literals and repeated VALUES rows.
func collapseLists(toks []sqlTok) []sqlTok {
	out := make([]sqlTok, 0, len(toks))
	for i := 0; i < len(toks); {
		t := toks[i]
		out = append(out, t)
		i++
		if !t.kw {
			continue
		}
		switch t.text {
		case "IN":
			if n := literalList(toks[i:]); n > 0 {
				out = append(out, sqlTok{kind: tkPunct, text: "("}, sqlTok{kind: tkLiteral, text: "?+"}, sqlTok{kind: tkPunct, text: ")"})
				i += n
			}
		case "VALUES", "VALUE":
			n := group(toks[i:])
			if n == 0 {
				continue
			}
			row := toks[i : i+n]
			out = append(out, row...)
			i += n
			repeated := false
			for i < len(toks) && toks[i].text == "," {
				m := group(toks[i+1:])
				if m != n || !sameToks(toks[i+1:i+1+m], row) {
					break
				}
				i += 1 + m
				repeated = true
			}
			if repeated {
				out = append(out, sqlTok{kind: tkRepeat, text: "+"})
			}
		}
	}
	return out
}

// literalList returns the length of "( ? , ? ... )" at the start of toks,
// or 0.
func literalList(toks []sqlTok) int {
	if len(toks) < 3 || toks[0].text != "(" {
		return 0
	}
	for i := 1; i+1 < len(toks); i += 2 {
		if toks[i].kind != tkLiteral {
			return 0
		}
		switch toks[i+1].text {
		case ")":
			return i + 2
		case ",":
		default:
			return 0
		}
	}
	return 0
}

// group returns the length of the parenthesized group at the start of
// toks, or 0.
func group(toks []sqlTok) int {
	if len(toks) == 0 || toks[0].text != "(" {
		return 0
	}
	depth := 0
	for i, t := range toks {
		if t.kind != tkPunct {
			continue
		}
		switch t.text {
		case "(":
			depth++
		case ")":
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return 0
}

func sameToks(a, b []sqlTok) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].text != b[i].text || a[i].kind != b[i].kind {
			return false
		}
	}
	return true
}

// spaceBetween says whether the rendering puts a space between a and b.
func spaceBetween(a, b sqlTok) bool {
	if b.kind == tkRepeat {
		return false
	}
	if a.kind == tkPunct && (a.text == "(" || a.text == "." || a.text == "[") {
		return false
	}
	if b.kind == tkPunct {
		switch b.text {
		case ")", ",", ".", ";", "]", "[":
			return false
		case "(":
			// A call: name(…); a keyword keeps its space: IN (…),
			// unless it is also a function: DATABASE(), IF(…).
			return a.kind != tkWord && a.kind != tkQuoted || a.kw && !funcKeywords[a.text]
		}
	}
	if a.text == "::" || b.text == "::" {
		return false
	}
	return true
}

// valueKeywords are keywords that end an operand: a sign after them is
// binary (NULL - 1).
var valueKeywords = map[string]bool{"NULL": true, "TRUE": true, "FALSE": true, "END": true}

// funcKeywords are keywords that are also functions, written name(…).
var funcKeywords = map[string]bool{
	"DATABASE": true, "SCHEMA": true, "IF": true, "LEFT": true, "RIGHT": true, "REPLACE": true,
	"MOD": true, "CAST": true, "ROW": true, "CURRENT_USER": true, "CURRENT_DATE": true,
	"CURRENT_TIME": true, "CURRENT_TIMESTAMP": true, "INSERT": true,
}

// sqlKeywords are uppercased in fingerprints: the reserved and common
// words of MySQL and PostgreSQL statements. A word not here (a function,
// a type, a table) stays as written.
var sqlKeywords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`
		ADD ALL ALTER ANALYZE AND ANY AS ASC BEGIN BETWEEN BINARY BOTH BY CALL
		CASCADE CASE CAST CHECK COLLATE COLUMN COMMIT CONFLICT CONSTRAINT COPY
		CREATE CROSS CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER
		DATABASE DEALLOCATE DECLARE DEFAULT DELETE DESC DESCRIBE DISTINCT DIV
		DO DROP DUPLICATE ELSE END ESCAPE EXCEPT EXECUTE EXISTS EXPLAIN FALSE
		FETCH FIRST FOR FOREIGN FROM FULL FUNCTION GRANT GROUP HAVING IF
		IGNORE ILIKE IN INDEX INNER INSERT INTERSECT INTERVAL INTO IS ISNULL
		JOIN KEY LATERAL LEADING LEFT LIKE LIMIT LOAD LOCAL LOCK MATCHED MERGE
		MOD NATURAL NOT NOTHING NOTNULL NOWAIT NULL NULLS OF OFFSET ON ONLY OR
		ORDER OUTER OVER PARTITION PREPARE PRIMARY PROCEDURE REFERENCES REGEXP
		RELEASE RENAME REPLACE RETURNING REVOKE RIGHT RLIKE ROLLBACK ROW ROWS
		SAVEPOINT SCHEMA SELECT SESSION SET SHARE SHOW SIMILAR SKIP SOME START
		STDIN STDOUT TABLE TEMPORARY THEN TO TRAILING TRANSACTION TRUE TRUNCATE
		UNION UNIQUE UNLOCK UPDATE USE USING VACUUM VALUE VALUES VIEW WHEN
		WHERE WINDOW WITH XOR
	`) {
		m[w] = true
	}
	return m
}()

// ShownRows is how many rows of a SQL result set are fields of their own
// (RowField), so that a difference shows which row changed; the rest are
// in the result's digest.
const ShownRows = 10

// rowFields are the names of the shown rows' fields, made once.
var rowFields = func() (n [ShownRows]string) {
	for i := range n {
		n[i] = "row[" + strconv.Itoa(i) + "]"
	}
	return n
}()

// RowField is the field name of a result set's row i (i < ShownRows).
func RowField(i int) string { return rowFields[i] }
