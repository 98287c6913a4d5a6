// Package cmpmysql cuts MySQL / MariaDB client/server protocol connections
// into requests and answers for the response comparison (package compare).
//
// # Requests and their keys
//
// Request 0 is implied: the server's greeting answers it (Key "CONNECT").
// The HandshakeResponse is "LOGIN" (sample: user, database and plugin,
// the auth data redacted); an SSLRequest is "SSL", with no answer, and
// both streams stop being cut after it (TLS follows). A client packet
// that answers the server inside an authentication exchange (after an
// AuthSwitchRequest or AuthMoreData) is "AUTH". Commands: COM_QUERY is
// the statement's compare.Fingerprint; COM_STMT_PREPARE is "PREPARE " and
// the fingerprint; COM_STMT_EXECUTE (and MariaDB's COM_STMT_BULK_EXECUTE)
// "EXECUTE " and the prepared statement's fingerprint, COM_STMT_FETCH
// "FETCH " and it; the others are named without their COM_ ("PING",
// "INIT_DB", "STATISTICS", "FIELD_LIST", "SET_OPTION", "STMT_RESET",
// "RESET_CONNECTION", "CHANGE_USER", "PROCESS_INFO", ...). COM_QUIT
// ("QUIT"), COM_STMT_CLOSE ("STMT_CLOSE") and COM_STMT_SEND_LONG_DATA
// ("STMT_SEND_LONG_DATA") get no answer. The client's LOCAL INFILE content
// belongs to the COM_QUERY that asked for it: its packets are told from
// commands by their sequence ids (a command starts at 0), so the client's
// stream is cut without looking at the server's.
//
// A statement id maps to the fingerprint of the COM_STMT_PREPARE whose
// PREPARE_OK any server stream of the connection decoded first (the
// client executes the ids production gave it). Another server may number
// the same statement otherwise (a replayer renumbers the client's
// commands for it, see myframe.Renumber): each answer stream pairs its
// own ids with those by prepare, and finds a statement's columns by its
// own.
//
// # Answers
//
// See answers.go for the fields of each kind of answer. The server's
// stream is decoded along the client's requests (which command, the
// client's capabilities), so server bytes that arrive before the request
// they answer are held (up to maxHeld) until Requests has seen it; the
// answer comes out of the next Feed or End.
package cmpmysql

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/myframe"
)

// Protocol returns the MySQL / MariaDB protocol.
func Protocol() compare.Protocol { return protocol{} }

type protocol struct{}

func (protocol) Name() string { return "mysql" }

func (protocol) New(lim compare.Limits) compare.Conversation {
	lim = lim.WithDefaults()
	c := &conv{lim: lim, stmts: map[uint32]string{}}
	c.in.Keep = keepFor(lim)
	c.log = append(c.log, &req{id: 0, kind: kGreeting})
	return c
}

// keepFor is how much of one message a decoder keeps: enough for the
// fields, at least the Body limit (a statement's text), at most 16 MiB.
func keepFor(lim compare.Limits) int { return min(max(lim.Body, 64<<10), 16<<20) }

const (
	// maxHeld bounds the server bytes held ahead of their request.
	maxHeld = 1 << 20
	// maxLog bounds the requests kept for answer streams that lag behind;
	// one further behind than that is stopped.
	maxLog = 1 << 16
	// maxStmts bounds the statement id → fingerprint map.
	maxStmts = 1 << 14
)

// Capability flags (the upper 32 bits are MariaDB's extended ones).
const (
	capLongPassword       = 1 << 0 // CLIENT_MYSQL for MariaDB
	capConnectWithDB      = 1 << 3
	capCompress           = 1 << 5
	capProtocol41         = 1 << 9
	capSSL                = 1 << 11
	capSecureConn         = 1 << 15
	capPluginAuth         = 1 << 19
	capConnectAttrs       = 1 << 20
	capPluginLenenc       = 1 << 21
	capSessionTrack       = 1 << 23
	capDeprecateEOF       = 1 << 24
	capOptionalMetadata   = 1 << 25
	capZstd               = 1 << 26
	capQueryAttributes    = 1 << 27
	capMariaProgress      = 1 << 32
	capMariaExtMetadata   = 1 << 35
	capMariaCacheMetadata = 1 << 36
)

// What a request's answer looks like.
type kind uint8

const (
	kNone      kind = iota // no answer
	kGreeting              // the implied request 0
	kAuth                  // an authentication step (LOGIN, AUTH, CHANGE_USER)
	kSSL                   // SSLRequest: the streams stop
	kSimple                // one OK, EOF or ERR
	kString                // one packet of any content (COM_STATISTICS)
	kQuery                 // text results, LOCAL INFILE
	kExecute               // binary results
	kPrepare               // PREPARE_OK and its definitions
	kFetch                 // binary rows
	kFieldList             // column definitions up to an EOF
)

