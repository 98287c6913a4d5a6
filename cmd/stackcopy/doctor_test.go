package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The doctor takes a run's command line: flags it does not check are
// accepted, the ones it checks are parsed as a run parses them.
func TestDoctorFlags(t *testing.T) {
	pcap := filepath.Join(t.TempDir(), "c.pcap")
	if err := os.WriteFile(pcap, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m, _, err := parseDoctorFlags([]string{"-x", "80-198.18.2.2:80", "-i", pcap, "--speed", "0", "-n", "3", "-c", "198.18.5.x", "--spill-max", "0", "-W"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Live || len(m.Targets) != 1 || m.Targets[0].String() != "198.18.2.2" || m.Output != "tun" || m.SpillDir != "" || len(m.Pool) != 254 {
		t.Errorf("got %+v", m)
	}
	for _, bad := range [][]string{
		{"-i", pcap},
		{"-x", "80-198.18.2.2:80"},
		{"-x", "80-198.18.2.2:80", "-i", pcap, "-o", "raw"},
	} {
		if _, _, err := parseDoctorFlags(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%q: want a usage error", bad)
		}
	}
}

func TestDoctorUsageExit(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"doctor", "--bogus-only"}, &out, &errb); code != exitUsage {
		t.Errorf("doctor without -x: exit %d, want %d (%s)", code, exitUsage, errb.String())
	}
	out.Reset()
	if code := run([]string{"doctor", "--help"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "stackcopy doctor") {
		t.Errorf("doctor --help: exit %d, output %q", code, out.String())
	}
}
