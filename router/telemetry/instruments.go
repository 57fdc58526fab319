package telemetry

import (
	"errors"

	"go.opentelemetry.io/otel/metric"
)

// Attribute keys of the router's metrics (see docs/observability.md).
const (
	KeyModel       = "gen_ai.request.model"
	KeyTokenType   = "gen_ai.token.type"
	KeyRPC         = "rpc"
	KeyStatus      = "status"
	KeyPool        = "pool"
	KeyCloud       = "cloud"
	KeyRegion      = "region"
	KeyAccelerator = "accelerator"
	KeyOutcome     = "outcome"
	KeyReason      = "reason"
	KeyPriority    = "priority"
	KeyResult      = "result"
	KeyOp          = "op"
	KeyMode        = "mode"
	// KeyOperation and KeyProvider are the GenAI semantic conventions'
	// operation (chat, text_completion, embeddings) and provider (a pool's
	// backend: openai, aws.bedrock, gcp.vertex_ai, switchyard...).
	KeyOperation = "gen_ai.operation.name"
	KeyProvider  = "gen_ai.provider.name"
	// KeyCallerRegion is the region a call came from, bounded: a region of
	// the fleet, "other" or "unknown" (router/observe.go chooses).
	KeyCallerRegion = "caller_region"
)

// Instruments are the router's metric instruments, created once per router.
// Safe for concurrent use.
type Instruments struct {
	Meter metric.Meter

	Requests        metric.Int64Counter
	RequestDuration metric.Float64Histogram
	TTFT            metric.Float64Histogram
	TPOT            metric.Float64Histogram
	TokenUsage      metric.Int64Histogram
	// CachedTokens counts the prompt tokens of successful calls that the
	// serving pool's backend took from its prefix cache (the usage's
	// cached_input_tokens), by model and pool: beside gen_ai.client.token.usage's
	// input sum it gives a pool's cached share of prompt tokens.
	CachedTokens    metric.Int64Counter
	Attempts        metric.Int64Counter
	Retries         metric.Int64Counter
	Sheds           metric.Int64Counter
	QueueWait       metric.Float64Histogram
	AcquireDuration metric.Float64Histogram
	StoreErrors     metric.Int64Counter
	// BackendOverruns counts attempts a pool's backend produced more than
	// the call allows (reason max_tokens: output past max_tokens, which the
	// router stopped; bytes: an answer longer than max_tokens can take).
	BackendOverruns metric.Int64Counter
	// GenAIClientDuration is gen_ai.client.operation.duration: each attempt
	// on a backend, the router being its GenAI client.
	GenAIClientDuration metric.Float64Histogram

	PoolInFlight metric.Int64ObservableGauge
	PoolLimit    metric.Int64ObservableGauge
	PoolHeadroom metric.Int64ObservableGauge
	PoolEjected  metric.Int64ObservableGauge
	PoolDrained  metric.Int64ObservableGauge
	PoolHealthy  metric.Int64ObservableGauge
	// The backend's own load report per pool (while fresh).
	BackendRunning  metric.Int64ObservableGauge
	BackendQueued   metric.Int64ObservableGauge
	BackendCapacity metric.Int64ObservableGauge
	QueueLength     metric.Int64ObservableGauge
	CountingMode    metric.Int64ObservableGauge

	// Leased counting (capacity.BlockReporter), per pool and in all.
	BlockGranted    metric.Int64ObservableGauge
	BlockFree       metric.Int64ObservableGauge
	BlockStranded   metric.Int64ObservableGauge
	StoreRoundTrips metric.Int64ObservableCounter
}

// Observables lists the observable instruments, for RegisterCallback.
func (in *Instruments) Observables() []metric.Observable {
	return []metric.Observable{in.PoolInFlight, in.PoolLimit, in.PoolHeadroom, in.PoolEjected, in.PoolDrained, in.PoolHealthy, in.BackendRunning, in.BackendQueued, in.BackendCapacity, in.QueueLength, in.CountingMode,
		in.BlockGranted, in.BlockFree, in.BlockStranded, in.StoreRoundTrips}
}

var (
	secondsBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	tpotBuckets    = []float64{0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5}
	ttftBuckets    = []float64{0.01, 0.02, 0.04, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60}
	storeBuckets   = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}
	tokenBuckets   = []float64{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576}
)

