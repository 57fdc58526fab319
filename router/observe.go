package router

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/priority"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/internal/grpccode"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// How one wait in the queue ended (switchyard.queue.wait result label).
const (
	queueRetry = iota
	queueFull
	queueEvicted
	queueGone
	queueResults
)

var (
	queueResultNames = [queueResults]string{"retry", "full", "evicted", "caller_gone"}
	storeErrAcquire  = newMopts(attribute.NewSet(attribute.String(telemetry.KeyOp, "acquire")))
	storeErrUsage    = newMopts(attribute.NewSet(attribute.String(telemetry.KeyOp, "usage")))
)

// mopts is one attribute set as the option slices the metric API takes,
// built once: recording passes a slice instead of building a variadic one,
// so the hot path allocates nothing for its metrics.
type mopts struct {
	add []metric.AddOption
	rec []metric.RecordOption
	obs []metric.ObserveOption
}

func newMopts(set attribute.Set) mopts {
	o := metric.WithAttributeSet(set)
	return mopts{add: []metric.AddOption{o}, rec: []metric.RecordOption{o}, obs: []metric.ObserveOption{o}}
}

type modeOpt struct {
	mode capacity.Mode
	opt  mopts
}

// telemetryObs is the observer the router runs with: metrics, trace spans,
// logs and watch events for every step of the request path. Safe for
// concurrent use.
type telemetryObs struct {
	log    *slog.Logger
	tracer trace.Tracer
	inst   *telemetry.Instruments
	events *eventBus
	clock  clock.Clock
	attrs  attrCache
	// noRegion labels the sheds of a call whose context carries no caller
	// region (caller_region "unknown"); queueOpts[result][priority class].
	noRegion  *regionLabel
	queueOpts [queueResults][priority.Classes]mopts
	modeOpts  []modeOpt
	// regions are the caller_region labels of the running fleet (withCall).
	regions atomic.Pointer[callerRegions]
}

var _ dispatch.Observer = (*telemetryObs)(nil)

// newTelemetryObs precomputes the attribute sets that do not depend on a pool.
func newTelemetryObs(log *slog.Logger, tracer trace.Tracer, inst *telemetry.Instruments, events *eventBus, clk clock.Clock) *telemetryObs {
	t := &telemetryObs{log: log, tracer: tracer, inst: inst, events: events, clock: clk}
	t.noRegion = newRegionLabel(regionUnknown)
	for r := range queueResults {
		for c := range priority.Classes {
			t.queueOpts[r][c] = newMopts(attribute.NewSet(
				attribute.String(telemetry.KeyResult, queueResultNames[r]), attribute.String(telemetry.KeyPriority, priority.Names[c])))
		}
	}
	for _, m := range []capacity.Mode{capacity.ModeLocal, capacity.ModeShared, capacity.ModeDegraded} {
		t.modeOpts = append(t.modeOpts, modeOpt{mode: m, opt: newMopts(attribute.NewSet(attribute.String(telemetry.KeyMode, m.String())))})
	}
	return t
}

// Values of the caller_region label besides the fleet's own regions.
const (
	// regionOther: the caller named a region the fleet does not know.
	regionOther = "other"
	// regionUnknown: the caller named none and the router has no --region.
	regionUnknown = "unknown"
)

// regionLabel is one value of the caller_region label of switchyard.sheds,
// with the attribute sets that carry it, built once per fleet so that a shed
// allocates nothing. shed[reason][priority class].
type regionLabel struct {
	name string
	shed [dispatch.ShedReasons][priority.Classes]mopts
}

func newRegionLabel(region string) *regionLabel {
	l := &regionLabel{name: region}
	for r := range dispatch.ShedReasons {
		for c := range priority.Classes {
			l.shed[r][c] = newMopts(attribute.NewSet(
				attribute.String(telemetry.KeyReason, r.String()),
				attribute.String(telemetry.KeyPriority, priority.Names[c]),
				attribute.String(telemetry.KeyCallerRegion, region)))
		}
	}
	return l
}

