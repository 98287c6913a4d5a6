// Command demo shows stackcopy's main job on the built-in lab: it builds a
// two-namespace lab (a replay host and a target), starts a recording
// target server, replays the bundled capture testdata/demo.pcap through
// stackcopy and prints stackcopy's summary and what the target received.
// Then it replays the same capture to an nginx serving the next build of
// the site, which changed a page and added a JSON field, with --compare:
// stackcopy pairs every answer with production's and prints what changed
// (and writes the HTML report).
//
// With -make-pcap it instead rebuilds that capture: real curl clients
// talking to a real nginx in a lab, captured with tcpdump.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/stackcopy/stackcopy/netns-tests/lab"
	"github.com/stackcopy/stackcopy/netns-tests/recorder"
)

func main() {
	stackcopy := flag.String("stackcopy", "bin/stackcopy", "stackcopy binary")
	rec := flag.String("recorder", "bin/recorder", "recorder binary")
	pcap := flag.String("pcap", "testdata/demo.pcap", "capture to replay")
	makePcap := flag.Bool("make-pcap", false, "capture real curl → nginx traffic in a lab into -pcap instead")
	flag.Parse()
	var err error
	if *makePcap {
		err = capture(*pcap)
	} else {
		err = demo(*stackcopy, *rec, *pcap)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

var (
	onlineAddr = netip.MustParseAddr("198.18.1.1")
	replayAddr = netip.MustParseAddr("198.18.2.1")
	targetAddr = netip.MustParseAddr("198.18.2.2")
)

func abs(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(a); err != nil {
		return "", err
	}
	return a, nil
}

func demo(stackcopyBin, recorderBin, pcap string) error {
	if err := lab.CheckRoot(); err != nil {
		return err
	}
	var err error
	for _, p := range []*string{&stackcopyBin, &recorderBin, &pcap} {
		if *p, err = abs(*p); err != nil {
			return err
		}
	}
	l, err := lab.New("demo")
	if err != nil {
		return err
	}
	defer l.Close()
	hosts, err := l.NewHosts("replay", "target")
	if err != nil {
		return err
	}
	replay, target := hosts[0], hosts[1]
	// The target routes the forged clients back to the replay host, which
	// forwards into stackcopy's TUN.
	if _, _, err := l.ForwardPath(replay, netip.PrefixFrom(replayAddr, 24), target, netip.PrefixFrom(targetAddr, 24), netip.MustParsePrefix("198.18.1.0/24")); err != nil {
		return err
	}
	listen := netip.AddrPortFrom(targetAddr, 8080)
	logPath := filepath.Join(l.Dir(), "target.jsonl")
	if _, err := target.StartServer(listen, recorderBin, "-listen", listen.String(), "-mode", "http", "-log", logPath); err != nil {
		return err
	}

	fmt.Printf("lab: replay host %s (%s) ── target %s (%s), target routes 198.18.1.0/24 back via %s\n\n",
		replay.Name(), replayAddr, target.Name(), targetAddr, replayAddr)
	fmt.Printf("$ stackcopy -x 80-%s -i %s\n", listen, filepath.Base(pcap))
	sc, err := replay.Start(stackcopyBin, "-x", "80-"+listen.String(), "-i", pcap)
	if err != nil {
		return err
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer rcancel()
	runErr := sc.WaitContext(rctx, 10*time.Second)
	// stackcopy's summary (and any error) as it printed it.
	fmt.Print(sc.Log())

	// The recorder logs a connection once the client closed it.
	time.Sleep(500 * time.Millisecond)
	recs, sums, err := recorder.ReadLog(logPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fmt.Printf("\ntarget %s received %d requests on %d connections:\n", listen, len(recs), len(sums))
	for _, r := range recs {
		fmt.Printf("  %-21s #%d %7d bytes  sha256 %.16s  %s\n", r.Client, r.Index, r.Bytes, r.SHA256, r.Line)
	}
	if runErr != nil {
		return runErr
	}
	return compareDemo(l, replay, target, stackcopyBin, pcap)
}

// compareDemo replays the capture to the next build of the site and
// prints stackcopy's comparison.
func compareDemo(l *lab.Lab, replay, target *lab.Host, stackcopyBin, pcap string) error {
	listen := netip.AddrPortFrom(targetAddr, 80)
	if _, err := serveSite(l, target, listen, site(true)); err != nil {
		return err
	}
	report := filepath.Join(os.TempDir(), "stackcopy-demo-report.html")
	fmt.Printf("\nThe next build of the site (index.html reworded, a field added to /api/user) on %s:\n", listen)
	fmt.Printf("$ stackcopy -x 80-%s -i %s --compare --compare-html %s\n", listen, filepath.Base(pcap), report)
	sc, err := replay.StartWith(lab.StartOptions{Stdout: true}, stackcopyBin, "-x", "80-"+listen.String(), "-i", pcap, "--compare", "--compare-html", report)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runErr := sc.WaitContext(ctx, 10*time.Second)
	fmt.Print(sc.Stdout())
	fmt.Print(sc.Log())
	fmt.Printf("\nopen %s in a browser for the groups, the differences side by side and the latencies\n", report)
	return runErr
}

// site is the demo's web site: production's build, or the next one. The
// logo is the same pseudo-random image in both.
func site(next bool) map[string][]byte {
	logo := make([]byte, 40_000)
	chacha := rand.NewChaCha8([32]byte{'s', 't', 'a', 'c', 'k', 'c', 'o', 'p', 'y'})
	chacha.Read(logo)
	files := map[string][]byte{
		"index.html":  []byte("<h1>hello from the online server</h1>\n"),
		"logo.png":    logo,
		"api/user/7":  []byte(`{"id":7,"name":"ada","langs":["go","c"]}`),
		"api/user/8":  []byte(`{"id":8,"name":"ken","langs":["c"]}`),
		"api/user/11": []byte(`{"id":11,"name":"rob","langs":["go"]}`),
	}
	if next {
		files["index.html"] = []byte("<h1>hello from the new build</h1>\n")
		files["api/user/7"] = []byte(`{"id":7,"name":"ada","langs":["go","c"],"plan":"pro"}`)
		files["api/user/8"] = []byte(`{"id":8,"name":"ken","langs":["c"],"plan":"free"}`)
		files["api/user/11"] = []byte(`{"id":11,"name":"rob","langs":["go"],"plan":"free"}`)
	}
	return files
}

// serveSite serves files with nginx on h; /api/ answers JSON.
func serveSite(l *lab.Lab, h *lab.Host, listen netip.AddrPort, files map[string][]byte) (*lab.Nginx, error) {
	root, err := os.MkdirTemp(l.Dir(), "site-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, err
	}
	if err := lab.WriteSite(root, files); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(l.Dir(), "nginx-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	return lab.StartNginxConfig(h, lab.NginxConfig{Listen: listen, Root: root, Dir: dir,
		Server: "        location /api/ { default_type application/json; }\n"})
}

// capture records real curl → nginx sessions from three client addresses.
func capture(out string) error {
	if err := lab.CheckRoot(); err != nil {
		return err
	}
	l, err := lab.New("mkdemo")
	if err != nil {
		return err
	}
	defer l.Close()
	hosts, err := l.NewHosts("client", "online")
	if err != nil {
		return err
	}
	client, online := hosts[0], hosts[1]
	clients := []netip.Addr{netip.MustParseAddr("198.18.1.10"), netip.MustParseAddr("198.18.1.11"), netip.MustParseAddr("198.18.1.12")}
	clientIf, onlineIf, err := l.Link(client, netip.PrefixFrom(clients[0], 24), online, netip.PrefixFrom(onlineAddr, 24))
	if err != nil {
		return err
	}
	if err := client.AddAddrs(clientIf, netip.PrefixFrom(clients[1], 24), netip.PrefixFrom(clients[2], 24)); err != nil {
		return err
	}
	if _, err := serveSite(l, online, netip.AddrPortFrom(onlineAddr, 80), site(false)); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmp := filepath.Join(l.Dir(), "demo.pcap")
	capt, err := online.Capture(onlineIf, "tcp port 80", tmp)
	if err != nil {
		return err
	}
	base := "http://" + onlineAddr.String() + "/"
	runs := [][]string{
		{"--interface", clients[0].String(), "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", base + "index.html", base + "logo.png", base + "api/user/7"},
		{"--interface", clients[1].String(), "-o", "/dev/null", "-d", "user=demo&action=login", base + "index.html"},
		{"--interface", clients[2].String(), "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
			base + "index.html", base + "api/user/8", base + "logo.png", base + "missing", base + "api/user/11"},
	}
	for _, r := range runs {
		if _, err := client.Exec(ctx, append([]string{"curl", "-sS"}, r...)...); err != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond) // a visible gap between sessions at --speed 1
	}
	if dropped, err := capt.Stop(); err != nil || dropped != 0 {
		return fmt.Errorf("tcpdump: %d dropped, %v", dropped, err)
	}
	src, err := os.Open(tmp)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	fmt.Println("wrote", out)
	return dst.Close()
}
