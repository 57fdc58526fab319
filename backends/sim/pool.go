package sim

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/geo"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Limits on what one call may ask of a simulated pool, so bad input cannot
// make the process allocate without bound.
const (
	// MaxOutputTokens bounds GenerateRequest.max_tokens.
	MaxOutputTokens = 1 << 20
	// maxChunkTokens bounds the tokens emitted per chunk.
	maxChunkTokens = 16
	// minChunkSleep: a chunk covers at least this much (scaled) time when the
	// chunk size allows, so high time scales do not turn into timer storms.
	minChunkSleep = 2 * time.Millisecond
)

// Model is a model a pool serves, with optional request limits (0 = none).
type Model struct {
	Name            string
	MaxInputTokens  int
	MaxOutputTokens int
}

// Options configure a Pool. Zero values pick the documented defaults.
type Options struct {
	// Name of the pool (required); it appears in errors, routes and stats.
	Name string
	// Accelerator profile name (required), e.g. "h100"; see LookupProfile.
	Accelerator string
	// MaxBatch is the most sequences decoding at once; 0 = the profile's
	// DefaultMaxBatch. The router passes the pool's limits.max_concurrent.
	MaxBatch int
	// QueueLength is the most calls waiting for a batch slot; 0 = 4 × MaxBatch.
	QueueLength int
	// TimeScale > 1 runs faster than real time (60 = a minute per second); 0 = 1.
	TimeScale float64
	// Seed makes synthetic text, error-rate draws and early stops reproducible.
	Seed int64
	// EarlyStopRate is the probability (0..1) that a completion ends with
	// FINISH_REASON_STOP before max_tokens; which requests stop, and where,
	// is a deterministic function of Seed and the prompt. 0 (the default)
	// always produces max_tokens tokens.
	EarlyStopRate float64
	// Models served; empty = any model name is accepted.
	Models []Model
	// Cloud and Region are copied into GenerateResponse.route.
	Cloud, Region string
	// PrefixCacheBlocks bounds the pool's prefix cache, in blocks of
	// CacheBlockTokens tokens: 0 = DefaultCacheBlocksPerSlot × MaxBatch,
	// negative = no prefix cache (every prompt is prefilled in full).
	PrefixCacheBlocks int
	// Clock times the simulation (network delay, prefill, decode) and stamps
	// load reports; default the wall clock. A clock.Fake runs a call's
	// timing without waiting: it moves only as the test advances it.
	Clock clock.Clock
	// OnFaultChange, when set, is called after every fault change with the
	// new fault (e.g. to flip a gRPC health status). Calls are serialized
	// and made with no pool lock held; the callback must not change the
	// pool's fault itself.
	OnFaultChange func(*pb.Fault)
}

// Stats is a snapshot of a pool's counters.
type Stats struct {
	Pool           string
	Accelerator    string
	MaxBatch       int
	EffectiveBatch int
	Running        int
	Queued         int
	// MaxRunningSeen is the high-water mark of Running since the pool was
	// built or ResetHighWater was called.
	MaxRunningSeen int
	// MaxQueuedSeen is the high-water mark of Queued, reset with MaxRunningSeen.
	MaxQueuedSeen int
	// Served: calls that completed. Rejected: calls refused with
	// RESOURCE_EXHAUSTED (queue full). Failed: calls that ended UNAVAILABLE
	// (outage, error rate, stream broken by an outage). Calls the caller
	// cancelled or let time out are in none of them.
	Served, Rejected, Failed int64
	// CachedTokens counts prompt tokens served from the prefix cache;
	// CacheBlocks is the blocks it holds now.
	CachedTokens int64
	CacheBlocks  int
	// Fault in force (zero fields = none).
	Fault *pb.Fault
}

// Proto converts the snapshot to its SimControl form.
func (s Stats) Proto() *pb.SimPoolStats {
	return &pb.SimPoolStats{
		Pool: s.Pool, Accelerator: s.Accelerator,
		MaxBatch: clamp32(s.MaxBatch), EffectiveBatch: clamp32(s.EffectiveBatch),
		Running: clamp32(s.Running), Queued: clamp32(s.Queued), MaxRunningSeen: clamp32(s.MaxRunningSeen),
		Served: s.Served, Rejected: s.Rejected, Failed: s.Failed,
		Fault: s.Fault,
	}
}

