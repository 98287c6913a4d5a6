// Package rawprobe holds what the rawprobe program (cmd/rawprobe) writes,
// so that the lab tests decode the same type the probe encodes.
package rawprobe

import "github.com/stackcopy/stackcopy/netstack"

// Result is what rawprobe writes to -out: one upload over a send-only
// wire.
type Result struct {
	Wire    string  `json:"wire"`               // raw or afpacket
	GSO     string  `json:"gso"`                // off, coalesce or host
	Client  string  `json:"client"`             // the forged client address
	NextHop string  `json:"next_hop,omitempty"` // afpacket: the MAC frames went to
	Bytes   int64   `json:"bytes"`
	SHA256  string  `json:"sha256"`
	Seconds float64 `json:"seconds"`
	Mbps    float64 `json:"mbps"`
	// Answers counts the target's packets captured and injected.
	Answers uint64         `json:"answers"`
	Stats   netstack.Stats `json:"stats"`
}
