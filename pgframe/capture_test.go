package pgframe

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Real traffic: PostgreSQL 15 on loopback, captured with tcpdump (see
// testdata/captures/README): psql simple queries (GSSENCRequest and
// SSLRequest refused, SCRAM-SHA-256 authentication, an error, an empty
// query, a 20 kB value), pgbench -M extended and -M prepared, and COPY
// in both directions (one COPY failing on bad data).

const capturePort = 54329

type segment struct {
	server bool
	data   []byte
}

// sessions reassembles the capture's TCP sessions (loopback: no loss, so
// dropping retransmitted bytes is enough) into messages in capture order.
func sessions(t *testing.T, path string) [][]segment {
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
	type flow struct {
		segs    []segment
		nextSeq [2]uint32
		seen    [2]bool
	}
	flows := map[uint16]*flow{}
	var order []uint16
	src := gopacket.NewPacketSource(r, r.LinkType())
	for pkt := range src.Packets() {
		tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok {
			continue
		}
		server := tcp.SrcPort == capturePort
		port := uint16(tcp.SrcPort)
		if server {
			port = uint16(tcp.DstPort)
		}
		fl := flows[port]
		if fl == nil {
			fl = &flow{}
			flows[port] = fl
			order = append(order, port)
		}
		i := 0
		if server {
			i = 1
		}
		if tcp.SYN {
			fl.nextSeq[i], fl.seen[i] = tcp.Seq+1, true
			continue
		}
		p := tcp.Payload
		if len(p) == 0 || !fl.seen[i] {
			continue
		}
		if d := fl.nextSeq[i] - tcp.Seq; int32(d) > 0 { // retransmitted bytes
			if int(d) >= len(p) {
				continue
			}
			p = p[d:]
		}
		fl.nextSeq[i] += uint32(len(p))
		fl.segs = append(fl.segs, segment{server, append([]byte(nil), p...)})
	}
	var out [][]segment
	for _, port := range order {
		out = append(out, flows[port].segs)
	}
	return out
}

func TestCaptures(t *testing.T) {
	want := map[string]struct{ sessions, requests int }{
		"psql_simple.pcap":      {1, 10},
		"pgbench_extended.pcap": {2, 118},
		"pgbench_prepared.pcap": {2, 111},
		"copy.pcap":             {4, 23},
	}
	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			ss := sessions(t, filepath.Join("testdata", "captures", name))
			if len(ss) != w.sessions {
				t.Fatalf("%d sessions, want %d", len(ss), w.sessions)
			}
			total := 0
			for i, segs := range ss {
				f := New()
				var cli, srv []byte
				for j, s := range segs {
					if j == 0 && !Detect(s.data) {
						t.Errorf("session %d: Detect false on %q", i, s.data)
					}
					// A turn boundary: these clients wait for every
					// answer before they go on.
					if !s.server && j > 0 && segs[j-1].server && f.Answers() != f.Requests() {
						t.Errorf("session %d segment %d: client goes on at %d answers of %d requests", i, j, f.Answers(), f.Requests())
					}
					if s.server {
						f.Server(s.data)
						srv = append(srv, s.data...)
					} else {
						f.Client(s.data)
						cli = append(cli, s.data...)
					}
				}
				if f.Err() != nil || f.Answers() != f.Requests() {
					t.Errorf("session %d: requests %d answers %d err %v", i, f.Requests(), f.Answers(), f.Err())
				}
				total += f.Requests()
				if err := checkOracle(cli, false, true, true, nil); err != nil {
					t.Errorf("session %d client: %v", i, err)
				}
				if err := checkOracle(srv, true, true, true, nil); err != nil {
					t.Errorf("session %d server: %v", i, err)
				}
			}
			t.Logf("%d sessions, %d requests", len(ss), total)
			if total != w.requests {
				t.Errorf("%d requests, want %d", total, w.requests)
			}
		})
	}
}
