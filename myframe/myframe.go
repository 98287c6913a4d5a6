// Package myframe follows both directions of one MySQL / MariaDB
// client/server protocol session and counts answer units, so that the
// replayer can tell when the target has answered a turn whatever the sizes
// of its answers (row counts, generated ids, messages).
//
// It owns the framing of the classic protocol: packets of a 3-byte
// little-endian length and a 1-byte sequence id, a 0xFFFFFF-long packet
// continuing its message in the next one; the connection phase (protocol-10
// greeting, HandshakeResponse41, authentication exchange) and the command
// phase (text and binary result sets, multi-results, LOCAL INFILE, prepared
// statements and cursors).
//
// # Answer units
//
// Answers counts these, in order:
//   - the server's initial handshake (greeting), or the ERR packet a server
//     sends instead: the client waits for it before it speaks;
//   - each authentication packet of the server that ends an exchange step:
//     OK or ERR (authentication over), AuthSwitchRequest (0xFE),
//     AuthNextFactor (0x02) or AuthMoreData (0x01), which the client must
//     answer. The one AuthMoreData that the client does not answer,
//     caching_sha2_password's fast-auth success (payload 0x01 0x03), is not
//     a unit: its unit completes with the OK or ERR that follows;
//   - the answer to each client command that gets one, complete when its
//     last packet has arrived: OK, ERR, EOF, a statistics string, a result
//     set (column count, definitions, EOF unless CLIENT_DEPRECATE_EOF, rows
//     and its closing EOF/OK), all of the results while
//     SERVER_MORE_RESULTS_EXISTS says another one follows, a
//     COM_STMT_PREPARE OK with its parameter and column definitions, the
//     rows of COM_STMT_FETCH. An ERR ends an answer wherever it comes;
//   - a LOCAL INFILE request (0xFB): the client must answer it with the
//     file's content. What follows it (OK, ERR, more results) is the unit of
//     the file content, which the client ends with an empty packet.
//
// Requests counts the client messages that call for a unit: the
// HandshakeResponse, each authentication reply, each command that gets an
// answer (all but COM_QUIT, COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA), and
// each LOCAL INFILE content (at its empty packet). Because the greeting has
// no request, a session where every request is answered has Answers ==
// Requests+1.
//
// MariaDB progress reports (an ERR packet with code 0xFFFF while
// MARIADB_CLIENT_PROGRESS is negotiated) are skipped. With
// MARIADB_CLIENT_CACHE_METADATA the column-count packet of every result
// set carries a metadata-follows byte; when it is 0 the column definitions
// are left out (as MariaDB 10.11 does on a repeated COM_STMT_EXECUTE, see
// testdata). Without CLIENT_DEPRECATE_EOF the EOF after the left-out
// definitions is still expected, as MariaDB's documentation lays the
// packets out; clients that cache metadata negotiate CLIENT_DEPRECATE_EOF
// as well, so real traffic has not shown that case. A COM_STMT_EXECUTE
// that opens a cursor is answered by its column definitions and the
// EOF/OK carrying SERVER_STATUS_CURSOR_EXISTS; each COM_STMT_FETCH gets
// rows up to an EOF/OK. COM_STMT_BULK_EXECUTE is answered like
// COM_STMT_EXECUTE. Commands may be pipelined (up to MaxPipelined awaiting
// their answers); the server's packets are matched with them in order.
//
// # What goes Err
//
// The framer stops (Err returns why, Requests and Answers stop changing)
// on: an SSLRequest or any TLS (ErrTLS); compression negotiated
// (CLIENT_COMPRESS or CLIENT_ZSTD_COMPRESSION_ALGORITHM, ErrCompressed, right
// after the authentication OK that starts it); a protocol-9 greeting or a
// client without CLIENT_PROTOCOL_41, MySQL's
// CLIENT_OPTIONAL_RESULTSET_METADATA, COM_BINLOG_DUMP(_GTID), COM_MULTI,
// COM_CLONE and commands that are unknown or internal to the server
// (ErrUnsupported); a packet out of sequence (ErrSequence; a server ERR
// with a wrong sequence id is taken, as clients do); a packet that does not
// fit where it comes (ErrMalformed); a LOCAL INFILE request or an
// authentication step while later commands were already sent, or more than
// MaxPipelined commands awaiting answers (ErrPipelined); more than MaxHeld
// bytes of one side arriving before the other side's packet they follow
// has (ErrHeld); bytes after the connection ended (after COM_QUIT, or a
// failed connection-phase authentication: ErrClosed).
//
// # Use in a replayer
//
// The greeting is a unit before any client byte: a session's first client
// turn waits for Answers >= 1. Client bytes that answer a server packet
// (authentication replies, LOCAL INFILE content) must be shown to Client
// after that packet was shown to Server, which a replayer waiting for the
// packet's unit does. Server bytes that arrive before the client command
// they answer was shown to Client are held (at most MaxHeld bytes) and
// framed once it is.
//
// Numbered hands on the statement id each COM_STMT_PREPARE got (0 for a
// refusal), in order: the capture side's framer tells production's, the
// player's framer the target's, and a Renumber pairs them and rewrites
// the client's statement commands to name the target's ids.
//
// Client and Server may be called from two goroutines at once; they share
// a mutex, held for one chunk. Requests, Answers and Err read atomics and
// may be called from any goroutine. Payloads are counted, never stored:
// the framer keeps the first bytes of each message (PrefixLen) and the held
// bytes, in fixed arrays, and allocates nothing per message.
//
// myframe is a leaf: it imports only the standard library and
// internal/framekit (the framers' shared lock and counts), which does too.
package myframe

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/stackcopy/stackcopy/internal/framekit"
)

