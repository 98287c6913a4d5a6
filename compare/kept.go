package compare

// Kept is one message's bytes as a decoder keeps them: all hashed, the
// first Keep of them held in Buf; past Keep the whole message streams
// into Spill instead, when the decoder set one (the digest of a result
// set a big row belongs to), so a long message is hashed, never held.
type Kept struct {
	Keep  int
	Spill *Hasher

	Buf     []byte // the message's first Keep bytes
	Size    int    // its length so far
	Over    bool   // longer than Keep: Buf is a prefix
	Spilled bool   // it went to Spill
	Hash    Hasher // of all of it
}

// Reset starts a new message (Spill stays as set).
func (k *Kept) Reset() {
	k.Buf, k.Size, k.Over, k.Spilled, k.Hash = k.Buf[:0], 0, false, false, NewHasher()
}

// Take adds the message's next bytes.
func (k *Kept) Take(p []byte) {
	k.Hash.Feed(p)
	k.Size += len(p)
	if k.Spilled {
		k.Spill.Feed(p)
		return
	}
	room := k.Keep - len(k.Buf)
	if len(p) <= room {
		k.Buf = append(k.Buf, p...)
		return
	}
	k.Buf = append(k.Buf, p[:room]...)
	k.Over = true
	if k.Spill != nil {
		k.Spilled = true
		k.Spill.Feed(k.Buf)
		k.Spill.Feed(p[room:])
	}
}
