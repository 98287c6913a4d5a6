package cmpmysql

import (
	"fmt"
	"strconv"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/myframe"
)

// Fields of an answer, in this order (names exact):
//
//   - greeting (request 0): "result" = "greeting", "protocol_version",
//     "server_version", "auth_plugin" (the default one). Never the
//     scramble, the connection id or the capability bits: they vary per
//     server and per connection. An ERR instead is "result" = "error".
//   - authentication (LOGIN, AUTH, CHANGE_USER): "result" = "ok",
//     "error", "auth_switch" (with "auth_plugin"), "auth_more_data" or
//     "auth_next_factor" (with "auth_plugin"). caching_sha2_password's
//     fast-auth notice is part of the answer, not a field.
//   - a command's answer is one or more results; the first one's fields
//     have no prefix, the second one's are prefixed "result[1]." and so
//     on (multi-statements, CALL, SERVER_MORE_RESULTS_EXISTS). A result
//     has "result" = "ok", "error", "eof" (COM_SET_OPTION, COM_DEBUG),
//     "resultset", "prepared", "fields" (COM_FIELD_LIST), "fetch"
//     (COM_STMT_FETCH's rows) or "statistics" (COM_STATISTICS; its text is
//     uptime and counters, so it is not a field); then "local_infile" (the
//     file a LOAD DATA LOCAL asked for), "params" (prepared: the parameter
//     count), "columns" and "column_types" (comma-separated names and
//     MYSQL_TYPE names, " UNSIGNED" appended), "rows", "row_data" (the
//     digest of all rows' bytes), "row[0]" … "row[9]" (the first rows,
//     values joined by " | ", NULL as NULL, binary rows rendered as the
//     text protocol would), "affected_rows", "last_insert_id" (OK),
//     "warnings", "status_flags" (of in_trans, autocommit,
//     in_trans_readonly, no_backslash_escapes: the others are noise or
//     structure), "info" (the OK's message, when not empty), "error"
//     ("<code> <sqlstate>") and "error_message" (ERR, also after rows).
//
// Error is set when an ERR packet is in the answer. MariaDB progress
// reports are skipped.

// Server-side states: what the next packet of the answer is.
type state uint8

const (
	sIdle state = iota
	sGreeting
	sAuth
	sSimple
	sString
	sResult  // the start of a (next) result: OK, ERR, 0xFB or a column count
	sColDefs // column definitions, defs to go
	sColEOF  // the EOF after them
	sRows
	sPrepare
	sPrepDefs
	sPrepEOF
	sFieldList
)

const (
	statusMoreResults  = 0x0008
	statusCursorExists = 0x0040
)

type result struct {
	kind     string
	extra    []compare.Field // greeting and authentication fields
	infile   string
	params   int
	prepared bool
	cols     []column
	hasCols  bool
	rows     int
	rowHash  compare.Hasher
	shown    []string

	hasOK              bool
	affected, insertID uint64
	hasWarnings        bool
	warnings           uint16
	hasStatus          bool
	status             uint16
	info               string

	isErr    bool
	errCode  string
	errMsg   string
	hasRows  bool
	ncolumns int
}

type answers struct {
	c    *conv
	pos  int // the log index of the next request to take
	r    reader
	held []byte

	cur     *req
	st      state
	srvCaps uint64
	caps    uint64 // negotiated: the server's and the client's
	binary  bool
	defs    int // definitions to go
	after   int // PREPARE: column definitions after the parameters'
	phase   int // PREPARE: 0 parameters, 1 columns
	stmt    uint32
	cols    map[uint32][]column // statement id (this stream's) → its result's columns, for binary rows
	own     map[uint32]uint32   // id the client names → this stream's, where they differ

	res   []*result
	size  int
	isErr bool

	unfollowed string // after the login: why the commands' answers are not decoded
	stopped    bool
	why        string
	dropped    int
	out        []compare.Answer
}

