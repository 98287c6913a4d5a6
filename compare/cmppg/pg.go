// Package cmppg cuts PostgreSQL frontend/backend protocol 3 connections
// into requests and answers for the response comparison (package
// compare).
//
// # Requests and their keys
//
//   - SSLRequest, GSSENCRequest: "SSL_REQUEST", answered by the server's
//     one byte; after 'S' or 'G' neither stream is cut any further (TLS or
//     GSSAPI encryption follows). CancelRequest: "CANCEL", no answer.
//   - StartupMessage: "STARTUP" (sample: user, database,
//     application_name). PasswordMessage, SASLInitialResponse,
//     SASLResponse: "AUTH" (sample redacted).
//   - Query: the statement's compare.Fingerprint (several statements in
//     one Query have one fingerprint, ";"-joined).
//   - The extended protocol: Parse, Bind, Describe, Execute, Close and
//     Flush up to Sync are one request. Its key is the fingerprint of what
//     its first Execute runs (the portal's statement: a Parse in the same
//     batch or a named statement parsed before, kept in a bounded map);
//     without an Execute, "PREPARE " and the first Parse's fingerprint,
//     else "DESCRIBE", "CLOSE" or "SYNC".
//   - FunctionCall: "FUNCTION_CALL". Terminate: "TERMINATE", no answer.
//   - CopyData, CopyDone and CopyFail belong to the request that started
//     the COPY; so does a Sync right after CopyDone or CopyFail (libpq
//     sends one after an extended-protocol COPY: the server ignores the
//     one it reads during COPY, so one ReadyForQuery answers both).
//
// # Answers
//
// Every request but CancelRequest and Terminate gets one answer: the
// one-byte answer to SSL_REQUEST; in the startup phase the messages up to
// an Authentication request that asks the client for more (cleartext,
// MD5, GSS, SSPI, SASL, SASLContinue), ReadyForQuery or ErrorResponse;
// after it everything up to ReadyForQuery. The server's stream is thus cut
// on its own: its k-th answer answers request k.
//
// Fields, in this order (names exact):
//
//   - SSL_REQUEST: "result" = "N", "S" or "G".
//   - startup and AUTH: "result" = "ok" (ReadyForQuery), "auth" (the
//     server asks for more) or "error"; "auth" = the Authentication
//     messages' methods, comma-joined ("SASL SCRAM-SHA-256", "SASLContinue",
//     "SASLFinal,Ok", "MD5Password", ...); "param:<name>" for the
//     ParameterStatus of server_version, server_encoding,
//     client_encoding, DateStyle, IntervalStyle, TimeZone,
//     integer_datetimes, standard_conforming_strings (BackendKeyData is
//     random: never a field); "error" and "error_message".
//   - everything else: "result" = "ok" or "error", then each result (what
//     ends at CommandComplete, ErrorResponse, EmptyQueryResponse or
//     PortalSuspended; the first unprefixed, later ones prefixed
//     "result[1]." and so on): "command" (the CommandComplete tag, or
//     "(empty query)", "(portal suspended)"), "parameters"
//     (ParameterDescription's type OIDs), "columns" and "column_types"
//     (RowDescription's names and type OIDs, comma-joined), "rows",
//     "row_data" (the digest of all DataRows), "row[0]" … "row[9]"
//     (values joined by " | ", NULL as NULL), "copy_data" (the digest of
//     a COPY TO STDOUT's data), "value" (FunctionCallResponse), "error"
//     (the SQLSTATE) and "error_message".
//
// NoticeResponse, NotificationResponse and, after startup,
// ParameterStatus are never fields: they count in the size of the answer
// they come in; at the end of the stream, such messages with no answer
// around them are an answer to no request (Req -1). Error is set when an
// ErrorResponse is in the answer.
package cmppg

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/stackcopy/stackcopy/compare"
)

// Protocol returns the PostgreSQL protocol.
func Protocol() compare.Protocol { return protocol{} }

type protocol struct{}

func (protocol) Name() string { return "postgres" }

func (protocol) New(lim compare.Limits) compare.Conversation {
	lim = lim.WithDefaults()
	c := &conv{lim: lim, stmts: map[string]string{}, portals: map[string]string{}}
	c.in.Keep = keepFor(lim)
	c.in.untyped = true
	return c
}

func keepFor(lim compare.Limits) int { return min(max(lim.Body, 64<<10), 16<<20) }

const (
	codeCancel = 80877102
	codeSSL    = 80877103
	codeGSSENC = 80877104
	// maxNames bounds the statement and portal name maps.
	maxNames = 4096
)

type conv struct {
	keys     map[string]string // query keys, by query text
	lim      compare.Limits
	in       reader
	next     int
	afterSSL bool // the last startup packet was an SSLRequest: TLS may follow
	stopped  bool

	// The extended-protocol batch up to Sync.
	batch     []string // sample parts
	batchSize int
	execKey   string // the first Execute's statement fingerprint
	parseKey  string // the first Parse's fingerprint
	firstKind string // the first message's name, for a batch without either

	copyTail bool // CopyData, CopyDone, CopyFail belong to the last request
	syncTail bool // a Sync right now belongs to it too (after CopyDone/CopyFail)

	stmts   map[string]string // statement name → query
	portals map[string]string // portal name → query
}

