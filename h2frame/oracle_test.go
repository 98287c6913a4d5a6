package h2frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"golang.org/x/net/http2"
)

// The frame reader against golang.org/x/net/http2's Framer: the same
// bytes, split at random points for the reader, must give the same frames
// (boundaries, types, flags, stream ids, DATA lengths, header block
// fragments, the fields the framer decodes) and fail where the Framer
// returns a connection error.

// frame encodes one frame.
func frame(typ, flags uint8, stream uint32, payload []byte) []byte {
	b := make([]byte, 9, 9+len(payload))
	n := len(payload)
	b[0], b[1], b[2] = byte(n>>16), byte(n>>8), byte(n)
	b[3], b[4] = typ, flags
	binary.BigEndian.PutUint32(b[5:], stream)
	return append(b, payload...)
}

// gotFrame is what the reader reported of a frame.
type gotFrame struct {
	h       frameHeader
	bodyLen uint32
	frag    []byte
	iws     uint32
	iwsSeen bool
	incr    uint32
	goLast  uint32
	goCode  uint32
}

// readAll runs data through a reader in the chunks cuts gives (offsets)
// and returns the frames and whether it failed after them.
func readAll(data []byte, cuts []int) (frames []gotFrame, failed bool, why string) {
	var d reader
	var cur gotFrame
	prev := 0
	for i := 0; i <= len(cuts); i++ {
		end := len(data)
		if i < len(cuts) {
			end = cuts[i]
		}
		p := data[prev:end]
		prev = end
		for {
			n, ev := d.next(p)
			p = p[n:]
			switch ev {
			case evNeed:
			case evError:
				return frames, true, d.why
			case evHeader:
				cur = gotFrame{h: d.h}
				continue
			case evFragment:
				cur.frag = append(cur.frag, d.frag...)
				continue
			case evFrame:
				cur.bodyLen = d.bodyLen
				if d.settingsSeen {
					cur.iws, cur.iwsSeen = d.iws, true
				}
				cur.incr, cur.goLast, cur.goCode = d.incr, d.goLast, d.goCode
				frames = append(frames, cur)
				continue
			}
			break
		}
	}
	return frames, false, ""
}

// randomCuts returns sorted offsets in (0, n) to split n bytes at.
func randomCuts(rng *rand.Rand, n int) []int {
	var cuts []int
	for at := 0; ; {
		switch rng.IntN(4) {
		case 0:
			at++
		case 1:
			at += 1 + rng.IntN(9)
		default:
			at += 1 + rng.IntN(200)
		}
		if at >= n {
			return cuts
		}
		cuts = append(cuts, at)
	}
}

// checkFrames compares the reader with x/net/http2 on data.
func checkFrames(data []byte, cuts []int) error {
	got, failed, why := readAll(data, cuts)
	fr := http2.NewFramer(nil, bytes.NewReader(data))
	off := 0 // where the next frame starts
	for i := 0; ; i++ {
		var f http2.Frame
		var err error
		rest := data[off:]
		size := len(rest) // the next frame's, once its header is in
		if len(rest) >= 9 {
			size = 9 + (int(rest[0])<<16 | int(rest[1])<<8 | int(rest[2]))
		}
		if size > len(rest) {
			// x/net would allocate the whole declared payload (up to
			// 16 MiB) before finding it truncated: check only what
			// it checks before the payload.
			if _, err = fr.ReadFrameHeader(); err == nil {
				err = io.ErrUnexpectedEOF
			}
		} else {
			f, err = fr.ReadFrame()
			off += size
		}
		var se http2.StreamError
		switch {
		case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
			// Bytes of a frame that has not ended are not an error;
			// the reader may fail at a header that x/net had no
			// payload for yet.
			if len(got) != i {
				return fmt.Errorf("x/net: %d frames and %v; reader: %d frames", i, err, len(got))
			}
			return nil
		case errors.As(err, &se):
			// A stream error (HEADERS padding too long, a stream's
			// WINDOW_UPDATE by 0): x/net consumed the frame. The
			// reader fails on the padding, as RFC 9113 §6.2 has it,
			// and ignores the update.
			if len(got) == i && failed {
				return nil
			}
			if len(got) <= i || got[i].h.typ != typeWindowUpdate || got[i].incr != 0 {
				return fmt.Errorf("frame %d: x/net stream error %v; reader: %d frames, failed %v (%s)", i, err, len(got), failed, why)
			}
			continue
		case err != nil:
			if len(got) != i || !failed {
				return fmt.Errorf("frame %d: x/net %v; reader: %d frames, failed %v (%s)", i, err, len(got), failed, why)
			}
			return nil
		}
		h := f.Header()
		if len(got) <= i {
			if failed && len(got) == i && strictSettings(f) {
				return nil
			}
			return fmt.Errorf("frame %d: x/net %v; reader: %d frames, failed %v (%s)", i, h, len(got), failed, why)
		}
		g := got[i]
		want := frameHeader{length: h.Length, typ: uint8(h.Type), flags: uint8(h.Flags), stream: h.StreamID}
		if g.h != want {
			return fmt.Errorf("frame %d: reader %+v, x/net %v", i, g.h, h)
		}
		if err := sameFields(g, f); err != nil {
			return fmt.Errorf("frame %d (%v): %v", i, h, err)
		}
		if pp, ok := f.(*http2.PushPromiseFrame); ok && !pp.HeadersEnded() {
			// x/net's Framer (a client that never enables push) does
			// not expect CONTINUATION after PUSH_PROMISE; RFC 9113
			// §6.6 does, as the reader. They part here.
			return nil
		}
	}
}

