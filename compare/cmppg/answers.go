package cmppg

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/stackcopy/stackcopy/compare"
)

// startupParams are the ParameterStatus values a startup answer shows:
// settings that say how the server talks, not which process answered.
var startupParams = map[string]bool{
	"server_version": true, "server_encoding": true, "client_encoding": true, "DateStyle": true,
	"IntervalStyle": true, "TimeZone": true, "integer_datetimes": true, "standard_conforming_strings": true,
}

type result struct {
	command     string
	params      string
	hasParams   bool
	cols        string
	types       string
	hasCols     bool
	rows        int
	hasRows     bool
	rowHash     compare.Hasher
	shown       []string
	copyOut     bool
	copyHash    compare.Hasher
	value       string
	hasValue    bool
	err, errMsg string
	isErr       bool
}

type answers struct {
	lim     compare.Limits
	r       reader
	untyped bool // the server may answer a one-byte 'N', 'S' or 'G'
	startup bool // before the first ReadyForQuery

	n       int // answers so far: the next one answers request n
	res     []*result
	open    bool // the last result has not ended
	auth    []string
	params  []compare.Field
	isErr   bool
	content bool // the answer has more than asynchronous messages
	asked   bool // the answer ends with an Authentication request
	size    int

	stopped bool
	why     string
	dropped int
	out     []compare.Answer
}

func (a *answers) spill(typ byte) *compare.Hasher {
	switch typ {
	case 'D':
		return &a.cur().rowHash
	case 'd':
		return &a.cur().copyHash
	}
	return nil
}

func (a *answers) Feed(b []byte) []compare.Answer {
	a.out = nil
	for len(b) > 0 {
		if a.stopped {
			a.dropped += len(b)
			break
		}
		if a.untyped && a.r.idle() {
			switch b[0] {
			case 'N', 'S', 'G':
				f := []compare.Field{{Name: "result", Value: string(b[:1])}}
				a.out = append(a.out, compare.Answer{Req: a.n, Fields: f, Size: 1, Sample: compare.FieldsSample(f, a.lim.Sample)})
				a.n++
				if b[0] != 'N' {
					a.stopped, a.why = true, "encrypted after the server accepted SSL or GSSAPI"
				}
				b = b[1:]
				continue
			}
			a.untyped = false
		}
		n, done := a.r.feed(b)
		b = b[n:]
		if a.r.err != "" {
			a.size += a.r.wire()
			a.malformed(a.r.err)
			continue
		}
		if done {
			a.size += a.r.wire()
			a.message()
		}
	}
	return a.out
}

func (a *answers) End() []compare.Answer {
	a.out = nil
	if !a.stopped {
		if !a.r.idle() {
			a.size += a.r.wire()
			a.content = true
		}
		if a.content || a.size > 0 {
			if a.content {
				a.finish(true)
			} else {
				a.out = append(a.out, compare.Answer{Req: -1, Size: a.size, Sample: "asynchronous messages"})
			}
		}
	}
	if a.dropped > 0 {
		a.out = append(a.out, compare.Answer{Req: -1, Size: a.dropped,
			Sample: fmt.Sprintf("%d bytes not decoded: %s", a.dropped, a.why)})
		a.dropped = 0
	}
	a.stopped, a.why = true, "after the end"
	return a.out
}

func (a *answers) malformed(why string) {
	a.out = append(a.out, compare.Answer{Req: a.n, Malformed: why, Size: a.size, Sample: why})
	a.n++
	a.stopped, a.why = true, why
}

// cur is the open result, opening one if the last one ended.
func (a *answers) cur() *result {
	if !a.open {
		a.res = append(a.res, &result{rowHash: compare.NewHasher(), copyHash: compare.NewHasher()})
		a.open = true
	}
	return a.res[len(a.res)-1]
}

