package netnstests

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/sys/unix"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

// myServer is a MariaDB server on a lab host: its own datadir in the lab
// directory, its general log (every command of every connection) in a
// file beside it, its error log on stderr.
type myServer struct {
	proc    *lab.Proc
	host    *lab.Host
	sock    string // Unix socket, for set-up that is no part of a capture
	general string // the general log
	addr    netip.AddrPort
}

// startMariaDB initialises a datadir (mariadb-install-db) in the lab
// directory and runs mariadbd on it as root, without TLS (myframe does not
// follow it), logging every command to its general log.
func startMariaDB(t *testing.T, h *lab.Host, listen netip.AddrPort) *myServer {
	t.Helper()
	dir := filepath.Join(h.Lab().Dir(), "mariadb-"+h.Label())
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mustExec(t, h, "mariadb-install-db", "--no-defaults", "--user=root", "--datadir="+data,
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")
	s := &myServer{host: h, sock: filepath.Join(dir, "s"), general: filepath.Join(dir, "general.log"), addr: listen}
	s.proc = startServerProc(t, h, listen, "mariadbd", "--no-defaults", "--user=root", "--datadir="+data,
		"--socket="+s.sock, "--pid-file="+filepath.Join(dir, "pid"), "--port="+fmt.Sprint(listen.Port()),
		"--bind-address="+listen.Addr().String(), "--skip-name-resolve", "--skip-ssl",
		"--general-log=1", "--general-log-file="+s.general, "--log-output=FILE",
		"--max-connections=40", "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0")
	return s
}

// sql runs statements as root over the server's Unix socket.
func (s *myServer) sql(t *testing.T, stmts string) {
	t.Helper()
	runWithInput(t, s.host, stmts, "mariadb", "--no-defaults", "-S", s.sock, "-u", "root")
}

// logSize is where the general log ends now: what comes after is the
// clients'.
func (s *myServer) logSize(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(s.general)
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

// myLogLine is one entry of the general log: the time (only when it
// changed since the entry before), the thread (connection) id, the command
// and its argument. A statement over several lines goes on in lines of its
// own.
var myLogLine = regexp.MustCompile(`^(?:\d{6} [ \d]\d:\d\d:\d\d)?\t+ *(\d+) ([A-Za-z_ ]+)\t(.*)$`)

// myConn is one connection in the general log.
type myConn struct {
	lines []string // "Command\tArgument", in order
}

// String is the connection's commands without its thread id or times: what
// two servers' logs of the same clients have in common.
func (c *myConn) String() string { return strings.Join(c.lines, " | ") }

// done: the connection's log ends, by a Quit or a refused login.
func (c *myConn) done() bool {
	if len(c.lines) == 0 {
		return false
	}
	last := c.lines[len(c.lines)-1]
	return strings.HasPrefix(last, "Quit\t") || strings.HasPrefix(last, "Connect\tAccess denied")
}

// connections reads the general log from offset from into its
// connections, by thread id.
func (s *myServer) connections(t *testing.T, from int) map[string]*myConn {
	t.Helper()
	b, err := os.ReadFile(s.general)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*myConn{}
	var last *string
	sc := bufio.NewScanner(strings.NewReader(string(b[from:])))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if g := myLogLine.FindStringSubmatch(l); g != nil {
			c := out[g[1]]
			if c == nil {
				if g[2] != "Connect" {
					// A connection from before the window (the setup
					// client's Quit can be logged after the offset was
					// taken): not part of what is being waited for.
					last = nil
					continue
				}
				c = &myConn{}
				out[g[1]] = c
			}
			c.lines = append(c.lines, g[2]+"\t"+g[3])
			last = &c.lines[len(c.lines)-1]
			continue
		}
		if last != nil {
			*last += "\n" + l
		}
	}
	return out
}

// waitConnections waits (bounded) until the general log holds at least
// want connections from offset from, each of them ended (a statement is
// logged when it starts, Quit when the server reads it, which may be a
// moment after the client is gone), and returns them, one string each,
// sorted.
func (s *myServer) waitConnections(t *testing.T, from, want int) []string {
	t.Helper()
	var conns map[string]*myConn
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		conns = s.connections(t, from)
		ended := 0
		for _, c := range conns {
			if c.done() {
				ended++
			}
		}
		if (len(conns) >= want && ended == len(conns)) || time.Now().After(deadline) {
			break
		}
	}
	var out []string
	for _, c := range conns {
		out = append(out, c.String())
	}
	slices.Sort(out)
	return out
}