// Why a Framer stopped following the session, as returned (wrapped) by Err.
var (
	// ErrMalformed: a packet that cannot be what comes at its place.
	ErrMalformed = errors.New("myframe: malformed packet")
	// ErrSequence: a packet whose sequence id is not the next one.
	ErrSequence = errors.New("myframe: packet out of sequence")
	// ErrTLS: the client asked for TLS (SSLRequest); what follows is
	// encrypted.
	ErrTLS = errors.New("myframe: TLS is not followed")
	// ErrCompressed: the session negotiated compression, which frames
	// packets differently after authentication.
	ErrCompressed = errors.New("myframe: compressed protocol is not followed")
	// ErrUnsupported: a protocol version, capability or command the
	// framer does not follow.
	ErrUnsupported = errors.New("myframe: protocol feature not followed")
	// ErrPipelined: commands sent ahead where the protocol does not
	// allow it, or more than MaxPipelined awaiting their answers.
	ErrPipelined = errors.New("myframe: pipelined commands not followed")
	// ErrHeld: more than MaxHeld bytes of one side ahead of the packet of
	// the other side they follow.
	ErrHeld = errors.New("myframe: too many bytes ahead of the other side")
	// ErrClosed: bytes after the session ended.
	ErrClosed = errors.New("myframe: bytes after the session ended")
)

const (
	// PrefixLen is how much of each message's start is kept: enough for
	// a greeting's capabilities, an OK packet's status, a command's flags.
	PrefixLen = 256
	// MaxHeld bounds the bytes of one side held while the other side has
	// not reached the point they follow.
	MaxHeld = 4096
	// MaxPipelined bounds the commands awaiting their answers.
	MaxPipelined = 64
	// MaxNumbered bounds the statement ids kept for Numbered between two
	// calls (a replayer takes them at every turn).
	MaxNumbered = 1024

	maxPacket  = 0xFFFFFF
	maxColumns = 1 << 16
)

