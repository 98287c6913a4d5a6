package compare

// Pending is a connection's requests awaiting answers, for protocols that
// answer in order (Redis, memcached): the conversation adds them as it
// cuts the client's stream, and each side's Answers reads them at its own
// Cursor, at its own pace. Entries every cursor has passed are dropped,
// and past Max entries the oldest too, so a side that never answers
// cannot make it grow without bound. Like the decoders that use it, it is
// called under the connection's lock.
type Pending[E any] struct {
	// Max bounds the entries kept; 0 keeps them all.
	Max int

	entries []E // from absolute index base on
	base    int
	cursors []*Cursor
}

// A Cursor is one side's place in a Pending: the absolute index of the
// next entry it will answer.
type Cursor struct {
	At int
}

// Cursor starts a side's reading at the oldest entry kept.
func (p *Pending[E]) Cursor() *Cursor {
	c := &Cursor{At: p.base}
	p.cursors = append(p.cursors, c)
	return c
}

// Add appends an entry.
func (p *Pending[E]) Add(e E) {
	p.entries = append(p.entries, e)
	p.trim()
}

// At returns the entry at absolute index i, if it is kept.
func (p *Pending[E]) At(i int) (*E, bool) {
	if i < p.base || i >= p.End() {
		return nil, false
	}
	return &p.entries[i-p.base], true
}

// End is the absolute index the next entry will have.
func (p *Pending[E]) End() int { return p.base + len(p.entries) }

// trim drops the entries every cursor has passed, and the oldest beyond
// Max.
func (p *Pending[E]) trim() {
	low := p.End()
	for _, c := range p.cursors {
		low = min(low, c.At)
	}
	if over := len(p.entries) - p.Max; p.Max > 0 && over > 0 {
		low = max(low, p.base+over)
	}
	if drop := low - p.base; drop > 0 && (drop >= 1024 || drop == len(p.entries)) {
		// Copying once a thousand entries are passed keeps the cost per
		// request constant and the slice from growing.
		n := copy(p.entries, p.entries[drop:])
		clear(p.entries[n:])
		p.entries = p.entries[:n]
		p.base = low
		for _, c := range p.cursors {
			c.At = max(c.At, p.base)
		}
	}
}
