package h2frame

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// The random grammar test: valid conversations built from every frame kind
// (many concurrent streams, interleaved DATA, RST_STREAM both ways, PING,
// SETTINGS, CONTINUATION, padding and priority, pushes, unknown frames,
// GOAWAY, huge and empty payloads), with a model of the answer units and
// windows computed as they are built, fed to a Framer split anywhere.

type mstream struct {
	clientEnded bool // END_STREAM sent by the client
	serverDone  bool // the server sent END_STREAM or RST_STREAM (it sends no more)
	closed      bool // the unit is complete
	window      int64
}

type model struct {
	rng *rand.Rand

	events []mevent
	req    int
	ans    int

	streams    map[uint32]*mstream
	order      []uint32 // client stream ids, opened
	next       uint32
	pushNext   uint32
	settingsUn int // client SETTINGS not acknowledged
	pingsUn    int
	srvPings   int // server PINGs the client has not acknowledged
	srvSetUn   int // server SETTINGS the client has not acknowledged
	goaway     bool
	goLast     uint32

	initial int64
	conn    int64
}

type mevent struct {
	client   bool
	bytes    []byte
	req, ans int
}

func (m *model) emit(client bool, b []byte) {
	m.events = append(m.events, mevent{client, b, m.req, m.ans})
}

func (m *model) pad(typ uint8, flags uint8, stream uint32, fixed, body []byte) []byte {
	// A padded frame, or not.
	if m.rng.IntN(3) == 0 {
		n := m.rng.IntN(256)
		if m.rng.IntN(4) == 0 {
			n = 0
		}
		p := append([]byte{byte(n)}, fixed...)
		p = append(p, body...)
		p = append(p, make([]byte, n)...)
		return frame(typ, flags|flagPadded, stream, p)
	}
	return frame(typ, flags, stream, append(append([]byte(nil), fixed...), body...))
}

// headerBlock emits a HEADERS frame and CONTINUATION frames for a block.
func (m *model) headerBlock(client bool, stream uint32, endStream bool) []byte {
	block := make([]byte, m.rng.IntN(60))
	for i := range block {
		block[i] = byte(m.rng.IntN(256))
	}
	parts := 1 + m.rng.IntN(3)
	var fixed []byte
	var flags uint8
	if endStream {
		flags |= flagEndStream
	}
	if m.rng.IntN(4) == 0 {
		flags |= flagPriority
		fixed = []byte{0, 0, 0, 0, 15}
	}
	var out []byte
	for i := range parts {
		chunk := block[len(block)*i/parts : len(block)*(i+1)/parts]
		last := i == parts-1
		if i == 0 {
			f := flags
			if last {
				f |= flagEndHeaders
			}
			out = append(out, m.pad(typeHeaders, f, stream, fixed, chunk)...)
		} else {
			var f uint8
			if last {
				f = flagEndHeaders
			}
			out = append(out, frame(typeContinuation, f, stream, chunk)...)
		}
	}
	return out
}

func (m *model) dataLen() int {
	switch m.rng.IntN(6) {
	case 0:
		return 0
	case 1:
		return 1 + m.rng.IntN(16384)
	case 2:
		if m.rng.IntN(10) == 0 {
			return 1 << 20 // a huge frame (peers may allow up to 2^24-1)
		}
	}
	return 1 + m.rng.IntN(100)
}

// open returns a random stream matching ok, or 0.
func (m *model) pick(ok func(*mstream) bool) uint32 {
	var c []uint32
	for _, id := range m.order {
		if ok(m.streams[id]) {
			c = append(c, id)
		}
	}
	if len(c) == 0 {
		return 0
	}
	return c[m.rng.IntN(len(c))]
}

func (m *model) close(s *mstream) {
	if !s.closed {
		if !s.clientEnded {
			m.req++
		}
		m.ans++
		s.closed = true
	}
}

