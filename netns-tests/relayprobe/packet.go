// Package relayprobe holds what the relayprobe program (cmd/relayprobe)
// writes, so that the lab tests decode the same type the probe encodes.
package relayprobe

// Packet is one relayed packet as relayprobe logs it: one JSON line of its
// -out file.
type Packet struct {
	Src         string `json:"src"`
	Dst         string `json:"dst"`
	Flags       string `json:"flags"` // e.g. "SA": SYN ACK; F S R P A U
	Seq         uint32 `json:"seq"`
	Ack         uint32 `json:"ack"`
	IPLen       int    `json:"ip_len"`
	PayloadLen  int    `json:"payload_len"`
	PayloadZero bool   `json:"payload_zero"` // every payload byte is 0 (header-only relay)
	PayloadHead string `json:"payload_head"` // the first 32 payload bytes
}