// Capability flags (the upper 32 bits are MariaDB's extended ones).
const (
	capMySQL              = 1 << 0
	capCompress           = 1 << 5
	capProtocol41         = 1 << 9
	capSSL                = 1 << 11
	capDeprecateEOF       = 1 << 24
	capOptionalMetadata   = 1 << 25
	capZstd               = 1 << 26
	capMariaProgress      = 1 << 32
	capMariaCacheMetadata = 1 << 36
)

// Server status flags.
const (
	statusMoreResults  = 0x0008
	statusCursorExists = 0x0040
)

// What a command's answer looks like.
type kind uint8

const (
	kNone      kind = iota // no answer
	kAuth                  // an authentication exchange
	kSimple                // one OK, EOF or ERR packet
	kString                // one packet of any content (COM_STATISTICS)
	kQuery                 // a text answer: OK, ERR, LOCAL INFILE or result sets
	kExecute               // a binary answer: OK, ERR or binary result sets
	kPrepare               // COM_STMT_PREPARE's answer
	kFetch                 // binary rows
	kFieldList             // column definitions up to an EOF
	kQuit
	kBad // not followed
)

// commands maps a command byte to its answer.
var commands = func() (t [256]kind) {
	for i := range t {
		t[i] = kBad
	}
	for _, c := range []byte{0x02, 0x05, 0x06, 0x07, 0x08, 0x0c, 0x0d, 0x0e, 0x15, 0x1a, 0x1b, 0x1f} {
		// INIT_DB, CREATE_DB, DROP_DB, REFRESH, SHUTDOWN, PROCESS_KILL,
		// DEBUG, PING, REGISTER_SLAVE, STMT_RESET, SET_OPTION,
		// RESET_CONNECTION.
		t[c] = kSimple
	}
	t[0x01] = kQuit
	t[0x03] = kQuery // COM_QUERY
	t[0x04] = kFieldList
	t[0x09] = kString // COM_STATISTICS
	t[0x0a] = kQuery  // COM_PROCESS_INFO
	t[0x11] = kAuth   // COM_CHANGE_USER
	t[0x16] = kPrepare
	t[0x17] = kExecute
	t[0x18] = kNone // COM_STMT_SEND_LONG_DATA
	t[0x19] = kNone // COM_STMT_CLOSE
	t[0x1c] = kFetch
	t[0xfa] = kExecute // MariaDB COM_STMT_BULK_EXECUTE
	return t
}()

// The client side's state: what its next message is.
type cstate uint8

const (
	cGreeting  cstate = iota // before the greeting: the client must wait
	cHandshake               // HandshakeResponse41 (or SSLRequest)
	cWait                    // inside an authentication exchange, the server's turn
	cAuthReply               // an authentication reply
	cCommand                 // a command
	cInfile                  // LOCAL INFILE content, up to an empty message
	cClosed
)

// The server side's state: what its next message is.
type sstate uint8

const (
	sGreeting   sstate = iota
	sIdle              // between answers: the next one starts the head command's
	sWaitClient        // the client's turn inside an exchange
	sAuth              // an authentication result
	sSimple
	sString
	sResult    // the start of a (next) result: OK, ERR, 0xFB or a column count
	sColDefs   // column definitions, defs to go
	sColEOF    // the EOF after them
	sRows      // rows up to the closing EOF/OK or an ERR
	sPrepare   // COM_STMT_PREPARE's OK or ERR
	sPrepDefs  // parameter or column definitions, defs to go
	sPrepEOF   // the EOF after a block of them
	sFieldList // COM_FIELD_LIST's column definitions
	sClosed
)

type cmd struct {
	kind   kind
	seq    byte // the sequence id of the answer's first packet
	cursor bool // COM_STMT_EXECUTE opening a cursor
	conn   bool // the connection-phase authentication
}

// dir is the packet layer of one direction.
type dir struct {
	hdr    [4]byte
	nh     int  // header bytes so far
	left   int  // payload bytes to go in the current packet
	plen   int  // the current packet's length
	inMsg  bool // a message has started and not ended
	seq    byte // the sequence id the next packet must have
	badSeq bool // the message's first packet was out of sequence
	npre   int
	size   int64 // the message's payload bytes so far
	nhold  int
	pre    [PrefixLen]byte
	hold   [MaxHeld]byte
}

