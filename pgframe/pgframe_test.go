package pgframe

import (
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Messages for the table tests.
var (
	sslReq   = enc(&pgproto3.SSLRequest{})
	gssReq   = enc(&pgproto3.GSSEncRequest{})
	startup  = enc(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "u"}})
	startup2 = enc(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: map[string]string{"user": "u"}})
	cancel   = enc(&pgproto3.CancelRequest{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}})
	pass     = enc(&pgproto3.PasswordMessage{Password: "pw"})
	query    = enc(&pgproto3.Query{String: "select 1; select 2"})
	parse    = enc(&pgproto3.Parse{Query: "select $1"})
	bind     = enc(&pgproto3.Bind{Parameters: [][]byte{[]byte("1")}})
	descS    = enc(&pgproto3.Describe{ObjectType: 'S'})
	descP    = enc(&pgproto3.Describe{ObjectType: 'P'})
	execute  = enc(&pgproto3.Execute{})
	closeS   = enc(&pgproto3.Close{ObjectType: 'S'})
	sync_    = enc(&pgproto3.Sync{})
	flush    = enc(&pgproto3.Flush{})
	term     = enc(&pgproto3.Terminate{})
	fcall    = enc(&pgproto3.FunctionCall{Function: 1598})
	cdata    = enc(&pgproto3.CopyData{Data: []byte("1\tx\n")})
	cdone    = enc(&pgproto3.CopyDone{})
	cfail    = enc(&pgproto3.CopyFail{Message: "stop"})

	authOK   = enc(&pgproto3.AuthenticationOk{})
	authPW   = enc(&pgproto3.AuthenticationCleartextPassword{})
	authMD5  = enc(&pgproto3.AuthenticationMD5Password{})
	authSASL = enc(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}})
	authCont = enc(&pgproto3.AuthenticationSASLContinue{Data: []byte("r=x")})
	authFin  = enc(&pgproto3.AuthenticationSASLFinal{Data: []byte("v=x")})
	pstatus  = enc(&pgproto3.ParameterStatus{Name: "a", Value: "b"})
	keyData  = enc(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: make([]byte, 4)})
	ready    = enc(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	notice   = enc(&pgproto3.NoticeResponse{Severity: "NOTICE", Message: "n"})
	notify   = enc(&pgproto3.NotificationResponse{Channel: "c", Payload: "p"})
	parseOK  = enc(&pgproto3.ParseComplete{})
	bindOK   = enc(&pgproto3.BindComplete{})
	closeOK  = enc(&pgproto3.CloseComplete{})
	params   = enc(&pgproto3.ParameterDescription{ParameterOIDs: []uint32{23}})
	noData   = enc(&pgproto3.NoData{})
	dataRow  = enc(&pgproto3.DataRow{Values: [][]byte{[]byte("1")}})
	cmdOK    = enc(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
	emptyQ   = enc(&pgproto3.EmptyQueryResponse{})
	suspend  = enc(&pgproto3.PortalSuspended{})
	errR     = errResp()
	copyIn   = enc(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0}})
	copyOut  = enc(&pgproto3.CopyOutResponse{ColumnFormatCodes: []uint16{0}})
	fresult  = enc(&pgproto3.FunctionCallResponse{Result: []byte("1")})
	negot    = enc(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: []string{"_pq_.x"}})
)

var loggedIn = []turn{{false, cat(startup), 1, 0}, {true, cat(authOK, pstatus, keyData, ready), 1, 1}}

// turn is one direction's bytes and the counts expected after them.
type turn struct {
	server   bool
	data     []byte
	req, ans int
}

func c(data []byte, req, ans int) turn { return turn{false, data, req, ans} }
func s(data []byte, req, ans int) turn { return turn{true, data, req, ans} }

