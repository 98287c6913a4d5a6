package relay

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func testKey(t testing.TB, s string) Key {
	t.Helper()
	k, err := newKey([]byte(s), "test")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var (
	keyA = Key{secret: []byte("0123456789abcdef-key-A")}
	keyB = Key{secret: []byte("0123456789abcdef-key-B")}
)

// tcpPacket builds an IPv4 or IPv6 TCP packet from src to dst with TCP
// options opts (padded to 4 bytes) and payload. Checksums stay zero: the
// relay never looks at them.
func tcpPacket(src, dst netip.AddrPort, opts, payload []byte) []byte {
	for len(opts)%4 != 0 {
		opts = append(opts, 0) // EOL padding
	}
	tcpLen := 20 + len(opts)
	var ip []byte
	if src.Addr().Is4() {
		ip = make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+tcpLen+len(payload)))
		ip[6] = 0x40 // DF
		ip[8] = 64
		ip[9] = 6
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
	} else {
		ip = make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(tcpLen+len(payload)))
		ip[6] = 6
		ip[7] = 64
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
	}
	tcp := make([]byte, 20, tcpLen)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], 1000)
	binary.BigEndian.PutUint32(tcp[8:], 2000)
	tcp[12] = byte(tcpLen/4) << 4
	tcp[13] = 0x18 // PSH|ACK
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	tcp = append(tcp, opts...)
	return slices.Concat(ip, tcp, payload)
}

var (
	target4  = netip.MustParseAddrPort("198.18.2.2:80")
	client4  = netip.MustParseAddrPort("198.18.1.7:40001")
	target6  = netip.MustParseAddrPort("[2001:db8::2]:443")
	client6  = netip.MustParseAddrPort("[2001:db8:1::7]:40002")
	tsOption = []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP timestamps
)

func TestRegisterRoundTrip(t *testing.T) {
	many := make([]registration, 70000) // more than one frame's u16 count
	for i := range many {
		many[i] = registration{
			Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), uint16(1+i%60000)),
			Target: target4,
		}
	}
	tests := []struct {
		name   string
		regs   []registration
		frames int
	}{
		{"one IPv4", []registration{{client4, target4}}, 1},
		{"one IPv6", []registration{{client6, target6}}, 1},
		{"mixed families", []registration{{client4, target4}, {client6, target6}, {client4, target6}}, 1},
		{"beyond one frame", many, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := appendRegisterFrames(nil, tt.regs)
			fr := frameReader{r: bytes.NewReader(b)}
			var got []registration
			for i := 0; ; i++ {
				typ, p, err := fr.next(serverExpects)
				if err == io.EOF {
					if i != tt.frames {
						t.Fatalf("%d frames, want %d", i, tt.frames)
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if typ != typeRegister || len(p) > MaxFrameSize {
					t.Fatalf("frame %d: type %v, %d bytes", i, typ, len(p))
				}
				regs, err := decodeRegister(p, nil)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, regs...)
			}
			if !slices.Equal(got, tt.regs) {
				t.Fatalf("round trip changed %d registrations", len(tt.regs))
			}
		})
	}
}

func TestUnregisterRoundTrip(t *testing.T) {
	for _, clients := range [][]netip.AddrPort{{client4}, {client6}, {client4, client6, client4}} {
		b := appendUnregisterFrames(nil, clients)
		fr := frameReader{r: bytes.NewReader(b)}
		typ, p, err := fr.next(serverExpects)
		if err != nil || typ != typeUnregister {
			t.Fatalf("%v %v", typ, err)
		}
		got, err := decodeUnregister(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, clients) {
			t.Fatalf("got %v, want %v", got, clients)
		}
	}
}