// mySetup is each server's schema. Users connect from the lab network:
// app without a password, which any replay can log in again (an empty
// mysql_native_password reply does not depend on the server's scramble);
// pw with a mysql_native_password and ed with an ed25519 password, whose
// replies sign the server's scramble, which a new server draws anew.
const mySetup = `INSTALL SONAME 'auth_ed25519';
CREATE USER app@'198.18.0.0/255.254.0.0';
GRANT ALL ON *.* TO app@'198.18.0.0/255.254.0.0';
CREATE USER pw@'198.18.0.0/255.254.0.0' IDENTIFIED BY 'pw-secret';
CREATE USER ed@'198.18.0.0/255.254.0.0' IDENTIFIED VIA ed25519 USING PASSWORD('ed-secret');
GRANT SELECT ON shop.* TO pw@'198.18.0.0/255.254.0.0', ed@'198.18.0.0/255.254.0.0';
CREATE DATABASE shop;
USE shop;
CREATE TABLE loaded (name VARCHAR(100), qty INT);
DELIMITER //
CREATE PROCEDURE report(lim INT)
BEGIN
  SELECT COUNT(*), SUM(qty) FROM items;
  SELECT id, name, qty FROM items ORDER BY id LIMIT lim;
  SELECT NOW(6), UUID(), CONNECTION_ID();
END//
DELIMITER ;
`

// myScript is one mariadb CLI session in batch mode: simple queries, a
// query of several statements in one COM_QUERY (a delimiter other than
// ;), a procedure answering three result sets, a transaction, LOAD DATA
// LOCAL INFILE, an error the CLI goes past (--force), use (COM_INIT_DB), a
// statement over several lines, a table whose size differs on the target,
// generated ids and server-side pauses. %s is the file to load.
const myScript = `SELECT 1 AS one;
SELECT NOW(6), UUID(), CONNECTION_ID(), RAND();
DELIMITER //
SELECT COUNT(*) FROM items; SELECT MAX(qty) FROM items; SELECT VERSION()//
DELIMITER ;
CALL report(5);
BEGIN;
UPDATE items SET qty = qty + 1 WHERE id = 1;
INSERT INTO items (name, qty) VALUES ('fresh', 7);
SELECT LAST_INSERT_ID();
SELECT name, qty FROM items WHERE id = 1;
COMMIT;
SELECT SLEEP(0.05);
LOAD DATA LOCAL INFILE '%s' INTO TABLE loaded (name, qty);
SELECT * FROM nosuch;
use mysql
use shop
SELECT id, name, qty
  FROM items
 ORDER BY id;
SET @x = 3;
PREPARE s FROM 'SELECT name FROM items WHERE id = ?';
EXECUTE s USING @x;
DEALLOCATE PREPARE s;
SELECT SLEEP(0.05);
BEGIN;
SELECT * FROM loaded;
ROLLBACK;
`

