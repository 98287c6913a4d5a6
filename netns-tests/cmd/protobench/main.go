// Command protobench is make bench's part for protocol-aware sessions: the
// cost of each protocol framer per message (its Go benchmark, over a
// realistic pipelined stream), the cost of the response comparison per
// compared request (package compare's benchmark over the same fixtures:
// production's answer and the target's decoded, paired and compared), and
// how long each protocol's lab capture takes to replay at --speed 1
// against how long it took to capture (the lab tests TestReplay<Protocol>
// log it). Each figure is printed with PASS or MISS against its target:
// under 1 µs per framed message, under compareTarget per compared request,
// and a replay within 10% of the capture plus a fixed start-up.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// startup is the fixed start-up the pace target allows: the stack, the
// TUN and the first routes are set up before the first session is due.
const startup = 500 * time.Millisecond

// compareTarget is the most a compared request may cost: a tenth of what
// the replay itself spends per request (about 60-350 µs of CPU, make
// bench), so that comparing never changes the replay's timing.
const compareTarget = 10 * time.Microsecond

var (
	benchLine   = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(.*)$`)
	nsPerMsg    = regexp.MustCompile(`([\d.]+) ns/msg`)
	mbPerSec    = regexp.MustCompile(`([\d.]+) MB/s`)
	allocsPerOp = regexp.MustCompile(`(\d+) allocs/op`)
	paceLine    = regexp.MustCompile(`PACE proto=(\S+) sessions=(\d+) turns=(\d+) framed=(\d+) turn_wait=(\d+) capture_s=([\d.]+) replay_s=([\d.]+) lag_max_ms=([\d.]+) lag_p50_ms=([\d.]+)`)
)

func main() {
	skipLab := flag.Bool("no-lab", false, "only the framer benchmarks (the pace needs root and the lab)")
	flag.Parse()
	// A missed target is a figure (printed MISS), as in the main bench; a
	// run that could not measure is an error.
	if _, err := run(*skipLab); err != nil {
		fmt.Fprintln(os.Stderr, "protobench:", err)
		os.Exit(1)
	}
}

func run(skipLab bool) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	allOK := true
	out, err := goTest(ctx, "-run", "^$", "-bench", "^Benchmark(Framer|Responses|Requests)", "-benchtime", "1s", "-count", "1",
		"./httpframe", "./h2frame", "./respframe", "./mcframe", "./myframe", "./pgframe")
	if err != nil {
		return false, err
	}
	fmt.Println("framer cost per message (Go benchmarks; HTTP/2 per frame)")
	fmt.Printf("  %-44s %12s   %-8s\n", "benchmark", "ns/message", "target")
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "pkg: ") {
			pkg = strings.TrimPrefix(strings.TrimPrefix(l, "pkg: "), "github.com/stackcopy/stackcopy/")
		}
		g := benchLine.FindStringSubmatch(l)
		if g == nil {
			continue
		}
		ns, _ := strconv.ParseFloat(g[2], 64)
		if m := nsPerMsg.FindStringSubmatch(g[3]); m != nil {
			ns, _ = strconv.ParseFloat(m[1], 64) // the benchmark's op is not one message
		}
		verdict := "PASS"
		if ns >= 1000 {
			verdict, allOK = "MISS", false
		}
		fmt.Printf("  %-44s %12.0f   <1 µs %s\n", pkg+"."+g[1], ns, verdict)
	}
	ok, err := compareCost(ctx)
	if err != nil {
		return false, err
	}
	allOK = allOK && ok
	if skipLab {
		return allOK, nil
	}
	out, err = goTest(ctx, "-count", "1", "-v", "-run", "^TestReplay(Redis|Memcached|MySQL|Postgres|HTTP2)$", "./netns-tests/")
	fmt.Println()
	fmt.Println("replay of each protocol's lab capture at --speed 1 (real clients → real server, replayed to a fresh server)")
	fmt.Printf("  %-10s %8s %7s %7s %9s %10s %10s %7s %12s %12s   %s\n", "protocol", "sessions", "turns", "framed", "turn-wait", "capture", "replay", "ratio", "lag max", "lag typical", "target")
	found := 0
	sc = bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		g := paceLine.FindStringSubmatch(sc.Text())
		if g == nil {
			continue
		}
		found++
		capS, _ := strconv.ParseFloat(g[6], 64)
		repS, _ := strconv.ParseFloat(g[7], 64)
		verdict := "PASS"
		if repS > 1.1*capS+startup.Seconds() || g[5] != "0" {
			verdict, allOK = "MISS", false
		}
		fmt.Printf("  %-10s %8s %7s %7s %9s %9.2fs %9.2fs %6.2fx %10sms %10sms   ≤1.10x+%v, 0 turn-wait %s\n",
			g[1], g[2], g[3], g[4], g[5], capS, repS, repS/capS, g[8], g[9], startup, verdict)
	}
	if err != nil {
		// A failing lab test is a broken replay, not a slow one: say so.
		fmt.Println("  lab tests failed; their output follows")
		os.Stdout.Write(tail(out, 4000))
		return false, err
	}
	if found == 0 {
		return false, errors.New("the lab tests printed no PACE lines (not root? run through make bench)")
	}
	return allOK, nil
}

func goTest(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", append([]string{"test"}, args...)...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	if err != nil {
		return b.Bytes(), fmt.Errorf("go test %s: %w", strings.Join(args, " "), err)
	}
	return b.Bytes(), nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// compareCost runs package compare's benchmark: per protocol, a
// conversation's production and target answers (the same bytes) decoded,
// paired and compared.
func compareCost(ctx context.Context) (bool, error) {
	out, err := goTest(ctx, "-run", "^$", "-bench", "^BenchmarkCompare", "-benchtime", "2s", "-count", "1", "./compare")
	if err != nil {
		return false, err
	}
	fmt.Println()
	fmt.Println("response comparison cost per compared request (both answers decoded, paired, compared; Go benchmark over the framer fixtures)")
	fmt.Printf("  %-28s %12s %12s %12s   %s\n", "protocol", "ns/request", "MB/s", "allocs/op", "target")
	allOK, found := true, 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		g := benchLine.FindStringSubmatch(sc.Text())
		if g == nil {
			continue
		}
		m := nsPerMsg.FindStringSubmatch(g[3])
		if m == nil {
			continue
		}
		found++
		ns, _ := strconv.ParseFloat(m[1], 64)
		mbs, allocs := "", ""
		if f := mbPerSec.FindStringSubmatch(g[3]); f != nil {
			mbs = f[1]
		}
		if f := allocsPerOp.FindStringSubmatch(g[3]); f != nil {
			allocs = f[1]
		}
		verdict := "PASS"
		if ns >= float64(compareTarget.Nanoseconds()) {
			verdict, allOK = "MISS", false
		}
		fmt.Printf("  %-28s %12.0f %12s %12s   <%v %s\n", strings.TrimPrefix(g[1], "BenchmarkCompare/"), ns, mbs, allocs, compareTarget, verdict)
	}
	if found == 0 {
		return false, errors.New("the compare benchmark printed no ns/msg figures")
	}
	return allOK, nil
}