func TestUnits(t *testing.T) {
	tests := []struct {
		name  string
		turns []turn
	}{
		{"SSLRequest refused, trust", []turn{c(sslReq, 1, 0), s([]byte("N"), 1, 1), c(startup, 2, 1), s(cat(authOK, pstatus, pstatus, keyData), 2, 1), s(ready, 2, 2)}},
		{"GSSENCRequest and SSLRequest refused", []turn{c(gssReq, 1, 0), s([]byte("N"), 1, 1), c(sslReq, 2, 1), s([]byte("N"), 2, 2), c(startup2, 3, 2), s(cat(negot, authOK, keyData, ready), 3, 3)}},
		{"cleartext password", []turn{c(startup, 1, 0), s(authPW, 1, 1), c(pass, 2, 1), s(cat(authOK, pstatus, keyData), 2, 1), s(ready, 2, 2)}},
		{"md5 password", []turn{c(startup, 1, 0), s(authMD5, 1, 1), c(pass, 2, 1), s(cat(authOK, keyData, ready), 2, 2)}},
		{"SCRAM", []turn{c(startup, 1, 0), s(authSASL, 1, 1), c(pass, 2, 1), s(authCont, 2, 2), c(pass, 3, 2), s(cat(authFin, authOK), 3, 2), s(cat(keyData, ready), 3, 3)}},
		{"password refused", []turn{c(startup, 1, 0), s(authPW, 1, 1), c(pass, 2, 1), s(errR, 2, 2)}},
		{"rejected before authentication", []turn{c(startup, 1, 0), s(errR, 1, 1)}},
		{"CancelRequest has no answer", []turn{c(cancel, 0, 0)}},
		{"multi-statement Query ends at one ReadyForQuery", append(loggedIn, c(query, 2, 1), s(cat(rowDesc, dataRow, cmdOK, rowDesc, cmdOK), 2, 1), s(cat(errR, notice), 2, 1), s(ready, 2, 2))},
		{"empty Query", append(loggedIn, c(query, 2, 1), s(cat(emptyQ, ready), 2, 2))},
		{"async messages are not units", append(loggedIn, s(cat(notice, notify, pstatus), 1, 1), c(query, 2, 1), s(cat(notify, rowDesc, pstatus, cmdOK, notice), 2, 1), s(ready, 2, 2), s(notify, 2, 2))},
		{"extended, one unit per message", append(loggedIn, c(cat(parse, descS, bind, descP, execute, closeS, sync_), 8, 1),
			s(parseOK, 8, 2), s(params, 8, 2), s(rowDesc, 8, 3), s(bindOK, 8, 4), s(noData, 8, 5), s(cmdOK, 8, 6), s(closeOK, 8, 7), s(ready, 8, 8))},
		{"Flush without Sync", append(loggedIn, c(cat(parse, bind, execute, flush), 4, 1), s(cat(parseOK, bindOK, dataRow, suspend), 4, 4), c(cat(execute, flush), 5, 4), s(cmdOK, 5, 5), c(sync_, 6, 5), s(ready, 6, 6))},
		{"error discards until Sync", append(loggedIn, c(cat(parse, bind, descP, execute, sync_, parse, sync_), 8, 1), s(errR, 8, 5), s(ready, 8, 6), s(cat(parseOK, ready), 8, 8))},
		{"error, then messages sent before it was seen", append(loggedIn, c(cat(parse, bind, flush), 3, 1), s(errR, 3, 3), c(cat(execute, descP), 5, 5), c(sync_, 6, 5), s(ready, 6, 6))},
		{"error answer to Sync (COMMIT failed)", append(loggedIn, c(cat(bind, execute, sync_), 4, 1), s(cat(bindOK, cmdOK, errR), 4, 3), s(ready, 4, 4))},
		{"pipelined batches", append(loggedIn, c(cat(parse, bind, execute, sync_, bind, execute, sync_, bind, execute, sync_), 11, 1),
			s(cat(parseOK, bindOK, cmdOK, ready, bindOK, errR), 11, 7), s(cat(ready, bindOK, cmdOK, ready), 11, 11))},
		{"COPY FROM STDIN, simple", append(loggedIn, c(query, 2, 1), s(copyIn, 2, 2), c(cat(cdata, cdata, cdone), 3, 2), s(cmdOK, 3, 2), s(ready, 3, 3))},
		{"COPY FROM STDIN then SELECT in one Query", append(loggedIn, c(query, 2, 1), s(copyIn, 2, 2), c(cat(cdata, cdone), 3, 2), s(cat(cmdOK, rowDesc, dataRow, cmdOK, ready), 3, 3))},
		{"two COPY FROM STDIN in one Query", append(loggedIn, c(query, 2, 1), s(copyIn, 2, 2), c(cdone, 3, 2), s(cat(cmdOK, copyIn), 3, 3), c(cdone, 4, 3), s(cat(cmdOK, ready), 4, 4))},
		{"COPY FROM STDIN failed by the server mid-stream", append(loggedIn, c(query, 2, 1), s(copyIn, 2, 2), c(cdata, 2, 2), s(cat(errR, ready), 2, 2), c(cat(cdata, cdone), 3, 3))},
		{"COPY FROM STDIN failed at CopyDone", append(loggedIn, c(query, 2, 1), s(copyIn, 2, 2), c(cdone, 3, 2), s(errR, 3, 2), s(ready, 3, 3))},
		{"CopyFail, simple", append(loggedIn, c(query, 2, 1), s(copyIn, 2, 2), c(cat(cdata, cfail), 3, 2), s(cat(errR, ready), 3, 3))},
		{"COPY TO STDOUT, simple", append(loggedIn, c(query, 2, 1), s(cat(copyOut, cdata, cdata, cdone, cmdOK), 2, 1), s(ready, 2, 2))},
		// libpq: Sync after Execute (ignored during COPY), another after CopyDone.
		{"COPY FROM STDIN, extended", append(loggedIn, c(cat(parse, bind, descP, execute, sync_), 6, 1), s(cat(parseOK, bindOK, noData), 6, 4), s(copyIn, 6, 6),
			c(cat(cdata, cdone, sync_), 8, 6), s(cmdOK, 8, 7), s(ready, 8, 8))},
		{"COPY FROM STDIN, extended, failed", append(loggedIn, c(cat(bind, execute, sync_), 4, 1), s(cat(bindOK, copyIn), 4, 4), c(cdata, 4, 4), s(errR, 4, 4), c(cat(cdata, cdone, sync_), 6, 5), s(ready, 6, 6))},
		{"CopyFail, extended", append(loggedIn, c(cat(bind, execute, sync_), 4, 1), s(cat(bindOK, copyIn), 4, 4), c(cat(cfail, sync_), 6, 4), s(errR, 6, 5), s(ready, 6, 6))},
		{"COPY TO STDOUT, extended", append(loggedIn, c(cat(bind, execute, sync_), 4, 1), s(cat(bindOK, copyOut, cdata, cdone), 4, 2), s(cmdOK, 4, 3), s(ready, 4, 4))},
		{"CopyDone and CopyFail outside COPY are skipped", append(loggedIn, c(cat(cdata, cdone, cfail), 3, 3), c(query, 4, 3), s(ready, 4, 4))},
		{"FunctionCall", append(loggedIn, c(fcall, 2, 1), s(fresult, 2, 1), s(ready, 2, 2), c(fcall, 3, 2), s(cat(errR, ready), 3, 3))},
		{"Terminate has no answer", append(loggedIn, c(term, 1, 1))},
		{"server answers before Client returns", []turn{s([]byte("N"), 0, 0), c(sslReq, 1, 1), s(cat(authOK, ready), 1, 1), c(startup, 2, 2), s(cat(parseOK, errR, ready), 2, 2), c(cat(parse, bind, sync_), 5, 5)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, split := range []int{0, 1, 2, 3, 5, 7} {
				f := New()
				for i, tu := range tc.turns {
					feed := f.Client
					if tu.server {
						feed = f.Server
					}
					if split == 0 {
						feed(tu.data)
					} else { // cut every split bytes: inside every header and length
						for p := tu.data; len(p) > 0; p = p[min(len(p), split):] {
							feed(p[:min(len(p), split)])
						}
					}
					if f.Err() != nil || f.Requests() != tu.req || f.Answers() != tu.ans {
						t.Fatalf("split %d, after turn %d: requests %d answers %d err %v; want %d %d", split, i, f.Requests(), f.Answers(), f.Err(), tu.req, tu.ans)
					}
				}
			}
		})
	}
}