func TestResponsesRoundTrip(t *testing.T) {
	payload := bytes.Repeat([]byte("x"), 1000)
	p4 := tcpPacket(target4, client4, tsOption, payload)
	p6 := tcpPacket(target6, client6, nil, payload)
	tests := []struct {
		name string
		pkts []relayed
	}{
		{"full IPv4", []relayed{{Data: p4, OrigLen: len(p4), Full: true}}},
		{"full IPv6", []relayed{{Data: p6, OrigLen: len(p6), Full: true}}},
		{"header-only with options", []relayed{{Data: p4[:52], OrigLen: len(p4)}}},
		{"header-only IPv6", []relayed{{Data: p6[:60], OrigLen: len(p6)}}},
		{"mixed batch", []relayed{
			{Data: p4, OrigLen: len(p4), Full: true},
			{Data: p4[:52], OrigLen: len(p4)},
			{Data: p6[:60], OrigLen: 65535 + 40},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := appendFrameHeader(nil, typeResponses, 0)
			b = binary.BigEndian.AppendUint16(b, uint16(len(tt.pkts)))
			for _, p := range tt.pkts {
				b = appendResponseEntry(b, p.Data, p.OrigLen, p.Full)
			}
			putFrameHeader(b, typeResponses)
			fr := frameReader{r: bytes.NewReader(b)}
			_, p, err := fr.next(clientExpects)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeResponses(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.pkts) {
				t.Fatalf("%d packets, want %d", len(got), len(tt.pkts))
			}
			scratch := make([]byte, maxPacketLen)
			for i, g := range got {
				w := tt.pkts[i]
				if !bytes.Equal(g.Data, w.Data) || g.OrigLen != w.OrigLen || g.Full != w.Full {
					t.Fatalf("packet %d differs", i)
				}
				pkt := g.rebuild(scratch)
				if len(pkt) != w.OrigLen || !bytes.Equal(pkt[:len(w.Data)], w.Data) {
					t.Fatalf("packet %d rebuilt to %d bytes, want %d", i, len(pkt), w.OrigLen)
				}
			}
		})
	}
}

func TestRebuildZeroFills(t *testing.T) {
	pkt := tcpPacket(target4, client4, tsOption, bytes.Repeat([]byte{0xaa}, 1400))
	scratch := bytes.Repeat([]byte{0xff}, maxPacketLen) // dirty, as after a previous packet
	r := relayed{Data: pkt[:52], OrigLen: len(pkt)}
	got := r.rebuild(scratch)
	if len(got) != len(pkt) {
		t.Fatalf("rebuilt %d bytes, want %d", len(got), len(pkt))
	}
	if !bytes.Equal(got[:52], pkt[:52]) {
		t.Fatal("headers changed")
	}
	if i := slices.IndexFunc(got[52:], func(b byte) bool { return b != 0 }); i >= 0 {
		t.Fatalf("payload byte %d is %#x, want 0", i, got[52+i])
	}
}

// frame builds one frame with an arbitrary header, for negative tests.
func frame(t frameType, payload []byte) []byte { return appendFrame(nil, t, payload) }

func countPrefixed(n int, entries ...[]byte) []byte {
	return slices.Concat(append([][]byte{binary.BigEndian.AppendUint16(nil, uint16(n))}, entries...)...)
}

func addr(ap string) []byte { return appendAddr(nil, netip.MustParseAddrPort(ap)) }

func entry(kind byte, data []byte, orig int) []byte {
	n := len(data)
	b := []byte{kind, byte(n >> 16), byte(n >> 8), byte(n)}
	if kind == kindHeaderOnly {
		b = append(b, byte(orig>>16), byte(orig>>8), byte(orig))
	}
	return append(b, data...)
}

