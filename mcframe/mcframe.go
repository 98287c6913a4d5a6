// Package mcframe follows both directions of one memcached session (text
// and meta protocol) and counts answer units, so the replayer can tell
// when the target has answered what production had answered, whatever the
// sizes of the values.
//
// It owns memcached's ASCII protocol: the text commands (storage commands
// set/add/replace/append/prepend/cas with their data blocks; get, gets,
// gat, gats; delete, incr, decr, touch, flush_all, version, verbosity,
// stats, quit, and any other word, which memcached answers with one line)
// and the meta commands (mg, ms with its data block, md, ma, mn, me).
//
// # Answer units
//
// A request is a complete command that calls for an answer, and each is
// one answer unit:
//   - a storage, delete, incr/decr, touch, flush_all, verbosity, version or
//     unknown command: complete at its one answer line (STORED, DELETED, a
//     number, OK, VERSION …, or ERROR, CLIENT_ERROR …, SERVER_ERROR …).
//   - get/gets/gat/gats with any number of keys: complete at END, after
//     its VALUE blocks, or at an error line.
//   - stats [args]: complete at END after its STAT (ITEM, PREFIX …) lines,
//     or at a first line RESET or OK ("stats reset", "stats detail on"), or
//     at an error line.
//   - a meta command: complete at its answer (HD, VA and its data block, EN,
//     NF, NS, EX, MN, ME, or an error line).
//
// A text command with "noreply" (its last token, on the commands that
// take it) and quit call for no answer: they are not requests.
//
// A meta command with the q flag is a request whose answer may be
// suppressed: memcached 1.6.18 leaves out mg's EN, ms's HD, md's HD and
// ma's HD and VA (protocol.txt also lists md's NF). Such a quiet request
// is complete at its own answer if one comes, or else as soon as an
// answer to a later request arrives, since memcached answers in order: a
// pipeline of quiet requests closed by mn is answered in full at the MN.
//
// Which request an answer belongs to is decided as it arrives: the
// oldest awaiting request that can have it, where a quiet request can
// have an answer whose code it does not suppress (or CLIENT_ERROR,
// SERVER_ERROR) and a request that asked for the O (opaque) or k (key)
// flag can have only an answer echoing them; the quiet requests passed
// over are complete. MN always answers the oldest mn, completing every
// request before it. With O or k flags, or a closing mn, this is exact.
// Without them it is a guess ("mg a q" then "ms b": an HD is credited to
// the quiet mg, a hit, though a miss of a and b's HD give the same
// bytes); the guess is corrected as soon as an answer arrives that the
// oldest non-quiet request cannot have, which completes it too, and at
// MN. Both sides of a replay make the same guesses on the same answers.
//
// # What it does not follow
//
// Err reports why it stopped; Requests and Answers no longer change then:
//   - ErrUnsupported: the binary protocol (a request starting with the
//     magic byte 0x80: deprecated, and rare next to the meta protocol that
//     replaced it), and commands whose answers are streams of their own
//     (watch, lru_crawler metadump and mgdump).
//   - ErrMalformed: a command memcached would misparse or answer by
//     closing the connection (a storage command line it rejects, after
//     which memcached reads the data block as a command; a key over 250
//     bytes; a data block not followed by CRLF), and server bytes that are
//     not answers (a line not ended by CRLF, a VALUE or VA line without a
//     valid length, an answer no awaiting request can have).
//   - ErrTooLong: a line over MaxLine (memcached closes the connection on
//     a command line over 2048 bytes that is not a get; long get lines are
//     skipped, not buffered).
//   - ErrUnpaired: an answer while no request awaits one: a noreply
//     command that memcached answered after all (some errors), or a
//     session captured from its middle.
//   - ErrPipeline: more than maxPending entries awaiting answers.
//
// # Use
//
// The framer must see a command's bytes (Client) before the server's
// answer to it (Server): the replayer feeds the client bytes before
// sending them, and capture order guarantees it on the capture side.
// Client and Server take one mutex, so an answer that arrives while Client
// runs waits for it.
//
// There is no server-side memcached parser in Go to compare with.
// github.com/bradfitz/gomemcache, a client, is the reference for the
// answers it reads: the tests run it over the same bytes and check that
// get/gets answers (VALUE blocks and END) end where it stops reading, and
// that the commands it sends are counted as the framer's requests; the
// meta protocol, stats, quiet mode and noreply are covered by table tests
// (their expectations taken from memcached 1.6.18), the random grammar
// test, and traffic captured from memcached 1.6.18
// (testdata/memcached.pcap).
//
// mcframe imports only the standard library and internal/framekit (the
// framers' shared lock, counts and line buffer), which does too.
package mcframe

