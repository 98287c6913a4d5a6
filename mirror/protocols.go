package mirror

import (
	"fmt"
	"slices"
	"strings"

	"github.com/stackcopy/stackcopy/replay"
)

// protocols are the protocols whose turns end by messages, besides
// HTTP/1 (built into replay): each framer package's detection and usual
// ports. The order matters only for detection by port.
func protocols() []replay.Protocol {
	return nil
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