// Framer follows one session. Make it with New.
type Framer struct {
	sh framekit.Shell // the lock, the counts and the error
	c  dir            // client to server
	s  dir            // server to client

	cst cstate
	sst sstate

	srvCaps, cliCaps, caps uint64

	q      [MaxPipelined]cmd // commands awaiting answers, a ring
	qh, qn int
	cur    cmd    // the command being answered
	binary bool   // the current result set's rows are binary
	defs   uint64 // definitions to go
	after  uint64 // COM_STMT_PREPARE: column definitions after the parameters'

	// The statement ids the server gave (0: a prepare it refused), in
	// order, until Numbered takes them; numsLost once more than
	// MaxNumbered waited.
	nums     []uint32
	numsLost bool
}

// New returns a framer for one session, ready for the first bytes.
func New() *Framer { return &Framer{} }

// Client is shown the client's bytes, in order, in chunks of any size.
func (f *Framer) Client(p []byte) { f.write(true, p) }

// Server is shown the server's bytes, in order, in chunks of any size.
func (f *Framer) Server(p []byte) { f.write(false, p) }

// Requests is the number of complete client messages so far that call for
// an answer unit.
func (f *Framer) Requests() int { return f.sh.Requests() }

// Answers is the number of answer units completed so far.
func (f *Framer) Answers() int { return f.sh.Answers() }

// Err is nil while the framer follows the session, and why it stopped
// after that.
func (f *Framer) Err() error { return f.sh.Err() }

// Numbered appends to dst the statement ids the server gave the session's
// COM_STMT_PREPAREs since the last call, in order, 0 for a prepare it
// refused (ERR); ok is false once ids were lost: more than MaxNumbered
// answered between two calls, or the framer stopped. A replayer pairs
// production's ids with the target's (see Renumber).
func (f *Framer) Numbered(dst []uint32) (ids []uint32, ok bool) {
	f.sh.Lock()
	defer f.sh.Unlock()
	dst = append(dst, f.nums...)
	f.nums = f.nums[:0]
	return dst, !f.numsLost && !f.sh.Failed()
}

// numbered records the outcome of a COM_STMT_PREPARE.
func (f *Framer) numbered(id uint32) {
	if len(f.nums) >= MaxNumbered {
		f.numsLost = true
		return
	}
	f.nums = append(f.nums, id)
}

func (f *Framer) write(client bool, p []byte) {
	if len(p) == 0 {
		return
	}
	f.sh.Lock()
	defer f.sh.Unlock()
	if f.sh.Failed() {
		return
	}
	d := &f.s
	if client {
		d = &f.c
	}
	if d.nhold == 0 {
		p = f.feed(client, p)
	}
	if len(p) > 0 && !f.sh.Failed() {
		if d.nhold+len(p) > MaxHeld {
			f.fail(ErrHeld, "a side ran ahead of the other")
			return
		}
		d.nhold += copy(d.hold[d.nhold:], p)
	}
	f.settle()
	if !f.sh.Failed() {
		f.sh.Publish()
	}
}

// settle frames held bytes as long as either side can go on.
func (f *Framer) settle() {
	for !f.sh.Failed() {
		progress := false
		for _, client := range [2]bool{false, true} {
			d := &f.s
			if client {
				d = &f.c
			}
			if d.nhold == 0 || f.blocked(client) {
				continue
			}
			rest := f.feed(client, d.hold[:d.nhold])
			if len(rest) < d.nhold {
				progress = true
			}
			d.nhold = copy(d.hold[:], rest)
		}
		if !progress {
			return
		}
	}
}