func (a *answers) message() {
	m, typ := a.r.Buf, a.r.typ
	switch typ {
	case 'N', 'A':
		return // asynchronous: never a field
	case 'S':
		if !a.startup {
			return
		}
		k, n, _ := cstr(m)
		v, _, _ := cstr(m[n:])
		if startupParams[string(k)] {
			a.params = append(a.params, compare.Field{Name: "param:" + string(k), Value: compare.Value(v)})
		}
		a.content = true
		return
	}
	a.content = true
	switch typ {
	case 'R':
		a.authMsg(m)
	case 'K', 'v', '1', '2', '3', 'n':
		if !a.startup {
			a.cur()
		}
	case 'Z':
		a.startup = false
		a.finish(false)
	case 'E':
		res := a.cur()
		res.isErr, a.isErr = true, true
		res.err, res.errMsg = errorFields(m)
		a.open = false
		if a.startup {
			a.finish(false) // the server closes the connection
		}
	case 'C':
		tag, _, _ := cstr(m)
		a.cur().command = compare.Value(tag)
		a.open = false
	case 'I':
		a.cur().command = "(empty query)"
		a.open = false
	case 's':
		a.cur().command = "(portal suspended)"
		a.open = false
	case 't':
		res := a.cur()
		res.hasParams = true
		var oids []string
		if len(m) >= 2 {
			for i, rest := 0, m[2:]; i < be16(m) && len(rest) >= 4; i, rest = i+1, rest[4:] {
				oids = append(oids, strconv.FormatUint(uint64(uint32(be32(rest))), 10))
			}
		}
		res.params = compare.Value([]byte(strings.Join(oids, ",")))
	case 'T':
		a.rowDescription(a.cur(), m)
	case 'D':
		a.dataRow(a.cur(), m)
	case 'G':
		a.cur()
	case 'H':
		a.cur().copyOut = true
	case 'd':
		res := a.cur()
		res.copyOut = true
		if !a.r.Spilled {
			res.copyHash.Feed(m)
		}
	case 'c':
		a.cur()
	case 'V':
		res := a.cur()
		res.hasValue = true
		if len(m) >= 4 {
			if l := be32(m); l < 0 {
				res.value = "NULL"
			} else {
				res.value = compare.Value(m[4:min(len(m), 4+l)])
			}
		}
	case 'W':
		a.malformed("CopyBothResponse (replication) is not followed")
	default:
		a.malformed(fmt.Sprintf("unknown message type %q", typ))
	}
}

// authMsg reads an Authentication message: a request for more ends the
// answer.
func (a *answers) authMsg(m []byte) {
	if len(m) < 4 {
		a.malformed("short Authentication message")
		return
	}
	ask := true
	var name string
	switch code := be32(m); code {
	case 0:
		name, ask = "Ok", false
	case 3:
		name = "CleartextPassword"
	case 5:
		name = "MD5Password"
	case 7:
		name = "GSS"
	case 8:
		name = "GSSContinue"
	case 9:
		name = "SSPI"
	case 10:
		var mechs []string
		for rest := m[4:]; len(rest) > 0; {
			s, n, ok := cstr(rest)
			if !ok || len(s) == 0 {
				break
			}
			mechs = append(mechs, string(s))
			rest = rest[n:]
		}
		name = "SASL " + strings.Join(mechs, ",")
	case 11:
		name = "SASLContinue"
	case 12:
		name, ask = "SASLFinal", false
	default:
		name, ask = fmt.Sprintf("Authentication%d", code), false
	}
	a.auth = append(a.auth, compare.Value([]byte(name)))
	if ask {
		a.asked = true
		a.finish(false)
	}
}

func (a *answers) rowDescription(res *result, m []byte) {
	res.hasCols, res.hasRows = true, true
	if len(m) < 2 {
		return
	}
	n := be16(m)
	rest := m[2:]
	names := make([]string, 0, max(n, 0))
	types := make([]string, 0, max(n, 0))
	for i := 0; i < n; i++ {
		name, k, ok := cstr(rest)
		if !ok || len(rest) < k+18 {
			break
		}
		names = append(names, string(name))
		// table OID (4), column number (2), type OID (4), size (2),
		// modifier (4), format (2).
		types = append(types, strconv.FormatUint(uint64(uint32(be32(rest[k+6:]))), 10))
		rest = rest[k+18:]
	}
	res.cols = compare.Value([]byte(strings.Join(names, ",")))
	res.types = compare.Value([]byte(strings.Join(types, ",")))
}

