package h2frame

// stream is what the framer keeps of a client stream that is not closed.
type stream struct {
	id           uint32 // 0: a free slot
	clientEnded  bool   // the client sent END_STREAM
	serverEnded  bool   // the server sent END_STREAM
	windowChange int64  // the target's WINDOW_UPDATEs minus the client's DATA
	// The client's receive window for the target's DATA: its
	// WINDOW_UPDATEs minus the target's DATA (recvChange), and the
	// largest recvChange a client WINDOW_UPDATE left (the level a client
	// that reads as it goes keeps the window at).
	recvChange, recvLevel int64
}

// table is an open-addressing hash table of the open client streams:
// linear probing kept in Robin Hood order (an entry never sits farther from
// its home slot than the one it displaced), with backward-shift deletion, so
// that lookups stop early, a removal moves only the displaced entries after
// it, and a steady stream of opens and closes never grows or rehashes the
// table. Client stream ids are odd and increasing, so home slot id>>1
// spreads a window of recent streams over consecutive slots without
// collisions: most entries sit in their home slot.
type table struct {
	slots []stream // a power of two long, at most half full
	n     int
}

const minTable = 16

func (t *table) mask() uint32 { return uint32(len(t.slots) - 1) }

// dist is how far the entry in slot i sits from its home slot.
func (t *table) dist(i uint32) uint32 { return (i - t.slots[i].id>>1) & t.mask() }

// find returns the slot of the stream with id, or -1.
func (t *table) find(id uint32) int {
	if len(t.slots) == 0 {
		return -1
	}
	m := t.mask()
	for i, d := (id>>1)&m, uint32(0); ; i, d = (i+1)&m, d+1 {
		e := t.slots[i].id
		if e == id {
			return int(i)
		}
		if e == 0 || t.dist(i) < d {
			return -1 // id would have displaced this entry
		}
	}
}

// add inserts a stream that is not in the table and returns its slot; -1
// when the table holds MaxStreams already.
func (t *table) add(id uint32) int {
	if t.n >= MaxStreams {
		return -1
	}
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
	}
	t.n++
	return t.insert(stream{id: id})
}

// insert places s and returns the slot it went to.
func (t *table) insert(s stream) int {
	m := t.mask()
	at := -1
	for i, d := (s.id>>1)&m, uint32(0); ; i, d = (i+1)&m, d+1 {
		if t.slots[i].id == 0 {
			t.slots[i] = s
			if at < 0 {
				at = int(i)
			}
			return at
		}
		if e := t.dist(i); e < d {
			// Robin Hood: the entry closer to its home moves on.
			s, t.slots[i] = t.slots[i], s
			d = e
			if at < 0 {
				at = int(i)
			}
		}
	}
}

func (t *table) grow() {
	old := t.slots
	t.slots = make([]stream, max(minTable, 2*len(old)))
	for _, s := range old {
		if s.id != 0 {
			t.insert(s)
		}
	}
}

// remove empties slot i, moving the displaced entries after it back by one.
func (t *table) remove(i int) {
	m := t.mask()
	hole := uint32(i)
	for j := (hole + 1) & m; t.slots[j].id != 0 && t.dist(j) > 0; j = (j + 1) & m {
		t.slots[hole] = t.slots[j]
		hole = j
	}
	t.slots[hole] = stream{}
	t.n--
}

// removeIf calls fn for every stream and removes those it returns true
// for. A slot is looked at again after a removal, since the next entry may
// have moved into it (fn may so see an entry it kept twice).
func (t *table) removeIf(fn func(*stream) bool) {
	for i := 0; i < len(t.slots); {
		if t.slots[i].id != 0 && fn(&t.slots[i]) {
			t.remove(i)
			continue
		}
		i++
	}
}