// blocked tells whether a side's next message must wait until the other
// side has gone on: it is held until then.
func (f *Framer) blocked(client bool) bool {
	if client {
		return f.cst == cGreeting || f.cst == cWait
	}
	return f.sst == sWaitClient || (f.sst == sIdle && f.qn == 0)
}

// feed frames p from one side and returns what it could not frame yet (a
// message that must wait for the other side).
func (f *Framer) feed(client bool, p []byte) []byte {
	d := &f.s
	if client {
		d = &f.c
	}
	for len(p) > 0 && !f.sh.Failed() {
		if d.nh < 4 {
			if d.nh == 0 && !d.inMsg && f.blocked(client) {
				return p
			}
			n := copy(d.hdr[d.nh:], p)
			d.nh += n
			p = p[n:]
			if d.nh == 4 {
				f.header(client, d)
			}
			continue
		}
		n := min(d.left, len(p))
		if d.npre < PrefixLen {
			d.npre += copy(d.pre[d.npre:], p[:n])
		}
		d.size += int64(n)
		d.left -= n
		p = p[n:]
		if d.left == 0 {
			f.packetEnd(client, d)
		}
	}
	return nil
}

func (f *Framer) header(client bool, d *dir) {
	plen := int(d.hdr[0]) | int(d.hdr[1])<<8 | int(d.hdr[2])<<16
	seq := d.hdr[3]
	first := !d.inMsg
	if first {
		d.inMsg, d.npre, d.size, d.badSeq = true, 0, 0, false
		if client {
			switch f.cst {
			case cCommand:
				d.seq = 0
			case cClosed:
				f.fail(ErrClosed, "client bytes after the session ended")
				return
			}
		} else if f.sst == sIdle {
			f.begin()
		}
	}
	if seq != d.seq {
		if client || !first {
			f.fail(ErrSequence, "packet out of sequence")
			return
		}
		d.badSeq = true // fine for an ERR packet
	}
	d.seq = seq + 1
	d.plen, d.left = plen, plen
	if plen == 0 {
		f.packetEnd(client, d)
	}
}

func (f *Framer) packetEnd(client bool, d *dir) {
	d.nh = 0
	if d.plen == maxPacket {
		return // the message goes on in the next packet
	}
	d.inMsg = false
	if client {
		f.clientMsg(d)
	} else {
		f.serverMsg(d)
	}
}

// fail stops the framer.
func (f *Framer) fail(err error, why string) {
	if f.sh.Failed() {
		return
	}
	f.sh.Publish() // the counts stay those before the failing bytes
	f.sh.Fail(fmt.Errorf("%w: %s", err, why))
}

func (f *Framer) push(c cmd) {
	if f.qn == MaxPipelined {
		f.fail(ErrPipelined, "too many commands awaiting answers")
		return
	}
	f.q[(f.qh+f.qn)%MaxPipelined] = c
	f.qn++
	f.sh.Requested++
}

// begin starts the answer to the head command.
func (f *Framer) begin() {
	f.cur = f.q[f.qh]
	f.s.seq = f.cur.seq
	f.binary = false
	switch f.cur.kind {
	case kAuth:
		f.sst = sAuth
	case kSimple:
		f.sst = sSimple
	case kString:
		f.sst = sString
	case kQuery:
		f.sst = sResult
	case kExecute:
		f.sst, f.binary = sResult, true
	case kPrepare:
		f.sst = sPrepare
	case kFetch:
		f.sst, f.binary = sRows, true
	case kFieldList:
		f.sst = sFieldList
	}
}

// done completes the head command's answer.
func (f *Framer) done() {
	f.sh.Answered++
	f.qh = (f.qh + 1) % MaxPipelined
	f.qn--
	f.sst = sIdle
}

// exchange hands the turn to the client inside the head command's answer
// (an authentication step, a LOCAL INFILE request): a unit completes, and
// the client's next message answers it.
func (f *Framer) exchange(next cstate) {
	if f.qn > 1 || f.c.inMsg || f.c.nh > 0 || f.c.nhold > 0 {
		f.fail(ErrPipelined, "client sent ahead of a server request it must answer")
		return
	}
	f.sh.Answered++
	f.cst = next
	f.c.seq = f.s.seq
	f.sst = sWaitClient
}

