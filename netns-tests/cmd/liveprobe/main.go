// Command liveprobe captures live with capture.OpenLive inside a lab
// namespace and writes what it saw as JSON: per client session the bytes
// and SHA-256 of the client stream the tracker reassembled, how the session
// ended, the ports of every segment returned, the source's counters, and
// the CPU time it used. It runs until SIGTERM (or -for), then closes the
// source, which ends the blocked Next.
//
//	liveprobe -iface eth0 -x 80-198.18.2.2:80 -out live.json
//
// With -inject it instead sends the Ethernet frames of a pcap file out of
// an interface as they are (for frames no kernel in the lab would build,
// such as VLAN-tagged ones):
//
//	liveprobe -iface eth0 -inject frames.pcap
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/stackcopy/stackcopy/capture"
	"github.com/stackcopy/stackcopy/netns-tests/liveprobe"
	"github.com/stackcopy/stackcopy/session"
	"github.com/stackcopy/stackcopy/transfer"
)

type stream struct {
	liveprobe.Stream
	h hash.Hash
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "liveprobe:", err)
		os.Exit(1)
	}
}

func run() error {
	ifaces := flag.String("iface", "", "interfaces, comma-separated, or any")
	x := flag.String("x", "", "transfers, as stackcopy -x")
	filter := flag.String("F", "", "pcap filter replacing the generated one")
	buffer := flag.Int("buffer", 0, "ring bytes per interface (0: default)")
	snaplen := flag.Int("snaplen", 0, "snap length (0: default)")
	track := flag.Bool("track", true, "reassemble and hash client streams (off: only count)")
	limit := flag.Duration("for", 5*time.Minute, "stop after this long at the latest")
	out := flag.String("out", "", "JSON result file (default stdout)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the capture to this file")
	inject := flag.String("inject", "", "send this pcap's Ethernet frames out of -iface instead of capturing")
	flag.Parse()
	if *inject != "" {
		return injectFrames(*ifaces, *inject)
	}

	ts, err := transfer.ParseTransfers(*x)
	if err != nil {
		return err
	}
	src, err := capture.OpenLive(capture.LiveConfig{
		Interfaces:  strings.Split(*ifaces, ","),
		Transfers:   ts,
		Filter:      *filter,
		BufferBytes: *buffer,
		Snaplen:     *snaplen,
	})
	if err != nil {
		return err
	}
	cpu0 := cpuTime()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	// The test waits for this line before it starts traffic.
	fmt.Printf("capturing on %s\n", *ifaces)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case <-sig:
		case <-time.After(*limit):
		}
		src.Close()
	}()

	res := liveprobe.Result{Interfaces: strings.Split(*ifaces, ","), Ports: map[uint16]uint64{}}
	streams := map[session.SessionKey]*stream{}
	var order []session.SessionKey
	tr := session.NewTracker(session.TrackerConfig{IsServer: ts.IsServer}, session.SinkFunc(func(k session.SessionKey, ev session.Event) {
		s := streams[k]
		if s == nil {
			s = &stream{Stream: liveprobe.Stream{Client: k.Client, Server: k.Server}, h: sha256.New()}
			streams[k] = s
			order = append(order, k)
		}
		switch ev.Kind {
		case session.EvData:
			s.h.Write(ev.Data)
			s.Bytes += int64(len(ev.Data))
		case session.EvTurn:
			s.Turns++
		case session.EvFin:
			s.End = "fin"
		case session.EvRst:
			s.End = "rst"
		case session.EvGap:
			s.End = "gap: " + ev.Reason
		}
	}))
	var maxLag time.Duration
	for {
		seg, err := src.Next()
		if err != nil {
			res.End = err.Error()
			res.EndClosed = errors.Is(err, net.ErrClosed) && errors.Is(err, os.ErrClosed)
			break
		}
		now := time.Now()
		lag := now.Sub(seg.Time)
		maxLag = max(maxLag, lag)
		if lag > time.Second || lag < -time.Second {
			res.Skewed++
		}
		if res.Segments == 0 {
			res.FirstTime, res.ReadFirst = seg.Time, now
		}
		res.LastTime, res.ReadLast = seg.Time, now
		res.Segments++
		res.PayloadBytes += uint64(len(seg.Payload))
		res.MaxPayload = max(res.MaxPayload, len(seg.Payload))
		if len(seg.Payload) > 1500 {
			res.SuperSegments++
		}
		res.Ports[seg.Src.Port()]++
		if seg.Dst.Port() != seg.Src.Port() {
			res.Ports[seg.Dst.Port()]++
		}
		if *track {
			tr.Add(seg)
		}
	}
	res.CPUSeconds = (cpuTime() - cpu0).Seconds()
	res.MaxLagMs = float64(maxLag.Microseconds()) / 1000
	res.Stats = src.Stats()
	tr.Flush()
	res.Tracker = tr.Stats()
	sort.SliceStable(order, func(i, j int) bool { return order[i].Client.Addr().Less(order[j].Client.Addr()) })
	for _, k := range order {
		s := streams[k]
		s.SHA256 = hex.EncodeToString(s.h.Sum(nil))
		res.Streams = append(res.Streams, s.Stream)
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if *out == "" {
		_, err = os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(*out, b, 0o644)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// injectFrames sends every frame of an Ethernet pcap out of ifname.
func injectFrames(ifname, path string) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return err
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		return fmt.Errorf("%s: link type %v, want Ethernet", path, r.LinkType())
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Ifindex: ifi.Index}
	n := 0
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := unix.Sendto(fd, data, 0, to); err != nil {
			return fmt.Errorf("frame %d: %w", n+1, err)
		}
		n++
	}
	fmt.Printf("sent %d frames\n", n)
	return nil
}
