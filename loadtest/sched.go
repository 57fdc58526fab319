package loadtest

import (
	"math"
	"runtime/metrics"
)

// schedLatencies is the Go runtime's histogram of how long goroutines
// waited to run after becoming runnable.
const schedLatencies = "/sched/latencies:seconds"

// SchedWatch measures the load tester's own goroutine scheduling latency
// over a run: every goroutine that became runnable — an arrival due, a call's
// response read — and how long it waited for a CPU. Where the scheduler lag
// sees only sends, this sees the receiving side too: a starved client reads
// chunks late, inflating TTFT and timing out calls whose answers had already
// arrived. Start one with WatchSched; it is not safe for concurrent use.
type SchedWatch struct{ start *metrics.Float64Histogram }

// WatchSched starts a SchedWatch.
func WatchSched() *SchedWatch { return &SchedWatch{start: readSched()} }

func readSched() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: schedLatencies}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return nil
	}
	return s[0].Value.Float64Histogram()
}

// Stop returns the distribution, in milliseconds, of the scheduling
// latencies since WatchSched (each quantile is its bucket's upper bound;
// zero Dist when the runtime does not report them).
func (w *SchedWatch) Stop() Dist {
	end := readSched()
	if w.start == nil || end == nil || len(end.Counts) != len(w.start.Counts) {
		return Dist{}
	}
	counts := make([]uint64, len(end.Counts))
	var total uint64
	for i := range counts {
		counts[i] = end.Counts[i] - w.start.Counts[i]
		total += counts[i]
	}
	if total == 0 {
		return Dist{}
	}
	upper := func(i int) float64 {
		b := end.Buckets[i+1]
		if math.IsInf(b, 1) {
			b = end.Buckets[i]
		}
		return round3(b * 1000)
	}
	q := func(p float64) float64 {
		want := uint64(math.Ceil(p * float64(total)))
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen >= want {
				return upper(i)
			}
		}
		return upper(len(counts) - 1)
	}
	d := Dist{Count: int64(total), P50: q(0.50), P90: q(0.90), P95: q(0.95), P99: q(0.99), P999: q(0.999)}
	for i := len(counts) - 1; i >= 0; i-- {
		if counts[i] > 0 {
			d.Max = upper(i)
			break
		}
	}
	return d
}
