package compare

import (
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// A Conn is one connection's comparison: the client's stream and each
// side's server stream, fed in order, each from its own goroutine.
type Conn struct {
	col            *Collector
	client, server netip.AddrPort

	// mu guards everything below; every call into the connection's
	// Conversation and Answers happens under it, as the contract says.
	mu      sync.Mutex
	done    bool // finalized: every later call is ignored
	decided bool
	broken  bool // a decoder panicked: nothing more is decoded
	proto   string
	conv    Conversation
	raw     *rawConv // conv when the connection is compared raw
	ans     [numSides]Answers

	// Bytes that came before Decide, copied, in their order of arrival
	// across the streams (a raw request is the client's bytes up to the
	// first answer), at most preDecideMax a stream.
	pre  []chunk
	preN [numSides + 1]int // per stream: the sides, then the client

	off         int64     // client bytes given to the decoder
	clientAt    time.Time // capture time of the last client bytes
	clientEnded bool
	ended       [numSides]bool   // End or Fail was called
	why         [numSides]string // why a side's unanswered requests are missing
	flushed     [numSides]bool   // the side's decoder was ended
	serverAt    [numSides]time.Time
	spoke       [numSides]bool // the side sent a byte: a failed side that did not is missing, not an empty answer

	pending []*pend // in request order; done ones are compacted away
	byID    map[int]*pend
	maxID   int
	early   [numSides]map[int]earlyAnswer // answers that came before their request

	// Send marks of the replayed sides, for their latency: marks whose
	// cumulative offset may still end a request, and the requests whose
	// last byte was not reported sent yet.
	sent    [numSides]int64
	marks   [numSides][]mark
	waiters [numSides][]*pend

	truncated, unsolicited, unmatched [numSides]int64
	partial                           int64
}

type chunk struct {
	stream int // a Side, or clientStream
	b      []byte
	at     time.Time
}

// clientStream numbers the client's stream among the sides'.
const clientStream = numSides

type mark struct {
	cum int64
	at  time.Time
}

type earlyAnswer struct {
	a  Answer
	at time.Time
}

// A pend is a request waiting for its answers.
type pend struct {
	req    Request
	at     time.Time // capture time of the client bytes that completed it
	end    int64     // client stream offset just past it
	ans    [numSides]*Answer
	ansAt  [numSides]time.Time
	miss   [numSides]string // why the side will not answer
	sendAt [numSides]time.Time
	sendOK [numSides]bool
	done   bool
	g      *keyGroup // set when folded, for a send time learned later
}

// maxMarks bounds the send marks kept for requests the client stream has
// not completed yet (the replay may run ahead of Client).
const maxMarks = 4096

// Decide names the connection's protocol. Bytes that came before are
// decoded now. Only the first call counts.
func (cn *Conn) Decide(protocol string) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.done || cn.decided {
		return
	}
	cn.decide(protocol)
}

func (cn *Conn) decide(name string) {
	cn.decided = true
	if p := cn.col.protocol(name); p != nil {
		cn.proto = p.Name()
		if !cn.guard("client", func() { cn.conv = p.New(cn.col.lim) }) {
			return
		}
	}
	if cn.conv == nil {
		cn.raw = rawProtocol{port: cn.server.Port()}.New(cn.col.lim).(*rawConv)
		cn.conv = cn.raw
		cn.proto = rawName
	}
	// Every side's decoder starts now, before the first request: a
	// decoder may forget requests every existing decoder has passed, and
	// a side whose first byte comes late must still find them.
	for s := Side(0); s < numSides; s++ {
		if cn.col.enabled(s) && !cn.answersFor(s) {
			return
		}
	}
	pre := cn.pre
	cn.pre, cn.preN = nil, [numSides + 1]int{}
	for _, ch := range pre {
		if ch.stream == clientStream {
			cn.feedClient(ch.b, ch.at)
		} else {
			cn.feedServer(Side(ch.stream), ch.b, ch.at)
		}
	}
}

// buffer keeps a stream's bytes until Decide; too many and the connection
// is compared raw.
func (cn *Conn) buffer(stream int, b []byte, at time.Time) {
	cn.pre = append(cn.pre, chunk{stream, append([]byte(nil), b...), at})
	cn.preN[stream] += len(b)
	if cn.preN[stream] > preDecideMax {
		cn.decide("")
	}
}

// guard runs a decoder call; a panic in it is counted as a malformed
// stream and stops all decoding of the connection, whose pending requests
// are counted as abandoned.
func (cn *Conn) guard(stream string, f func()) (ok bool) {
	if cn.broken {
		return false
	}
	defer func() {
		if r := recover(); r != nil {
			ok = false
			cn.breakDown(stream, fmt.Sprintf("decoder panic (%s): %v", cn.proto, r))
		}
	}()
	f()
	return true
}

