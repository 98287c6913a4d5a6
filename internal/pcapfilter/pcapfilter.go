// Package pcapfilter compiles pcap-syntax filter expressions (tcpdump's,
// tcpcopy's -F) into classic BPF programs for packet sockets. There is no
// pcap compiler in pure Go, so it runs Debian's tcpdump with -ddd, which
// compiles without opening a device or needing privileges, and parses the
// decimal program tcpdump prints.
//
// It owns running tcpdump and reading its -ddd output, nothing else:
// attaching a program to a socket is internal/afpacket's job. It imports
// only the standard library and golang.org/x/net/bpf (the program type);
// never a stackcopy package.
package pcapfilter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/bpf"
)

// Link is the data link a program is compiled for: where the IP header
// starts in the bytes the filter sees.
type Link uint8

const (
	// Ethernet: Ethernet frames (a SOCK_RAW packet socket on an Ethernet or
	// loopback interface).
	Ethernet Link = iota
	// Raw: packets from the IP header on (a SOCK_DGRAM, "cooked", packet
	// socket).
	Raw
)

func (l Link) String() string {
	if l == Raw {
		return "raw IP"
	}
	return "ethernet"
}

// dlt is the tcpdump -y name of the link type.
func (l Link) dlt() string {
	if l == Raw {
		return "RAW"
	}
	return "EN10MB"
}

// MaxInsns is the kernel's limit on a classic BPF program (BPF_MAXINSNS).
const MaxInsns = 4096

// compileTimeout bounds one tcpdump run; compiling takes milliseconds.
const compileTimeout = 30 * time.Second

// Compile compiles expr for sockets of the given link into a program that
// returns snaplen for accepted packets, by running
// `tcpdump -s SNAPLEN -ddd -y EN10MB|RAW -- EXPR`. Errors are one line
// and name the expression.
//
// Compiled this way (not on a live device) libpcap generates no Linux
// packet-metadata loads: "vlan" only matches tags left in the frame, which
// the kernel usually strips before filtering, and "ether" primitives fail
// for Raw.
func Compile(expr string, link Link, snaplen int) ([]bpf.RawInstruction, error) {
	bin, err := exec.LookPath("tcpdump")
	if err != nil {
		return nil, fmt.Errorf("filter %q: compiling a pcap filter needs tcpdump (install the Debian package tcpdump): %w", expr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), compileTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-s", strconv.Itoa(snaplen), "-ddd", "-y", link.dlt(), "--", expr)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("filter %q: %s", expr, oneLine(msg))
	}
	prog, err := Parse(stdout.Bytes())
	if err != nil {
		return nil, fmt.Errorf("filter %q: tcpdump -ddd output: %w", expr, err)
	}
	return prog, nil
}

// Parse reads tcpdump -ddd output: the instruction count, then one
// "code jt jf k" line of decimal numbers per instruction. It refuses
// anything else, including a count that does not match the lines or
// exceeds the kernel's limit.
func Parse(out []byte) ([]bpf.RawInstruction, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	if !sc.Scan() {
		return nil, errors.New("empty")
	}
	n, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
	if err != nil || n <= 0 || n > MaxInsns {
		return nil, fmt.Errorf("bad instruction count %q", sc.Text())
	}
	prog := make([]bpf.RawInstruction, 0, n)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 {
			return nil, fmt.Errorf("line %d: %q: want 4 numbers", len(prog)+2, line)
		}
		var v [4]uint64
		for i, bits := range []int{16, 8, 8, 32} {
			if v[i], err = strconv.ParseUint(f[i], 10, bits); err != nil {
				return nil, fmt.Errorf("line %d: %q: %w", len(prog)+2, line, err)
			}
		}
		prog = append(prog, bpf.RawInstruction{Op: uint16(v[0]), Jt: uint8(v[1]), Jf: uint8(v[2]), K: uint32(v[3])})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(prog) != n {
		return nil, fmt.Errorf("%d instructions announced, %d given", n, len(prog))
	}
	return prog, nil
}

// oneLine joins a multi-line message (tcpdump's stderr) into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
