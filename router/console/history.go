package console

import (
	"cmp"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Metric families the charts read from the router's Prometheus registry
// (router/telemetry names them; the OpenTelemetry exporter renders them so).
const (
	metricInFlight = "switchyard_pool_in_flight"
	metricLimit    = "switchyard_pool_limit"
	metricRequests = "switchyard_requests_total"
	metricSheds    = "switchyard_sheds_total"
	// Prompt tokens per pool: the input sum of the token-usage histogram,
	// and the part the backends served from their prefix caches.
	metricTokens = "gen_ai_client_token_usage"
	metricCached = "switchyard_prompt_cached_tokens_total"
)

// sample is one point of every chart.
type sample struct {
	// T is when it was taken, in Unix milliseconds.
	T int64 `json:"t"`
	// Span is the time since the previous sample in milliseconds (0 for
	// the first): the interval its rates are over, so a page that missed
	// samples still turns rates back into counts exactly.
	Span float64 `json:"spanMillis"`
	// Pools by name.
	Pools map[string]poolSample `json:"pools"`
	// ShedsByRegion is sheds per second since the previous sample, by the
	// caller's region (the metric's caller_region label: a region of the
	// fleet, "other" or "unknown").
	ShedsByRegion map[string]float64 `json:"shedsByRegion"`
	// ShedsByPriority is the same sheds by priority.
	ShedsByPriority map[string]float64 `json:"shedsByPriority"`
}

type poolSample struct {
	InFlight float64 `json:"inFlight"`
	Limit    float64 `json:"limit"`
	// OK and Failed are calls per second since the previous sample that the
	// pool served, successfully or not.
	OK     float64 `json:"ok"`
	Failed float64 `json:"failed"`
	// Prompt and Cached are prompt tokens per second of the pool's
	// successful calls since the previous sample, and how many of them its
	// backend served from its prefix cache.
	Prompt float64 `json:"prompt"`
	Cached float64 `json:"cached"`
}

// history is a fixed-size ring of samples plus the counter totals of the
// last one (to turn counters into rates). Safe for concurrent use.
type history struct {
	mu      sync.Mutex
	ring    []sample
	next    int
	full    bool
	notify  chan struct{}
	prevAt  time.Time
	prevOK  map[string]float64
	prevErr map[string]float64
	// prevTok holds the prompt and cached token totals by pool.
	prevTok [2]map[string]float64
	// prevShd holds the shed totals by region (shedRegion) and priority (shedPriority).
	prevShd [2]map[string]float64
}

// Indexes of the two views of the shed counter.
const (
	shedRegion = iota
	shedPriority
)

func newHistory(size int) *history {
	return &history{ring: make([]sample, max(size, 2)), notify: make(chan struct{})}
}

// add turns one gather of the registry into a sample.
func (h *history) add(now time.Time, mfs []*dto.MetricFamily) {
	s := sample{T: now.UnixMilli(), Pools: map[string]poolSample{}, ShedsByRegion: map[string]float64{}, ShedsByPriority: map[string]float64{}}
	ok, failed := map[string]float64{}, map[string]float64{}
	sheds := [2]map[string]float64{{}, {}}
	toks := [2]map[string]float64{{}, {}} // prompt, cached
	for _, mf := range mfs {
		switch mf.GetName() {
		case metricInFlight, metricLimit:
			for _, m := range mf.GetMetric() {
				name := label(m, "pool")
				ps := s.Pools[name]
				if mf.GetName() == metricInFlight {
					ps.InFlight = m.GetGauge().GetValue()
				} else {
					ps.Limit = m.GetGauge().GetValue()
				}
				s.Pools[name] = ps
			}
		case metricRequests:
			for _, m := range mf.GetMetric() {
				name := label(m, "pool")
				if name == "" || name == "none" {
					continue // refused before any pool: counted as sheds
				}
				if label(m, "status") == "OK" {
					ok[name] += m.GetCounter().GetValue()
				} else {
					failed[name] += m.GetCounter().GetValue()
				}
			}
		case metricTokens:
			for _, m := range mf.GetMetric() {
				if label(m, "gen_ai_token_type") == "input" {
					toks[0][label(m, "pool")] += m.GetHistogram().GetSampleSum()
				}
			}
		case metricCached:
			for _, m := range mf.GetMetric() {
				toks[1][label(m, "pool")] += m.GetCounter().GetValue()
			}
		case metricSheds:
			for _, m := range mf.GetMetric() {
				v := m.GetCounter().GetValue()
				sheds[shedRegion][cmp.Or(label(m, "caller_region"), "unknown")] += v
				sheds[shedPriority][label(m, "priority")] += v
			}
		}
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.prevAt.IsZero() {
		if dt := now.Sub(h.prevAt).Seconds(); dt > 0 {
			s.Span = dt * 1000
			for name, ps := range s.Pools {
				ps.OK = rate(ok[name], h.prevOK[name], dt)
				ps.Failed = rate(failed[name], h.prevErr[name], dt)
				ps.Prompt = rate(toks[0][name], h.prevTok[0][name], dt)
				ps.Cached = rate(toks[1][name], h.prevTok[1][name], dt)
				s.Pools[name] = ps
			}
			for view, out := range [2]map[string]float64{s.ShedsByRegion, s.ShedsByPriority} {
				for k, v := range sheds[view] {
					out[k] = rate(v, h.prevShd[view][k], dt)
				}
			}
		}
	}
	h.prevAt, h.prevOK, h.prevErr, h.prevShd, h.prevTok = now, ok, failed, sheds, toks
	h.ring[h.next] = s
	h.next = (h.next + 1) % len(h.ring)
	if h.next == 0 {
		h.full = true
	}
	close(h.notify)
	h.notify = make(chan struct{})
}

// rate is the per-second increase of a counter; a counter that went back
// (the registry was rebuilt) counts from zero.
func rate(cur, prev, dt float64) float64 {
	if cur < prev {
		prev = 0
	}
	return (cur - prev) / dt
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// snapshot returns the samples kept, oldest first.
func (h *history) snapshot() []sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.full {
		return append([]sample(nil), h.ring[:h.next]...)
	}
	return append(append([]sample(nil), h.ring[h.next:]...), h.ring[:h.next]...)
}

// latest returns the newest sample.
func (h *history) latest() (sample, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.full && h.next == 0 {
		return sample{}, false
	}
	return h.ring[(h.next-1+len(h.ring))%len(h.ring)], true
}

// changed returns a channel closed when the next sample is added.
func (h *history) changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.notify
}