import (
	"errors"
	"fmt"
	"hash/maphash"

	"github.com/stackcopy/stackcopy/internal/framekit"
)

// MaxLine bounds a command line (but a get line, whose keys are skipped)
// and an answer line. memcached itself closes a connection whose command
// line grows over 2048 bytes (get lines aside); its answer lines are a
// key (at most 250 bytes) and a few numbers.
const MaxLine = 8 << 10

// maxKey is memcached's KEY_MAX_LENGTH.
const maxKey = 250

// maxPending bounds the entries of requests awaiting answers. Runs of
// non-quiet requests of one kind share an entry; each quiet request has
// its own.
const maxPending = 256

// Why a framer stopped following the session, as returned (wrapped) by Err.
var (
	ErrMalformed   = errors.New("mcframe: malformed memcached traffic")
	ErrTooLong     = errors.New("mcframe: line longer than MaxLine")
	ErrPipeline    = errors.New("mcframe: too many requests awaiting answers")
	ErrUnsupported = errors.New("mcframe: protocol or command not followed")
	ErrUnpaired    = errors.New("mcframe: answer while no request awaits one")
)

// Framer follows one session. Create it with New.
type Framer struct {
	sh framekit.Shell // the lock, the counts and the error
	c  client
	s  server
	q  queue
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

// Requests is the number of complete commands so far that call for an
// answer unit (noreply commands and quit do not).
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

// Request kinds: what their answers look like.
const (
	kLine  uint8 = iota // one line
	kStore              // one line (a storage command)
	kGet                // VALUE blocks, then END
	kStats              // lines, then END (or RESET, OK)
	kMg
	kMs
	kMd
	kMa
	kMn
	kMe
)

type entry struct {
	kind  uint8
	quiet bool
	n     int64 // requests in this entry (only plain ones merge)
	// Meta requests: hashes of the key and of the O token; kflag and
	// oflag tell whether the answer echoes them.
	key, opaque  uint64
	kflag, oflag bool
}

// queue is a ring of entries.
type queue struct {
	e          [maxPending]entry
	head, size int
}

func (q *queue) at(i int) *entry { return &q.e[(q.head+i)%maxPending] }

func (q *queue) push(e entry) bool {
	if plain := !e.quiet && !e.oflag && !e.kflag; plain && q.size > 0 {
		if t := q.at(q.size - 1); !t.quiet && !t.oflag && !t.kflag && t.kind == e.kind {
			t.n++
			return true
		}
	}
	if q.size == maxPending {
		return false
	}
	e.n = 1
	*q.at(q.size) = e
	q.size++
	return true
}

// done completes one request of the front entry.
func (q *queue) done() {
	e := q.at(0)
	e.n--
	if e.n == 0 {
		q.head = (q.head + 1) % maxPending
		q.size--
	}
}

var seed = maphash.MakeSeed()

// hash identifies a key or an opaque token; never 0.
func hash(b []byte) uint64 { return maphash.Bytes(seed, b) | 1 }

// tokens splits a line at spaces, as memcached's tokenize_command does
// (runs of spaces separate, leading spaces are skipped), into at most
// len(t) tokens; n counts them all.
func tokens(l []byte, t *[maxTokens][]byte) (n int) {
	start := -1
	for i := 0; i <= len(l); i++ {
		if i == len(l) || l[i] == ' ' {
			if start >= 0 {
				if n < len(t) {
					t[n] = l[start:i]
				}
				n++
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	return n
}

// maxTokens is how many tokens of a line are looked at: a cas line has
// 7, meta lines have a key and flags (only q, k, O and b matter, and
// memcached takes at most 24 tokens).
const maxTokens = 24

// parseUint parses decimal digits; false when empty, not digits, or
// above max.
func parseUint(b []byte, max uint64) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (max-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// Detect reports whether the first client bytes of a session look like
// memcached's ASCII protocol: a command word (case-sensitive, as memcached
// reads it) followed by a space or a line end. A prefix of one already
// detects ("ge"): a false positive costs little, the framer goes Err where
// the bytes break the grammar.
func Detect(first []byte) bool {
	if len(first) == 0 {
		return false
	}
	for _, w := range commandWords {
		if matchWord(first, w) {
			return true
		}
	}
	return false
}

var commandWords = [...]string{
	"set", "add", "replace", "append", "prepend", "cas", "get", "gets", "gat",
	"gats", "delete", "incr", "decr", "touch", "flush_all", "version",
	"verbosity", "stats", "quit", "mg", "ms", "md", "ma", "mn", "me",
}

func matchWord(p []byte, word string) bool {
	for i, c := range p {
		if i == len(word) {
			return c == ' ' || c == '\r' || c == '\n'
		}
		if c != word[i] {
			return false
		}
	}
	return true
}
