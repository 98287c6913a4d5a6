package capture

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/stackcopy/stackcopy/internal/pcapfilter"
	"github.com/stackcopy/stackcopy/transfer"
	"golang.org/x/net/bpf"
)

// Kernel packet filters for live capture (see OpenLive). The filter a live
// source attaches to its sockets lets only mirrored traffic reach
// userspace: for each transfer, TCP to the online address (or port) and TCP
// from it, that is
//
//	tcp and ((dst host IP and dst port P) or (src host IP and src port P))
//
// over all transfers, IPv4 only (IPv6 is not replayed), with "host IP" left
// out for port-only transfers. Like pcap's "tcp port P", it rejects
// non-first fragments (they carry no ports); first fragments pass and are
// counted as Fragments.

// filterLink says where the IP header starts in the bytes a socket's
// filter sees: the same for generated filters and for a user's -F, which
// pcapfilter compiles.
type filterLink = pcapfilter.Link

const (
	// filterEthernet: an Ethernet frame (SOCK_RAW on an Ethernet or
	// loopback interface). The kernel usually strips VLAN tags into packet
	// metadata before the filter runs; tags left in the frame (a second
	// 802.1ad tag, a transmit path without tag offload) are skipped, up to
	// two.
	filterEthernet = pcapfilter.Ethernet
	// filterCooked: the IP header itself (SOCK_DGRAM: the "any" device and
	// interfaces without Ethernet headers).
	filterCooked = pcapfilter.Raw
)

// bpfMaxInsns is the kernel's limit on a classic BPF program (BPF_MAXINSNS).
const bpfMaxInsns = pcapfilter.MaxInsns

// Scratch memory slots of the generated filter.
const (
	memSrcIP = iota
	memDstIP
	memSrcPort
	memDstPort
)

// transferFilter builds the kernel filter for ts: it accepts (returning
// snaplen) exactly the IPv4 TCP packets to or from an online address of ts.
// Transfers with an IPv6 online address are left out. It fails if no
// transfer can match IPv4 or the program would exceed the kernel's limit.
func transferFilter(ts transfer.Transfers, link filterLink, snaplen uint32) ([]bpf.Instruction, error) {
	var p bpfProg
	switch link {
	case filterEthernet:
		// X = offset of the IP header.
		p.emit(bpf.LoadAbsolute{Off: 12, Size: 2})
		p.jumpTo(bpf.JumpEqual, etherIPv4, "eth14", "")
		p.vlanTests("tag1", "drop1")
		p.label("tag1")
		p.emit(bpf.LoadAbsolute{Off: 16, Size: 2})
		p.jumpTo(bpf.JumpEqual, etherIPv4, "eth18", "")
		p.vlanTests("tag2", "drop1")
		p.label("tag2")
		p.emit(bpf.LoadAbsolute{Off: 20, Size: 2})
		p.jumpTo(bpf.JumpEqual, etherIPv4, "eth22", "drop1")
		for _, off := range []uint32{14, 18, 22} {
			p.label("eth" + strconv.Itoa(int(off)))
			p.emit(bpf.LoadConstant{Dst: bpf.RegX, Val: off})
			p.ja("ip")
		}
		p.label("drop1")
		p.emit(bpf.RetConstant{Val: 0})
	case filterCooked:
		p.emit(bpf.LoadConstant{Dst: bpf.RegX, Val: 0})
	default:
		return nil, fmt.Errorf("unknown filter link %d", link)
	}

	// IPv4, TCP, not a non-first fragment; addresses and ports to scratch
	// memory, so each transfer costs two comparisons per direction.
	p.label("ip")
	p.emit(bpf.LoadIndirect{Off: 0, Size: 1})
	p.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0})
	p.jumpTo(bpf.JumpEqual, 0x40, "", "drop2")
	p.emit(bpf.LoadIndirect{Off: 9, Size: 1})
	p.jumpTo(bpf.JumpEqual, 6, "", "drop2")
	p.emit(bpf.LoadIndirect{Off: 6, Size: 2})
	p.jumpTo(bpf.JumpBitsSet, 0x1fff, "drop2", "")
	p.emit(bpf.LoadIndirect{Off: 12, Size: 4})
	p.emit(bpf.StoreScratch{Src: bpf.RegA, N: memSrcIP})
	p.emit(bpf.LoadIndirect{Off: 16, Size: 4})
	p.emit(bpf.StoreScratch{Src: bpf.RegA, N: memDstIP})
	// X += IP header length.
	p.emit(bpf.LoadIndirect{Off: 0, Size: 1})
	p.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x0f})
	p.emit(bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 2})
	p.emit(bpf.ALUOpX{Op: bpf.ALUOpAdd})
	p.emit(bpf.TAX{})
	p.emit(bpf.LoadIndirect{Off: 0, Size: 2})
	p.emit(bpf.StoreScratch{Src: bpf.RegA, N: memSrcPort})
	p.emit(bpf.LoadIndirect{Off: 2, Size: 2})
	p.emit(bpf.StoreScratch{Src: bpf.RegA, N: memDstPort})
	p.ja("transfers")
	// Not a "ret #0": the kernel's checker follows a return's fall-through
	// with the scratch slots it had, and the transfer blocks load all
	// four. A jump resets that, and may jump any distance.
	p.label("drop2")
	p.ja("drop")

	// One block per transfer, ending in its own accept, so every jump
	// stays short however many transfers there are.
	p.label("transfers")
	n := 0
	for i, t := range ts {
		addr := t.Online.Addr()
		if addr.IsValid() && !addr.Is4() {
			continue
		}
		n++
		port := uint32(t.Online.Port())
		accept, next := fmt.Sprintf("accept%d", i), fmt.Sprintf("next%d", i)
		if !addr.IsValid() {
			p.emit(bpf.LoadScratch{Dst: bpf.RegA, N: memDstPort})
			p.jumpTo(bpf.JumpEqual, port, accept, "")
			p.emit(bpf.LoadScratch{Dst: bpf.RegA, N: memSrcPort})
			p.jumpTo(bpf.JumpEqual, port, "", next)
		} else {
			ip := addr.As4()
			ip32 := uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
			src := fmt.Sprintf("src%d", i)
			p.emit(bpf.LoadScratch{Dst: bpf.RegA, N: memDstPort})
			p.jumpTo(bpf.JumpEqual, port, "", src)
			p.emit(bpf.LoadScratch{Dst: bpf.RegA, N: memDstIP})
			p.jumpTo(bpf.JumpEqual, ip32, accept, "")
			p.label(src)
			p.emit(bpf.LoadScratch{Dst: bpf.RegA, N: memSrcPort})
			p.jumpTo(bpf.JumpEqual, port, "", next)
			p.emit(bpf.LoadScratch{Dst: bpf.RegA, N: memSrcIP})
			p.jumpTo(bpf.JumpEqual, ip32, "", next)
		}
		p.label(accept)
		p.emit(bpf.RetConstant{Val: snaplen})
		p.label(next)
	}
	p.label("drop")
	p.emit(bpf.RetConstant{Val: 0})
	if n == 0 {
		return nil, errors.New("no transfer can match IPv4 traffic (live capture replays IPv4 only)")
	}
	return p.assemble()
}