func (c *conv) Requests(b []byte) []compare.Request {
	var out []compare.Request
	for len(b) > 0 && !c.stopped {
		n, done := c.in.feed(b)
		b = b[n:]
		if c.in.err != "" {
			if c.afterSSL && c.in.untyped {
				c.stopped = true // TLS or GSSAPI: the server said yes
				break
			}
			out = append(out, c.stop(c.in.err))
			break
		}
		if done {
			if r, ok := c.message(); ok {
				out = append(out, r)
			}
		}
	}
	return out
}

func (c *conv) EndRequests() []compare.Request {
	if c.stopped {
		return nil
	}
	c.stopped = true
	if c.in.idle() && len(c.batch) == 0 {
		return nil
	}
	size := c.batchSize
	if !c.in.idle() {
		size += c.in.wire()
	}
	r := compare.Request{ID: c.next, Key: c.batchKey(), Partial: true, Size: size,
		Sample: compare.Sample([]byte(strings.Join(c.batch, "; ")), c.lim.Sample)}
	if len(c.batch) == 0 {
		r.Key, r.NoAnswer, r.Sample = "PARTIAL", true, compare.Sample(c.in.Buf, c.lim.Sample)
	}
	c.next++
	return []compare.Request{r}
}

func (c *conv) stop(why string) compare.Request {
	c.stopped = true
	r := compare.Request{ID: c.next, Key: "MALFORMED", NoAnswer: true, Size: c.in.wire(), Sample: why}
	c.next++
	return r
}

func (c *conv) request(key, sample string, size int, noAnswer bool) (compare.Request, bool) {
	limit := c.lim.Sample
	r := compare.Request{ID: c.next, Key: key, NoAnswer: noAnswer, Size: size,
		Render: func() string { return compare.Sample([]byte(sample), limit) }}
	c.next++
	return r, true
}

func (c *conv) secret(b []byte) string {
	if c.lim.ShowSecrets {
		return compare.Value(b)
	}
	return compare.Redacted
}

func (c *conv) message() (compare.Request, bool) {
	m, size := c.in.Buf, 5+c.in.Size
	if c.in.untyped {
		return c.startup(m)
	}
	typ := c.in.typ
	switch typ {
	case 'd', 'c', 'f':
		if c.copyTail {
			c.syncTail = typ != 'd'
			return compare.Request{}, false
		}
		// Outside COPY the server ignores them: one more message of
		// the batch.
		c.batchAdd("COPY "+string(typ), size)
		return compare.Request{}, false
	case 'S':
		if c.syncTail && len(c.batch) == 0 {
			c.syncTail = false
			return compare.Request{}, false
		}
	}
	c.syncTail = false
	switch typ {
	case 'Q':
		q, _, _ := cstr(m)
		c.copyTail = true
		return c.request(c.queryKey(q), "Q "+string(q), size, false)
	case 'F':
		c.copyTail = false
		oid := 0
		if len(m) >= 4 {
			oid = be32(m)
		}
		return c.request("FUNCTION_CALL", fmt.Sprintf("FunctionCall oid=%d", oid), size, false)
	case 'X':
		c.stopped = true
		return c.request("TERMINATE", "Terminate", size, true)
	case 'p':
		c.copyTail = false
		return c.request("AUTH", "AUTH "+c.secret(m), size, false)
	case 'P':
		name, k, _ := cstr(m)
		q, _, _ := cstr(m[k:])
		fp := c.queryKey(q)
		c.name(c.stmts, string(name), string(q))
		if c.parseKey == "" {
			c.parseKey = fp
		}
		c.batchAdd(fmt.Sprintf("PARSE %q: %s", name, q), size)
		c.firstOf("PREPARE")
	case 'B':
		portal, k, _ := cstr(m)
		stmt, _, _ := cstr(m[k:])
		if q, ok := c.stmts[string(stmt)]; ok {
			c.name(c.portals, string(portal), q)
		} else {
			delete(c.portals, string(portal))
		}
		c.batchAdd(fmt.Sprintf("BIND %q %q%s", portal, stmt, bindParams(m)), size)
		c.firstOf("BIND")
	case 'D', 'C':
		what, name := byte(0), []byte(nil)
		if len(m) > 0 {
			what = m[0]
			name, _, _ = cstr(m[1:])
		}
		verb := "DESCRIBE"
		if typ == 'C' {
			verb = "CLOSE"
			switch what {
			case 'S':
				delete(c.stmts, string(name))
			case 'P':
				delete(c.portals, string(name))
			}
		}
		c.batchAdd(fmt.Sprintf("%s %c %q", verb, what, name), size)
		c.firstOf(verb)
	case 'E':
		portal, _, _ := cstr(m)
		if c.execKey == "" {
			if q, ok := c.portals[string(portal)]; ok {
				if k, ok := c.keys[q]; ok {
					c.execKey = k
				} else {
					c.execKey = c.queryKey([]byte(q))
				}
			} else {
				c.execKey = "(unknown portal)"
			}
		}
		c.batchAdd(fmt.Sprintf("EXECUTE %q", portal), size)
		c.firstOf("EXECUTE")
	case 'H':
		c.batchAdd("FLUSH", size)
		c.firstOf("FLUSH")
	case 'S':
		c.batchAdd("SYNC", size)
		c.firstOf("SYNC")
		key, sample, total := c.batchKey(), strings.Join(c.batch, "; "), c.batchSize
		c.batch, c.batchSize, c.execKey, c.parseKey, c.firstKind = c.batch[:0], 0, "", "", ""
		c.copyTail = true
		return c.request(key, sample, total, false)
	default:
		return c.stop(fmt.Sprintf("unknown message type %q", typ)), true
	}
	return compare.Request{}, false
}