// fault is the pool's fault state; the zero value is "healthy".
type fault struct {
	outage       bool
	capacityLoss float64
	slowdown     float64 // 0 = 1
	errorRate    float64
}

// breaker is closed when running calls must stop: an outage began or the pool
// closed. err is set before ch is closed and never changed afterwards, so
// readers that saw ch closed may read err without a lock.
type breaker struct {
	ch  chan struct{}
	err error
}

func newBreaker() *breaker { return &breaker{ch: make(chan struct{})} }

// waiter is a queued call. ready is closed (under Pool.mu) when the call got a
// slot (err == nil) or was refused (err != nil).
type waiter struct {
	ready chan struct{}
	err   error
	brk   *breaker
}

// Pool simulates one accelerator pool: a continuous-batching engine with at
// most EffectiveBatch sequences decoding at once and a bounded FIFO queue in
// front of it.
//
// Concurrency: every method is safe for concurrent use. mu guards the
// admission state, fault, counters and random source; it is held only for
// short bookkeeping, never while sleeping or calling out (send callbacks,
// OnFaultChange). faultMu serializes fault changes with their OnFaultChange
// call; lock order is faultMu before mu.
type Pool struct {
	name    string
	prof    Profile
	opts    Options // immutable copy, defaults applied
	models  map[string]Model
	onFault func(*pb.Fault)

	faultMu sync.Mutex

	mu       sync.Mutex
	fault    fault
	effBatch int
	running  int
	queue    []*waiter // FIFO
	brk      *breaker  // current breaker; replaced when an outage ends
	closed   bool
	rng      *rand.Rand
	maxSeen  int
	// maxQueued is the high-water mark of len(queue).
	maxQueued int
	served    int64
	rejected  int64
	failed    int64
	host      *Host
	// cache is the prefix cache (nil: none); cachedTokens counts the prompt
	// tokens served from it.
	cache        *prefixCache
	cachedTokens int64
}

var _ backends.Backend = (*Pool)(nil)

// NewPool validates opts and builds a pool.
func NewPool(opts Options) (*Pool, error) {
	if strings.TrimSpace(opts.Name) == "" {
		return nil, errors.New("sim pool: name is required")
	}
	prof, err := LookupProfile(opts.Accelerator)
	if err != nil {
		return nil, fmt.Errorf("sim pool %q: %w", opts.Name, err)
	}
	if opts.MaxBatch < 0 {
		return nil, fmt.Errorf("sim pool %q: max batch must be >= 0, got %d", opts.Name, opts.MaxBatch)
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = prof.DefaultMaxBatch
	}
	if opts.QueueLength < 0 {
		return nil, fmt.Errorf("sim pool %q: queue length must be >= 0, got %d", opts.Name, opts.QueueLength)
	}
	if opts.QueueLength == 0 {
		opts.QueueLength = 4 * opts.MaxBatch
	}
	if opts.TimeScale < 0 || math.IsNaN(opts.TimeScale) || math.IsInf(opts.TimeScale, 0) {
		return nil, fmt.Errorf("sim pool %q: time scale must be a positive number, got %v", opts.Name, opts.TimeScale)
	}
	if opts.TimeScale == 0 {
		opts.TimeScale = 1
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if !(opts.EarlyStopRate >= 0 && opts.EarlyStopRate <= 1) {
		return nil, fmt.Errorf("sim pool %q: early stop rate must be in [0,1], got %v", opts.Name, opts.EarlyStopRate)
	}
	models := make(map[string]Model, len(opts.Models))
	for _, m := range opts.Models {
		if m.Name == "" {
			return nil, fmt.Errorf("sim pool %q: model with empty name", opts.Name)
		}
		models[m.Name] = m
	}
	opts.Models = slices.Clone(opts.Models)
	seed := uint64(opts.Seed)
	if opts.PrefixCacheBlocks == 0 {
		opts.PrefixCacheBlocks = DefaultCacheBlocksPerSlot * opts.MaxBatch
	}
	return &Pool{
		cache:    newPrefixCache(opts.PrefixCacheBlocks),
		name:     opts.Name,
		prof:     prof,
		opts:     opts,
		models:   models,
		onFault:  opts.OnFaultChange,
		effBatch: opts.MaxBatch,
		brk:      newBreaker(),
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}, nil
}

// Name returns the pool's name.
func (p *Pool) Name() string { return p.name }

// Profile returns the pool's accelerator profile.
func (p *Pool) Profile() Profile { return p.prof }

// Options returns the pool's options with defaults applied.
func (p *Pool) Options() Options {
	o := p.opts
	o.Models = slices.Clone(o.Models)
	return o
}

// Capabilities: the simulator honours continuation, answers tools with
// tool calls (tools.go) and serves embeddings. It has no JSON mode and no
// log probabilities: the router refuses those for simulated pools.
func (p *Pool) Capabilities() backends.Capabilities {
	return backends.Capabilities{Continuation: true, Tools: true, Embeddings: true}
}

// Check is nil unless the pool is in an outage or closed.
func (p *Pool) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return ctxStatus(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return p.closedErr()
	case p.fault.outage:
		return p.outageErr()
	}
	return nil
}

