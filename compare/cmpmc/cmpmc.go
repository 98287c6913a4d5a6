// Package cmpmc cuts memcached connections (the text protocol and the
// meta protocol) into requests and answers for the response comparison of
// package compare.
//
// # Requests
//
// A request is a command line, with its data block for the storage
// commands (set, add, replace, append, prepend, cas) and ms. The key is
// the verb ("get", "set", "mg"); a line whose first word is not a
// memcached command is keyed "?", an empty line "(empty)". The sample is
// the command line and, for storage commands, the start of the data,
// bounded by Limits.Sample. A text command ending in "noreply", and quit,
// are NoAnswer.
//
// # Answers
//
// Fields, by kind of answer:
//
//   - get, gets, gat, gats: "hits", the number of VALUE items; then per
//     item, in the server's order, "value:<key>" (the data as
//     compare.Value renders it, or its digest beyond Limits.Body),
//     "flags:<key>" and, when the server sent one (gets, gats),
//     "cas:<key>". The cas unique is the server's own counter: the
//     comparison's rules are expected to ignore it. A key repeated in one
//     answer gets "#2", "#3" after it. Beyond maxItems items the rest are
//     folded into one field "more" (their count and a digest of their keys,
//     flags and values).
//   - stats (any arguments): "status" (END, or the first line when it is
//     the only one: RESET, OK, an error) and "stats", the number of lines
//     before END. The statistics themselves (pid, uptime, counters) differ
//     on every server and every run, so they are not compared.
//   - incr, decr: "status" NUMBER and "value", the number.
//   - version: "status" VERSION and "version".
//   - errors: "status" (ERROR, CLIENT_ERROR, SERVER_ERROR) and, when the
//     line has one, "message". Error is set.
//   - any other one-line answer: "status", the line's first word (STORED,
//     NOT_STORED, EXISTS, NOT_FOUND, DELETED, TOUCHED, OK …).
//   - meta answers: "status" (HD, VA, EN, NF, NS, EX, MN, ME), "value" for
//     VA's data, and a field "flag:<f>" per returned flag (its token after
//     the letter), except c (cas), h (hit before), l (last access) and t
//     (remaining TTL), which depend on the server's history and clock
//     rather than on the replayed traffic.
//
// The sample is the answer's wire bytes, bounded.
//
// # What answers what
//
// Answers come in order. The meta protocol's quiet mode (flag q) breaks
// one-to-one pairing: the server leaves out a quiet request's usual
// answer (mg's EN, ms's and md's HD …) but still sends the others (mg's
// VA or HD on a hit, errors), typically up to an mn, whose MN it answers.
// Quiet requests are therefore NoAnswer, and an answer that belongs to
// one is emitted with Req -1 (counted, not compared). Which request an
// answer belongs to is decided as it arrives, among the requests not yet
// settled:
//   - MN answers the oldest mn; every request before it is settled.
//   - An answer echoing an O (opaque) token belongs to the request that
//     sent that token.
//   - Otherwise, as memcached answers in order, the oldest quiet request
//     before the oldest non-quiet one that can have the answer (by its
//     code: mg's VA or HD, ms's NS, EX or NF, md's NF or EX, ma's NF, NS or
//     EX, CLIENT_ERROR and SERVER_ERROR for all; and by the O and k tokens
//     it asked to be echoed) is taken to have it.
//   - Otherwise the oldest non-quiet request has it, if it can; if it
//     cannot, an earlier guess gave its answer to a quiet request, and the
//     answer goes to the first later request that can have it (up to
//     maxSkip on), the ones passed over going unanswered.
//
// Crediting an answer settles the quiet requests before it. With O tokens
// or a closing mn (how clients use quiet mode) this is exact. Without
// them it is a guess: "mg a q" then "mg b" gives one VA whether a hit and
// b missed or the reverse; it is credited to a, and b's answer is the
// next one it can have. A wrong guess shifts the pairing until an answer
// the oldest request cannot have, or MN, realigns it. Both sides of a
// comparison make the same guesses on the same answers, so a wrong guess
// only shows where the answers differ anyway.
//
// watch and lru_crawler metadump/mgdump start streams: their first line
// answers them, later requests are NoAnswer and later lines have Req -1.
//
// An answer that arrives before the request it answers has been cut is
// kept (up to maxHeld answers) until it has; at the end of the stream,
// answers still unpaired have Req -1. (memcached answers some errors to
// noreply commands; such an answer pairs with the next request.)
//
// # What it does not follow
//
// The binary protocol (a request starting with the magic byte 0x80):
// the request is keyed "binary", its answer has Malformed "binary
// protocol not compared", and both streams stop being cut. Lines that
// memcached would reject by closing or misreading the connection (a
// storage line it cannot parse, a data block not followed by CRLF, a line
// over MaxLine that is not a get) end the client stream with a request
// keyed "(malformed)"; server bytes that are not answers end the server
// stream with an answer that has Malformed set.
//
// cmpmc imports only the standard library and compare.
package cmpmc