func (cn *Conn) breakDown(stream, why string) {
	cn.broken = true
	cn.col.malformed(stream, why)
	for _, p := range cn.pending {
		if !p.done {
			p.done = true
			delete(cn.byID, p.req.ID)
			cn.col.record(cn, p, outAbandoned)
		}
	}
	cn.pending = nil
	for s := range cn.early {
		cn.unmatched[s] += int64(len(cn.early[s]))
		cn.early[s] = nil
	}
}

// Client takes the client's next bytes, at is their capture time.
func (cn *Conn) Client(b []byte, at time.Time) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.done || cn.clientEnded || len(b) == 0 {
		return
	}
	cn.col.st.bytes.Add(int64(len(b)))
	if !cn.decided {
		cn.buffer(clientStream, b, at)
		return
	}
	cn.feedClient(b, at)
}

func (cn *Conn) feedClient(b []byte, at time.Time) {
	cn.off += int64(len(b))
	cn.clientAt = at
	var reqs []Request
	if !cn.guard("client", func() { reqs = cn.conv.Requests(b) }) {
		return
	}
	cn.addRequests(reqs, at)
	cn.pruneMarks()
}

// EndClient says the client's stream ended.
func (cn *Conn) EndClient() {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.done || cn.clientEnded {
		return
	}
	cn.endClient()
	cn.maybeFinish()
}

func (cn *Conn) endClient() {
	cn.clientEnded = true
	if !cn.decided {
		cn.decide("")
	}
	var reqs []Request
	if cn.guard("client", func() { reqs = cn.conv.EndRequests() }) {
		cn.addRequests(reqs, cn.clientAt)
	}
	// Every request is known now, so a side's decoder may be ended: what
	// it kept waiting for a request will not wait any longer.
	for s := Side(0); s < numSides; s++ {
		if cn.ended[s] {
			cn.flush(s)
		}
	}
}

func (cn *Conn) addRequests(reqs []Request, at time.Time) {
	if len(reqs) == 0 {
		return
	}
	cn.compact()
	for i := range reqs {
		r := reqs[i]
		if r.ID < 0 || r.ID <= cn.maxID && cn.byID[r.ID] != nil {
			cn.col.malformed("client", fmt.Sprintf("%s decoder returned request id %d twice or negative", cn.proto, r.ID))
			continue
		}
		cn.col.st.requests.Add(1)
		r.Key = capString(r.Key, maxKeyLen)
		r.Sample = capString(r.Sample, cn.col.sampleCap())
		if r.ID > cn.maxID {
			cn.maxID = r.ID
		}
		if r.Partial {
			cn.partial++
		}
		p := &pend{req: r, at: at, end: cn.off, done: true}
		switch {
		case r.NoAnswer:
			cn.dropEarly(r.ID)
			cn.col.record(cn, p, outNoAnswer)
			continue
		case cn.broken:
			cn.col.record(cn, p, outAbandoned)
			continue
		}
		if len(cn.byID) >= cn.col.cfg.MaxPending {
			cn.flushEnded()
			if len(cn.byID) >= cn.col.cfg.MaxPending {
				cn.dropEarly(r.ID)
				cn.col.record(cn, p, outOverflow)
				continue
			}
		}
		p.done = false
		for s := Side(0); s < numSides; s++ {
			if !cn.col.enabled(s) {
				continue
			}
			if e, ok := cn.early[s][r.ID]; ok {
				delete(cn.early[s], r.ID)
				p.ans[s], p.ansAt[s] = &e.a, e.at
			} else if cn.flushed[s] {
				p.miss[s] = cn.why[s]
			}
			if s != Production {
				cn.sendTime(p, s)
			}
		}
		cn.byID[r.ID] = p
		cn.pending = append(cn.pending, p)
		cn.tryResolve(p)
	}
}

func (cn *Conn) dropEarly(id int) {
	for s := range cn.early {
		if _, ok := cn.early[s][id]; ok {
			delete(cn.early[s], id)
			cn.unmatched[s]++
		}
	}
}

// compact drops resolved requests from the ordered list. It is called only
// where no loop over the list is running.
func (cn *Conn) compact() {
	if len(cn.pending) < 2*len(cn.byID)+16 {
		return
	}
	kept := cn.pending[:0]
	for _, p := range cn.pending {
		if !p.done {
			kept = append(kept, p)
		}
	}
	clear(cn.pending[len(kept):])
	cn.pending = kept
}

