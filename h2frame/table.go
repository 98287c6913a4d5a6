package h2frame

// stream is what the framer keeps of a client stream that is not closed.
type stream struct {
	id           uint32 // 0: a free slot
	clientEnded  bool   // the client sent END_STREAM
	serverEnded  bool   // the server sent END_STREAM
	windowChange int64  // the target's WINDOW_UPDATEs minus the client's DATA
}

// table is an open-addressing hash table of the open client streams, with
// linear probing and backward-shift deletion (no tombstones, so a steady
// stream of opens and closes never grows or rehashes it). Client stream ids
// are odd and increasing, so id>>1 spreads a window of recent streams over
// consecutive slots without collisions.
type table struct {
	slots []stream // a power of two long, at most half full
	n     int
}

const minTable = 16

func (t *table) mask() uint32 { return uint32(len(t.slots) - 1) }

// find returns the slot of the stream with id, or -1.
func (t *table) find(id uint32) int {
	if len(t.slots) == 0 {
		return -1
	}
	m := t.mask()
	for i := (id >> 1) & m; ; i = (i + 1) & m {
		switch t.slots[i].id {
		case id:
			return int(i)
		case 0:
			return -1
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
	m := t.mask()
	i := (id >> 1) & m
	for t.slots[i].id != 0 {
		i = (i + 1) & m
	}
	t.slots[i] = stream{id: id}
	t.n++
	return int(i)
}

func (t *table) grow() {
	old := t.slots
	t.slots = make([]stream, max(minTable, 2*len(old)))
	m := t.mask()
	for _, s := range old {
		if s.id == 0 {
			continue
		}
		i := (s.id >> 1) & m
		for t.slots[i].id != 0 {
			i = (i + 1) & m
		}
		t.slots[i] = s
	}
}

// remove empties slot i, moving later entries of its probe run back so
// that lookups stay correct. The entry moved into slot i, if any, is one
// that a scan in slot order may not have seen yet (see removeIf).
func (t *table) remove(i int) {
	m := t.mask()
	hole := uint32(i)
	for j := (hole + 1) & m; ; j = (j + 1) & m {
		e := t.slots[j]
		if e.id == 0 {
			break
		}
		// e may fill the hole unless its home slot k lies cyclically
		// within (hole, j].
		k := (e.id >> 1) & m
		if (j > hole && (k <= hole || k > j)) || (j < hole && k <= hole && k > j) {
			t.slots[hole] = e
			hole = j
		}
	}
	t.slots[hole] = stream{}
	t.n--
}

// removeIf calls fn for every stream and removes those it returns true
// for. A slot is looked at again after a removal, since another entry may
// have moved into it; entries moving from slots already scanned were
// already kept.
func (t *table) removeIf(fn func(*stream) bool) {
	for i := 0; i < len(t.slots); {
		if t.slots[i].id != 0 && fn(&t.slots[i]) {
			t.remove(i)
			continue
		}
		i++
	}
}
