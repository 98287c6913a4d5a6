package pgframe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Differential tests against pgx's pgproto3: its Backend parses the
// client's stream (the startup phase through ReceiveStartupMessage), its
// Frontend the server's. Both must find the messages the framer traces, at
// the same boundaries and of the same types, on streams cut anywhere.

type msgInfo struct {
	typ byte // type byte; 0 for a startup-phase packet
	n   int64
	err error // the reference rejected the message's body (it consumed it)
}

func (m msgInfo) String() string { return fmt.Sprintf("%q/%d", m.typ, m.n) }

// byteReader hands out one byte per Read, so that pgproto3's chunk reader
// (io.ReadAtLeast) consumes exactly the bytes it needs and the position
// after each message is its boundary.
type byteReader struct {
	b   []byte
	pos int
}

func (r *byteReader) Read(p []byte) (int, error) {
	if r.pos >= len(r.b) {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.b[r.pos]
	r.pos++
	return 1, nil
}

func frontendType(m pgproto3.FrontendMessage) byte {
	switch m.(type) {
	case *pgproto3.Bind:
		return 'B'
	case *pgproto3.Close:
		return 'C'
	case *pgproto3.Describe:
		return 'D'
	case *pgproto3.Execute:
		return 'E'
	case *pgproto3.FunctionCall:
		return 'F'
	case *pgproto3.CopyFail:
		return 'f'
	case *pgproto3.CopyData:
		return 'd'
	case *pgproto3.CopyDone:
		return 'c'
	case *pgproto3.Flush:
		return 'H'
	case *pgproto3.Parse:
		return 'P'
	case *pgproto3.PasswordMessage, *pgproto3.SASLInitialResponse, *pgproto3.SASLResponse, *pgproto3.GSSResponse:
		return 'p'
	case *pgproto3.Query:
		return 'Q'
	case *pgproto3.Sync:
		return 'S'
	case *pgproto3.Terminate:
		return 'X'
	case *pgproto3.StartupMessage, *pgproto3.SSLRequest, *pgproto3.GSSEncRequest, *pgproto3.CancelRequest:
		return 0
	}
	return '?'
}

func backendType(m pgproto3.BackendMessage) byte {
	switch m.(type) {
	case *pgproto3.AuthenticationOk, *pgproto3.AuthenticationCleartextPassword, *pgproto3.AuthenticationMD5Password,
		*pgproto3.AuthenticationGSS, *pgproto3.AuthenticationGSSContinue, *pgproto3.AuthenticationSASL,
		*pgproto3.AuthenticationSASLContinue, *pgproto3.AuthenticationSASLFinal:
		return 'R'
	case *pgproto3.BackendKeyData:
		return 'K'
	case *pgproto3.BindComplete:
		return '2'
	case *pgproto3.CloseComplete:
		return '3'
	case *pgproto3.CommandComplete:
		return 'C'
	case *pgproto3.CopyBothResponse:
		return 'W'
	case *pgproto3.CopyData:
		return 'd'
	case *pgproto3.CopyInResponse:
		return 'G'
	case *pgproto3.CopyOutResponse:
		return 'H'
	case *pgproto3.CopyDone:
		return 'c'
	case *pgproto3.DataRow:
		return 'D'
	case *pgproto3.EmptyQueryResponse:
		return 'I'
	case *pgproto3.ErrorResponse:
		return 'E'
	case *pgproto3.FunctionCallResponse:
		return 'V'
	case *pgproto3.NoData:
		return 'n'
	case *pgproto3.NoticeResponse:
		return 'N'
	case *pgproto3.NotificationResponse:
		return 'A'
	case *pgproto3.ParameterDescription:
		return 't'
	case *pgproto3.ParameterStatus:
		return 'S'
	case *pgproto3.ParseComplete:
		return '1'
	case *pgproto3.ReadyForQuery:
		return 'Z'
	case *pgproto3.RowDescription:
		return 'T'
	case *pgproto3.PortalSuspended:
		return 's'
	case *pgproto3.NegotiateProtocolVersion:
		return 'v'
	}
	return '?'
}

// bigIncomplete reports whether the typed message at data[pos:] claims a
// body over 1 MiB that the data does not hold: pgproto3 would allocate
// the whole claimed size before finding the end of input.
func bigIncomplete(data []byte, pos int) bool {
	if len(data)-pos < 5 {
		return false
	}
	l := int64(int32(binary.BigEndian.Uint32(data[pos+1:])))
	return l > 1<<20 && int64(pos)+1+l > int64(len(data))
}

// reference parses data with pgproto3: the messages it finds (with body
// errors, after which it goes on) and why it stopped (nil: at the end,
// between messages).
func reference(data []byte, server, startup bool) (msgs []msgInfo, stop error) {
	r := &byteReader{b: data}
	if server {
		fe := pgproto3.NewFrontend(r, io.Discard)
		for r.pos < len(data) {
			before := r.pos
			if bigIncomplete(data, before) {
				return msgs, io.ErrUnexpectedEOF
			}
			m, err := fe.Receive()
			n := int64(r.pos - before)
			if err != nil {
				if n >= 5 && n == 1+int64(binary.BigEndian.Uint32(data[before+1:])) {
					msgs = append(msgs, msgInfo{data[before], n, err})
					continue
				}
				return msgs, err
			}
			msgs = append(msgs, msgInfo{backendType(m), n, nil})
		}
		return msgs, nil
	}
	be := pgproto3.NewBackend(r, io.Discard)
	be.SetMaxBodyLen(MaxMessage)
	for r.pos < len(data) {
		before := r.pos
		if startup {
			m, err := be.ReceiveStartupMessage()
			if err != nil {
				return msgs, err
			}
			msgs = append(msgs, msgInfo{0, int64(r.pos - before), nil})
			switch m.(type) {
			case *pgproto3.StartupMessage:
				startup = false
			case *pgproto3.CancelRequest:
				if r.pos < len(data) {
					return msgs, errors.New("bytes after CancelRequest")
				}
			}
			continue
		}
		if bigIncomplete(data, before) {
			return msgs, io.ErrUnexpectedEOF
		}
		m, err := be.Receive()
		n := int64(r.pos - before)
		if err != nil {
			if n >= 5 && n == 1+int64(binary.BigEndian.Uint32(data[before+1:])) {
				msgs = append(msgs, msgInfo{data[before], n, err})
				continue
			}
			return msgs, err
		}
		msgs = append(msgs, msgInfo{frontendType(m), n, nil})
	}
	return msgs, nil
}

// framed runs the framer over one direction (framing only, no pairing),
// cut at random points, and returns the messages it traced.
func framed(data []byte, server, startup bool, rng *rand.Rand) ([]msgInfo, error) {
	f := New()
	f.noModel = true
	var got []msgInfo
	f.trace = func(s bool, typ byte, n int64) {
		if s != server {
			panic("trace from the wrong side")
		}
		got = append(got, msgInfo{typ: typ, n: n})
	}
	if !startup {
		if server {
			f.srv.untyped, f.srv.need = false, 5
		} else {
			f.cli.untyped, f.cli.need = false, 5
		}
	}
	var pieces [][]byte
	if rng == nil {
		pieces = [][]byte{data}
	} else {
		pieces = cuts(rng, data)
	}
	for _, p := range pieces {
		if server {
			f.Server(p)
		} else {
			f.Client(p)
		}
	}
	return got, f.Err()
}

// checkOracle compares the framer with pgproto3 on data; strict also wants
// both to accept all of it. A server stream with startup set may begin with
// one-byte answers to SSLRequest/GSSENCRequest, which pgproto3 leaves to
// its caller: they are compared here.
func checkOracle(data []byte, server, startup, strict bool, rng *rand.Rand) error {
	mine, myErr := framed(data, server, startup, rng)
	var ref []msgInfo
	rest := data
	if server && startup {
		for len(rest) > 0 && rest[0] == 'N' {
			ref = append(ref, msgInfo{'N', 1, nil})
			rest = rest[1:]
		}
	}
	r, stop := reference(rest, server, startup && !server)
	ref = append(ref, r...)
	if strict && (myErr != nil || stop != nil) {
		return fmt.Errorf("valid stream refused: framer %v, pgproto3 %v", myErr, stop)
	}
	for i, want := range ref {
		if i >= len(mine) {
			switch {
			case myErr == nil:
				return fmt.Errorf("framer missed message %d %v (framed %v)", i, want, mine)
			case want.err != nil, errors.Is(myErr, ErrUnsupported):
				return nil // both refuse it, or a feature the framer does not follow
			}
			return fmt.Errorf("framer refused message %d %v that pgproto3 accepts: %v", i, want, myErr)
		}
		if got := mine[i]; got.typ != want.typ || got.n != want.n {
			return fmt.Errorf("message %d: framer %v, pgproto3 %v (err %v)", i, got, want, want.err)
		}
		// want.err != nil and the framer went on: a body it does not
		// look into (the fixed sizes it does check are pgproto3's).
	}
	if len(mine) > len(ref) {
		// pgproto3 stopped at a header the framer accepts: only a
		// protocol 3.x minor version pgproto3 does not know.
		m := mine[len(ref)]
		at := int64(0)
		for _, x := range mine[:len(ref)] {
			at += x.n
		}
		if !server && m.typ == 0 && m.n >= 8 && binary.BigEndian.Uint32(data[at+4:])>>16 == 3 {
			return nil
		}
		return fmt.Errorf("framer found message %d %v where pgproto3 stopped: %v", len(ref), m, stop)
	}
	if myErr != nil && stop == nil {
		return fmt.Errorf("framer refused the end of a stream pgproto3 parses: %v", myErr)
	}
	return nil
}

var clientSeeds = [][]byte{
	cat(enc(&pgproto3.SSLRequest{}), enc(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "postgres"}}), enc(&pgproto3.Query{String: "select 1"})),
	cat(enc(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: map[string]string{"user": "u", "database": "d"}}), enc(&pgproto3.PasswordMessage{Password: "pw"}),
		enc(&pgproto3.Parse{Name: "s", Query: "select $1"}), enc(&pgproto3.Bind{PreparedStatement: "s", Parameters: [][]byte{[]byte("1")}}), enc(&pgproto3.Describe{ObjectType: 'P'}),
		enc(&pgproto3.Execute{}), enc(&pgproto3.Close{ObjectType: 'S', Name: "s"}), enc(&pgproto3.Flush{}), enc(&pgproto3.Sync{}),
		enc(&pgproto3.CopyData{Data: []byte("1\t2\n")}), enc(&pgproto3.CopyDone{}), enc(&pgproto3.CopyFail{Message: "x"}), enc(&pgproto3.FunctionCall{Function: 1}), enc(&pgproto3.Terminate{})),
	enc(&pgproto3.CancelRequest{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}}),
	enc(&pgproto3.GSSEncRequest{}),
	{0, 0, 0, 8, 0, 3, 0, 1},
	{0, 0, 0, 9, 0, 2, 0, 0, 0},
	{0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3},
	cat(enc(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "u"}}), []byte{'S', 0, 0, 0, 5, 0}, []byte{'Q', 0, 0, 0, 3}),
}

