package cmppg

import (
	"testing"

	"github.com/stackcopy/stackcopy/compare/cmptest"
)

// The framer's fixtures: PostgreSQL 15 on loopback (see
// pgframe/testdata/captures/README).
const capturePort = 54329

var captureFiles = []string{"psql_simple.pcap", "pgbench_extended.pcap", "pgbench_prepared.pcap", "copy.pcap"}

// TestCaptures decodes every connection of the fixtures (cmptest.CheckCaptures
// says what is checked).
func TestCaptures(t *testing.T) {
	var paths []string
	for _, f := range captureFiles {
		paths = append(paths, "../../pgframe/testdata/captures/"+f)
	}
	cmptest.CheckCaptures(t, Protocol(), paths, capturePort)
}