func TestErr(t *testing.T) {
	tests := []struct {
		name     string
		cli, srv []byte
		want     error
	}{
		{"SSL accepted", sslReq, []byte("S"), ErrEncrypted},
		{"GSS encryption accepted", gssReq, []byte("G"), ErrEncrypted},
		{"direct TLS", []byte{0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc}, nil, ErrMalformed},
		{"protocol 2.0", []byte{0, 0, 0, 9, 0, 2, 0, 0, 0}, nil, ErrUnsupported},
		{"startup packet too long", []byte{0, 0, 0x27, 0x15, 0, 3, 0, 0}, nil, ErrMalformed},
		{"bytes after CancelRequest", cat(cancel, sync_), nil, ErrMalformed},
		{"unknown client type", cat(startup, []byte{'x', 0, 0, 0, 4}), nil, ErrMalformed},
		{"length below 4", cat(startup, []byte{'Q', 0, 0, 0, 3}), nil, ErrMalformed},
		{"Sync with a body", cat(startup, []byte{'S', 0, 0, 0, 5, 0}), nil, ErrMalformed},
		{"message over 1 GiB", cat(startup, []byte{'d', 0x40, 0, 0, 4}), nil, ErrTooLong},
		{"ReadyForQuery of 2 bytes", startup, cat(authOK, []byte{'Z', 0, 0, 0, 6, 'I', 'I'}), ErrMalformed},
		{"unknown server type", startup, cat(authOK, []byte{'?', 0, 0, 0, 4}), ErrMalformed},
		{"garbage before the startup answer", startup, []byte("HTTP/1.1 400"), ErrMalformed},
		{"GSS authentication", startup, []byte{'R', 0, 0, 0, 8, 0, 0, 0, 7}, ErrUnsupported},
		{"unknown authentication", startup, []byte{'R', 0, 0, 0, 8, 0, 0, 0, 99}, ErrMalformed},
		{"CopyBothResponse", cat(startup, query), cat(authOK, ready, enc(&pgproto3.CopyBothResponse{})), ErrUnsupported},
		{"ParseComplete answering a Query", cat(startup, query), cat(authOK, ready, parseOK), ErrSequence},
		{"RowDescription answering Parse", cat(startup, parse), cat(authOK, ready, rowDesc), ErrSequence},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := New()
			f.Client(tc.cli)
			f.Server(tc.srv)
			if !errors.Is(f.Err(), tc.want) {
				t.Fatalf("Err %v, want %v", f.Err(), tc.want)
			}
			req, ans := f.Requests(), f.Answers()
			f.Client(cat(query, sync_))
			f.Server(cat(ready, ready))
			if f.Requests() != req || f.Answers() != ans {
				t.Fatal("counts moved after Err")
			}
		})
	}
}