var serverSeeds = [][]byte{
	cat(enc(&pgproto3.AuthenticationOk{}), enc(&pgproto3.ParameterStatus{Name: "a", Value: "b"}), enc(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: make([]byte, 32)}), enc(&pgproto3.ReadyForQuery{TxStatus: 'I'})),
	cat(enc(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}), enc(&pgproto3.AuthenticationSASLContinue{Data: []byte("r=x")}), enc(&pgproto3.AuthenticationSASLFinal{Data: []byte("v=x")}), enc(&pgproto3.AuthenticationMD5Password{}), enc(&pgproto3.AuthenticationCleartextPassword{})),
	cat(enc(&pgproto3.ParseComplete{}), enc(&pgproto3.BindComplete{}), enc(&pgproto3.ParameterDescription{ParameterOIDs: []uint32{23}}), rowDesc, enc(&pgproto3.DataRow{Values: [][]byte{nil, []byte("x")}}),
		enc(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}), enc(&pgproto3.NoData{}), enc(&pgproto3.EmptyQueryResponse{}), enc(&pgproto3.PortalSuspended{}), enc(&pgproto3.CloseComplete{}), errResp(), enc(&pgproto3.ReadyForQuery{TxStatus: 'E'})),
	cat(enc(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0}}), enc(&pgproto3.CopyOutResponse{}), enc(&pgproto3.CopyData{Data: []byte("x")}), enc(&pgproto3.CopyDone{}), enc(&pgproto3.CopyBothResponse{}),
		enc(&pgproto3.NoticeResponse{Message: "n"}), enc(&pgproto3.NotificationResponse{Channel: "c"}), enc(&pgproto3.FunctionCallResponse{Result: []byte("1")}), enc(&pgproto3.NegotiateProtocolVersion{UnrecognizedOptions: []string{"x"}})),
	{'R', 0, 0, 0, 8, 0, 0, 0, 7},
	{'Z', 0, 0, 0, 6, 'I', 'I'},
	{'1', 0, 0, 0, 3},
	{'D', 0x7f, 0xff, 0xff, 0xff, 0},
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func TestOracleSeeds(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for i, s := range clientSeeds {
		if err := checkOracle(s, false, true, false, rng); err != nil {
			t.Errorf("client seed %d: %v", i, err)
		}
	}
	for i, s := range serverSeeds {
		if err := checkOracle(s, true, false, false, rng); err != nil {
			t.Errorf("server seed %d: %v", i, err)
		}
	}
}

