package compare_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/compare/cmphttp"
	"github.com/stackcopy/stackcopy/compare/cmpmc"
	"github.com/stackcopy/stackcopy/compare/cmpmysql"
	"github.com/stackcopy/stackcopy/compare/cmppg"
	"github.com/stackcopy/stackcopy/compare/cmpresp"
	"github.com/stackcopy/stackcopy/internal/pcaptest"
)

// A recorded connection: each stream's chunks in the order they were
// seen (client, then the server's answer, ...).
type recorded struct {
	chunks []chunk
}

type chunk struct {
	client bool
	b      []byte
}

// fromPcap reads the connections to port of a framer fixture.
func fromPcap(b *testing.B, path string, port uint16) []recorded {
	var out []recorded
	for _, conn := range pcaptest.Conns(b, path, port) {
		var r recorded
		for _, s := range conn {
			r.chunks = append(r.chunks, chunk{s.Client, s.Data})
		}
		out = append(out, r)
	}
	return out
}

// fromH2 reads an h2frame fixture (records of direction, length, bytes).
func fromH2(b *testing.B, path string) []recorded {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var r recorded
	for len(data) >= 5 {
		n := int(binary.BigEndian.Uint32(data[1:5]))
		r.chunks = append(r.chunks, chunk{data[0] == 'C', data[5 : 5+n]})
		data = data[5+n:]
	}
	return []recorded{r}
}

// synthetic makes n request/answer exchanges on one connection.
func synthetic(n int, req, ans func(i int) string) []recorded {
	var r recorded
	for i := range n {
		r.chunks = append(r.chunks, chunk{true, []byte(req(i))}, chunk{false, []byte(ans(i))})
	}
	return []recorded{r}
}

// benchCompare feeds conns through a collector as a replay would (client
// bytes, production's answers, then the target's, the same bytes) and
// reports the cost per compared request.
func benchCompare(b *testing.B, proto compare.Protocol, conns []recorded) {
	cli, srv := netip.MustParseAddrPort("198.18.1.10:40000"), netip.MustParseAddrPort("198.18.1.1:80")
	var bytes int64
	for _, c := range conns {
		for _, ch := range c.chunks {
			bytes += 2 * int64(len(ch.b)) // production's and the target's
		}
	}
	b.ReportAllocs()
	b.SetBytes(bytes)
	now := time.Now()
	// One collector for the whole run, as in a long replay: its groups and
	// their samples fill up once, as they do within seconds of a real run.
	col := compare.NewCollector(compare.Config{Protocols: []compare.Protocol{proto}})
	for b.Loop() {
		for _, c := range conns {
			cn := col.Open(cli, srv)
			cn.Decide(proto.Name())
			for _, ch := range c.chunks {
				if ch.client {
					cn.Client(ch.b, now)
					cn.Sent(compare.Target, len(ch.b), now)
				} else {
					cn.Server(compare.Production, ch.b, now)
					cn.Server(compare.Target, ch.b, now)
				}
			}
			cn.EndClient()
			cn.End(compare.Production)
			cn.End(compare.Target)
		}
	}
	st := col.Stats()
	if st.Different != 0 || st.Compared == 0 {
		b.Fatalf("%s: %+v: the same bytes on both sides must compare identical", proto.Name(), st)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(st.Compared), "ns/msg")
}

func BenchmarkCompare(b *testing.B) {
	json := `{"id":%d,"name":"user %d","roles":["admin","dev"],"address":{"city":"Lisbon","zip":"1000-001"},"active":true}`
	cases := []struct {
		name  string
		proto compare.Protocol
		conns func(b *testing.B) []recorded
	}{
		{"http1-json", cmphttp.HTTP1(), func(*testing.B) []recorded {
			return synthetic(200, func(i int) string {
				return fmt.Sprintf("GET /api/users/%d HTTP/1.1\r\nHost: shop\r\nAccept: application/json\r\nUser-Agent: bench\r\n\r\n", i)
			}, func(i int) string {
				body := fmt.Sprintf(json, i, i)
				return fmt.Sprintf("HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 06 Dec 2026 19:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s", len(body), body)
			})
		}},
		{"http1-static", cmphttp.HTTP1(), func(*testing.B) []recorded {
			page := strings.Repeat("<p>static page</p>\n", 200)
			return synthetic(200, func(i int) string {
				return fmt.Sprintf("GET /static/page%d.html HTTP/1.1\r\nHost: shop\r\n\r\n", i%10)
			}, func(int) string {
				return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\nETag: \"abc\"\r\n\r\n%s", len(page), page)
			})
		}},
		{"http2", cmphttp.HTTP2(), func(b *testing.B) []recorded {
			return fromH2(b, "../h2frame/testdata/h2load-nghttpd.h2")
		}},
		{"redis", cmpresp.Protocol(), func(b *testing.B) []recorded { return fromPcap(b, "../respframe/testdata/redis.pcap", 26379) }},
		{"memcached", cmpmc.Protocol(), func(b *testing.B) []recorded { return fromPcap(b, "../mcframe/testdata/memcached.pcap", 21211) }},
		{"mysql", cmpmysql.Protocol(), func(b *testing.B) []recorded { return fromPcap(b, "../myframe/testdata/go-sql-driver.pcap", 33061) }},
		{"postgres", cmppg.Protocol(), func(b *testing.B) []recorded {
			return fromPcap(b, "../pgframe/testdata/captures/pgbench_extended.pcap", 54329)
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) { benchCompare(b, c.proto, c.conns(b)) })
	}
}
