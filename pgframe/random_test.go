package pgframe

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// The random grammar test: a generator plays a PostgreSQL client and server
// against each other (startup with every authentication flavour, simple and
// extended queries, pipelining, Flush without Sync, errors that make the
// server discard until Sync, COPY in both directions in both protocols,
// FunctionCall, asynchronous messages, huge and empty values) and records,
// as its reference model, after which message each answer unit completes.
// The framer must reach the same counts at every turn boundary, whatever
// the chunk splits, and the same totals in any interleaving.

// step is one message of a conversation in capture order.
type step struct {
	server bool
	data   []byte
	unit   bool // a client message that is an answer unit
	done   int  // units completing at this step
}

type cmsg struct {
	typ  byte // client type byte; 0 for startup-phase packets
	unit bool
	at   int // its step
	// plan for Query and Execute
	plan []stmt
	// startup: how authentication goes
	auth int
}

// stmt is what one statement of a Query (or the portal of an Execute) does.
type stmt int

const (
	stRows stmt = iota
	stCmd
	stEmpty
	stError
	stCopyIn
	stCopyOut
	stSuspend // Execute with a row limit
)

type gen struct {
	rng   *rand.Rand
	steps []step
	big   bool // allow multi-MiB values
	small bool // no value over a few bytes (fuzz seeds)

	inflight []*cmsg // sent, not read by the server
	decisive int     // step of the last server message that moved a unit

	// server state
	cur      *cmsg // the unit being answered
	discard  bool
	copyIn   bool
	copyExt  bool
	failCopy bool   // the server fails the running COPY at its next CopyData
	rest     []stmt // statements of the running Query after its COPY
	auth     int    // authentication rounds still expected
	ended    bool   // the server closed the connection
}

func (g *gen) client(typ byte, data []byte, unit bool) *cmsg {
	g.steps = append(g.steps, step{data: data, unit: unit})
	m := &cmsg{typ: typ, unit: unit, at: len(g.steps) - 1}
	g.inflight = append(g.inflight, m)
	return m
}

// out appends a server message; decisive ones move the skip point.
func (g *gen) out(data []byte, decisive bool) int {
	g.steps = append(g.steps, step{server: true, data: data})
	if decisive {
		g.decisive = len(g.steps) - 1
	}
	return len(g.steps) - 1
}

func (g *gen) complete(at int) { g.steps[at].done++ }

// skip completes a unit the server reads without answering.
func (g *gen) skip(m *cmsg) {
	if m.unit {
		g.complete(max(m.at, g.decisive))
	}
}

func enc(m interface{ Encode([]byte) ([]byte, error) }) []byte {
	b, err := m.Encode(nil)
	if err != nil {
		panic(err)
	}
	return b
}

func (g *gen) value() []byte {
	switch g.rng.IntN(12) {
	case 0:
		return nil
	case 1:
		return []byte{}
	case 2:
		if g.small {
			return []byte("z")
		}
		if g.big && g.rng.IntN(8) == 0 {
			return bytes.Repeat([]byte("x"), 3<<20+g.rng.IntN(1000))
		}
		return bytes.Repeat([]byte("y"), g.rng.IntN(70000))
	default:
		return fmt.Appendf(nil, "%d", g.rng.IntN(1e6))
	}
}

func (g *gen) async() {
	if g.rng.IntN(10) > 0 {
		return
	}
	switch g.rng.IntN(3) {
	case 0:
		g.out(enc(&pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "hello"}), false)
	case 1:
		g.out(enc(&pgproto3.ParameterStatus{Name: "TimeZone", Value: "UTC"}), false)
	default:
		g.out(enc(&pgproto3.NotificationResponse{PID: 7, Channel: "ch", Payload: string(g.value())}), false)
	}
}

var rowDesc = enc(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("a"), DataTypeOID: 25, DataTypeSize: -1}, {Name: []byte("b"), DataTypeOID: 23, DataTypeSize: 4}}})

