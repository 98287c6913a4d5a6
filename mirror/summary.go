package mirror

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/stackcopy/stackcopy/capture"
	"github.com/stackcopy/stackcopy/compare"
	"github.com/stackcopy/stackcopy/netstack"
	"github.com/stackcopy/stackcopy/relay"
	"github.com/stackcopy/stackcopy/replay"
	"github.com/stackcopy/stackcopy/session"
)

// Summary is what a Run did, printed as text (WriteText) and as the
// --stats-json document (WriteJSON). Both formats are parsed by scripts
// and the lab: their lines and keys do not change.
type Summary struct {
	Inputs  []string
	Loops   int
	Live    bool
	Elapsed time.Duration
	Routes  int  // forged client addresses routed into the TUN
	TUN     bool // the egress is a TUN (its drops are reported)

	// Interrupted: a replay of files stopped by a signal (ctx) before its
	// end. NeverStarted: sessions the files hold (-n copies included)
	// that the reader never reached, so never started (when the pre-pass
	// finished counting). CaptureSessions: the sessions one pass holds
	// (matched by -x, kept by -r; 0: not counted). NotMatching: client
	// SYNs per pass whose server matches no -x entry (files).
	Interrupted     bool
	NeverStarted    uint64
	CaptureSessions uint64
	NotMatching     uint64

	TUNTxDrops, TUNRxDrops uint64
	CaptureDrops           uint64             // live: packets the kernel lost before they were read
	Relay                  *relay.ClientStats // with intercepts

	Capture capture.SourceStats
	Tracker session.TrackerStats
	Replay  replay.Stats
	Stack   netstack.Stats

	// With comparing: the counts, the whole report (--compare-json and
	// --compare-html have it; the command prints its text), and why the
	// comparison cannot be trusted, if it cannot ("": it can).
	Compare        *compare.Stats
	Comparison     *compare.Report
	CompareInvalid string
}

// addPass adds one pass over a source.
func (s *Summary) addPass(c capture.Counts, t session.TrackerStats) {
	s.Capture.Add(c.SourceStats)
	s.CaptureDrops += c.Drops
	s.Tracker.Add(t)
}

// AllCompleted says every session the user asked for was replayed and
// ended as captured (and there was one): none cut, shed by -m, left
// unstarted by an interruption.
func (s *Summary) AllCompleted() bool {
	r := s.Replay
	return r.Completed+r.ClientResets == r.Sessions && r.Sessions > 0 &&
		r.Shed == 0 && s.NeverStarted == 0 && !s.Interrupted
}

// Reasons is why sessions did not complete, by reason name: the
// replayer's, plus the sessions an interruption left unstarted.
func (s *Summary) Reasons() map[string]uint64 {
	m := maps.Clone(s.Replay.Reasons)
	if s.NeverStarted > 0 {
		if m == nil {
			m = make(map[string]uint64)
		}
		m["never-started"] += s.NeverStarted
	}
	return m
}

// notMatching counts sessions not matching -x over the passes made.
func (s *Summary) notMatching() uint64 {
	return s.Replay.Unmatched + s.NotMatching*uint64(max(s.Loops, 1))
}

