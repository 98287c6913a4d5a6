package compare

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"unicode/utf8"
)

// maxInline is the longest value a field carries as itself; longer values
// are carried as their length and hash, so a field stays small whatever
// the answer's size.
const maxInline = 200

// Value renders b as a field value: b itself (quoted when it is not
// printable UTF-8) when short, else its length and 64-bit FNV-1a hash.
// Equal inputs give equal values; the rendering is meant for people.
func Value(b []byte) string {
	if len(b) <= maxInline {
		if printable(b) {
			return string(b)
		}
		return strconv.Quote(string(b))
	}
	return Digest(b)
}

// Digest is b's length and hash: "len=N fnv=hhhhhhhhhhhhhhhh".
func Digest(b []byte) string {
	h := fnv.New64a()
	h.Write(b)
	return fmt.Sprintf("len=%d fnv=%016x", len(b), h.Sum64())
}

// A Hasher digests a value that arrives in pieces (a body larger than
// Limits.Body): Feed each piece, then Value.
type Hasher struct {
	n int
	h uint64
}

// NewHasher returns an empty Hasher.
func NewHasher() Hasher { return Hasher{h: 14695981039346656037} }

// Feed adds b to the value.
func (h *Hasher) Feed(b []byte) {
	for _, c := range b {
		h.h ^= uint64(c)
		h.h *= 1099511628211
	}
	h.n += len(b)
}

// Len is the value's length so far.
func (h *Hasher) Len() int { return h.n }

// Value is the digest of everything fed, in Digest's form.
func (h *Hasher) Value() string { return fmt.Sprintf("len=%d fnv=%016x", h.n, h.h) }

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if r < ' ' && r != '\t' || r == 0x7f {
			return false
		}
	}
	return true
}

// Sample renders b for a report, cut at limit bytes (with a note of how
// much was left out), quoting bytes that are not printable text.
func Sample(b []byte, limit int) string {
	cut := 0
	if limit > 0 && len(b) > limit {
		cut = len(b) - limit
		b = b[:limit]
	}
	s := string(b)
	if !utf8.ValidString(s) {
		s = strconv.Quote(s)
	}
	if cut > 0 {
		s += fmt.Sprintf("… (%d more bytes)", cut)
	}
	return s
}