// maxKeys bounds the query keys a conversation remembers, so that a
// repeated query costs no fingerprinting.
const maxKeys = 256

// queryKey is a query's key: its fingerprint, named when it is empty.
func (c *conv) queryKey(q []byte) string {
	if k, ok := c.keys[string(q)]; ok {
		return k
	}
	k := compare.Fingerprint(string(q))
	if k == "" {
		k = "(empty query)"
	}
	if len(q) <= 4<<10 && len(c.keys) < maxKeys {
		if c.keys == nil {
			c.keys = make(map[string]string)
		}
		c.keys[string(q)] = k
	}
	return k
}

func (c *conv) batchAdd(part string, size int) {
	c.copyTail = false
	if len(c.batch) < 64 {
		c.batch = append(c.batch, part)
	}
	c.batchSize += size
}

func (c *conv) firstOf(kind string) {
	if c.firstKind == "" {
		c.firstKind = kind
	}
}

func (c *conv) batchKey() string {
	switch {
	case c.execKey != "":
		return c.execKey
	case c.parseKey != "":
		return "PREPARE " + c.parseKey
	case c.firstKind == "FLUSH" || c.firstKind == "BIND":
		return "SYNC"
	case c.firstKind != "":
		return c.firstKind
	}
	return "SYNC"
}

// name records a statement's or portal's query, within bounds: a name
// past them is left out (executing it keys as unknown).
func (c *conv) name(m map[string]string, name, q string) {
	if _, ok := m[name]; ok || len(m) < maxNames {
		m[name] = q
	}
}

// bindParams renders Bind's parameter values for a sample.
func bindParams(m []byte) string {
	_, k, _ := cstr(m)
	_, k2, _ := cstr(m[k:])
	m = m[k+k2:]
	if len(m) < 2 {
		return ""
	}
	nf := be16(m)
	if nf < 0 || len(m) < 2+2*nf+2 {
		return ""
	}
	m = m[2+2*nf:]
	n := be16(m)
	m = m[2:]
	var parts []string
	for i := 0; i < n && len(m) >= 4; i++ {
		l := be32(m)
		m = m[4:]
		if l < 0 {
			parts = append(parts, fmt.Sprintf("$%d=NULL", i+1))
			continue
		}
		if l > len(m) {
			break
		}
		parts = append(parts, fmt.Sprintf("$%d=%s", i+1, compare.Value(m[:l])))
		m = m[l:]
	}
	if len(parts) == 0 {
		return ""
	}
	return " " + strings.Join(parts, " ")
}

func (c *conv) startup(m []byte) (compare.Request, bool) {
	size := 4 + c.in.Size
	code := binary.BigEndian.Uint32(m)
	c.afterSSL = false
	switch {
	case code == codeSSL || code == codeGSSENC:
		c.afterSSL = true
		what := "SSLRequest"
		if code == codeGSSENC {
			what = "GSSENCRequest"
		}
		return c.request("SSL_REQUEST", what, size, false)
	case code == codeCancel:
		c.stopped = true
		return c.request("CANCEL", "CancelRequest", size, true)
	case code>>16 == 3:
		c.in.untyped = false
		params := map[string]string{}
		rest := m[4:]
		for len(rest) > 1 {
			k, n, ok := cstr(rest)
			if !ok {
				break
			}
			v, n2, _ := cstr(rest[n:])
			params[string(k)] = compare.Value(v)
			rest = rest[n+n2:]
		}
		return c.request("STARTUP", fmt.Sprintf("STARTUP user=%s database=%s application_name=%s",
			params["user"], params["database"], params["application_name"]), size, false)
	}
	return c.stop(fmt.Sprintf("startup code %d is not followed", code)), true
}

func (c *conv) Answers() compare.Answers {
	a := &answers{lim: c.lim, untyped: true, startup: true}
	a.r.Keep = keepFor(c.lim)
	a.r.spill = a.spill
	return a
}