func errResp() []byte {
	return enc(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42P01", Message: "relation does not exist"})
}

func (g *gen) rows() {
	for range g.rng.IntN(4) {
		g.async()
		g.out(enc(&pgproto3.DataRow{Values: [][]byte{g.value(), g.value()}}), false)
	}
}

// serve lets the server read and answer one message; false if it waits
// for the client.
func (g *gen) serve() bool {
	if len(g.inflight) == 0 || g.ended {
		return false
	}
	m := g.inflight[0]
	g.inflight = g.inflight[1:]
	switch {
	case g.copyIn:
		g.serveCopy(m)
	case g.discard:
		if m.typ == 'S' {
			g.discard = false
			g.complete(g.out(enc(&pgproto3.ReadyForQuery{TxStatus: 'E'}), true))
		} else {
			g.skip(m)
		}
	default:
		g.serveIdle(m)
	}
	return true
}

func (g *gen) serveCopy(m *cmsg) {
	switch m.typ {
	case 'd':
		if g.failCopy {
			g.failCopy = false
			g.copyIn = false
			g.out(errResp(), true)
			g.endCopyError()
		}
	case 'H':
	case 'S':
		g.skip(m) // ignored during COPY FROM STDIN
	case 'c':
		g.copyIn = false
		at := g.out(enc(&pgproto3.CommandComplete{CommandTag: []byte("COPY 3")}), true)
		if g.copyExt {
			g.complete(at)
			return
		}
		g.cur = m
		g.statements()
	case 'f':
		g.copyIn = false
		at := g.out(errResp(), true)
		if g.copyExt {
			g.complete(at)
			g.discard = true
			return
		}
		g.cur = m
		g.closeQuery()
	default:
		panic("generator sent a non-copy message during COPY")
	}
}

// endCopyError: the server failed a COPY FROM STDIN on its own.
func (g *gen) endCopyError() {
	if g.copyExt {
		g.discard = true
		return
	}
	g.closeQuery()
}

// closeQuery ends a simple Query (or FunctionCall): ReadyForQuery
// completes the current unit, if one is still open.
func (g *gen) closeQuery() {
	g.async()
	at := g.out(enc(&pgproto3.ReadyForQuery{TxStatus: 'I'}), true)
	if g.cur != nil {
		g.complete(at)
		g.cur = nil
	}
	g.rest = nil
}

// statements runs the rest of a simple Query.
func (g *gen) statements() {
	for len(g.rest) > 0 {
		s := g.rest[0]
		g.rest = g.rest[1:]
		g.async()
		switch s {
		case stRows:
			g.out(rowDesc, true)
			g.rows()
			g.out(enc(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 2")}), true)
		case stCmd:
			g.out(enc(&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")}), true)
		case stEmpty:
			g.out(enc(&pgproto3.EmptyQueryResponse{}), true)
		case stError:
			g.out(errResp(), true)
			g.rest = nil
		case stCopyOut:
			g.out(enc(&pgproto3.CopyOutResponse{OverallFormat: 0, ColumnFormatCodes: []uint16{0}}), false)
			for range g.rng.IntN(4) {
				g.out(enc(&pgproto3.CopyData{Data: g.value()}), false)
			}
			g.out(enc(&pgproto3.CopyDone{}), false)
			g.out(enc(&pgproto3.CommandComplete{CommandTag: []byte("COPY 3")}), true)
		case stCopyIn:
			at := g.out(enc(&pgproto3.CopyInResponse{OverallFormat: 0, ColumnFormatCodes: []uint16{0}}), true)
			if g.cur != nil {
				g.complete(at)
				g.cur = nil
			}
			g.copyIn, g.copyExt = true, false
			g.failCopy = g.rng.IntN(6) == 0
			return
		}
	}
	g.closeQuery()
}

func (g *gen) serveIdle(m *cmsg) {
	switch m.typ {
	case 0: // startup phase
		switch {
		case m.auth < 0: // SSLRequest, GSSENCRequest
			g.complete(g.out([]byte("N"), true))
		case m.auth == 0: // trust
			g.startupOK(m)
		default:
			if g.rng.IntN(3) == 0 {
				g.out(enc(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: []string{"_pq_.x"}}), false)
			}
			g.askAuth(m, m.auth)
		}
	case 'p':
		switch g.auth {
		case 11:
			g.auth = 12
			g.complete(g.out(enc(&pgproto3.AuthenticationSASLContinue{Data: []byte("r=abc,s=salt,i=4096")}), true))
		case 12:
			g.out(enc(&pgproto3.AuthenticationSASLFinal{Data: []byte("v=sig")}), false)
			g.startupOK(m)
		default:
			if g.rng.IntN(8) == 0 {
				g.complete(g.out(enc(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"}), true))
				g.ended = true
				return
			}
			g.startupOK(m)
		}
	case 'Q':
		g.cur = m
		g.rest = m.plan
		g.statements()
	case 'F':
		g.cur = m
		if g.rng.IntN(4) == 0 {
			g.out(errResp(), true)
		} else {
			g.out(enc(&pgproto3.FunctionCallResponse{Result: g.value()}), false)
		}
		g.closeQuery()
	case 'P', 'B', 'C':
		if g.rng.IntN(8) == 0 {
			g.complete(g.out(errResp(), true))
			g.discard = true
			return
		}
		ok := map[byte][]byte{'P': enc(&pgproto3.ParseComplete{}), 'B': enc(&pgproto3.BindComplete{}), 'C': enc(&pgproto3.CloseComplete{})}[m.typ]
		g.complete(g.out(ok, true))
	case 'D':
		if g.rng.IntN(10) == 0 {
			g.complete(g.out(errResp(), true))
			g.discard = true
			return
		}
		if g.rng.IntN(2) == 0 {
			g.out(enc(&pgproto3.ParameterDescription{ParameterOIDs: []uint32{23}}), false)
		}
		if g.rng.IntN(3) == 0 {
			g.complete(g.out(enc(&pgproto3.NoData{}), true))
		} else {
			g.complete(g.out(rowDesc, true))
		}
	case 'E':
		g.async()
		switch m.plan[0] {
		case stRows, stSuspend:
			g.rows()
			if m.plan[0] == stSuspend {
				g.complete(g.out(enc(&pgproto3.PortalSuspended{}), true))
			} else {
				g.complete(g.out(enc(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}), true))
			}
		case stCmd:
			g.complete(g.out(enc(&pgproto3.CommandComplete{CommandTag: []byte("UPDATE 1")}), true))
		case stEmpty:
			g.complete(g.out(enc(&pgproto3.EmptyQueryResponse{}), true))
		case stError:
			g.complete(g.out(errResp(), true))
			g.discard = true
		case stCopyOut:
			g.out(enc(&pgproto3.CopyOutResponse{ColumnFormatCodes: []uint16{}}), false)
			for range g.rng.IntN(4) {
				g.out(enc(&pgproto3.CopyData{Data: g.value()}), false)
			}
			g.out(enc(&pgproto3.CopyDone{}), false)
			if g.rng.IntN(5) == 0 { // fails after sending data
				g.complete(g.out(errResp(), true))
				g.discard = true
				return
			}
			g.complete(g.out(enc(&pgproto3.CommandComplete{CommandTag: []byte("COPY 2")}), true))
		case stCopyIn:
			g.complete(g.out(enc(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{}}), true))
			g.copyIn, g.copyExt = true, true
			g.failCopy = g.rng.IntN(6) == 0
		}
	case 'S':
		if g.rng.IntN(10) == 0 { // COMMIT of the implicit transaction fails
			g.out(errResp(), true)
		}
		g.async()
		g.complete(g.out(enc(&pgproto3.ReadyForQuery{TxStatus: 'I'}), true))
	case 'c', 'f':
		g.skip(m) // ignored outside COPY
	case 'H', 'X', 'd':
	}
}

func (g *gen) askAuth(m *cmsg, auth int) {
	switch auth {
	case 3:
		g.complete(g.out(enc(&pgproto3.AuthenticationCleartextPassword{}), true))
	case 5:
		g.complete(g.out(enc(&pgproto3.AuthenticationMD5Password{Salt: [4]byte{1, 2, 3, 4}}), true))
	case 10:
		g.complete(g.out(enc(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}), true))
		auth = 11
	case 99: // rejected before authentication
		g.complete(g.out(enc(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "53300", Message: "too many clients"}), true))
		g.ended = true
	}
	g.auth = auth
}

func (g *gen) startupOK(m *cmsg) {
	g.auth = 0
	g.out(enc(&pgproto3.AuthenticationOk{}), false)
	for range g.rng.IntN(5) {
		g.out(enc(&pgproto3.ParameterStatus{Name: "server_version", Value: "18.0"}), false)
	}
	key := make([]byte, 4)
	if g.rng.IntN(2) == 0 {
		key = make([]byte, 32) // protocol 3.2
	}
	g.out(enc(&pgproto3.BackendKeyData{ProcessID: 42, SecretKey: key}), false)
	g.complete(g.out(enc(&pgproto3.ReadyForQuery{TxStatus: 'I'}), true))
}

// drain lets the server answer everything it can.
func (g *gen) drain() {
	for g.serve() {
	}
}

// send sends client messages, letting the server answer part of them
// meanwhile (pipelining on the wire).
func (g *gen) send(msgs ...func()) {
	for _, m := range msgs {
		m()
		if g.rng.IntN(3) == 0 {
			for range g.rng.IntN(3) {
				g.serve()
			}
		}
	}
}

func (g *gen) plan(n int) []stmt {
	p := make([]stmt, 1+g.rng.IntN(n))
	for i := range p {
		p[i] = []stmt{stRows, stRows, stCmd, stEmpty, stError, stCopyIn, stCopyOut}[g.rng.IntN(7)]
	}
	return p
}

func (g *gen) copyData() {
	if !g.copyIn {
		return // the COPY failed before it started: libpq sends no data
	}
	var ms []func()
	for range g.rng.IntN(4) {
		ms = append(ms, func() { g.client('d', enc(&pgproto3.CopyData{Data: g.value()}), false) })
	}
	if g.rng.IntN(5) == 0 {
		ms = append(ms, func() { g.client('f', enc(&pgproto3.CopyFail{Message: "no"}), true) })
	} else {
		ms = append(ms, func() { g.client('c', enc(&pgproto3.CopyDone{}), true) })
	}
	if g.copyExt {
		ms = append(ms, func() { g.client('S', enc(&pgproto3.Sync{}), true) })
	}
	g.send(ms...)
	g.drain()
}

func generate(rng *rand.Rand, big bool) []step {
	return (&gen{rng: rng, big: big, decisive: -1}).generate()
}

func (g *gen) generate() []step {
	rng := g.rng
	if rng.IntN(20) == 0 {
		g.steps = append(g.steps, step{data: enc(&pgproto3.CancelRequest{ProcessID: 42, SecretKey: make([]byte, 4+28*rng.IntN(2))})})
		return g.steps
	}
	for range rng.IntN(3) { // GSSENCRequest and SSLRequest refused
		code := enc(&pgproto3.SSLRequest{})
		if rng.IntN(2) == 0 {
			code = enc(&pgproto3.GSSEncRequest{})
		}
		g.client(0, code, true).auth = -1
		g.drain()
	}
	version := []uint32{pgproto3.ProtocolVersion30, pgproto3.ProtocolVersion32}[rng.IntN(2)]
	sm := g.client(0, enc(&pgproto3.StartupMessage{ProtocolVersion: version, Parameters: map[string]string{"user": "u", "database": "d"}}), true)
	sm.auth = []int{0, 3, 5, 10, 99}[rng.IntN(5)]
	g.drain()
	for g.auth != 0 && !g.ended {
		g.client('p', enc(&pgproto3.PasswordMessage{Password: "secret"}), true)
		g.drain()
	}
	for range rng.IntN(12) {
		if g.ended {
			break
		}
		switch rng.IntN(7) {
		case 0, 1: // simple query
			q := g.client('Q', enc(&pgproto3.Query{String: "select 1; select 2"}), true)
			q.plan = g.plan(3)
			g.drain()
			for g.copyIn {
				g.copyData()
			}
		case 2, 3, 4: // extended batch, maybe pipelined, maybe ending in Flush
			var ms []func()
			copyIn := false
			for range 1 + rng.IntN(3) {
				for range 1 + rng.IntN(2) {
					ms = append(ms, func() {
						g.client('P', enc(&pgproto3.Parse{Name: "s1", Query: "select $1", ParameterOIDs: []uint32{23}}), true)
					})
				}
				ms = append(ms, func() {
					g.client('B', enc(&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{g.value()}}), true)
				})
				if rng.IntN(2) == 0 {
					ms = append(ms, func() { g.client('D', enc(&pgproto3.Describe{ObjectType: "SP"[rng.IntN(2)], Name: "s1"}), true) })
				}
				pl := []stmt{[]stmt{stRows, stCmd, stEmpty, stError, stSuspend, stCopyOut, stCopyIn}[rng.IntN(7)]}
				if pl[0] == stCopyIn {
					copyIn = true
				}
				ms = append(ms, func() { g.client('E', enc(&pgproto3.Execute{}), true).plan = pl })
				if !copyIn && rng.IntN(4) == 0 {
					ms = append(ms, func() { g.client('C', enc(&pgproto3.Close{ObjectType: 'S', Name: "s1"}), true) })
				}
				if copyIn {
					break
				}
				if rng.IntN(3) == 0 {
					ms = append(ms, func() { g.client('H', enc(&pgproto3.Flush{}), false) })
				}
				if rng.IntN(4) > 0 {
					ms = append(ms, func() { g.client('S', enc(&pgproto3.Sync{}), true) })
				}
			}
			if copyIn || rng.IntN(3) == 0 {
				// libpq: Sync right after Execute, whether or not it is a
				// COPY; the server ignores it during COPY FROM STDIN.
				ms = append(ms, func() { g.client('S', enc(&pgproto3.Sync{}), true) })
			} else {
				ms = append(ms, func() { g.client('H', enc(&pgproto3.Flush{}), false) })
			}
			g.send(ms...)
			g.drain()
			for g.copyIn {
				g.copyData()
			}
			if g.discard || g.rng.IntN(4) == 0 {
				g.client('S', enc(&pgproto3.Sync{}), true)
				g.drain()
			}
		case 5:
			g.client('F', enc(&pgproto3.FunctionCall{Function: 1598, Arguments: [][]byte{g.value()}}), true)
			g.drain()
		case 6: // strays the server ignores
			switch rng.IntN(3) {
			case 0:
				g.client('c', enc(&pgproto3.CopyDone{}), true)
			case 1:
				g.client('f', enc(&pgproto3.CopyFail{Message: "late"}), true)
			default:
				g.client('d', enc(&pgproto3.CopyData{Data: []byte("late")}), false)
			}
			g.drain()
		}
	}
	if !g.ended && rng.IntN(2) == 0 {
		g.client('X', enc(&pgproto3.Terminate{}), false)
	}
	return g.steps
}

// cuts splits b at random points (also inside headers: many small pieces
// near message starts happen because the cut positions are uniform over
// short streams and geometric over long ones).
func cuts(rng *rand.Rand, b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		var n int
		switch rng.IntN(4) {
		case 0:
			n = 1 + rng.IntN(min(len(b), 6))
		case 1:
			n = 1 + rng.IntN(len(b))
		default:
			n = min(len(b), 1+rng.IntN(1500))
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func describeSteps(steps []step) string {
	var b strings.Builder
	for i, s := range steps {
		who := "C"
		if s.server {
			who = "S"
		}
		typ := byte('?')
		if len(s.data) > 0 {
			typ = s.data[0]
		}
		fmt.Fprintf(&b, "%d %s %q len=%d unit=%v done=%d\n", i, who, typ, len(s.data), s.unit, s.done)
	}
	return b.String()
}

// checkConversation feeds steps in capture order, turn by turn with random
// cuts, and checks the counts after every turn; then in other orders.
func checkConversation(t *testing.T, rng *rand.Rand, steps []step) {
	t.Helper()
	var wantReq, wantAns int
	f := New()
	perStep := rng.IntN(2) == 0
	for i := 0; i < len(steps); {
		j := i
		var turn []byte
		for j < len(steps) && steps[j].server == steps[i].server {
			turn = append(turn, steps[j].data...)
			if steps[j].unit {
				wantReq++
			}
			wantAns += steps[j].done
			j++
			if perStep {
				break
			}
		}
		for _, c := range cuts(rng, turn) {
			if steps[i].server {
				f.Server(c)
			} else {
				f.Client(c)
			}
		}
		if f.Err() != nil || f.Requests() != wantReq || f.Answers() != wantAns {
			t.Fatalf("after step %d: requests %d answers %d err %v; want %d %d\n%s", j-1, f.Requests(), f.Answers(), f.Err(), wantReq, wantAns, describeSteps(steps))
		}
		i = j
	}
	var cli, srv []byte
	for _, s := range steps {
		if s.server {
			srv = append(srv, s.data...)
		} else {
			cli = append(cli, s.data...)
		}
	}
	for order := range 3 {
		f := New()
		a, b := cuts(rng, cli), cuts(rng, srv)
		switch order {
		case 0: // the client's side first
			for _, c := range a {
				f.Client(c)
			}
			for _, c := range b {
				f.Server(c)
			}
		case 1: // the server's side first: answers wait for their requests
			for _, c := range b {
				f.Server(c)
			}
			for _, c := range a {
				f.Client(c)
			}
		case 2: // randomly interleaved
			for len(a)+len(b) > 0 {
				if len(b) == 0 || (len(a) > 0 && rng.IntN(2) == 0) {
					f.Client(a[0])
					a = a[1:]
				} else {
					f.Server(b[0])
					b = b[1:]
				}
			}
		}
		if f.Err() != nil || f.Requests() != wantReq || f.Answers() != wantAns {
			t.Fatalf("order %d: requests %d answers %d err %v; want %d %d\n%s", order, f.Requests(), f.Answers(), f.Err(), wantReq, wantAns, describeSteps(steps))
		}
	}
}

func TestRandomConversations(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for range n {
		checkConversation(t, rng, generate(rng, rng.IntN(50) == 0))
	}
}

// The generated streams are valid for the reference too: every message
// parses with pgproto3 at the boundaries the framer traces.
func TestRandomConversationsParse(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 300 {
		steps := generate(rng, false)
		var cli, srv []byte
		for _, s := range steps {
			if s.server {
				srv = append(srv, s.data...)
			} else {
				cli = append(cli, s.data...)
			}
		}
		if err := checkOracle(cli, false, true, true, rng); err != nil {
			t.Fatalf("client: %v\n%s", err, describeSteps(steps))
		}
		if err := checkOracle(srv, true, true, true, rng); err != nil {
			t.Fatalf("server: %v\n%s", err, describeSteps(steps))
		}
	}
}

// FuzzConversation drives the generator from fuzzed seeds.
func FuzzConversation(f *testing.F) {
	for i := range 8 {
		f.Add(uint64(i), uint64(i*7))
	}
	f.Fuzz(func(t *testing.T, a, b uint64) {
		rng := rand.New(rand.NewPCG(a, b))
		checkConversation(t, rng, generate(rng, false))
	})
}
