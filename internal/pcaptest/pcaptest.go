// Package pcaptest reads the pcap fixtures of the framer tests
// (respframe, mcframe, myframe, pgframe) into the client and server bytes
// of each TCP connection, in capture order. It is test support: only
// tests import it.
package pcaptest

import (
	"errors"
	"io"
	"os"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Segment is one TCP payload of a connection, or, after Turns, one side's
// bytes between two changes of direction.
type Segment struct {
	Client bool
	Data   []byte
}

// Conns returns the TCP payloads of the connections to port in the
// capture at path, each connection's in capture order, the connections in
// the order of their first packets. A direction's bytes count from its
// SYN on (a connection captured from its middle is left out), and
// retransmitted bytes are dropped, which is all the repair a loopback
// capture needs: it has no loss or reordering.
func Conns(t testing.TB, path string, port uint16) [][]Segment {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := pcapgo.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	type conn struct {
		segs []Segment
		next [2]uint32 // by direction: the sequence number of the next new byte
		seen [2]bool   // by direction: its SYN was seen
	}
	byPort := map[layers.TCPPort]*conn{}
	var order []layers.TCPPort
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		tcp, ok := gopacket.NewPacket(data, r.LinkType(), gopacket.Default).Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok {
			continue
		}
		server := tcp.SrcPort == layers.TCPPort(port)
		other := tcp.SrcPort
		if server {
			other = tcp.DstPort
		}
		c := byPort[other]
		if c == nil {
			c = &conn{}
			byPort[other] = c
			order = append(order, other)
		}
		d := 0
		if server {
			d = 1
		}
		if tcp.SYN {
			c.next[d], c.seen[d] = tcp.Seq+1, true
			continue
		}
		p := tcp.Payload
		if len(p) == 0 || !c.seen[d] {
			continue
		}
		if off := c.next[d] - tcp.Seq; int32(off) > 0 { // retransmitted bytes
			if int(off) >= len(p) {
				continue
			}
			p = p[off:]
		}
		c.next[d] += uint32(len(p))
		c.segs = append(c.segs, Segment{!server, append([]byte(nil), p...)})
	}
	out := make([][]Segment, len(order))
	for i, p := range order {
		out[i] = byPort[p].segs
	}
	return out
}

// Turns joins the consecutive segments of one side: what a side sent
// between two changes of direction.
func Turns(segs []Segment) []Segment {
	var turns []Segment
	for _, s := range segs {
		if n := len(turns); n > 0 && turns[n-1].Client == s.Client {
			turns[n-1].Data = append(turns[n-1].Data, s.Data...)
		} else {
			turns = append(turns, Segment{s.Client, append([]byte(nil), s.Data...)})
		}
	}
	return turns
}
