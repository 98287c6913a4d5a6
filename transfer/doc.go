// Package transfer holds tcpcopy's traffic selection and rewriting: which
// online server addresses are replayed to which targets (-x), the pool
// client addresses are folded onto (-c), and the stable sample of sessions
// kept (-r).
//
// transfer is a leaf: it imports net/netip and the standard library only.
package transfer
