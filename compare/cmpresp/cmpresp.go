// Package cmpresp cuts Redis connections (RESP2 and RESP3) into requests
// and answers for the response comparison of package compare.
//
// # Requests
//
// A request is a command: an array of bulk strings (what client libraries
// send) or an inline line of words (what redis-cli in a pipe or telnet
// sends, split the way Redis's sdssplitargs splits it). Empty arrays and
// empty inline lines are skipped, as Redis skips them. The key is the
// command name in upper case, followed for container commands (CONFIG,
// CLIENT, XINFO, OBJECT, SCRIPT, FUNCTION, ACL, CLUSTER, COMMAND, MEMORY,
// MODULE, XGROUP, PUBSUB, SLOWLOG, LATENCY, DEBUG) by the subcommand:
// "GET", "CONFIG GET", "CLIENT SETNAME". A name that is not a short
// printable word becomes "?", so that garbage makes one group. The sample
// is the command and its arguments, those that are not plain words
// quoted, with AUTH's, HELLO … AUTH's, MIGRATE AUTH/AUTH2's, CONFIG SET
// requirepass/masterauth's passwords and ACL SETUSER's password rules
// replaced by compare.Redacted unless Limits.ShowSecrets.
//
// # Answers
//
// Each reply is one answer, with these fields, in this order:
//
//   - "type": simple, error, integer, bulk, null, array, map, set, push,
//     double, boolean, verbatim, bignum, bulk_error.
//   - "error" (errors only): the error code, the message's first word
//     ("ERR", "WRONGTYPE", "NOSCRIPT").
//   - "length" (aggregates only): the number of elements (of pairs, for a
//     map).
//   - "value": a string's bytes as compare.Value renders them (an error's
//     whole message); an integer, double or big number as its text; a
//     boolean as true or false; a null as its wire form ("$-1", "*-1",
//     "_"), so that a RESP2 null bulk and a null array stay apart; an
//     aggregate as the digest of its wire bytes ("len=N crc=…"), with a
//     Detail of "value" that renders it canonically, nested (see
//     render.go: sets and maps sorted, nested attributes dropped): the
//     comparison reads the rendering only when the digests differ, so a
//     set that only changed order is identical, and a difference shows
//     as the renderings. An aggregate whose wire bytes outgrow
//     Limits.Body has no Detail (its digest is compared, in the order
//     received); one whose rendering would outgrow it renders as the
//     rendering's digest.
//   - "attribute" (when a RESP3 attribute preceded the reply): the
//     attribute's map, rendered. Attributes nested inside aggregates are
//     dropped.
//
// Error is set for '-' and '!' replies. The sample is the reply's wire
// bytes, bounded, rendered only when the report keeps it (Render), as is
// a request's.
//
// # What answers what
//
// Replies answer commands in order, except:
//   - RESP3 pushes ('>') answer nothing: Req is -1. That covers RESP3
//     pub/sub messages and subscription confirmations, so in RESP3 the
//     SUBSCRIBE and UNSUBSCRIBE families are NoAnswer (their answers are
//     pushes) and the connection goes on being paired. The decoder knows
//     RESP3 from the client's HELLO 3 (HELLO 2 and RESET go back to
//     RESP2): it cannot wait for the server's answer, since NoAnswer is
//     decided when the request is cut.
//   - In RESP2, a SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE with channels, and
//     MONITOR (in any protocol), put the connection in a mode where
//     replies no longer follow commands: the command's first reply
//     answers it, every later command is NoAnswer and every later reply
//     has Req -1, up to a RESET, whose "+RESET" reply answers it and ends
//     the mode. (The mode is entered even if the command fails, which only
//     happens on an ACL denial.)
//   - In RESP2, an UNSUBSCRIBE-family command with n > 1 arguments outside
//     that mode gets n confirmations: the first answers it, the others have
//     Req -1.
//   - CLIENT REPLY OFF: it and every later command are NoAnswer up to
//     CLIENT REPLY ON (answered) or RESET. CLIENT REPLY SKIP: it and the
//     next command are NoAnswer.
//
// A reply that arrives before the command it answers has been cut is kept
// (up to maxHeld replies) until it has; at the end of the stream, replies
// still unpaired have Req -1.
//
// # What it does not follow
//
// A command cut short by the end of the client stream is a Partial
// request, NoAnswer (a server does not answer half a command).
// Bytes that are not RESP (on either side), a line over MaxLine and
// aggregates nested over MaxDepth end the decoding of that stream: the
// client side reports one last request keyed "(malformed)", the server
// side one answer with Malformed set; the rest of the stream is dropped.
// Commands inside MULTI are answered +QUEUED and EXEC's array holds their
// results; a SUBSCRIBE or CLIENT REPLY inside MULTI takes effect at EXEC,
// which this decoder does not model.
//
// cmpresp imports only the standard library and compare.
package cmpresp

import (
	"github.com/stackcopy/stackcopy/compare"
)

// MaxLine bounds a line: a length line, an inline command, a simple
// string, error, integer or other line-type reply. It is Redis's own bound
// for inline commands (PROTO_INLINE_MAX_SIZE).
const MaxLine = 64 << 10

// MaxDepth bounds the nesting of aggregate replies; real replies nest a
// few levels (COMMAND DOCS about 8).
const MaxDepth = 64

// maxHeld bounds the replies kept while the command they answer has not
// been cut; beyond it the oldest goes out with Req -1.
const maxHeld = 256

// maxEntries bounds the commands awaiting a reply from the slowest server;
// beyond it the oldest are dropped (their replies then pair with later
// commands, which a comparison reports as differences).
const maxEntries = 1 << 20

// Protocol returns the Redis protocol.
func Protocol() compare.Protocol { return protocol{} }

type protocol struct{}

func (protocol) Name() string { return "redis" }

func (protocol) New(lim compare.Limits) compare.Conversation {
	lim = lim.WithDefaults()
	return &conv{lim: lim, pending: compare.Pending[entry]{Max: maxEntries}}
}

// Entry flags: what an awaited reply does to the answers' mode.
const (
	fPassive uint8 = 1 << iota // after this reply, replies answer nothing
	fReset                     // a RESET: its +RESET reply ends that mode
)

// entry is a command that awaits a reply.
type entry struct {
	id    int
	flags uint8
	extra int64 // further replies that answer nothing (RESP2 UNSUBSCRIBE a b)
}

// conv is one connection: the client decoder, the commands awaiting
// replies (shared by every server's Answers), and the Answers.
type conv struct {
	lim compare.Limits
	c   client

	pending compare.Pending[entry] // awaiting replies; Max set by New

	words, keys map[string]string // command names and keys met, by their bytes
	arena       []byte            // where requests' samples are copied to
}

func (c *conv) Answers() compare.Answers {
	a := &answers{c: c, cur: c.pending.Cursor()}
	a.init()
	return a
}
