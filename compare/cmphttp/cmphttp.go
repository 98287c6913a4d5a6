// Package cmphttp owns the HTTP decoders of the response comparison:
// HTTP/1.x (HTTP1) and HTTP/2 over cleartext, with prior knowledge or the
// h2c Upgrade (HTTP2). It cuts a connection's client stream into requests
// keyed by method and path template and each server's stream into answers
// whose fields (status, headers, body or flattened JSON) the compare
// package compares; it decides nothing about what counts as a difference.
//
// Both decoders keep memory bounded whatever the input: a header block is
// at most maxHeader bytes, a body is kept whole up to Limits.Body and only
// hashed beyond, a sample is at most Limits.Sample bytes, and a decoder
// that meets what it cannot read reports it once (Answer.Malformed, or a
// request keyed "(malformed)") and stops cutting that stream.
package cmphttp

import "github.com/stackcopy/stackcopy/compare"

// maxHeader bounds one message's header block (start line, fields and the
// empty line; HTTP/2: the decoded header list). Servers commonly refuse
// more than 8-64 KiB, so a longer block is taken for garbage.
const maxHeader = 64 << 10

// maxJSONFields caps the json:* fields of one answer; the rest are folded
// into one "json:(more)" digest so that a huge document stays one bounded
// answer and still compares unequal when anything in the tail changes.
const maxJSONFields = 2000

// maxHeld bounds the server bytes an HTTP/1 decoder keeps while it waits
// for the request they answer (it must know whether that was a HEAD).
const maxHeld = 1 << 20

type h1Protocol struct{}

// HTTP1 decodes HTTP/1.0 and HTTP/1.1 connections.
func HTTP1() compare.Protocol { return h1Protocol{} }

func (h1Protocol) Name() string { return "http1" }

func (h1Protocol) New(lim compare.Limits) compare.Conversation { return newH1Conv(fixLimits(lim)) }

type h2Protocol struct{}

// HTTP2 decodes cleartext HTTP/2 connections: prior knowledge (the client
// preface first) or an HTTP/1.1 request with "Upgrade: h2c". A connection
// whose first request is plain HTTP/1, or whose upgrade the server
// declines, is decoded as HTTP/1 from there on.
func HTTP2() compare.Protocol { return h2Protocol{} }

func (h2Protocol) Name() string { return "http2" }

func (h2Protocol) New(lim compare.Limits) compare.Conversation { return newH2Conv(fixLimits(lim)) }

// fixLimits makes negative limits zero so that the arithmetic on them
// needs no further checks.
func fixLimits(lim compare.Limits) compare.Limits {
	lim.Body = max(lim.Body, 0)
	lim.Sample = max(lim.Sample, 0)
	return lim
}