// strictSettings reports whether f is a SETTINGS frame whose
// INITIAL_WINDOW_SIZE is over 2^31-1 in an occurrence after the first:
// x/net checks only the first, the reader (RFC 9113 §6.5.2) each.
func strictSettings(f http2.Frame) bool {
	s, ok := f.(*http2.SettingsFrame)
	if !ok {
		return false
	}
	bad := false
	s.ForeachSetting(func(st http2.Setting) error {
		bad = bad || (st.ID == http2.SettingInitialWindowSize && st.Val > maxWindow)
		return nil
	})
	return bad
}

func sameFields(g gotFrame, f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		if int(g.bodyLen) != len(f.Data()) {
			return fmt.Errorf("DATA length %d, x/net %d", g.bodyLen, len(f.Data()))
		}
	case *http2.HeadersFrame:
		if !bytes.Equal(g.frag, f.HeaderBlockFragment()) {
			return fmt.Errorf("HEADERS fragment %q, x/net %q", g.frag, f.HeaderBlockFragment())
		}
	case *http2.ContinuationFrame:
		if !bytes.Equal(g.frag, f.HeaderBlockFragment()) {
			return fmt.Errorf("CONTINUATION fragment %q, x/net %q", g.frag, f.HeaderBlockFragment())
		}
	case *http2.PushPromiseFrame:
		if !bytes.Equal(g.frag, f.HeaderBlockFragment()) {
			return fmt.Errorf("PUSH_PROMISE fragment %q, x/net %q", g.frag, f.HeaderBlockFragment())
		}
	case *http2.GoAwayFrame:
		if g.goLast != f.LastStreamID || g.goCode != uint32(f.ErrCode) {
			return fmt.Errorf("GOAWAY %d %d, x/net %d %d", g.goLast, g.goCode, f.LastStreamID, f.ErrCode)
		}
	case *http2.WindowUpdateFrame:
		if g.incr != f.Increment {
			return fmt.Errorf("WINDOW_UPDATE %d, x/net %d", g.incr, f.Increment)
		}
	case *http2.SettingsFrame:
		var iws uint32
		seen := false
		f.ForeachSetting(func(s http2.Setting) error {
			if s.ID == http2.SettingInitialWindowSize {
				iws, seen = s.Val, true
			}
			return nil
		})
		if g.iwsSeen != seen || g.iws != iws {
			return fmt.Errorf("SETTINGS initial window %d %v, x/net %d %v", g.iws, g.iwsSeen, iws, seen)
		}
	}
	return nil
}