func TestDecoderRejects(t *testing.T) {
	p4 := tcpPacket(target4, client4, nil, []byte("hello"))
	v5 := slices.Clone(p4)
	v5[0] = 0x55
	mapped := []byte{6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 1, 7, 0, 80}
	tests := []struct {
		name   string
		in     []byte
		expect []frameType
		want   string
	}{
		{"empty stream", nil, serverExpects, "EOF"},
		{"truncated header", []byte{0x10, 0}, serverExpects, "truncated frame header: got 2 of 4 bytes"},
		{"unknown type", []byte{0x7f, 0, 0, 1, 0}, serverExpects, "unknown frame type 0x7f"},
		{"unexpected type", frame(typeResponses, countPrefixed(1, entry(0, p4, 0))), serverExpects, "unexpected responses frame here (want register or unregister or ping)"},
		{"server frame to server", frame(typePong, make([]byte, 8)), serverExpects, "unexpected pong frame"},
		{"huge length", []byte{byte(typeRegister), 0xff, 0xff, 0xff}, serverExpects, "register frame of 16777215 bytes exceeds the 1048576-byte limit"},
		{"just over the limit", []byte{byte(typeResponses), 0x10, 0, 1}, clientExpects, "exceeds the 1048576-byte limit"},
		{"ping of wrong size", frame(typePing, make([]byte, 9)), serverExpects, "ping frame of 9 bytes, want 8"},
		{"auth of wrong size", frame(typeAuth, make([]byte, 10)), serverExpectsAuth, "auth frame of 10 bytes, want 64"},
		{"register too short", frame(typeRegister, []byte{0, 1}), serverExpects, "register frame of 2 bytes, want 16 to 1048576"},
		{"truncated payload", frame(typeRegister, countPrefixed(1, addr("198.18.1.7:1"), addr("198.18.2.2:80")))[:12], serverExpects, "truncated register frame: got 8 of 16 payload bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fr := frameReader{r: bytes.NewReader(tt.in)}
			_, _, err := fr.next(tt.expect)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			// Rejected lengths must not have been allocated.
			if cap(fr.buf) > 64 {
				t.Fatalf("allocated %d bytes for a %d-byte input", cap(fr.buf), len(tt.in))
			}
		})
	}

	payloads := []struct {
		name   string
		decode func([]byte) error
		in     []byte
		want   string
	}{
		{"register zero entries", decReg, []byte{0, 0, 4, 1, 2, 3, 4, 0, 1, 4, 1, 2, 3, 4, 0, 1}, "register frame with 0 entries"},
		{"register count beyond data", decReg, countPrefixed(2, addr("198.18.1.7:1"), addr("198.18.2.2:80")), "register entry 2 of 2: client: truncated address: no family byte"},
		{"register trailing bytes", decReg, countPrefixed(1, addr("198.18.1.7:1"), addr("198.18.2.2:80"), []byte{9}), "register frame has 1 bytes after its 1 entries"},
		{"register bad family", decReg, countPrefixed(1, []byte{5, 1, 2, 3, 4, 0, 1}, addr("198.18.2.2:80")), "register entry 1 of 1: client: address family 5, want 4 or 6"},
		{"register truncated IPv6", decReg, countPrefixed(1, addr("198.18.1.7:1"), addr("[2001:db8::1]:80")[:10]), "target: truncated IPv6 address: 10 of 19 bytes"},
		{"register port 0", decReg, countPrefixed(1, addr("198.18.1.7:0"), addr("198.18.2.2:80")), "client: 198.18.1.7: port 0"},
		{"register unspecified", decReg, countPrefixed(1, addr("198.18.1.7:1"), addr("0.0.0.0:80")), "target: unspecified address 0.0.0.0"},
		{"register mapped IPv4", decReg, countPrefixed(1, mapped, addr("198.18.2.2:80")), "IPv4-mapped address ::ffff:198.18.1.7 (send it as IPv4)"},
		{"unregister trailing", decUnreg, countPrefixed(1, addr("198.18.1.7:1"), []byte{4}), "unregister frame has 1 bytes after its 1 entries"},
		{"unregister truncated", decUnreg, countPrefixed(1, addr("198.18.1.7:1")[:5]), "unregister entry 1 of 1: truncated IPv4 address: 5 of 7 bytes"},
		{"responses bad kind", decResp, countPrefixed(1, entry(2, p4, 0)), "responses entry 1 of 1: packet kind 2, want 0 (full) or 1 (header-only)"},
		{"responses truncated packet", decResp, countPrefixed(1, entry(0, p4, 0))[:30], "truncated packet: 24 of 45 bytes"},
		{"responses empty packet", decResp, countPrefixed(1, entry(0, nil, 0), make([]byte, 20)), "empty packet"},
		{"responses IP version 5", decResp, countPrefixed(1, entry(0, v5, 0)), "IP version 5, want 4 or 6"},
		{"responses short IPv4", decResp, countPrefixed(1, entry(0, p4[:19], 0)), "IPv4 packet of 19 bytes, shorter than its header"},
		{"responses header-only longer than original", decResp, countPrefixed(1, entry(1, p4[:40], 39)), "original length 39 is shorter than its 40 header bytes"},
		{"responses header-only original too long", decResp, countPrefixed(1, entry(1, p4[:40], 65536)), "original length 65536 exceeds 65535"},
		{"responses header-only too many header bytes", decResp, countPrefixed(1, entry(1, append(slices.Clone(p4), make([]byte, 300)...), 1000)), "carries 345 header bytes, more than 256"},
		{"responses truncated entry header", decResp, countPrefixed(2, entry(0, p4, 0), []byte{1, 0, 0, 40, 0}), "responses entry 2 of 2: truncated header-only entry header: 5 bytes"},
	}
	for _, tt := range payloads {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.decode(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func decReg(p []byte) error   { _, err := decodeRegister(p, nil); return err }
func decUnreg(p []byte) error { _, err := decodeUnregister(p, nil); return err }
func decResp(p []byte) error  { _, err := decodeResponses(p, nil); return err }

func TestParsePacket(t *testing.T) {
	p4 := tcpPacket(target4, client4, tsOption, []byte("payload"))
	p6 := tcpPacket(target6, client6, nil, []byte("payload"))
	mutate := func(p []byte, f func([]byte)) []byte { p = slices.Clone(p); f(p); return p }
	tests := []struct {
		name          string
		pkt           []byte
		ok            bool
		dst           netip.AddrPort
		hdrLen, total int
	}{
		{"IPv4 with options", p4, true, client4, 52, 59},
		{"IPv4 padded by the link layer", append(slices.Clone(p4), 0, 0, 0), true, client4, 52, 59},
		{"IPv4 headers only (snaplen)", p4[:52], true, client4, 52, 59},
		{"IPv6", p6, true, client6, 60, 67},
		{"empty", nil, false, netip.AddrPort{}, 0, 0},
		{"UDP", mutate(p4, func(p []byte) { p[9] = 17 }), false, netip.AddrPort{}, 0, 0},
		{"fragment", mutate(p4, func(p []byte) { p[6] = 0x20 }), false, netip.AddrPort{}, 0, 0},
		{"later fragment", mutate(p4, func(p []byte) { p[7] = 1 }), false, netip.AddrPort{}, 0, 0},
		{"IHL below 5", mutate(p4, func(p []byte) { p[0] = 0x44 }), false, netip.AddrPort{}, 0, 0},
		{"TCP data offset below 5", mutate(p4, func(p []byte) { p[32] = 0x40 }), false, netip.AddrPort{}, 0, 0},
		{"TCP options cut off", p4[:40], false, netip.AddrPort{}, 0, 0},
		{"total length below headers", mutate(p4, func(p []byte) { p[3] = 40 }), false, netip.AddrPort{}, 0, 0},
		{"IPv6 extension header", mutate(p6, func(p []byte) { p[6] = 0 }), false, netip.AddrPort{}, 0, 0},
		{"IP version 5", mutate(p4, func(p []byte) { p[0] = 0x55 }), false, netip.AddrPort{}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst, h, total, ok := parsePacket(tt.pkt)
			if ok != tt.ok || dst != tt.dst || h != tt.hdrLen || total != tt.total {
				t.Fatalf("got %v %d %d %v, want %v %d %d %v", dst, h, total, ok, tt.dst, tt.hdrLen, tt.total, tt.ok)
			}
		})
	}
}

// tcpPair returns both ends of a loopback TCP connection. net.Pipe will
// not do: it has no buffer, and both sides of the handshake write before
// they read.
func tcpPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func runHandshakes(t *testing.T, serverKey, clientKey Key) (serverErr, clientErr error) {
	t.Helper()
	a, b := tcpPair(t)
	defer a.Close()
	defer b.Close()
	done := make(chan error, 1)
	go func() {
		_, err := serverHandshake(a, serverKey, rand.Reader)
		a.Close() // as the server does: a rejected peer gets nothing more
		done <- err
	}()
	clientErr = clientHandshake(b, clientKey, rand.Reader)
	b.Close()
	return <-done, clientErr
}

func TestHandshake(t *testing.T) {
	t.Run("same key", func(t *testing.T) {
		s, c := runHandshakes(t, keyA, keyA)
		if s != nil || c != nil {
			t.Fatalf("server %v, client %v", s, c)
		}
	})
	t.Run("server rejects the client's key", func(t *testing.T) {
		s, c := runHandshakes(t, keyA, keyB)
		if !errors.Is(s, ErrAuth) || !errors.Is(c, ErrAuth) {
			t.Fatalf("server %v, client %v; want both ErrAuth", s, c)
		}
		if !strings.Contains(c.Error(), "closed the connection after our proof") {
			t.Fatalf("client error %q does not say what happened", c)
		}
	})
	t.Run("client rejects an impostor server", func(t *testing.T) {
		a, b := tcpPair(t)
		go impostor(a, keyB)
		err := clientHandshake(b, keyA, rand.Reader)
		if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "the intercept's proof does not match our key") {
			t.Fatalf("client error %v", err)
		}
	})
	t.Run("other version", func(t *testing.T) {
		a, b := tcpPair(t)
		go func() {
			a.Write([]byte{'S', 'C', 'R', 2})
			io.Copy(io.Discard, a)
		}()
		err := clientHandshake(b, keyA, rand.Reader)
		if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "server speaks relay protocol version 2, this build speaks version 1") {
			t.Fatalf("client error %v", err)
		}
	})
	t.Run("HTTP server", func(t *testing.T) {
		a, b := tcpPair(t)
		go func() {
			a.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			io.Copy(io.Discard, a)
		}()
		err := clientHandshake(b, keyA, rand.Reader)
		if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), `not a stackcopy relay server: first bytes "HTTP"`) {
			t.Fatalf("client error %v", err)
		}
	})
}