// WriteText prints the summary for people.
func (s *Summary) WriteText(w io.Writer) {
	r, c, t, st := s.Replay, s.Capture, s.Tracker, s.Stack
	if s.Live {
		fmt.Fprintf(w, "stackcopy: mirrored live traffic on %s for %.2fs\n", strings.Join(s.Inputs, ", "), s.Elapsed.Seconds())
	} else {
		fmt.Fprintf(w, "stackcopy: replayed %s (%d pass%s) in %.2fs\n", strings.Join(s.Inputs, ", "), s.Loops, plural(s.Loops, "es"), s.Elapsed.Seconds())
	}
	fmt.Fprintf(w, "  sessions  %d replayed: %d completed, %d client-reset, %d target-reset, %d refused, %d timed-out, %d capture-gap, %d overflowed, %d interrupted, %d failed\n",
		r.Sessions, r.Completed, r.ClientResets, r.TargetResets, r.Refused, r.TimedOut, r.Gaps, r.Overflowed, r.Interrupted, r.Failed)
	if s.Interrupted {
		fmt.Fprintf(w, "  stopped   interrupted by a signal: %d sessions cut short, %d never started\n",
			r.Reasons["interrupted"], s.Reasons()["never-started"])
	}
	if reasons := s.Reasons(); len(reasons) > 0 {
		fmt.Fprintf(w, "  reasons   %s\n", reasonText(reasons, s.Relay != nil))
	}
	fmt.Fprintf(w, "  skipped   %d mid-stream (no SYN captured; %d more joined at a turn boundary, -O=false; %d of those not joinable: HTTP/2), %d not matching -x, %d sampled out (-r), %d shed (-m), %d IPv6 segments, %d fragments\n",
		t.MidStream, t.Joined, r.Unjoinable, s.notMatching(), r.SampledOut, r.Shed, c.IPv6, c.Fragments)
	fmt.Fprintf(w, "  bytes     %d client bytes sent, %d response bytes received\n", r.BytesSent, r.BytesReceived)
	if r.SpilledBytes > 0 {
		fmt.Fprintf(w, "  spill     %d client bytes went through spill files (at most %d at once)\n", r.SpilledBytes, r.SpillPeak)
	}
	fmt.Fprintf(w, "  turns     %d waited for the target's answer (%d ended by protocol framing), %d sent unanswered after --turn-wait\n", r.Turns, r.TurnsFramed, r.TurnsUnanswered)
	if r.OpensHeld > 0 {
		fmt.Fprintf(w, "  order     %d sessions waited to open for the target's answers to requests production answered before their SYN; %d opened after --turn-wait without them\n", r.OpensHeld, r.OpensUnordered)
	}
	names := slices.Sorted(maps.Keys(r.Protocols))
	for _, name := range names {
		p := r.Protocols[name]
		fmt.Fprintf(w, "  protocol  %s: %d sessions, %d turns: %d by framing, %d by size, %d by silence, %d target closed, %d after --turn-wait",
			name, p.Sessions, p.Turns, p.Framed, p.BySize, p.ByQuiet, p.ByClose, p.TurnWait)
		if p.Writes > 0 {
			fmt.Fprintf(w, "; behind the captured schedule: at most %.1f ms, typically under %.0f ms", p.LagMaxMs, p.LagP50Ms)
		}
		if p.WindowUpdates > 0 || p.DataHeld > 0 {
			// HTTP/2 flow control (replay/h2flow.go).
			fmt.Fprintf(w, "; flow control: %d window updates added, %d DATA frames held for the target's window (%d sent after --turn-wait without it)",
				p.WindowUpdates, p.DataHeld, p.WindowWait)
		}
		if p.Renumbered > 0 || p.NotRenumbered > 0 {
			// MySQL prepared statements (myframe.Renumber).
			fmt.Fprintf(w, "; statement ids: %d commands renumbered to the target's, %d named a statement the target had not prepared",
				p.Renumbered, p.NotRenumbered)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  stack     %d segments sent, %d retransmitted, %d RTO timeouts, %d ports remapped, %d forged clients routed, %d wire write errors\n",
		st.SegmentsSent, st.Retransmits, st.Timeouts, r.PortsRemapped, s.Routes, st.WriteErrors)
	if s.TUN {
		fmt.Fprintf(w, "  tun       %d answers dropped by the kernel (txqueue full), %d forged packets refused\n", s.TUNTxDrops, s.TUNRxDrops)
	}
	if s.Relay != nil {
		fmt.Fprintf(w, "  relay     %d answers relayed (%d header-only), %d/%d channels up, %d reconnects\n",
			s.Relay.Packets, s.Relay.HeaderOnly, s.Relay.Connected, s.Relay.Channels, s.Relay.Reconnects)
		if s.Relay.HeldByIntercept > 0 {
			// Answers an intercept kept for addresses nobody had
			// registered (an earlier run's, or a registration that came
			// late): the sessions they belonged to waited in vain.
			fmt.Fprintf(w, "  relay     %d forged clients found %d answers held by an intercept (its --hold table) when they registered\n",
				s.Relay.HeldByIntercept, s.Relay.HeldAnswers)
		}
	}
	if s.Live {
		fmt.Fprintf(w, "  kernel    %d captured packets dropped before stackcopy read them\n", s.CaptureDrops)
	}
	fmt.Fprintf(w, "  capture   %d packets, %d TCP, %d other, %d malformed, %d cut by snaplen; %d duplicate, %d out-of-order, %d conflicting segments\n",
		c.Packets, c.TCP, c.NonTCP, c.Malformed, c.Truncated, t.Duplicates, t.OutOfOrder, t.Conflicts)
	if cs := s.Compare; cs != nil {
		fmt.Fprintf(w, "  compare   %d requests, %d compared: %d identical, %d different, %d noise only; %d without an answer on one side\n",
			cs.Requests, cs.Compared, cs.Identical, cs.Different, cs.Noise, cs.Missing)
		if s.CompareInvalid != "" {
			fmt.Fprintf(w, "  compare   NOT VALID: %s\n", s.CompareInvalid)
		}
	}
}

// reasonText lists reasons by count, largest first, with what the less
// obvious ones mean.
func reasonText(m map[string]uint64, relayed bool) string {
	names := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		if m[a] != m[b] {
			return cmp.Compare(m[b], m[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, 0, len(names))
	for _, n := range names {
		p := fmt.Sprintf("%d %s", m[n], n)
		if hint := reasonHint(n, relayed); hint != "" {
			p += " (" + hint + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

// reasonHint says what a reason means where its name does not.
func reasonHint(name string, relayed bool) string {
	switch name {
	case "no-syn-ack":
		if relayed {
			return "the handshake got no answer; an intercept may still hold these addresses from an earlier run (its --hold)"
		}
		return "the handshake got no answer"
	case "relay-down":
		return "no intercept took the forged address"
	case "target-timeout":
		return "the target stopped acknowledging"
	case "idle-timeout":
		return "no captured activity for -t"
	case "spill-full":
		return "fell behind and --spill-max was spent"
	case "spill-no-space":
		return "fell behind and --spill-dir has no space left"
	case "fell-behind":
		return "fell behind with spilling off"
	case "shed-memory":
		return "not started: -m"
	case "never-started":
		return "the replay stopped first"
	}
	return ""
}

func plural(n int, suffix string) string {
	if n == 1 {
		return ""
	}
	return suffix
}

// SummaryJSON is the --stats-json document: programs that read it (the
// lab, scripts) decode into it instead of keeping copies of its shape.
// Every key is snake_case: the counters of the packages below are
// encoded with their Go field names turned into snake_case (see
// snakeJSON), their own json tags where they have them.
type SummaryJSON struct {
	Inputs  []string `json:"inputs"`
	Loops   int      `json:"loops"`
	Seconds float64  `json:"seconds"`
	Routes  int      `json:"routes"`
	TUN     *TUNJSON `json:"tun,omitempty"` // only with a TUN
	Live    bool     `json:"live"`
	Drops   uint64   `json:"capture_drops"`
	// Interrupted: stopped by a signal before the files' end;
	// NeverStarted: sessions it left unstarted; NotMatching: client
	// SYNs whose server matches no -x (files, all passes); Reasons: why
	// sessions did not complete, by name (never-started included).
	Interrupted     bool              `json:"interrupted"`
	NeverStarted    uint64            `json:"never_started"`
	CaptureSessions uint64            `json:"capture_sessions,omitempty"`
	NotMatching     uint64            `json:"not_matching"`
	Reasons         map[string]uint64 `json:"reasons"`
	Relay           *RelayJSON        `json:"relay,omitempty"`
	Replay          ReplayJSON        `json:"replay"`
	Capture         CaptureJSON       `json:"capture"`
	Tracker         TrackerJSON       `json:"tracker"`
	Stack           StackJSON         `json:"stack"`
	// Compare: the comparison's counts, with --compare (the report itself
	// is --compare-json).
	Compare        *compare.Stats `json:"compare,omitempty"`
	CompareInvalid string         `json:"compare_invalid,omitempty"`
}

type TUNJSON struct {
	TxDrops uint64 `json:"tx_drops"`
	RxDrops uint64 `json:"rx_drops"`
}

// The counters of other packages, snake_case in JSON. Embedding keeps
// their fields reachable as before (sj.Replay.Completed).
type (
	ReplayJSON  struct{ replay.Stats }
	CaptureJSON struct{ capture.SourceStats }
	TrackerJSON struct{ session.TrackerStats }
	StackJSON   struct{ netstack.Stats }
	RelayJSON   struct{ relay.ClientStats }
)

func (v ReplayJSON) MarshalJSON() ([]byte, error)   { return snakeJSON(v.Stats) }
func (v *ReplayJSON) UnmarshalJSON(b []byte) error  { return unsnakeJSON(b, &v.Stats) }
func (v CaptureJSON) MarshalJSON() ([]byte, error)  { return snakeJSON(v.SourceStats) }
func (v *CaptureJSON) UnmarshalJSON(b []byte) error { return unsnakeJSON(b, &v.SourceStats) }
func (v TrackerJSON) MarshalJSON() ([]byte, error)  { return snakeJSON(v.TrackerStats) }
func (v *TrackerJSON) UnmarshalJSON(b []byte) error { return unsnakeJSON(b, &v.TrackerStats) }
func (v StackJSON) MarshalJSON() ([]byte, error)    { return snakeJSON(v.Stats) }
func (v *StackJSON) UnmarshalJSON(b []byte) error   { return unsnakeJSON(b, &v.Stats) }
func (v RelayJSON) MarshalJSON() ([]byte, error)    { return snakeJSON(v.ClientStats) }
func (v *RelayJSON) UnmarshalJSON(b []byte) error   { return unsnakeJSON(b, &v.ClientStats) }

// snakeJSON encodes a flat struct of counters as an object whose keys are
// the fields' json tag names, or their Go names in snake_case, in field
// order; values are encoded by encoding/json (maps keep their keys).
func snakeJSON(v any) ([]byte, error) {
	rv := reflect.ValueOf(v)
	rt := rv.Type()
	var b bytes.Buffer
	b.WriteByte('{')
	n := 0
	for i := range rt.NumField() {
		f := rt.Field(i)
		name, omitEmpty, ok := jsonKey(f)
		if !ok || omitEmpty && rv.Field(i).IsZero() {
			continue
		}
		val, err := json.Marshal(rv.Field(i).Interface())
		if err != nil {
			return nil, err
		}
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		key, _ := json.Marshal(name)
		b.Write(key)
		b.WriteByte(':')
		b.Write(val)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// unsnakeJSON decodes what snakeJSON encoded into the struct p points to.
func unsnakeJSON(data []byte, p any) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	rv := reflect.ValueOf(p).Elem()
	rt := rv.Type()
	for i := range rt.NumField() {
		name, _, ok := jsonKey(rt.Field(i))
		raw, found := m[name]
		if !ok || !found {
			continue
		}
		if err := json.Unmarshal(raw, rv.Field(i).Addr().Interface()); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// jsonKey is a field's key: its json tag's name, else its name in
// snake_case; ok is false for fields JSON leaves out.
func jsonKey(f reflect.StructField) (name string, omitEmpty, ok bool) {
	if !f.IsExported() {
		return "", false, false
	}
	tag := f.Tag.Get("json")
	if tag == "-" {
		return "", false, false
	}
	name, opts, _ := strings.Cut(tag, ",")
	omitEmpty = strings.Contains(","+opts+",", ",omitempty,")
	if name == "" {
		name = snakeCase(f.Name)
	}
	return name, omitEmpty, true
}

// snakeCase turns a Go name into snake_case: an underscore before each
// word, where words start at an upper-case letter after a lower-case one
// or a digit, or at the last capital of an acronym (HTTPServer:
// http_server). IPv6 stays one word.
func snakeCase(s string) string {
	s = strings.ReplaceAll(s, "IPv6", "Ipv6")
	var b strings.Builder
	r := []rune(s)
	for i, c := range r {
		if unicode.IsUpper(c) && i > 0 {
			prev := r[i-1]
			nextLower := i+1 < len(r) && unicode.IsLower(r[i+1])
			if unicode.IsLower(prev) || unicode.IsDigit(prev) || unicode.IsUpper(prev) && nextLower {
				b.WriteByte('_')
			}
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

// JSON returns the --stats-json document.
func (s *Summary) JSON() SummaryJSON {
	j := SummaryJSON{
		Inputs: s.Inputs, Loops: s.Loops, Seconds: s.Elapsed.Seconds(), Routes: s.Routes,
		Live: s.Live, Drops: s.CaptureDrops,
		Interrupted: s.Interrupted, NeverStarted: s.NeverStarted, CaptureSessions: s.CaptureSessions,
		NotMatching: s.notMatching(), Reasons: s.Reasons(),
		Replay: ReplayJSON{s.Replay}, Capture: CaptureJSON{s.Capture}, Tracker: TrackerJSON{s.Tracker}, Stack: StackJSON{s.Stack},
		Compare: s.Compare, CompareInvalid: s.CompareInvalid,
	}
	if j.Reasons == nil {
		j.Reasons = map[string]uint64{}
	}
	if s.TUN {
		j.TUN = &TUNJSON{s.TUNTxDrops, s.TUNRxDrops}
	}
	if s.Relay != nil {
		j.Relay = &RelayJSON{*s.Relay}
	}
	return j
}

// WriteJSON writes the --stats-json document, indented, with a final
// newline.
func (s *Summary) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(s.JSON(), "", "  ")
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