// NewInstruments creates every instrument on mp's meter for ScopeName.
func NewInstruments(mp metric.MeterProvider) (*Instruments, error) {
	m := mp.Meter(ScopeName)
	in := &Instruments{Meter: m}
	var errs []error
	c := func(name, desc, unit string) metric.Int64Counter {
		x, err := m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		errs = append(errs, err)
		return x
	}
	fh := func(name, desc, unit string, b []float64) metric.Float64Histogram {
		x, err := m.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit(unit), metric.WithExplicitBucketBoundaries(b...))
		errs = append(errs, err)
		return x
	}
	g := func(name, desc, unit string) metric.Int64ObservableGauge {
		x, err := m.Int64ObservableGauge(name, metric.WithDescription(desc), metric.WithUnit(unit))
		errs = append(errs, err)
		return x
	}
	in.Requests = c("switchyard.requests", "Client calls finished, by rpc, model, serving pool and gRPC status.", "{request}")
	in.RequestDuration = fh("switchyard.request.duration", "Client call duration from admission to the last byte, by rpc, model, pool and status.", "s", secondsBuckets)
	in.TTFT = fh("gen_ai.server.time_to_first_token", "Time from admission to the first streamed token, successful streams.", "s", ttftBuckets)
	in.TPOT = fh("gen_ai.server.time_per_output_token", "Time per output token after the first, successful streams.", "s", tpotBuckets)
	tu, err := m.Int64Histogram("gen_ai.client.token.usage", metric.WithDescription("Tokens per successful call, by gen_ai.token.type (input, output)."),
		metric.WithUnit("{token}"), metric.WithExplicitBucketBoundaries(tokenBuckets...))
	errs = append(errs, err)
	in.TokenUsage = tu
	in.CachedTokens = c("switchyard.prompt.cached_tokens", "Prompt tokens of successful calls the pool's backend served from its prefix cache (usage cached_input_tokens), by model and pool.", "{token}")
	in.Attempts = c("switchyard.attempts", "Attempts on a pool (a slot was taken), by pool and outcome.", "{attempt}")
	in.Retries = c("switchyard.retries", "Attempts after a call's first, by the pool the retry went to.", "{attempt}")
	in.Sheds = c("switchyard.sheds", "Calls refused with RESOURCE_EXHAUSTED or given up for lack of budget, by reason, priority and caller region.", "{request}")
	in.QueueWait = fh("switchyard.queue.wait", "Time a call spent in one wait in the queue for capacity, by priority and result.", "s", secondsBuckets)
	in.AcquireDuration = fh("switchyard.capacity.acquire.duration", "Capacity-store Acquire latency, by pool and result (ok, full, quota, error).", "s", storeBuckets)
	in.GenAIClientDuration = fh("gen_ai.client.operation.duration", "GenAI operations the router ran on backends (one per attempt), by gen_ai.operation.name, gen_ai.provider.name, model, pool and error.type.", "s",
		[]float64{0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92})
	in.BackendOverruns = c("switchyard.backend.overruns", "Attempts whose backend produced more than the call allows (it ignores max_tokens), by pool and reason (max_tokens, bytes); the router stopped them.", "{attempt}")
	in.StoreErrors = c("switchyard.capacity.errors", "Capacity-store errors (store unreachable), by operation.", "{error}")
	in.PoolInFlight = g("switchyard.pool.in_flight", "Calls in flight on the pool (max of this replica's and the shared count).", "{request}")
	in.PoolLimit = g("switchyard.pool.limit", "Effective max concurrent requests: the smallest of the configured limit, an override and the backend's reported capacity.", "{request}")
	in.PoolHeadroom = g("switchyard.pool.headroom", "Effective limit minus what is busy (in flight, or the backend's running and queued when more), floored at 0.", "{request}")
	in.PoolEjected = g("switchyard.pool.ejected", "1 while the pool is ejected by outlier detection.", "")
	in.PoolDrained = g("switchyard.pool.drained", "1 while an operator has drained the pool.", "")
	in.BackendRunning = g("switchyard.pool.backend.running", "Sequences the pool's backend reports running (while its load report is fresh).", "{request}")
	in.BackendQueued = g("switchyard.pool.backend.queued", "Calls the pool's backend reports queued for a batch slot.", "{request}")
	in.BackendCapacity = g("switchyard.pool.backend.capacity", "Calls the pool's backend reports it can run at once now (below the limit when it lost chips or is full).", "{request}")
	in.PoolHealthy = g("switchyard.pool.healthy", "1 while the pool passes active health checks.", "")
	in.QueueLength = g("switchyard.queue.length", "Calls waiting for capacity on this replica.", "{request}")
	in.CountingMode = g("switchyard.capacity.mode", "1 for the capacity counting mode in force (local, shared, degraded), 0 for the others.", "")
	in.BlockGranted = g("switchyard.capacity.block.granted", "Leased counting: slots of the pool this replica may use (its block).", "{slot}")
	in.BlockFree = g("switchyard.capacity.block.free", "Leased counting: slots of this replica's block not in use.", "{slot}")
	in.BlockStranded = g("switchyard.capacity.block.stranded", "Leased counting: slots of this replica's block no call used over the last two refresh periods.", "{slot}")
	rt, err := m.Int64ObservableCounter("switchyard.capacity.store.round_trips",
		metric.WithDescription("Leased counting: capacity-store round trips, by switchyard.trip (background refresh, or sync on the request path); per call: its rate over the rate of switchyard.capacity.acquire.duration's count."),
		metric.WithUnit("{round_trip}"))
	errs = append(errs, err)
	in.StoreRoundTrips = rt
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return in, nil
}
