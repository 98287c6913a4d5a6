package netnstests

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// pgBin holds Debian's PostgreSQL 15 server programs (package postgresql).
const pgBin = "/usr/lib/postgresql/15/bin"

// pgServer is a PostgreSQL server on a lab host: its own cluster in the
// lab directory, its log (log_statement=all, log_connections) on stderr.
type pgServer struct {
	proc *lab.Proc
	host *lab.Host
	dir  string // data directory, also the Unix socket directory
	addr netip.AddrPort
}

// pgHBA lets the lab network in without a password, except two users: one
// with SCRAM, whose exchange no replay can repeat (the server's nonce is
// fresh on every connection), and one with a cleartext password, an
// authentication exchange a replay can repeat.
const pgHBA = `local all all trust
host all scramuser 198.18.0.0/15 scram-sha-256
host all pwuser 198.18.0.0/15 password
host all all 198.18.0.0/15 trust
`

// startPostgres makes a fresh cluster (initdb) in the lab directory and
// runs postgres on it as the postgres user (it refuses to run as root),
// through runuser, so the lab records the PID and stops it.
func startPostgres(t *testing.T, h *lab.Host, listen netip.AddrPort) *pgServer {
	t.Helper()
	dir := filepath.Join(h.Lab().Dir(), "pg-"+h.Label())
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	mustExec(t, h, "runuser", "-u", "postgres", "--", pgBin+"/initdb", "-D", dir, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	// initdb made pg_hba.conf the postgres user's; writing keeps that.
	if err := os.WriteFile(filepath.Join(dir, "pg_hba.conf"), []byte(pgHBA), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServerProc(t, h, listen, "runuser", "-u", "postgres", "--", pgBin+"/postgres", "-D", dir, "-k", dir,
		"-c", "listen_addresses="+listen.Addr().String(), "-p", fmt.Sprint(listen.Port()),
		"-c", "log_statement=all", "-c", "log_connections=on", "-c", "log_line_prefix=%m [%r] %p ",
		"-c", "ssl=off", "-c", "autovacuum=off", "-c", "max_connections=40",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	return &pgServer{proc: p, host: h, dir: dir, addr: listen}
}

// sql runs statements as postgres over the server's Unix socket: set-up
// that is no part of any capture.
func (s *pgServer) sql(t *testing.T, stmts string) {
	t.Helper()
	runWithInput(t, s.host, stmts, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", s.dir, "-U", "postgres", "-d", "postgres")
}

// pgLogLine is one line of the log_line_prefix "%m [%r] %p ": time, the
// client's host(port) (empty for the server's own processes), pid, level.
var pgLogLine = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[([0-9.]+)\((\d+)\)\] \d+ ([A-Z]+):  (.*)$`)

// pgOtherLine is a log line of a process without a client.
var pgOtherLine = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[[^\]]*\] \d+ `)

// statements returns, from the server's log since offset from, what it
// logged for each client address, in order: connections and their
// authentication, every statement (log_statement=all: "statement: ..."
// for a Query, "execute <name>: ..." with the bind parameters as DETAIL
// for the extended protocol), errors. The time and pid of each line are
// left out, and the data directory (in "connection authenticated" lines)
// is written $PGDATA; nothing else is normalised: bind parameters, pgbench's
// random ids and amounts among them, are the captured bytes on replay. A
// message's further lines (a statement over several lines) stay with it.
func (s *pgServer) statements(t *testing.T, from int) map[netip.AddrPort][]string {
	t.Helper()
	log := strings.ReplaceAll(s.proc.Log()[from:], s.dir, "$PGDATA")
	out := map[netip.AddrPort][]string{}
	var last *string
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if g := pgLogLine.FindStringSubmatch(l); g != nil {
			ap, err := netip.ParseAddrPort(g[1] + ":" + g[2])
			if err != nil {
				t.Fatalf("postgres log line %q: %v", l, err)
			}
			out[ap] = append(out[ap], g[3]+": "+g[4])
			last = &out[ap][len(out[ap])-1]
			continue
		}
		if pgOtherLine.MatchString(l) {
			last = nil
			continue
		}
		if last != nil {
			*last += "\n" + l
		}
	}
	return out
}

// unframedTurns is what stackcopy's -v log says of turns that framing did
// not end, for a failure message.
func unframedTurns(log string) string {
	var b strings.Builder
	for l := range strings.Lines(log) {
		if strings.Contains(l, "turn-wait") || strings.Contains(l, "framing") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// psqlScript is one psql session: simple queries, a query of several
// statements in one Query message (\;), a transaction, COPY FROM STDIN and
// COPY TO STDOUT, a statement over several lines, a table whose size
// differs on the target, generated ids, and server-side pauses.
const psqlScript = `SELECT 1 AS one;
SELECT now(), random(), pg_backend_pid();
SELECT count(*) FROM items \; SELECT max(qty) FROM items \; SELECT version();
BEGIN;
UPDATE items SET qty = qty + 1 WHERE id = 1;
INSERT INTO items (name, qty) VALUES ('fresh', 7) RETURNING id;
SELECT name, qty FROM items WHERE id = 1;
COMMIT;
SELECT pg_sleep(0.05);
COPY items (name, qty) FROM STDIN;
copied-a	1
copied-b	2
copied-c	3
\.
SELECT id, name, qty
  FROM items
 ORDER BY id;
COPY items TO STDOUT;
SELECT pg_sleep(0.05);
BEGIN;
SELECT abalance FROM pgbench_accounts WHERE aid = 42;
ROLLBACK;
SELECT gen_random_uuid(), txid_current();
`

// TestReplayPostgres: real PostgreSQL 15 clients — psql running a script
// of simple queries, a multi-statement query, transactions and COPY in
// both directions; psql logging in with a cleartext password; pgbench's
// tpcb-like transactions (concurrent updates of the same pgbench_branches
// row) on 4 connections over the extended protocol and with prepared
// statements; paced psql sessions — against a real postgres are captured
// and replayed at the captured pace to a fresh cluster initialised the same
// way, whose items table is 250 times as big and whose now(), random(),
// ids and uuids differ. The target's own log (log_statement=all,
// log_connections) holds, for every original client address and port,
// exactly the connections, statements and bind parameters the online
// server logged, once and in order; every turn ended by PostgreSQL
// framing (SSLRequest refused with N included), none after --turn-wait.
//
// A SCRAM login is captured and replayed on its own: SCRAM cannot succeed
// on replay (the client's proof covers the server's nonce, which a new
// server draws anew), so the target must refuse it at the exchange's last
// message, framed, and run none of its statements.
func TestReplayPostgres(t *testing.T) {
	l := lab.NewT(t)
	needPrograms(t, pgBin+"/postgres", pgBin+"/initdb", "runuser", "psql", "pgbench")
	c := newCaptureLab(t, l, 1)
	online := startPostgres(t, c.online, netip.AddrPortFrom(onlineAddr, 5432))
	const roles = "CREATE ROLE pwuser LOGIN PASSWORD 'pw-secret'; CREATE ROLE scramuser LOGIN PASSWORD 'scram-secret';" +
		" GRANT pg_read_all_data TO pwuser, scramuser;\n"
	online.sql(t, roles+"CREATE TABLE items (id serial PRIMARY KEY, name text, qty int);"+
		" INSERT INTO items (name, qty) SELECT 'item ' || g, g FROM generate_series(1, 20) g;\n")
	mustExec(t, c.online, "pgbench", "-i", "-q", "-s", "1", "-h", online.dir, "-U", "postgres", "postgres")

	srv := []string{"-h", onlineAddr.String(), "-p", "5432"}
	psql := func(user string, args ...string) []string {
		return append(append([]string{"psql", "-X", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", "postgres"}, srv...), args...)
	}
	pgbench := func(mode string) []string {
		return append([]string{"pgbench", "-U", "postgres", "-M", mode, "-c", "4", "-j", "2", "-t", "100"}, append(srv, "postgres")...)
	}
	before := len(online.proc.Log())
	pc := captureTraffic(t, c, 5432, func() {
		runWithInput(t, c.client, psqlScript, psql("postgres")...)
		mustExec(t, c.client, append([]string{"env", "PGPASSWORD=pw-secret"}, psql("pwuser", "-c", "SELECT current_user, count(*) FROM items")...)...)
		mustExec(t, c.client, pgbench("extended")...)
		for i := range 4 {
			mustExec(t, c.client, psql("postgres", "-c", fmt.Sprintf("SELECT %d, pg_sleep(0.05), random()", i), "-c", "SELECT now()")...)
			time.Sleep(100 * time.Millisecond)
		}
		mustExec(t, c.client, pgbench("prepared")...)
	})
	captured := online.statements(t, before)
	// psql, 1 with a password, pgbench's 2 × (1 + 4), 4 paced psql.
	if pc.sessions != 16 || len(captured) != pc.sessions || total(captured) < 2*4*100*7 {
		t.Fatalf("online postgres logged %d clients, %d lines for %d captured sessions (want 16): the capture did not run as planned",
			len(captured), total(captured), pc.sessions)
	}
	checkPostgresCapture(t, pc, captured)

	r := newReplayLab(t, l)
	target := startPostgres(t, r.target, netip.AddrPortFrom(targetAddr, 5432))
	// Initialised as production was, but items is 250 times as big, with
	// longer names and ids far on: the SELECT and COPY TO answer more.
	target.sql(t, roles+"CREATE TABLE items (id serial PRIMARY KEY, name text, qty int);"+
		" INSERT INTO items (name, qty) SELECT repeat('target item ', 5) || g, g * 1000 FROM generate_series(1, 5000) g;"+
		" SELECT setval('items_id_seq', 100000);\n")
	mustExec(t, r.target, "pgbench", "-i", "-q", "-s", "1", "-h", target.dir, "-U", "postgres", "postgres")
	tbefore := len(target.proc.Log())
	res := replayAtPace(t, r, pc, 5432, "postgres")
	if t.Failed() {
		t.Logf("stackcopy -v on unframed turns:\n%s", unframedTurns(res.stderr))
	}
	// Statements are logged as they start, before their answers: by the
	// time stackcopy has every answer, the target has logged them. A
	// bounded wait all the same.
	var got map[netip.AddrPort][]string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got = target.statements(t, tbefore)
		if total(got) >= total(captured) || time.Now().After(deadline) {
			break
		}
	}
	comparePostgresLogs(t, got, captured)
	t.Logf("postgres: the target logged %d lines (connections, statements, bind parameters) for %d clients, as production did",
		total(got), len(got))

	// SCRAM, captured and replayed on its own. The target's nonce is not
	// production's, so the captured proof cannot match: the target must
	// refuse the exchange's last message, and the replay of the session
	// stops there. Every answer up to the refusal is framed (SSLRequest,
	// StartupMessage, SASLInitialResponse, SASLResponse: its
	// ErrorResponse); the Query's turn ends by the target's close.
	before = len(online.proc.Log())
	scram := captureTraffic(t, c, 5432, func() {
		mustExec(t, c.client, append([]string{"env", "PGPASSWORD=scram-secret"}, psql("scramuser", "-c", "SELECT current_user")...)...)
	})
	scramOnline := online.statements(t, before)
	if len(scramOnline) != 1 || !slices.ContainsFunc(slices.Concat(slices.Collect(maps.Values(scramOnline))...),
		func(l string) bool { return strings.Contains(l, "method=scram-sha-256") }) {
		t.Fatalf("online postgres did not log one SCRAM login: %q", scramOnline)
	}
	tbefore = len(target.proc.Log())
	sres := runStackcopy(t, r.replay, time.Minute, "-x", fmt.Sprintf("5432-%v", target.addr), "-i", scram.pcap, "--speed", "1", "-v")
	st := sres.stats.Replay
	sp := st.Protocols["postgres"]
	if sres.exit != 3 || st.Sessions != 1 || st.TargetResets != 1 {
		t.Errorf("SCRAM replay: exit %d, %d sessions, %d target-reset; want exit 3, the one session reset by the target", sres.exit, st.Sessions, st.TargetResets)
	}
	if sp.Sessions != 1 || sp.Turns != 5 || sp.Framed != 4 || sp.ByClose != 1 || sp.TurnWait != 0 {
		t.Errorf("SCRAM replay turns %+v: want 5, 4 framed up to the refusal, the Query's ended by the close", sp)
	}
	var client netip.AddrPort
	for cl := range scramOnline {
		client = cl
	}
	want := []string{fmt.Sprintf("LOG: connection received: host=%v port=%d", client.Addr(), client.Port()),
		"FATAL: invalid SCRAM response", "DETAIL: Nonce does not match."}
	var g map[netip.AddrPort][]string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		g = target.statements(t, tbefore)
		if len(g[client]) >= len(want) || time.Now().After(deadline) {
			break
		}
	}
	if len(g) != 1 || !slices.Equal(g[client], want) {
		t.Errorf("SCRAM replay: target logged %q; want %q for %v", g, want, client)
	}
}

// checkPostgresCapture checks that the capture holds what the test is
// about: every session opens with an SSLRequest (libpq's sslmode=prefer,
// answered N), one logs in with a password, one COPYs in, the
// multi-statement query is one Query, pgbench used the extended protocol
// with and without named statements.
func checkPostgresCapture(t *testing.T, pc protoCapture, captured map[netip.AddrPort][]string) {
	t.Helper()
	sslRequest := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}
	for cl, stream := range clientStreams(t, pc.pcap, netip.AddrPortFrom(onlineAddr, 5432)) {
		if !bytes.HasPrefix(stream, sslRequest) {
			t.Errorf("session %v does not start with an SSLRequest: % x", cl, stream[:min(len(stream), 8)])
		}
	}
	all := strings.Join(slices.Concat(slices.Collect(maps.Values(captured))...), "\n")
	for _, want := range []string{
		"method=password",
		"statement: COPY items (name, qty) FROM STDIN;",
		"statement: COPY items TO STDOUT;",
		"statement: SELECT count(*) FROM items ; SELECT max(qty) FROM items ; SELECT version();",
		"execute <unnamed>: UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2;",
		"execute P_4: UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2;",
		"DETAIL: parameters: $1 = ",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("online postgres never logged %q", want)
		}
	}
}

// comparePostgresLogs checks that the target logged for every client
// exactly what production logged for it, and nothing for anyone else.
func comparePostgresLogs(t *testing.T, got, want map[netip.AddrPort][]string) {
	t.Helper()
	for client, w := range want {
		g := got[client]
		if !slices.Equal(g, w) {
			i := firstDiff(g, w)
			t.Errorf("client %v: target logged %d lines, production %d; first difference at %d: target %q, production %q",
				client, len(g), len(w), i, at(g, i), at(w, i))
		}
	}
	for client := range got {
		if _, ok := want[client]; !ok {
			t.Errorf("target logged %q from %v, a client production never saw", got[client], client)
		}
	}
}
