package myframe

import (
	"bytes"
	"errors"
	"sync"
	"testing"
)

// A scripted session: each line is one side's packets with the counts
// expected after it.
type line struct {
	client   bool
	seq      byte // sequence id of the first packet
	payloads [][]byte
	req, ans int
	err      error // expected Err after the line (nil: none)
}

func C(seq byte, req, ans int, p ...[]byte) line { return line{true, seq, p, req, ans, nil} }
func S(seq byte, req, ans int, p ...[]byte) line { return line{false, seq, p, req, ans, nil} }

func (l line) fails(err error) line { l.err = err; return l }

func (l line) bytes() []byte {
	seq := l.seq
	var b []byte
	for _, p := range l.payloads {
		if l.client && l.seq == 0 {
			seq = 0 // pipelined commands
		}
		b = append(b, packets(&seq, p)...)
	}
	return b
}

const (
	baseCaps = capProtocol41 | 1<<15 | 1<<16 | 1<<17 | 1<<19 // secure conn, multi statements/results, plugin auth
	mariaExt = capMariaProgress | capMariaCacheMetadata
)

func greet(caps uint64) line {
	return S(0, 0, 1, greetingPayload("5.5.5-10.11.6-MariaDB", caps, "mysql_native_password"))
}

func hr(caps uint64) line {
	return C(1, 1, 1, handshakeResponse(caps, "app", bytes.Repeat([]byte{7}, 20), "mysql_native_password"))
}

// connected is a plain handshake: greeting, HandshakeResponse, OK.
func connected(caps uint64) []line {
	return []line{greet(caps), hr(caps), S(2, 1, 2, okPayload(0, 2))}
}