func (m *model) clientStep() {
	r := m.rng
	switch k := r.IntN(14); {
	case k < 3: // a new request
		id := m.next
		m.next += 2
		s := &mstream{}
		m.streams[id] = s
		m.order = append(m.order, id)
		es := r.IntN(3) > 0
		b := m.headerBlock(true, id, es)
		if m.goaway && id > m.goLast {
			m.req++
			m.ans++
			s.closed, s.serverDone = true, true
		} else if es {
			s.clientEnded = true
			m.req++
		}
		s.clientEnded = s.clientEnded || es
		m.emit(true, b)
	case k < 6: // request DATA
		id := m.pick(func(s *mstream) bool { return !s.clientEnded })
		if id == 0 {
			return
		}
		s := m.streams[id]
		n := m.dataLen()
		es := r.IntN(3) == 0
		var flags uint8
		if es {
			flags = flagEndStream
		}
		b := m.pad(typeData, flags, id, nil, make([]byte, n))
		length := int64(len(b) - 9)
		m.conn -= length
		if !s.closed {
			s.window -= length
		}
		if es {
			s.clientEnded = true
			if !s.closed {
				m.req++
				if s.serverDone {
					m.ans++
					s.closed = true
				}
			}
		}
		m.emit(true, b)
	case k == 6: // trailers
		id := m.pick(func(s *mstream) bool { return !s.clientEnded })
		if id == 0 {
			return
		}
		s := m.streams[id]
		b := m.headerBlock(true, id, true)
		s.clientEnded = true
		if !s.closed {
			m.req++
			if s.serverDone {
				m.ans++
				s.closed = true
			}
		}
		m.emit(true, b)
	case k == 7: // reset
		id := m.pick(func(s *mstream) bool { return !s.closed || r.IntN(4) == 0 })
		if id == 0 {
			return
		}
		s := m.streams[id]
		m.close(s)
		s.clientEnded = true
		m.emit(true, rst(id))
	case k == 8:
		m.req++
		m.settingsUn++
		m.emit(true, settings(2, 0, 4, uint32(r.IntN(1<<20))))
	case k == 9:
		m.req++
		m.pingsUn++
		m.emit(true, ping(0))
	case k == 10:
		if m.srvSetUn > 0 {
			m.srvSetUn--
			m.emit(true, settingsAck())
		} else if m.srvPings > 0 {
			m.srvPings--
			m.emit(true, ping(flagAck))
		}
	default:
		var b []byte
		switch r.IntN(4) {
		case 0:
			b = windowUpdate(uint32(r.IntN(int(m.next))), 1+uint32(r.IntN(1<<16)))
		case 1:
			b = frame(typePriority, 0, 1+uint32(r.IntN(50)), []byte{0, 0, 0, 0, 1})
		case 2:
			b = frame(0x20+uint8(r.IntN(200)), uint8(r.IntN(256)), uint32(r.IntN(10)), make([]byte, r.IntN(30)))
		case 3:
			b = frame(typePriorityUpdate, 0, 0, []byte{0, 0, 0, 1, 'u', '=', '2'})
		}
		m.emit(true, b)
	}
}

func (m *model) serverStep() {
	r := m.rng
	live := func(s *mstream) bool { return !s.serverDone }
	switch k := r.IntN(14); {
	case k < 3: // response headers, maybe the end
		id := m.pick(live)
		if id == 0 {
			return
		}
		s := m.streams[id]
		es := r.IntN(3) == 0
		b := m.headerBlock(false, id, es)
		if es {
			m.serverEnd(s)
		}
		m.emit(false, b)
	case k < 7: // response DATA
		id := m.pick(live)
		if id == 0 {
			return
		}
		s := m.streams[id]
		es := r.IntN(3) == 0
		var flags uint8
		if es {
			flags = flagEndStream
		}
		b := m.pad(typeData, flags, id, nil, make([]byte, m.dataLen()))
		if es {
			m.serverEnd(s)
		}
		m.emit(false, b)
	case k == 7: // reset
		id := m.pick(live)
		if id == 0 {
			return
		}
		s := m.streams[id]
		s.serverDone = true
		m.close(s)
		m.emit(false, rst(id))
	case k == 8:
		// ACKs answer every SETTINGS sent before them; sometimes one
		// comes with none outstanding.
		m.ans += m.settingsUn
		m.settingsUn = 0
		m.emit(false, settingsAck())
	case k == 9:
		if m.pingsUn > 0 {
			m.pingsUn--
			m.ans++
			m.emit(false, ping(flagAck))
		}
	case k == 10:
		m.srvPings++
		m.emit(false, ping(0))
	case k == 11:
		m.ans++
		m.srvSetUn++
		if r.IntN(2) == 0 {
			m.initial = int64(r.IntN(1 << 20))
			m.emit(false, settings(3, 100, 4, uint32(m.initial)))
		} else {
			m.emit(false, settings())
		}
	case k == 12: // window updates
		id := m.pick(func(s *mstream) bool { return !s.closed })
		incr := 1 + r.IntN(1<<16)
		if r.IntN(2) == 0 || id == 0 {
			m.conn += int64(incr)
			m.emit(false, windowUpdate(0, uint32(incr)))
		} else {
			s := m.streams[id]
			if !s.clientEnded {
				s.window += int64(incr)
			}
			m.emit(false, windowUpdate(id, uint32(incr)))
		}
	default: // a push, an unknown frame, PRIORITY
		switch r.IntN(3) {
		case 0:
			id := m.pick(live)
			if id == 0 {
				return
			}
			p := m.pushNext
			m.pushNext += 2
			b := pushPromise(id, p)
			b = append(b, m.headerBlock(false, p, false)...)
			b = append(b, data(p, flagEndStream, r.IntN(100))...)
			m.emit(false, b)
		case 1:
			m.emit(false, frame(0x0b+uint8(r.IntN(5)), uint8(r.IntN(256)), uint32(r.IntN(10)), make([]byte, r.IntN(30))))
		case 2:
			m.emit(false, frame(typePriority, 0, 1+uint32(r.IntN(50)), []byte{0, 0, 0, 0, 1}))
		}
	}
}

