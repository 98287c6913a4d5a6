// Package liveprobe holds what the liveprobe program (cmd/liveprobe) writes,
// so that the lab tests decode the same type the probe encodes.
package liveprobe

import (
	"net/netip"
	"time"

	"github.com/stackcopy/stackcopy/capture"
	"github.com/stackcopy/stackcopy/session"
)

// Result is what liveprobe writes to -out.
type Result struct {
	Interfaces []string `json:"interfaces"`
	// Segments returned by Next, their payload bytes, the largest payload
	// (above the MTU: a GRO/TSO super-segment) and how many exceeded 1500.
	Segments      uint64 `json:"segments"`
	PayloadBytes  uint64 `json:"payload_bytes"`
	MaxPayload    int    `json:"max_payload"`
	SuperSegments uint64 `json:"super_segments"`
	// Ports counts returned segments by source and by destination port.
	Ports map[uint16]uint64 `json:"ports"`
	// FirstTime and LastTime are the first and last segment's capture time.
	FirstTime time.Time `json:"first_time"`
	LastTime  time.Time `json:"last_time"`
	// ReadFirst and ReadLast are when Next returned the first and the last
	// segment (wall clock): after a backlog in the ring, the read rate.
	ReadFirst time.Time `json:"read_first"`
	ReadLast  time.Time `json:"read_last"`
	// MaxLagMs is the longest time from a segment's kernel timestamp to
	// Next returning it; Skewed counts segments stamped more than a second
	// away from the clock when returned.
	MaxLagMs float64 `json:"max_lag_ms"`
	Skewed   uint64  `json:"skewed"`
	// CPUSeconds is user+system time of the process from open to close.
	CPUSeconds float64              `json:"cpu_seconds"`
	Streams    []Stream             `json:"streams"`
	Tracker    session.TrackerStats `json:"tracker"`
	Stats      capture.LiveStats    `json:"stats"`
	// End is the error Next returned at the end (after Close: closed).
	End       string `json:"end"`
	EndClosed bool   `json:"end_closed"`
}

// Stream is one client session as the tracker reassembled it.
type Stream struct {
	Client netip.AddrPort `json:"client"`
	Server netip.AddrPort `json:"server"`
	Bytes  int64          `json:"bytes"`
	SHA256 string         `json:"sha256"`
	Turns  int            `json:"turns"`
	// End: "fin", "rst", "gap: reason", or "" (still open at the end).
	End string `json:"end"`
}
