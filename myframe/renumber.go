package myframe

import (
	"encoding/binary"
	"sync/atomic"
)

// Renumber rewrites a replayed session's client bytes so that its
// prepared-statement commands name the target's statement ids where the
// capture names production's.
//
// The server numbers a connection's prepared statements; the client names
// them by those numbers in COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA,
// COM_STMT_CLOSE, COM_STMT_RESET, COM_STMT_FETCH and MariaDB's
// COM_STMT_BULK_EXECUTE. MariaDB and MySQL count per connection, but a
// target need not hand out the numbers production did: MariaDB keeps the
// counter of a connection object it reuses from its thread cache, a
// procedure or an EXECUTE IMMEDIATE may take numbers on one server and not
// the other, another server version may number otherwise. A replayed
// execute of production's number then runs another statement on the
// target, or none.
//
// Both sides answer the session's prepares in the same order: the k-th
// id production gave (Production, from the capture side's Framer.Numbered)
// pairs with the k-th the target gave (Target, from the player's own
// framer). Rewrite replaces each production id by its partner; an id of a
// statement the target refused becomes 0, which no server gives, so the
// target answers "unknown statement" as it must rather than running
// another. The special id 0xFFFFFFFF (MariaDB: the statement prepared last)
// is left alone, as are ids without a partner yet (counted as unknown).
//
// Rewrite finds commands by the packet layer alone: a message's first
// packet with sequence id 0 is a command in the command phase, and no
// packet of the connection phase, of an authentication exchange or of LOCAL
// INFILE content has sequence id 0. It stops rewriting for good on a
// HandshakeResponse or SSLRequest that asks for TLS or compression, whose
// bytes are not packets, and once either side lost ids (pairing them
// would go wrong). A chunk that ends inside the first 9 bytes of a packet
// (its header, the command byte and the id) keeps those bytes back until
// the next chunk; Flush hands them on when the stream ends.
//
// A Renumber is used by one goroutine.
type Renumber struct {
	prod, tgt []uint32          // ids not paired yet, in order
	ids       map[uint32]uint32 // production's id → the target's, for statements not closed
	off       bool              // not packets, or pairing lost: bytes pass unchanged
	hello     bool              // the first client packet (HandshakeResponse or SSLRequest) was seen
	left      int               // payload bytes of the current packet still to pass
	held      []byte            // the start of a packet, kept back until its id is complete

	// Counted as they happen, into the caller's counters.
	renumbered, unknown *atomic.Uint64
}

// maxLive bounds the statements a Renumber follows at once (MySQL's
// max_prepared_stmt_count defaults to 16382 for the whole server).
const maxLive = 1 << 16

// Statement commands whose bytes 1..4 name a statement.
func namesStatement(c byte) bool {
	switch c {
	case 0x17, 0x18, 0x19, 0x1a, 0x1c, 0xfa:
		return true
	}
	return false
}

// NewRenumber returns a rewriter for one session, before its first byte.
// It adds each command whose id it replaced to renumbered, each that named
// an id without a partner (production's prepare not answered by the
// target yet, or not in the capture) to unknown.
func NewRenumber(renumbered, unknown *atomic.Uint64) *Renumber {
	return &Renumber{ids: map[uint32]uint32{}, renumbered: renumbered, unknown: unknown}
}

// Production is told the ids production gave, in order, and whether its
// framer lost none.
func (r *Renumber) Production(ids []uint32, ok bool) {
	r.prod = append(r.prod, ids...)
	r.lose(ok)
	r.pair()
}

// Target is told the ids the target gave, in order, and whether its
// framer lost none.
func (r *Renumber) Target(ids []uint32, ok bool) {
	r.tgt = append(r.tgt, ids...)
	r.lose(ok)
	r.pair()
}

func (r *Renumber) lose(ok bool) {
	if !ok && !r.off {
		r.off = true
		r.prod, r.tgt, r.ids = nil, nil, nil
	}
}

func (r *Renumber) pair() {
	if r.off {
		return
	}
	n := min(len(r.prod), len(r.tgt))
	for i := range n {
		p := r.prod[i]
		if _, known := r.ids[p]; p != 0 && (known || len(r.ids) < maxLive) {
			r.ids[p] = r.tgt[i]
		}
	}
	r.prod = append(r.prod[:0], r.prod[n:]...)
	r.tgt = append(r.tgt[:0], r.tgt[n:]...)
}

// Rewrite returns the bytes to write for the client's next chunk p: p
// itself when nothing changes, else a copy with ids replaced; bytes of a
// packet start kept back from the chunk before come first, and a packet
// start this chunk ends inside is kept back.
func (r *Renumber) Rewrite(p []byte) []byte {
	buf, owned := p, false
	if len(r.held) > 0 {
		buf, owned = append(r.held, p...), true
		r.held = nil
	}
	i := 0
	for i < len(buf) && !r.off {
		if r.left > 0 {
			n := min(r.left, len(buf)-i)
			r.left -= n
			i += n
			continue
		}
		// A packet starts at i.
		h := buf[i:]
		if len(h) < 4 {
			return r.keep(buf, i, owned)
		}
		plen := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
		seq := h[3]
		need := 0 // payload bytes this packet needs looked at
		switch {
		case !r.hello:
			need = min(plen, 4)
		case seq == 0 && plen > 0:
			need = 1
			if len(h) > 4 && namesStatement(h[4]) {
				need = min(plen, 5)
			}
		}
		if len(h) < 4+need {
			return r.keep(buf, i, owned)
		}
		if !r.hello {
			r.hello = true
			if need == 4 && binary.LittleEndian.Uint32(h[4:])&(capSSL|capCompress|capZstd) != 0 {
				r.off = true
				r.ids = nil
			}
		} else if need == 5 {
			if nb, changed := r.statement(buf, i+4, owned); changed {
				buf, owned = nb, true
			}
		} else if need == 1 && (h[4] == 0x11 || h[4] == 0x1f) {
			// COM_CHANGE_USER, COM_RESET_CONNECTION: the server drops the
			// session's statements.
			clear(r.ids)
		}
		r.left = plen
		i += 4
	}
	return buf
}

// keep holds buf[i:], a packet start too short to decide, for the next
// chunk, and returns what goes now.
func (r *Renumber) keep(buf []byte, i int, owned bool) []byte {
	r.held = append(r.held[:0:0], buf[i:]...)
	if !owned {
		return buf[:i:i]
	}
	return buf[:i]
}

// statement rewrites the id of the statement command at buf[at] (its
// command byte), copying buf first unless owned.
func (r *Renumber) statement(buf []byte, at int, owned bool) ([]byte, bool) {
	cmd := buf[at]
	id := binary.LittleEndian.Uint32(buf[at+1:])
	if id == 0xffffffff {
		return buf, false
	}
	to, ok := r.ids[id]
	if !ok {
		r.unknown.Add(1)
		return buf, false
	}
	if cmd == 0x19 {
		delete(r.ids, id) // COM_STMT_CLOSE: the number is free again
	}
	if to == id {
		return buf, false
	}
	if !owned {
		buf = append([]byte(nil), buf...)
	}
	binary.LittleEndian.PutUint32(buf[at+1:], to)
	r.renumbered.Add(1)
	return buf, true
}

// Flush hands on the bytes kept back, for a stream that ends (or pauses
// for good) inside a packet's start.
func (r *Renumber) Flush() []byte {
	b := r.held
	r.held = nil
	return b
}