func (f *Framer) clientMsg(d *dir) {
	pre := d.pre[:d.npre]
	switch f.cst {
	case cHandshake:
		f.handshakeResponse(d, pre)
	case cAuthReply:
		f.sh.Requested++
		f.cst, f.sst, f.s.seq = cWait, sAuth, d.seq
	case cInfile:
		if d.size == 0 {
			f.sh.Requested++
			f.cst, f.sst, f.s.seq = cCommand, sResult, d.seq
		}
	case cCommand:
		if d.size == 0 {
			f.fail(ErrMalformed, "empty command packet")
			return
		}
		c := cmd{kind: commands[pre[0]], seq: d.seq}
		switch c.kind {
		case kBad:
			f.fail(ErrUnsupported, fmt.Sprintf("command 0x%02x", pre[0]))
		case kNone:
		case kQuit:
			f.cst = cClosed
		case kAuth:
			f.push(c)
			f.cst = cWait
		case kExecute:
			// Flags after the command byte and the statement id: a cursor
			// makes the answer end after the column definitions.
			if pre[0] == 0x17 {
				if len(pre) < 10 {
					f.fail(ErrMalformed, "short COM_STMT_EXECUTE")
					return
				}
				c.cursor = pre[5]&0x07 != 0
			}
			f.push(c)
		default:
			f.push(c)
		}
	}
}

func (f *Framer) handshakeResponse(d *dir, pre []byte) {
	if len(pre) < 4 {
		f.fail(ErrMalformed, "short HandshakeResponse")
		return
	}
	caps := uint64(binary.LittleEndian.Uint32(pre))
	if caps&capProtocol41 == 0 {
		f.fail(ErrUnsupported, "HandshakeResponse320 (no CLIENT_PROTOCOL_41)")
		return
	}
	if caps&capSSL != 0 {
		f.fail(ErrTLS, "SSLRequest")
		return
	}
	if len(pre) < 32 {
		f.fail(ErrMalformed, "short HandshakeResponse41")
		return
	}
	if f.srvCaps&capMySQL == 0 && caps&capMySQL == 0 {
		caps |= uint64(binary.LittleEndian.Uint32(pre[28:])) << 32
	}
	f.cliCaps = caps
	f.caps = f.srvCaps & caps
	if f.caps&capOptionalMetadata != 0 {
		f.fail(ErrUnsupported, "CLIENT_OPTIONAL_RESULTSET_METADATA")
		return
	}
	f.push(cmd{kind: kAuth, seq: d.seq, conn: true})
	f.cst = cWait
}

func (f *Framer) greeting(pre []byte) {
	// protocol version, server version NUL, thread id (4), scramble (8),
	// filler (1), capabilities (2); then charset (1), status (2),
	// capabilities (2), scramble length (1), reserved (6) and MariaDB's
	// capabilities (4).
	if pre[0] != 10 {
		f.fail(ErrUnsupported, fmt.Sprintf("protocol version %d", pre[0]))
		return
	}
	i := 1
	for i < len(pre) && pre[i] != 0 {
		i++
	}
	i += 1 + 4 + 8 + 1
	if i+2 > len(pre) {
		f.fail(ErrMalformed, "greeting too short or version string too long")
		return
	}
	caps := uint64(binary.LittleEndian.Uint16(pre[i:]))
	i += 2
	if i+5 <= len(pre) {
		caps |= uint64(binary.LittleEndian.Uint16(pre[i+3:])) << 16
		if caps&capMySQL == 0 && i+16 <= len(pre) {
			caps |= uint64(binary.LittleEndian.Uint32(pre[i+12:])) << 32
		}
	}
	f.srvCaps = caps
}

