package cmpmysql

import (
	"testing"

	"github.com/stackcopy/stackcopy/compare/cmptest"
)

// The framer's fixtures: MariaDB 10.11 on loopback (see
// myframe/testdata/README.md).
const capturePort = 33061

var captureFiles = []string{"go-sql-driver.pcap", "mariadb-cli.pcap", "raw-client.pcap"}

// TestCaptures decodes every connection of the fixtures (cmptest.CheckCaptures
// says what is checked).
func TestCaptures(t *testing.T) {
	var paths []string
	for _, f := range captureFiles {
		paths = append(paths, "../../myframe/testdata/"+f)
	}
	cmptest.CheckCaptures(t, Protocol(), paths, capturePort)
}