// impostor plays a server that does not know the client's key but
// accepts any proof, and answers with a proof made with its own key.
func impostor(c net.Conn, key Key) {
	defer c.Close()
	challenge := make([]byte, challengeLen)
	rand.Read(challenge)
	c.Write(append(magic[:], frame(typeChallenge, challenge)...))
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	fr := frameReader{r: c}
	_, p, err := fr.next(serverExpectsAuth)
	if err != nil {
		return
	}
	c.Write(frame(typeAuthOK, serverProof(key, challenge, p[:nonceLen])))
	io.Copy(io.Discard, c)
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask may have narrowed it
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "  c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n", 0o600)
	k, err := LoadKey(good, "")
	if err != nil {
		t.Fatal(err)
	}
	if string(k.secret) != "c2VjcmV0LXNlY3JldC1zZWNyZXQ=" {
		t.Fatalf("key %q: whitespace not trimmed", k.secret)
	}
	if _, err := LoadKey(write("owner-read-only", "0123456789abcdef", 0o400), ""); err != nil {
		t.Fatalf("key of mode 0400 refused: %v", err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"world-readable", write("world", "0123456789abcdef", 0o644), "has mode 0644: everyone on this host can read it"},
		{"group-readable", write("group", "0123456789abcdef", 0o640), "has mode 0640: its group can read it"},
		{"group-writable", write("groupw", "0123456789abcdef", 0o620), "has mode 0620: more than its owner"},
		{"executable", write("exec", "0123456789abcdef", 0o700), "has mode 0700"},
		{"short", write("short", " 0123456789abcde \n", 0o600), "has 15 bytes, want at least 16"},
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"directory", dir, "not a regular file"},
		{"huge", write("huge", strings.Repeat("k", 5000), 0o600), "larger than 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadKey(tt.path, "")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "mode") && !strings.HasSuffix(err.Error(), "run: chmod 600 "+tt.path) {
				t.Fatalf("error %q does not end naming the fix", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is more than one line", err)
			}
		})
	}
}

