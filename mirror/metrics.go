package mirror

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackcopy/stackcopy/replay"
)

// Collector exposes a watched Run's counters to Prometheus. It counts
// nothing itself: every scrape takes one Monitor.Snapshot (atomic loads)
// and turns it into constant metrics, so the figures are the summary's.
//
// Latency: the replayer keeps a histogram of its turns' latency (first
// client byte written to the answer's end, replay.Stats.TurnLatency:
// atomic bucket counters), exposed as stackcopy_turn_latency_seconds; its
// lag behind the captured schedule is kept as a maximum and a
// power-of-two median per protocol, exposed as gauges
// (stackcopy_replay_lag_*_seconds).
type Collector struct {
	mon *Monitor
	d   map[string]*prometheus.Desc
}

// NewCollector returns the collector of m's Run.
func NewCollector(m *Monitor) *Collector {
	c := &Collector{mon: m, d: make(map[string]*prometheus.Desc)}
	add := func(name, help string, labels ...string) {
		c.d[name] = prometheus.NewDesc(name, help, labels, nil)
	}
	add("stackcopy_running", "1 while a replay or live mirror runs; 0 before and after (the other metrics then hold its final counts).")
	add("stackcopy_elapsed_seconds", "Time since the run started.")
	add("stackcopy_sessions_started_total", "Sessions handed to the replayer (-n copies and baseline copies each count).")
	add("stackcopy_sessions_open", "Sessions being replayed now.")
	add("stackcopy_sessions_ended_total", "Sessions ended, by outcome.", "outcome")
	add("stackcopy_sessions_not_completed_total", "Sessions that did not complete, and sessions shed by -m, by reason.", "reason")
	add("stackcopy_sessions_skipped_total", "Captured sessions not replayed, by why.", "why")
	add("stackcopy_sessions_expected", "Files: sessions all passes hold (pre-pass count; complete when stackcopy_sessions_expected_complete is 1).")
	add("stackcopy_sessions_expected_complete", "Files: 1 once the pre-pass finished counting the sessions.")
	add("stackcopy_memory_shed_total", "New sessions shed by the memory limit (-m).")
	add("stackcopy_client_bytes_sent_total", "Client bytes written to the targets.")
	add("stackcopy_response_bytes_received_total", "Answer bytes drained from the targets.")
	add("stackcopy_turns_total", "Turns that waited for the target's answer.")
	add("stackcopy_turns_framed_total", "Turns whose answer protocol framing found complete.")
	add("stackcopy_turns_unanswered_total", "Turns sent after --turn-wait without an answer.")
	add("stackcopy_opens_held_total", "Sessions whose dial waited for the target's answers to requests production answered before their SYN.")
	add("stackcopy_opens_unordered_total", "Sessions that opened after --turn-wait without those answers (--no-order turns the wait off).")
	add("stackcopy_turn_latency_seconds", "Answered turns: time from the turn's first client byte written to the end of the target's answer.")
	add("stackcopy_replay_lag_max_seconds", "Largest lag of a client write behind the captured schedule, by protocol.", "protocol")
	add("stackcopy_replay_lag_p50_seconds", "Typical (median, to a power of two of ms) lag behind the captured schedule, by protocol.", "protocol")
	add("stackcopy_statement_ids_renumbered_total", "MySQL: client commands whose prepared-statement id was replaced by the target's.", "protocol")
	add("stackcopy_statement_ids_unknown_total", "MySQL: client commands left as captured because their statement id had no partner on the target.", "protocol")
	add("stackcopy_spill_bytes_total", "Client bytes that went through spill files.")
	add("stackcopy_spill_peak_bytes", "Most bytes held in spill files at once.")
	add("stackcopy_stack_segments_sent_total", "TCP segments the forged clients sent.")
	add("stackcopy_stack_retransmits_total", "TCP segments retransmitted, SYNs included.")
	add("stackcopy_stack_rto_timeouts_total", "Retransmission timeouts.")
	add("stackcopy_stack_resets_received_total", "RSTs received from targets.")
	add("stackcopy_stack_wire_write_errors_total", "Packets the egress failed to write.")
	add("stackcopy_capture_packets_total", "Live: packets captured.")
	add("stackcopy_capture_kernel_drops_total", "Live: captured packets the kernel dropped before stackcopy read them.")
	add("stackcopy_tun_tx_drops_total", "TUN: answers dropped by the kernel (txqueue full).")
	add("stackcopy_tun_rx_drops_total", "TUN: forged packets the kernel refused.")
	add("stackcopy_relay_channels", "Relay connections to intercepts configured.")
	add("stackcopy_relay_channels_up", "Relay connections up now.")
	add("stackcopy_relay_reconnects_total", "Relay connections re-established after a loss.")
	add("stackcopy_relay_auth_failures_total", "Relay handshakes that failed on a key mismatch.")
	add("stackcopy_relay_registered_clients", "Forged clients registered with the intercepts now.")
	add("stackcopy_relay_answers_total", "Answers relayed by intercepts.")
	add("stackcopy_relay_answers_header_only_total", "Answers relayed as headers only (payload zero-filled).")
	add("stackcopy_relay_bytes_total", "Bytes received from intercepts, framing included.")
	add("stackcopy_compare_requests_total", "Comparison: requests seen.")
	add("stackcopy_compare_answers_total", "Comparison: requests compared, by result.", "result")
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, name := range slices.Sorted(maps.Keys(c.d)) {
		ch <- c.d[name]
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.mon.Snapshot()
	emit := func(name string, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.d[name], t, v, labels...)
	}
	counter := func(name string, v uint64, labels ...string) {
		emit(name, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(name string, v float64, labels ...string) { emit(name, prometheus.GaugeValue, v, labels...) }
	running := 0.0
	if s.Running {
		running = 1
	}
	gauge("stackcopy_running", running)
	if !s.Running && s.Elapsed == 0 {
		return // no run yet; after one, its final counters stay
	}
	r := s.Replay
	gauge("stackcopy_elapsed_seconds", s.Elapsed.Seconds())
	counter("stackcopy_sessions_started_total", r.Sessions)
	gauge("stackcopy_sessions_open", float64(s.Open()))
	for _, o := range r.ByOutcome() {
		counter("stackcopy_sessions_ended_total", o.Count, o.Name)
	}
	for _, name := range replay.ReasonNames() {
		// Every reason, zeros included, so rate() and alerts need no
		// absent() guards.
		counter("stackcopy_sessions_not_completed_total", r.Reasons[name], name)
	}
	counter("stackcopy_sessions_skipped_total", r.SampledOut, "sampled-out")
	counter("stackcopy_sessions_skipped_total", r.Unjoinable, "not-joinable")
	counter("stackcopy_sessions_skipped_total", r.Unmatched+s.NotMatching, "not-matching")
	if !s.Live {
		gauge("stackcopy_sessions_expected", float64(s.Total))
		known := 0.0
		if s.TotalKnown {
			known = 1
		}
		gauge("stackcopy_sessions_expected_complete", known)
	}
	counter("stackcopy_memory_shed_total", r.Shed)
	counter("stackcopy_client_bytes_sent_total", r.BytesSent)
	counter("stackcopy_response_bytes_received_total", r.BytesReceived)
	counter("stackcopy_turns_total", r.Turns)
	counter("stackcopy_turns_framed_total", r.TurnsFramed)
	counter("stackcopy_turns_unanswered_total", r.TurnsUnanswered)
	counter("stackcopy_opens_held_total", r.OpensHeld)
	counter("stackcopy_opens_unordered_total", r.OpensUnordered)
	if h := r.TurnLatency; len(h.Bounds) > 0 {
		buckets := make(map[float64]uint64, len(h.Bounds))
		var cum uint64
		for i, b := range h.Bounds {
			cum += h.Counts[i]
			buckets[b] = cum
		}
		ch <- prometheus.MustNewConstHistogram(c.d["stackcopy_turn_latency_seconds"], h.Count, h.SumSeconds, buckets)
	}
	for name, p := range r.Protocols {
		if p.Writes > 0 {
			gauge("stackcopy_replay_lag_max_seconds", p.LagMaxMs/1e3, name)
			gauge("stackcopy_replay_lag_p50_seconds", p.LagP50Ms/1e3, name)
		}
		if p.Renumbered > 0 || p.NotRenumbered > 0 {
			counter("stackcopy_statement_ids_renumbered_total", p.Renumbered, name)
			counter("stackcopy_statement_ids_unknown_total", p.NotRenumbered, name)
		}
	}
	counter("stackcopy_spill_bytes_total", r.SpilledBytes)
	gauge("stackcopy_spill_peak_bytes", float64(r.SpillPeak))
	st := s.Stack
	counter("stackcopy_stack_segments_sent_total", st.SegmentsSent)
	counter("stackcopy_stack_retransmits_total", st.Retransmits)
	counter("stackcopy_stack_rto_timeouts_total", st.Timeouts)
	counter("stackcopy_stack_resets_received_total", st.ResetsReceived)
	counter("stackcopy_stack_wire_write_errors_total", st.WriteErrors)
	if s.Live {
		counter("stackcopy_capture_packets_total", s.CapturePackets)
		counter("stackcopy_capture_kernel_drops_total", s.CaptureDrops)
	}
	if s.TUN {
		counter("stackcopy_tun_tx_drops_total", s.TUNTxDrops)
		counter("stackcopy_tun_rx_drops_total", s.TUNRxDrops)
	}
	if rs := s.Relay; rs != nil {
		gauge("stackcopy_relay_channels", float64(rs.Channels))
		gauge("stackcopy_relay_channels_up", float64(rs.Connected))
		counter("stackcopy_relay_reconnects_total", rs.Reconnects)
		counter("stackcopy_relay_auth_failures_total", rs.AuthFailures)
		gauge("stackcopy_relay_registered_clients", float64(rs.Registered))
		counter("stackcopy_relay_answers_total", rs.Packets)
		counter("stackcopy_relay_answers_header_only_total", rs.HeaderOnly)
		counter("stackcopy_relay_bytes_total", rs.Bytes)
	}
	if cs := s.Compare; cs != nil {
		counter("stackcopy_compare_requests_total", uint64(cs.Requests))
		counter("stackcopy_compare_answers_total", uint64(cs.Identical), "identical")
		counter("stackcopy_compare_answers_total", uint64(cs.Different), "different")
		counter("stackcopy_compare_answers_total", uint64(cs.Noise), "noise-only")
		counter("stackcopy_compare_answers_total", uint64(cs.Missing), "missing-one-side")
	}
}
