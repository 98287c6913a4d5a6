// Package respframe follows both directions of one Redis session (RESP2 and
// RESP3) and counts answer units, so the replayer can tell when the target
// has answered what production had answered, whatever the sizes of the
// replies.
//
// It owns the Redis wire protocol as clients and servers speak it: commands
// as arrays of bulk strings (what client libraries send) and inline
// commands ("PING\r\n", what redis-cli in a pipe or telnet sends) on the
// client side; every RESP2 and RESP3 type on the server side (simple
// string, error, integer, bulk string and its null $-1, array and its null
// *-1, nested; null, boolean, double, big number, bulk error, verbatim
// string, map, set, attribute, push).
//
// # Answer units
//
// A request is a complete command (an array of at least one bulk string, or
// an inline line of at least one word; "*0", "*-1" and empty inline lines
// are skipped by the server, so they are not requests). Each request is one
// answer unit, complete when its answer is:
//
//   - an ordinary command: its one reply (a top-level value; attributes
//     before it are not replies). Blocking commands (BLPOP, XREAD BLOCK)
//     are ordinary: one reply, however late. Pipelined commands are
//     answered in order.
//   - MULTI, each queued command and EXEC: one reply each (+OK, +QUEUED or
//     an error, and EXEC's array or error), so a transaction of k commands
//     is k+2 units.
//   - SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE ch1 … chN: complete once its N
//     confirmations have arrived (one per argument, duplicates included),
//     or at an error reply, which answers the whole command. Counting the
//     command once, at its last confirmation, is what "client request
//     answered" means for it: a client waiting for its subscriptions waits
//     for all of them.
//   - UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE ch1 … chN: likewise N
//     confirmations. Without arguments, one confirmation per subscription of
//     that kind, or one if there is none: the framer counts the session's
//     channels, patterns and shard channels from the subscription counts the
//     confirmations carry, and completes the command when its kind's count
//     reaches zero.
//   - HELLO: its reply; a map reply means the server now speaks RESP3, an
//     array reply RESP2, an error changes nothing. RESET: its reply, after
//     which the server speaks RESP2 and the session has no subscription.
//
// Pub/sub messages are not answers: in RESP2, while the session has
// subscriptions, top-level arrays whose first element is "message",
// "pmessage" or "smessage" are skipped; in RESP3 every push (>) is skipped,
// except subscription confirmations, which RESP3 sends as pushes and which
// count as above. Attributes (|) are skipped wherever they appear.
//
// # What it does not follow
//
// Err reports why it stopped; Requests and Answers no longer change then:
//   - ErrMalformed: bytes that are not RESP, or a command the server would
//     reject with a protocol error and close (bad multibulk or bulk length,
//     a missing '$', unbalanced quotes in an inline command).
//   - ErrTooLong, ErrTooDeep, ErrPipeline: a size bound (MaxLine, MaxDepth,
//     maxPending entries of commands awaiting answers).
//   - ErrUnsupported: commands after which answers no longer follow
//     requests one by one: CLIENT REPLY OFF or SKIP (replies suppressed),
//     MONITOR, SYNC, PSYNC and REPLCONF (streams of their own), and
//     SUBSCRIBE-family commands and HELLO inside MULTI (their effect comes
//     with EXEC's array).
//   - ErrUnpaired: a reply while no command awaits one (a server-first
//     error such as "max number of clients reached").
//   - ErrPubSub: subscription counts in confirmations that do not add up.
//
// # Use
//
// The framer must see a command's bytes (Client) before the server's reply
// to it (Server): the replayer feeds the client bytes before sending them,
// and capture order guarantees it on the capture side. Client and Server
// take one mutex, so a reply that arrives while Client runs waits for it.
//
// The framer is tested against github.com/gomodule/redigo's reply parser
// (RESP2 replies, and the command arrays clients send, which redigo also
// encodes for the random test); RESP3 types, which redigo does not parse,
// are covered by the random grammar test and by traffic captured from
// redis-server 7.0.15 (testdata/redis.pcap).
//
// respframe imports only the standard library and internal/framekit (the
// framers' shared lock, counts and line buffer), which does too.
package respframe