// TestKeyFileArgumentIsTheKey: the key pasted as --key-file's argument is
// never repeated in the error (which ends up in logs); a missing path is
// not either, as the two cannot be told apart.
func TestKeyFileArgumentIsTheKey(t *testing.T) {
	for _, arg := range []string{
		"Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA==", // what head -c 32 /dev/urandom | base64 prints
		"s3cr3t/with+slashes/Zm9vYmFyYmF6cXV4cXV1eA==",
	} {
		_, err := LoadKey(arg, "STACKCOPY_RELAY_KEY")
		if err == nil {
			t.Fatalf("%q accepted as a key file", arg)
		}
		msg := err.Error()
		if strings.Contains(msg, arg) || strings.Contains(msg, "Zm9vYmFy") {
			t.Fatalf("error repeats the argument: %q", msg)
		}
		for _, want := range []string{"--key-file", "not a readable file", fmt.Sprintf("%d characters", len(arg))} {
			if !strings.Contains(msg, want) {
				t.Fatalf("error %q does not say %q", msg, want)
			}
		}
	}
	// A file that exists but cannot be read is a path: it is named.
	dir := t.TempDir()
	if _, err := LoadKey(filepath.Join(dir, "sub", "x"), ""); err == nil || strings.Contains(err.Error(), dir) {
		t.Fatalf("missing path: %v", err)
	}
}