func join(parts ...[]line) []line {
	var out []line
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestSessions(t *testing.T) {
	q := func(sql string) []byte { return append([]byte{0x03}, sql...) }
	more := uint16(2 | statusMoreResults)
	rs := func(n int, st uint16) [][]byte { // a text result set of one column, n rows
		out := [][]byte{{1}, columnDef("a"), eofPayload(2)}
		for range n {
			out = append(out, lenencStr([]byte("v")))
		}
		return append(out, eofPayload(st))
	}
	deprecate := uint64(baseCaps | capDeprecateEOF)
	maria := (uint64(baseCaps) | mariaExt | capDeprecateEOF) &^ capMySQL
	long := bytes.Repeat([]byte("x"), maxPacket-1) // a row of exactly 0xFFFFFF bytes with its length prefix... see below

	for _, tc := range []struct {
		name  string
		lines []line
	}{
		{"greeting is a unit before any client byte", []line{greet(baseCaps)}},
		{"client bytes before the greeting wait for it", []line{
			C(1, 0, 0, handshakeResponse(baseCaps, "app", nil, "")), S(0, 1, 1, greetingPayload("8.0.36", baseCaps, "caching_sha2_password"))}},
		{"server refuses the connection", []line{
			S(0, 0, 1, errPayload(1040, "Too many connections")), C(1, 0, 1, []byte("x")).fails(ErrClosed)}},
		{"authentication fails", []line{greet(baseCaps), hr(baseCaps), S(2, 1, 2, errPayload(1045, "Access denied")),
			C(0, 1, 2, q("SELECT 1")).fails(ErrClosed)}},
		{"SSLRequest", []line{greet(baseCaps | capSSL), C(1, 0, 1, cat(u32(baseCaps|capSSL), u32(1<<24), []byte{33}, make([]byte, 23))).fails(ErrTLS)}},
		{"compression", []line{greet(baseCaps | capCompress), hr(baseCaps | capCompress), S(2, 1, 2, okPayload(0, 2)).fails(ErrCompressed)}},
		{"HandshakeResponse320", []line{greet(baseCaps), C(1, 0, 1, cat(u16(0x0005), []byte{0, 0, 0}, []byte("app\x00"))).fails(ErrUnsupported)}},
		{"protocol 9", []line{S(0, 0, 0, append([]byte{9}, "3.22\x00"...)).fails(ErrUnsupported)}},
		{"optional result set metadata", []line{greet(baseCaps | capOptionalMetadata), C(1, 0, 1, handshakeResponse(baseCaps|capOptionalMetadata, "a", nil, "")).fails(ErrUnsupported)}},
		{"caching_sha2_password fast auth is one unit", []line{greet(baseCaps), hr(baseCaps),
			S(2, 1, 1, []byte{0x01, 0x03}), S(3, 1, 2, okPayload(0, 2)), C(0, 2, 2, []byte{0x0e}), S(1, 2, 3, okPayload(0, 2))}},
		{"caching_sha2_password full auth: each server packet the client answers is a unit", []line{greet(baseCaps), hr(baseCaps),
			S(2, 1, 2, []byte{0x01, 0x04}), C(3, 2, 2, []byte{0x02}), S(4, 2, 3, cat([]byte{0x01}, []byte(testPEM))),
			C(5, 3, 3, bytes.Repeat([]byte{9}, 256)), S(6, 3, 4, okPayload(0, 2))}},
		{"auth switch then ERR", []line{greet(baseCaps), hr(baseCaps),
			S(2, 1, 2, cat([]byte{0xfe}, []byte("client_ed25519\x00"), make([]byte, 32))), C(3, 2, 2, make([]byte, 64)), S(4, 2, 3, errPayload(1045, "denied"))}},
		{"multi-results complete at the last", join(connected(baseCaps), []line{
			C(0, 2, 2, q("INSERT ...; SELECT ...; CALL p()")),
			S(1, 2, 2, okPayload(0, more)), S(2, 2, 2, rs(2, more)...), S(8, 2, 2, rs(0, more)...), S(12, 2, 3, okPayload(0, 2)),
			C(0, 3, 3, []byte{0x0e}), S(1, 3, 4, okPayload(0, 2))})},
		{"ERR after rows ends the answer", join(connected(baseCaps), []line{
			C(0, 2, 2, q("SELECT")), S(1, 2, 3, append(rs(3, 2)[:6], errPayload(1317, "interrupted"))...)})},
		{"LOCAL INFILE", join(connected(baseCaps), []line{
			C(0, 2, 2, q("LOAD DATA LOCAL INFILE 'f' INTO TABLE t")), S(1, 2, 3, cat([]byte{0xfb}, []byte("f"))),
			C(2, 2, 3, []byte("1,a\n"), []byte("2,b\n")), C(4, 3, 3, nil), S(5, 3, 4, okPayload(0, 2))})},
		{"LOCAL INFILE in a multi-statement", join(connected(baseCaps), []line{
			C(0, 2, 2, q("LOAD ...; SELECT 1")), S(1, 2, 3, []byte{0xfb, 'f'}), C(2, 3, 3, nil),
			S(3, 3, 3, okPayload(0, more)), S(4, 3, 4, rs(1, 2)...)})},
		{"LOCAL INFILE while another command is pipelined", join(connected(baseCaps), []line{
			C(0, 3, 2, q("LOAD ..."), []byte{0x0e}), S(1, 3, 2, []byte{0xfb, 'f'}).fails(ErrPipelined)})},
		{"statements without answers", join(connected(baseCaps), []line{
			C(0, 1, 2, cat([]byte{0x19}, u32(1))), C(0, 1, 2, cat([]byte{0x18}, u32(1), u16(0), []byte("data"))),
			C(0, 2, 2, []byte{0x0e}), S(1, 2, 3, okPayload(0, 2)), C(0, 2, 3, []byte{0x01}), C(0, 2, 3, []byte{0x0e}).fails(ErrClosed)})},
		{"prepare, cursor, fetch", join(connected(baseCaps), []line{
			C(0, 2, 2, append([]byte{0x16}, "SELECT a, b FROM t WHERE c = ?"...)),
			S(1, 2, 3, cat([]byte{0}, u32(1), u16(2), u16(1), []byte{0}, u16(0)), columnDef("?"), eofPayload(2), columnDef("a"), columnDef("b"), eofPayload(2)),
			C(0, 3, 3, cat([]byte{0x17}, u32(1), []byte{1}, u32(1), []byte{0, 1, 8, 0}, u32(1), u32(0))),
			S(1, 3, 4, []byte{2}, columnDef("a"), columnDef("b"), eofPayload(2|statusCursorExists)),
			C(0, 4, 4, cat([]byte{0x1c}, u32(1), u32(1))), S(1, 4, 5, []byte{0, 0, 1, 'x'}, eofPayload(2|statusCursorExists)),
			C(0, 5, 5, cat([]byte{0x1c}, u32(1), u32(1))), S(1, 5, 6, eofPayload(2|0x80)),
			C(0, 6, 6, cat([]byte{0x1a}, u32(1))), S(1, 6, 7, okPayload(0, 2))})},
		{"prepare with CLIENT_DEPRECATE_EOF", join(connected(deprecate), []line{
			C(0, 2, 2, append([]byte{0x16}, "SELECT ?"...)),
			S(1, 2, 3, cat([]byte{0}, u32(1), u16(1), u16(1), []byte{0}, u16(0)), columnDef("?"), columnDef("a")),
			C(0, 3, 3, q("SELECT")), S(1, 3, 4, []byte{1}, columnDef("a"), lenencStr([]byte("v")), okPayload(0xfe, 2))})},
		{"a row of 16 MiB starts with 0xFE and is not the end", join(connected(deprecate), []line{
			C(0, 2, 2, q("SELECT blob")),
			S(1, 2, 2, []byte{1}, columnDef("a"), lenencStr(bytes.Repeat([]byte("b"), 1<<24))),
			S(5, 2, 3, okPayload(0xfe, 2))})},
		{"a message of exactly 0xFFFFFF bytes ends with an empty packet", join(connected(baseCaps), []line{
			C(0, 2, 2, q("SELECT blob")),
			S(1, 2, 2, []byte{1}, columnDef("a"), eofPayload(2), append([]byte{0xfd, 0xfb, 0xff, 0xff}, long[:maxPacket-4]...)),
			S(6, 2, 3, eofPayload(2))})},
		{"MariaDB: progress reports, cached metadata", join(connected(maria), []line{
			C(0, 2, 2, cat([]byte{0x17}, u32(1), []byte{0}, u32(1))),
			S(1, 2, 2, []byte{0xff, 0xff, 0xff, 1, 1, 0, 0, 0, 0, 0}),
			S(2, 2, 3, []byte{1, 0}, []byte{0, 0, 1, 'x'}, okPayload(0xfe, 2)),
			C(0, 3, 3, cat([]byte{0x17}, u32(1), []byte{0}, u32(1))),
			S(1, 3, 4, []byte{1, 1}, columnDef("a"), []byte{0, 0, 1, 'x'}, okPayload(0xfe, 2))})},
		{"pipelined commands", join(connected(baseCaps), []line{
			C(0, 5, 2, q("SELECT 1"), q("SET @a = 1"), []byte{0x0e}, []byte{0x09}),
			S(1, 5, 3, rs(1, 2)...), S(1, 5, 4, okPayload(0, 2)), S(1, 5, 5, okPayload(0, 2)), S(1, 5, 6, []byte("Uptime: 1"))})},
		{"answer before its command was shown", join(connected(baseCaps), []line{
			S(1, 1, 2, okPayload(0, 2)), C(0, 2, 3, []byte{0x0e})})},
		{"COM_CHANGE_USER with an AuthSwitchRequest", join(connected(baseCaps), []line{
			C(0, 2, 2, cat([]byte{0x11}, []byte("bob\x00"), []byte{0}, []byte("db\x00"), u16(33), []byte("mysql_native_password\x00"))),
			S(1, 2, 3, cat([]byte{0xfe}, []byte("mysql_native_password\x00"), make([]byte, 21))),
			C(2, 3, 3, make([]byte, 20)), S(3, 3, 4, okPayload(0, 2)), C(0, 4, 4, []byte{0x0e}), S(1, 4, 5, okPayload(0, 2))})},
		{"COM_FIELD_LIST, COM_SET_OPTION, COM_STATISTICS", join(connected(baseCaps), []line{
			C(0, 2, 2, []byte("\x04t\x00")), S(1, 2, 3, columnDef("a"), columnDef("b"), eofPayload(2)),
			C(0, 3, 3, []byte{0x1b, 0, 0}), S(1, 3, 4, eofPayload(2)),
			C(0, 4, 4, []byte{0x09}), S(1, 4, 5, []byte("Uptime: 5  Threads: 1"))})},
		{"server ERR out of sequence is taken", join(connected(baseCaps), []line{
			C(0, 2, 2, q("SELECT 1")), S(0, 2, 3, errPayload(1156, "Got packets out of order"))})},
		{"server OK out of sequence", join(connected(baseCaps), []line{
			C(0, 2, 2, q("SELECT 1")), S(5, 2, 2, okPayload(0, 2)).fails(ErrSequence)})},
		{"client packet out of sequence", join(connected(baseCaps), []line{C(3, 1, 2, q("SELECT 1")).fails(ErrSequence)})},
		{"binlog dump", join(connected(baseCaps), []line{C(0, 1, 2, cat([]byte{0x12}, u32(4), u16(0), u32(1))).fails(ErrUnsupported)})},
		{"empty command", join(connected(baseCaps), []line{C(0, 1, 2, nil).fails(ErrMalformed)})},
		{"too many held bytes", join(connected(baseCaps), []line{S(1, 1, 2, rs(1000, 2)...).fails(ErrHeld)})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, split := range []int{0, 1, 3} {
				f := New()
				for i, l := range tc.lines {
					b := l.bytes()
					for len(b) > 0 {
						n := len(b)
						if split > 0 {
							// 16 MiB lines in pieces still cut headers
							// anywhere, in fewer calls.
							n = min(n, split)
							if len(b) > 1<<20 {
								n = 1<<16 + split
							}
						}
						if l.client {
							f.Client(b[:n])
						} else {
							f.Server(b[:n])
						}
						b = b[n:]
					}
					if l.err != nil {
						if !errors.Is(f.Err(), l.err) {
							t.Fatalf("split %d line %d: Err %v, want %v", split, i, f.Err(), l.err)
						}
					} else if f.Err() != nil {
						t.Fatalf("split %d line %d: Err %v", split, i, f.Err())
					}
					if f.Requests() != l.req || f.Answers() != l.ans {
						t.Fatalf("split %d line %d: Requests %d Answers %d, want %d %d", split, i, f.Requests(), f.Answers(), l.req, l.ans)
					}
				}
			}
		})
	}
}

