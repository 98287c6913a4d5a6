package relay

import (
	"bytes"
	"crypto/hmac"
	"encoding/binary"
	"io"
	"net/netip"
	"testing"
)

var allTypes = []frameType{typeChallenge, typeAuth, typeAuthOK, typeRegister, typeUnregister, typeResponses, typePing, typePong}

func responsesFrame(pkts ...relayed) []byte {
	b := appendFrameHeader(nil, typeResponses, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pkts)))
	for _, p := range pkts {
		b = appendResponseEntry(b, p.Data, p.OrigLen, p.Full)
	}
	putFrameHeader(b, typeResponses)
	return b
}

// FuzzDecodeFrame feeds arbitrary bytes to the frame reader and every
// payload decoder. Nothing may panic, no buffer may exceed the frame
// limit, and whatever decodes must re-encode to the same bytes (the
// encoding is canonical) and rebuild to its announced length.
func FuzzDecodeFrame(f *testing.F) {
	p4 := tcpPacket(target4, client4, tsOption, []byte("hello"))
	p6 := tcpPacket(target6, client6, nil, []byte("hello"))
	f.Add(appendRegisterFrames(nil, []registration{{client4, target4}, {client6, target6}}))
	f.Add(appendUnregisterFrames(nil, []netip.AddrPort{client4, client6}))
	f.Add(responsesFrame(relayed{Data: p4, OrigLen: len(p4), Full: true}, relayed{Data: p6[:60], OrigLen: 1500}))
	f.Add(append(frame(typePing, make([]byte, 8)), frame(typePong, make([]byte, 8))...))
	f.Add(frame(typeAuth, make([]byte, 64)))
	f.Add([]byte{byte(typeResponses), 0xff, 0xff, 0xff})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := frameReader{r: bytes.NewReader(data)}
		var scratch []byte
		for {
			typ, p, err := fr.next(allTypes)
			if cap(fr.buf) > MaxFrameSize {
				t.Fatalf("frame buffer grew to %d bytes", cap(fr.buf))
			}
			if err != nil {
				return
			}
			whole := appendFrame(nil, typ, p)
			switch typ {
			case typeRegister:
				regs, err := decodeRegister(p, nil)
				if err == nil && !bytes.Equal(appendRegisterFrames(nil, regs), whole) {
					t.Fatalf("register frame re-encodes differently")
				}
			case typeUnregister:
				clients, err := decodeUnregister(p, nil)
				if err == nil && !bytes.Equal(appendUnregisterFrames(nil, clients), whole) {
					t.Fatalf("unregister frame re-encodes differently")
				}
			case typeResponses:
				pkts, err := decodeResponses(p, nil)
				if err != nil {
					continue
				}
				if !bytes.Equal(responsesFrame(pkts...), whole) {
					t.Fatalf("responses frame re-encodes differently")
				}
				if scratch == nil {
					scratch = make([]byte, maxPacketLen)
				}
				for _, r := range pkts {
					pkt := r.rebuild(scratch)
					if len(pkt) != r.OrigLen || !bytes.Equal(pkt[:len(r.Data)], r.Data) ||
						(!r.Full && !bytes.Equal(pkt[len(r.Data):], make([]byte, r.OrigLen-len(r.Data)))) {
						t.Fatalf("packet rebuilt wrong: %d bytes, want %d", len(pkt), r.OrigLen)
					}
				}
			}
		}
	})
}

// fuzzChallenge is the challenge FuzzHandshake's server draws, so seeds
// can carry a valid proof and the success path is explored too.
var fuzzChallenge = make([]byte, challengeLen)

func validAuth(key Key, nonce []byte) []byte {
	return append(magic[:], frame(typeAuth, append(bytes.Clone(nonce), clientProof(key, fuzzChallenge, nonce)...))...)
}