// Close fails queued calls, breaks running ones with UNAVAILABLE, refuses
// new ones and removes the pool from its Host. It is idempotent.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.breakLocked(p.closedErr())
	h := p.host
	p.mu.Unlock()
	if h != nil {
		h.removeIf(p)
	}
	return nil
}

// SetFault replaces the pool's fault with f (f.Pool is ignored). A zero
// Fault clears every fault. Starting an outage fails queued calls and breaks
// running streams with UNAVAILABLE; raising capacity_loss lets running calls
// finish but admits no new ones beyond the reduced batch.
func (p *Pool) SetFault(f *pb.Fault) error {
	if err := ValidateFault(f); err != nil {
		return fmt.Errorf("pool %s: %w", p.name, err)
	}
	p.faultMu.Lock()
	defer p.faultMu.Unlock()
	p.mu.Lock()
	nf := fault{outage: f.GetOutage(), capacityLoss: f.GetCapacityLoss(), slowdown: f.GetSlowdown(), errorRate: f.GetErrorRate()}
	wasOutage := p.fault.outage
	p.fault = nf
	p.effBatch = effectiveBatch(p.opts.MaxBatch, nf.capacityLoss)
	switch {
	case nf.outage && !wasOutage && !p.closed:
		p.breakLocked(p.outageErr())
	case !nf.outage && wasOutage && !p.closed:
		p.brk = newBreaker()
	}
	p.dispatchLocked()
	snapshot := p.faultProtoLocked()
	p.mu.Unlock()
	if p.onFault != nil {
		p.onFault(snapshot)
	}
	return nil
}

// ClearFault removes every fault.
func (p *Pool) ClearFault() { _ = p.SetFault(&pb.Fault{}) }

// Fault returns the fault in force.
func (p *Pool) Fault() *pb.Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faultProtoLocked()
}

// Stats returns a snapshot of the counters.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{
		Pool: p.name, Accelerator: p.prof.Name,
		MaxBatch: p.opts.MaxBatch, EffectiveBatch: p.effBatch,
		Running: p.running, Queued: len(p.queue), MaxRunningSeen: p.maxSeen, MaxQueuedSeen: p.maxQueued,
		Served: p.served, Rejected: p.rejected, Failed: p.failed,
		CachedTokens: p.cachedTokens, CacheBlocks: p.cache.len(),
		Fault: p.faultProtoLocked(),
	}
}

// networkDelay is the simulated round trip between the caller's region
// (routing.caller_region) and the pool's region, from the estimated latency
// table (internal/geo), scaled like every simulated duration. Zero when
// either region is unknown.
func (p *Pool) networkDelay(req *pb.GenerateRequest) time.Duration {
	caller := req.GetRouting().GetCallerRegion()
	if caller == "" || p.opts.Region == "" {
		return 0
	}
	t := geo.Default()
	if t.Geography(caller) == "" || t.Geography(p.opts.Region) == "" {
		return 0
	}
	ms := t.RTTMillis(caller, p.opts.Region)
	return p.scaled(time.Duration(ms*float64(time.Millisecond)), 1)
}

// Load implements backends.LoadReporter: the pool's own view of its batch.
func (p *Pool) Load() (backends.Load, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return backends.Load{Running: p.running, Queued: len(p.queue), Capacity: p.effBatch, At: p.opts.Clock.Now()}, true
}

