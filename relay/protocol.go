// Package relay is the channel between the mirror (stackcopy) and intercept.
//
// intercept runs on the target, or on an assistant host the target routes
// the forged clients to. It catches the target's answers to forged clients
// and hands them to a Server, which relays each one to the mirror that
// registered its destination. The mirror's Client turns them back into IP
// packets for its userspace stack, as if they had arrived from the wire.
//
// The wire protocol, after a TCP connect (default port 36524):
//
//	both sides   magic "SCR" + version byte (1)
//	server       Challenge{32 random bytes}
//	client       Auth{nonce[32], HMAC-SHA256(key, challenge || nonce || "stackcopy-relay-v1")}
//	server       AuthOK{HMAC-SHA256(key, nonce || challenge || "stackcopy-relay-v1 server")}
//	then         mirror → intercept: Register, Unregister, Ping
//	             intercept → mirror: Responses, Pong, Held (if asked for)
//
// Optional features are asked for inside the client's nonce, the one
// field of the handshake both versions treat as opaque, so neither end
// needs to know the other's release: a nonce that starts with featureMark
// carries feature bits in its next byte (featureHeld: send Held frames)
// and 24 random bytes. The HMAC covers the nonce, so the request cannot be
// forged. An older client's random nonce matches the mark once in 2^56
// connections; an older server never reads it and sends no Held frame.
//
// Every message is a frame: [type u8][payload length u24, big endian]
// [payload]. Payloads above MaxFrameSize, unknown types, types the receiving
// side does not expect and lengths a type cannot have are rejected from the
// 4-byte header, before anything is allocated. All integers are big endian.
//
// The pre-shared key only authenticates the two ends (both ways). Frames
// after the handshake are neither encrypted nor integrity-protected: run the
// channel on a network you trust, or inside WireGuard or an SSH tunnel.
//
// relay owns the protocol, both ends of it, the key (LoadKey) and the
// parsing of a captured answer's headers for routing (ParsePacketHeader).
// Both sides import it, so it imports no stackcopy package: not intercept,
// mirror or netstack (answers leave through ClientConfig.OnPackets, not a
// stack), nor capture.
package relay

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
)

const (
	// DefaultPort is intercept's port, the same as tcpcopy's intercept.
	DefaultPort = 36524
	// Version is the protocol version this package speaks. Both sides send
	// it in their first four bytes; a peer with another version is refused.
	Version = 1
	// MaxFrameSize bounds the payload of one frame. The receiver checks it
	// from the frame header, before allocating.
	MaxFrameSize = 1 << 20
	// MinKeyLen is the shortest pre-shared key accepted.
	MinKeyLen = 16
)

// Errors wrapped by the handshake, so callers can tell a configuration
// mistake (never fixed by retrying) from a network failure.
var (
	// ErrAuth: the two ends do not share the key.
	ErrAuth = errors.New("relay: authentication failed")
	// ErrProtocol: the peer is not a stackcopy relay peer of this version.
	ErrProtocol = errors.New("relay: protocol mismatch")
)

// magic opens every connection, from both sides. The fourth byte is the
// version, so an old peer fails with a message naming both versions.
var magic = [4]byte{'S', 'C', 'R', Version}

// hmacLabel ends the client's proof. The server's proof uses a different
// label and order, so neither proof can be reflected as the other.
const (
	hmacLabel       = "stackcopy-relay-v1"
	hmacLabelServer = "stackcopy-relay-v1 server"
)

const (
	frameHeaderLen = 4
	challengeLen   = 32
	nonceLen       = 32
	macLen         = sha256.Size
	pingLen        = 8
	countLen       = 2
	maxEntries     = 1<<16 - 1
)

// frameType is the first byte of every frame.
type frameType uint8

const (
	typeChallenge  frameType = 0x01 // server → client, handshake
	typeAuth       frameType = 0x02 // client → server, handshake
	typeAuthOK     frameType = 0x03 // server → client, handshake
	typeRegister   frameType = 0x10 // mirror → intercept
	typeUnregister frameType = 0x11 // mirror → intercept
	typeResponses  frameType = 0x20 // intercept → mirror
	typePing       frameType = 0x30 // mirror → intercept
	typePong       frameType = 0x31 // intercept → mirror
	typeHeld       frameType = 0x21 // intercept → mirror, only if the client asked (featureHeld)
)