func (a *answers) dataRow(res *result, m []byte) {
	res.hasRows = true
	res.rows++
	if !a.r.Spilled {
		res.rowHash.Feed(m)
	}
	if len(res.shown) >= compare.ShownRows {
		return
	}
	if a.r.Over {
		res.shown = append(res.shown, a.r.Hash.Value())
		return
	}
	if len(m) < 2 {
		res.shown = append(res.shown, compare.Value(m))
		return
	}
	n := be16(m)
	rest := m[2:]
	vals := make([]string, 0, max(n, 0))
	for i := 0; i < n; i++ {
		if len(rest) < 4 {
			break
		}
		l := be32(rest)
		rest = rest[4:]
		if l < 0 {
			vals = append(vals, "NULL")
			continue
		}
		if l > len(rest) {
			break
		}
		vals = append(vals, compare.Value(rest[:l]))
		rest = rest[l:]
	}
	s := strings.Join(vals, " | ")
	if len(s) > max(a.lim.Sample, 1024) {
		s = compare.Digest([]byte(s))
	}
	res.shown = append(res.shown, s)
}

// errorFields reads an ErrorResponse's SQLSTATE and message.
func errorFields(m []byte) (code, msg string) {
	for len(m) > 1 {
		t := m[0]
		s, n, ok := cstr(m[1:])
		switch t {
		case 'C':
			code = string(s)
		case 'M':
			msg = compare.Value(s)
		}
		if !ok {
			break
		}
		m = m[1+n:]
	}
	return code, msg
}

// finish completes the answer to request n.
func (a *answers) finish(truncated bool) {
	n := 2
	for _, res := range a.res {
		n += 16 + len(res.shown)
	}
	fields := make([]compare.Field, 0, n)
	add := func(name, value string) { fields = append(fields, compare.Field{Name: name, Value: value}) }
	if a.startup || len(a.auth) > 0 {
		switch {
		case a.isErr:
			add("result", "error")
		case a.asked:
			add("result", "auth")
		default:
			add("result", "ok")
		}
		if len(a.auth) > 0 {
			add("auth", strings.Join(a.auth, ","))
		}
		fields = append(fields, a.params...)
		for _, res := range a.res {
			if res.isErr {
				add("error", res.err)
				add("error_message", res.errMsg)
			}
		}
	} else {
		if a.isErr {
			add("result", "error")
		} else {
			add("result", "ok")
		}
		for i, res := range a.res {
			fields = res.fields(fields, i)
		}
	}
	limit := a.lim.Sample
	a.out = append(a.out, compare.Answer{Req: a.n, Fields: fields, Error: a.isErr, Truncated: truncated,
		Size: a.size, Render: func() string { return compare.FieldsSample(fields, limit) }})
	a.n++
	a.res, a.open, a.auth, a.params = a.res[:0], false, a.auth[:0], a.params[:0]
	a.isErr, a.content, a.asked, a.size = false, false, false, 0
}

func (res *result) fields(out []compare.Field, i int) []compare.Field {
	prefix := ""
	if i > 0 {
		prefix = "result[" + strconv.Itoa(i) + "]."
	}
	add := func(name, value string) { out = append(out, compare.Field{Name: prefix + name, Value: value}) }
	if res.command != "" {
		add("command", res.command)
	}
	if res.hasParams {
		add("parameters", res.params)
	}
	if res.hasCols {
		add("columns", res.cols)
		add("column_types", res.types)
	}
	if res.hasRows {
		add("rows", strconv.Itoa(res.rows))
		add("row_data", res.rowHash.Value())
		for j, r := range res.shown {
			add(compare.RowField(j), r)
		}
	}
	if res.copyOut {
		add("copy_data", res.copyHash.Value())
	}
	if res.hasValue {
		add("value", res.value)
	}
	if res.isErr {
		add("error", res.err)
		add("error_message", res.errMsg)
	}
	return out
}
