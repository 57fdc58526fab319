package router

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/policy"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// outcomeCount is the number of outcomes (for per-outcome arrays).
const outcomeCount = int(outcomeCallerGone) + 1

var outcomeNames = [outcomeCount]string{"ok", "client_fault", "shortage", "failure", "caller_gone"}

func (o outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Why a call was shed (switchyard.sheds reason label).
type shedReason int

const (
	shedQueueFull shedReason = iota
	shedEvicted
	shedNoCapacity
	shedRetryBudget
	shedReasons
)

var shedReasonNames = [shedReasons]string{"queue_full", "evicted", "no_capacity", "retry_budget"}

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
	priorityNames    = [3]string{"interactive", "standard", "batch"}
	storeErrAcquire  = metric.WithAttributeSet(attribute.NewSet(attribute.String(telemetry.KeyOp, "acquire")))
	storeErrUsage    = metric.WithAttributeSet(attribute.NewSet(attribute.String(telemetry.KeyOp, "usage")))
)

type modeOpt struct {
	mode capacity.Mode
	opt  metric.MeasurementOption
}

// initTelemetry precomputes the attribute sets that do not depend on a pool.
func (s *Server) initTelemetry() {
	for r := range shedReasons {
		for c := range 3 {
			s.shedOpts[r][c] = metric.WithAttributeSet(attribute.NewSet(
				attribute.String(telemetry.KeyReason, shedReasonNames[r]), attribute.String(telemetry.KeyPriority, priorityNames[c])))
		}
	}
	for r := range queueResults {
		for c := range 3 {
			s.queueOpts[r][c] = metric.WithAttributeSet(attribute.NewSet(
				attribute.String(telemetry.KeyResult, queueResultNames[r]), attribute.String(telemetry.KeyPriority, priorityNames[c])))
		}
	}
	for _, m := range []capacity.Mode{capacity.ModeLocal, capacity.ModeShared, capacity.ModeDegraded} {
		s.modeOpts = append(s.modeOpts, modeOpt{mode: m, opt: metric.WithAttributeSet(attribute.NewSet(attribute.String(telemetry.KeyMode, m.String())))})
	}
}

// attrCache keeps one attribute set per distinct label combination of the
// per-call metrics (models x pools x statuses: small and bounded, since only
// configured model names get here), so a call allocates none.
type attrCache struct {
	mu sync.RWMutex
	m  map[attrKey]metric.MeasurementOption
}

type attrKey struct {
	kind   uint8 // 0: request (rpc, model, pool, status); 1: model+pool; 2: tokens (model, pool, type)
	rpc    string
	model  string
	pool   string
	status codes.Code
	extra  string
}

func (c *attrCache) get(k attrKey) metric.MeasurementOption {
	c.mu.RLock()
	o, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return o
	}
	kv := []attribute.KeyValue{attribute.String(telemetry.KeyModel, k.model), attribute.String(telemetry.KeyPool, k.pool)}
	switch k.kind {
	case 0:
		kv = append(kv, attribute.String(telemetry.KeyRPC, k.rpc), attribute.String(telemetry.KeyStatus, statusName(k.status)))
	case 2:
		kv = append(kv, attribute.String(telemetry.KeyTokenType, k.extra))
	}
	o = metric.WithAttributeSet(attribute.NewSet(kv...))
	c.mu.Lock()
	if c.m == nil {
		c.m = map[attrKey]metric.MeasurementOption{}
	}
	c.m[k] = o
	c.mu.Unlock()
	return o
}

// statusName is the canonical upper-case gRPC code name (OK, UNAVAILABLE, ...).
func statusName(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return c.String()
}

var codeNames = []string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
	"PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
	"UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// observe reports the observable gauges; runs at each collection.
func (s *Server) observe(_ context.Context, o metric.Observer) error {
	st := s.state.Load()
	now := s.clock.Now()
	in := s.inst
	for _, p := range st.pools {
		v := s.view(p, now)
		o.ObserveInt64(in.PoolInFlight, int64(v.InFlight), p.obs.pool)
		o.ObserveInt64(in.PoolLimit, int64(v.Limit), p.obs.pool)
		o.ObserveInt64(in.PoolHeadroom, int64(max(v.Limit-v.InFlight, 0)), p.obs.pool)
		o.ObserveInt64(in.PoolEjected, b2i(v.Ejected), p.obs.pool)
		o.ObserveInt64(in.PoolDrained, b2i(v.Drained), p.obs.pool)
		o.ObserveInt64(in.PoolHealthy, b2i(!v.Unhealthy), p.obs.pool)
	}
	o.ObserveInt64(in.QueueLength, int64(s.queue.length()))
	mode := s.store.Status().Mode
	for _, m := range s.modeOpts {
		o.ObserveInt64(in.CountingMode, b2i(m.mode == mode), m.opt)
	}
	return nil
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// recordAcquire records one capacity-store Acquire.
func (s *Server) recordAcquire(ctx context.Context, p *pool, start time.Time, err error) {
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
			s.inst.StoreErrors.Add(ctx, 1, storeErrAcquire)
		}
	}
	s.inst.AcquireDuration.Record(ctx, time.Since(start).Seconds(), p.obs.acquire[r])
}

