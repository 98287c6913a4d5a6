package mirror

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/compare/cmphttp"
	"github.com/stackcopy/stackcopy/compare/cmpmc"
	"github.com/stackcopy/stackcopy/compare/cmpmysql"
	"github.com/stackcopy/stackcopy/compare/cmppg"
	"github.com/stackcopy/stackcopy/compare/cmpresp"
)

// compareProtocols are the protocols whose answers are compared message
// by message, under the names replay decides sessions by (HTTP/1 is
// replay's own ProtocolHTTP1); other sessions are compared whole, by
// bytes.
func compareProtocols() []compare.Protocol {
	return []compare.Protocol{
		cmphttp.HTTP1(), cmphttp.HTTP2(), cmpresp.Protocol(), cmpmc.Protocol(), cmpmysql.Protocol(), cmppg.Protocol(),
	}
}

// compareRules are the ignore rules of --compare-ignore and --compare-rules.
func (c Config) compareRules() ([]compare.Rule, error) {
	var rules []compare.Rule
	for _, s := range c.CompareIgnore {
		r, err := compare.ParseRule(s)
		if err != nil {
			return nil, fmt.Errorf("--compare-ignore: %w", err)
		}
		rules = append(rules, r)
	}
	if c.CompareRules != "" {
		more, err := compare.LoadRules(c.CompareRules)
		if err != nil {
			return nil, fmt.Errorf("--compare-rules: %w", err)
		}
		rules = append(rules, more...)
	}
	return rules, nil
}

// comparison is a Run's response comparison: the collector the replayer
// shows every session's bytes to, and the report files, created before
// any work starts so that a path that cannot be written fails the run at
// once rather than after hours of replay.
type comparison struct {
	col        *compare.Collector
	json, html *os.File
}

// openComparison returns nil when cfg does not compare.
func openComparison(cfg *Config) (*comparison, error) {
	if !cfg.Comparing() {
		return nil, nil
	}
	rules, err := cfg.compareRules()
	if err != nil {
		return nil, err
	}
	c := &comparison{col: compare.NewCollector(compare.Config{
		Limits: compare.Limits{
			Body:            cfg.CompareBody,
			Sample:          compare.DefaultLimits.Sample,
			ShowSecrets:     cfg.CompareSecrets,
			UnorderedArrays: cfg.CompareUnordered,
		},
		Protocols: compareProtocols(),
		Baseline:  len(cfg.Baseline) > 0,
		Rules:     rules,
		Samples:   cfg.CompareSamples,
	})}
	open := func(path, flag string) (*os.File, error) {
		if path == "" {
			return nil, nil
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flag, err)
		}
		return f, nil
	}
	if c.json, err = open(cfg.CompareJSON, "--compare-json"); err != nil {
		return nil, err
	}
	if c.html, err = open(cfg.CompareHTML, "--compare-html"); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// close closes the report files (written or not).
func (c *comparison) close() {
	for _, f := range []*os.File{c.json, c.html} {
		if f != nil {
			f.Close()
		}
	}
}

// finish builds the report once every session ended, writes the files
// and hangs the report on the summary.
func (c *comparison) finish(sum *Summary, log *slog.Logger) error {
	defer c.close()
	rep := c.col.Report()
	sum.Comparison = rep
	st := c.col.Stats()
	sum.Compare = &st
	if sum.Relay != nil && sum.Relay.HeaderOnly > 0 {
		// A header-only relay rebuilds answers with zeros for payload:
		// compared, every answer would "differ".
		sum.CompareInvalid = fmt.Sprintf("%d of the target's answers came back header-only: run intercept with --full-payload to compare them", sum.Relay.HeaderOnly)
		log.Error("comparison: the target's answers were not relayed whole", "header_only", sum.Relay.HeaderOnly)
	}
	var errs []error
	write := func(f *os.File, flag string, w func(*bufio.Writer) error) {
		if f == nil {
			return
		}
		b := bufio.NewWriter(f)
		err := w(b)
		if err == nil {
			err = b.Flush()
		}
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", flag, f.Name(), err))
		}
	}
	write(c.json, "--compare-json", func(b *bufio.Writer) error { return rep.WriteJSON(b) })
	write(c.html, "--compare-html", func(b *bufio.Writer) error { return rep.WriteHTML(b) })
	return errors.Join(errs...)
}
