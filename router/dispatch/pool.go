package dispatch

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/control"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// Pool is one configured pool at run time: its config, what its backend
// offers, this replica's in-flight count, the fleet-wide count last read,
// its health and the operator changes in force on it. Everything a routing
// decision reads is a field updated where it changes (acquire and release,
// the usage refresher, health checks, operator changes), so a decision reads
// atomics and rebuilds nothing. Safe for concurrent use.
type Pool struct {
	cfg config.Pool
	// index is the pool's place in its Generation's Pools.
	index     int
	continues bool
	offers    Features
	load      func() (policy.Reported, time.Time, bool)
	attached  any

	// local is the number of calls this replica has in flight on the pool.
	local atomic.Int64
	// shared is the fleet-wide in-flight count: the last one read from the
	// capacity store, moved by this replica's own acquires and releases
	// since, so a slot this replica frees shows as free at once instead of
	// at the next read. Other replicas' changes show at the next read.
	shared atomic.Int64
	// ctl is the operator changes in force on this pool (never nil once built).
	ctl atomic.Pointer[poolControl]

	health *health
}

// PoolOptions build a Pool.
type PoolOptions struct {
	Config config.Pool
	// Continues: the backend honours a continuation, so a stream broken on
	// another pool can resume on this one.
	Continues bool
	// Offers are the optional features the backend passes on.
	Offers Features
	// Load returns the backend's last load report and when it was made
	// (false: none yet); nil when the backend reports no load.
	Load func() (policy.Reported, time.Time, bool)
	// Attached is whatever the wiring keeps with the pool (the router: its
	// backend and telemetry attributes). The core never reads it.
	Attached any
	// Carry is the previous generation's pool with the same backend, whose
	// counters and health this one takes over (a reload that left the pool's
	// backend settings alone); nil for a new pool.
	Carry *Pool
}

// NewPool builds a pool.
func NewPool(o PoolOptions) *Pool {
	p := &Pool{cfg: o.Config, continues: o.Continues, offers: o.Offers, load: o.Load, attached: o.Attached, health: &health{}}
	if c := o.Carry; c != nil {
		p.health = c.health
		p.local.Store(c.local.Load())
		p.shared.Store(c.shared.Load())
	}
	p.ctl.Store(&poolControl{weight: o.Config.WeightOf()})
	return p
}

// Config is the pool's config.
func (p *Pool) Config() *config.Pool { return &p.cfg }

// Name is the pool's name.
func (p *Pool) Name() string { return p.cfg.Name }

// Index is the pool's place in its Generation's Pools.
func (p *Pool) Index() int { return p.index }

// Attached is what the wiring attached to the pool (PoolOptions.Attached).
func (p *Pool) Attached() any { return p.attached }

// InFlight is this replica's calls in flight on the pool.
func (p *Pool) InFlight() int64 { return p.local.Load() }

// Shared is the fleet-wide in-flight count as this replica sees it.
func (p *Pool) Shared() int64 { return p.shared.Load() }

// SetShared stores the fleet-wide in-flight count read from the capacity store.
func (p *Pool) SetShared(n int64) { p.shared.Store(n) }

// poolControl is one pool's share of the control state.
type poolControl struct {
	weight   float64
	drained  bool
	override *control.Override // nil: none
}

// SetControl takes the pool's share of the control state st.
func (p *Pool) SetControl(st *control.State) {
	pc := &poolControl{weight: p.cfg.WeightOf(), drained: st.Drained[p.cfg.Name]}
	if w, ok := st.Weights[p.cfg.Name]; ok {
		pc.weight = w
	}
	if o, ok := st.Overrides[p.cfg.Name]; ok {
		pc.override = &o
	}
	p.ctl.Store(pc)
}

// Limit returns the effective max concurrent requests at now and the
// override in force, if any.
func (p *Pool) Limit(now time.Time) (int, *control.Override) {
	if o := p.ctl.Load().override; o != nil && o.Active(now) {
		return o.Limit, o
	}
	return p.cfg.Limits.MaxConcurrent, nil
}

// View snapshots the pool (Admin, gauges).
func (p *Pool) View(now time.Time) policy.PoolView {
	var v policy.PoolView
	p.viewInto(&v, new(policy.Reported), now)
	return v
}

// loadFresh is how long a backend's load report stays usable.
const loadFresh = 2 * time.Second