func TestKeyFromEnv(t *testing.T) {
	t.Setenv("STACKCOPY_RELAY_KEY", "0123456789abcdef0123")
	k, err := LoadKey("", "STACKCOPY_RELAY_KEY")
	if err != nil || string(k.secret) != "0123456789abcdef0123" {
		t.Fatalf("%v %q", err, k.secret)
	}
	t.Setenv("STACKCOPY_RELAY_KEY", "short")
	if _, err := LoadKey("", "STACKCOPY_RELAY_KEY"); err == nil || !strings.Contains(err.Error(), "from $STACKCOPY_RELAY_KEY has 5 bytes") {
		t.Fatalf("short key: %v", err)
	}
	if _, err := LoadKey("", "STACKCOPY_RELAY_KEY_UNSET_FOR_TEST"); err == nil || !strings.Contains(err.Error(), "is not set") {
		t.Fatalf("unset: %v", err)
	}
}

// TestLoadKey: a key file wins over the environment; without either the
// error names both ways to give a key; no error shows key material.
func TestLoadKey(t *testing.T) {
	const env = "STACKCOPY_RELAY_KEY"
	t.Setenv(env, "")
	os.Unsetenv(env)
	if _, err := LoadKey("", env); err == nil || !strings.Contains(err.Error(), "--key-file") || !strings.Contains(err.Error(), env) ||
		!strings.HasPrefix(err.Error(), "no relay key") {
		t.Fatalf("no key anywhere: %v; want an error naming --key-file and %s", err, env)
	}
	if _, err := LoadKey("", ""); err == nil {
		t.Fatal("no file and no variable: accepted")
	}
	t.Setenv(env, "an-environment-key-long-enough")
	if k, err := LoadKey("", env); err != nil || string(k.secret) != "an-environment-key-long-enough" {
		t.Fatalf("environment key: %v", err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "k")
	if err := os.WriteFile(path, []byte("a-file-key-long-enough-123"), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := LoadKey(path, env); err != nil || string(k.secret) != "a-file-key-long-enough-123" {
		t.Fatalf("the file does not win over the environment: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path, env); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key file: %v", err)
	}

	// Keys too short to use: the errors give lengths, never the bytes.
	const secret = "Sh0rtSecr3t"
	t.Setenv(env, secret)
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"", short} {
		_, err := LoadKey(file, env)
		if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "has 11 bytes") {
			t.Errorf("short key (file %q): %v; want its length and not its bytes", file, err)
		}
	}
}

func TestKeyIsRedacted(t *testing.T) {
	k := testKey(t, "super-secret-key-material")
	for _, verb := range []string{"%v", "%s", "%x", "%q", "%#v", "%+v"} {
		for _, v := range []any{k, &k, struct{ K Key }{k}} {
			if s := fmt.Sprintf(verb, v); strings.Contains(s, "super") || strings.Contains(s, "7375706572") {
				t.Errorf("%s of %T shows the key: %s", verb, v, s)
			}
		}
	}
}

