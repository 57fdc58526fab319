package router

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/control"
	"github.com/switchyard-dev/switchyard/router/policy"
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
	}
}
