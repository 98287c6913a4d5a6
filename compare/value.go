package compare

import (
	"fmt"
	"hash/crc32"
	"strconv"
	"unicode/utf8"
)

// maxInline is the longest value a field carries as itself; longer values
// are carried as their length and hash, so a field stays small whatever
// the answer's size.
const maxInline = 200

// Value renders b as a field value: b itself (quoted when it is not
// printable UTF-8) when short, else its length and 64-bit digest.
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

// ValueString is Value for a string, without copying one that is
// rendered as itself.
func ValueString(s string) string {
	if len(s) <= maxInline && printableString(s) {
		return s
	}
	return Value([]byte(s))
}

func printableString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c >= 0x7f {
			return printable([]byte(s)) // not plain ASCII: the careful check
		}
	}
	return true
}

// Digest is b's length and 64-bit digest: "len=N crc=hhhhhhhhhhhhhhhh".
func Digest(b []byte) string {
	h := NewHasher()
	h.Feed(b)
	return h.Value()
}

// The digest is two CRC-32s (Castagnoli and IEEE, each computed by the
// CPU's own instructions where it has them, at several GB/s): every answer
// body beyond a few hundred bytes is digested on every side, so its cost
// is the comparison's cost per byte. It tells equal from different bytes;
// it is no defence against bytes made to collide, which replayed traffic
// has no reason to be.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// A Hasher digests a value that arrives in pieces (a body larger than
// Limits.Body): Feed each piece, then Value.
type Hasher struct {
	n       int
	c, ieee uint32
}

// NewHasher returns an empty Hasher.
func NewHasher() Hasher { return Hasher{} }

// Feed adds b to the value.
func (h *Hasher) Feed(b []byte) {
	h.c = crc32.Update(h.c, castagnoli, b)
	h.ieee = crc32.Update(h.ieee, crc32.IEEETable, b)
	h.n += len(b)
}

// Len is the value's length so far.
func (h *Hasher) Len() int { return h.n }

// Value is the digest of everything fed, in Digest's form.
func (h *Hasher) Value() string {
	var b [48]byte
	out := append(b[:0], "len="...)
	out = strconv.AppendInt(out, int64(h.n), 10)
	out = append(out, " crc="...)
	for _, v := range [2]uint32{h.c, h.ieee} {
		for shift := 28; shift >= 0; shift -= 4 {
			out = append(out, "0123456789abcdef"[v>>uint(shift)&0xf])
		}
	}
	return string(out) // one allocation: values are made for every long field
}

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

// FieldsSample renders fields as a sample ("name=value; ..."), cut at
// limit bytes: for answers of binary protocols, whose wire bytes say
// nothing to people.
func FieldsSample(fields []Field, limit int) string {
	n := 0
	for _, f := range fields {
		n += len(f.Name) + len(f.Value) + 3
		if n > limit {
			break
		}
	}
	b := make([]byte, 0, n)
	for i, f := range fields {
		if i > 0 {
			b = append(b, "; "...)
		}
		b = append(b, f.Name...)
		b = append(b, '=')
		b = append(b, f.Value...)
		if len(b) > limit {
			break
		}
	}
	return Sample(b, limit)
}