import (
	"errors"
	"fmt"

	"github.com/stackcopy/stackcopy/internal/framekit"
)

// MaxLine bounds a line: a simple string, error, integer or other
// line-type reply, a length line, or an inline command (Redis's own bound
// for inline commands, PROTO_INLINE_MAX_SIZE, is the same 64 KiB).
const MaxLine = 64 << 10

// MaxDepth bounds the nesting of aggregate replies. Real replies nest a few
// levels (XREAD: 4, COMMAND DOCS: about 8).
const MaxDepth = 64

// maxPending bounds the entries of commands awaiting their answers. Runs of
// ordinary commands share one entry, so only pub/sub, HELLO and RESET
// commands sent ahead of their answers use more.
const maxPending = 256

// Why a framer stopped following the session, as returned (wrapped) by Err.
var (
	ErrMalformed   = errors.New("respframe: malformed RESP")
	ErrTooLong     = errors.New("respframe: line longer than MaxLine")
	ErrTooDeep     = errors.New("respframe: aggregate nested deeper than MaxDepth")
	ErrPipeline    = errors.New("respframe: too many commands awaiting answers")
	ErrUnsupported = errors.New("respframe: command whose answers are not followed")
	ErrUnpaired    = errors.New("respframe: reply while no command awaits one")
	ErrPubSub      = errors.New("respframe: subscription counts do not add up")
)

// Framer follows one session. Create it with New.
type Framer struct {
	sh framekit.Shell // the lock, the counts and the error
	c  client
	s  server
	q  queue

	// Session state, as the server's replies show it.
	resp3  bool
	global int64 // channels + patterns, as the last confirmation counted them
	ch     int64 // channels
	pat    int64 // patterns
	shard  int64 // shard channels
}

// New returns a framer for one session (both directions), ready for the
// first bytes.
func New() *Framer {
	f := &Framer{}
	f.c.lb.Init(MaxLine)
	f.s.lb.Init(MaxLine)
	return f
}

// Client is shown the client's bytes, in order, in chunks of any size,
// before they are sent.
func (f *Framer) Client(p []byte) {
	f.sh.Lock()
	if !f.sh.Failed() {
		f.client(p)
		f.sh.Publish()
	}
	f.sh.Unlock()
}

// Server is shown the server's bytes, in order, in chunks of any size.
func (f *Framer) Server(p []byte) {
	f.sh.Lock()
	if !f.sh.Failed() {
		f.server(p)
		f.sh.Publish()
	}
	f.sh.Unlock()
}

// Requests is the number of complete commands so far; each calls for one
// answer unit.
func (f *Framer) Requests() int { return f.sh.Requests() }

// Answers is the number of answer units completed so far.
func (f *Framer) Answers() int { return f.sh.Answers() }

// Err is nil while the framer follows the session; then why it stopped.
func (f *Framer) Err() error { return f.sh.Err() }

// fail stops the framer: Requests and Answers keep what completed before
// the failing bytes, whatever the chunking, and change no more.
func (f *Framer) fail(side string, err error, why string) {
	if !f.sh.Failed() {
		f.sh.Fail(fmt.Errorf("%s: %s: %w", side, why, err))
	}
}

// Entry kinds in the queue of commands awaiting answers.
const (
	eReply    uint8 = iota // n ordinary commands, one reply each
	eHello                 // HELLO: its reply sets the protocol
	eReset                 // RESET: its reply resets the session
	eSub                   // a pub/sub command awaiting n confirmations
	eUnsubAll              // an UNSUBSCRIBE-family command without arguments
)

// Pub/sub kinds: the confirmation names, in an order where kind%3 is the
// class (channel, pattern, shard) and kind/3 tells unsubscription.
const (
	kSubscribe uint8 = iota
	kPsubscribe
	kSsubscribe
	kUnsubscribe
	kPunsubscribe
	kSunsubscribe
	kNone
)

var kindName = [...]string{"subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe"}

func pubsubKind(name []byte) uint8 {
	for k, n := range kindName {
		if string(name) == n {
			return uint8(k)
		}
	}
	return kNone
}

type entry struct {
	kind uint8
	sub  uint8 // pub/sub kind, for eSub and eUnsubAll
	n    int64 // eReply: commands; eSub: confirmations to go
}