var _ backends.LoadReporter = (*Pool)(nil)

// ResetHighWater restarts MaxRunningSeen from the current running count.
func (p *Pool) ResetHighWater() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.maxSeen = p.running
	p.maxQueued = len(p.queue)
}

// ValidateFault checks a fault's ranges: capacity_loss and error_rate in
// [0,1], slowdown 0 (none) or > 0.
func ValidateFault(f *pb.Fault) error {
	if f == nil {
		return errors.New("fault is required")
	}
	if !(f.GetCapacityLoss() >= 0 && f.GetCapacityLoss() <= 1) {
		return fmt.Errorf("capacity_loss must be in [0,1], got %v", f.GetCapacityLoss())
	}
	if !(f.GetErrorRate() >= 0 && f.GetErrorRate() <= 1) {
		return fmt.Errorf("error_rate must be in [0,1], got %v", f.GetErrorRate())
	}
	if !(f.GetSlowdown() >= 0) || math.IsInf(f.GetSlowdown(), 0) {
		return fmt.Errorf("slowdown must be >= 0 (0 = none, 2 = twice as slow), got %v", f.GetSlowdown())
	}
	return nil
}

// effectiveBatch is ceil(max × (1 − loss)), tolerant of float noise
// (1−0.7 is 0.30000000000000004).
func effectiveBatch(maxBatch int, loss float64) int {
	return max(0, int(math.Ceil(float64(maxBatch)*(1-loss)-1e-9)))
}

