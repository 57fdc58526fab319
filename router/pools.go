package router

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/control"
	"github.com/switchyard-dev/switchyard/router/policy"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// pool is one configured pool at run time: its config, its backend, this
// replica's in-flight count and its health. Safe for concurrent use.
type pool struct {
	cfg     config.Pool
	backend backends.Backend

	// local is the number of calls this replica has in flight on the pool.
	local atomic.Int64
	// shared is the last in-flight count read from the capacity store.
	shared atomic.Int64

	health *health

	obs poolObs
}

// poolObs holds the pool's precomputed telemetry attributes, so the hot path
// records metrics without building attribute sets per call.
type poolObs struct {
	// pool is {pool, cloud, region, accelerator}.
	pool metric.MeasurementOption
	// outcome[o] is pool plus outcome=o.
	outcome [outcomeCount]metric.MeasurementOption
	// acquire[r] is {pool, result=r}.
	acquire [acquireResults]metric.MeasurementOption
	// span are the attempt span's pool attributes.
	span []attribute.KeyValue
}

// Results of a capacity-store Acquire, for switchyard.capacity.acquire.duration.
const (
	acquireOK = iota
	acquireFull
	acquireQuota
	acquireError
	acquireResults
)

var acquireResultNames = [acquireResults]string{"ok", "full", "quota", "error"}

func newPool(cfg config.Pool, b backends.Backend, h *health) *pool {
	p := &pool{cfg: cfg, backend: b, health: h}
	base := []attribute.KeyValue{
		attribute.String(telemetry.KeyPool, cfg.Name), attribute.String(telemetry.KeyCloud, cfg.Cloud),
		attribute.String(telemetry.KeyRegion, cfg.Region), attribute.String(telemetry.KeyAccelerator, cfg.Accelerator),
	}
	p.obs.pool = metric.WithAttributeSet(attribute.NewSet(base...))
	for o := range outcomeCount {
		p.obs.outcome[o] = metric.WithAttributeSet(attribute.NewSet(append(base[:len(base):len(base)], attribute.String(telemetry.KeyOutcome, outcome(o).String()))...))
	}
	for r, name := range acquireResultNames {
		p.obs.acquire[r] = metric.WithAttributeSet(attribute.NewSet(attribute.String(telemetry.KeyPool, cfg.Name), attribute.String(telemetry.KeyResult, name)))
	}
	p.obs.span = []attribute.KeyValue{
		attribute.String("switchyard.pool", cfg.Name), attribute.String("cloud.provider", cfg.Cloud),
		attribute.String("cloud.region", cfg.Region), attribute.String("switchyard.accelerator", cfg.Accelerator),
	}
	return p
}

// controlsView answers the operator-change questions the hot path asks,
// from the control state in force (swapped atomically on every change).
type controlsView struct{ st *control.State }

func (c controlsView) weight(p *config.Pool) float64 {
	if w, ok := c.st.Weights[p.Name]; ok {
		return w
	}
	return p.WeightOf()
}

func (c controlsView) isDrained(name string) bool { return c.st.Drained[name] }

// limit returns the effective max concurrent requests at now and the
// override in force, if any.
func (c controlsView) limit(p *config.Pool, now time.Time) (int, *control.Override) {
	if o, ok := c.st.Overrides[p.Name]; ok && o.Active(now) {
		return o.Limit, &o
	}
	return p.Limits.MaxConcurrent, nil
}

// health tracks a pool's real failures for outlier ejection (passive) and
// its active health-check result. Shortages never reach it.
type health struct {
	mu           sync.Mutex
	consecutive  int
	ejections    int
	ejectedUntil time.Time
	unhealthy    bool // last active check failed
	lastErr      string
}

// ejection tuning, from the routing config.
type ejectionPolicy struct {
	afterFailures int
	base, max     time.Duration
}

// failure records a real failure; it returns true when the pool was just ejected.
func (h *health) failure(now time.Time, p ejectionPolicy, err error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.lastErr = err.Error()
	}
	h.consecutive++
	if h.consecutive < p.afterFailures || now.Before(h.ejectedUntil) {
		return false
	}
	// Exponential back-off: base × 2^(ejections), capped.
	d := time.Duration(float64(p.base) * math.Pow(2, float64(h.ejections)))
	if d > p.max || d <= 0 {
		d = p.max
	}
	h.ejections++
	h.ejectedUntil = now.Add(d)
	h.consecutive = 0
	return true
}

func (h *health) success() {
	h.mu.Lock()
	h.consecutive = 0
	h.mu.Unlock()
}

// ejected reports whether the pool is out of rotation at now. After an
// ejection ends, the back-off count decays once the pool stays healthy
// for a full max period.
func (h *health) ejected(now time.Time, p ejectionPolicy) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Before(h.ejectedUntil) {
		return true
	}
	if h.ejections > 0 && now.Sub(h.ejectedUntil) > p.max {
		h.ejections = 0
	}
	return false
}

func (h *health) setActive(ok bool, err error) (changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	changed = h.unhealthy == ok
	h.unhealthy = !ok
	if err != nil {
		h.lastErr = err.Error()
	}
	return changed
}

func (h *health) isUnhealthy() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.unhealthy
}

// view snapshots the pool for one routing decision.
func (s *Server) view(p *pool, now time.Time) policy.PoolView {
	ctl := s.controls()
	limit, _ := ctl.limit(&p.cfg, now)
	inflight := max(p.local.Load(), p.shared.Load())
	return policy.PoolView{
		Name:           p.cfg.Name,
		Cloud:          p.cfg.Cloud,
		Region:         p.cfg.Region,
		Geography:      p.cfg.Geography,
		Accelerator:    p.cfg.Accelerator,
		Models:         p.cfg.Models,
		Limit:          limit,
		InFlight:       int(inflight),
		Weight:         ctl.weight(&p.cfg),
		CostPerMillion: p.cfg.CostPerMillionTokens,
		Drained:        ctl.isDrained(p.cfg.Name),
		Ejected:        p.health.ejected(now, s.ejection()),
		Unhealthy:      p.health.isUnhealthy(),
		Reported:       reported(p.backend, now),
	}
}

// loadFresh is how long a backend's load report stays usable.
const loadFresh = 2 * time.Second

// reported returns the backend's fresh load report, if it sends them.
func reported(b backends.Backend, now time.Time) *policy.Reported {
	lr, ok := b.(backends.LoadReporter)
	if !ok {
		return nil
	}
	l, ok := lr.Load()
	if !ok || now.Sub(l.At) > loadFresh {
		return nil
	}
	return &policy.Reported{Running: l.Running, Queued: l.Queued, Capacity: l.Capacity}
}
