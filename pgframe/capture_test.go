package pgframe

import (
	"path/filepath"
	"testing"

	"github.com/stackcopy/stackcopy/internal/pcaptest"
)

// Real traffic: PostgreSQL 15 on loopback, captured with tcpdump (see
// testdata/captures/README): psql simple queries (GSSENCRequest and
// SSLRequest refused, SCRAM-SHA-256 authentication, an error, an empty
// query, a 20 kB value), pgbench -M extended and -M prepared, and COPY
// in both directions (one COPY failing on bad data).

const capturePort = 54329

func TestCaptures(t *testing.T) {
	want := map[string]struct{ sessions, requests int }{
		"psql_simple.pcap":      {1, 10},
		"pgbench_extended.pcap": {2, 118},
		"pgbench_prepared.pcap": {2, 111},
		"copy.pcap":             {4, 23},
	}
	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			ss := pcaptest.Conns(t, filepath.Join("testdata", "captures", name), capturePort)
			if len(ss) != w.sessions {
				t.Fatalf("%d sessions, want %d", len(ss), w.sessions)
			}
			total := 0
			for i, segs := range ss {
				f := New()
				var cli, srv []byte
				for j, s := range segs {
					if j == 0 && !Detect(s.Data) {
						t.Errorf("session %d: Detect false on %q", i, s.Data)
					}
					// A turn boundary: these clients wait for every
					// answer before they go on.
					if s.Client && j > 0 && !segs[j-1].Client && f.Answers() != f.Requests() {
						t.Errorf("session %d segment %d: client goes on at %d answers of %d requests", i, j, f.Answers(), f.Requests())
					}
					if s.Client {
						f.Client(s.Data)
						cli = append(cli, s.Data...)
					} else {
						f.Server(s.Data)
						srv = append(srv, s.Data...)
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
