// Package cliflag is what stackcopy's two commands (cmd/stackcopy,
// cmd/intercept) share about their command lines: flag types, and what
// their common flags turn into, the pid file (-P) and the logger (-l, -v).
// Long-running plumbing of a command lives here, not in the libraries the
// commands drive: a library does not write pid files or open log files.
//
// It imports only the standard library, never a stackcopy package.
package cliflag

import (
	"fmt"
	"strconv"
	"time"
)

// Duration is a pflag value that takes tcpcopy's plain seconds ("120",
// "1.5") or a Go duration ("90s", "500ms", "2m"). Negative values are
// refused.
type Duration struct{ D *time.Duration }

// String implements pflag.Value.
func (v Duration) String() string {
	if v.D == nil {
		return ""
	}
	return v.D.String()
}

// Set implements pflag.Value.
func (v Duration) Set(s string) error {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if n < 0 {
			return fmt.Errorf("negative duration %q", s)
		}
		*v.D = time.Duration(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is neither seconds nor a duration like 90s or 2m", s)
	}
	if d < 0 {
		return fmt.Errorf("negative duration %q", s)
	}
	*v.D = d
	return nil
}

// Type implements pflag.Value.
func (Duration) Type() string { return "duration" }