// Generate runs one completion and returns it whole.
func (p *Pool) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	var text strings.Builder
	pl, err := p.run(ctx, req, func(s string, _ int, _ bool, pl *plan) error {
		if text.Len() == 0 {
			text.Grow(min(pl.outTokens, 1<<16) * backends.BytesPerToken)
		}
		text.WriteString(s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	resp := &pb.GenerateResponse{
		Text:         text.String(),
		Usage:        pl.usage(),
		FinishReason: pl.finish,
		Route:        p.route(),
		RequestId:    req.GetRequestId(),
	}
	if pl.call != nil {
		resp.ToolCalls = []*pb.ToolCall{{Id: pl.call.id, Name: pl.call.name, Arguments: resp.Text}}
		resp.Text = ""
	}
	return resp, nil
}

// GenerateStream runs one completion and calls send for every chunk; the
// last chunk carries usage, finish reason and route. A send error stops the
// stream and is returned as is.
func (p *Pool) GenerateStream(ctx context.Context, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error) error {
	first := true
	_, err := p.run(ctx, req, func(s string, n int, last bool, pl *plan) error {
		c := &pb.GenerateChunk{Text: s, Tokens: int32(n), RequestId: req.GetRequestId()}
		if pl.call != nil && (s != "" || first) {
			d := &pb.ToolCallDelta{Arguments: s}
			if first {
				d.Id, d.Name = pl.call.id, pl.call.name
			}
			c.Text, c.ToolCalls = "", []*pb.ToolCallDelta{d}
		}
		first = false
		if last {
			c.Usage = pl.usage()
			c.FinishReason = pl.finish
			c.Route = p.route()
		}
		return send(c)
	})
	return err
}

func (p *Pool) route() *pb.Route {
	return &pb.Route{Pool: p.name, Accelerator: p.prof.Name, Cloud: p.opts.Cloud, Region: p.opts.Region, Attempts: 1}
}

// plan is what one call will do, fixed before it starts.
type plan struct {
	key       uint64 // text and early-stop key: seed and prompt
	inTokens  int
	first     int // index of the first token produced (continuation offset)
	outTokens int // tokens this call produces
	finish    pb.FinishReason
	factor    float64 // model size factor
	// call, when set, is the tool call the plan answers with instead of text.
	call *toolCall
	// blocks are the prompt's cache-block keys; cached is how many prompt
	// tokens the prefix cache held (set once the call is admitted).
	blocks []uint64
	cached int
}

func (pl *plan) usage() *pb.Usage {
	return &pb.Usage{InputTokens: clamp32(pl.inTokens), OutputTokens: clamp32(pl.outTokens), CachedInputTokens: clamp32(min(pl.cached, pl.inTokens))}
}

// emitFunc receives each chunk of text, its token count, whether it is the
// last one, and the call's plan.
type emitFunc func(text string, tokens int, last bool, pl *plan) error

// run validates, admits, then simulates prefill and decode, emitting chunks.
func (p *Pool) run(ctx context.Context, req *pb.GenerateRequest, emit emitFunc) (*plan, error) {
	pl, err := p.plan(req)
	if err != nil {
		return nil, err
	}
	// The network between the caller and the pool: one round trip (the
	// request there, the first bytes back) before anything can arrive.
	if d := p.networkDelay(req); d > 0 {
		t := p.opts.Clock.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctxStatus(ctx.Err())
		case <-t.C():
		}
	}
	brk, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer p.release()

	at := p.opts.Clock.Now()
	// Prefill covers prompt and already generated text, less what the
	// prefix cache holds.
	if p.cache != nil {
		pl.cached = min(p.cache.use(pl.blocks)*CacheBlockTokens, pl.inTokens)
		if pl.cached > 0 {
			p.mu.Lock()
			p.cachedTokens += int64(pl.cached)
			p.mu.Unlock()
		}
	}
	_, slow := p.step()
	at = at.Add(p.scaled(p.prof.PrefillTime(pl.inTokens-pl.cached), pl.factor*slow))
	if err := p.waitUntil(ctx, at, brk); err != nil {
		return nil, err
	}
	if pl.outTokens == 0 {
		if err := emit("", 0, true, pl); err != nil {
			return nil, err
		}
		p.countServed()
		return pl, nil
	}
	var chunk strings.Builder
	for done := 0; done < pl.outTokens; {
		running, slow := p.step()
		perToken := p.scaled(p.prof.DecodeTokenTime(running), pl.factor*slow)
		n := maxChunkTokens
		if perToken > 0 {
			n = int(min(int64(maxChunkTokens), max(1, int64((minChunkSleep+perToken-1)/perToken))))
		}
		n = min(n, pl.outTokens-done)
		at = at.Add(time.Duration(n) * perToken)
		if err := p.waitUntil(ctx, at, brk); err != nil {
			return nil, err
		}
		chunk.Reset()
		if pl.call != nil {
			chunk.WriteString(toolPiece(pl.call.args, pl.first+done, pl.first+done+n))
		}
		for i := range n * btoi(pl.call == nil) {
			chunk.WriteString(word(pl.key, pl.first+done+i))
		}
		done += n
		if err := emit(chunk.String(), n, done == pl.outTokens, pl); err != nil {
			return nil, err
		}
	}
	p.countServed()
	return pl, nil
}

// plan validates the request and fixes what the call will produce.
func (p *Pool) plan(req *pb.GenerateRequest) (*plan, error) {
	if req == nil {
		return nil, status.Error(codes.InvalidArgument, "request is required")
	}
	model := req.GetModel()
	prompt := backends.PromptText(req)
	inTokens := backends.EstimateTokens(prompt)
	if len(p.models) > 0 {
		m, ok := p.models[model]
		if !ok {
			return nil, status.Errorf(codes.NotFound, "pool %s: model %q is not served here", p.name, model)
		}
		if m.MaxInputTokens > 0 && inTokens > m.MaxInputTokens {
			return nil, status.Errorf(codes.InvalidArgument, "pool %s: prompt is %d tokens, model %q takes at most %d", p.name, inTokens, model, m.MaxInputTokens)
		}
		if m.MaxOutputTokens > 0 && int(req.GetMaxTokens()) > m.MaxOutputTokens {
			return nil, status.Errorf(codes.InvalidArgument, "pool %s: max_tokens %d exceeds model %q limit %d", p.name, req.GetMaxTokens(), model, m.MaxOutputTokens)
		}
	}
	// What the simulator cannot honour is refused, never ignored (a native
	// switchyard-sim backend receives these fields as they are).
	if req.GetLogprobs() {
		return nil, status.Errorf(codes.InvalidArgument, "logprobs: pool %s is simulated and has no log probabilities", p.name)
	}
	if t := req.GetResponseFormat().GetType(); t != "" && t != "text" {
		return nil, status.Errorf(codes.InvalidArgument, "response_format: pool %s is simulated and has no JSON mode", p.name)
	}
	maxTokens := int(req.GetMaxTokens())
	if maxTokens <= 0 || maxTokens > MaxOutputTokens {
		return nil, status.Errorf(codes.InvalidArgument, "max_tokens must be in 1..%d, got %d", MaxOutputTokens, maxTokens)
	}
	cont := req.GetContinuation()
	done := int(cont.GetGeneratedTokens())
	if done < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "continuation.generated_tokens must be >= 0, got %d", done)
	}
	key := hash64(uint64(p.opts.Seed), model, prompt)
	total, finish := maxTokens, pb.FinishReason_FINISH_REASON_LENGTH
	if at, ok := earlyStop(key, maxTokens, p.opts.EarlyStopRate); ok {
		total, finish = at, pb.FinishReason_FINISH_REASON_STOP
	}
	pl := &plan{
		key:       key,
		inTokens:  inTokens + backends.EstimateTokens(cont.GetGeneratedText()),
		first:     done,
		outTokens: max(0, total-done),
		finish:    finish,
		factor:    ModelSizeFactor(model),
	}
	if p.cache != nil {
		pl.blocks = blockKeys(prompt)
	}
	if pl.call = simTool(req, key, maxTokens); pl.call != nil {
		need := toolTokens(pl.call.args)
		if need <= maxTokens {
			pl.outTokens, pl.finish = max(0, need-done), pb.FinishReason_FINISH_REASON_TOOL_CALLS
		} else {
			pl.outTokens, pl.finish = max(0, maxTokens-done), pb.FinishReason_FINISH_REASON_LENGTH
		}
	}
	return pl, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// earlyStop decides, from the request key alone, whether a completion ends
