// Package doctor checks, read-only, what a stackcopy or intercept
// deployment needs from its host: privileges, sysctls, routes, devices,
// the NFQUEUE rule, offloads, the relay key and the relay itself. Every
// check is one line of a Report: ok, info, warn or FAIL, with the exact
// command that fixes what is wrong. FAIL means the run would break (or,
// like a forwarding assistant, leak answers to real clients); warn means
// it would run, worse than it could.
//
// The doctor never changes the host: it reads /proc and /sys, asks the
// kernel about routes, links and offloads, runs only read-only commands
// (iptables-save, nft list ruleset, tcpdump -ddd) and, for the relay, does
// the handshake a run would do and disconnects. It prints fixes and never
// applies them: an operator decides.
//
// It imports hostnet (the same sysctl and route readers the run's
// preflight uses), relay (key loading and Dial) and internal/pcapfilter;
// the commands translate their flags into Mirror and Intercept.
package doctor

import (
	"fmt"
	"io"
	"strings"
)

// Status grades one check.
type Status int

const (
	OK   Status = iota // as a run needs it
	Info               // nothing to fix here, but worth knowing (what the doctor cannot see)
	Warn               // the run works, but worse, or on borrowed time
	Fail               // the run would break, or leak answers to real clients
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Info:
		return "info"
	case Warn:
		return "warn"
	}
	return "FAIL"
}

// Result is one check's outcome.
type Result struct {
	Status Status
	Name   string // what was checked, e.g. "net.ipv4.ip_forward"
	Detail string // what was found, and why it matters
	Fix    string // the command that fixes it; "" when nothing is to fix
}

// Report is the ordered list of checks of one doctor run.
type Report struct {
	Program string // "stackcopy" or "intercept", for the summary line
	Results []Result
}

func (r *Report) add(s Status, name, fix, format string, args ...any) {
	r.Results = append(r.Results, Result{Status: s, Name: name, Detail: fmt.Sprintf(format, args...), Fix: fix})
}

func (r *Report) ok(name, format string, args ...any)   { r.add(OK, name, "", format, args...) }
func (r *Report) info(name, format string, args ...any) { r.add(Info, name, "", format, args...) }
func (r *Report) warn(name, fix, format string, args ...any) {
	r.add(Warn, name, fix, format, args...)
}
func (r *Report) fail(name, fix, format string, args ...any) {
	r.add(Fail, name, fix, format, args...)
}

// Count returns how many checks ended with s.
func (r *Report) Count(s Status) int {
	n := 0
	for _, res := range r.Results {
		if res.Status == s {
			n++
		}
	}
	return n
}

// Failed says whether a check found something that would break the run.
func (r *Report) Failed() bool { return r.Count(Fail) > 0 }

// Write prints one line per check, "STATUS NAME: DETAIL; fix: COMMAND",
// then a summary line. One line per check keeps the output greppable
// (doctor | grep FAIL) and each fix next to its problem.
func (r *Report) Write(w io.Writer) error {
	var b strings.Builder
	for _, res := range r.Results {
		fmt.Fprintf(&b, "%-4s  %s: %s", res.Status, res.Name, oneLine(res.Detail))
		if res.Fix != "" {
			fmt.Fprintf(&b, "; fix: %s", oneLine(res.Fix))
		}
		b.WriteByte('\n')
	}
	verdict := "nothing found that would stop a run"
	if r.Failed() {
		verdict = "a run would fail or leak: fix the FAIL lines"
	}
	fmt.Fprintf(&b, "%s doctor: %d FAIL, %d warn, %d ok: %s\n",
		r.Program, r.Count(Fail), r.Count(Warn), r.Count(OK), verdict)
	_, err := io.WriteString(w, b.String())
	return err
}

// oneLine keeps multi-line error texts (from tcpdump, iptables) on the
// check's line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\r", " ")), " ")
}