func (a *answers) Feed(b []byte) []compare.Answer {
	a.out = nil
	if a.stopped {
		a.dropped += len(b)
		return nil
	}
	data := b
	if len(a.held) > 0 {
		data = append(a.held, b...)
	}
	n := a.run(data)
	if rest := data[n:]; len(rest) > maxHeld {
		a.held = nil
		a.stop(fmt.Sprintf("more than %d server bytes ahead of the request they answer", maxHeld))
		a.dropped += len(rest)
	} else {
		a.held = append(a.held[:0:0], rest...)
	}
	return a.out
}

func (a *answers) End() []compare.Answer {
	a.out = nil
	if !a.stopped && len(a.held) > 0 {
		n := a.run(a.held)
		a.held = a.held[n:]
	}
	if a.cur != nil {
		a.size += a.r.wire + a.r.nh
		a.finish(true)
	}
	if n := len(a.held); n > 0 {
		a.out = append(a.out, compare.Answer{Req: -1, Size: n, Truncated: true,
			Sample: fmt.Sprintf("%d server bytes before any request they could answer", n)})
		a.held = nil
	}
	if a.dropped > 0 {
		a.out = append(a.out, compare.Answer{Req: -1, Size: a.dropped,
			Sample: fmt.Sprintf("%d bytes not decoded: %s", a.dropped, a.why)})
		a.dropped = 0
	}
	return a.out
}

// run decodes data and returns how much of it it took: the rest waits
// for a request.
func (a *answers) run(data []byte) int {
	i := 0
	for i < len(data) {
		if a.stopped {
			a.dropped += len(data) - i
			return len(data)
		}
		if a.cur == nil && a.r.idle() && !a.take() {
			if a.stopped {
				continue
			}
			return i
		}
		a.r.Spill = nil
		if a.st == sRows {
			a.r.Spill = &a.last().rowHash
		}
		n, done := a.r.feed(data[i:])
		i += n
		if done {
			a.message()
		}
	}
	return i
}

// take starts the answer to the next request that gets one; false when
// the client's stream has not shown it yet.
func (a *answers) take() bool {
	for {
		idx := a.pos - a.c.base
		if idx < 0 {
			a.stop(fmt.Sprintf("this answer stream fell more than %d requests behind the client", maxLog))
			return false
		}
		if idx >= len(a.c.log) {
			return false
		}
		r := a.c.log[idx]
		a.pos++
		a.c.trim()
		switch r.kind {
		case kNone:
			if r.cmd == 0x19 {
				delete(a.cols, a.mine(r.stmt))
				delete(a.own, r.stmt)
			}
			continue
		case kSSL:
			a.stop("TLS after the SSLRequest")
			return false
		}
		if a.unfollowed != "" {
			a.cur = r
			a.stop(a.unfollowed)
			return false
		}
		a.begin(r)
		return true
	}
}

func (a *answers) begin(r *req) {
	a.cur = r
	a.res = a.res[:0]
	a.size, a.isErr = 0, false
	a.binary = false
	a.newResult()
	switch r.kind {
	case kGreeting:
		a.st = sGreeting
	case kAuth:
		a.st = sAuth
		if r.caps != 0 {
			a.caps = a.srvCaps & r.caps
		}
	case kSimple:
		a.st = sSimple
	case kString:
		a.st = sString
	case kQuery:
		a.st = sResult
	case kExecute:
		a.st, a.binary = sResult, true
	case kPrepare:
		a.st = sPrepare
	case kFetch:
		a.st, a.binary = sRows, true
		res := a.last()
		res.kind, res.hasRows, res.hasCols = "fetch", true, true
		res.cols = a.cols[a.mine(r.stmt)]
		res.ncolumns = len(res.cols)
	case kFieldList:
		a.st = sFieldList
		res := a.last()
		res.kind, res.hasCols = "fields", true
	}
}

func (a *answers) newResult() {
	a.res = append(a.res, &result{rowHash: compare.NewHasher()})
}

func (a *answers) last() *result { return a.res[len(a.res)-1] }

