package console

import (
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

// gather is one scrape: pool p with in flight, limit and request totals.
func gather(inflight, limit, ok, failed, none, shedBatch float64) []*dto.MetricFamily {
	return []*dto.MetricFamily{
		gauge(metricInFlight, inflight, "p"), gauge(metricLimit, limit, "p"),
		counter(metricRequests, ok, "pool", "p", "status", "OK"),
		counter(metricRequests, failed, "pool", "p", "status", "UNAVAILABLE"),
		counter(metricRequests, none, "pool", "none", "status", "RESOURCE_EXHAUSTED"),
		counter(metricSheds, shedBatch, "priority", "batch", "reason", "no_capacity"),
		counter("go_goroutines", 7),
	}
}

func TestHistoryTurnsCountersIntoRates(t *testing.T) {
	h := newHistory(3)
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at                            time.Duration
		inflight, limit, ok, fail, sh float64
		wantOK, wantFail, wantShed    float64
	}{
		{0, 1, 10, 100, 5, 0, 0, 0, 0},                // first sample: no rate yet
		{2 * time.Second, 4, 10, 120, 9, 6, 10, 2, 3}, // +20 ok, +4 failed, +6 sheds in 2 s
		{4 * time.Second, 2, 12, 120, 9, 6, 0, 0, 0},  // nothing new
		{6 * time.Second, 2, 12, 10, 1, 2, 5, 0.5, 1}, // counters restarted: counted from zero
	}
	for i, s := range steps {
		h.add(t0.Add(s.at), gather(s.inflight, s.limit, s.ok, s.fail, 3, s.sh))
		got, ok := h.latest()
		if !ok {
			t.Fatalf("step %d: no sample", i)
		}
		p := got.Pools["p"]
		if p.InFlight != s.inflight || p.Limit != s.limit || p.OK != s.wantOK || p.Failed != s.wantFail || got.Sheds["batch"] != s.wantShed {
			t.Errorf("step %d: %+v sheds %v, want in flight %v limit %v ok %v failed %v sheds %v", i, p, got.Sheds, s.inflight, s.limit, s.wantOK, s.wantFail, s.wantShed)
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
