package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// The stages a stackcopy CPU profile is split into, in pipeline order: a
// sample belongs to the stage of the innermost stackcopy or gVisor
// function on its stack (so an allocation, a copy or a system call counts
// for the stage that asked for it); samples with none (the garbage
// collector's workers, the scheduler) are "runtime". Shared helpers under
// internal/ (quietio's socket calls, framekit) are no stage of their own:
// their time counts for the stage that called them.
var stages = []struct {
	name     string
	prefixes []string
}{
	{"capture", []string{"github.com/stackcopy/stackcopy/capture."}},
	{"session", []string{"github.com/stackcopy/stackcopy/session."}},
	{"replay", []string{
		"github.com/stackcopy/stackcopy/replay.", "github.com/stackcopy/stackcopy/mirror.",
		"github.com/stackcopy/stackcopy/compare", "github.com/stackcopy/stackcopy/transfer.",
		"github.com/stackcopy/stackcopy/httpframe.", "github.com/stackcopy/stackcopy/h2frame.",
		"github.com/stackcopy/stackcopy/respframe.", "github.com/stackcopy/stackcopy/mcframe.",
		"github.com/stackcopy/stackcopy/myframe.", "github.com/stackcopy/stackcopy/pgframe.",
	}},
	{"stack", []string{"github.com/stackcopy/stackcopy/netstack.", "gvisor.dev/gvisor/"}},
	{"wire", []string{"github.com/stackcopy/stackcopy/wire.", "github.com/stackcopy/stackcopy/hostnet."}},
	{"relay", []string{"github.com/stackcopy/stackcopy/relay."}},
}

const runtimeStage = "runtime"

// stageOrder is the order a split is printed in.
var stageOrder = func() []string {
	var names []string
	for _, st := range stages {
		names = append(names, st.name)
	}
	return append(names, runtimeStage)
}()

// stageSplit is a CPU profile's time per stage.
type stageSplit struct {
	total time.Duration
	by    map[string]time.Duration
}

// splitProfile reads a CPU profile written by stackcopy --cpuprofile.
func splitProfile(path string) (stageSplit, error) {
	f, err := os.Open(path)
	if err != nil {
		return stageSplit{}, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return stageSplit{}, fmt.Errorf("%s: %w", path, err)
	}
	idx := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" && st.Unit == "nanoseconds" {
			idx = i
		}
	}
	if idx < 0 {
		return stageSplit{}, fmt.Errorf("%s: not a CPU profile", path)
	}
	out := stageSplit{by: map[string]time.Duration{}}
	for _, s := range p.Sample {
		d := time.Duration(s.Value[idx])
		out.total += d
		out.by[stageOf(s)] += d
	}
	return out, nil
}

// stageLine is the split of the profile at path as a line (see line), or
// why there is none.
func stageLine(path string, per int64, unit string) string {
	sp, err := splitProfile(path)
	if err != nil {
		return fmt.Sprintf("no profile: %v", err)
	}
	return sp.line(per, unit)
}

// stageOf finds the innermost frame of a known stage (Location[0] is the
// leaf; within a location, Line[0] is the innermost inlined call).
func stageOf(s *profile.Sample) string {
	for _, loc := range s.Location {
		for _, ln := range loc.Line {
			if ln.Function == nil {
				continue
			}
			if name, ok := stageOfFunc(ln.Function.Name); ok {
				return name
			}
		}
	}
	return runtimeStage
}

// stageOfFunc is the stage a function belongs to, by its package.
func stageOfFunc(fn string) (string, bool) {
	for _, st := range stages {
		for _, pre := range st.prefixes {
			if strings.HasPrefix(fn, pre) {
				return st.name, true
			}
		}
	}
	return "", false
}

// line prints the split as shares of the total and, when per > 0, as CPU
// time per unit (per request, per session, per MiB).
func (s stageSplit) line(per int64, unit string) string {
	if s.total <= 0 {
		return "no samples"
	}
	var parts []string
	for _, name := range stageOrder {
		d := s.by[name]
		part := fmt.Sprintf("%s %.0f%%", name, 100*float64(d)/float64(s.total))
		if per > 0 {
			part += fmt.Sprintf(" (%.1f µs/%s)", float64(d.Microseconds())/float64(per), unit)
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, ", ")
}