// callerRegions maps a caller's region to its label. The label's values are
// bounded by the fleet config: the regions of the fleet (see
// newCallerRegions), "other" and "unknown"; a client-chosen name never becomes
// a label value. Read-only once built, so safe for concurrent use.
type callerRegions struct {
	known          map[string]*regionLabel
	other, unknown *regionLabel
}

// newCallerRegions builds the labels for the given regions (the pools'
// regions, the config's declared extra regions and the router's own).
func newCallerRegions(regions []string) *callerRegions {
	cr := &callerRegions{known: map[string]*regionLabel{}, other: newRegionLabel(regionOther), unknown: newRegionLabel(regionUnknown)}
	for _, r := range regions {
		if _, ok := cr.known[r]; !ok && r != "" {
			cr.known[r] = newRegionLabel(r)
		}
	}
	return cr
}

// of returns the label of a caller's region ("" when it named none).
func (cr *callerRegions) of(region string) *regionLabel {
	if region == "" {
		return cr.unknown
	}
	if l, ok := cr.known[region]; ok {
		return l
	}
	return cr.other
}

type callerRegionKey struct{}

// withCall returns ctx carrying the call's request id (for log lines) and
// its caller_region label, which the observer's shed reads (the dispatcher
// passes the call's context on), in one context node.
func (t *telemetryObs) withCall(ctx context.Context, c *call) context.Context {
	return telemetry.WithRequestIDValue(ctx, c.ID, callerRegionKey{}, t.regions.Load().of(c.Routing.CallerRegion))
}

// attrCache keeps one attribute set per distinct label combination of the
// per-call metrics (models x pools x statuses: small and bounded, since only
// configured model names get here), so a call allocates none.
type attrCache struct {
	mu sync.RWMutex
	m  map[attrKey]mopts
}

type attrKey struct {
	kind   uint8 // 0: request (rpc, model, pool, status); 1: model+pool; 2: tokens (model, pool, type)
	rpc    string
	model  string
	pool   string
	status string // the gRPC code name the call was answered with (grpccode.Name)
	extra  string
}

func (c *attrCache) get(k attrKey) mopts {
	c.mu.RLock()
	o, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return o
	}
	kv := []attribute.KeyValue{attribute.String(telemetry.KeyModel, k.model), attribute.String(telemetry.KeyPool, k.pool)}
	switch k.kind {
	case 0:
		kv = append(kv, attribute.String(telemetry.KeyRPC, k.rpc), attribute.String(telemetry.KeyStatus, k.status))
	case 2:
		kv = append(kv, attribute.String(telemetry.KeyTokenType, k.extra))
	case 3: // gen_ai.client.operation.duration: rpc is the operation, extra the provider
		kv = append(kv, attribute.String(telemetry.KeyOperation, k.rpc), attribute.String(telemetry.KeyProvider, k.extra))
		if k.status != "OK" {
			kv = append(kv, attribute.String("error.type", k.status))
		}
	}
	o = newMopts(attribute.NewSet(kv...))
	c.mu.Lock()
	if c.m == nil {
		c.m = map[attrKey]mopts{}
	}
	c.m[k] = o
	c.mu.Unlock()
	return o
}