// stop ends the decoding of this stream: a malformed answer says why
// (when why is not just TLS), the rest is counted and dropped.
func (a *answers) stop(why string) {
	if a.stopped {
		return
	}
	a.stopped, a.why = true, why
	if a.cur != nil || a.size > 0 {
		id := -1
		if a.cur != nil {
			id = a.cur.id
		}
		a.out = append(a.out, compare.Answer{Req: id, Malformed: why, Size: a.size, Sample: why})
	}
	a.cur, a.st = nil, sIdle
}

func (a *answers) deprecateEOF() bool { return a.caps&capDeprecateEOF != 0 }

func (a *answers) message() {
	m, size := a.r.Buf, a.r.Size
	a.size += a.r.wire
	if size == 0 {
		a.stop("empty server packet")
		return
	}
	if m[0] == 0xff && len(m) >= 3 && m[1] == 0xff && m[2] == 0xff && a.caps&capMariaProgress != 0 && a.st > sAuth {
		return // a MariaDB progress report
	}
	res := a.last()
	switch a.st {
	case sGreeting:
		a.greeting(res, m)
	case sAuth:
		a.auth(res, m, size)
	case sSimple:
		switch {
		case m[0] == 0x00:
			a.okPacket(res, m, "ok")
		case m[0] == 0xff:
			a.errPacket(res, m)
		case m[0] == 0xfe && size < 9:
			a.eofPacket(res, m, "eof")
		default:
			a.stop("expected OK, EOF or ERR")
			return
		}
		a.finish(false)
	case sString:
		if m[0] == 0xff {
			a.errPacket(res, m)
		} else {
			res.kind = "statistics"
		}
		a.finish(false)
	case sResult:
		a.resultStart(res, m)
	case sColDefs:
		col, ok := columnDef(m, a.caps)
		if !ok {
			a.stop("malformed column definition")
			return
		}
		res.cols = append(res.cols, col)
		a.defs--
		if a.defs == 0 {
			if a.binary {
				a.remember(a.mine(a.cur.stmt), res.cols)
			}
			a.afterColumns()
		}
	case sColEOF:
		if m[0] != 0xfe || size < 5 || size >= 9 {
			a.stop("expected EOF after column definitions")
			return
		}
		if a.cur.cursor && le16(m[3:])&statusCursorExists != 0 {
			a.eofPacket(res, m, res.kind)
			a.finish(false) // the rows come with COM_STMT_FETCH
			return
		}
		a.st = sRows
	case sRows:
		switch {
		case m[0] == 0xff:
			a.errPacket(res, m)
			a.finish(false)
		case a.terminator(m, size):
			if !a.rowsEnd(res, m) {
				return
			}
			if res.status&statusMoreResults != 0 && a.cur.kind != kFetch {
				a.newResult()
				a.st = sResult
				return
			}
			a.finish(false)
		case a.binary && m[0] != 0x00:
			a.stop("binary row without its 0x00 header")
		default:
			a.row(res, m)
		}
	case sPrepare:
		switch {
		case m[0] == 0xff:
			a.errPacket(res, m)
			a.finish(false)
		case m[0] == 0x00 && len(m) >= 12:
			a.stmt = le32(m[1:])
			ncols, nparams := int(le16(m[5:])), int(le16(m[7:]))
			res.kind, res.prepared, res.hasCols = "prepared", true, true
			res.params = nparams
			res.hasWarnings, res.warnings = true, le16(m[10:])
			switch {
			case !a.cur.mapped && len(a.c.stmts) < maxStmts:
				a.c.stmts[a.stmt] = a.cur.fp
				a.cur.mapped, a.cur.named = true, a.stmt
			case a.cur.mapped && a.cur.named != a.stmt && len(a.own) < maxStmts:
				a.own[a.cur.named] = a.stmt
			}
			a.phase, a.defs, a.after = 0, nparams, ncols
			if a.defs > 0 {
				a.st = sPrepDefs
			} else {
				a.prepNext()
			}
		default:
			a.stop("expected PREPARE_OK or ERR")
		}
	case sPrepDefs:
		if a.phase == 1 {
			col, ok := columnDef(m, a.caps)
			if !ok {
				a.stop("malformed column definition")
				return
			}
			res.cols = append(res.cols, col)
		}
		a.defs--
		if a.defs == 0 {
			if a.deprecateEOF() {
				a.prepNext()
			} else {
				a.st = sPrepEOF
			}
		}
	case sPrepEOF:
		if m[0] != 0xfe || size >= 9 {
			a.stop("expected EOF after definitions")
			return
		}
		a.prepNext()
	case sFieldList:
		switch {
		case m[0] == 0xff:
			a.errPacket(res, m)
			a.finish(false)
		case a.terminator(m, size):
			a.finish(false)
		default:
			col, ok := columnDef(m, a.caps)
			if !ok {
				a.stop("malformed column definition")
				return
			}
			res.cols = append(res.cols, col)
		}
	default:
		a.stop("server packet with no request to answer")
	}
}

