package mcframe

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/internal/framekit/framekittest"
)

// The step tables and their runner are shared with the other framers.
type step = framekittest.Step

var (
	C = framekittest.C
	S = framekittest.S
)

var tableTests = []framekittest.Case{
	{Name: "storage and get", Steps: []step{
		C("set k 0 0 2\r\nhi\r\nadd k 1 0 3\r\nabc\r\ncas k 0 0 1 99\r\nx\r\n", 3, 0),
		S("STORED\r\nNOT_STORED\r\n", 3, 2),
		S("EXISTS\r\n", 3, 3),
		C("get k\r\ngets k missing k\r\n", 5, 3),
		S("VALUE k 0 2\r\nhi\r\n", 5, 3),
		S("END\r\nVALUE k 0 2 7\r\nhi\r\n", 5, 4),
		S("VALUE k 0 2 7\r\nhi\r\nEND\r\n", 5, 5),
	}, Err: nil},
	{Name: "data block holding lines", Steps: []step{
		C("set k 0 0 14\r\nEND\r\nVALUE k\r\n\r\nget k\r\n", 2, 0),
		S("STORED\r\nVALUE k 0 14\r\nEND\r\nVALUE k\r\n\r\nEND\r\n", 2, 2),
	}, Err: nil},
	{Name: "empty value, bare LF commands", Steps: []step{
		C("set e 0 0 0\r\n\r\nget e\nappend e 0 0 1\r\nx\r\n", 3, 0),
		S("STORED\r\nVALUE e 0 0\r\n\r\nEND\r\nSTORED\r\n", 3, 3),
	}, Err: nil},
	{Name: "gat, touch, incr, delete", Steps: []step{
		C("gat 100 a b\r\ngats 100 a\r\ntouch a 10\r\nincr n 5\r\ndecr n 1\r\ndelete a\r\ndelete a 0\r\n", 7, 0),
		S("END\r\nEND\r\nNOT_FOUND\r\nNOT_FOUND\r\n4\r\nDELETED\r\nNOT_FOUND\r\n", 7, 7),
	}, Err: nil},
	{Name: "noreply", Steps: []step{
		C("set b 0 0 1 noreply\r\nx\r\nincr nokey 1 noreply\r\ndelete nokey noreply\r\nflush_all noreply\r\nverbosity 1 noreply\r\nversion\r\n", 1, 0),
		S("VERSION 1.6.18\r\n", 1, 1),
	}, Err: nil},
	{Name: "stats", Steps: []step{
		C("stats\r\nstats reset\r\nstats detail on\r\nstats slabs\r\nstats nosuch\r\n", 5, 0),
		S("STAT pid 1\r\nSTAT uptime 2\r\nSTAT version 1.6.18\r\n", 5, 0),
		S("END\r\nRESET\r\nOK\r\n", 5, 3),
		S("STAT active_slabs 0\r\nSTAT total_malloced 0\r\nEND\r\n", 5, 4),
		S("ERROR\r\n", 5, 5),
	}, Err: nil},
	{Name: "errors answer", Steps: []step{
		C("\r\nfoo\r\n   get hit\r\nget\r\nverbosity\r\n", 5, 0),
		S("ERROR\r\nERROR\r\nEND\r\nERROR\r\nERROR\r\n", 5, 5),
	}, Err: nil},
	{Name: "get with a key too long", Steps: []step{
		C("get a "+strings.Repeat("k", 300)+"\r\n", 1, 0),
		S("CLIENT_ERROR bad command line format\r\n", 1, 1),
	}, Err: nil},
	{Name: "quit", Steps: []step{C("quit\r\n", 0, 0)}, Err: nil},
	{Name: "long get line", Steps: []step{
		C("get "+strings.Repeat("key:12345678 ", 2000)+"\r\nget x\r\n", 2, 0),
		S("END\r\nEND\r\n", 2, 2),
	}, Err: nil},
	{Name: "meta", Steps: []step{
		C("ms k 2 T90 F1\r\nhi\r\nmg k t f v\r\nmg miss v\r\nmd k I\r\nma n\r\nma n v N0 J13\r\nme k\r\nmn\r\n", 8, 0),
		S("HD\r\nVA 2 t90 f1\r\nhi\r\nEN\r\n", 8, 3),
		S("HD\r\nNF\r\nVA 2\r\n13\r\nEN\r\nMN\r\n", 8, 8),
	}, Err: nil},
	{Name: "meta quiet closed by mn", Steps: []step{
		C("mg miss q\r\nmg miss v q\r\nmn\r\n", 3, 0),
		S("MN\r\n", 3, 3),
	}, Err: nil},
	{Name: "meta quiet hits", Steps: []step{
		C("mg hit q\r\nmg hit v q\r\nmg miss v q\r\nmg hit k q O123 v\r\nmn\r\n", 5, 0),
		S("HD\r\n", 5, 1),
		S("VA 2\r\nhi\r\n", 5, 2),
		S("VA 2 khit O123\r\nhi\r\n", 5, 4),
		S("MN\r\n", 5, 5),
	}, Err: nil},
	{Name: "meta quiet opaque skips a miss", Steps: []step{
		C("mg a v q Oa k\r\nmg b v q Ob k\r\nmg c v q Oc k\r\nmn\r\n", 4, 0),
		S("VA 1 Ob kb\r\nx\r\n", 4, 2),
		S("MN\r\n", 4, 4),
	}, Err: nil},
	{Name: "meta quiet sets", Steps: []step{
		C("ms a 2 q\r\nhi\r\nms b 2 q ME\r\nhi\r\nms c 2 q\r\nhi\r\nmn\r\n", 4, 0),
		// Without O or k, the NS is credited to the oldest quiet ms that
		// could give it: the counts agree again at MN.
		S("NS\r\n", 4, 1),
		S("MN\r\n", 4, 4),
	}, Err: nil},
	{Name: "meta quiet deletes and arithmetic", Steps: []step{
		C("md a q\r\nmd a q\r\nma n q\r\nma nokey q\r\nmn\r\n", 5, 0),
		S("NF\r\n", 5, 1),
		S("NF\r\nMN\r\n", 5, 5),
	}, Err: nil},
	{Name: "quiet then text get", Steps: []step{
		C("mg miss v q\r\nget k\r\n", 2, 0),
		S("VALUE k 0 1\r\nx\r\n", 2, 1),
		S("END\r\n", 2, 2),
	}, Err: nil},
	{Name: "meta errors", Steps: []step{
		C("mg\r\nmg k q zz\r\nmn\r\n", 3, 0),
		S("ERROR\r\nCLIENT_ERROR invalid flag\r\nMN\r\n", 3, 3),
	}, Err: nil},
	{Name: "too large value answered early", Steps: []step{
		C("set big 0 0 2000000\r\n", 0, 0),
		S("SERVER_ERROR object too large for cache\r\n", 0, 1),
		C(strings.Repeat("x", 2000000)+"\r\n", 1, 1),
	}, Err: nil},
	{Name: "binary protocol", Steps: []step{C("\x80\x01\x00\x03", 0, 0)}, Err: ErrUnsupported},
	{Name: "watch", Steps: []step{C("watch fetchers\r\n", 0, 0)}, Err: ErrUnsupported},
	{Name: "lru_crawler metadump", Steps: []step{C("lru_crawler metadump all\r\n", 0, 0)}, Err: ErrUnsupported},
	{Name: "bad storage line", Steps: []step{C("set c 0 0 abc noreply\r\nxy\r\n", 0, 0)}, Err: ErrMalformed},
	{Name: "storage line short", Steps: []step{C("set c 0 0\r\n", 0, 0)}, Err: ErrMalformed},
	{Name: "bad data chunk", Steps: []step{C("set b 0 0 1\r\nxyz\r\n", 0, 0)}, Err: ErrMalformed},
	{Name: "key too long", Steps: []step{C("set "+strings.Repeat("k", 251)+" 0 0 1\r\nx\r\n", 0, 0)}, Err: ErrMalformed},
	{Name: "long non-get line", Steps: []step{C("set "+strings.Repeat("k", MaxLine), 0, 0)}, Err: ErrTooLong},
	{Name: "unpaired", Steps: []step{S("ERROR\r\n", 0, 0)}, Err: ErrUnpaired},
	{Name: "answer the request cannot have", Steps: []step{C("mn\r\n", 1, 0), S("HD\r\n", 1, 0)}, Err: ErrMalformed},
	{Name: "get answer garbage", Steps: []step{C("get k\r\n", 1, 0), S("STORED\r\n", 1, 0)}, Err: ErrMalformed},
	{Name: "VALUE without CRLF after data", Steps: []step{C("get k\r\n", 1, 0), S("VALUE k 0 1\r\nxy\r\nEND\r\n", 1, 0)}, Err: ErrMalformed},
	{Name: "answer line without CR", Steps: []step{C("version\r\n", 1, 0), S("VERSION 1\n", 1, 0)}, Err: ErrMalformed},
	{Name: "counts freeze at Err", Steps: []step{
		C("version\r\nversion\r\n", 2, 0),
		S("VERSION 1\r\nVERSION 1\n", 2, 1),
		S("VERSION 1\r\n", 2, 1),
	}, Err: ErrMalformed},
}

