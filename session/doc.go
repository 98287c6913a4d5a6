// Package session follows each captured client's TCP session: from its
// SYN (or, with JoinMidStream, from the next turn boundary of a session
// seen mid-stream) it reassembles the client's byte stream across
// duplicates, retransmissions, reordering and overlaps, places turns where
// the captured server spoke in between, detects capture gaps, and reports
// all of it as Events to a Sink.
//
// session imports capture (for Segment) and nothing else of stackcopy; it
// must not import replay, netstack, wire, relay, mirror or intercept.
package session