// viewInto snapshots the pool for one routing decision into v; a fresh load
// report goes into rep, which v then points to. Allocates nothing.
func (p *Pool) viewInto(v *policy.PoolView, rep *policy.Reported, now time.Time) {
	pc := p.ctl.Load()
	limit, _ := p.Limit(now)
	*v = policy.PoolView{
		Name:           p.cfg.Name,
		Cloud:          p.cfg.Cloud,
		Region:         p.cfg.Region,
		Geography:      p.cfg.Geography,
		Accelerator:    p.cfg.Accelerator,
		Models:         p.cfg.Models,
		Limit:          limit,
		InFlight:       int(max(p.local.Load(), p.shared.Load())),
		Weight:         pc.weight,
		CostPerMillion: p.cfg.CostPerMillionTokens,
		Drained:        pc.drained,
		Ejected:        p.health.ejected(now),
		Unhealthy:      p.health.isUnhealthy(),
	}
	if p.load != nil {
		if l, at, ok := p.load(); ok && now.Sub(at) <= loadFresh {
			*rep = l
			v.Reported = rep
		}
	}
}

// acquired counts a slot this replica just took, here and in the shared view.
func (p *Pool) acquired() {
	p.local.Add(1)
	p.shared.Add(1)
}

// released takes a slot this replica just freed out of both counts, the
// shared one never below zero (the last read may not have seen it).
func (p *Pool) released() {
	p.local.Add(-1)
	for {
		v := p.shared.Load()
		if v <= 0 || p.shared.CompareAndSwap(v, v-1) {
			return
		}
	}
}

// SetActiveHealth records an active health check's result; changed says
// whether the pool just went out of rotation or came back.
func (p *Pool) SetActiveHealth(ok bool, err error) (changed bool) { return p.health.setActive(ok, err) }

// health tracks a pool's real failures for outlier ejection (passive) and
// its active health-check result. Shortages never reach it. Writers take mu;
// readers (every routing decision) read the atomics only.
type health struct {
	mu          sync.Mutex
	consecutive int
	ejections   int
	lastErr     string

	checkFails   int          // consecutive failed active checks (under mu)
	ejectedUntil atomic.Int64 // unix nanoseconds; 0: never ejected
	unhealthy    atomic.Bool  // unhealthyAfterChecks active checks in a row failed
}

// unhealthyAfterChecks is how many active health checks in a row must fail
// before a pool is taken out of rotation (one passing check brings it back):
// a single slow answer on a busy host is not an outage. A dead endpoint fails
// its checks at once and real calls eject it sooner anyway.
const unhealthyAfterChecks = 2

// Ejection is the outlier-ejection tuning, from the routing config.
type Ejection struct {
	AfterFailures int
	Base, Max     time.Duration
}

// failure records a real failure; it returns true when the pool was just ejected.
func (h *health) failure(now time.Time, p Ejection, err error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.lastErr = err.Error()
	}
	until := time.Unix(0, h.ejectedUntil.Load())
	if h.ejections > 0 && now.Sub(until) > p.Max {
		// Healthy for a full max period since the last ejection ended: the
		// back-off starts over.
		h.ejections = 0
	}
	h.consecutive++
	if h.consecutive < p.AfterFailures || now.Before(until) {
		return false
	}
	// Exponential back-off: base × 2^(ejections), capped.
	d := time.Duration(float64(p.Base) * math.Pow(2, float64(h.ejections)))
	if d > p.Max || d <= 0 {
		d = p.Max
	}
	h.ejections++
	h.ejectedUntil.Store(now.Add(d).UnixNano())
	h.consecutive = 0
	return true
}

func (h *health) success() {
	h.mu.Lock()
	h.consecutive = 0
	h.mu.Unlock()
}

// ejected reports whether the pool is out of rotation at now.
func (h *health) ejected(now time.Time) bool {
	u := h.ejectedUntil.Load()
	return u != 0 && now.UnixNano() < u
}

func (h *health) setActive(ok bool, err error) (changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.lastErr = err.Error()
	}
	if ok {
		h.checkFails = 0
	} else {
		h.checkFails++
	}
	unhealthy := h.checkFails >= unhealthyAfterChecks
	changed = h.unhealthy.Load() != unhealthy
	h.unhealthy.Store(unhealthy)
	return changed
}

func (h *health) isUnhealthy() bool { return h.unhealthy.Load() }
