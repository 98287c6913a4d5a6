package intercept

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestStatsTap: stats lines are read into the metrics every time and
// forwarded to the log only every interval; other records pass; the
// exposition lints clean and carries the last line's counts.
func TestStatsTap(t *testing.T) {
	var buf bytes.Buffer
	tap := NewStatsTap(time.Hour)
	log := slog.New(tap.Handler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if n := testutil.CollectAndCount(NewCollector(tap)); n != 0 {
		t.Errorf("%d metrics before any stats line", n)
	}
	for i := range 3 {
		log.Info(msgStats, "packets", uint64(10*i), "relayed", uint64(i), "kernel_drops", uint64(7), "mirrors", 1)
	}
	log.Warn("something", "x", 1)
	log.Debug("not shown at info")
	if got := strings.Count(buf.String(), msgStats); got != 1 {
		t.Errorf("%d stats lines forwarded within the interval, want 1:\n%s", got, buf.String())
	}
	if !strings.Contains(buf.String(), "something") || strings.Contains(buf.String(), "not shown") {
		t.Errorf("other records not passed as the log's level says:\n%s", buf.String())
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(tap))
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
	want := `
# HELP intercept_kernel_drops_total Packets the kernel dropped before intercept read them (NFQUEUE queue full, capture ring full).
# TYPE intercept_kernel_drops_total counter
intercept_kernel_drops_total 7
# HELP intercept_packets_total Packets the source (NFQUEUE or capture) delivered.
# TYPE intercept_packets_total counter
intercept_packets_total 20
# HELP intercept_mirrors_connected Mirror (stackcopy) connections now.
# TYPE intercept_mirrors_connected gauge
intercept_mirrors_connected 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "intercept_kernel_drops_total", "intercept_packets_total", "intercept_mirrors_connected"); err != nil {
		t.Error(err)
	}
}