func TestOverflow(t *testing.T) {
	f := New()
	f.Client(startup)
	f.Server(authOK)
	for range MaxEarly + 2 { // the first one answers the StartupMessage
		f.Server(ready)
	}
	if !errors.Is(f.Err(), ErrOverflow) {
		t.Fatalf("Err %v after %d answers ahead of their requests", f.Err(), MaxEarly+1)
	}
	f = New()
	f.Client(startup)
	f.Server(cat(authOK, ready))
	for range MaxPending + 1 { // the first one is being answered, not pending
		f.Client(sync_)
	}
	if f.Err() != nil || f.Requests() != MaxPending+2 {
		t.Fatal(f.Err(), f.Requests())
	}
	f.Client(sync_)
	if !errors.Is(f.Err(), ErrOverflow) {
		t.Fatalf("Err %v with %d requests pending", f.Err(), MaxPending+1)
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		want bool
	}{
		{sslReq, true}, {gssReq, true}, {startup, true}, {startup2, true}, {cancel, true},
		{startup[:1], true}, {startup[:3], true}, {startup[:6], true}, {sslReq[:5], true},
		{nil, false},
		{[]byte{0, 0, 0, 8, 0, 2, 0, 0}, false},          // protocol 2.0
		{[]byte{0, 0, 0, 4, 0, 3, 0, 0}, false},          // too short a packet
		{[]byte{0, 1, 0, 0, 0, 3, 0, 0}, false},          // too long a packet
		{[]byte{0, 0, 0, 8, 4, 0xd2, 0x16, 0x2e}, false}, // a CancelRequest of 8 bytes
		{[]byte("GET / HTTP/1.1\r\n"), false},
		{[]byte{0x16, 3, 1, 0, 0xa5}, false},
		{[]byte{1}, false},
	} {
		if got := Detect(tc.b); got != tc.want {
			t.Errorf("Detect(%x) = %v, want %v", tc.b, got, tc.want)
		}
	}
}

// TestConcurrent feeds Client and Server from two goroutines, the server's
// goroutine answering each request as soon as Client has returned (and
// sometimes before), while a third reads the counters.
func TestConcurrent(t *testing.T) {
	f := New()
	// The server may run up to ahead batches in front of the client: 3
	// answer units each, 900 in all, below the framer's bound of 1024
	// (it used to run up to n/2 batches ahead, 1500 units, and failed
	// whenever the client goroutine fell that far behind).
	const n, ahead = 1000, 300
	sent := make(chan struct{}, n+1)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		f.Client(startup)
		sent <- struct{}{}
		for range n {
			f.Client(cat(bind, execute, sync_))
			sent <- struct{}{}
		}
	}()
	go func() {
		defer wg.Done()
		<-sent
		f.Server(cat(authOK, ready))
		for i := range n {
			if i >= ahead {
				<-sent // batch i-ahead was sent
			}
			f.Server(cat(bindOK, dataRow, cmdOK, ready))
		}
	}()
	go func() {
		defer wg.Done()
		for f.Answers() < 3*n+1 && f.Err() == nil {
			if f.Answers() > 3*n+1 {
				t.Error("too many answers")
			}
		}
	}()
	wg.Wait()
	if f.Err() != nil || f.Requests() != 3*n+1 || f.Answers() != 3*n+1 {
		t.Fatal(f.Requests(), f.Answers(), f.Err())
	}
}