func TestPipelineBound(t *testing.T) {
	f := New()
	for _, l := range connected(baseCaps) {
		if l.client {
			f.Client(l.bytes())
		} else {
			f.Server(l.bytes())
		}
	}
	ping := C(0, 0, 0, []byte{0x0e}).bytes()
	for range MaxPipelined {
		f.Client(ping)
	}
	if f.Err() != nil || f.Requests() != 1+MaxPipelined {
		t.Fatalf("Requests %d Err %v", f.Requests(), f.Err())
	}
	f.Client(ping)
	if !errors.Is(f.Err(), ErrPipelined) {
		t.Fatalf("Err %v, want ErrPipelined", f.Err())
	}
}

// TestConcurrent runs generated sessions the way the replayer does: a
// client goroutine sends each turn once the answers before it are in, a
// server goroutine answers each turn once its requests were shown.
func TestConcurrent(t *testing.T) {
	for i := range 40 {
		g := &gen{rng: newRand(uint64(i))}
		g.session()
		f := New()
		var wg sync.WaitGroup
		steps := g.conv.steps
		for _, client := range []bool{true, false} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				prevReq, prevAns := 0, 0
				for _, s := range steps {
					if s.client == client {
						for f.Err() == nil && ((client && f.Answers() < prevAns) || (!client && f.Requests() < prevReq)) {
							yieldCPU()
						}
						if client {
							f.Client(s.data)
						} else {
							f.Server(s.data)
						}
					}
					prevReq, prevAns = s.req, s.ans
				}
			}()
		}
		wg.Wait()
		last := steps[len(steps)-1]
		if f.Err() != nil || f.Requests() != last.req || f.Answers() != last.ans {
			t.Fatalf("session %d: Requests %d Answers %d Err %v, want %d %d\n%s", i, f.Requests(), f.Answers(), f.Err(), last.req, last.ans, &g.conv)
		}
	}
}