// req is one request as the answer streams need it.
type req struct {
	id     int
	kind   kind
	cmd    byte
	stmt   uint32 // EXECUTE, FETCH, STMT_CLOSE, STMT_RESET
	cursor bool   // EXECUTE opening a cursor: its answer ends at the definitions
	fp     string // PREPARE: the statement's fingerprint
	mapped bool   // PREPARE: a PREPARE_OK has mapped its id
	named  uint32 // PREPARE: the id that first PREPARE_OK gave, the one the client names
	caps   uint64 // LOGIN: the client's capabilities
}

// Client-side phases.
const (
	phHandshake = iota // the HandshakeResponse or SSLRequest comes next
	phAuth             // packets with a sequence id above 0 are AUTH replies
	phCommand          // ... are LOCAL INFILE content
	phStopped
)

type conv struct {
	lim  compare.Limits
	in   reader
	next int // the next request's ID; 0 until the implied CONNECT is out
	ph   int
	caps uint64 // the client's capabilities

	// log holds the requests not yet taken by every answer stream;
	// log[0] is request index base.
	log     []*req
	base    int
	streams []*answers

	stmts map[uint32]string

	fps     map[string]string // statements' fingerprints, by their text
	strs    map[string]string // column lists met, by their text
	strsBuf []byte
}

// maxInterned bounds the fingerprints and column lists a conversation
// remembers, so that a repeated statement costs no fingerprinting.
const maxInterned = 256

// fingerprint is compare.Fingerprint of sql, remembered.
func (c *conv) fingerprint(sql []byte) string {
	if fp, ok := c.fps[string(sql)]; ok {
		return fp
	}
	fp := compare.Fingerprint(string(sql))
	if len(sql) <= 4<<10 && len(c.fps) < maxInterned {
		if c.fps == nil {
			c.fps = make(map[string]string)
		}
		c.fps[string(sql)] = fp
	}
	return fp
}

// intern is compare.Value(b), remembered.
func (c *conv) intern(b []byte) string {
	if s, ok := c.strs[string(b)]; ok {
		return s
	}
	s := compare.Value(b)
	if len(b) <= 4<<10 && len(c.strs) < maxInterned {
		if c.strs == nil {
			c.strs = make(map[string]string)
		}
		c.strs[string(b)] = s
	}
	return s
}

// connect returns the implied request 0 the first time: the greeting
// answers it.
func (c *conv) connect(out []compare.Request) []compare.Request {
	if c.next == 0 {
		c.next = 1
		out = append(out, compare.Request{ID: 0, Key: "CONNECT", Sample: "(connect)"})
	}
	return out
}

func (c *conv) Requests(b []byte) []compare.Request {
	out := c.connect(nil)
	for len(b) > 0 && c.ph != phStopped {
		n, done := c.in.feed(b)
		b = b[n:]
		if done {
			if r, ok := c.message(); ok {
				out = append(out, r)
			}
		}
	}
	return out
}

func (c *conv) EndRequests() []compare.Request {
	out := c.connect(nil)
	if c.ph == phStopped || c.in.idle() {
		return out
	}
	c.ph = phStopped
	r := compare.Request{ID: c.next, Key: "PARTIAL", Partial: true, NoAnswer: true, Size: c.in.wire + c.in.nh,
		Sample: compare.Sample(c.in.Buf, c.lim.Sample)}
	c.next++
	return append(out, r)
}

// stop ends the cutting of the client's stream: the request says why.
func (c *conv) stop(why string) (compare.Request, bool) {
	c.ph = phStopped
	r := compare.Request{ID: c.next, Key: "MALFORMED", NoAnswer: true, Size: c.in.wire, Sample: why}
	c.next++
	return r, true
}

// add logs a request for the answer streams and returns it.
func (c *conv) add(r *req, key, sample string, noAnswer bool) (compare.Request, bool) {
	r.id = c.next
	c.next++
	if r.kind == kNone {
		noAnswer = true
	}
	c.log = append(c.log, r)
	c.trim()
	limit := c.lim.Sample
	return compare.Request{ID: r.id, Key: key, NoAnswer: noAnswer, Size: c.in.wire,
		Render: func() string { return compare.Sample([]byte(sample), limit) }}, true
}

// trim drops the logged requests every answer stream has taken, and the
// oldest ones beyond maxLog (a stream that far behind is stopped when it
// next needs one).
func (c *conv) trim() {
	low := c.base + len(c.log)
	for _, a := range c.streams {
		low = min(low, a.pos)
	}
	if len(c.log) > maxLog {
		low = max(low, c.base+len(c.log)-maxLog)
	}
	if k := low - c.base; k > len(c.log)/2 && k > 16 {
		c.log = append(c.log[:0:0], c.log[k:]...)
		c.base = low
	}
}

