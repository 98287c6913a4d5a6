package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestCutServerPort(t *testing.T) {
	rest, port, err := cutServerPort([]string{"-q", "3", "--server-port", "80", "--key-file", "k"})
	if err != nil || port != 80 || !slices.Equal(rest, []string{"-q", "3", "--key-file", "k"}) {
		t.Errorf("got %q %d %v", rest, port, err)
	}
	if _, port, _ := cutServerPort([]string{"--server-port=8080"}); port != 8080 {
		t.Errorf("--server-port=8080: got %d", port)
	}
	for _, bad := range [][]string{{"--server-port"}, {"--server-port", "x"}, {"--server-port=70000"}} {
		if _, _, err := cutServerPort(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestDoctorUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"doctor", "-F", "tcp"}, &out, &errb); code != exitUsage {
		t.Errorf("-F in nfqueue mode: exit %d, want %d", code, exitUsage)
	}
	if code := run([]string{"doctor", "-h"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "--server-port") {
		t.Errorf("doctor -h: exit %d, %q", code, out.String())
	}
}
