package cmpmysql

import (
	"encoding/binary"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/myframe"
)

const maxPacket = 0xffffff

// reader cuts one direction into messages: packets of a 3-byte length and
// a sequence id, a 0xFFFFFF-long packet continuing its message in the
// next. It keeps a message's first keep bytes and hashes all of them; a
// longer message (a big row) is streamed into spill when the owner set
// one, so a 1 GiB row is hashed, never held.
type reader struct {
	compare.Kept // the message: Keep, Spill (set by the owner), Buf, Size

	hdr   [4]byte
	nh    int
	left  int  // payload bytes to go in the current packet
	last  bool // the current packet ends its message
	inMsg bool

	seq  byte // the message's first sequence id
	wire int  // its length on the wire, headers included
}

// idle says no message has begun.
func (r *reader) idle() bool { return !r.inMsg && r.nh == 0 }

// feed consumes bytes of b up to the end of a message; done says one
// completed (its bytes are in the reader until the next feed).
func (r *reader) feed(b []byte) (n int, done bool) {
	for n < len(b) {
		if r.nh < 4 {
			if !r.inMsg {
				r.inMsg = true
				r.Reset()
				r.wire = 0
			}
			k := copy(r.hdr[r.nh:], b[n:])
			r.nh += k
			n += k
			if r.nh < 4 {
				return n, false
			}
			plen := int(r.hdr[0]) | int(r.hdr[1])<<8 | int(r.hdr[2])<<16
			if r.wire == 0 {
				r.seq = r.hdr[3]
			}
			r.wire += 4 + plen
			r.left, r.last = plen, plen < maxPacket
			if plen == 0 {
				r.nh = 0
				if r.last {
					r.inMsg = false
					return n, true
				}
			}
			continue
		}
		k := min(r.left, len(b)-n)
		r.Take(b[n : n+k])
		n += k
		r.left -= k
		if r.left == 0 {
			r.nh = 0
			if r.last {
				r.inMsg = false
				return n, true
			}
		}
	}
	return n, false
}

// lenencStr reads a length-encoded string; ok is false when it is
// truncated.
func lenencStr(b []byte) (s []byte, n int, ok bool) {
	v, k := myframe.LenEnc(b)
	if k == 0 || v > uint64(len(b)-k) {
		return nil, 0, false
	}
	return b[k : k+int(v)], k + int(v), true
}

// cstr reads a NUL-terminated string (the rest when there is no NUL).
func cstr(b []byte) ([]byte, int) {
	for i, c := range b {
		if c == 0 {
			return b[:i], i + 1
		}
	}
	return b, len(b)
}

func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
