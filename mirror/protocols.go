package mirror

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/stackcopy/stackcopy/h2frame"
	"github.com/stackcopy/stackcopy/mcframe"
	"github.com/stackcopy/stackcopy/myframe"
	"github.com/stackcopy/stackcopy/pgframe"
	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/respframe"
)

// protocols are the protocols whose turns end by messages, besides
// HTTP/1 (built into replay): each framer package's detection and usual
// ports. A session's first bytes decide, the port only where they say
// nothing. HTTP/2 has no port of its own (h2c shares 80 and 8080 with
// HTTP/1): only its preface, or an HTTP/1.1 Upgrade: h2c, or --protocol
// http2 make a session HTTP/2.
func protocols() []replay.Protocol {
	return []replay.Protocol{
		{Name: "http2", New: func() replay.Framer { return h2frame.New() }, Detect: h2frame.Detect, NoJoin: true},
		{Name: "redis", New: func() replay.Framer { return respframe.New() }, Detect: respframe.Detect, Ports: []uint16{6379}, Stateless: true},
		{Name: "memcached", New: func() replay.Framer { return mcframe.New() }, Detect: mcframe.Detect, Ports: []uint16{11211}, Stateless: true},
		{Name: "mysql", New: func() replay.Framer { return myframe.New() }, Detect: myframe.Detect, DetectServer: myframe.DetectServer, Ports: []uint16{3306},
			Renumber: func(renumbered, unknown *atomic.Uint64) replay.Renumberer {
				return myframe.NewRenumber(renumbered, unknown)
			}},
		{Name: "postgres", New: func() replay.Framer { return pgframe.New() }, Detect: pgframe.Detect, Ports: []uint16{5432}},
	}
}

// ProtocolNames lists what --protocol takes: auto (detect per session),
// none, http1, and the framed protocols.
func ProtocolNames() []string {
	names := []string{"auto", replay.ProtocolNone, replay.ProtocolHTTP1}
	for _, p := range protocols() {
		names = append(names, p.Name)
	}
	return names
}

// checkProtocol validates --protocol.
func checkProtocol(name string) error {
	if name == "" || slices.Contains(ProtocolNames(), name) {
		return nil
	}
	return fmt.Errorf("--protocol: %q, want one of %s", name, strings.Join(ProtocolNames(), ", "))
}
