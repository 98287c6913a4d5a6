package mirror

import (
	"encoding/binary"
	"slices"
	"testing"
)

// TestProtocolDetection: each protocol's real first bytes are claimed by
// that protocol (and, where they look alike, only by protocols the port
// then decides between); HTTP/1 request lines by none of them, so the
// built-in HTTP/1 framing keeps them.
func TestProtocolDetection(t *testing.T) {
	startup := binary.BigEndian.AppendUint32(nil, 0)
	startup = binary.BigEndian.AppendUint32(startup, 3<<16)
	startup = append(startup, "user\x00app\x00\x00"...)
	binary.BigEndian.PutUint32(startup, uint32(len(startup)))
	for _, tc := range []struct {
		client, server string
		want           []string // protocols that claim it
	}{
		{client: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{client: "POST /form HTTP/1.1\r\n"},
		{client: "HEAD / HTTP/1.0\r\n"},
		{client: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", want: []string{"http2"}},
		{client: "*1\r\n$4\r\nPING\r\n", want: []string{"redis"}},
		{client: string(startup), want: []string{"postgres"}},
		{server: "\x4a\x00\x00\x00\x0a" + "10.11.19-MariaDB\x00", want: []string{"mysql"}},
	} {
		var got []string
		for _, p := range protocols() {
			if (tc.client != "" && p.Detect != nil && p.Detect([]byte(tc.client))) ||
				(tc.server != "" && p.DetectServer != nil && p.DetectServer([]byte(tc.server))) {
				got = append(got, p.Name)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("client %q server %q: claimed by %v, want %v", tc.client, tc.server, got, tc.want)
		}
	}
	// memcached's text commands look like Redis inline commands: both may
	// claim them, and the port decides (11211 or 6379).
	for _, p := range protocols() {
		if p.Name == "memcached" && !p.Detect([]byte("get user:1\r\n")) {
			t.Error("memcached does not claim a get")
		}
	}
}