// sendTime finds when the replay of side s sent the request's last byte:
// the first send mark whose cumulative offset reaches the request's end.
// When the replay has not sent that far yet, the request waits for Sent.
func (cn *Conn) sendTime(p *pend, s Side) {
	if p.end == 0 || cn.ended[s] {
		// A request with no client bytes before it (a greeting) has no
		// send time; a side that ended sends nothing more.
		return
	}
	m := cn.marks[s]
	if i := sort.Search(len(m), func(i int) bool { return m[i].cum >= p.end }); i < len(m) {
		p.sendAt[s], p.sendOK[s] = m[i].at, true
		return
	}
	w := cn.waiters[s]
	if len(w) >= 2*cn.col.cfg.MaxPending {
		// The replay is far behind: forget the oldest send times rather
		// than grow without bound.
		w = append(w[:0], w[len(w)/2:]...)
	}
	cn.waiters[s] = append(w, p)
}

// pruneMarks forgets send marks no future request can need: a request ends
// at or past the client bytes decoded so far.
func (cn *Conn) pruneMarks() {
	for s := range cn.marks {
		m := cn.marks[s]
		i := 0
		for i < len(m) && m[i].cum < cn.off {
			i++
		}
		if i > 0 {
			cn.marks[s] = append(m[:0], m[i:]...)
		}
	}
}

// Sent says the replay of side wrote n more client bytes at wall time at.
func (cn *Conn) Sent(side Side, n int, at time.Time) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.done || side == Production || !cn.col.enabled(side) || n <= 0 {
		return
	}
	cn.sent[side] += int64(n)
	w := cn.waiters[side]
	i := 0
	for i < len(w) && w[i].end <= cn.sent[side] {
		p := w[i]
		p.sendAt[side], p.sendOK[side] = at, true
		if p.done && p.g != nil && p.ans[side] != nil && !p.ansAt[side].IsZero() {
			// The answer was folded before its send was reported (the
			// reader may run ahead of the writer's report).
			cn.col.lateLatency(p.g, side, p.ansAt[side].Sub(at))
		}
		w[i] = nil
		i++
	}
	cn.waiters[side] = w[i:]
	if cn.sent[side] < cn.off {
		// Already behind the decoded client bytes: no future request can
		// end here.
		return
	}
	m := cn.marks[side]
	if len(m) >= maxMarks {
		m = append(m[:0], m[len(m)/2:]...)
	}
	cn.marks[side] = append(m, mark{cn.sent[side], at})
}

// Server takes side's next server bytes. For Production at is the capture
// time; for the replayed sides the wall time.
func (cn *Conn) Server(side Side, b []byte, at time.Time) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.done || side < 0 || side >= numSides || !cn.col.enabled(side) || cn.ended[side] || len(b) == 0 {
		return
	}
	cn.col.st.bytes.Add(int64(len(b)))
	if !cn.decided {
		cn.buffer(int(side), b, at)
		return
	}
	cn.feedServer(side, b, at)
}

func (cn *Conn) feedServer(s Side, b []byte, at time.Time) {
	if cn.broken || cn.flushed[s] {
		return
	}
	cn.serverAt[s] = at
	cn.spoke[s] = true
	if cn.raw != nil {
		// The raw request is the client's bytes up to the first answer.
		cn.addRequests(cn.raw.emit(), cn.clientAt)
	}
	if !cn.answersFor(s) {
		return
	}
	var as []Answer
	if !cn.guard(s.String(), func() { as = cn.ans[s].Feed(b) }) {
		return
	}
	cn.answers(s, as, at)
}

func (cn *Conn) answersFor(s Side) bool {
	if cn.ans[s] != nil {
		return true
	}
	if !cn.guard(s.String(), func() { cn.ans[s] = cn.conv.Answers() }) {
		return false
	}
	if cn.ans[s] == nil {
		cn.breakDown(s.String(), "decoder bug ("+cn.proto+"): Answers returned nil")
		return false
	}
	return true
}

func (cn *Conn) answers(s Side, as []Answer, at time.Time) {
	for i := range as {
		a := as[i]
		if a.Truncated {
			cn.truncated[s]++
		}
		if a.Malformed != "" {
			cn.col.malformed(s.String(), a.Malformed)
		}
		if a.Req < 0 {
			cn.unsolicited[s]++
			continue
		}
		if p := cn.byID[a.Req]; p != nil {
			if p.ans[s] != nil || p.miss[s] != "" {
				cn.unmatched[s]++
				continue
			}
			p.ans[s], p.ansAt[s] = &a, at
			cn.tryResolve(p)
			continue
		}
		if a.Req > cn.maxID && !cn.flushed[s] && len(cn.early[s]) < cn.col.cfg.MaxPending {
			if cn.early[s] == nil {
				cn.early[s] = make(map[int]earlyAnswer)
			}
			if _, dup := cn.early[s][a.Req]; !dup {
				cn.early[s][a.Req] = earlyAnswer{a, at}
				continue
			}
		}
		// An answer to a request that overflowed, had no answer, was
		// answered already, or waited too long for its request.
		cn.unmatched[s]++
	}
}

