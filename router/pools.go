package router

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/control"
	"github.com/switchyard-dev/switchyard/router/policy"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// pool is one configured pool at run time: its config, its backend, this
// replica's in-flight count, its health and the operator changes in force on
// it. Everything a routing decision reads is a field updated where it changes
// (acquire and release, the usage refresher, health checks, operator
// changes), so a decision reads atomics and rebuilds nothing. Safe for
// concurrent use.
type pool struct {
	cfg     config.Pool
	backend backends.Backend
	// index is the pool's place in its fleetState's pools.
	index int
	// continues caches backend.Capabilities().Continuation.
	continues bool
	// offers caches the optional features of backend.Capabilities().
	offers features
	// reporter is the backend when it reports its load, else nil.
	reporter backends.LoadReporter

	// local is the number of calls this replica has in flight on the pool.
	local atomic.Int64
	// shared is the fleet-wide in-flight count: the last one read from the
	// capacity store, moved by this replica's own acquires and releases
	// since (sharedAcquired, sharedReleased), so a slot this replica frees
	// shows as free at once instead of at the next read. Other replicas'
	// changes show at the next read (Options.UsageRefresh).
	shared atomic.Int64
	// ctl is the operator changes in force on this pool (never nil once built).
	ctl atomic.Pointer[poolControl]

	health *health

	obs poolObs
}

// poolControl is one pool's share of the control state.
type poolControl struct {
	weight   float64
	drained  bool
	override *control.Override // nil: none
}

// poolObs holds the pool's precomputed telemetry attributes, so the hot path
// records metrics without building attribute sets per call.
type poolObs struct {
	// pool is {pool, cloud, region, accelerator}.
	pool mopts
	// outcome[o] is pool plus outcome=o.
	outcome [outcomeCount]mopts
	// acquire[r] is {pool, result=r}.
	acquire [acquireResults]mopts
	// span are the attempt span's pool attributes.
	span []attribute.KeyValue
	// provider is the pool's gen_ai.provider.name.
	provider string
}

// genAIProvider is a pool's gen_ai.provider.name (OpenTelemetry GenAI
// semantic conventions) from its adapter: the convention's names for the
// cloud APIs, "openai" for OpenAI-compatible servers, switchyard's own for
// native backends and the simulator.
func genAIProvider(adapter string) string {
	switch adapter {
	case "openai":
		return "openai"
	case "bedrock":
		return "aws.bedrock"
	case "vertex":
		return "gcp.vertex_ai"
	case "sim":
		return "switchyard.sim"
	case "grpc", "":
		return "switchyard"
	}
	return adapter
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
	caps := b.Capabilities()
	p := &pool{cfg: cfg, backend: b, health: h, continues: caps.Continuation, offers: capsFeatures(caps)}
	p.reporter, _ = b.(backends.LoadReporter)
	p.ctl.Store(&poolControl{weight: cfg.WeightOf()})
	base := []attribute.KeyValue{
		attribute.String(telemetry.KeyPool, cfg.Name), attribute.String(telemetry.KeyCloud, cfg.Cloud),
		attribute.String(telemetry.KeyRegion, cfg.Region), attribute.String(telemetry.KeyAccelerator, cfg.Accelerator),
	}
	p.obs.pool = newMopts(attribute.NewSet(base...))
	for o := range outcomeCount {
		p.obs.outcome[o] = newMopts(attribute.NewSet(append(base[:len(base):len(base)], attribute.String(telemetry.KeyOutcome, outcome(o).String()))...))
	}
	for r, name := range acquireResultNames {
		p.obs.acquire[r] = newMopts(attribute.NewSet(attribute.String(telemetry.KeyPool, cfg.Name), attribute.String(telemetry.KeyResult, name)))
	}
	p.obs.provider = genAIProvider(cfg.Adapter)
	p.obs.span = []attribute.KeyValue{
		attribute.String("switchyard.pool", cfg.Name), attribute.String("cloud.provider", cfg.Cloud),
		attribute.String("cloud.region", cfg.Region), attribute.String("switchyard.accelerator", cfg.Accelerator),
		attribute.String(telemetry.KeyProvider, p.obs.provider),
	}
	return p
}

// setControl takes the pool's share of the control state st.
func (p *pool) setControl(st *control.State) {
	pc := &poolControl{weight: p.cfg.WeightOf(), drained: st.Drained[p.cfg.Name]}
	if w, ok := st.Weights[p.cfg.Name]; ok {
		pc.weight = w
	}
	if o, ok := st.Overrides[p.cfg.Name]; ok {
		pc.override = &o
	}
	p.ctl.Store(pc)
}

// limit returns the effective max concurrent requests at now and the
// override in force, if any.
func (p *pool) limit(now time.Time) (int, *control.Override) {
	if o := p.ctl.Load().override; o != nil && o.Active(now) {
		return o.Limit, o
	}
	return p.cfg.Limits.MaxConcurrent, nil
}

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
	until := time.Unix(0, h.ejectedUntil.Load())
	if h.ejections > 0 && now.Sub(until) > p.max {
		// Healthy for a full max period since the last ejection ended: the
		// back-off starts over.
		h.ejections = 0
	}
	h.consecutive++
	if h.consecutive < p.afterFailures || now.Before(until) {
		return false
	}
	// Exponential back-off: base × 2^(ejections), capped.
	d := time.Duration(float64(p.base) * math.Pow(2, float64(h.ejections)))
	if d > p.max || d <= 0 {
		d = p.max
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

// view snapshots the pool (Admin, gauges).
func (p *pool) view(now time.Time) policy.PoolView {
	var v policy.PoolView
	p.viewInto(&v, new(policy.Reported), now)
	return v
}

// viewInto snapshots the pool for one routing decision into v; a fresh load
// report goes into rep, which v then points to. Allocates nothing.
func (p *pool) viewInto(v *policy.PoolView, rep *policy.Reported, now time.Time) {
	pc := p.ctl.Load()
	limit, _ := p.limit(now)
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
	if p.reporter != nil {
		if l, ok := p.reporter.Load(); ok && now.Sub(l.At) <= loadFresh {
			*rep = policy.Reported{Running: l.Running, Queued: l.Queued, Capacity: l.Capacity}
			v.Reported = rep
		}
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

// sharedAcquired counts a slot this replica just took in the shared view.
func (p *pool) sharedAcquired() { p.shared.Add(1) }

// sharedReleased takes a slot this replica just freed out of the shared
// view, never below zero (the last read may not have seen it).
func (p *pool) sharedReleased() {
	for {
		v := p.shared.Load()
		if v <= 0 || p.shared.CompareAndSwap(v, v-1) {
			return
		}
	}
}