// observe reports the observable gauges; runs at each collection.
func (s *Server) observe(_ context.Context, o metric.Observer) error {
	g := s.disp.Generation()
	now := s.opts.Clock.Now()
	in := s.tel.inst
	for _, p := range g.Pools {
		v := p.View(now)
		po := ext(p).obs.pool.obs
		o.ObserveInt64(in.PoolInFlight, int64(v.InFlight), po...)
		o.ObserveInt64(in.PoolLimit, int64(v.EffectiveLimit()), po...)
		o.ObserveInt64(in.PoolHeadroom, int64(v.EffectiveHeadroom()), po...)
		if r := v.Reported; r != nil {
			o.ObserveInt64(in.BackendRunning, int64(r.Running), po...)
			o.ObserveInt64(in.BackendQueued, int64(r.Queued), po...)
			o.ObserveInt64(in.BackendCapacity, int64(r.Capacity), po...)
		}
		o.ObserveInt64(in.PoolEjected, b2i(v.Ejected), po...)
		o.ObserveInt64(in.PoolDrained, b2i(v.Drained), po...)
		o.ObserveInt64(in.PoolHealthy, b2i(!v.Unhealthy), po...)
	}
	o.ObserveInt64(in.QueueLength, int64(s.disp.QueueLength()))
	if br, ok := s.opts.Store.(capacity.BlockReporter); ok {
		bs := br.Blocks()
		byName := make(map[string]capacity.PoolBlock, len(bs.Pools))
		for _, b := range bs.Pools {
			byName[b.Pool] = b
		}
		for _, p := range g.Pools {
			if b, ok := byName[p.Name()]; ok {
				po := ext(p).obs.pool.obs
				o.ObserveInt64(in.BlockGranted, b.Granted, po...)
				o.ObserveInt64(in.BlockFree, b.Free, po...)
				o.ObserveInt64(in.BlockStranded, b.Stranded, po...)
			}
		}
		o.ObserveInt64(in.StoreRoundTrips, bs.Trips-bs.SyncTrips, tripBackground)
		o.ObserveInt64(in.StoreRoundTrips, bs.SyncTrips, tripSync)
	}
	mode := s.opts.Store.Status().Mode
	for _, m := range s.tel.modeOpts {
		o.ObserveInt64(in.CountingMode, b2i(m.mode == mode), m.opt.obs...)
	}
	return nil
}

var (
	tripBackground = metric.WithAttributes(attribute.String("switchyard.trip", "background"))
	tripSync       = metric.WithAttributes(attribute.String("switchyard.trip", "sync"))
)

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// explain: only traced (sampled) calls pay for decision reasons.
func (t *telemetryObs) Explain(ctx context.Context) bool {
	return trace.SpanFromContext(ctx).IsRecording()
}

// acquired records one capacity-store Acquire (and, on traced calls, that a
// pool had no slot).
func (t *telemetryObs) Acquired(ctx context.Context, p *dispatch.Pool, took time.Duration, err error) {
	r := acquireOK
	var quota *capacity.QuotaError
	switch {
	case err == nil:
	case errors.Is(err, capacity.ErrPoolFull):
		r = acquireFull
	case errors.As(err, &quota):
		r = acquireQuota
	default:
		r = acquireError
		if errors.Is(err, capacity.ErrUnavailable) {
			t.inst.StoreErrors.Add(ctx, 1, storeErrAcquire.add...)
		}
	}
	t.inst.AcquireDuration.Record(ctx, took.Seconds(), ext(p).obs.acquire[r].rec...)
	if err != nil {
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.AddEvent("switchyard.no_slot", trace.WithAttributes(attribute.String("switchyard.pool", p.Name()), attribute.String("error", err.Error())))
		}
	}
}

var attemptKind = trace.WithSpanKind(trace.SpanKindInternal)

// attemptStarted starts the attempt span (back-dated to when the slot was
// asked for) and counts retries.
func (t *telemetryObs) AttemptStarted(ctx context.Context, a *dispatch.Attempt) context.Context {
	po := &ext(a.Pool).obs
	if a.N > 1 {
		t.inst.Retries.Add(ctx, 1, po.pool.add...)
	}
	actx, span := t.tracer.Start(ctx, "switchyard.attempt", trace.WithTimestamp(a.Start), attemptKind)
	if span.IsRecording() {
		span.SetAttributes(po.span...)
		span.SetAttributes(
			attribute.Int("switchyard.attempt", int(a.N)),
			attribute.String("switchyard.policy", a.Policy),
			attribute.String("switchyard.decision.tier", a.Cand.Tier.String()),
			attribute.String("switchyard.decision.reason", a.Cand.Reason),
			attribute.Int("switchyard.decision.headroom", a.Cand.Headroom),
			attribute.Int("switchyard.streamed_tokens", int(a.Streamed)),
			attribute.String(telemetry.KeyOperation, a.Op),
		)
	}
	a.Span = span
	return actx
}

