package cmpresp

import (
	"bytes"
	"slices"
	"strconv"
	"strings"

	"github.com/stackcopy/stackcopy/compare"
)

// The canonical rendering of an aggregate, made from its wire bytes when
// the comparison asks for it (Answer.Detail) and for a top-level
// attribute. Values nested in aggregates render as
//
//	bulk string   "text" (Go quoted), or <len=N crc=…> over elemInline bytes
//	simple        +"text"      error  -"text"      bulk error  !"text"
//	verbatim      ="txt:text"  integer 42   double ,3.14   big number (123
//	boolean       true, false  null   nil
//	array         [a, b]       set    ~[a, b]      push  >[a, b]
//	map           {k: v, k2: v2}
//
// joined with ", ". Sets' elements and maps' pairs are sorted by their
// rendering, since their order is the server's hash order, which the
// comparison should not see. Attributes nested in aggregates are dropped.
// A rendering longer than Limits.Body is replaced by its digest.

// render renders the complete RESP value b, which the decoder has
// checked.
func render(b []byte, limit int) string {
	r := renderer{b: b, inline: min(elemInline, limit, 64<<10)}
	s := r.value(true)
	if len(s) > limit {
		return compare.Digest([]byte(s))
	}
	return s
}

type renderer struct {
	b      []byte
	i      int
	inline int
}

// line returns the next type line's type byte and body.
func (r *renderer) line() (byte, []byte, bool) {
	rest := r.b[r.i:]
	j := bytes.IndexByte(rest, '\n')
	if j < 2 {
		r.i = len(r.b)
		return 0, nil, false
	}
	r.i += j + 1
	return rest[0], rest[1 : j-1], true
}

func (r *renderer) value(top bool) string {
	for {
		t, body, ok := r.line()
		if !ok {
			return "?"
		}
		switch t {
		case '+', '-':
			return string(t) + strconv.Quote(string(body))
		case ':':
			return string(body)
		case '(':
			return "(" + string(body)
		case '_':
			return "nil"
		case '#':
			if len(body) == 1 && body[0] == 'f' {
				return "false"
			}
			return "true"
		case ',':
			return "," + string(body)
		case '$', '!', '=':
			n, _ := parseLen(body)
			if n < 0 {
				return "nil"
			}
			if n+2 > int64(len(r.b)-r.i) {
				r.i = len(r.b)
				return "?"
			}
			data := r.b[r.i : r.i+int(n)]
			r.i += int(n) + 2
			var s string
			if len(data) <= r.inline {
				s = strconv.Quote(string(data))
			} else {
				s = "<" + compare.Digest(data) + ">"
			}
			if t != '$' {
				s = string(t) + s
			}
			return s
		case '|':
			if !top {
				r.aggregate(t, body) // an attribute is not a value of its parent
				continue
			}
		}
		return r.aggregate(t, body)
	}
}

func (r *renderer) aggregate(t byte, body []byte) string {
	n, _ := parseLen(body)
	if n < 0 {
		return "nil"
	}
	pairs := t == '%' || t == '|'
	parts := make([]string, 0, min(n, int64(len(r.b)-r.i)/3))
	for k := int64(0); k < n && r.i < len(r.b); k++ {
		s := r.value(false)
		if pairs {
			s += ": " + r.value(false)
		}
		parts = append(parts, s)
	}
	open, end := "[", "]"
	switch t {
	case '~':
		open = "~["
	case '>':
		open = ">["
	case '%', '|':
		open, end = "{", "}"
	}
	switch t {
	case '~', '%', '|':
		slices.Sort(parts)
	}
	return open + strings.Join(parts, ", ") + end
}