// prepNext moves past a block of PREPARE_OK's definitions.
func (a *answers) prepNext() {
	if a.phase == 0 {
		a.phase, a.defs = 1, a.after
		if a.defs > 0 {
			a.st = sPrepDefs
			return
		}
	}
	a.remember(a.stmt, a.last().cols)
	a.finish(false)
}

// mine is this stream's id for the statement the client names id.
func (a *answers) mine(id uint32) uint32 {
	if m, ok := a.own[id]; ok {
		return m
	}
	return id
}

// remember keeps a statement's result columns for the binary rows of
// executions whose metadata the server leaves out (MariaDB's metadata
// cache) and of COM_STMT_FETCH.
func (a *answers) remember(stmt uint32, cols []column) {
	if _, ok := a.cols[stmt]; ok || len(a.cols) < maxStmts {
		a.cols[stmt] = cols
	}
}

func (a *answers) greeting(res *result, m []byte) {
	if m[0] == 0xff {
		a.errPacket(res, m)
		a.finish(false)
		return
	}
	if m[0] != 10 {
		a.stop(fmt.Sprintf("protocol version %d is not followed", m[0]))
		return
	}
	version, i := cstr(m[1:])
	i++
	// thread id (4), scramble (8), filler (1), capabilities (2); then
	// charset (1), status (2), capabilities (2), scramble length (1),
	// reserved (6), MariaDB's capabilities (4), the scramble's rest, the
	// plugin name.
	i += 4 + 8 + 1
	if i+2 > len(m) {
		a.stop("short greeting")
		return
	}
	caps := uint64(le16(m[i:]))
	i += 2
	var plugin []byte
	if i+16 <= len(m) {
		caps |= uint64(le16(m[i+3:])) << 16
		if caps&capLongPassword == 0 {
			caps |= uint64(le32(m[i+12:])) << 32
		}
		authLen := int(m[i+5])
		i += 16
		i += max(13, authLen-8)
		if caps&capPluginAuth != 0 && i < len(m) {
			plugin, _ = cstr(m[i:])
		}
	}
	a.srvCaps = caps
	res.kind = "greeting"
	res.extra = append(res.extra,
		compare.Field{Name: "protocol_version", Value: "10"},
		compare.Field{Name: "server_version", Value: compare.Value(version)},
		compare.Field{Name: "auth_plugin", Value: compare.Value(plugin)})
	a.finish(false)
}