// bpfProg assembles a classic BPF program with symbolic forward jumps.
type bpfProg struct {
	ins    []bpf.Instruction
	labels map[string]int
	jumps  []bpfJump
}

type bpfJump struct {
	at     int
	jt, jf string // "" = the next instruction
}

func (p *bpfProg) emit(in bpf.Instruction) { p.ins = append(p.ins, in) }

func (p *bpfProg) label(name string) {
	if p.labels == nil {
		p.labels = make(map[string]int)
	}
	p.labels[name] = len(p.ins)
}

// jumpTo emits a conditional jump to labels jt and jf ("" = fall through).
func (p *bpfProg) jumpTo(cond bpf.JumpTest, val uint32, jt, jf string) {
	p.jumps = append(p.jumps, bpfJump{at: len(p.ins), jt: jt, jf: jf})
	p.emit(bpf.JumpIf{Cond: cond, Val: val})
}

// ja emits an unconditional jump.
func (p *bpfProg) ja(to string) {
	p.jumps = append(p.jumps, bpfJump{at: len(p.ins), jt: to})
	p.emit(bpf.Jump{})
}

// vlanTests jumps to tag if A holds a VLAN ethertype, else to other.
func (p *bpfProg) vlanTests(tag, other string) {
	p.jumpTo(bpf.JumpEqual, 0x8100, tag, "")
	p.jumpTo(bpf.JumpEqual, 0x88a8, tag, "")
	p.jumpTo(bpf.JumpEqual, 0x9100, tag, other)
}

func (p *bpfProg) assemble() ([]bpf.Instruction, error) {
	if len(p.ins) > bpfMaxInsns {
		return nil, fmt.Errorf("filter needs %d instructions, more than the kernel's %d (too many transfers)", len(p.ins), bpfMaxInsns)
	}
	skip := func(at int, to string) (uint32, error) {
		if to == "" {
			return 0, nil
		}
		dst, ok := p.labels[to]
		if !ok {
			return 0, fmt.Errorf("filter: undefined label %q", to)
		}
		if dst <= at {
			return 0, fmt.Errorf("filter: backward jump to %q", to)
		}
		return uint32(dst - at - 1), nil
	}
	out := append([]bpf.Instruction(nil), p.ins...)
	for _, j := range p.jumps {
		st, err := skip(j.at, j.jt)
		if err != nil {
			return nil, err
		}
		switch in := out[j.at].(type) {
		case bpf.Jump:
			in.Skip = st
			out[j.at] = in
		case bpf.JumpIf:
			sf, err := skip(j.at, j.jf)
			if err != nil {
				return nil, err
			}
			if st > 255 || sf > 255 {
				return nil, fmt.Errorf("filter: jump at %d too far (%d, %d)", j.at, st, sf)
			}
			in.SkipTrue, in.SkipFalse = uint8(st), uint8(sf)
			out[j.at] = in
		}
	}
	return out, nil
}
