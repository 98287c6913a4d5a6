// Package archtest holds the test that keeps the package map of
// ARCHITECTURE.md true: every package imports only the stackcopy packages
// below it.
package archtest

import (
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/stackcopy/stackcopy/"

// allowed lists, for each package, the stackcopy packages it may import
// (non-test files). A package missing here may not exist: adding one means
// placing it on the map first.
var allowed = map[string][]string{
	"cmd/stackcopy":       {"mirror", "internal/cliflag", "transfer", "internal/doctor", "internal/cpuprof", "internal/cores", "internal/heapfloor"},
	"cmd/intercept":       {"intercept", "relay", "internal/cliflag", "internal/doctor", "internal/cpuprof", "internal/cores"},
	"mirror":              {"capture", "session", "transfer", "replay", "netstack", "wire", "hostnet", "relay", "internal/cliflag", "h2frame", "respframe", "mcframe", "myframe", "pgframe", "compare", "compare/cmphttp", "compare/cmpresp", "compare/cmpmc", "compare/cmpmysql", "compare/cmppg"},
	"intercept":           {"relay", "internal/afpacket", "internal/pcapfilter", "internal/mmsg", "internal/quietio"},
	"replay":              {"session", "transfer", "httpframe", "compare"},
	"session":             {"capture"},
	"capture":             {"transfer", "internal/afpacket", "internal/pcapfilter"},
	"netstack":            {"wire"},
	"wire":                {"internal/afpacket", "internal/quietio"},
	"wire/wiretest":       {"wire"},
	"transfer":            nil,
	"httpframe":           nil,
	"h2frame":             nil,
	"respframe":           {"internal/framekit"},
	"mcframe":             {"internal/framekit"},
	"myframe":             {"internal/framekit"},
	"pgframe":             {"internal/framekit"},
	"hostnet":             nil,
	"relay":               {"internal/quietio"},
	"internal/afpacket":   nil,
	"internal/pcapfilter": nil,
	"internal/cliflag":    nil,
	"internal/cpuprof":    nil,
	"internal/cores":      nil,
	"internal/heapfloor":  nil,
	"internal/mmsg":       nil,
	"internal/syncbuf":    nil,
	"internal/quietio":    nil,
	"internal/archtest":   nil,
	"internal/framekit":   nil,
	"internal/doctor":     {"hostnet", "relay", "internal/pcapfilter"},
	"deploy":              nil,
	"deploy/mkimage":      nil,
	"compare":             nil,
	"compare/cmphttp":     {"compare", "h2frame"},
	"compare/cmpresp":     {"compare", "respframe", "internal/framekit"},
	"compare/cmpmc":       {"compare", "internal/framekit"},
	"compare/cmpmysql":    {"compare", "myframe"},
	"compare/cmppg":       {"compare"},

	// Test support: only the framers' tests import these (the pcap fixture
	// reader; the bench harness, step tables and reference net.Conn).
	"internal/pcaptest":              nil,
	"internal/framekit/framekittest": {"internal/pcaptest"},
	"compare/cmptest":                {"compare", "internal/pcaptest"},
}

func TestImportsPointDown(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		switch {
		case rel == ".":
			return nil
		case strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || rel == "netns-tests" || rel == "bin":
			return filepath.SkipDir // the lab may import anything; it is not on the map
		case rel == "third_party":
			return filepath.SkipDir // other modules (gVisor's patched fork): not ours to map
		}
		pkg, err := build.ImportDir(path, 0)
		if _, ok := err.(*build.NoGoError); ok {
			return nil
		}
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		seen[rel] = true
		may, known := allowed[rel]
		if !known {
			t.Errorf("package %s is not on the map (internal/archtest and ARCHITECTURE.md)", rel)
			return nil
		}
		for _, imp := range pkg.Imports {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if !slices.Contains(may, dep) {
				t.Errorf("%s imports %s: not below it on the map", rel, dep)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range allowed {
		if !seen[p] {
			t.Errorf("the map names %s, which has no Go package", p)
		}
	}
}