// Feature negotiation inside the client's nonce (see the package doc).
const (
	featureMark = "scr-ext"
	// featureHeld: the client understands Held frames.
	featureHeld byte = 1 << 0
	// clientFeatures is what this build's client asks for.
	clientFeatures = featureHeld
)

func (t frameType) String() string {
	switch t {
	case typeChallenge:
		return "challenge"
	case typeAuth:
		return "auth"
	case typeAuthOK:
		return "auth-ok"
	case typeRegister:
		return "register"
	case typeUnregister:
		return "unregister"
	case typeResponses:
		return "responses"
	case typePing:
		return "ping"
	case typePong:
		return "pong"
	case typeHeld:
		return "held"
	}
	return fmt.Sprintf("unknown type 0x%02x", uint8(t))
}

// payloadBounds gives the payload lengths a frame type may have; ok is
// false for an unknown type. Fixed-size frames have min == max, so a wrong
// length is caught from the header.
func (t frameType) payloadBounds() (lo, hi int, ok bool) {
	switch t {
	case typeChallenge, typeAuthOK:
		return challengeLen, challengeLen, true
	case typeAuth:
		return nonceLen + macLen, nonceLen + macLen, true
	case typePing, typePong:
		return pingLen, pingLen, true
	case typeRegister:
		return countLen + 2*minAddrLen, MaxFrameSize, true
	case typeUnregister:
		return countLen + minAddrLen, MaxFrameSize, true
	case typeResponses:
		return countLen + minResponseEntry, MaxFrameSize, true
	case typeHeld:
		return countLen + minAddrLen + heldCountLen, MaxFrameSize, true
	}
	return 0, 0, false
}

// Frame sets each side accepts, by phase.
var (
	serverExpectsAuth  = []frameType{typeAuth}
	serverExpects      = []frameType{typeRegister, typeUnregister, typePing}
	clientExpectsChall = []frameType{typeChallenge}
	clientExpectsOK    = []frameType{typeAuthOK}
	clientExpects      = []frameType{typeResponses, typePong, typeHeld}
)

func appendFrameHeader(b []byte, t frameType, n int) []byte {
	return append(b, byte(t), byte(n>>16), byte(n>>8), byte(n))
}

func appendFrame(b []byte, t frameType, payload []byte) []byte {
	return append(appendFrameHeader(b, t, len(payload)), payload...)
}

// putFrameHeader fills a header reserved at the start of frame.
func putFrameHeader(frame []byte, t frameType) {
	n := len(frame) - frameHeaderLen
	frame[0], frame[1], frame[2], frame[3] = byte(t), byte(n>>16), byte(n>>8), byte(n)
}

// frameReader reads frames from a stream into one reused buffer. A
// payload stays valid until the next call.
type frameReader struct {
	r   io.Reader
	hdr [frameHeaderLen]byte
	buf []byte
}

// next reads one frame of one of the expected types. The header is
// validated (type known and expected, length within the type's bounds)
// before the payload is read or its buffer grown. io.EOF means the peer
// closed cleanly between frames.
func (fr *frameReader) next(expect []frameType) (frameType, []byte, error) {
	if n, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return 0, nil, fmt.Errorf("truncated frame header: got %d of %d bytes", n, frameHeaderLen)
		}
		return 0, nil, err
	}
	t := frameType(fr.hdr[0])
	n := int(fr.hdr[1])<<16 | int(fr.hdr[2])<<8 | int(fr.hdr[3])
	lo, hi, known := t.payloadBounds()
	if !known {
		return 0, nil, fmt.Errorf("%w: unknown frame type 0x%02x (header % x)", ErrProtocol, uint8(t), fr.hdr)
	}
	if !expected(t, expect) {
		return 0, nil, fmt.Errorf("unexpected %s frame here (want %s)", t, typeList(expect))
	}
	switch {
	case n > MaxFrameSize:
		return 0, nil, fmt.Errorf("%s frame of %d bytes exceeds the %d-byte limit", t, n, MaxFrameSize)
	case lo == hi && n != lo:
		return 0, nil, fmt.Errorf("%s frame of %d bytes, want %d", t, n, lo)
	case n < lo || n > hi:
		return 0, nil, fmt.Errorf("%s frame of %d bytes, want %d to %d", t, n, lo, hi)
	}
	if cap(fr.buf) < n {
		fr.buf = make([]byte, n, max(n, 2*cap(fr.buf)))
	}
	p := fr.buf[:n]
	if got, err := io.ReadFull(fr.r, p); err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return 0, nil, fmt.Errorf("truncated %s frame: got %d of %d payload bytes", t, got, n)
		}
		return 0, nil, fmt.Errorf("reading %s frame: %w", t, err)
	}
	return t, p, nil
}

