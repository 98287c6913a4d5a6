package cmpmc

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/stackcopy/stackcopy/compare/cmptest"
)

// TestCapture decodes traffic captured from memcached 1.6.18 (see
// mcframe's TestCapture for what it holds).
func TestCapture(t *testing.T) {
	keys := slices.Sorted(maps.Keys(cmptest.CheckCapture(t, Protocol(), "../../mcframe/testdata/memcached.pcap", 21211, 2)))
	t.Logf("keys: %s", strings.Join(keys, ", "))
	for _, k := range []string{"set", "get", "gets", "gat", "touch", "incr", "decr", "delete", "version", "verbosity", "stats", "ms", "mg", "mn", "md", "ma", "me", "quit", "?", "(empty)"} {
		if !slices.Contains(keys, k) {
			t.Errorf("no %q request in the capture", k)
		}
	}
}