// TestReplayMySQL: real MariaDB 10.11 clients — the mariadb CLI running a
// script of queries, a multi-statement query, a procedure answering
// several result sets, a transaction, LOAD DATA LOCAL INFILE and an
// error; the CLI logging in through an authentication plugin switch;
// mariadb-slap with 4 concurrent clients writing the same table (their
// logins name the schema slap's control connection creates just before;
// the replay keeps that order, replay/order.go); mariadb-admin ping and status; go-sql-driver/mysql with
// server-side prepared statements (the binary protocol, a CALL of several
// binary result sets, a failed prepare); paced CLI sessions — against a
// real mariadbd are captured and replayed at the captured pace to a fresh
// server initialised the same way, whose items table is 250 times as big
// with longer names, and whose NOW(), UUID() and connection ids differ.
// The target's general log holds, connection by connection, exactly the
// commands production's general log holds (thread ids and times left
// out); every turn ended by MySQL framing, none after --turn-wait.
//
// Logins with a password (mysql_native_password, and ed25519 through an
// AuthSwitchRequest) are captured and replayed on their own: their replies
// sign the server's scramble, which the target draws anew, so the target
// must refuse them, framed, and run none of their statements.
func TestReplayMySQL(t *testing.T) {
	l := lab.NewT(t)
	needPrograms(t, "mariadbd", "mariadb-install-db", "mariadb", "mariadb-slap", "mariadb-admin")
	c := newCaptureLab(t, l, 1)
	online := startMariaDB(t, c.online, netip.AddrPortFrom(onlineAddr, 3306))
	online.sql(t, mySetup+"CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200), qty INT);"+
		" INSERT INTO items (name, qty) SELECT CONCAT('item ', seq), seq FROM seq_1_to_20;\n"+
		"CREATE PROCEDURE warmup() SELECT 1;\n")

	infile := filepath.Join(l.Dir(), "load.tsv")
	var rows strings.Builder
	for i := range 200 {
		fmt.Fprintf(&rows, "loaded-%d\t%d\n", i, i)
	}
	if err := os.WriteFile(infile, []byte(rows.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) []string {
		return append([]string{"mariadb", "--no-defaults", "-h", onlineAddr.String(), "-P", "3306", "--skip-ssl"}, args...)
	}
	before := online.logSize(t)
	pc := captureTraffic(t, c, 3306, func() {
		runWithInput(t, c.client, fmt.Sprintf(myScript, infile), cli("-u", "app", "-D", "shop", "--local-infile=1", "--force")...)
		// The client offers client_ed25519; app's plugin is
		// mysql_native_password: the server switches (AuthSwitchRequest),
		// and an empty password's reply is empty, whatever the scramble.
		mustExec(t, c.client, cli("-u", "app", "--default-auth=client_ed25519", "-e", "SELECT CURRENT_USER(), @@hostname")...)
		mustExec(t, c.client, "mariadb-slap", "--no-defaults", "-h", onlineAddr.String(), "-P", "3306", "-u", "app",
			// One iteration, no drop at the end: the replay keeps the order
			// of an open after an answer, not of a request after another
			// session's (ARCHITECTURE.md), and slap's next iteration (or
			// final drop) drops the schema once its clients are done.
			"--concurrency=4", "--iterations=1", "--no-drop", "--auto-generate-sql", "--number-of-queries=200")
		mustExec(t, c.client, "mariadb-admin", "--no-defaults", "-h", onlineAddr.String(), "-P", "3306", "-u", "app", "ping", "status")
		goClient(t, c.client, onlineAddr)
		for i := range 8 {
			mustExec(t, c.client, cli("-u", "app", "-D", "shop", "-e", fmt.Sprintf("SELECT %d, SLEEP(0.05), RAND(); SELECT NOW(6)", i))...)
			time.Sleep(250 * time.Millisecond)
		}
	})
	// CLI, auth switch, slap's control connection and its 4 clients,
	// mariadb-admin, go-sql-driver, 8 paced CLI.
	const wantSessions = 1 + 1 + 1 + 4 + 1 + 1 + 8
	captured := online.waitConnections(t, before, wantSessions)
	if pc.sessions != wantSessions || len(captured) != pc.sessions {
		t.Fatalf("online mariadbd logged %d connections for %d captured sessions (want %d): the capture did not run as planned\n%s",
			len(captured), pc.sessions, wantSessions, strings.Join(captured, "\n"))
	}
	checkMySQLCapture(t, pc, captured)

	r := newReplayLab(t, l)
	target := startMariaDB(t, r.target, netip.AddrPortFrom(targetAddr, 3306))
	// Initialised as production was, but items is 250 times as big, with
	// longer names and ids far on: the SELECTs and the CALL answer more.
	target.sql(t, mySetup+"CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200), qty INT) AUTO_INCREMENT=100000;"+
		" INSERT INTO items (id, name, qty) VALUES (1, 'the first target item, with a much longer name', 1);"+
		" INSERT INTO items (name, qty) SELECT CONCAT(REPEAT('target item ', 5), seq), seq * 1000 FROM seq_1_to_4999;\n"+
		// The target's build of warmup prepares a statement of its own,
		// which takes a statement id of the connection's: the go client's
		// prepares get other ids than production gave (as a target whose
		// server reuses a cached connection's counter, or runs another
		// version, numbers them); stackcopy renumbers its executes.
		"DELIMITER //\nCREATE PROCEDURE warmup() BEGIN PREPARE w FROM 'SELECT 2'; DEALLOCATE PREPARE w; SELECT 1; END//\nDELIMITER ;\n")
	tbefore := target.logSize(t)
	res := replayAtPace(t, r, pc, 3306, "mysql")
	if t.Failed() {
		t.Logf("stackcopy -v on unframed turns:\n%s", unframedTurns(res.stderr))
	}
	got := target.waitConnections(t, tbefore, len(captured))
	compareConnections(t, got, captured)
	// Every command of the go client's that named a statement named
	// production's id: each was renumbered to the target's, none unknown.
	if my := res.stats.Replay.Protocols["mysql"]; my.Renumbered != goStatementCommands || my.NotRenumbered != 0 {
		t.Errorf("statement ids: %d commands renumbered, %d unknown; want %d, 0", my.Renumbered, my.NotRenumbered, goStatementCommands)
	}
	t.Logf("mysql: the target's general log holds %d connections, %d commands, as production's does", len(got), commandCount(got))

	// Logins with a password, captured and replayed on their own.
	before = online.logSize(t)
	auth := captureTraffic(t, c, 3306, func() {
		mustExec(t, c.client, cli("-u", "pw", "-ppw-secret", "-D", "shop", "-e", "SELECT CURRENT_USER()")...)
		mustExec(t, c.client, cli("-u", "ed", "-ped-secret", "-D", "shop", "-e", "SELECT CURRENT_USER()")...)
	})
	authOnline := online.waitConnections(t, before, 2)
	if auth.sessions != 2 || len(authOnline) != 2 || !strings.HasSuffix(authOnline[0], "Query\tSELECT CURRENT_USER() | Quit\t") ||
		!strings.HasSuffix(authOnline[1], "Query\tSELECT CURRENT_USER() | Quit\t") {
		t.Fatalf("online mariadbd logged %q for %d password logins, want 2", authOnline, auth.sessions)
	}
	var logins []string
	for _, c := range authOnline {
		logins = append(logins, strings.SplitN(c, " | ", 2)[0])
	}
	tbefore = target.logSize(t)
	ares := runStackcopy(t, r.replay, time.Minute, "-x", fmt.Sprintf("3306-%v", target.addr), "-i", auth.pcap, "--speed", "1", "-v")
	ast := ares.stats.Replay
	ap := ast.Protocols["mysql"]
	// The target refuses each login and closes; the client's remaining
	// bytes go to a closed connection. Whether a session counts as
	// target-reset or completed depends on whether the target's RST to
	// those bytes beat stackcopy's next write (runs show 0, 1 or 2
	// resets, exit 0 or 3): only the sum is asserted.
	if ast.Sessions != 2 || ast.Completed+ast.TargetResets != 2 || (ares.exit == 3) != (ast.TargetResets > 0) || (ares.exit != 0 && ares.exit != 3) {
		t.Errorf("password logins replayed: exit %d, %+v; want 2 sessions, each completed or reset by the target, exit 3 for a reset", ares.exit, ast)
	}
	// pw: the HandshakeResponse waits for the greeting, the first query
	// for the login's answer (the refusal), both framed; the second query's
	// turn ends by the target's close. ed: the same with the
	// AuthSwitchRequest between (the reply waits for it): 3 + 4 turns, 2 + 3
	// framed, 1 + 1 ended by the close.
	if ap.Sessions != 2 || ap.Turns != 7 || ap.Framed != 5 || ap.ByClose != 2 || ap.TurnWait != 0 {
		t.Errorf("password logins replayed: mysql %+v; want 7 turns, 5 framed up to the refusals, 2 ended by the target's close", ap)
	}
	var want []string
	for _, login := range logins {
		who, _, _ := strings.Cut(strings.TrimPrefix(login, "Connect\t"), " ")
		user, host, _ := strings.Cut(who, "@")
		want = append(want, fmt.Sprintf("%s | Connect\tAccess denied for user '%s'@'%s' (using password: YES)", login, user, host))
	}
	slices.Sort(want)
	if got := target.waitConnections(t, tbefore, 2); !slices.Equal(got, want) {
		t.Errorf("password logins replayed: the target logged %q; want %q", got, want)
	}
}

// checkMySQLCapture checks that the capture holds what the test is about.
func checkMySQLCapture(t *testing.T, pc protoCapture, captured []string) {
	t.Helper()
	// The login through a plugin switch: the HandshakeResponse names
	// client_ed25519, and the client's next packet (sequence id 3) answers
	// the server's AuthSwitchRequest.
	switched := 0
	for _, st := range clientStreams(t, pc.pcap, netip.AddrPortFrom(onlineAddr, 3306)) {
		if len(st) < 4 {
			continue
		}
		n := 4 + int(st[0]) | int(st[1])<<8 | int(st[2])<<16
		if len(st) >= n+4 && bytes.Contains(st[:n], []byte("client_ed25519\x00")) && st[n+3] == 3 {
			switched++
		}
	}
	if switched != 1 {
		t.Errorf("%d sessions answered an AuthSwitchRequest, want 1", switched)
	}
	all := strings.Join(captured, "\n")
	for _, want := range []string{
		"Query\tSELECT COUNT(*) FROM items; SELECT MAX(qty) FROM items; SELECT VERSION()",
		"Query\tCALL report(5)",
		"Query\tLOAD DATA LOCAL INFILE",
		"Init DB\tmysql",
		"Query\tSELECT * FROM nosuch",
		"Query\tCREATE SCHEMA `mysqlslap`",
		"Query\tINSERT INTO t1 VALUES",
		"Statistics",
		"Prepare\tSELECT id, name, qty FROM items WHERE qty >= ?",
		"Execute\tSELECT id, name, qty FROM items WHERE qty >= 3",
		"Execute\tCALL report(4)",
		"Close stmt",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("online mariadbd never logged %q", want)
		}
	}
}

