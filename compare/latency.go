package compare

import (
	"math"
	"sort"
	"time"
)

// A hist is a latency histogram with log-spaced buckets, each histRatio
// wide, from histMin up: a percentile is known within about 1%, whatever
// the scale, in at most maxBucket counters (sparse: most groups fill few).
type hist struct {
	counts map[uint16]uint32
	n      int64
}

const (
	histMin   = time.Microsecond
	histRatio = 1.02
	// maxBucket covers up to about an hour; longer is counted in it.
	maxBucket = 1120
)

func bucketOf(d time.Duration) uint16 {
	if d < histMin {
		return 0
	}
	b := 1 + int(math.Log(float64(d)/float64(histMin))/math.Log(histRatio))
	if b > maxBucket {
		b = maxBucket
	}
	return uint16(b)
}

// bucketValue is the middle (geometric) of bucket b.
func bucketValue(b uint16) time.Duration {
	if b == 0 {
		return 0
	}
	return time.Duration(float64(histMin) * math.Pow(histRatio, float64(b-1)+0.5))
}

func (h *hist) add(d time.Duration) {
	if d < 0 {
		// The clocks of the two ends of a measure disagree (the replay's
		// report of a send came late): count it as immediate.
		d = 0
	}
	if h.counts == nil {
		h.counts = make(map[uint16]uint32)
	}
	h.counts[bucketOf(d)]++
	h.n++
}

// quantiles returns the latencies at the quantiles qs (ascending).
func (h *hist) quantiles(qs ...float64) []time.Duration {
	out := make([]time.Duration, len(qs))
	if h.n == 0 {
		return out
	}
	bs := make([]uint16, 0, len(h.counts))
	for b := range h.counts {
		bs = append(bs, b)
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i] < bs[j] })
	var cum int64
	qi := 0
	for _, b := range bs {
		cum += int64(h.counts[b])
		for qi < len(qs) && float64(cum) >= math.Ceil(qs[qi]*float64(h.n)) {
			out[qi] = bucketValue(b)
			qi++
		}
	}
	for ; qi < len(qs); qi++ {
		out[qi] = bucketValue(bs[len(bs)-1])
	}
	return out
}

// Percentiles are a latency distribution's p50, p90 and p99 in
// milliseconds, and how many latencies were measured.
type Percentiles struct {
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Count int64   `json:"count"`
}

func (h *hist) percentiles() Percentiles {
	q := h.quantiles(0.50, 0.90, 0.99)
	return Percentiles{P50: ms(q[0]), P90: ms(q[1]), P99: ms(q[2]), Count: h.n}
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}
