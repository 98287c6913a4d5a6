package main

// The tcpcopy peer: TCPCopy (NetEase's tcpcopy and its intercept, C)
// mirrors the live workload's traffic, side by side with stackcopy in the
// same bench run, when the bench is given their binaries (-tcpcopy and
// -tcpcopy-intercept; `make bench TCPCOPY=DIR` after
// netns-tests/tcpcopy-peer/build.sh DIR). In a lab of its own, set up as
// TCPCopy's README deploys it: the target routes the answers to the forged
// clients (tcpcopy -c) to an assistant host, whose intercept captures
// them with pcap and relays their headers to tcpcopy; the assistant does
// not forward, so the answers end there.
//
//	client 198.18.1.10 ── online 198.18.1.1 (nginx :80, tcpcopy)
//	                      198.18.2.1 ── target 198.18.2.2 (nginx :80)
//	                                    198.18.3.1 ── assistant 198.18.3.2 (intercept)
//
// The target routes the forged clients (198.19.1.0/24) to the assistant,
// and the online host reaches the assistant's intercept through the
// target.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
)

const (
	tcTargetAst = "198.18.3.1/24"
	tcAssistant = "198.18.3.2/24"
	tcForged    = "198.19.1.0/24"
	tcPool      = "198.19.1.x" // -c, of both mirrors: tcForged
)

// tcpcopyLab is the peer's lab: the live lab's client, online host and
// target, plus the assistant.
type tcpcopyLab struct {
	liveLab
	assistant *lab.Host
	astIf     string // the assistant's interface towards the target
	tcIcpt    *lab.Proc
}

// tcpcopySetup builds the peer's lab and starts TCPCopy's intercept and
// both nginx. On an error it closes what it built.
func (b *bench) tcpcopySetup(ctx context.Context) (tl *tcpcopyLab, err error) {
	l, err := lab.New("bench-tcpcopy")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.closeLab("tcpcopy lab", l)
			tl = nil
		}
	}()
	tl = &tcpcopyLab{liveLab: liveLab{l: l}}
	hosts, err := l.NewHosts("client", "online", "target", "assistant")
	if err != nil {
		return tl, err
	}
	tl.client, tl.online, tl.target, tl.assistant = hosts[0], hosts[1], hosts[2], hosts[3]
	if _, tl.onlineIf, err = l.Link(tl.client, netip.MustParsePrefix(liveClient), tl.online, netip.MustParsePrefix(liveOnline)); err != nil {
		return tl, err
	}
	var fromOnline string
	if tl.mirrorIf, fromOnline, err = l.Link(tl.online, netip.MustParsePrefix(liveMirror), tl.target, netip.MustParsePrefix(liveTarget)); err != nil {
		return tl, err
	}
	toAst, astIf, err := l.Link(tl.target, netip.MustParsePrefix(tcTargetAst), tl.assistant, netip.MustParsePrefix(tcAssistant))
	if err != nil {
		return tl, err
	}
	targetAddr := netip.MustParsePrefix(liveTarget).Addr()
	astAddr := netip.MustParsePrefix(tcAssistant).Addr()
	for _, step := range []error{
		tl.target.AddRoute(netip.MustParsePrefix(tcForged), astAddr),
		tl.online.AddRoute(netip.MustParsePrefix(tcAssistant).Masked(), targetAddr),
		tl.assistant.AddRoute(netip.MustParsePrefix(liveMirror).Masked(), netip.MustParsePrefix(tcTargetAst).Addr()),
		tl.target.Sysctl("net.ipv4.ip_forward", "1"),
		// The forged clients arrive from the online host but are routed
		// to the assistant: strict reverse-path filtering would drop them
		// (TCPCopy's README says the same of rp_filter).
		tl.target.Sysctl("net.ipv4.conf.all.rp_filter", "0"),
		tl.target.Sysctl("net.ipv4.conf."+fromOnline+".rp_filter", "0"),
		tl.target.Sysctl("net.ipv4.conf."+toAst+".rp_filter", "0"),
		tl.online.Sysctl("net.core.somaxconn", "16384"),
		tl.target.Sysctl("net.core.somaxconn", "16384"),
	} {
		if step != nil {
			return tl, step
		}
	}
	tl.astIf = astIf
	if tl.tcIcpt, err = tl.assistant.Start(b.cfg.tcIntercept, "-i", astIf, "-F", "tcp and src port 80"); err != nil {
		return tl, err
	}
	if err := tl.assistant.WaitListening(ctx, netip.AddrPortFrom(astAddr, 36524)); err != nil {
		return tl, fmt.Errorf("tcpcopy's intercept did not listen on 36524: %w; log: %s", err, outputTail(tl.tcIcpt.Log()))
	}
	if err := tl.serveAnswer(true); err != nil {
		return tl, err
	}
	b.logf("tcpcopy lab %s: client %s ── online %s/%s (nginx, tcpcopy) ── target %s/%s (nginx) ── assistant %s (TCPCopy's intercept, pcap on %s)",
		l.Prefix(), liveClient, liveOnline, liveMirror, liveTarget, tcTargetAst, tcAssistant, astIf)
	return tl, nil
}

