package myframe

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/stackcopy/stackcopy/internal/pcaptest"
)

// shifted is the target's id for production's id in these tests: far
// from it, and 0 (refused) where production refused.
func shifted(id uint32) uint32 {
	if id == 0 {
		return 0
	}
	return id + 1000
}

// statementIDs walks a whole client stream and returns the offset of each
// statement command's id (a sequence-0 packet whose command names a
// statement), and its value.
func statementIDs(b []byte) (at []int, ids []uint32) {
	for i := 0; i+4 <= len(b); {
		n := int(b[i]) | int(b[i+1])<<8 | int(b[i+2])<<16
		if b[i+3] == 0 && n >= 5 && i+9 <= len(b) && namesStatement(b[i+4]) {
			at = append(at, i+5)
			ids = append(ids, binary.LittleEndian.Uint32(b[i+5:]))
		}
		i += 4 + n
	}
	return at, ids
}

// TestRenumberCaptures replays the real sessions' client bytes through
// Renumber, cut into chunks at random (many cut inside a packet's first
// bytes), with production's ids taken from a framer at every client turn
// as the replayer does, and a target that numbers its statements 1000
// further on: every statement command names the target's id, every other
// byte is as captured, and no byte is lost or added.
func TestRenumberCaptures(t *testing.T) {
	for _, tc := range []struct {
		file       string
		statements int // statement commands naming a prepared id
	}{
		// Three executes and two closes of the two prepared statements.
		{"testdata/go-sql-driver.pcap", 5},
		// Executes, a cursor's fetches, COM_STMT_RESET, a close.
		{"testdata/raw-client.pcap", 8},
	} {
		for i, segs := range pcaptest.Conns(t, tc.file, 33061) {
			turns := pcaptest.Turns(segs)
			var client []byte
			for _, tn := range turns {
				if tn.Client {
					client = append(client, tn.Data...)
				}
			}
			_, captured := statementIDs(client)
			if len(captured) != tc.statements {
				t.Fatalf("%s session %d: %d statement commands, want %d", tc.file, i, len(captured), tc.statements)
			}
			for seed := range uint64(20) {
				rng := rand.New(rand.NewPCG(seed, 3))
				f := New()
				var renumbered, unknown atomic.Uint64
				r := NewRenumber(&renumbered, &unknown)
				var out []byte
				for _, tn := range turns {
					if !tn.Client {
						f.Server(tn.Data)
						continue
					}
					ids, ok := f.Numbered(nil)
					r.Production(ids, ok)
					tgt := make([]uint32, len(ids))
					for k, id := range ids {
						tgt[k] = shifted(id)
					}
					r.Target(tgt, ok)
					f.Client(tn.Data)
					for p := tn.Data; len(p) > 0; {
						n := min(len(p), 1+rng.IntN(12))
						if rng.IntN(3) == 0 {
							n = min(len(p), 1+rng.IntN(2000))
						}
						out = append(out, r.Rewrite(p[:n])...)
						p = p[n:]
					}
				}
				out = append(out, r.Flush()...)
				if err := f.Err(); err != nil {
					t.Fatalf("%s session %d: %v", tc.file, i, err)
				}
				if len(out) != len(client) {
					t.Fatalf("%s session %d seed %d: %d bytes out, %d in", tc.file, i, seed, len(out), len(client))
				}
				at, got := statementIDs(out)
				want := make([]uint32, len(captured))
				for k, id := range captured {
					want[k] = id
					if id != 0xffffffff {
						want[k] = shifted(id)
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%s session %d seed %d: ids %v, want %v (captured %v)", tc.file, i, seed, got, want, captured)
				}
				rest := bytes.Clone(out)
				for _, a := range at {
					copy(rest[a:], client[a:a+4])
				}
				if !bytes.Equal(rest, client) {
					t.Fatalf("%s session %d seed %d: bytes other than ids changed", tc.file, i, seed)
				}
				wantRenumbered := 0
				for _, id := range captured {
					if id != 0xffffffff {
						wantRenumbered++
					}
				}
				if unknown.Load() != 0 || renumbered.Load() != uint64(wantRenumbered) {
					t.Fatalf("%s session %d seed %d: %d renumbered, %d unknown; want %d, 0", tc.file, i, seed, renumbered.Load(), unknown.Load(), wantRenumbered)
				}
			}
		}
	}
}

// TestRenumberCases: what is left alone and why.
func TestRenumberCases(t *testing.T) {
	hello := func(caps uint32) []byte {
		seq := byte(1)
		return packets(&seq, handshakeResponse(uint64(caps), "app", nil, "mysql_native_password"))
	}
	cmd := func(c byte, id uint32, rest ...byte) []byte {
		var seq byte
		return packets(&seq, cat([]byte{c}, u32(id), rest))
	}
	for _, tc := range []struct {
		name               string
		prod, tgt          []uint32
		lost               bool
		in, want           []byte
		renumbered, unknow uint64
	}{
		{name: "execute, close, execute after the close",
			prod: []uint32{7}, tgt: []uint32{3},
			in:   cat(hello(baseCaps), cmd(0x17, 7, 0, 1, 0, 0, 0), cmd(0x19, 7), cmd(0x17, 7, 0, 1, 0, 0, 0)),
			want: cat(hello(baseCaps), cmd(0x17, 3, 0, 1, 0, 0, 0), cmd(0x19, 3), cmd(0x17, 7, 0, 1, 0, 0, 0)), renumbered: 2, unknow: 1},
		{name: "refused by the target: 0, which names no statement",
			prod: []uint32{7}, tgt: []uint32{0},
			in: cat(hello(baseCaps), cmd(0x17, 7)), want: cat(hello(baseCaps), cmd(0x17, 0)), renumbered: 1},
		{name: "refused in production: its id was never named",
			prod: []uint32{0, 8}, tgt: []uint32{4, 5},
			in: cat(hello(baseCaps), cmd(0x17, 8)), want: cat(hello(baseCaps), cmd(0x17, 5)), renumbered: 1},
		{name: "MariaDB's last-prepared id, and one not answered by the target yet",
			prod: []uint32{7, 9}, tgt: []uint32{3},
			in: cat(hello(baseCaps), cmd(0xfa, 0xffffffff), cmd(0x1c, 9)), want: cat(hello(baseCaps), cmd(0xfa, 0xffffffff), cmd(0x1c, 9)), unknow: 1},
		{name: "COM_RESET_CONNECTION drops the statements",
			prod: []uint32{7}, tgt: []uint32{3},
			in:   cat(hello(baseCaps), cmd(0x1a, 7), []byte{1, 0, 0, 0, 0x1f}, cmd(0x17, 7)),
			want: cat(hello(baseCaps), cmd(0x1a, 3), []byte{1, 0, 0, 0, 0x1f}, cmd(0x17, 7)), renumbered: 1, unknow: 1},
		{name: "SSLRequest: what follows is TLS",
			prod: []uint32{7}, tgt: []uint32{3},
			in: cat(hello(baseCaps|capSSL), cmd(0x17, 7)), want: cat(hello(baseCaps|capSSL), cmd(0x17, 7))},
		{name: "compression: what follows is not packets",
			prod: []uint32{7}, tgt: []uint32{3},
			in: cat(hello(baseCaps|capCompress), cmd(0x17, 7)), want: cat(hello(baseCaps|capCompress), cmd(0x17, 7))},
		{name: "a side lost ids: pairing stops",
			prod: []uint32{7}, tgt: []uint32{3}, lost: true,
			in: cat(hello(baseCaps), cmd(0x17, 7)), want: cat(hello(baseCaps), cmd(0x17, 7))},
		{name: "not a command: an id-like payload in a continuation packet",
			prod: []uint32{7}, tgt: []uint32{3},
			in: cat(hello(baseCaps), []byte{5, 0, 0, 1, 0x17, 7, 0, 0, 0}), want: cat(hello(baseCaps), []byte{5, 0, 0, 1, 0x17, 7, 0, 0, 0})},
	} {
		for split := range len(tc.in) + 1 {
			var renumbered, unknown atomic.Uint64
			r := NewRenumber(&renumbered, &unknown)
			r.Production(tc.prod, true)
			r.Target(tc.tgt, !tc.lost)
			in := bytes.Clone(tc.in)
			out := append(bytes.Clone(r.Rewrite(in[:split])), r.Rewrite(in[split:])...)
			out = append(out, r.Flush()...)
			if !bytes.Equal(out, tc.want) || renumbered.Load() != tc.renumbered || unknown.Load() != tc.unknow {
				t.Errorf("%s, split at %d: %x (%d renumbered, %d unknown), want %x (%d, %d)",
					tc.name, split, out, renumbered.Load(), unknown.Load(), tc.want, tc.renumbered, tc.unknow)
			}
			if !bytes.Equal(in, tc.in) {
				t.Errorf("%s: the caller's bytes were changed", tc.name)
			}
		}
	}
}

// TestNumbered: the framer hands on each prepare's id, 0 for a refusal,
// once; and says when it had to drop some.
func TestNumbered(t *testing.T) {
	f := New()
	feed := func(ls ...line) {
		for _, l := range ls {
			if l.client {
				f.Client(l.bytes())
			} else {
				f.Server(l.bytes())
			}
		}
	}
	feed(connected(baseCaps | capDeprecateEOF)...)
	prepOK := func(id uint32) []byte { return cat([]byte{0}, u32(id), u16(0), u16(0), []byte{0}, u16(0)) }
	feed(C(0, 2, 2, []byte("\x16SELECT 1")), S(1, 2, 3, prepOK(41)),
		C(0, 3, 3, []byte("\x16SELECT nothing FROM nosuch")), S(1, 3, 4, errPayload(1146, "no such table")))
	if ids, ok := f.Numbered(nil); !slices.Equal(ids, []uint32{41, 0}) || !ok {
		t.Fatalf("Numbered %v %v, want [41 0] true", ids, ok)
	}
	if ids, ok := f.Numbered(nil); len(ids) != 0 || !ok {
		t.Fatalf("Numbered again %v %v, want none", ids, ok)
	}
	for i := range MaxNumbered + 1 {
		feed(C(0, 4+i, 4+i, []byte("\x16SELECT 1")), S(1, 4+i, 5+i, prepOK(uint32(42+i))))
	}
	if ids, ok := f.Numbered(nil); len(ids) != MaxNumbered || ok {
		t.Fatalf("Numbered after %d prepares: %d ids, ok %v; want %d, false", MaxNumbered+1, len(ids), ok, MaxNumbered)
	}
	if err := f.Err(); err != nil {
		t.Fatal(err)
	}
}

// FuzzRenumber: any client bytes, cut anywhere, with any pairs of ids:
// Rewrite and Flush hand on exactly as many bytes as came in, and change
// only the 4 bytes after a statement command's byte; the same bytes cut
// otherwise come out the same.
func FuzzRenumber(f *testing.F) {
	hello := func(caps uint32) []byte {
		seq := byte(1)
		return packets(&seq, handshakeResponse(uint64(caps), "app", nil, "mysql_native_password"))
	}
	var seq0 byte
	f.Add(cat(hello(baseCaps), packets(&seq0, cat([]byte{0x17}, u32(7), []byte{0, 1, 0, 0, 0}))), uint32(7), uint32(3), uint16(11))
	seq0 = 0
	f.Add(cat(hello(baseCaps|capSSL), packets(&seq0, cat([]byte{0x19}, u32(7)))), uint32(7), uint32(3), uint16(5))
	f.Fuzz(func(t *testing.T, in []byte, prod, tgt uint32, cut uint16) {
		run := func(cut int) []byte {
			r := NewRenumber(new(atomic.Uint64), new(atomic.Uint64))
			r.Production([]uint32{prod, prod + 1}, true)
			r.Target([]uint32{tgt, tgt + 1}, true)
			c := min(cut, len(in))
			out := append(bytes.Clone(r.Rewrite(in[:c])), r.Rewrite(in[c:])...)
			return append(out, r.Flush()...)
		}
		whole := run(len(in))
		if len(whole) != len(in) {
			t.Fatalf("%d bytes in, %d out", len(in), len(whole))
		}
		at, _ := statementIDs(in)
		for i := range in {
			if in[i] != whole[i] && !slices.ContainsFunc(at, func(a int) bool { return i >= a && i < a+4 }) {
				t.Fatalf("byte %d changed (%#x to %#x), not in a statement id", i, in[i], whole[i])
			}
		}
		if split := run(int(cut)); !bytes.Equal(split, whole) {
			t.Fatalf("cut at %d: %x, whole: %x", cut, split, whole)
		}
	})
}