func expected(t frameType, set []frameType) bool {
	for _, e := range set {
		if e == t {
			return true
		}
	}
	return false
}

func typeList(set []frameType) string {
	var b bytes.Buffer
	for i, t := range set {
		if i > 0 {
			b.WriteString(" or ")
		}
		b.WriteString(t.String())
	}
	return b.String()
}

// checkMagic validates the peer's first four bytes.
func checkMagic(got [4]byte, peer string) error {
	if got == magic {
		return nil
	}
	if got[0] == magic[0] && got[1] == magic[1] && got[2] == magic[2] {
		return fmt.Errorf("%w: %s speaks relay protocol version %d, this build speaks version %d; run the same stackcopy release on both sides",
			ErrProtocol, peer, got[3], Version)
	}
	hint := ""
	if bytes.HasPrefix(got[:], []byte("GET ")) || bytes.HasPrefix(got[:], []byte("POST")) ||
		bytes.HasPrefix(got[:], []byte("HEAD")) || bytes.HasPrefix(got[:], []byte("PUT ")) {
		hint = " (an HTTP request)"
	} else if got[0] == 0x16 && got[1] == 0x03 {
		hint = " (a TLS handshake)"
	}
	return fmt.Errorf("%w: not a stackcopy relay %s: first bytes %q%s", ErrProtocol, peer, got[:], hint)
}

func clientProof(key Key, challenge, nonce []byte) []byte {
	m := hmac.New(sha256.New, key.secret)
	m.Write(challenge)
	m.Write(nonce)
	m.Write([]byte(hmacLabel))
	return m.Sum(nil)
}

func serverProof(key Key, challenge, nonce []byte) []byte {
	m := hmac.New(sha256.New, key.secret)
	m.Write(nonce)
	m.Write(challenge)
	m.Write([]byte(hmacLabelServer))
	return m.Sum(nil)
}

// serverHandshake runs intercept's side on a fresh connection. An
// unauthenticated peer receives the magic and the challenge and nothing
// else: on any error the caller closes the connection without a word.
// The caller sets the deadline; random supplies the challenge (a fixed
// source in fuzz tests). It returns the features the client asked for.
func serverHandshake(rw io.ReadWriter, key Key, random io.Reader) (features byte, err error) {
	var challenge [challengeLen]byte
	if _, err := io.ReadFull(random, challenge[:]); err != nil {
		return 0, fmt.Errorf("generating challenge: %w", err)
	}
	out := make([]byte, 0, len(magic)+frameHeaderLen+challengeLen)
	out = append(out, magic[:]...)
	out = appendFrame(out, typeChallenge, challenge[:])
	if _, err := rw.Write(out); err != nil {
		return 0, fmt.Errorf("sending challenge: %w", err)
	}
	var got [4]byte
	if n, err := io.ReadFull(rw, got[:]); err != nil {
		return 0, fmt.Errorf("reading the client's protocol header (%d of 4 bytes): %w", n, err)
	}
	if err := checkMagic(got, "client"); err != nil {
		return 0, err
	}
	fr := frameReader{r: rw}
	_, p, err := fr.next(serverExpectsAuth)
	if err != nil {
		return 0, fmt.Errorf("reading auth: %w", err)
	}
	nonce, mac := p[:nonceLen], p[nonceLen:]
	if !hmac.Equal(mac, clientProof(key, challenge[:], nonce)) {
		return 0, fmt.Errorf("%w: the client's proof does not match our key", ErrAuth)
	}
	if _, err := rw.Write(appendFrame(nil, typeAuthOK, serverProof(key, challenge[:], nonce))); err != nil {
		return 0, fmt.Errorf("sending auth-ok: %w", err)
	}
	return nonceFeatures(nonce), nil
}

// nonceFeatures reads the features a client asked for in its nonce.
func nonceFeatures(nonce []byte) byte {
	if len(nonce) > len(featureMark) && string(nonce[:len(featureMark)]) == featureMark {
		return nonce[len(featureMark)]
	}
	return 0
}