// tcpcopyStep runs tcpcopy afresh for one rate step; intercept runs
// throughout. Its CPU is counted per mirrored request (it has no stats of
// relayed answers; in this keep-alive workload the target sends one
// packet per request).
func (b *bench) tcpcopyStep(ctx context.Context, tl *tcpcopyLab, rate int) (liveStep, error) {
	st := liveStep{rate: rate}
	tc, err := tl.online.Start(b.cfg.tcpcopy, "-x", "80-"+netip.MustParsePrefix(liveTarget).Addr().String()+":80",
		"-s", netip.MustParsePrefix(tcAssistant).Addr().String(), "-c", tcPool)
	if err != nil {
		return st, err
	}
	defer tc.Stop()
	// tcpcopy connects to intercept at start; give it that second.
	time.Sleep(time.Second)
	select {
	case <-tc.Done():
		return st, fmt.Errorf("tcpcopy exited at start: %s", outputTail(tc.Log()))
	default:
	}
	tc0, err1 := tc.CPU()
	ic0, err2 := tl.tcIcpt.CPU()
	if err := errors.Join(err1, err2); err != nil {
		return st, err
	}
	if err := b.loadAndDrain(ctx, &tl.liveLab, &st); err != nil {
		return st, err
	}
	tc1, err1 := tc.CPU()
	ic1, err2 := tl.tcIcpt.CPU()
	if err := errors.Join(err1, err2); err != nil {
		return st, err
	}
	st.scCPU, st.icCPU = tc1-tc0, ic1-ic0
	st.answers = uint64(st.mirrored)
	st.noStats = "tcpcopy"
	return st, nil
}

// tcpcopyPeer runs the peer at the live workload's rates, up to the first
// that loses requests or that the load cannot reach, and lays it beside
// stackcopy's steps.
func (b *bench) tcpcopyPeer(ctx context.Context, trad []liveStep) ([]string, []row, error) {
	tl, err := b.tcpcopySetup(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("tcpcopy lab setup: %w", err)
	}
	defer b.closeLab("tcpcopy lab", tl.l)
	peer, err := b.ladder("live tcpcopy", liveRates, func(rate int) (liveStep, error) { return b.tcpcopyStep(ctx, tl, rate) })
	if err != nil {
		return nil, nil, err
	}
	adv, err := b.advancedSteps(ctx, tl)
	if err != nil {
		return nil, nil, err
	}
	return peerTable(peer, adv, trad)
}