func (f *Framer) serverMsg(d *dir) {
	if d.size == 0 {
		f.fail(ErrMalformed, "empty server packet")
		return
	}
	pre := d.pre[:d.npre]
	if d.badSeq && pre[0] != 0xff {
		f.fail(ErrSequence, "server packet out of sequence")
		return
	}
	if pre[0] == 0xff && f.caps&capMariaProgress != 0 && len(pre) >= 3 &&
		pre[1] == 0xff && pre[2] == 0xff && f.sst > sAuth {
		return // a MariaDB progress report
	}
	switch f.sst {
	case sGreeting:
		switch pre[0] {
		case 0xff:
			f.sh.Answered++
			f.cst, f.sst = cClosed, sClosed
		default:
			f.greeting(pre)
			f.sh.Answered++
			f.cst, f.sst = cHandshake, sIdle
			f.c.seq = d.seq
		}
	case sAuth:
		switch pre[0] {
		case 0x00, 0xff:
			conn, ok := f.cur.conn, pre[0] == 0x00
			f.done()
			f.cst = cCommand
			if conn && !ok {
				f.cst, f.sst = cClosed, sClosed
			}
			if conn && ok && f.caps&(capCompress|capZstd) != 0 {
				f.fail(ErrCompressed, "compression negotiated")
			}
		case 0x01:
			if d.size == 2 && pre[1] == 0x03 {
				return // caching_sha2_password fast auth: OK or ERR follows
			}
			f.exchange(cAuthReply)
		case 0xfe, 0x02:
			f.exchange(cAuthReply)
		default:
			f.fail(ErrMalformed, "unexpected authentication packet")
		}
	case sSimple:
		switch pre[0] {
		case 0x00, 0xfe, 0xff:
			f.done()
		default:
			f.fail(ErrMalformed, "expected OK, EOF or ERR")
		}
	case sString:
		f.done()
	case sResult:
		f.result(d, pre)
	case sColDefs:
		f.defs--
		if f.defs == 0 {
			f.afterColumns()
		}
	case sColEOF:
		if !isEOF(pre, d.size) {
			f.fail(ErrMalformed, "expected EOF after column definitions")
			return
		}
		if f.cur.cursor && status(pre[3:5])&statusCursorExists != 0 {
			f.done() // rows come with COM_STMT_FETCH
			return
		}
		f.sst = sRows
	case sRows:
		switch {
		case pre[0] == 0xff:
			f.done()
		case f.terminator(pre, d.size):
			f.resultEnd(pre, d.size)
		case f.binary && pre[0] != 0x00:
			f.fail(ErrMalformed, "binary row without its 0x00 header")
		}
	case sPrepare:
		switch {
		case pre[0] == 0xff:
			f.numbered(0)
			f.done()
		case pre[0] == 0x00 && len(pre) >= 12:
			f.numbered(binary.LittleEndian.Uint32(pre[1:]))
			f.after = uint64(binary.LittleEndian.Uint16(pre[5:]))
			f.defs = uint64(binary.LittleEndian.Uint16(pre[7:]))
			f.prepBlock()
		default:
			f.fail(ErrMalformed, "expected COM_STMT_PREPARE OK or ERR")
		}
	case sPrepDefs:
		f.defs--
		if f.defs == 0 {
			if f.caps&capDeprecateEOF == 0 {
				f.sst = sPrepEOF
			} else {
				f.prepBlock()
			}
		}
	case sPrepEOF:
		if !isEOF(pre, d.size) {
			f.fail(ErrMalformed, "expected EOF after definitions")
			return
		}
		f.prepBlock()
	case sFieldList:
		if pre[0] == 0xff || f.terminator(pre, d.size) {
			f.done()
		}
	case sClosed:
		f.fail(ErrClosed, "server bytes after the session ended")
	}
}