func (cn *Conn) tryResolve(p *pend) {
	if p.done {
		return
	}
	for s := Side(0); s < numSides; s++ {
		if cn.col.enabled(s) && p.ans[s] == nil && p.miss[s] == "" {
			return
		}
	}
	p.done = true
	delete(cn.byID, p.req.ID)
	cn.col.record(cn, p, outResolved)
}

// End says side's server stream is over.
func (cn *Conn) End(side Side) { cn.end(side, "closed") }

// Fail says side's replay did not complete; its unanswered requests are
// missing for reason. It implies End.
func (cn *Conn) Fail(side Side, reason string) {
	if reason == "" {
		reason = "failed"
	}
	cn.end(side, reason)
}

func (cn *Conn) end(side Side, why string) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.done || side < 0 || side >= numSides || !cn.col.enabled(side) || cn.flushed[side] {
		return
	}
	if cn.ended[side] && why == "closed" {
		return
	}
	// A Fail after End still names why the answers are missing.
	cn.ended[side], cn.why[side] = true, capString(why, maxReasonLen)
	if cn.clientEnded {
		cn.flush(side)
	}
	cn.maybeFinish()
}

// flush ends side's decoder: answers it completes by the stream's end are
// paired, and every request still unanswered on that side is missing.
func (cn *Conn) flush(s Side) {
	if cn.flushed[s] || !cn.decided {
		return
	}
	cn.flushed[s] = true
	if !cn.broken {
		// A side that closed without a byte still answers the raw
		// comparison (with nothing); a failed one does not.
		if cn.spoke[s] || cn.why[s] == "closed" && cn.answersFor(s) {
			var as []Answer
			if cn.guard(s.String(), func() { as = cn.ans[s].End() }) {
				cn.answers(s, as, cn.serverAt[s])
			}
		}
	}
	cn.unmatched[s] += int64(len(cn.early[s]))
	cn.early[s] = nil
	for _, p := range cn.pending {
		if !p.done && p.ans[s] == nil && p.miss[s] == "" {
			p.miss[s] = cn.why[s]
			cn.tryResolve(p)
		}
	}
	clear(cn.waiters[s])
	cn.waiters[s], cn.marks[s] = nil, nil
}

// flushEnded ends the decoders of the sides that ended, to make room when
// too many requests wait: those sides will not answer them anyway.
func (cn *Conn) flushEnded() {
	for s := Side(0); s < numSides; s++ {
		if cn.ended[s] && cn.col.enabled(s) {
			cn.flush(s)
		}
	}
	cn.compact()
}

func (cn *Conn) maybeFinish() {
	if !cn.clientEnded {
		return
	}
	for s := Side(0); s < numSides; s++ {
		if cn.col.enabled(s) && !cn.flushed[s] {
			return
		}
	}
	cn.finish()
}

func (cn *Conn) finish() {
	cn.done = true
	for _, p := range cn.pending {
		if !p.done {
			// Every side was flushed, so this cannot happen; count it
			// rather than lose it.
			p.done = true
			cn.col.record(cn, p, outAbandoned)
		}
	}
	cn.col.streamCounts(cn.truncated, cn.unsolicited, cn.unmatched, cn.partial)
	cn.col.closed(cn)
	// Free everything: the Conn may stay referenced by its caller.
	cn.conv, cn.raw, cn.ans = nil, nil, [numSides]Answers{}
	cn.pending, cn.byID, cn.early = nil, nil, [numSides]map[int]earlyAnswer{}
	cn.marks, cn.waiters = [numSides][]mark{}, [numSides][]*pend{}
	cn.pre = nil
}

// forceEnd finalizes the connection at Report time: sides that did not end
// are missing their answers as "still open".
func (cn *Conn) forceEnd() {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.done {
		return
	}
	if !cn.clientEnded {
		cn.endClient()
	}
	for s := Side(0); s < numSides; s++ {
		if !cn.col.enabled(s) {
			continue
		}
		if !cn.ended[s] {
			cn.ended[s], cn.why[s] = true, "still open"
		}
		cn.flush(s)
	}
	cn.finish()
}
