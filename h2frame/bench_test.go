package h2frame

import (
	"encoding/binary"
	"testing"
)

// benchRound is one round of a browser-like page load on a long-lived
// connection: 24 requests at once (HEADERS with END_STREAM), answered by
// HEADERS and DATA frames interleaved across the streams (16 KiB frames at
// most, answers from 200 bytes to 60 KB), the client's WINDOW_UPDATEs, and
// a PING. ids holds the offsets of the stream ids to renumber each round.
type benchRound struct {
	client, server         []byte
	clientIDs, serverIDs   []int
	frames, streams, units int
}

func newBenchRound() *benchRound {
	r := &benchRound{}
	add := func(client bool, typ, flags uint8, stream uint32, payload []byte) {
		b := frame(typ, flags, stream, payload)
		if client {
			if stream != 0 {
				r.clientIDs = append(r.clientIDs, len(r.client)+5)
			}
			r.client = append(r.client, b...)
		} else {
			if stream != 0 {
				r.serverIDs = append(r.serverIDs, len(r.server)+5)
			}
			r.server = append(r.server, b...)
		}
		r.frames++
	}
	const n = 24
	sizes := make([]int, n)
	for i := range n {
		id := uint32(2*i + 1)
		add(true, typeHeaders, flagEndHeaders|flagEndStream, id, make([]byte, 40+i%30)) // HPACK-compressed request
		sizes[i] = 200 + (i*7919)%60000
	}
	add(true, typePing, 0, 0, make([]byte, 8))
	r.units = n + 1
	r.streams = n
	for i := range n {
		add(false, typeHeaders, flagEndHeaders, uint32(2*i+1), make([]byte, 25))
	}
	add(false, typePing, flagAck, 0, make([]byte, 8))
	for left := true; left; {
		left = false
		for i := range n {
			if sizes[i] == 0 {
				continue
			}
			k := min(sizes[i], 16384)
			sizes[i] -= k
			var flags uint8
			if sizes[i] == 0 {
				flags = flagEndStream
			} else {
				left = true
			}
			add(false, typeData, flags, uint32(2*i+1), make([]byte, k))
			if i%4 == 0 {
				add(true, typeWindowUpdate, 0, 0, binary.BigEndian.AppendUint32(nil, uint32(k)))
			}
		}
	}
	return r
}

// renumber moves the round's streams up by delta.
func (r *benchRound) renumber(delta uint32) {
	for _, at := range r.clientIDs {
		binary.BigEndian.PutUint32(r.client[at:], binary.BigEndian.Uint32(r.client[at:])+delta)
	}
	for _, at := range r.serverIDs {
		binary.BigEndian.PutUint32(r.server[at:], binary.BigEndian.Uint32(r.server[at:])+delta)
	}
}

// feedSegments feeds b in 1448-byte segments (a TCP MSS), so frame headers
// are split across calls as they are on the wire.
func feedSegments(feed func([]byte), b []byte) {
	for len(b) > 0 {
		k := min(len(b), 1448)
		feed(b[:k])
		b = b[k:]
	}
}

// BenchmarkFramerMultiplexed reports the cost of one frame (an op is a
// frame) over rounds of the page load, both directions, on one connection.
func BenchmarkFramerMultiplexed(b *testing.B) {
	r := newBenchRound()
	f := New()
	f.Client([]byte(clientPreface))
	f.Client(settings(3, 100, 4, 1<<20))
	f.Server(settings(3, 128, 4, 1<<20))
	f.Server(settingsAck())
	f.Client(settingsAck())
	f.Client(windowUpdate(0, 1<<30))
	base := f.Answers()
	var bytes int
	b.ReportAllocs()
	b.ResetTimer()
	rounds := 0
	for done := 0; done < b.N; done += r.frames {
		if rounds > 0 {
			b.StopTimer()
			r.renumber(2 * uint32(r.streams))
			b.StartTimer()
		}
		feedSegments(f.Client, r.client)
		feedSegments(f.Server, r.server)
		bytes += len(r.client) + len(r.server)
		rounds++
	}
	b.StopTimer()
	if f.Err() != nil || f.Answers()-base != rounds*r.units {
		b.Fatalf("err %v, answers %d, want %d", f.Err(), f.Answers()-base, rounds*r.units)
	}
	b.ReportMetric(float64(bytes)/float64(rounds*r.frames), "B/frame")
}

// BenchmarkFramerSmallFrames is the worst case per frame: header-only
// traffic (requests and answers without bodies, PINGs) with no DATA to
// amortise the calls over.
func BenchmarkFramerSmallFrames(b *testing.B) {
	var cli, srv []byte
	const n = 100
	for i := range n {
		cli = append(cli, headers(uint32(2*i+1), flagEndHeaders|flagEndStream, "\x82\x86\x84\x41\x8a\x08\x9d\x5c\x0b\x81\x70\xdc\x78\x0f\x03")...)
		srv = append(srv, headers(uint32(2*i+1), flagEndHeaders|flagEndStream, "\x88\x5f\x87\x49\x7c\xa5\x8a\xe8\x19\xaa")...)
	}
	r := &benchRound{client: cli, server: srv, frames: 2 * n}
	for at := 0; at < len(cli); at += len(cli) / n {
		r.clientIDs = append(r.clientIDs, at+5)
	}
	for at := 0; at < len(srv); at += len(srv) / n {
		r.serverIDs = append(r.serverIDs, at+5)
	}
	f := New()
	f.Client([]byte(clientPreface))
	f.Server(settings())
	b.ReportAllocs()
	b.ResetTimer()
	rounds := 0
	for done := 0; done < b.N; done += r.frames {
		if rounds > 0 {
			b.StopTimer()
			r.renumber(2 * n)
			b.StartTimer()
		}
		feedSegments(f.Client, r.client)
		feedSegments(f.Server, r.server)
		rounds++
	}
	b.StopTimer()
	if f.Err() != nil || f.Answers() != 1+rounds*n {
		b.Fatalf("err %v, answers %d", f.Err(), f.Answers())
	}
}