// queue is a ring of entries.
type queue struct {
	e          [maxPending]entry
	head, size int
}

func (q *queue) front() *entry {
	if q.size == 0 {
		return nil
	}
	return &q.e[q.head]
}

func (q *queue) pop() {
	q.head = (q.head + 1) % maxPending
	q.size--
}

// push adds e, merging runs of ordinary commands; false when full.
func (q *queue) push(e entry) bool {
	if e.kind == eReply && q.size > 0 {
		if t := &q.e[(q.head+q.size-1)%maxPending]; t.kind == eReply {
			t.n++
			return true
		}
	}
	if q.size == maxPending {
		return false
	}
	q.e[(q.head+q.size)%maxPending] = e
	q.size++
	return true
}

// capture keeps up to 16 bytes of a string, lower-cased, to recognise
// command and confirmation names.
type capture struct {
	b    [16]byte
	n    uint8
	long bool
}

func (c *capture) reset() { c.n, c.long = 0, false }

func (c *capture) add(p []byte) {
	for _, x := range p {
		if c.n == uint8(len(c.b)) {
			c.long = true
			return
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		c.b[c.n] = x
		c.n++
	}
}

// is compares the captured string with lower, a lower-case name.
func (c *capture) is(lower string) bool {
	return !c.long && string(c.b[:c.n]) == lower
}

func (c *capture) bytes() []byte {
	if c.long {
		return nil
	}
	return c.b[:c.n]
}

// ParseInt parses what Redis's string2ll takes: an optional '-' and
// digits, no leading zero (but "0"), within int64.
func ParseInt(b []byte) (int64, bool) {
	neg := false
	if len(b) > 0 && b[0] == '-' {
		neg, b = true, b[1:]
	}
	if len(b) == 0 || len(b) > 19 || (b[0] == '0' && (len(b) > 1 || neg)) {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if n > 1<<63-1 {
		return 0, false
	}
	if neg {
		return -int64(n), true
	}
	return int64(n), true
}

// parseLen parses a reply's length or count the way redigo does (digits,
// leading zeros allowed) or "-1"; -2 when it is neither or above maxLen.
func parseLen(b []byte) int64 {
	if len(b) == 2 && b[0] == '-' && b[1] == '1' {
		return -1
	}
	if len(b) == 0 {
		return -2
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return -2
		}
		n = n*10 + int64(c-'0')
		if n > maxLen {
			return -2
		}
	}
	return n
}

// maxLen bounds lengths and counts (a terabyte): far above any real reply,
// low enough that sums never overflow.
const maxLen = 1 << 40

// Detect reports whether the first client bytes of a session look like
// Redis: '*' and a digit (a command array), or an inline command word from
// a small set of commands people type (PING, AUTH, HELLO, INFO …, in any
// case) followed by a space or line end. A prefix of these already
// detects ("*", "PI"): a false positive costs little, the framer goes Err
// where the bytes break the grammar. Words that memcached shares (GET,
// SET, INCR, DECR, APPEND, TOUCH, QUIT) are left out: they would claim
// memcached sessions.
func Detect(first []byte) bool {
	if len(first) == 0 {
		return false
	}
	if first[0] == '*' {
		return len(first) == 1 || ('0' <= first[1] && first[1] <= '9')
	}
	for _, w := range inlineWords {
		if matchWord(first, w) {
			return true
		}
	}
	return false
}

var inlineWords = [...]string{
	"ping", "auth", "hello", "info", "select", "echo", "dbsize", "keys",
	"exists", "del", "monitor", "client", "command", "config", "flushall",
	"flushdb", "subscribe", "psubscribe", "multi", "scan", "ttl", "type",
	"lpush", "rpush", "lrange", "hget", "hset", "hgetall", "mget", "mset",
}

// matchWord tells whether p is word (any case) followed by a space, CR or
// LF, or a prefix of that.
func matchWord(p []byte, word string) bool {
	for i, c := range p {
		if i == len(word) {
			return c == ' ' || c == '\r' || c == '\n'
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != word[i] {
			return false
		}
	}
	return true
}
