package console

import (
	"maps"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

func counter(name string, v float64, labels ...string) *dto.MetricFamily {
	m := &dto.Metric{Counter: &dto.Counter{Value: proto.Float64(v)}}
	for i := 0; i+1 < len(labels); i += 2 {
		m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(labels[i]), Value: proto.String(labels[i+1])})
	}
	return &dto.MetricFamily{Name: proto.String(name), Metric: []*dto.Metric{m}}
}

func gauge(name string, v float64, pool string) *dto.MetricFamily {
	return &dto.MetricFamily{Name: proto.String(name), Metric: []*dto.Metric{{
		Gauge: &dto.Gauge{Value: proto.Float64(v)}, Label: []*dto.LabelPair{{Name: proto.String("pool"), Value: proto.String(pool)}}}}}
}

// sheds are the shed counter's totals in one scrape, by caller region and priority.
type sheds struct {
	useBatch, useInteractive, euBatch, noRegion float64
}

// gather is one scrape: pool p with in flight, limit and request totals,
// and the shed counter's series.
func gather(inflight, limit, ok, failed, none float64, sh sheds) []*dto.MetricFamily {
	shed := func(v float64, region, prio, reason string) *dto.Metric {
		l := []string{"caller_region", region, "priority", prio, "reason", reason}
		if region == "" { // a series without the label (an older router)
			l = l[2:]
		}
		return counter(metricSheds, v, l...).Metric[0]
	}
	return []*dto.MetricFamily{
		gauge(metricInFlight, inflight, "p"), gauge(metricLimit, limit, "p"),
		counter(metricRequests, ok, "pool", "p", "status", "OK"),
		counter(metricRequests, failed, "pool", "p", "status", "UNAVAILABLE"),
		counter(metricRequests, none, "pool", "none", "status", "RESOURCE_EXHAUSTED"),
		{Name: proto.String(metricSheds), Metric: []*dto.Metric{
			shed(sh.useBatch, "us-east-1", "batch", "no_capacity"),
			shed(sh.useInteractive, "us-east-1", "interactive", "queue_full"),
			shed(sh.euBatch, "eu-west-1", "batch", "no_capacity"),
			shed(sh.noRegion, "", "standard", "evicted"),
		}},
		counter("go_goroutines", 7),
	}
}

func TestHistoryTurnsCountersIntoRates(t *testing.T) {
	h := newHistory(3)
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at                      time.Duration
		inflight, limit, ok, fl float64
		sheds                   sheds
		wantOK, wantFail        float64
		// sheds per second by caller region and by priority
		wantRegion, wantPrio map[string]float64
	}{
		// first sample: no rate yet
		{0, 1, 10, 100, 5, sheds{0, 0, 0, 0}, 0, 0, map[string]float64{}, map[string]float64{}},
		// +20 ok, +4 failed in 2 s; sheds: us-east-1 +6 batch +2 interactive, eu-west-1 +4 batch, +2 without a region
		{2 * time.Second, 4, 10, 120, 9, sheds{6, 2, 4, 2}, 10, 2,
			map[string]float64{"us-east-1": 4, "eu-west-1": 2, "unknown": 1},
			map[string]float64{"batch": 5, "interactive": 1, "standard": 1}},
		// nothing new
		{4 * time.Second, 2, 12, 120, 9, sheds{6, 2, 4, 2}, 0, 0,
			map[string]float64{"us-east-1": 0, "eu-west-1": 0, "unknown": 0},
			map[string]float64{"batch": 0, "interactive": 0, "standard": 0}},
		// counters restarted: counted from zero
		{6 * time.Second, 2, 12, 10, 1, sheds{2, 0, 0, 0}, 5, 0.5,
			map[string]float64{"us-east-1": 1, "eu-west-1": 0, "unknown": 0},
			map[string]float64{"batch": 1, "interactive": 0, "standard": 0}},
	}
	for i, s := range steps {
		h.add(t0.Add(s.at), gather(s.inflight, s.limit, s.ok, s.fl, 3, s.sheds))
		got, ok := h.latest()
		if !ok {
			t.Fatalf("step %d: no sample", i)
		}
		p := got.Pools["p"]
		if p.InFlight != s.inflight || p.Limit != s.limit || p.OK != s.wantOK || p.Failed != s.wantFail {
			t.Errorf("step %d: %+v, want in flight %v limit %v ok %v failed %v", i, p, s.inflight, s.limit, s.wantOK, s.wantFail)
		}
		if !maps.Equal(got.ShedsByRegion, s.wantRegion) {
			t.Errorf("step %d: sheds by region %v, want %v", i, got.ShedsByRegion, s.wantRegion)
		}
		if !maps.Equal(got.ShedsByPriority, s.wantPrio) {
			t.Errorf("step %d: sheds by priority %v, want %v", i, got.ShedsByPriority, s.wantPrio)
		}
		if _, ok := got.Pools["none"]; ok {
			t.Errorf("step %d: calls refused before any pool counted as a pool", i)
		}
	}
	// The ring keeps the newest 3, oldest first.
	snap := h.snapshot()
	if len(snap) != 3 || snap[0].T != t0.Add(2*time.Second).UnixMilli() || snap[2].T != t0.Add(6*time.Second).UnixMilli() {
		t.Fatalf("snapshot %+v", snap)
	}
}

func TestHistoryNotifiesWaiters(t *testing.T) {
	h := newHistory(4)
	ch := h.changed()
	select {
	case <-ch:
		t.Fatal("notified before a sample")
	default:
	}
	h.add(time.Unix(1, 0), nil)
	select {
	case <-ch:
	default:
		t.Fatal("not notified of a sample")
	}
	if _, ok := h.latest(); !ok {
		t.Fatal("no latest sample")
	}
}

// Prompt tokens per pool come from the token-usage histogram's input sum,
// cached ones from the cached-tokens counter; both become rates.
func TestHistoryTurnsPromptAndCachedTokensIntoRates(t *testing.T) {
	h := newHistory(4)
	t0 := time.Unix(1000, 0)
	scrape := func(input, output, cached float64) []*dto.MetricFamily {
		hist := func(typ string, sum float64) *dto.Metric {
			return &dto.Metric{Histogram: &dto.Histogram{SampleSum: proto.Float64(sum), SampleCount: proto.Uint64(1)},
				Label: []*dto.LabelPair{{Name: proto.String("pool"), Value: proto.String("p")}, {Name: proto.String("gen_ai_token_type"), Value: proto.String(typ)}}}
		}
		return []*dto.MetricFamily{
			gauge(metricInFlight, 0, "p"),
			{Name: proto.String(metricTokens), Metric: []*dto.Metric{hist("input", input), hist("output", output)}},
			counter(metricCached, cached, "pool", "p", "gen_ai_request_model", "m"),
		}
	}
	h.add(t0, scrape(1000, 50, 0))
	h.add(t0.Add(2*time.Second), scrape(9000, 90, 3000)) // +8000 prompt, +3000 cached in 2 s
	got := h.snapshot()[1].Pools["p"]
	if span := h.snapshot()[1].Span; span != 2000 {
		t.Fatalf("span %v ms, want 2000", span)
	}
	if got.Prompt != 4000 || got.Cached != 1500 {
		t.Fatalf("prompt %v/s cached %v/s, want 4000 and 1500 (output tokens are not prompt tokens)", got.Prompt, got.Cached)
	}
}