func (a *answers) auth(res *result, m []byte, size int) {
	switch m[0] {
	case 0x00:
		res.kind = "ok"
		switch {
		case a.caps&(capCompress|capZstd) != 0:
			a.unfollowed = "compressed protocol is not followed"
		case a.caps&capOptionalMetadata != 0:
			a.unfollowed = "CLIENT_OPTIONAL_RESULTSET_METADATA is not followed"
		}
	case 0xff:
		a.errPacket(res, m)
	case 0xfe:
		plugin, _ := cstr(m[1:])
		res.kind = "auth_switch"
		res.extra = append(res.extra, compare.Field{Name: "auth_plugin", Value: compare.Value(plugin)})
	case 0x01:
		if size == 2 && m[1] == 0x03 {
			return // caching_sha2_password fast auth: OK or ERR follows
		}
		res.kind = "auth_more_data"
	case 0x02:
		plugin, _ := cstr(m[1:])
		res.kind = "auth_next_factor"
		res.extra = append(res.extra, compare.Field{Name: "auth_plugin", Value: compare.Value(plugin)})
	default:
		a.stop("unexpected authentication packet")
		return
	}
	a.finish(false)
}

// resultStart reads the first packet of a (next) result.
func (a *answers) resultStart(res *result, m []byte) {
	switch m[0] {
	case 0x00:
		if !a.okPacket(res, m, "ok") {
			return
		}
		if res.status&statusMoreResults != 0 {
			a.newResult()
			return
		}
		a.finish(false)
	case 0xff:
		a.errPacket(res, m)
		a.finish(false)
	case 0xfb:
		if a.binary {
			a.stop("LOCAL INFILE request to a binary command")
			return
		}
		// The client sends the file; the OK or ERR that follows ends
		// this result.
		res.infile = compare.Value(m[1:])
	default:
		n, k := myframe.LenEnc(m)
		if k == 0 || n == 0 || n >= 1<<16 {
			a.stop("bad column count")
			return
		}
		res.kind, res.hasCols, res.hasRows = "resultset", true, true
		res.ncolumns = int(n)
		follows := true
		if a.caps&capMariaCacheMetadata != 0 {
			if k >= len(m) {
				a.stop("column count without its metadata-follows byte")
				return
			}
			follows = m[k] != 0
		}
		if follows {
			a.defs = int(n)
			a.st = sColDefs
			return
		}
		res.cols = a.cols[a.mine(a.cur.stmt)]
		a.afterColumns()
	}
}

func (a *answers) afterColumns() {
	if a.deprecateEOF() {
		a.st = sRows
	} else {
		a.st = sColEOF
	}
}

// terminator tells whether a packet among rows is the EOF (or, with
// CLIENT_DEPRECATE_EOF, the OK with an 0xFE header) that ends them: a row
// starting with 0xFE has an 8-byte length after it and is longer.
func (a *answers) terminator(m []byte, size int) bool {
	if m[0] != 0xfe {
		return false
	}
	if a.deprecateEOF() {
		return size < maxPacket
	}
	return size < 9
}

func (a *answers) rowsEnd(res *result, m []byte) bool {
	if a.deprecateEOF() {
		return a.okPacket(res, m, res.kind)
	}
	if len(m) < 5 {
		a.stop("short EOF packet")
		return false
	}
	a.eofPacket(res, m, res.kind)
	return true
}

func (a *answers) row(res *result, m []byte) {
	res.rows++
	if !a.r.Spilled {
		res.rowHash.Feed(m)
	}
	if len(res.shown) >= compare.ShownRows {
		return
	}
	limit := max(a.c.lim.Sample, 1024)
	if a.r.Over {
		res.shown = append(res.shown, a.r.Hash.Value())
		return
	}
	var vals []string
	ok := false
	if a.binary {
		if len(res.cols) > 0 {
			vals, ok = binaryRow(m, res.cols)
		}
	} else {
		vals, ok = textRow(m, res.ncolumns)
	}
	if ok {
		res.shown = append(res.shown, renderRow(vals, limit))
	} else {
		res.shown = append(res.shown, compare.Value(m))
	}
}

