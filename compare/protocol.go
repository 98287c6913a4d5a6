// Package compare pairs each replayed request with production's answer (from
// the capture) and the target's answer (from the stack), message by
// message, compares them field by field, and reports what changed, grouped
// by endpoint.
//
// The protocol packages under compare/ (cmphttp, cmpresp, cmpmc, cmpmysql,
// cmppg) cut each direction of a connection into messages and say what a
// message's comparable fields are; this package owns pairing, noise
// (a baseline target and ignore rules), latency, grouping and the reports.
// It imports nothing of stackcopy: replay feeds it bytes, mirror wires it in.
package compare

// A Protocol cuts one protocol's connections into requests and answers.
type Protocol interface {
	// Name is the protocol's name as the report shows it ("http", "redis").
	Name() string
	// New starts one connection's decoding.
	New(lim Limits) Conversation
}

// Limits bound what a decoder keeps of one message.
type Limits struct {
	// Body is how many bytes of one body or value are kept whole for a
	// structural comparison (JSON); beyond it a value is compared by length
	// and hash.
	Body int
	// Sample is how many bytes of a message are kept as its sample.
	Sample int
	// ShowSecrets keeps passwords, Authorization, Cookie and the like in
	// samples; by default decoders replace them with Redacted.
	ShowSecrets bool
	// UnorderedArrays compares JSON arrays as multisets: an array whose
	// elements only changed order is identical.
	UnorderedArrays bool
}

// WithDefaults is l with each size that is not set (zero or less) taken
// from DefaultLimits, one by one: setting only ShowSecrets or
// UnorderedArrays keeps sensible bounds.
func (l Limits) WithDefaults() Limits {
	if l.Body <= 0 {
		l.Body = DefaultLimits.Body
	}
	if l.Sample <= 0 {
		l.Sample = DefaultLimits.Sample
	}
	return l
}

// DefaultLimits are the limits when none are configured.
var DefaultLimits = Limits{Body: 1 << 20, Sample: 4 << 10}

// Redacted replaces a secret in a sample.
const Redacted = "[redacted]"

// A Conversation is one connection's decoding state: the client's stream
// and, through Answers, each server's stream (production's, the target's, a
// baseline's), which a protocol may need to cut along the requests (HTTP
// HEAD, MySQL's command, memcached's noreply).
//
// Every method of a Conversation and of its Answers is called under one
// lock per connection, so they may share state freely; bytes of one
// stream arrive in order. A Conversation never panics on any input: what
// it cannot decode it reports (Answer.Malformed) and it then stops cutting
// that stream (the rest is one message compared by bytes, or dropped, but
// counted).
type Conversation interface {
	// Requests takes the client's next bytes and returns the requests they
	// complete, in order. Request IDs count from 0 on the connection and
	// include implied ones (a server-first greeting is answered to request
	// 0, which has no bytes of its own).
	Requests(b []byte) []Request
	// EndRequests says the client's stream ended; it returns a request cut
	// short (Partial) if one was in progress.
	EndRequests() []Request
	// Answers starts decoding one server's stream of this connection.
	Answers() Answers
}

// Answers cuts one server's stream into answers.
type Answers interface {
	// Feed takes the server's next bytes and returns the answers they
	// complete. An answer names the request it answers (Answer.Req); a
	// decoder that meets server bytes before the request they answer may
	// keep them (bounded) until Requests has seen it.
	Feed(b []byte) []Answer
	// End says the stream ended: an answer delimited by the close completes,
	// one cut short is returned with Truncated set.
	End() []Answer
}

// A Request is one client message.
type Request struct {
	// ID counts the connection's requests from 0, in the client's order.
	ID int
	// Key groups requests across connections: an HTTP method and path
	// template ("GET /users/{id}"), a Redis command ("GET"), a memcached
	// verb ("get"), a SQL statement's fingerprint. Keep it short and
	// free of values: the report has one group per key.
	Key string
	// NoAnswer: the protocol sends no answer to this request (memcached
	// noreply, MySQL COM_QUIT and COM_STMT_CLOSE, a Redis SUBSCRIBE's
	// later pushes are not answers).
	NoAnswer bool
	// Partial: the client's stream ended inside this request.
	Partial bool
	// Size is the request's length on the wire.
	Size int
	// Sample is the request as the report shows it (bounded by
	// Limits.Sample, secrets redacted): raw text for text protocols, a
	// rendering for binary ones ("COM_QUERY SELECT 1").
	Sample string
	// Render, when set and Sample is empty, renders Sample on demand: the
	// report keeps a few samples per group, so most are never shown and
	// need not be rendered.
	Render func() string
}

// An Answer is one server message, or the several messages that together
// answer one request (an HTTP response, a Redis reply, a MySQL result set,
// PostgreSQL's messages up to ReadyForQuery).
type Answer struct {
	// Req is the ID of the request this answers; -1 for a message that
	// answers none (a push, a notice between queries), which is counted
	// but not compared.
	Req int
	// Fields are what is compared, in a stable order, names unique: for
	// HTTP "status", "header:content-type", "body" or "json:$.a.b";
	// for Redis "type" and "value"; for SQL "result", "error", "columns",
	// "rows", "affected_rows". Values longer than the limits are
	// represented by Digest.
	Fields []Field
	// Error: the answer reports a failure in the protocol's terms (HTTP
	// 5xx, a Redis error, SQL ERR/ErrorResponse, memcached
	// SERVER_ERROR/CLIENT_ERROR/ERROR); the report counts errors that only
	// one side answered.
	Error bool
	// Truncated: the stream ended inside this answer.
	Truncated bool
	// Malformed, when set, says why the decoder could not read this
	// answer; it stops cutting the stream after it.
	Malformed string
	// Size is the answer's length on the wire.
	Size int
	// Sample is the answer as the report shows it (bounded, redacted);
	// Render, when set and Sample is empty, renders it on demand.
	Sample string
	Render func() string
	// Detail, when set, is a finer reading of one of Fields, the one
	// named Detail.Of (a JSON body's paths for "body"). The comparison
	// asks for it only when that field differs between two answers that
	// both have a Detail of it, and then compares the finer fields in its
	// place: identical bodies cost their hash only.
	Detail *Detail
}

// Detail is an answer's finer reading of one field (Answer.Detail).
type Detail struct {
	Of string
	// Fields returns the finer fields, in a stable order; it may be called
	// more than once, from the goroutine that compares.
	Fields func() []Field
}

// A Field is one comparable part of an answer.
type Field struct {
	Name  string
	Value string
}