// clientHandshake runs the mirror's side. It authenticates the server in
// turn: a server without the key cannot produce the proof over our nonce.
func clientHandshake(rw io.ReadWriter, key Key, random io.Reader) error {
	if _, err := rw.Write(magic[:]); err != nil {
		return fmt.Errorf("sending protocol header: %w", err)
	}
	var got [4]byte
	if n, err := io.ReadFull(rw, got[:]); err != nil {
		return fmt.Errorf("reading the server's protocol header (%d of 4 bytes): %w", n, err)
	}
	if err := checkMagic(got, "server"); err != nil {
		return err
	}
	fr := frameReader{r: rw}
	_, challenge, err := fr.next(clientExpectsChall)
	if err != nil {
		return fmt.Errorf("reading challenge: %w", err)
	}
	challenge = bytes.Clone(challenge)
	var nonce [nonceLen]byte
	n := copy(nonce[:], featureMark)
	nonce[n] = clientFeatures
	if _, err := io.ReadFull(random, nonce[n+1:]); err != nil {
		return fmt.Errorf("generating nonce: %w", err)
	}
	auth := append(nonce[:], clientProof(key, challenge, nonce[:])...)
	if _, err := rw.Write(appendFrame(nil, typeAuth, auth)); err != nil {
		return fmt.Errorf("sending auth: %w", err)
	}
	_, p, err := fr.next(clientExpectsOK)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err) {
			// The server closes silently on a bad proof: by far the most
			// likely cause of a close right here.
			return fmt.Errorf("%w: the intercept closed the connection after our proof: its key differs from ours", ErrAuth)
		}
		return fmt.Errorf("reading auth-ok: %w", err)
	}
	if !hmac.Equal(p, serverProof(key, challenge, nonce[:])) {
		return fmt.Errorf("%w: the intercept's proof does not match our key: it has another key, or it is not our intercept", ErrAuth)
	}
	return nil
}

// Key is the pre-shared relay key. It formats as a placeholder so it
// never ends up in a log line or an error message.
type Key struct{ secret []byte }

// String hides the key.
func (Key) String() string { return "relay.Key(redacted)" }

// GoString hides the key from %#v too.
func (Key) GoString() string { return "relay.Key(redacted)" }

// newKey checks and copies a key. Surrounding whitespace is trimmed, so a
// key file written by echo or an editor works.
func newKey(b []byte, source string) (Key, error) {
	b = bytes.TrimSpace(b)
	if len(b) < MinKeyLen {
		return Key{}, fmt.Errorf("relay key from %s has %d bytes, want at least %d; generate one with: head -c 32 /dev/urandom | base64", source, len(b), MinKeyLen)
	}
	return Key{secret: bytes.Clone(b)}, nil
}

// maxKeyFile bounds what LoadKey reads: a key, not a file someone pointed
// at by mistake.
const maxKeyFile = 4096

// LoadKey reads the pre-shared key from file or, when file is "", from the
// environment variable envVar (both commands use STACKCOPY_RELAY_KEY and a
// --key-file flag). A key file must be readable by its owner only (mode
// 0600 or 0400): a key others on the host can read authenticates them.
// Keys are never taken from the command line, where ps shows them. Errors
// name the file or the variable, never the key, and a --key-file argument
// that names no file is not repeated either: it may be the key itself.
func LoadKey(file, envVar string) (Key, error) {
	if file != "" {
		return loadKeyFile(file)
	}
	if envVar == "" {
		return Key{}, errors.New("no relay key: no key file given")
	}
	v, ok := os.LookupEnv(envVar)
	if !ok {
		return Key{}, fmt.Errorf("no relay key: --key-file not given and environment variable %s is not set", envVar)
	}
	return newKey([]byte(v), "$"+envVar)
}