import (
	"fmt"

	"github.com/stackcopy/stackcopy/compare"
)

// MaxLine bounds a command line (a get line's keys past it are skipped,
// not kept) and an answer line. memcached closes a connection whose
// command line grows over 2048 bytes, get lines aside.
const MaxLine = 64 << 10

// maxKey is memcached's KEY_MAX_LENGTH.
const maxKey = 250

// maxItems bounds the items of a get answer that have fields of their
// own.
const maxItems = 256

// maxHeld bounds the answers kept while the request they answer has not
// been cut; beyond it the oldest goes out with Req -1.
const maxHeld = 256

// maxEntries bounds the requests awaiting an answer from the slowest
// server; beyond it the oldest are dropped.
const maxEntries = 1 << 20

// Protocol returns the memcached protocol.
func Protocol() compare.Protocol { return protocol{} }

type protocol struct{}

func (protocol) Name() string { return "memcached" }

func (protocol) New(lim compare.Limits) compare.Conversation {
	lim = lim.WithDefaults()
	return &conv{lim: lim, pending: compare.Pending[entry]{Max: maxEntries}}
}

// Request kinds: what their answers look like.
const (
	kLine  uint8 = iota // one line
	kStore              // one line (a storage command)
	kGet                // VALUE blocks, then END
	kStats              // lines, then END (or RESET, OK)
	kMg                 // meta commands
	kMs
	kMd
	kMa
	kMn
	kMe
	kStream // watch, lru_crawler metadump: a line, then a stream
	kBinary // the binary protocol
)

// entry is a request that awaits an answer (or, quiet, may get one).
type entry struct {
	id     int
	kind   uint8
	quiet  bool
	oflag  bool   // asked for the opaque token back
	opaque string // its token
	kflag  bool   // asked for the key back
	key    string
}

// conv is one connection: the client decoder, the requests awaiting
// answers (shared by every server's Answers), and the Answers.
type conv struct {
	lim compare.Limits
	c   client

	pending compare.Pending[entry] // awaiting answers; Max set by New

	arena []byte            // where requests' samples are copied to
	items map[string]*names // a get answer's field names, by item key
}

// arenaSize is the size of the buffers samples are copied to: a request
// or answer owns its part of one, so most cost no allocation of their
// own.
const arenaSize = 16 << 10

// sampler copies the first limit bytes of b to *arena and returns what
// renders them, as compare.Sample(b, limit) would, when the report keeps
// the sample.
func sampler(arena *[]byte, b []byte, limit int) func() string {
	more := 0
	if len(b) > limit {
		b, more = b[:limit], len(b)-limit
	}
	if len(b) == 0 && more == 0 {
		return nil
	}
	if cap(*arena)-len(*arena) < len(b) {
		// The buffers grow from small: a connection may have few
		// messages.
		*arena = make([]byte, 0, max(min(arenaSize, 2*cap(*arena)), 512, len(b)))
	}
	start := len(*arena)
	*arena = append(*arena, b...)
	kept := (*arena)[start:len(*arena):len(*arena)]
	return func() string {
		s := compare.Sample(kept, limit)
		if more > 0 {
			s += fmt.Sprintf("… (%d more bytes)", more)
		}
		return s
	}
}

// names are the field names of a get answer's item.
type names struct {
	item, value, flags, cas string
}

// maxNames bounds the item keys a conversation remembers the field names
// of.
const maxNames = 1024

// itemNames returns the field names of the item of key k.
func (c *conv) itemNames(k []byte) *names {
	if n, ok := c.items[string(k)]; ok {
		return n
	}
	item := compare.Value(k)
	n := &names{item: item, value: "value:" + item, flags: "flags:" + item, cas: "cas:" + item}
	if c.items == nil {
		c.items = make(map[string]*names)
	}
	if len(c.items) < maxNames {
		c.items[string(k)] = n
	}
	return n
}

func (c *conv) Answers() compare.Answers {
	return &answers{c: c, cur: c.pending.Cursor()}
}

// tokens splits a line at spaces, as memcached's tokenize_command does
// (runs of spaces separate, leading spaces are skipped).
func tokens(t [][]byte, l []byte) [][]byte {
	t = t[:0]
	start := -1
	for i := 0; i <= len(l); i++ {
		if i == len(l) || l[i] == ' ' {
			if start >= 0 {
				t = append(t, l[start:i])
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	return t
}

// parseUint parses decimal digits; false when empty, not digits, or
// above max.
func parseUint(b []byte, max uint64) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, x := range b {
		if x < '0' || x > '9' {
			return 0, false
		}
		d := uint64(x - '0')
		if n > (max-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