// peerTable lays the peer's steps beside stackcopy's in the same
// deployment (adv) and in the traditional one (trad, NFQUEUE on the
// target), rate by rate; the summary rows compare like for like at the
// highest rate both ran without loss.
func peerTable(peer, adv, trad []liveStep) ([]string, []row, error) {
	cell := func(steps []liveStep, rate int) string {
		s, ok := stepAt(steps, rate)
		if !ok {
			return fmt.Sprintf("%7s %7s %6s", "-", "-", "-")
		}
		return fmt.Sprintf("%7.0f %7.0f %6d", s.scPerReq(), s.icPerAnswer(), s.lost)
	}
	details := []string{
		"tcpcopy peer, same load, side by side: CPU per mirrored request (mirror) and per relayed answer (intercept, µs), requests lost",
		"  TCPCopy: tcpcopy on the online host, its intercept with pcap on an assistant the target routes the forged clients (-c 198.19.1.x) to",
		"  stackcopy, same deployment: its intercept with AF_PACKET (-i) on that assistant, the same -c; traditional: the live workload above (intercept on NFQUEUE on the target)",
		"     rate |  tcpcopy  interc.   lost |  stackcopy interc.  lost | traditional interc. lost",
	}
	var rows []row
	for _, rate := range liveRates {
		p, ok := stepAt(peer, rate)
		if !ok {
			break
		}
		details = append(details, fmt.Sprintf("   %6d | %s | %s | %s", rate, cell(peer, rate), cell(adv, rate), cell(trad, rate)))
		s, ok := stepAt(adv, rate)
		if !ok || p.lost != 0 || s.lost != 0 {
			continue
		}
		rows = []row{
			{workload: fmt.Sprintf("  CPU/request vs tcpcopy @%d/s", rate), sc: fmt.Sprintf("%.0f µs", s.scPerReq()), kernel: fmt.Sprintf("tcpcopy %.0f µs", p.scPerReq()),
				ratio: ratioStr(s.scPerReq(), p.scPerReq()), target: "<=1.0x", verdict: verdict(s.scPerReq() <= p.scPerReq())},
			{workload: fmt.Sprintf("  intercept CPU vs tcpcopy's @%d/s", rate), sc: fmt.Sprintf("%.0f µs", s.icPerAnswer()), kernel: fmt.Sprintf("tcpcopy %.0f µs", p.icPerAnswer()),
				ratio: ratioStr(s.icPerAnswer(), p.icPerAnswer()), target: "<=1.0x", verdict: verdict(s.icPerAnswer() <= p.icPerAnswer())},
		}
	}
	for _, steps := range [][]liveStep{peer, adv} {
		if n := len(steps); n > 0 && steps[n-1].lost != 0 {
			details = append(details, fmt.Sprintf("  at %d req/s: %d of %d served requests not mirrored", steps[n-1].rate, steps[n-1].lost, steps[n-1].served))
		}
	}
	if rows == nil {
		return details, nil, errors.New("tcpcopy peer: no rate where both mirrored everything")
	}
	return details, rows, nil
}

// advancedSteps runs stackcopy in TCPCopy's own deployment: its forged
// clients in the same range (-c), routed by the target to the assistant,
// where stackcopy's intercept captures with AF_PACKET (-i) instead of
// TCPCopy's with pcap; like for like with the peer's figures above.
func (b *bench) advancedSteps(ctx context.Context, tl *tcpcopyLab) ([]liveStep, error) {
	if err := b.advancedIntercept(ctx, tl); err != nil {
		return nil, err
	}
	return b.ladder("live advanced", liveRates, func(rate int) (liveStep, error) { return b.liveStep(ctx, &tl.liveLab, rate, false) })
}

// advancedIntercept replaces TCPCopy's intercept on the assistant with
// stackcopy's (AF_PACKET, -i) and points stackcopy's steps at it.
func (b *bench) advancedIntercept(ctx context.Context, tl *tcpcopyLab) error {
	if err := tl.tcIcpt.Stop(); err != nil {
		b.logf("tcpcopy's intercept stop: %v", err)
	}
	var err error
	if tl.keyFile, err = tl.l.WriteKey("relay.key"); err != nil {
		return err
	}
	if tl.icpt, err = tl.assistant.Start(b.cfg.intercept, "--key-file", tl.keyFile, "-i", tl.astIf, "-F", "tcp and src port 80", "--stats-interval", "1s"); err != nil {
		return err
	}
	if err := poll(ctx, 15*time.Second, 50*time.Millisecond, "intercept to start", func() (bool, error) {
		return strings.Contains(tl.icpt.Log(), "intercept ready"), nil
	}); err != nil {
		return fmt.Errorf("%w; intercept log: %s", err, outputTail(tl.icpt.Log()))
	}
	tl.relayAddr = netip.MustParsePrefix(tcAssistant).Addr()
	tl.scExtra = []string{"-c", tcPool}
	return nil
}