// result frames the first packet of a (next) result.
func (f *Framer) result(d *dir, pre []byte) {
	switch pre[0] {
	case 0x00:
		st, ok := okStatus(pre)
		if !ok {
			f.fail(ErrMalformed, "short OK packet")
			return
		}
		if st&statusMoreResults == 0 {
			f.done()
		}
	case 0xff:
		f.done()
	case 0xfb:
		if f.binary {
			f.fail(ErrMalformed, "LOCAL INFILE request to a binary command")
			return
		}
		f.exchange(cInfile)
	default:
		n, k := LenEnc(pre)
		if k == 0 || n == 0 || n >= maxColumns {
			f.fail(ErrMalformed, "bad column count")
			return
		}
		if f.caps&capMariaCacheMetadata != 0 {
			if k >= len(pre) {
				f.fail(ErrMalformed, "column count without metadata-follows byte")
				return
			}
			if pre[k] == 0 {
				n = 0
			}
		}
		f.defs = n
		if n > 0 {
			f.sst = sColDefs
		} else {
			f.afterColumns()
		}
	}
}

func (f *Framer) afterColumns() {
	if f.caps&capDeprecateEOF == 0 {
		f.sst = sColEOF
	} else {
		f.sst = sRows
	}
}

// prepBlock moves to COM_STMT_PREPARE's next block of definitions, or ends
// the answer.
func (f *Framer) prepBlock() {
	if f.defs == 0 {
		f.defs, f.after = f.after, 0
	}
	if f.defs == 0 {
		f.done()
		return
	}
	f.sst = sPrepDefs
}

// terminator tells whether a packet among rows (or field definitions) is
// the EOF or OK packet that ends them. A row starting with 0xFE has an
// 8-byte length after it and fills a 0xFFFFFF packet.
func (f *Framer) terminator(pre []byte, size int64) bool {
	if pre[0] != 0xfe {
		return false
	}
	if f.caps&capDeprecateEOF != 0 {
		return size < maxPacket
	}
	return size < 9
}

// resultEnd frames the EOF or OK packet that closes a result set's rows.
func (f *Framer) resultEnd(pre []byte, size int64) {
	var st uint16
	if f.caps&capDeprecateEOF != 0 {
		var ok bool
		if st, ok = okStatus(pre); !ok {
			f.fail(ErrMalformed, "short OK packet after rows")
			return
		}
	} else {
		if size < 5 {
			f.fail(ErrMalformed, "short EOF packet")
			return
		}
		st = status(pre[3:5])
	}
	if st&statusMoreResults != 0 && f.sst != sFieldList && f.cur.kind != kFetch {
		f.sst = sResult
		return
	}
	f.done()
}

// isEOF tells whether a packet is an EOF packet (with its status).
func isEOF(pre []byte, size int64) bool {
	return pre[0] == 0xfe && size >= 5 && size < 9
}

func status(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }

// okStatus reads an OK packet's status flags: after the header, the
// affected rows and the last insert id (length-encoded).
func okStatus(pre []byte) (uint16, bool) {
	i := 1
	for range 2 {
		_, k := LenEnc(pre[i:])
		if k == 0 {
			return 0, false
		}
		i += k
	}
	if i+2 > len(pre) {
		return 0, false
	}
	return status(pre[i:]), true
}

// LenEnc reads a length-encoded integer and returns it and its size, 0 if
// it is truncated or not an integer (0xFB is NULL, 0xFF an error header).
func LenEnc(b []byte) (uint64, int) {
	if len(b) == 0 {
		return 0, 0
	}
	var k int
	switch c := b[0]; {
	case c < 0xfb:
		return uint64(c), 1
	case c == 0xfc:
		k = 2
	case c == 0xfd:
		k = 3
	case c == 0xfe:
		k = 8
	default:
		return 0, 0
	}
	if len(b) < 1+k {
		return 0, 0
	}
	var n uint64
	for i := k; i >= 1; i-- {
		n = n<<8 | uint64(b[i])
	}
	return n, 1 + k
}