// before maxTokens and after how many tokens (1..maxTokens−1).
func earlyStop(key uint64, maxTokens int, rate float64) (int, bool) {
	if rate <= 0 || maxTokens < 2 {
		return 0, false
	}
	r := rand.New(rand.NewPCG(key, 0x5eed))
	if r.Float64() >= rate {
		return 0, false
	}
	return 1 + r.IntN(maxTokens-1), true
}

// acquire admits a call: a slot at once, a place in the queue, or a refusal.
// It returns the breaker the call must watch while it runs.
func (p *Pool) acquire(ctx context.Context) (*breaker, error) {
	if err := ctx.Err(); err != nil {
		return nil, ctxStatus(err)
	}
	p.mu.Lock()
	switch {
	case p.closed:
		p.mu.Unlock()
		return nil, p.closedErr()
	case p.fault.outage:
		p.failed++
		p.mu.Unlock()
		return nil, p.outageErr()
	case p.fault.errorRate > 0 && p.rng.Float64() < p.fault.errorRate:
		p.failed++
		p.mu.Unlock()
		return nil, status.Errorf(codes.Unavailable, "pool %s: simulated error (error_rate %g)", p.name, p.fault.errorRate)
	case len(p.queue) == 0 && p.running < p.effBatch:
		p.startLocked()
		brk := p.brk
		p.mu.Unlock()
		return brk, nil
	case len(p.queue) >= p.opts.QueueLength:
		p.rejected++
		err := status.Errorf(codes.ResourceExhausted, "pool %s: queue full (%d waiting, %d running, batch %d)",
			p.name, len(p.queue), p.running, p.effBatch)
		p.mu.Unlock()
		return nil, err
	}
	w := &waiter{ready: make(chan struct{})}
	p.queue = append(p.queue, w)
	p.maxQueued = max(p.maxQueued, len(p.queue))
	p.mu.Unlock()

	select {
	case <-w.ready:
		if w.err != nil {
			return nil, w.err
		}
		return w.brk, nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-w.ready: // settled while we were giving up
		if w.err == nil {
			p.running--
			p.dispatchLocked()
		}
	default:
		p.queue = slices.DeleteFunc(p.queue, func(x *waiter) bool { return x == w })
	}
	return nil, ctxStatus(ctx.Err())
}

// release frees a running call's slot and admits queued calls.
func (p *Pool) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running--
	p.dispatchLocked()
}

// startLocked counts one more running call. Caller holds mu.
func (p *Pool) startLocked() {
	p.running++
	p.maxSeen = max(p.maxSeen, p.running)
}