// startAttempt starts the attempt span (back-dated to when the slot was
// asked for) and counts retries.
func (s *Server) startAttempt(ctx context.Context, start time.Time, p *pool, n int32, pol string, cand *policy.Candidate, prog *progress) (context.Context, trace.Span) {
	if n > 1 {
		s.inst.Retries.Add(ctx, 1, p.obs.pool)
	}
	actx, span := s.tracer.Start(ctx, "switchyard.attempt", trace.WithTimestamp(start), trace.WithSpanKind(trace.SpanKindInternal))
	if span.IsRecording() {
		span.SetAttributes(p.obs.span...)
		span.SetAttributes(
			attribute.Int("switchyard.attempt", int(n)),
			attribute.String("switchyard.policy", pol),
			attribute.String("switchyard.decision.tier", cand.Tier.String()),
			attribute.String("switchyard.decision.reason", cand.Reason),
			attribute.Int("switchyard.decision.headroom", cand.Headroom),
			attribute.Int("switchyard.streamed_tokens", int(streamed(prog))),
		)
	}
	return actx, span
}

// endAttempt records the attempt's outcome on its span and in metrics.
func (s *Server) endAttempt(ctx context.Context, span trace.Span, p *pool, oc outcome, err error) {
	s.inst.Attempts.Add(ctx, 1, p.obs.outcome[oc])
	if span.IsRecording() {
		span.SetAttributes(attribute.String("switchyard.outcome", oc.String()))
		if err != nil {
			span.SetAttributes(attribute.String("error.type", statusName(status.Code(toStatus(err)))))
			span.RecordError(err)
			span.SetStatus(otelcodes.Error, err.Error())
		}
	}
	span.End()
}

// shed counts a call refused for want of capacity or budget.
func (s *Server) shed(ctx context.Context, r shedReason, prio pb.Priority) {
	s.inst.Sheds.Add(ctx, 1, s.shedOpts[r][classOf(prio)])
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(attribute.String("switchyard.shed_reason", shedReasonNames[r]))
	}
}

// recordQueueWait records one wait in the queue as a metric and a span event
// on the call's server span.
func (s *Server) recordQueueWait(ctx context.Context, prio pb.Priority, start time.Time, res waitResult, err error) {
	r := queueRetry
	switch {
	case err != nil:
		r = queueGone
	case res == waitFull:
		r = queueFull
	case res == waitEvicted:
		r = queueEvicted
	}
	d := time.Since(start)
	s.inst.QueueWait.Record(ctx, d.Seconds(), s.queueOpts[r][classOf(prio)])
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("switchyard.queue.wait", trace.WithAttributes(
			attribute.Float64("switchyard.queue.wait_seconds", d.Seconds()),
			attribute.String("switchyard.queue.result", queueResultNames[r]),
			attribute.String("switchyard.priority", priorityNames[classOf(prio)]),
		))
	}
}

// recordNoSlot notes on the server span that a pool had no slot for the call.
func recordNoSlot(ctx context.Context, p *pool, err error) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("switchyard.no_slot", trace.WithAttributes(attribute.String("switchyard.pool", p.cfg.Name), attribute.String("error", err.Error())))
	}
}

// callStats is what finishCall needs to know about a finished call.
type callStats struct {
	rpc      string
	model    string
	route    *pb.Route
	start    time.Time
	firstTok time.Time // streams: when the first token went to the client
	input    int32
	output   int32
}

// finishCall records the call's metrics, tags its server span and writes the
// per-call debug line (never the prompt or the generated text).
func (s *Server) finishCall(ctx context.Context, cs callStats, err error) {
	code := status.Code(err)
	pool := cs.route.GetPool()
	if pool == "" {
		pool = "none"
	}
	model := cs.model
	if model == "" {
		model = "unknown"
	}
	now := time.Now()
	d := now.Sub(cs.start)
	opt := s.attrs.get(attrKey{kind: 0, rpc: cs.rpc, model: model, pool: pool, status: code})
	s.inst.Requests.Add(ctx, 1, opt)
	s.inst.RequestDuration.Record(ctx, d.Seconds(), opt)
	if code == codes.OK {
		s.inst.TokenUsage.Record(ctx, int64(cs.input), s.attrs.get(attrKey{kind: 2, model: model, pool: pool, extra: "input"}))
		s.inst.TokenUsage.Record(ctx, int64(cs.output), s.attrs.get(attrKey{kind: 2, model: model, pool: pool, extra: "output"}))
		if !cs.firstTok.IsZero() {
			mp := s.attrs.get(attrKey{kind: 1, model: model, pool: pool})
			s.inst.TTFT.Record(ctx, cs.firstTok.Sub(cs.start).Seconds(), mp)
			if cs.output > 1 {
				s.inst.TPOT.Record(ctx, now.Sub(cs.firstTok).Seconds()/float64(cs.output-1), mp)
			}
		}
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(
			attribute.String(telemetry.KeyModel, model),
			attribute.String("switchyard.request_id", telemetry.RequestID(ctx)),
			attribute.String("switchyard.pool", cs.route.GetPool()),
			attribute.Int("switchyard.attempts", int(cs.route.GetAttempts())),
		)
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, "call finished", "rpc", cs.rpc, "model", model, "pool", cs.route.GetPool(),
			"attempts", cs.route.GetAttempts(), "pools_tried", cs.route.GetPoolsTried(), "code", statusName(code),
			"duration_ms", d.Milliseconds(), "input_tokens", cs.input, "output_tokens", cs.output)
	}
}
