package mirror

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/relay"
)

// Report paths are checked before any work: a directory that does not
// exist fails the run at once, naming the flag.
func TestComparisonOutputsCheckedFirst(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CompareJSON = filepath.Join(t.TempDir(), "no-such-dir", "report.json")
	if _, err := openComparison(&cfg); err == nil || !strings.Contains(err.Error(), "--compare-json") {
		t.Fatalf("openComparison: %v; want an error naming --compare-json", err)
	}
	cfg = DefaultConfig()
	cfg.CompareIgnore = []string{"nonsense"}
	if _, err := cfg.compareRules(); err == nil || !strings.Contains(err.Error(), "--compare-ignore") {
		t.Fatalf("compareRules: %v; want an error naming --compare-ignore", err)
	}
}

// Answers relayed header-only would compare as zeros: the report is
// written but marked, and the run says so.
func TestComparisonRefusesHeaderOnlyAnswers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CompareJSON = filepath.Join(t.TempDir(), "report.json")
	c, err := openComparison(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	sum := &Summary{Relay: &relay.ClientStats{Packets: 10, HeaderOnly: 10}}
	if err := c.finish(sum, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sum.CompareInvalid, "--full-payload") {
		t.Fatalf("CompareInvalid %q; want it to name --full-payload", sum.CompareInvalid)
	}
	var b strings.Builder
	sum.WriteText(&b)
	if !strings.Contains(b.String(), "NOT VALID") {
		t.Fatalf("summary does not say the comparison is not valid:\n%s", b.String())
	}
	if st, err := os.Stat(cfg.CompareJSON); err != nil || st.Size() == 0 {
		t.Fatalf("report file: %v", err)
	}
}
