package intercept

import (
	"bytes"
	"strings"
	"testing"
)

func TestStripEthernet(t *testing.T) {
	ip := tcp4(t, serverAP, forgedAP, true, true, nil)
	eth := append(bytes.Repeat([]byte{0xaa}, 12), 0x08, 0x00)
	vlan := append(bytes.Repeat([]byte{0xaa}, 12), 0x81, 0x00, 0x00, 0x05, 0x08, 0x00)
	qinq := append(bytes.Repeat([]byte{0xaa}, 12), 0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00)
	for _, tc := range []struct {
		name  string
		frame []byte
		ok    bool
	}{
		{"ethernet", append(eth, ip...), true},
		{"vlan", append(vlan, ip...), true},
		{"qinq", append(qinq, ip...), true},
		{"arp", append(append(bytes.Repeat([]byte{0xaa}, 12), 0x08, 0x06), ip...), false},
		{"short", eth[:13], false},
	} {
		got, ok := stripEthernet(tc.frame)
		if ok != tc.ok || (ok && !bytes.Equal(got, ip)) {
			t.Errorf("%s: %v, %x", tc.name, ok, got)
		}
	}
}

func TestOpenCaptureErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  CaptureConfig
		want string
	}{
		{CaptureConfig{Filter: "tcp"}, "-i IFACE"},
		{CaptureConfig{Interface: "any", Filter: "tcp"}, `"any"`},
		{CaptureConfig{Interface: "lo"}, "filter (-F) is required"},
		{CaptureConfig{Interface: "no-such-if0", Filter: "tcp"}, "no-such-if0"},
	} {
		if _, err := OpenCapture(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
}
