package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/stackcopy/stackcopy/intercept"
	check "github.com/stackcopy/stackcopy/internal/doctor"
)

const doctorUsage = `Usage: intercept doctor [the flags of a run] [--server-port PORT]

Checks, without changing anything, what an intercept run with these flags
needs from this host. On the target (NFQUEUE): CAP_NET_ADMIN, iptables,
an iptables rule feeding the queue (with --server-port: one matching that
TCP source port), and that no other program has bound the queue. On an
assistant (-i): CAP_NET_RAW, the interface and its offloads, that it does
not forward, and the -F filter. Both: the relay key and its mode, and the
relay port (free, or held by a running intercept, which must then accept
this key). Prints one line per check (ok, info, warn, FAIL) with the
command that fixes it.

Doctor-only flags:
  --server-port PORT   the target server's port, so the NFQUEUE rule's
                       --sport is checked and the fix names it

Exit status: 0 nothing found that would stop the run (warnings allowed);
1 a FAIL line; 2 bad usage.
`

// doctor is `intercept doctor`: the run's flags (parsed by parseFlags,
// so they mean exactly what they mean to a run), checked.
func doctor(args []string, stdout, stderr io.Writer) int {
	rest, serverPort, err := cutServerPort(args)
	if err == nil && hasHelp(rest) {
		fmt.Fprint(stdout, doctorUsage)
		return exitOK
	}
	var o *options
	if err == nil {
		o, err = parseFlags(rest, io.Discard)
	}
	if err != nil {
		fmt.Fprintf(stderr, "intercept doctor: %v\n", err)
		fmt.Fprintln(stderr, "Try 'intercept doctor --help' for more information.")
		return exitUsage
	}
	c := o.cfg
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := check.CheckIntercept(ctx, check.Intercept{
		Capture:         c.Mode == intercept.ModeCapture,
		Queue:           c.Queue,
		ServerPort:      serverPort,
		Interface:       c.Interface,
		Filter:          c.Filter,
		AllowForwarding: c.AllowForwarding,
		KeyFile:         c.KeyFile,
		KeyEnv:          intercept.KeyEnv,
		Listen:          c.Listen,
	})
	if err := rep.Write(stdout); err != nil {
		fmt.Fprintf(stderr, "intercept doctor: %v\n", err)
		return exitFatal
	}
	if rep.Failed() {
		return exitFatal
	}
	return exitOK
}

// cutServerPort removes the doctor-only --server-port flag, so the rest
// goes through the run's own parser unchanged.
func cutServerPort(args []string) (rest []string, port int, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		var v string
		switch {
		case a == "--":
			return append(rest, args[i:]...), port, nil
		case a == "--server-port":
			if i+1 == len(args) {
				return nil, 0, errors.New("--server-port needs a port")
			}
			i++
			v = args[i]
		case strings.HasPrefix(a, "--server-port="):
			v = strings.TrimPrefix(a, "--server-port=")
		default:
			rest = append(rest, a)
			continue
		}
		if port, err = strconv.Atoi(v); err != nil || port < 1 || port > 65535 {
			return nil, 0, fmt.Errorf("--server-port: %q is not a port 1..65535", v)
		}
	}
	return rest, port, nil
}

func hasHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "-h" || a == "--help" {
			return true
		}
	}
	return false
}