func (c *conv) message() (compare.Request, bool) {
	m := c.in.Buf
	switch c.ph {
	case phHandshake:
		return c.handshake(m)
	case phAuth, phCommand:
		if c.in.seq != 0 {
			if c.ph == phAuth {
				return c.add(&req{kind: kAuth}, "AUTH", "AUTH "+c.secret(m), false)
			}
			return compare.Request{}, false // LOCAL INFILE content: its COM_QUERY's
		}
		if c.ph == phAuth && c.caps&(capCompress|capZstd) != 0 {
			return c.stop("compressed protocol is not followed")
		}
		return c.command(m)
	}
	return compare.Request{}, false
}

// secret renders authentication data for a sample: redacted unless the
// limits show secrets.
func (c *conv) secret(b []byte) string {
	if c.lim.ShowSecrets {
		return hex.EncodeToString(b)
	}
	return compare.Redacted
}

func (c *conv) handshake(m []byte) (compare.Request, bool) {
	if len(m) < 4 {
		return c.stop("short HandshakeResponse")
	}
	caps := uint64(le32(m))
	if caps&capProtocol41 == 0 {
		return c.stop("HandshakeResponse320 (no CLIENT_PROTOCOL_41) is not followed")
	}
	if caps&capSSL != 0 {
		r, ok := c.add(&req{kind: kSSL}, "SSL", "SSLRequest", true)
		c.ph = phStopped
		return r, ok
	}
	if len(m) < 32 {
		return c.stop("short HandshakeResponse41")
	}
	if caps&capLongPassword == 0 {
		// A MariaDB client talking to MariaDB: its extended capabilities
		// are in the last 4 reserved bytes.
		caps |= uint64(le32(m[28:])) << 32
	}
	c.caps = caps
	rest := m[32:]
	user, n := cstr(rest)
	rest = rest[n:]
	var auth []byte
	switch {
	case caps&capPluginLenenc != 0:
		s, k, ok := lenencStr(rest)
		if !ok {
			return c.stop("HandshakeResponse41: truncated auth data")
		}
		auth, rest = s, rest[k:]
	case caps&capSecureConn != 0:
		if len(rest) == 0 || int(rest[0]) > len(rest)-1 {
			return c.stop("HandshakeResponse41: truncated auth data")
		}
		auth, rest = rest[1:1+int(rest[0])], rest[1+int(rest[0]):]
	default:
		auth, n = cstr(rest)
		rest = rest[n:]
	}
	var db, plugin []byte
	if caps&capConnectWithDB != 0 {
		db, n = cstr(rest)
		rest = rest[n:]
	}
	if caps&capPluginAuth != 0 {
		plugin, _ = cstr(rest)
	}
	c.ph = phAuth
	sample := fmt.Sprintf("LOGIN user=%s database=%s plugin=%s auth=%s", compare.Value(user), compare.Value(db), compare.Value(plugin), c.secret(auth))
	return c.add(&req{kind: kAuth, caps: caps}, "LOGIN", sample, false)
}

// Command names, for keys (without COM_) and samples.
var commandNames = [256]string{
	0x01: "QUIT", 0x02: "INIT_DB", 0x03: "QUERY", 0x04: "FIELD_LIST", 0x05: "CREATE_DB",
	0x06: "DROP_DB", 0x07: "REFRESH", 0x08: "SHUTDOWN", 0x09: "STATISTICS", 0x0a: "PROCESS_INFO",
	0x0c: "PROCESS_KILL", 0x0d: "DEBUG", 0x0e: "PING", 0x11: "CHANGE_USER", 0x16: "STMT_PREPARE",
	0x17: "STMT_EXECUTE", 0x18: "STMT_SEND_LONG_DATA", 0x19: "STMT_CLOSE", 0x1a: "STMT_RESET",
	0x1b: "SET_OPTION", 0x1c: "STMT_FETCH", 0x1f: "RESET_CONNECTION", 0xfa: "STMT_BULK_EXECUTE",
}

