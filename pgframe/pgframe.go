// Package pgframe follows both directions of one PostgreSQL session
// (frontend/backend protocol 3.0 and 3.2) and counts answer units, so the
// replayer can tell when the target has answered what production had
// answered before the client went on, whatever the answers' sizes.
//
// It owns message framing (the untyped startup-phase packets, the typed
// messages after them, the one-byte answers to SSLRequest and
// GSSENCRequest) and a model of how the server consumes the client's
// messages, which pairs each answer with its request. It does not look
// inside messages beyond the fields framing needs (lengths, the type byte,
// the startup code, the authentication code) and never stores a payload:
// a 64 MiB DataRow or CopyData is counted down, not buffered.
//
// # Answer units
//
// A unit is one client message that the server answers. Each is counted in
// Requests once the message is complete and in Answers once its answer is:
//
//   - SSLRequest, GSSENCRequest: at the one-byte 'N' (an 'S' or 'G', which
//     starts TLS or GSSAPI encryption, ends framing: ErrEncrypted).
//   - StartupMessage and each PasswordMessage, SASLInitialResponse,
//     SASLResponse, GSSResponse ('p'): at the next Authentication request
//     that asks the client for more (cleartext, MD5, GSS, GSS continue,
//     SSPI, SASL, SASL continue) or at ReadyForQuery. AuthenticationOk,
//     SASLFinal, ParameterStatus, BackendKeyData and
//     NegotiateProtocolVersion are part of the answer.
//   - Query, FunctionCall: at ReadyForQuery (one per Query, however many
//     statements it holds), or at CopyInResponse when the query starts a
//     COPY FROM STDIN: the client waits for that before it sends data.
//   - Parse, Bind, Close: at ParseComplete, BindComplete, CloseComplete.
//   - Describe: at RowDescription or NoData (after ParameterDescription for
//     a statement).
//   - Execute: at CommandComplete, EmptyQueryResponse, PortalSuspended, or
//     CopyInResponse (COPY FROM STDIN); a COPY TO STDOUT completes at the
//     CommandComplete after its CopyDone.
//   - Sync: at ReadyForQuery.
//   - CopyDone, CopyFail that end a COPY FROM STDIN: at the CommandComplete
//     (extended protocol) or at the next CopyInResponse or ReadyForQuery
//     (simple Query).
//   - An ErrorResponse completes the extended-protocol message it answers
//     and every message the server then discards until Sync, as soon as
//     both the error and the message have been seen; Sync still completes
//     at its ReadyForQuery. Within a Query, FunctionCall or Sync an
//     ErrorResponse is part of the answer (ReadyForQuery follows), and in
//     the startup phase it completes the pending request (the server
//     closes the connection).
//   - Messages the server skips without an answer still complete, when the
//     stream shows they are skipped: a Sync during COPY FROM STDIN (the
//     server ignores it; libpq sends one after Execute and another after
//     CopyDone), a CopyDone or CopyFail outside COPY.
//
// Not units: Flush, Terminate, CopyData, CancelRequest (a separate
// connection with no answer) and the server's asynchronous NoticeResponse,
// NotificationResponse and ParameterStatus.
//
// # What goes Err
//
// Framing ends (Err, and Requests and Answers stop changing) on bytes that
// are not this protocol (ErrMalformed: an unknown message type or startup
// code, a length below 4, a fixed-size message of another size), on a
// message longer than PostgreSQL's own limits (ErrTooLong), once the
// session is encrypted (ErrEncrypted), on what the framer does not follow
// (ErrUnsupported: CopyBothResponse, i.e. streaming replication, and the
// Kerberos V5 and SCM credential authentications), on a server message
// that cannot answer the pending request (ErrSequence: lost bytes, or a
// protocol the model does not know), and when more than MaxPending client
// messages wait for answers or more than MaxEarly server answers arrive
// ahead of their requests (ErrOverflow). The replayer then falls back to
// size and silence.
//
// pgx's pgproto3 is the reference for what a message is; the tests check
// the framer against it. pgframe is a leaf: it imports only the standard
// library and internal/framekit (the framers' shared lock and counts),
// which does too.
package pgframe

import (
	"encoding/binary"
	"errors"
)

// Limits that keep a Framer's memory bounded.
const (
	// MaxMessage is the longest message body accepted: PostgreSQL's
	// PQ_LARGE_MESSAGE_LIMIT (MaxAllocSize-1); neither side can send more.
	MaxMessage = 0x3fffffff - 1
	// MaxStartup is the longest startup-phase packet body
	// (MAX_STARTUP_PACKET_LENGTH).
	MaxStartup = 10000
	// MaxPending bounds the client messages counted in Requests whose
	// answers have not completed (a pipelined batch).
	MaxPending = 1 << 16
	// MaxEarly bounds the server answers held because their requests have
	// not been shown to Client yet (the target answering before Client
	// returns).
	MaxEarly = 1 << 10
)

// Why a Framer stopped following the session, as wrapped by Err.
var (
	ErrMalformed   = errors.New("pgframe: not PostgreSQL protocol 3 framing")
	ErrTooLong     = errors.New("pgframe: message longer than PostgreSQL's limit")
	ErrEncrypted   = errors.New("pgframe: session switched to TLS or GSSAPI encryption")
	ErrUnsupported = errors.New("pgframe: protocol feature not followed")
	ErrSequence    = errors.New("pgframe: server message does not answer the pending request")
	ErrOverflow    = errors.New("pgframe: too many messages waiting for their answers")
)

// Startup-phase codes (the four bytes after the length).
const (
	codeCancel  = 80877102 // 1234<<16 | 5678
	codeSSL     = 80877103
	codeGSSENC  = 80877104
	protoMajor3 = 3 << 16
)

// Detect reports whether first, the first bytes a client sent (maybe only a
// few), can start a PostgreSQL v3 session: a length the server accepts
// followed by the SSLRequest, GSSENCRequest or CancelRequest code or
// protocol version 3.x. A prefix that could still become one detects true;
// no byte at all detects false.
func Detect(first []byte) bool {
	if len(first) == 0 {
		return false
	}
	// The length field: the range its known bytes leave open must meet
	// [8, 4+MaxStartup].
	var lo, hi [4]byte
	for i := range 4 {
		if i < len(first) {
			lo[i], hi[i] = first[i], first[i]
		} else {
			lo[i], hi[i] = 0, 0xff
		}
	}
	minLen, maxLen := binary.BigEndian.Uint32(lo[:]), binary.BigEndian.Uint32(hi[:])
	if maxLen < 8 || minLen > 4+MaxStartup {
		return false
	}
	if len(first) <= 4 {
		return true
	}
	code := first[4:min(len(first), 8)]
	for _, want := range [...]uint32{codeSSL, codeGSSENC, codeCancel, protoMajor3} {
		var w [4]byte
		binary.BigEndian.PutUint32(w[:], want)
		n := len(code)
		if want == protoMajor3 {
			n = min(n, 2) // any minor version
		}
		if string(code[:n]) != string(w[:n]) {
			continue
		}
		if want != codeCancel {
			return true
		}
		l := binary.BigEndian.Uint32(first[:4])
		return l >= 16 && l <= 4+264
	}
	return false
}