// attemptDone records the attempt's outcome on its span and in metrics, and
// logs a failure that moves the call to another pool.
func (t *telemetryObs) AttemptDone(ctx context.Context, a *dispatch.Attempt, oc dispatch.Outcome, err error) {
	po := &ext(a.Pool).obs
	t.inst.Attempts.Add(ctx, 1, po.outcome[oc].add...)
	// The router is the GenAI client of its backends: one operation per attempt.
	code := grpccode.Name(err)
	t.inst.GenAIClientDuration.Record(ctx, a.Took.Seconds(),
		t.attrs.get(attrKey{kind: 3, rpc: a.Op, model: a.Model, pool: a.Pool.Name(), extra: po.provider, status: code}).rec...)
	span, _ := a.Span.(trace.Span)
	if span == nil {
		return
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("switchyard.outcome", oc.String()))
		if err != nil {
			span.SetAttributes(attribute.String("error.type", code))
			span.RecordError(err)
			span.SetStatus(otelcodes.Error, err.Error())
		}
	}
	span.End()
	if oc == dispatch.OutcomeFailure {
		// streamed_tokens: every token the client has had, before this
		// attempt and from it (a broken stream's usage counts what it sent).
		t.log.InfoContext(ctx, "attempt failed, trying another pool", "pool", a.Pool.Name(), "err", err, "streamed_tokens", a.Streamed+a.Output)
	}
}

// overrun records that p's backend produced more than the call allows
// (reason "max_tokens" or "bytes"): a metric and a warning, since a backend
// ignoring max_tokens costs the fleet capacity and the client tokens it did
// not ask for.
func (t *telemetryObs) overrun(ctx context.Context, p *dispatch.Pool, reason string, maxTokens, tokens int32, err error) {
	t.inst.BackendOverruns.Add(ctx, 1, metric.WithAttributes(attribute.String(telemetry.KeyPool, p.Name()), attribute.String(telemetry.KeyReason, reason)))
	args := []any{"pool", p.Name(), "reason", reason, "max_tokens", maxTokens, "tokens", tokens}
	if err != nil {
		args = append(args, "err", err)
	}
	t.log.WarnContext(ctx, "backend ignores max_tokens: attempt stopped", args...)
}

// ejected logs and announces a pool taken out of rotation.
func (t *telemetryObs) Ejected(ctx context.Context, p *dispatch.Pool, err error) {
	t.log.WarnContext(ctx, "pool ejected", "pool", p.Name(), "err", err)
	t.events.publish("ejected", p.Name(), "ejected after consecutive failures: "+err.Error(), "")
}

// shed counts a call refused for want of capacity or budget, by reason,
// priority and the caller_region label the edge put in ctx.
func (t *telemetryObs) Shed(ctx context.Context, r dispatch.ShedReason, prio priority.Class) {
	l, _ := ctx.Value(callerRegionKey{}).(*regionLabel)
	if l == nil {
		l = t.noRegion
	}
	t.inst.Sheds.Add(ctx, 1, l.shed[r][prio.Index()].add...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(attribute.String("switchyard.shed_reason", r.String()))
	}
}

// queueWaited records one wait in the queue as a metric and a span event
// on the call's server span.
func (t *telemetryObs) QueueWaited(ctx context.Context, prio priority.Class, d time.Duration, res dispatch.WaitResult, err error) {
	r := queueRetry
	switch {
	case err != nil:
		r = queueGone
	case res == dispatch.WaitFull:
		r = queueFull
	case res == dispatch.WaitEvicted:
		r = queueEvicted
	}
	t.inst.QueueWait.Record(ctx, d.Seconds(), t.queueOpts[r][prio.Index()].rec...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("switchyard.queue.wait", trace.WithAttributes(
			attribute.Float64("switchyard.queue.wait_seconds", d.Seconds()),
			attribute.String("switchyard.queue.result", queueResultNames[r]),
			attribute.String("switchyard.priority", prio.String()),
		))
	}
}