// okPacket reads an OK packet (header 0x00, or 0xFE ending rows).
func (a *answers) okPacket(res *result, m []byte, kind string) bool {
	i := 1
	var v [2]uint64
	for j := range v {
		n, k := myframe.LenEnc(m[i:])
		if k == 0 {
			a.stop("malformed OK packet")
			return false
		}
		v[j] = n
		i += k
	}
	if i+4 > len(m) {
		a.stop("short OK packet")
		return false
	}
	res.kind = kind
	if kind == "ok" {
		res.hasOK, res.affected, res.insertID = true, v[0], v[1]
	}
	res.hasStatus, res.status = true, le16(m[i:])
	res.hasWarnings, res.warnings = true, le16(m[i+2:])
	// The info is length-encoded (MySQL's net_send_ok and MariaDB write
	// it so with or without CLIENT_SESSION_TRACK); session state changes
	// may follow it.
	rest := m[i+4:]
	if s, _, ok := lenencStr(rest); ok {
		rest = s
	}
	res.info = string(rest)
	return true
}

func (a *answers) eofPacket(res *result, m []byte, kind string) {
	res.kind = kind
	if len(m) >= 5 {
		res.hasWarnings, res.warnings = true, le16(m[1:])
		res.hasStatus, res.status = true, le16(m[3:])
	}
}

func (a *answers) errPacket(res *result, m []byte) {
	if res.kind == "" {
		res.kind = "error"
	}
	res.isErr = true
	a.isErr = true
	if len(m) < 3 {
		res.errCode = "?"
		return
	}
	code := strconv.Itoa(int(le16(m[1:])))
	msg := m[3:]
	if len(msg) >= 6 && msg[0] == '#' {
		code += " " + string(msg[1:6])
		msg = msg[6:]
	}
	res.errCode, res.errMsg = code, compare.Value(msg)
}

// finish completes the current answer.
func (a *answers) finish(truncated bool) {
	n := 2
	for _, res := range a.res {
		n += 16 + len(res.shown)
	}
	fields := make([]compare.Field, 0, n)
	for i, res := range a.res {
		if res.kind == "" && !res.isErr && res.infile == "" && i > 0 && truncated {
			continue
		}
		fields = a.fields(res, fields, i)
	}
	limit := a.c.lim.Sample
	ans := compare.Answer{Req: a.cur.id, Fields: fields, Error: a.isErr, Truncated: truncated, Size: a.size,
		Render: func() string { return compare.FieldsSample(fields, limit) }}
	a.out = append(a.out, ans)
	a.cur, a.st = nil, sIdle
	a.res = a.res[:0]
	a.size = 0
}

func (a *answers) fields(res *result, out []compare.Field, i int) []compare.Field {
	prefix := ""
	if i > 0 {
		prefix = "result[" + strconv.Itoa(i) + "]."
	}
	add := func(name, value string) { out = append(out, compare.Field{Name: prefix + name, Value: value}) }
	kind := res.kind
	if kind == "" {
		kind = "none"
	}
	add("result", kind)
	for _, f := range res.extra {
		add(f.Name, f.Value)
	}
	if res.infile != "" {
		add("local_infile", res.infile)
	}
	if res.prepared {
		add("params", strconv.Itoa(res.params))
	}
	if res.hasCols {
		b := a.c.strsBuf[:0]
		for j, c := range res.cols {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, c.name...)
		}
		add("columns", a.c.intern(b))
		b = b[:0]
		for j, c := range res.cols {
			if j > 0 {
				b = append(b, ',')
			}
			b = c.appendTypeName(b)
		}
		add("column_types", a.c.intern(b))
		a.c.strsBuf = b
	}
	if res.hasRows {
		add("rows", strconv.Itoa(res.rows))
		add("row_data", res.rowHash.Value())
		for j, r := range res.shown {
			add(compare.RowField(j), r)
		}
	}
	if res.hasOK {
		add("affected_rows", strconv.FormatUint(res.affected, 10))
		add("last_insert_id", strconv.FormatUint(res.insertID, 10))
	}
	if res.hasWarnings {
		add("warnings", strconv.Itoa(int(res.warnings)))
	}
	if res.hasStatus {
		add("status_flags", statusString(res.status))
	}
	if res.info != "" {
		add("info", compare.Value([]byte(res.info)))
	}
	if res.isErr {
		add("error", res.errCode)
		add("error_message", res.errMsg)
	}
	return out
}
