package mirror

import (
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/stackcopy/stackcopy/hostnet"
	"github.com/stackcopy/stackcopy/wire"
)

// egress is where forged packets leave and how answers come back.
type egress struct {
	dev wire.Device
	// answers is dev when it also reads (a TUN, an in-memory target): the
	// target's answers come back through it. nil: only through intercept.
	answers wire.Reader
	// routes are the forged-client routes added into the TUN; nil unless
	// Output is "tun".
	routes *hostnet.Device
	// kernelGSO: the kernel behind dev segments super-packets (a TUN with
	// a virtio-net header), so merging the stack's segments pays.
	kernelGSO bool
}

// openEgress opens cfg.Output, or takes cfg.Device as it is.
func openEgress(cfg *Config, log *slog.Logger) (*egress, error) {
	dev := cfg.Device
	var routes *hostnet.Device
	switch {
	case dev != nil:
	case cfg.Output == "tun":
		tun, err := wire.OpenTUN(cfg.TUNName)
		if err != nil {
			return nil, err
		}
		if routes, err = hostnet.Setup(tun.Name(), cfg.MTU, cfg.TxQueueLen); err != nil {
			tun.Close()
			return nil, err
		}
		for _, t := range cfg.Transfers {
			if err := hostnet.Preflight(tun.Name(), t.Target.Addr(), !cfg.NoRoutes); err != nil {
				tun.Close()
				return nil, err
			}
		}
		dev = tun
	case cfg.Output == "raw":
		w, err := wire.OpenRaw()
		if err != nil {
			return nil, err
		}
		dev = w
	default:
		w, err := openLinkLayer(cfg, log)
		if err != nil {
			return nil, err
		}
		dev = w
	}
	eg := &egress{dev: dev, routes: routes}
	eg.answers, _ = dev.(wire.Reader)
	_, eg.kernelGSO = dev.(*wire.TUN)
	return eg, nil
}

// openLinkLayer opens -o IFACE[@MAC]: link-layer injection towards the
// next hop, whose MAC is given or looked up in the neighbour table.
func openLinkLayer(cfg *Config, log *slog.Logger) (*wire.AFPacket, error) {
	iface, macText, _ := strings.Cut(cfg.Output, "@")
	var mac net.HardwareAddr
	var err error
	if macText != "" {
		if mac, err = net.ParseMAC(macText); err != nil {
			return nil, fmt.Errorf("-o %s: next-hop MAC: %w", cfg.Output, err)
		}
	} else if mac, err = hostnet.ResolveNextHop(iface, cfg.Transfers[0].Target.Addr()); err != nil {
		return nil, err
	}
	log.Info("link-layer egress", "interface", iface, "next_hop", mac)
	return wire.OpenAFPacket(iface, mac)
}