func TestTable(t *testing.T) { framekittest.Table(t, New, tableTests) }

// A 64 MiB value is counted, not stored, on both sides.
func TestHugeValue(t *testing.T) {
	f := New()
	const size = 64 << 20
	chunk := make([]byte, 1<<20)
	f.Client([]byte(fmt.Sprintf("set big 0 0 %d\r\n", size)))
	// AllocsPerRun calls the function twice (a warm-up, then the run).
	allocs := testing.AllocsPerRun(1, func() {
		for range size / 2 / len(chunk) {
			f.Client(chunk)
		}
	})
	f.Client([]byte("\r\nget big\r\n"))
	f.Server([]byte(fmt.Sprintf("STORED\r\nVALUE big 0 %d\r\n", size)))
	for range size / len(chunk) {
		f.Server(chunk)
	}
	f.Server([]byte("\r\nEND\r\n"))
	if f.Requests() != 2 || f.Answers() != 2 || f.Err() != nil || allocs > 0 {
		t.Fatalf("requests %d answers %d err %v allocs %v", f.Requests(), f.Answers(), f.Err(), allocs)
	}
}

func TestDetect(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{"", false}, {"g", true}, {"get foo\r\n", true}, {"gets", true}, {"set k 0 0 1\r\n", true},
		{"mg k v\r\n", true}, {"mn\r\n", true}, {"version\r\n", true}, {"stats\n", true},
		{"GET / HTTP/1.1\r\n", false}, {"getx", false}, {"*1\r\n$4\r\nPING\r\n", false},
		{"PING\r\n", false}, {"\x80\x00", false}, {"flush_all", true},
	} {
		if got := Detect([]byte(c.in)); got != c.want {
			t.Errorf("Detect(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

// Client and Server run on two goroutines, as the replayer calls them.
func TestConcurrent(t *testing.T) {
	framekittest.Concurrent(t, New(), "set k 0 0 1\r\nv\r\n", "STORED\r\n")
}