func (c *conv) command(m []byte) (compare.Request, bool) {
	if len(m) == 0 {
		return c.stop("empty command packet")
	}
	c.ph = phCommand
	cmd := m[0]
	name := commandNames[cmd]
	arg := m[1:]
	r := &req{cmd: cmd}
	text := "COM_" + name
	switch cmd {
	case 0x01:
		r.kind = kNone
		c.ph = phStopped // nothing follows COM_QUIT
	case 0x03:
		r.kind = kQuery
		sql, ok := c.queryText(arg)
		if !ok {
			return c.stop("COM_QUERY: malformed query attributes")
		}
		key := c.fingerprint(sql)
		if key == "" {
			key = "(empty query)"
		}
		return c.add(r, key, "COM_QUERY "+string(sql), false)
	case 0x16:
		r.kind = kPrepare
		r.fp = c.fingerprint(arg)
		return c.add(r, "PREPARE "+r.fp, "COM_STMT_PREPARE "+string(arg), false)
	case 0x17, 0xfa, 0x1c, 0x19, 0x18, 0x1a:
		if len(arg) < 4 {
			return c.stop("COM_" + name + ": short packet")
		}
		r.stmt = le32(arg)
		fp, known := c.stmts[r.stmt]
		if !known {
			fp = "(unknown statement)"
		}
		switch cmd {
		case 0x17, 0xfa:
			r.kind = kExecute
			if cmd == 0x17 && len(arg) >= 5 {
				r.cursor = arg[4]&0x07 != 0
			}
			return c.add(r, "EXECUTE "+fp, fmt.Sprintf("COM_%s stmt=%d %s", name, r.stmt, fp), false)
		case 0x1c:
			r.kind = kFetch
			return c.add(r, "FETCH "+fp, fmt.Sprintf("COM_STMT_FETCH stmt=%d %s", r.stmt, fp), false)
		case 0x19:
			delete(c.stmts, r.stmt)
		case 0x1a:
			r.kind = kSimple
		}
		text = fmt.Sprintf("COM_%s stmt=%d", name, r.stmt)
	case 0x02, 0x05, 0x06, 0x04:
		r.kind = kSimple
		if cmd == 0x04 {
			r.kind = kFieldList
		}
		table, _ := cstr(arg)
		text += " " + string(table)
	case 0x07, 0x08, 0x0c, 0x0d, 0x0e, 0x1b, 0x1f:
		r.kind = kSimple
	case 0x09:
		r.kind = kString
	case 0x0a:
		r.kind = kQuery
	case 0x11:
		r.kind = kAuth
		user, _ := cstr(arg)
		text = "COM_CHANGE_USER user=" + compare.Value(user) + " auth=" + compare.Redacted
		c.ph = phAuth
	default:
		return c.stop(fmt.Sprintf("command 0x%02x is not followed", cmd))
	}
	return c.add(r, name, text, false)
}

// queryText is COM_QUERY's statement, after the query attributes when
// the client negotiated CLIENT_QUERY_ATTRIBUTES.
func (c *conv) queryText(arg []byte) ([]byte, bool) {
	if c.caps&capQueryAttributes == 0 {
		return arg, true
	}
	count, k := myframe.LenEnc(arg)
	if k == 0 {
		return nil, false
	}
	arg = arg[k:]
	_, k = myframe.LenEnc(arg) // parameter set count, always 1
	if k == 0 {
		return nil, false
	}
	arg = arg[k:]
	if count == 0 {
		return arg, true
	}
	if count > 1<<16 {
		return nil, false
	}
	n := int(count)
	nb := (n + 7) / 8
	if len(arg) < nb+1 {
		return nil, false
	}
	nulls := arg[:nb]
	bound := arg[nb]
	arg = arg[nb+1:]
	if bound != 1 {
		return nil, false // the types are not sent: the values cannot be skipped
	}
	types := make([]column, n)
	for i := range types {
		if len(arg) < 2 {
			return nil, false
		}
		types[i].typ, types[i].unsigned = arg[0], arg[1]&0x80 != 0
		_, k, ok := lenencStr(arg[2:])
		if !ok {
			return nil, false
		}
		arg = arg[2+k:]
	}
	for i := range types {
		if nulls[i/8]&(1<<(i%8)) != 0 {
			continue
		}
		_, k, ok := binaryValue(arg, types[i])
		if !ok {
			return nil, false
		}
		arg = arg[k:]
	}
	return arg, true
}

func (c *conv) Answers() compare.Answers {
	a := &answers{c: c, pos: c.base, cols: map[uint32][]column{}, own: map[uint32]uint32{}}
	a.r.Keep = keepFor(c.lim)
	c.streams = append(c.streams, a)
	return a
}

// statusNames are the server status flags an answer shows: the session's
// transaction state. The others (no index used, query was slow, more
// results, cursor, metadata changed, session state changed) are noise or
// structure.
var statusNames = []struct {
	bit  uint16
	name string
}{{0x0001, "in_trans"}, {0x0002, "autocommit"}, {0x2000, "in_trans_readonly"}, {0x0200, "no_backslash_escapes"}}

func statusString(st uint16) string {
	var parts []string
	for _, s := range statusNames {
		if st&s.bit != 0 {
			parts = append(parts, s.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}
