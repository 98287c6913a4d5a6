package pgframe

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stackcopy/stackcopy/internal/framekit/framekittest"
)

// extendedTurns is a realistic extended-protocol exchange, as pgbench
// -M extended sends it (Parse/Bind/Describe/Execute/Sync per statement,
// unnamed statement) and as -M prepared does (Bind/Execute/Sync), with
// the server's answers: one client turn and one server turn per statement.
func extendedTurns() (turns []framekittest.Turn, msgs int) {
	var cli, srv []byte
	add := func(b *[]byte, ms ...[]byte) {
		for _, m := range ms {
			*b = append(*b, m...)
			msgs++
		}
	}
	row := enc(&pgproto3.DataRow{Values: [][]byte{[]byte("12345"), []byte("-2345")}})
	for i := range 8 {
		cli, srv = nil, nil
		if i%2 == 0 {
			add(&cli, enc(&pgproto3.Parse{Query: "SELECT abalance FROM pgbench_accounts WHERE aid = $1"}), enc(&pgproto3.Bind{Parameters: [][]byte{[]byte("42")}}),
				enc(&pgproto3.Describe{ObjectType: 'P'}), enc(&pgproto3.Execute{}), enc(&pgproto3.Sync{}))
			add(&srv, enc(&pgproto3.ParseComplete{}), enc(&pgproto3.BindComplete{}), rowDesc, row, enc(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}), enc(&pgproto3.ReadyForQuery{TxStatus: 'T'}))
		} else {
			add(&cli, enc(&pgproto3.Bind{PreparedStatement: "P0_1", Parameters: [][]byte{[]byte("42"), []byte("-17")}}), enc(&pgproto3.Execute{}), enc(&pgproto3.Sync{}))
			add(&srv, enc(&pgproto3.BindComplete{}), enc(&pgproto3.CommandComplete{CommandTag: []byte("UPDATE 1")}), enc(&pgproto3.ReadyForQuery{TxStatus: 'T'}))
		}
		turns = append(turns, framekittest.Turn{Client: true, Data: cli}, framekittest.Turn{Data: srv})
	}
	return turns, msgs
}

// BenchmarkFramerExtended feeds the exchange turn by turn, both directions
// through one Framer, as the replayer does. One op is one message, either
// direction.
func BenchmarkFramerExtended(b *testing.B) {
	turns, msgs := extendedTurns()
	f := New()
	f.Client(enc(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "u"}}))
	f.Server(enc(&pgproto3.AuthenticationOk{}))
	f.Server(enc(&pgproto3.ReadyForQuery{TxStatus: 'I'}))
	framekittest.Bench(b, f, turns, msgs, 0)
	if f.Requests() != f.Answers() {
		b.Fatal(f.Requests(), f.Answers(), f.Err())
	}
}

// BenchmarkFramerLargeRows: a result of 1 MiB DataRows cut into TCP
// segments; rows are counted down, not stored. One op is one row.
func BenchmarkFramerLargeRows(b *testing.B) {
	row := enc(&pgproto3.DataRow{Values: [][]byte{make([]byte, 1<<20)}})
	f := New()
	f.Client(enc(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "u"}}))
	f.Server(enc(&pgproto3.AuthenticationOk{}))
	f.Server(enc(&pgproto3.ReadyForQuery{TxStatus: 'I'}))
	f.Client(enc(&pgproto3.Query{String: "select big"}))
	f.Server(rowDesc)
	framekittest.Bench(b, f, []framekittest.Turn{{Data: row}}, 1, 65483)
}