// genFrame returns a random frame, valid more often than not.
func genFrame(rng *rand.Rand, b []byte) []byte {
	typ := uint8(rng.IntN(12))
	if rng.IntN(20) == 0 {
		typ = uint8(rng.IntN(256))
	}
	var flags uint8
	for _, fl := range []uint8{flagEndStream, flagEndHeaders, flagPadded, flagPriority} {
		if rng.IntN(3) == 0 {
			flags |= fl
		}
	}
	if rng.IntN(10) == 0 {
		flags = uint8(rng.IntN(256))
	}
	stream := uint32(rng.IntN(4))
	if rng.IntN(20) == 0 {
		stream |= 1 << 31 // the reserved bit, to be ignored
	}
	var payload []byte
	switch typ {
	case typeSettings:
		for range rng.IntN(4) {
			id := uint16(1 + rng.IntN(6))
			v := rng.Uint32() >> rng.IntN(32)
			payload = binary.BigEndian.AppendUint16(payload, id)
			payload = binary.BigEndian.AppendUint32(payload, v)
		}
	case typeWindowUpdate, typeRSTStream, typePriorityUpdate:
		payload = binary.BigEndian.AppendUint32(nil, rng.Uint32()>>rng.IntN(32))
	case typePing, typeGoAway:
		payload = binary.BigEndian.AppendUint64(nil, rng.Uint64()>>rng.IntN(64))
	case typePriority:
		payload = make([]byte, 5)
	}
	if len(payload) == 0 || rng.IntN(8) == 0 {
		n := rng.IntN(40)
		if rng.IntN(50) == 0 {
			n = rng.IntN(70000)
		}
		payload = make([]byte, n)
		for i := range payload {
			payload[i] = byte(rng.IntN(8))
		}
	}
	return append(b, frame(typ, flags, stream, payload)...)
}

func TestFramesAgainstXNet(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for i := range n {
		var data []byte
		for range 1 + rng.IntN(6) {
			data = genFrame(rng, data)
		}
		if rng.IntN(5) == 0 {
			data = data[:rng.IntN(len(data)+1)]
		}
		if err := checkFrames(data, randomCuts(rng, len(data))); err != nil {
			t.Fatalf("case %d: %v\ndata: %x", i, err, data)
		}
	}
}

func FuzzFrames(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s, uint64(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 0))
		for _, cuts := range [][]int{nil, randomCuts(rng, len(data)), everyByte(len(data))} {
			if err := checkFrames(data, cuts); err != nil {
				t.Fatalf("%v\ncuts %v\ndata: %x", err, cuts, data)
			}
		}
	})
}

func everyByte(n int) []int {
	cuts := make([]int, 0, n)
	for i := 1; i < n; i++ {
		cuts = append(cuts, i)
	}
	return cuts
}

// fuzzSeeds are frame sequences of every type, valid and not.
func fuzzSeeds() [][]byte {
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	settings := binary.BigEndian.AppendUint32([]byte{0, 4}, 1<<20)
	return [][]byte{
		cat(frame(typeSettings, 0, 0, settings), frame(typeSettings, flagAck, 0, nil), frame(typeWindowUpdate, 0, 0, []byte{0, 0xf, 0, 1})),
		cat(frame(typeHeaders, flagEndHeaders|flagEndStream, 1, []byte{0x82, 0x86, 0x84}), frame(typeData, flagEndStream, 1, []byte("hello"))),
		cat(frame(typeHeaders, flagPadded|flagPriority, 3, append([]byte{2, 0, 0, 0, 1, 15, 0x82}, 0, 0)), frame(typeContinuation, 0, 3, []byte{0x86}), frame(typeContinuation, flagEndHeaders, 3, []byte{0x84})),
		cat(frame(typeData, flagPadded, 1, []byte{3, 'a', 0, 0, 0}), frame(typeRSTStream, 0, 1, []byte{0, 0, 0, 8})),
		cat(frame(typePing, 0, 0, make([]byte, 8)), frame(typePing, flagAck, 0, make([]byte, 8)), frame(typeGoAway, 0, 0, []byte{0, 0, 0, 1, 0, 0, 0, 0, 'b', 'y', 'e'})),
		cat(frame(typePushPromise, flagEndHeaders, 1, []byte{0, 0, 0, 2, 0x82}), frame(typePriority, 0, 5, []byte{0, 0, 0, 1, 16}), frame(0x42, 0xff, 7, []byte("ext"))),
		cat(frame(typeHeaders, 0, 1, []byte{0x82}), frame(typeData, 0, 1, nil)),
		cat(frame(typeContinuation, flagEndHeaders, 1, nil)),
		cat(frame(typeSettings, 0, 0, []byte{0, 4, 0x80, 0, 0, 0})),
		cat(frame(typePriorityUpdate, 0, 0, []byte{0, 0, 0, 1, 'u', '=', '1'})),
		cat(frame(typeData, flagPadded, 1, []byte{9, 'a'})),
	}
}