func (m *model) serverEnd(s *mstream) {
	s.serverDone = true
	if !s.closed && s.clientEnded {
		m.ans++
		s.closed = true
	}
}

func (m *model) goAway() {
	last := uint32(0)
	if len(m.order) > 0 {
		last = m.order[m.rng.IntN(len(m.order))]
	}
	if !m.goaway || last < m.goLast {
		m.goaway, m.goLast = true, last
	}
	for _, id := range m.order {
		if s := m.streams[id]; id > m.goLast && !s.closed {
			m.close(s)
		}
	}
	b := goaway(last, 0)
	m.emit(false, b)
}

// conversation builds one random conversation.
func conversation(rng *rand.Rand) *model {
	m := &model{rng: rng, streams: map[uint32]*mstream{}, next: 1, pushNext: 2, initial: 65535, conn: 65535}
	// The prefaces, in either order.
	cli := func() {
		m.req += 2
		m.settingsUn++
		b := append([]byte(clientPreface), settings(3, 100, 4, 1<<20)...)
		if rng.IntN(2) == 0 {
			b = append(b, windowUpdate(0, 1<<24)...)
		}
		m.emit(true, b)
	}
	srv := func() {
		m.ans++
		m.srvSetUn++
		m.initial = int64(rng.IntN(1 << 20))
		m.emit(false, settings(3, 128, 4, uint32(m.initial), 5, 1<<14))
	}
	if rng.IntN(3) == 0 {
		srv()
		cli()
	} else {
		cli()
		srv()
	}
	n := 5 + rng.IntN(150)
	for i := range n {
		if rng.IntN(2) == 0 {
			m.clientStep()
		} else {
			m.serverStep()
		}
		if i == n-10 && rng.IntN(5) == 0 {
			m.goAway()
		}
	}
	// Window bookkeeping of the streams still open.
	for _, s := range m.streams {
		if !s.closed && !s.clientEnded {
			s.window += m.initial
		}
	}
	return m
}

func TestRandomConversations(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for i := range n {
		m := conversation(rng)
		f := New()
		for j := 0; j < len(m.events); {
			// Consecutive events of one side go in one chunk
			// sometimes, then are split anywhere.
			k := j + 1
			for k < len(m.events) && m.events[k].client == m.events[j].client && rng.IntN(3) == 0 {
				k++
			}
			var b []byte
			for _, e := range m.events[j:k] {
				b = append(b, e.bytes...)
			}
			feed := f.Server
			if m.events[j].client {
				feed = f.Client
			}
			prev := 0
			for _, cut := range append(randomCuts(rng, len(b)), len(b)) {
				feed(b[prev:cut])
				prev = cut
			}
			e := m.events[k-1]
			if f.Err() != nil || f.Requests() != e.req || f.Answers() != e.ans {
				t.Fatalf("conversation %d, event %d of %d: requests %d answers %d, want %d %d; err %v", i, k-1, len(m.events), f.Requests(), f.Answers(), e.req, e.ans, f.Err())
			}
			j = k
		}
		if got := f.ConnSendWindow(); got != m.conn {
			t.Fatalf("conversation %d: ConnSendWindow %d, want %d", i, got, m.conn)
		}
		for id, s := range m.streams {
			want := int64(0)
			if !s.closed && !s.clientEnded {
				want = s.window
			}
			if got := f.SendWindow(id); got != want {
				t.Fatalf("conversation %d: SendWindow(%d) = %d, want %d", i, id, got, want)
			}
		}
	}
}

var _ = binary.BigEndian