// dispatchLocked admits queued calls in FIFO order while slots are free.
// Caller holds mu.
func (p *Pool) dispatchLocked() {
	for len(p.queue) > 0 && p.running < p.effBatch && !p.closed && !p.fault.outage {
		w := p.queue[0]
		p.queue[0] = nil
		p.queue = p.queue[1:]
		p.startLocked()
		w.brk = p.brk
		close(w.ready)
	}
	if len(p.queue) == 0 {
		p.queue = nil // let the backing array go
	}
}

// breakLocked fails queued calls and breaks running ones with err. Caller holds mu.
func (p *Pool) breakLocked(err error) {
	for _, w := range p.queue {
		w.err = err
		close(w.ready)
		p.failed++
	}
	p.queue = nil
	select {
	case <-p.brk.ch:
	default:
		p.brk.err = err
		close(p.brk.ch)
	}
}

// step reads the current batch size and slowdown.
func (p *Pool) step() (running int, slowdown float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	slow := p.fault.slowdown
	if slow == 0 {
		slow = 1
	}
	return p.running, slow
}

// scaled converts a real-time duration to simulated wall time.
func (p *Pool) scaled(d time.Duration, mult float64) time.Duration {
	return time.Duration(float64(d) * mult / p.opts.TimeScale)
}

// waitUntil sleeps until t, or returns early with a status error when ctx
// ends or the breaker trips. Deadlines are absolute so timer lateness does
// not accumulate over many chunks.
func (p *Pool) waitUntil(ctx context.Context, t time.Time, brk *breaker) error {
	d := t.Sub(p.opts.Clock.Now())
	if d <= 0 {
		select {
		case <-ctx.Done():
			return ctxStatus(ctx.Err())
		case <-brk.ch:
			return p.broken(brk)
		default:
			return nil
		}
	}
	timer := p.opts.Clock.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C():
		return nil
	case <-ctx.Done():
		return ctxStatus(ctx.Err())
	case <-brk.ch:
		return p.broken(brk)
	}
}

// broken counts a running call ended by the breaker and returns its error.
func (p *Pool) broken(brk *breaker) error {
	p.mu.Lock()
	p.failed++
	p.mu.Unlock()
	return brk.err
}

func (p *Pool) countServed() {
	p.mu.Lock()
	p.served++
	p.mu.Unlock()
}

func (p *Pool) setHost(h *Host) (closed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.host = h
	return p.closed
}

func (p *Pool) faultProtoLocked() *pb.Fault {
	f := p.fault
	return &pb.Fault{Pool: p.name, Outage: f.outage, CapacityLoss: f.capacityLoss, Slowdown: f.slowdown, ErrorRate: f.errorRate}
}

func (p *Pool) outageErr() error {
	return status.Errorf(codes.Unavailable, "pool %s: outage (simulated)", p.name)
}

func (p *Pool) closedErr() error {
	return status.Errorf(codes.Unavailable, "pool %s: closed", p.name)
}

// ctxStatus maps a context error to its gRPC status.
func ctxStatus(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, "deadline exceeded while waiting for the simulated pool")
	}
	return status.Error(codes.Canceled, "call cancelled")
}

// words are the synthetic output vocabulary: three letters plus a space, so
// every word is exactly one token under backends.EstimateTokens.
var words = [...]string{
	"the ", "and ", "for ", "are ", "but ", "not ", "you ", "all ", "any ", "can ", "had ", "her ", "was ", "one ",
	"our ", "out ", "day ", "get ", "has ", "him ", "his ", "how ", "man ", "new ", "now ", "old ", "see ", "two ",
	"way ", "who ", "did ", "its ", "let ", "put ", "say ", "she ", "too ", "use ", "key ", "map ", "run ", "set ",
}

// word is token i of the completion identified by key.
func word(key uint64, i int) string {
	x := key + uint64(i)*0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return words[x%uint64(len(words))]
}

func hash64(seed uint64, parts ...string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for i := range b {
		b[i] = byte(seed >> (8 * i))
	}
	h.Write(b[:])
	for _, s := range parts {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

func clamp32(n int) int32 {
	return int32(min(max(n, math.MinInt32), math.MaxInt32))
}