func loadKeyFile(path string) (Key, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) && errors.Is(err, os.ErrNotExist) {
			// Nothing is there: the argument may be the key itself, pasted
			// where its file's name belongs. Say so without repeating it.
			return Key{}, fmt.Errorf("--key-file (an argument of %d characters, not shown: it may be the key itself): not a readable file: %w; --key-file takes the path of a file holding the key (chmod 600), or set the key in the environment instead",
				len(path), pe.Err)
		}
		return Key{}, fmt.Errorf("--key-file %s: not a readable file: %w", path, unwrapPath(err))
	}
	defer f.Close()
	// Stat the open file, not the path, so the mode checked is the mode of
	// what is read.
	fi, err := f.Stat()
	if err != nil {
		return Key{}, fmt.Errorf("relay key %s: %w", path, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return Key{}, fmt.Errorf("--key-file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&^0o600 != 0 {
		why := "more than its owner may use it"
		switch {
		case perm&0o004 != 0:
			why = "everyone on this host can read it"
		case perm&0o040 != 0:
			why = "its group can read it"
		}
		return Key{}, fmt.Errorf("relay key %s has mode %04o: %s, and whoever reads it can act as stackcopy or intercept; run: chmod 600 %s", path, perm, why, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return Key{}, fmt.Errorf("relay key %s: %w", path, unwrapPath(err))
	}
	if len(b) > maxKeyFile {
		return Key{}, fmt.Errorf("relay key %s is larger than %d bytes: not a key file", path, maxKeyFile)
	}
	return newKey(b, path)
}

// unwrapPath drops an *os.PathError's operation and path, which the
// caller's message already names.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Addresses are encoded as [family u8: 4 or 6][address: 4 or 16 bytes]
// [port u16]. Only canonical forms are accepted (IPv4 as family 4, never
// IPv4-mapped IPv6), so the router's keys compare equal to the addresses
// parsed from packets.
const (
	minAddrLen = 1 + 4 + 2
	maxAddrLen = 1 + 16 + 2
)

// checkAddr reports why ap cannot be a relayed client or target address.
func checkAddr(ap netip.AddrPort) error {
	a := ap.Addr()
	switch {
	case !a.IsValid():
		return errors.New("no address")
	case a.Is4In6():
		return fmt.Errorf("IPv4-mapped address %s (send it as IPv4)", a)
	case a.Zone() != "":
		return fmt.Errorf("address %s has a zone", a)
	case a.IsUnspecified():
		return fmt.Errorf("unspecified address %s", a)
	case ap.Port() == 0:
		return fmt.Errorf("%s: port 0", a)
	}
	return nil
}

// canonAddr turns a caller's address into the form the wire and the router
// use: IPv4-mapped IPv6 as IPv4, no zone.
func canonAddr(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

func addrLen(ap netip.AddrPort) int {
	if ap.Addr().Is4() {
		return 1 + 4 + 2
	}
	return 1 + 16 + 2
}

func appendAddr(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr()
	if a.Is4() {
		ip := a.As4()
		b = append(b, 4)
		b = append(b, ip[:]...)
	} else {
		ip := a.As16()
		b = append(b, 6)
		b = append(b, ip[:]...)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// readAddr decodes one address from the front of p and returns its
// encoded length.
func readAddr(p []byte) (netip.AddrPort, int, error) {
	if len(p) < 1 {
		return netip.AddrPort{}, 0, errors.New("truncated address: no family byte")
	}
	var a netip.Addr
	var n int
	switch p[0] {
	case 4:
		n = 1 + 4 + 2
		if len(p) < n {
			return netip.AddrPort{}, 0, fmt.Errorf("truncated IPv4 address: %d of %d bytes", len(p), n)
		}
		a = netip.AddrFrom4([4]byte(p[1:5]))
	case 6:
		n = 1 + 16 + 2
		if len(p) < n {
			return netip.AddrPort{}, 0, fmt.Errorf("truncated IPv6 address: %d of %d bytes", len(p), n)
		}
		a = netip.AddrFrom16([16]byte(p[1:17]))
	default:
		return netip.AddrPort{}, 0, fmt.Errorf("address family %d, want 4 or 6", p[0])
	}
	ap := netip.AddrPortFrom(a, binary.BigEndian.Uint16(p[n-2:n]))
	if err := checkAddr(ap); err != nil {
		return netip.AddrPort{}, 0, err
	}
	return ap, n, nil
}

// registration says that responses to Client (a forged client address)
// belong to the sending mirror, which replays it towards Target.
type registration struct {
	Client, Target netip.AddrPort
}

// Register payload: [count u16] then count × [client address][target
// address]. Unregister payload: [count u16] then count × [client address].
// A frame holds at least one entry and exactly count entries.

// decodeRegister validates a whole Register payload before returning any
// of it, so a bad frame changes nothing. dst is reused.
func decodeRegister(p []byte, dst []registration) ([]registration, error) {
	return decodeEntries(p, "register", dst, func(p []byte) (registration, int, error) {
		c, n, err := readAddr(p)
		if err != nil {
			return registration{}, 0, fmt.Errorf("client: %w", err)
		}
		t, m, err := readAddr(p[n:])
		if err != nil {
			return registration{}, 0, fmt.Errorf("target: %w", err)
		}
		return registration{Client: c, Target: t}, n + m, nil
	})
}

// decodeUnregister is decodeRegister for Unregister payloads.
func decodeUnregister(p []byte, dst []netip.AddrPort) ([]netip.AddrPort, error) {
	return decodeEntries(p, "unregister", dst, readAddr)
}

// decodeEntries decodes a payload of [count u16] then exactly count
// entries read by read; on any error it returns nothing of it.
func decodeEntries[T any](p []byte, what string, dst []T, read func([]byte) (T, int, error)) ([]T, error) {
	count, p, err := readCount(p, what)
	if err != nil {
		return dst[:0], err
	}
	dst = dst[:0]
	for i := range count {
		e, n, err := read(p)
		if err != nil {
			return dst[:0], fmt.Errorf("%s entry %d of %d: %w", what, i+1, count, err)
		}
		p = p[n:]
		dst = append(dst, e)
	}
	if len(p) != 0 {
		return dst[:0], fmt.Errorf("%s frame has %d bytes after its %d entries", what, len(p), count)
	}
	return dst, nil
}

func readCount(p []byte, what string) (int, []byte, error) {
	if len(p) < countLen {
		return 0, nil, fmt.Errorf("truncated %s frame: no entry count", what)
	}
	n := int(binary.BigEndian.Uint16(p))
	if n == 0 {
		return 0, nil, fmt.Errorf("%s frame with 0 entries", what)
	}
	return n, p[countLen:], nil
}

// appendRegisterFrames appends Register frames holding regs, as many
// frames as MaxFrameSize and the u16 count require.
func appendRegisterFrames(b []byte, regs []registration) []byte {
	for len(regs) > 0 {
		start := len(b)
		b = appendFrameHeader(b, typeRegister, 0)
		b = append(b, 0, 0)
		n, size := 0, countLen
		for n < len(regs) && n < maxEntries {
			e := addrLen(regs[n].Client) + addrLen(regs[n].Target)
			if size+e > MaxFrameSize {
				break
			}
			b = appendAddr(b, regs[n].Client)
			b = appendAddr(b, regs[n].Target)
			size += e
			n++
		}
		binary.BigEndian.PutUint16(b[start+frameHeaderLen:], uint16(n))
		putFrameHeader(b[start:], typeRegister)
		regs = regs[n:]
	}
	return b
}

// appendUnregisterFrames is appendRegisterFrames for Unregister.
func appendUnregisterFrames(b []byte, clients []netip.AddrPort) []byte {
	for len(clients) > 0 {
		start := len(b)
		b = appendFrameHeader(b, typeUnregister, 0)
		b = append(b, 0, 0)
		n, size := 0, countLen
		for n < len(clients) && n < maxEntries {
			e := addrLen(clients[n])
			if size+e > MaxFrameSize {
				break
			}
			b = appendAddr(b, clients[n])
			size += e
			n++
		}
		binary.BigEndian.PutUint16(b[start+frameHeaderLen:], uint16(n))
		putFrameHeader(b[start:], typeUnregister)
		clients = clients[n:]
	}
	return b
}

// Held payload (intercept → mirror): [count u16] then count × [client
// address][answers u32]: forged clients the mirror just registered whose
// answers the intercept had been holding (dropping) for an earlier owner,
// and how many it held. The hold ends with the registration; the notice
// tells the mirror why the target may still talk to these addresses.
const heldCountLen = 4

// HeldNotice is one entry of a Held frame.
type HeldNotice struct {
	Client  netip.AddrPort
	Answers uint32 // answers held for the earlier owner (saturating)
}

// appendHeldFrames appends Held frames holding notices.
func appendHeldFrames(b []byte, notices []HeldNotice) []byte {
	for len(notices) > 0 {
		start := len(b)
		b = appendFrameHeader(b, typeHeld, 0)
		b = append(b, 0, 0)
		n, size := 0, countLen
		for n < len(notices) && n < maxEntries {
			e := addrLen(notices[n].Client) + heldCountLen
			if size+e > MaxFrameSize {
				break
			}
			b = appendAddr(b, notices[n].Client)
			b = binary.BigEndian.AppendUint32(b, notices[n].Answers)
			size += e
			n++
		}
		binary.BigEndian.PutUint16(b[start+frameHeaderLen:], uint16(n))
		putFrameHeader(b[start:], typeHeld)
		notices = notices[n:]
	}
	return b
}

// decodeHeld validates a whole Held payload. dst is reused.
func decodeHeld(p []byte, dst []HeldNotice) ([]HeldNotice, error) {
	return decodeEntries(p, "held", dst, func(p []byte) (HeldNotice, int, error) {
		c, n, err := readAddr(p)
		if err != nil {
			return HeldNotice{}, 0, err
		}
		if len(p)-n < heldCountLen {
			return HeldNotice{}, 0, fmt.Errorf("truncated held count: %d of %d bytes", len(p)-n, heldCountLen)
		}
		return HeldNotice{Client: c, Answers: binary.BigEndian.Uint32(p[n:])}, n + heldCountLen, nil
	})
}

// Responses payload: [count u16] then count packet entries:
//
//	full:        [0x00][length u24][the whole IP packet]
//	header-only: [0x01][length u24][original total length u24][IP + TCP headers]
//
// A header-only packet is rebuilt by the receiver at its original length
// with a zero-filled payload, checksums untouched: the mirror's stack
// advertises RX checksum offload and does not verify them.
const (
	kindFull       = 0
	kindHeaderOnly = 1

	// maxPacketLen is the largest IP packet without jumbograms: IPv6's
	// 40-byte header plus a 65535-byte payload (IPv4 stops at 65535).
	maxPacketLen = 40 + 1<<16 - 1
	// maxHeaderLen bounds a header-only entry: IPv4 (60) or IPv6 (40) plus
	// TCP (60), with room for IPv6 extension headers later.
	maxHeaderLen = 256
	minIPv4Len   = 20
	minIPv6Len   = 40
	// minResponseEntry is a full entry carrying the smallest IPv4 header.
	minResponseEntry = 1 + 3 + minIPv4Len
)

// relayed is one decoded packet entry; Data points into the frame.
type relayed struct {
	Data    []byte
	OrigLen int // total length to rebuild; len(Data) for full packets
	Full    bool
}

// responseEntryLen is the encoded size of one entry carrying data.
func responseEntryLen(dataLen int, full bool) int {
	if full {
		return 1 + 3 + dataLen
	}
	return 1 + 3 + 3 + dataLen
}

// appendResponseEntry encodes one packet. The caller has checked the
// lengths (parsePacket does).
func appendResponseEntry(b []byte, data []byte, origLen int, full bool) []byte {
	n := len(data)
	if full {
		b = append(b, kindFull, byte(n>>16), byte(n>>8), byte(n))
	} else {
		b = append(b, kindHeaderOnly, byte(n>>16), byte(n>>8), byte(n),
			byte(origLen>>16), byte(origLen>>8), byte(origLen))
	}
	return append(b, data...)
}

// decodeResponses validates a whole Responses payload and returns its
// entries (pointing into p). dst is reused.
func decodeResponses(p []byte, dst []relayed) ([]relayed, error) {
	return decodeEntries(p, "responses", dst, readResponseEntry)
}

func readResponseEntry(p []byte) (relayed, int, error) {
	if len(p) < 4 {
		return relayed{}, 0, fmt.Errorf("truncated entry header: %d bytes", len(p))
	}
	kind := p[0]
	n := int(p[1])<<16 | int(p[2])<<8 | int(p[3])
	hdr := 4
	var orig int
	switch kind {
	case kindFull:
	case kindHeaderOnly:
		if len(p) < 7 {
			return relayed{}, 0, fmt.Errorf("truncated header-only entry header: %d bytes", len(p))
		}
		orig = int(p[4])<<16 | int(p[5])<<8 | int(p[6])
		hdr = 7
	default:
		return relayed{}, 0, fmt.Errorf("packet kind %d, want 0 (full) or 1 (header-only)", kind)
	}
	if len(p)-hdr < n {
		return relayed{}, 0, fmt.Errorf("truncated packet: %d of %d bytes", len(p)-hdr, n)
	}
	data := p[hdr : hdr+n]
	if n == 0 {
		return relayed{}, 0, errors.New("empty packet")
	}
	limit := 65535
	switch v := data[0] >> 4; v {
	case 4:
		if n < minIPv4Len {
			return relayed{}, 0, fmt.Errorf("IPv4 packet of %d bytes, shorter than its header", n)
		}
	case 6:
		if n < minIPv6Len {
			return relayed{}, 0, fmt.Errorf("IPv6 packet of %d bytes, shorter than its header", n)
		}
		limit = maxPacketLen
	default:
		return relayed{}, 0, fmt.Errorf("IP version %d, want 4 or 6", v)
	}
	if kind == kindFull {
		if n > limit {
			return relayed{}, 0, fmt.Errorf("packet of %d bytes exceeds %d", n, limit)
		}
		return relayed{Data: data, OrigLen: n, Full: true}, hdr + n, nil
	}
	switch {
	case n > maxHeaderLen:
		return relayed{}, 0, fmt.Errorf("header-only packet carries %d header bytes, more than %d", n, maxHeaderLen)
	case orig < n:
		return relayed{}, 0, fmt.Errorf("header-only packet: original length %d is shorter than its %d header bytes", orig, n)
	case orig > limit:
		return relayed{}, 0, fmt.Errorf("header-only packet: original length %d exceeds %d", orig, limit)
	}
	return relayed{Data: data, OrigLen: orig}, hdr + n, nil
}

// rebuild returns r as a whole IP packet. A header-only packet is written
// into scratch (at least maxPacketLen bytes): its headers, then zeros up
// to the original length. Nothing else is changed.
func (r relayed) rebuild(scratch []byte) []byte {
	if r.Full {
		return r.Data
	}
	pkt := scratch[:r.OrigLen]
	n := copy(pkt, r.Data)
	clear(pkt[n:])
	return pkt
}

// PacketHeader is what routing a captured answer needs, read once from
// its IP and TCP headers by ParsePacketHeader: the caller classifying the
// packet passes it on to Server.DeliverParsed instead of having the
// headers parsed again. The zero value is a packet that cannot be relayed.
type PacketHeader struct {
	// Dst is the destination (the forged client), as the packet has it:
	// an IPv4-mapped IPv6 destination stays IPv6, and so matches no
	// registration.
	Dst netip.AddrPort
	// hdrLen is the length of the IP and TCP headers, 0 unless both were
	// captured whole; totalLen is the packet's length from its IP header.
	hdrLen, totalLen int
}

// Relayable reports whether the packet's IP and TCP headers were captured
// whole and are consistent with its total length: only such a packet can
// travel to a mirror.
func (h PacketHeader) Relayable() bool { return h.hdrLen > 0 }

// ParsePacketHeader reads the headers of a captured answer (an IP packet,
// from the IP header on). ok is false for anything but an unfragmented
// IPv4 or IPv6 (no extension headers) TCP packet of which at least the
// ports were captured; the packet is relayable only if its whole TCP
// header was captured too. It never reads beyond pkt.
func ParsePacketHeader(pkt []byte) (PacketHeader, bool) {
	if len(pkt) < 1 {
		return PacketHeader{}, false
	}
	var ipLen, totalLen int
	var addr netip.Addr
	switch pkt[0] >> 4 {
	case 4:
		ipLen = int(pkt[0]&0x0f) * 4
		if ipLen < minIPv4Len || len(pkt) < ipLen+4 || pkt[9] != 6 {
			return PacketHeader{}, false
		}
		if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 { // MF or an offset
			return PacketHeader{}, false
		}
		totalLen = int(binary.BigEndian.Uint16(pkt[2:4]))
		addr = netip.AddrFrom4([4]byte(pkt[16:20]))
	case 6:
		ipLen = minIPv6Len
		if len(pkt) < ipLen+4 || pkt[6] != 6 {
			return PacketHeader{}, false
		}
		totalLen = minIPv6Len + int(binary.BigEndian.Uint16(pkt[4:6]))
		addr = netip.AddrFrom16([16]byte(pkt[24:40]))
	default:
		return PacketHeader{}, false
	}
	port := binary.BigEndian.Uint16(pkt[ipLen+2 : ipLen+4])
	hdrLen := 0 // not relayable unless the TCP header is whole
	if len(pkt) >= ipLen+20 {
		tcpLen := int(pkt[ipLen+12]>>4) * 4
		if n := ipLen + tcpLen; tcpLen >= 20 && n <= len(pkt) && n <= totalLen {
			hdrLen = n
		}
	}
	return PacketHeader{Dst: netip.AddrPortFrom(addr, port), hdrLen: hdrLen, totalLen: totalLen}, true
}

// parsePacket reads what routing a captured response needs: its
// destination (the forged client), the length of its IP and TCP headers,
// and its total length from the IP header. ok is false for anything but an
// unfragmented IPv4 or IPv6 (no extension headers) TCP packet whose
// headers were captured whole.
func parsePacket(pkt []byte) (dst netip.AddrPort, hdrLen, totalLen int, ok bool) {
	h, ok := ParsePacketHeader(pkt)
	if !ok || !h.Relayable() {
		return netip.AddrPort{}, 0, 0, false
	}
	return h.Dst, h.hdrLen, h.totalLen, true
}