func TestNormalizeAddr(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"198.18.2.2", "198.18.2.2:36524", ""},
		{"198.18.2.2:4000", "198.18.2.2:4000", ""},
		{"intercept.lab", "intercept.lab:36524", ""},
		{"intercept.lab:4000", "intercept.lab:4000", ""},
		{"2001:db8::2", "[2001:db8::2]:36524", ""},
		{"[2001:db8::2]", "[2001:db8::2]:36524", ""},
		{"[2001:db8::2]:4000", "[2001:db8::2]:4000", ""},
		{"198.18.2.2:0", "", "bad port"},
		{"198.18.2.2:http", "", "bad port"},
		{":4000", "", "no host"},
		{"", "", "empty"},
	}
	for _, tt := range tests {
		got, err := normalizeAddr(tt.in)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("normalizeAddr(%q) = %q, %v; want %q, %q", tt.in, got, err, tt.want, tt.err)
		}
	}
	if _, err := parseAddrs([]string{"a,b:1", "a"}); err == nil || !strings.Contains(err.Error(), "a:36524 is listed twice") {
		t.Errorf("duplicate: %v", err)
	}
	got, err := parseAddrs([]string{"a, b:1", "c"})
	if err != nil || !slices.Equal(got, []string{"a:36524", "b:1", "c:36524"}) {
		t.Errorf("list: %v %v", got, err)
	}
}

// TestParsePacketHeader: the ports are enough to classify a packet, its
// whole TCP header is needed to relay it; a header that does not fit the
// packet it is delivered with is refused, not trusted.
func TestParsePacketHeader(t *testing.T) {
	p4 := tcpPacket(target4, client4, tsOption, []byte("hello"))
	mapped := tcpPacket(target6, netip.AddrPortFrom(netip.AddrFrom16(client4.Addr().As16()), client4.Port()), nil, []byte("x"))
	for _, tc := range []struct {
		name          string
		pkt           []byte
		ok, relayable bool
		dst           netip.AddrPort
	}{
		{"ipv4", p4, true, true, client4},
		{"ipv6", tcpPacket(target6, client6, nil, nil), true, true, client6},
		{"ipv4-mapped destination stays ipv6", mapped, true, true, netip.AddrPortFrom(netip.AddrFrom16(client4.Addr().As16()), client4.Port())},
		{"ports only", p4[:24], true, false, client4},
		{"tcp header cut", p4[:40], true, false, client4},
		{"cut in the ports", p4[:22], false, false, netip.AddrPort{}},
		{"empty", nil, false, false, netip.AddrPort{}},
	} {
		h, ok := ParsePacketHeader(tc.pkt)
		if ok != tc.ok || h.Relayable() != tc.relayable || h.Dst != tc.dst {
			t.Errorf("%s: %+v, %v; want dst %v, ok %v, relayable %v", tc.name, h, ok, tc.dst, tc.ok, tc.relayable)
		}
		if _, _, _, pok := parsePacket(tc.pkt); pok != tc.relayable {
			t.Errorf("%s: parsePacket ok %v, want %v", tc.name, pok, tc.relayable)
		}
	}

	srv, err := NewServer(ServerConfig{Key: keyA})
	if err != nil {
		t.Fatal(err)
	}
	m := &mirror{owned: make(map[netip.AddrPort]struct{})}
	m.q.init(8, 8)
	srv.router.register(m, []registration{{Client: client4, Target: target4}})
	h, _ := ParsePacketHeader(p4)
	if srv.DeliverParsed(p4[:30], h, true) || srv.Stats().Malformed != 1 {
		t.Fatalf("a header longer than the packet delivered with it was accepted: %+v", srv.Stats())
	}
	if !srv.DeliverParsed(p4, h, true) || len(m.q.take(nil)) != 1 {
		t.Fatal("a parsed packet to a registered client was not queued")
	}
}