// callStats is what done needs to know about a finished call.
type callStats struct {
	rpc      string
	model    string
	route    *dispatch.Route
	start    time.Time
	firstTok time.Time // streams: when the first token went to the client
	input    int32
	output   int32
	// cached is how many of the input tokens the backend served from its
	// prefix cache (the usage's cached_input_tokens; 0 when not reported).
	cached int32
}

// done records the call's metrics, tags its server span and writes the
// per-call debug line (never the prompt or the generated text).
// err is the core's (an edge's wire error passes too).
func (t *telemetryObs) done(ctx context.Context, cs callStats, err error) {
	code := grpccode.Name(err)
	pool := routePool(cs.route)
	if pool == "" {
		pool = "none"
	}
	model := cs.model
	if model == "" {
		model = "unknown"
	}
	now := t.clock.Now()
	d := now.Sub(cs.start)
	opt := t.attrs.get(attrKey{kind: 0, rpc: cs.rpc, model: model, pool: pool, status: code})
	t.inst.Requests.Add(ctx, 1, opt.add...)
	t.inst.RequestDuration.Record(ctx, d.Seconds(), opt.rec...)
	if code == "OK" {
		t.inst.TokenUsage.Record(ctx, int64(cs.input), t.attrs.get(attrKey{kind: 2, model: model, pool: pool, extra: "input"}).rec...)
		t.inst.TokenUsage.Record(ctx, int64(cs.output), t.attrs.get(attrKey{kind: 2, model: model, pool: pool, extra: "output"}).rec...)
		if cs.cached > 0 {
			t.inst.CachedTokens.Add(ctx, int64(min(cs.cached, cs.input)), t.attrs.get(attrKey{kind: 1, model: model, pool: pool}).add...)
		}
		if !cs.firstTok.IsZero() {
			mp := t.attrs.get(attrKey{kind: 1, model: model, pool: pool})
			t.inst.TTFT.Record(ctx, cs.firstTok.Sub(cs.start).Seconds(), mp.rec...)
			if cs.output > 1 {
				t.inst.TPOT.Record(ctx, now.Sub(cs.firstTok).Seconds()/float64(cs.output-1), mp.rec...)
			}
		}
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(
			attribute.String(telemetry.KeyModel, model),
			attribute.String("switchyard.request_id", telemetry.RequestID(ctx)),
			attribute.String("switchyard.pool", routePool(cs.route)),
			attribute.Int("switchyard.attempts", int(routeAttempts(cs.route))),
		)
	}
	if t.log.Enabled(ctx, slog.LevelDebug) {
		t.log.DebugContext(ctx, "call finished", "rpc", cs.rpc, "model", model, "pool", routePool(cs.route),
			"attempts", routeAttempts(cs.route), "pools_tried", routeTried(cs.route), "code", code,
			"duration_ms", d.Milliseconds(), "ttft_ms", ttftMillis(&cs), "input_tokens", cs.input, "cached_tokens", cs.cached,
			"output_tokens", cs.output)
	}
}

// ttftMillis is the call's time to its first token in milliseconds (to the
// microsecond), or -1 when none reached the client.
func ttftMillis(cs *callStats) float64 {
	if cs.firstTok.IsZero() {
		return -1
	}
	return float64(cs.firstTok.Sub(cs.start).Microseconds()) / 1000
}

// A call refused at admission has no route: these read a nil one as empty.
func routePool(r *dispatch.Route) string {
	if r == nil {
		return ""
	}
	return r.Pool
}

func routeAttempts(r *dispatch.Route) int32 {
	if r == nil {
		return 0
	}
	return r.Attempts
}

func routeTried(r *dispatch.Route) []string {
	if r == nil {
		return nil
	}
	return r.PoolsTried
}
