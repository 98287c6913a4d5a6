package cmppg

import (
	"encoding/binary"
	"fmt"

	"github.com/stackcopy/stackcopy/compare"
)

const (
	// maxStartup is the longest startup-phase packet PostgreSQL accepts
	// (MAX_STARTUP_PACKET_LENGTH).
	maxStartup = 10000
	// maxMessage is the longest message body either side can send
	// (PQ_LARGE_MESSAGE_LIMIT).
	maxMessage = 0x3fffffff - 1
)

// reader cuts one direction into messages: a type byte (none for the
// client's startup-phase packets) and a 4-byte big-endian length that
// counts itself. It keeps a message's first keep bytes and hashes all of
// them; a longer one is streamed into the hasher spill gives for its type
// (a big DataRow or CopyData), so it is hashed, never held.
type reader struct {
	compare.Kept      // the message: Keep, Buf, Size; Spill from spill
	untyped      bool // the client's startup phase
	spill        func(typ byte) *compare.Hasher

	hdr   [5]byte
	nh    int
	left  int
	inMsg bool

	typ byte
	err string // why the framing broke
}

func (r *reader) idle() bool { return !r.inMsg }

// wire is the message's length on the wire so far.
func (r *reader) wire() int { return r.nh + r.Size }

func (r *reader) feed(b []byte) (n int, done bool) {
	for n < len(b) {
		need := 5
		if r.untyped {
			need = 4
		}
		if !r.inMsg {
			r.inMsg = true
			r.nh = 0
			r.Reset()
		}
		if r.nh < need {
			k := copy(r.hdr[r.nh:need], b[n:])
			r.nh += k
			n += k
			if r.nh < need {
				return n, false
			}
			length := int(binary.BigEndian.Uint32(r.hdr[need-4 : need]))
			r.typ = 0
			if !r.untyped {
				r.typ = r.hdr[0]
			}
			switch {
			case r.untyped && (length < 8 || length > 4+maxStartup):
				r.err = fmt.Sprintf("startup packet length %d", length)
				return n, false
			case length < 4 || length-4 > maxMessage:
				r.err = fmt.Sprintf("message %q with length %d", r.typ, length)
				return n, false
			}
			r.left = length - 4
			r.Spill = nil
			if r.left > r.Keep && r.spill != nil {
				r.Spill = r.spill(r.typ)
			}
			if r.left == 0 {
				r.inMsg = false
				return n, true
			}
			continue
		}
		k := min(r.left, len(b)-n)
		r.Take(b[n : n+k])
		n += k
		r.left -= k
		if r.left == 0 {
			r.inMsg = false
			return n, true
		}
	}
	return n, false
}

// cstr reads a NUL-terminated string; ok is false without a NUL.
func cstr(b []byte) (s []byte, n int, ok bool) {
	for i, c := range b {
		if c == 0 {
			return b[:i], i + 1, true
		}
	}
	return b, len(b), false
}

func be16(b []byte) int { return int(int16(binary.BigEndian.Uint16(b))) }
func be32(b []byte) int { return int(int32(binary.BigEndian.Uint32(b))) }