// compareConnections checks that the target logged the connections
// production logged, each with the same commands in the same order.
func compareConnections(t *testing.T, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	t.Errorf("target's connections differ from production's: %d vs %d connections", len(got), len(want))
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Logf("only on the target: %q", g)
		}
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Logf("only in production: %q", w)
		}
	}
}

func commandCount(conns []string) int {
	n := 0
	for _, c := range conns {
		n += strings.Count(c, " | ") + 1
	}
	return n
}

// goStatementCommands is how many commands of goClient's session name a
// prepared statement by its id: the prepared SELECT's 3 executes and its
// close, and an execute and a close for each of the 4 one-shot statements
// (the INSERT, the CALL, the SELECT NOW and the UPDATE).
const goStatementCommands = 3 + 1 + 4*2

// goClient runs go-sql-driver/mysql from the client host: server-side
// prepared statements (interpolateParams=false), executed several times,
// a CALL answering binary result sets, a statement prepared and closed
// for one Exec, a failed prepare, a transaction. Its connection is dialled
// from a thread in the client host's namespace.
func goClient(t *testing.T, h *lab.Host, server netip.Addr) {
	t.Helper()
	cfg := mysql.NewConfig()
	cfg.User = "app"
	cfg.Net = "tcp"
	cfg.Addr = netip.AddrPortFrom(server, 3306).String()
	cfg.DBName = "shop"
	cfg.InterpolateParams = false
	cfg.Timeout = 5 * time.Second
	cfg.ReadTimeout = 10 * time.Second
	cfg.DialFunc = dialInNamespace(h.Name())
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("go-sql-driver: %v", err)
		}
	}
	drain := func(rows *sql.Rows, err error) {
		t.Helper()
		check(err)
		for {
			for rows.Next() {
			}
			if !rows.NextResultSet() {
				break
			}
		}
		check(rows.Err())
		check(rows.Close())
	}
	// A procedure whose target build takes a statement id (see the test).
	drain(db.QueryContext(ctx, "CALL warmup()"))
	stmt, err := db.PrepareContext(ctx, "SELECT id, name, qty FROM items WHERE qty >= ? ORDER BY id")
	check(err)
	for _, q := range []int{3, 10, 19} {
		drain(stmt.QueryContext(ctx, q))
	}
	check(stmt.Close())
	_, err = db.ExecContext(ctx, "INSERT INTO loaded (name, qty) VALUES (?, ?)", "from go", 5)
	check(err)
	drain(db.QueryContext(ctx, "CALL report(?)", 4))
	var now, uuid string
	check(db.QueryRowContext(ctx, "SELECT NOW(6), UUID() FROM DUAL WHERE ? > 0", 1).Scan(&now, &uuid))
	if _, err := db.PrepareContext(ctx, "SELECT nothing FROM nosuch WHERE id = ?"); err == nil {
		t.Fatal("go-sql-driver: a prepare of a missing table succeeded")
	}
	tx, err := db.BeginTx(ctx, nil)
	check(err)
	_, err = tx.ExecContext(ctx, "UPDATE items SET qty = qty + ? WHERE id = ?", 1, 2)
	check(err)
	check(tx.Commit())
}

// dialInNamespace returns a dial function whose sockets are made in the
// network namespace ns: each dial runs on a thread of its own that enters
// ns and is never given back (it ends with its goroutine).
func dialInNamespace(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
			fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				ch <- result{nil, err}
				return
			}
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
			if err != nil {
				ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}
