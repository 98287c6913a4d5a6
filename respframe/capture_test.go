package respframe

import (
	"errors"
	"io"
	"os"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// segment is one TCP payload of a captured connection.
type segment struct {
	client bool
	data   []byte
}

// readCapture returns the TCP payloads of a loopback capture, by
// connection (the client's port), in capture order; server is the
// server's port. Loopback captures have no loss or reordering to repair.
func readCapture(t *testing.T, path string, server layers.TCPPort) (conns map[layers.TCPPort][]segment, order []layers.TCPPort) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := pcapgo.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	conns = map[layers.TCPPort][]segment{}
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return conns, order
		}
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok || len(tcp.Payload) == 0 {
			continue
		}
		port, client := tcp.SrcPort, true
		if tcp.SrcPort == server {
			port, client = tcp.DstPort, false
		}
		if _, seen := conns[port]; !seen {
			order = append(order, port)
		}
		conns[port] = append(conns[port], segment{client, tcp.Payload})
	}
}

// TestCapture replays real traffic captured on loopback from redis-server
// 7.0.15: redis-benchmark -P 16 (inline and array PING, SET, GET, INCR,
// LPUSH, MSET, LRANGE_100), redis-cli sessions (MULTI/EXEC, HELLO 3,
// BLPOP, RESP3 types from DEBUG PROTOCOL, SUBSCRIBE and PSUBSCRIBE in
// RESP2 and RESP3 with published messages), and an inline session of
// SUBSCRIBE, UNSUBSCRIBE with and without subscriptions, HELLO 3 and
// RESET. Every connection must frame without error, every command be
// answered, and at every turn boundary (where the server spoke after the
// client) all the commands sent before the turn be answered, as the
// clients waited for their answers.
func TestCapture(t *testing.T) {
	conns, order := readCapture(t, "testdata/redis.pcap", 26379)
	if len(order) < 10 {
		t.Fatalf("%d connections in the capture", len(order))
	}
	for _, port := range order {
		f := New()
		segs := conns[port]
		for i, s := range segs {
			if s.client && i > 0 && !segs[i-1].client && f.Answers() != f.Requests() {
				t.Fatalf("connection %d, segment %d: the client goes on with %d of %d commands answered", port, i, f.Answers(), f.Requests())
			}
			if s.client {
				f.Client(s.data)
			} else {
				f.Server(s.data)
			}
			if f.Err() != nil {
				t.Fatalf("connection %d, segment %d: %v", port, i, f.Err())
			}
		}
		if f.Requests() == 0 || f.Requests() != f.Answers() {
			t.Errorf("connection %d: requests %d answers %d", port, f.Requests(), f.Answers())
		}
	}
}