// FuzzClientOracle: the client's stream from its first byte (startup
// phase included), split at random points.
func FuzzClientOracle(f *testing.F) {
	for _, s := range clientSeeds {
		f.Add(s, uint64(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		if err := checkOracle(data, false, true, false, rand.New(rand.NewPCG(seed, 1))); err != nil {
			t.Fatalf("%v\ndata: %q", err, data)
		}
		// Detect refuses no stream whose first packet frames, and what
		// it accepts it accepts on every prefix.
		mine, _ := framed(data, false, true, nil)
		d := Detect(data)
		if len(mine) > 0 && !d {
			t.Fatalf("Detect false on a stream whose first packet frames: %q", data)
		}
		if d {
			for k := 1; k < len(data) && k <= 8; k++ {
				if !Detect(data[:k]) {
					t.Fatalf("Detect true on %q, false on its prefix %q", data, data[:k])
				}
			}
		}
	})
}

// FuzzServerOracle: the server's stream after the startup phase.
func FuzzServerOracle(f *testing.F) {
	for _, s := range serverSeeds {
		f.Add(s, uint64(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		if err := checkOracle(data, true, false, false, rand.New(rand.NewPCG(seed, 2))); err != nil {
			t.Fatalf("%v\ndata: %q", err, data)
		}
	})
}

// FuzzFramer: both directions through the whole framer, pairing included.
// It must not panic, Answers never exceeds Requests, the counts only grow
// and freeze at Err, and the result does not depend on where the chunks
// are cut.
func FuzzFramer(f *testing.F) {
	f.Add(clientSeeds[0], cat([]byte("N"), serverSeeds[0]), uint64(0))
	f.Add(clientSeeds[1], cat(enc(&pgproto3.AuthenticationCleartextPassword{}), serverSeeds[0], serverSeeds[2]), uint64(1))
	rng := rand.New(rand.NewPCG(9, 10))
	for range 6 {
		var cli, srv []byte
		g := &gen{rng: rng, small: true, decisive: -1}
		for _, s := range g.generate() {
			if s.server {
				srv = append(srv, s.data...)
			} else {
				cli = append(cli, s.data...)
			}
		}
		f.Add(cli, srv, rng.Uint64())
	}
	f.Fuzz(func(t *testing.T, cli, srv []byte, seed uint64) {
		type result struct {
			req, ans int
			err      bool
		}
		var results []result
		for pass := range 2 {
			rng := rand.New(rand.NewPCG(seed, uint64(pass)))
			fr := New()
			lastReq, lastAns := 0, 0
			var frozen *result
			check := func() {
				r, a := fr.Requests(), fr.Answers()
				if a > r || r < lastReq || a < lastAns {
					t.Fatalf("requests %d answers %d after %d %d", r, a, lastReq, lastAns)
				}
				if frozen != nil && (r != frozen.req || a != frozen.ans) {
					t.Fatalf("counts moved after Err")
				}
				if fr.Err() != nil && frozen == nil {
					frozen = &result{r, a, true}
				}
				lastReq, lastAns = r, a
			}
			for _, c := range cuts(rng, cli) {
				fr.Client(c)
				check()
			}
			for _, c := range cuts(rng, srv) {
				fr.Server(c)
				check()
			}
			results = append(results, result{fr.Requests(), fr.Answers(), fr.Err() != nil})
		}
		if results[0] != results[1] {
			t.Fatalf("result depends on the cuts: %+v", results)
		}
	})
}