// FuzzHandshake feeds arbitrary bytes to the server side of the
// handshake. It must succeed exactly when the input opens with a valid
// proof, and an unauthenticated peer must receive nothing but the magic
// and the challenge.
func FuzzHandshake(f *testing.F) {
	nonce := bytes.Repeat([]byte{7}, nonceLen)
	f.Add(validAuth(keyA, nonce))
	f.Add(append(validAuth(keyA, nonce), "trailing frames are not the handshake's business"...))
	f.Add(validAuth(keyB, nonce))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte{'S', 'C', 'R', 2})
	f.Add(append(magic[:], byte(typeAuth), 0xff, 0xff, 0xff))
	f.Add(append(magic[:], frame(typeRegister, countPrefixed(1, addr("198.18.1.7:1"), addr("198.18.2.2:80")))...))
	f.Add(magic[:])
	hello := append(magic[:], frame(typeChallenge, fuzzChallenge)...)
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), &out}
		_, err := serverHandshake(rw, keyA, bytes.NewReader(fuzzChallenge))

		const authLen = 4 + frameHeaderLen + nonceLen + macLen
		valid := len(data) >= authLen && bytes.Equal(data[:4], magic[:]) &&
			bytes.Equal(data[4:8], []byte{byte(typeAuth), 0, 0, nonceLen + macLen}) &&
			hmac.Equal(data[8+nonceLen:authLen], clientProof(keyA, fuzzChallenge, data[8:8+nonceLen]))
		if (err == nil) != valid {
			t.Fatalf("handshake error %v, but the input's proof valid = %v", err, valid)
		}
		want := hello
		if valid {
			want = append(bytes.Clone(hello), frame(typeAuthOK, serverProof(keyA, fuzzChallenge, data[8:8+nonceLen]))...)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("server wrote % x, want % x", out.Bytes(), want)
		}
	})
}

// FuzzDeliver feeds arbitrary captured packets to Server.Deliver with
// their destination registered. Every packet Deliver accepts must reach
// the mirror as an entry its decoder accepts, rebuilt at the packet's IP
// total length.
func FuzzDeliver(f *testing.F) {
	p4 := tcpPacket(target4, client4, tsOption, []byte("hello"))
	f.Add(p4, true)
	f.Add(p4, false)
	f.Add(p4[:52], true)
	f.Add(append(bytes.Clone(p4), 0, 0), true)
	f.Add(tcpPacket(target6, client6, nil, []byte("hello")), true)
	f.Add([]byte{0x45}, false)
	srv, err := NewServer(ServerConfig{Key: keyA})
	if err != nil {
		f.Fatal(err)
	}
	scratch := make([]byte, maxPacketLen)
	f.Fuzz(func(t *testing.T, pkt []byte, full bool) {
		m := &mirror{owned: make(map[netip.AddrPort]struct{})}
		m.q.init(8, 8)
		dst, hdrLen, totalLen, ok := parsePacket(pkt)
		if h, hok := ParsePacketHeader(pkt); ok != (hok && h.Relayable()) || (ok && h.Dst != dst) {
			t.Fatalf("ParsePacketHeader = %+v, %v; parsePacket = %v, %v", h, hok, dst, ok)
		}
		if ok {
			if hdrLen > len(pkt) || hdrLen > totalLen || totalLen > maxPacketLen {
				t.Fatalf("parsePacket: headers %d, total %d, packet %d bytes", hdrLen, totalLen, len(pkt))
			}
			srv.router.register(m, []registration{{Client: dst, Target: target4}})
			defer srv.router.drop(m)
		}
		if got := srv.Deliver(pkt, full); got != ok {
			t.Fatalf("Deliver = %v, parsePacket ok = %v", got, ok)
		}
		frames := m.q.take(nil)
		if !ok {
			if len(frames) != 0 {
				t.Fatal("unroutable packet queued")
			}
			return
		}
		if len(frames) != 1 {
			t.Fatalf("%d frames queued, want 1", len(frames))
		}
		fr := frameReader{r: bytes.NewReader(frames[0].b)}
		_, p, err := fr.next(clientExpects)
		if err != nil {
			t.Fatal(err)
		}
		rel, err := decodeResponses(p, nil)
		if err != nil {
			t.Fatalf("the mirror rejects what Deliver sent: %v", err)
		}
		rebuilt := rel[0].rebuild(scratch)
		if len(rebuilt) != totalLen || !bytes.Equal(rebuilt[:hdrLen], pkt[:hdrLen]) {
			t.Fatalf("rebuilt %d bytes, want %d", len(rebuilt), totalLen)
		}
		if rel[0].Full && !bytes.Equal(rebuilt, pkt[:totalLen]) {
			t.Fatal("full packet changed")
		}
	})
}
