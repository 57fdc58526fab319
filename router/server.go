// Package router is the gateway: it admits inference calls, ranks pools with
// the routing policy, takes capacity in the shared capacity store, forwards
// to the pool's backend, fails over before anything was streamed (and resumes
// streams where the backend can continue them), and serves the Admin API.
//
// Import direction: router imports backends and proto, never loadtest or cmd.
package router

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/priority"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/control"
	"github.com/switchyard-dev/switchyard/router/policy"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// Options configure a Server.
type Options struct {
	// Fleet is the validated fleet config. Required.
	Fleet *config.Fleet
	// Store counts capacity; defaults to an in-memory store.
	Store capacity.Store
	// Backends builds a backend per pool by adapter name. Required.
	Backends *backends.Registry
	// Policies defaults to policy.Builtins().
	Policies *policy.Registry
	// Policy overrides the fleet's routing.policy when set.
	Policy string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Rand returns a float in [0,1) for the policies' random draws (the
	// weighted draw among equally close pools, the spill share, the random
	// policy); it must be safe for concurrent use. Default: math/rand/v2's
	// Float64. Tests inject a fixed sequence to make draws deterministic.
	Rand func() float64
	// Replica names this router replica in logs and the admin view.
	Replica string
	// Region is where this replica runs (e.g. "us-east-1"). Calls that carry
	// no routing.caller_region are routed as if they came from it, since
	// clients reach the router nearest to them.
	Region string
	// UsageRefresh is how often shared in-flight counts are read from the
	// store (default 250ms).
	UsageRefresh time.Duration
	// QueuePoll is how often the first queued call re-checks for capacity
	// freed by other replicas (default 20ms); local releases wake it at once.
	QueuePoll time.Duration
	// Control keeps operator changes; defaults to an in-memory store (this
	// replica only). Use control.NewRedis so every replica shares them.
	Control control.Store
	// AdminTokens are accepted besides the config file's (e.g. from
	// SWITCHYARD_ADMIN_TOKEN). Hashes are hex SHA-256 of the token.
	AdminTokens []config.AdminToken
	// TracerProvider makes the per-attempt spans (children of the server span
	// the otelgrpc stats handler puts in the call's context). Default: no-op.
	TracerProvider trace.TracerProvider
	// MeterProvider makes the router's metrics. Default: no-op.
	MeterProvider metric.MeterProvider
}

// Server is the router. Safe for concurrent use.
type Server struct {
	pb.UnimplementedInferenceServer

	opts     Options
	log      *slog.Logger
	clock    clock.Clock
	store    capacity.Store
	control  control.Store
	ctlState atomic.Pointer[control.State]
	events   *eventBus
	policies *policy.Registry
	policy   atomic.Pointer[policyHolder]
	state    atomic.Pointer[fleetState]
	queue    *waitQueue
	// disp runs every call's request path; tel is its observer.
	disp     *dispatcher
	tel      *telemetryObs
	metricCB metric.Registration

	reloadMu sync.Mutex
	// healthTicks hands the health loop a ticker at a reloaded
	// routing.health_check_interval (at most one pending; Reload replaces it).
	healthTicks chan healthTick
	// recvFixed is the largest max_input_tokens the gRPC receive limit was
	// built for (GRPCServerOptions), 0 before: larger prompts need a restart.
	recvFixed atomic.Int64
	// creds are the open streams' credential checks (revoke.go).
	creds  credWatches
	stop   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool
}

type policyHolder struct{ p policy.Policy }

// fleetState is everything derived from one config; swapped whole on reload.
type fleetState struct {
	fleet  *config.Fleet
	pools  []*pool
	byName map[string]*pool
	// byModel lists, per model, the pools serving it (in config order): a
	// decision looks at these only.
	byModel      map[string][]*pool
	env          *policy.Env
	tenants      map[string]string // sha256(api key) -> tenant
	tenantLimits map[string]capacity.Limits
	ejectP       ejectionPolicy
	// regions labels sheds by the caller's region (bounded by this config).
	regions *callerRegions
}

// forModel returns the pools serving model.
func (st *fleetState) forModel(model string) []*pool { return st.byModel[model] }

// New builds a Server and its backends. Call Close when done.
func New(o Options) (*Server, error) {
	if o.Fleet == nil {
		return nil, errors.New("router: fleet config is required")
	}
	if o.Backends == nil {
		return nil, errors.New("router: backend registry is required")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Store == nil {
		o.Store = capacity.NewMemory(capacity.MemoryOptions{Clock: o.Clock})
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.Policies == nil {
		o.Policies = policy.Builtins()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Replica == "" {
		o.Replica = "router-" + randomID()[:8]
	}
	if o.UsageRefresh <= 0 {
		o.UsageRefresh = 250 * time.Millisecond
	}
	if o.QueuePoll <= 0 {
		o.QueuePoll = 20 * time.Millisecond
	}
	if o.Control == nil {
		o.Control = control.NewMemory(0)
	}
	if o.TracerProvider == nil {
		o.TracerProvider = tracenoop.NewTracerProvider()
	}
	if o.MeterProvider == nil {
		o.MeterProvider = metricnoop.NewMeterProvider()
	}
	inst, err := telemetry.NewInstruments(o.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("router metrics: %w", err)
	}
	s := &Server{
		opts:     o,
		log:      slog.New(telemetry.NewLogHandler(o.Logger.Handler())).With("replica", o.Replica),
		clock:    o.Clock,
		store:    o.Store,
		control:  o.Control,
		events:   newEventBus(o.Replica, o.Clock),
		policies: o.Policies,
		queue:    newWaitQueue(o.Clock, o.Fleet.Routing.QueueMaxLength),
		stop:     make(chan struct{}),

		healthTicks: make(chan healthTick, 1),
	}
	s.tel = newTelemetryObs(s.log, o.TracerProvider.Tracer(telemetry.ScopeName), inst, s.events, o.Clock)
	s.disp = &dispatcher{
		store:  o.Store,
		policy: func() policy.Policy { return s.policy.Load().p },
		clock:  o.Clock,
		obs:    s.tel,
		queue:  s.queue,
		budget: newRetryBudget(o.Clock, o.Fleet.Routing.RetryBudget),
	}
	st, err := s.buildState(o.Fleet, nil)
	if err != nil {
		return nil, err
	}
	s.state.Store(st)
	name := o.Fleet.Routing.Policy
	if o.Policy != "" {
		name = o.Policy
	}
	if err := s.setPolicy(name); err != nil {
		s.closeBackends(st, nil)
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	cst, err := o.Control.Get(ctx)
	cancel()
	if err != nil {
		// Serve on the config alone; the watch loop picks the state up later.
		s.log.Warn("operator changes unavailable at start; serving the config as written", "err", err)
		cst = control.State{}.Clone()
	}
	s.applyControl(cst)
	if s.metricCB, err = inst.Meter.RegisterCallback(s.observe, inst.Observables()...); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("router metrics: %w", err)
	}
	s.wg.Add(4)
	go s.every(s.opts.UsageRefresh, s.refreshUsage)
	go s.healthLoop(o.Fleet.Routing.HealthCheckInterval.Std())
	// The first queued call re-checks every QueuePoll for capacity other
	// replicas (or operators) freed: this replica only hears of its own
	// releases. One waiter per tick, whatever the queue length; a waiter that
	// gets a slot passes the turn on.
	go s.every(s.opts.QueuePoll, s.queue.wake)
	go s.watchControl()
	return s, nil
}

// watchControl follows operator changes made on any replica.
func (s *Server) watchControl() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-s.stop; cancel() }()
	s.control.Watch(ctx, func() {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := s.control.Get(rctx)
		rcancel()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("re-read operator changes", "err", err)
			}
			return
		}
		s.applyControl(st)
	})
}

// applyControl swaps in a newer control state and reports what changed.
func (s *Server) applyControl(next control.State) {
	for {
		prev := s.ctlState.Load()
		if prev != nil && next.Version <= prev.Version {
			return
		}
		n := next
		if !s.ctlState.CompareAndSwap(prev, &n) {
			continue
		}
		for _, p := range s.state.Load().pools {
			p.setControl(&n)
		}
		if next.Policy != "" && next.Policy != s.PolicyName() {
			if err := s.setPolicy(next.Policy); err != nil {
				s.log.Error("operator policy unknown to this replica; keeping the current one", "policy", next.Policy, "err", err)
			} else {
				s.events.publish("policy", "", "policy is now "+next.Policy, cmp.Or(next.Actor, "an operator"))
			}
		}
		if prev != nil {
			s.diffControl(prev, &n)
		}
		return
	}
}

// Register adds the router's services to a gRPC server.
func (s *Server) Register(gs *grpc.Server) {
	pb.RegisterInferenceServer(gs, s)
}

// buildState makes a fleetState for f, reusing backends from prev for pools
// whose backend settings did not change.
func (s *Server) buildState(f *config.Fleet, prev *fleetState) (*fleetState, error) {
	lat, err := f.LatencyTable()
	if err != nil {
		return nil, fmt.Errorf("latency table: %w", err)
	}
	r := f.Routing
	st := &fleetState{
		fleet:  f,
		byName: map[string]*pool{},
		env: &policy.Env{
			Latency: lat,
			Reserve: map[priority.Class]float64{
				priority.Interactive: r.SpillReserve.Interactive,
				priority.Standard:    r.SpillReserve.Standard,
				priority.Batch:       r.SpillReserve.Batch,
			},
			CostWeight:          r.CostWeight,
			LatencyBudgetMillis: r.LatencyBudgetMillis,
			SpillBand:           max(0, r.SpillBand),
			Rand:                s.opts.Rand,
			Targets: map[priority.Class]policy.Target{
				priority.Interactive: {TTFT: r.PriorityTargets.Interactive.TTFT.Std(), TPOT: r.PriorityTargets.Interactive.TPOT.Std()},
				priority.Standard:    {TTFT: r.PriorityTargets.Standard.TTFT.Std(), TPOT: r.PriorityTargets.Standard.TPOT.Std()},
				priority.Batch:       {TTFT: r.PriorityTargets.Batch.TTFT.Std(), TPOT: r.PriorityTargets.Batch.TPOT.Std()},
			},
		},
		byModel:      map[string][]*pool{},
		tenants:      map[string]string{},
		tenantLimits: map[string]capacity.Limits{},
		ejectP:       ejectionPolicy{afterFailures: r.EjectAfterFailures, base: r.EjectBase.Std(), max: r.EjectMax.Std()},
	}
	for _, t := range f.Tenants {
		for _, k := range t.APIKeySHA256 {
			st.tenants[strings.ToLower(k)] = t.Name
		}
		st.tenantLimits[t.Name] = capacity.Limits{RequestsPerMinute: t.RequestsPerMinute, TokensPerMinute: t.TokensPerMinute}
	}
	// One string per region and geography, so a decision compares pointers.
	interned := map[string]string{}
	intern := func(v string) string {
		if w, ok := interned[v]; ok {
			return w
		}
		interned[v] = v
		return v
	}
	for _, m := range f.Models {
		intern(m.Name) // a decision compares a call's model (the config's name) with a pool's by address first
	}
	ctl := s.ctlState.Load()
	for _, pc := range f.Pools {
		pc.Region, pc.Geography = intern(pc.Region), intern(pc.Geography)
		pc.Models = slices.Clone(pc.Models)
		for i, m := range pc.Models {
			pc.Models[i] = intern(m)
		}
		var p *pool
		if prev != nil {
			if old, ok := prev.byName[pc.Name]; ok && sameBackend(old.cfg, pc) {
				p = newPool(pc, old.backend, old.health)
				p.local.Store(old.local.Load())
				p.shared.Store(old.shared.Load())
			}
		}
		if p == nil {
			b, err := s.opts.Backends.New(pc.Adapter, backends.Spec{
				Pool: pc.Name, Accelerator: pc.Accelerator, Endpoints: pc.Endpoints,
				MaxConcurrent: pc.Limits.MaxConcurrent, Options: pc.Options,
			})
			if err != nil {
				s.closeBackends(st, prev)
				return nil, fmt.Errorf("build backends: %w", err)
			}
			p = newPool(pc, b, &health{})
		}
		p.index = len(st.pools)
		if ctl != nil {
			p.setControl(ctl)
		}
		st.pools = append(st.pools, p)
		st.byName[pc.Name] = p
		for _, m := range pc.Models {
			st.byModel[m] = append(st.byModel[m], p)
		}
	}
	regions := []string{s.opts.Region}
	for _, p := range st.pools {
		regions = append(regions, p.cfg.Region)
	}
	for _, r := range f.Regions {
		regions = append(regions, r.Name)
	}
	st.regions = newCallerRegions(regions)
	return st, nil
}

func sameBackend(a, b config.Pool) bool {
	if a.Adapter != b.Adapter || a.Accelerator != b.Accelerator || a.Limits.MaxConcurrent != b.Limits.MaxConcurrent ||
		strings.Join(a.Endpoints, ",") != strings.Join(b.Endpoints, ",") || len(a.Options) != len(b.Options) {
		return false
	}
	for k, v := range a.Options {
		if b.Options[k] != v {
			return false
		}
	}
	return true
}

// closeBackends closes backends of st that prev does not share.
func (s *Server) closeBackends(st, keep *fleetState) {
	for _, p := range st.pools {
		if keep != nil {
			if k, ok := keep.byName[p.cfg.Name]; ok && k.backend == p.backend {
				continue
			}
		}
		if err := p.backend.Close(); err != nil {
			s.log.Warn("close backend", "pool", p.cfg.Name, "err", err)
		}
	}
}

// Reload swaps in a new fleet config. The running config stays when f is
// invalid or its backends cannot be built. Pools that keep their backend
// settings keep their backend, counters and health; the backends of pools
// removed or changed are closed at once, so calls in flight on them fail
// over like any failed attempt (a stream that already sent tokens resumes
// only on a pool that can continue it).
//
// Every routing setting takes effect: most are read by each new call from
// the fleet snapshot; the wait queue's length (waiters beyond a shorter one
// are shed at once), the retry budget, the health-check interval and
// routing.policy (unless --policy or an operator's choice overrides it) are
// applied here. What only a restart applies (restartNeeded) is named in the
// reload's log line and config_reload event.
func (s *Server) Reload(f *config.Fleet) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("reload rejected: %w", err)
	}
	if _, err := s.policies.Get(f.Routing.Policy); err != nil {
		return fmt.Errorf("reload rejected: routing.policy: %w", err)
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.closed.Load() {
		return errors.New("reload rejected: the router is closed")
	}
	prev := s.state.Load()
	st, err := s.buildState(f, prev)
	if err != nil {
		return fmt.Errorf("reload rejected: %w", err)
	}
	s.state.Store(st)
	if ctl := s.ctlState.Load(); ctl != nil {
		// An operator change applied while st was built reached prev's pools only.
		for _, p := range st.pools {
			p.setControl(ctl)
		}
	}
	s.closeBackends(prev, st)
	if n := s.revokeStale(st); n > 0 {
		s.log.Info("streams ended: their token or key was removed by the reload", "streams", n)
	}
	changed, notes := s.applyRouting(prev.fleet, f)
	restart := s.restartNeeded(f)
	detail := fmt.Sprintf("fleet config reloaded from %s: %d pools", f.Source(), len(st.pools))
	if len(changed) > 0 {
		detail += "; routing: " + strings.Join(changed, ", ")
	}
	if len(notes) > 0 {
		detail += "; " + strings.Join(notes, "; ")
	}
	attrs := []any{"source", f.Source(), "pools", len(st.pools), "changed", changed, "notes", notes}
	if len(restart) > 0 {
		detail += "; needs a restart to take effect: " + strings.Join(restart, ", ")
		s.log.Warn("fleet config reloaded; some settings need a restart", append(attrs, "restart_needed", restart)...)
	} else {
		s.log.Info("fleet config reloaded", attrs...)
	}
	s.events.publish("config_reload", "", detail, "")
	return nil
}

// applyRouting applies the routing settings a call does not read from its
// fleet snapshot, when next changes them: the wait queue's length, the
// retry budget, the health-check interval and the policy. It returns the
// routing settings that changed ("queue_max_length 1024 -> 1", every one
// in effect now) and notes on settings kept despite the file (routing.policy
// under --policy or an operator's choice). Called with reloadMu held.
func (s *Server) applyRouting(prev, next *config.Fleet) (changed, notes []string) {
	a, b := prev.Routing, next.Routing
	changed = routingChanges(a, b)
	if a.QueueMaxLength != b.QueueMaxLength {
		if n := s.queue.setMaxLen(b.QueueMaxLength); n > 0 {
			notes = append(notes, fmt.Sprintf("%d queued calls shed: the wait queue is now %d long", n, b.QueueMaxLength))
		}
	}
	if a.RetryBudget != b.RetryBudget {
		s.disp.budget.setRatio(b.RetryBudget)
	}
	if d := b.HealthCheckInterval.Std(); d != a.HealthCheckInterval.Std() {
		select {
		case old := <-s.healthTicks: // a ticker from an earlier reload the loop has not taken yet
			old.t.Stop()
		default:
		}
		s.healthTicks <- healthTick{t: s.clock.NewTicker(d), every: d}
	}
	if a.Policy != b.Policy {
		ctl := s.ctlState.Load()
		switch {
		case s.opts.Policy != "":
			notes = append(notes, fmt.Sprintf("routing.policy %s not applied: the router was started with --policy %s", b.Policy, s.opts.Policy))
		case ctl != nil && ctl.Policy != "":
			notes = append(notes, fmt.Sprintf("routing.policy %s not applied: an operator chose %s (switchyardctl policy set)", b.Policy, ctl.Policy))
		default:
			if err := s.setPolicy(b.Policy); err != nil { // checked before the reload began
				notes = append(notes, fmt.Sprintf("routing.policy %s not applied: %v", b.Policy, err))
			} else {
				s.events.publish("policy", "", "policy is now "+b.Policy+" (routing.policy, config reload)", "")
			}
		}
	}
	return changed, notes
}

// routingChanges lists the routing settings that differ between a and b,
// by their YAML names, with both values.
func routingChanges(a, b config.Routing) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i := range va.NumField() {
		x, y := va.Field(i).Interface(), vb.Field(i).Interface()
		if reflect.DeepEqual(x, y) {
			continue
		}
		name, _, _ := strings.Cut(va.Type().Field(i).Tag.Get("yaml"), ",")
		out = append(out, fmt.Sprintf("%s %s -> %s", name, fmtSetting(x), fmtSetting(y)))
	}
	return out
}

func fmtSetting(v any) string {
	switch v := v.(type) {
	case config.Duration:
		return v.Std().String()
	case config.SpillReserve:
		return fmt.Sprintf("{interactive: %g, standard: %g, batch: %g}", v.Interactive, v.Standard, v.Batch)
	}
	return fmt.Sprint(v)
}

// restartNeeded names the settings of f that differ from what this process
// runs with and that only a restart applies: the simulator's time scale and
// queue length (the sim adapter is built at start), the capacity counting
// mode (the store is connected at start), and prompts larger than the gRPC
// receive limit built at start allows.
func (s *Server) restartNeeded(f *config.Fleet) []string {
	start := s.opts.Fleet
	var out []string
	if f.Sim.TimeScale != start.Sim.TimeScale {
		out = append(out, fmt.Sprintf("sim.time_scale (running %g)", start.Sim.TimeScale))
	}
	if f.Sim.QueueLength != start.Sim.QueueLength {
		out = append(out, fmt.Sprintf("sim.queue_length (running %d)", start.Sim.QueueLength))
	}
	if f.Capacity.Mode != start.Capacity.Mode {
		out = append(out, fmt.Sprintf("capacity.mode (running %q)", start.Capacity.Mode))
	}
	if fixed := s.recvFixed.Load(); fixed > 0 && int64(largestInput(f)) > fixed {
		out = append(out, fmt.Sprintf("models.max_input_tokens above %d (the gRPC receive limit is fixed at start)", fixed))
	}
	return out
}

// largestInput is the largest max_input_tokens of f's models.
func largestInput(f *config.Fleet) int {
	largest := 0
	for _, m := range f.Models {
		largest = max(largest, m.MaxInputTokens)
	}
	return largest
}

// Fleet returns the running fleet config.
func (s *Server) Fleet() *config.Fleet { return s.state.Load().fleet }

// setPolicy switches this replica's routing policy (Admin.SetPolicy makes
// every replica switch through the control store).
func (s *Server) setPolicy(name string) error {
	p, err := s.policies.Get(name)
	if err != nil {
		return err
	}
	s.policy.Store(&policyHolder{p: p})
	return nil
}

// PolicyName returns the active policy's name.
func (s *Server) PolicyName() string { return s.policy.Load().p.Name() }

// Close stops background loops, closes backends and the store.
func (s *Server) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.stop)
	s.wg.Wait()
	s.reloadMu.Lock()
	select {
	case h := <-s.healthTicks: // handed over by a reload the loop did not see
		h.t.Stop()
	default:
	}
	s.reloadMu.Unlock()
	if s.metricCB != nil {
		_ = s.metricCB.Unregister()
	}
	s.closeBackends(s.state.Load(), nil)
	return s.store.Close()
}

// every runs fn every d until the server stops (the caller did s.wg.Add).
func (s *Server) every(d time.Duration, fn func()) {
	defer s.wg.Done()
	t := s.clock.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C():
			fn()
		}
	}
}

// healthTick is a ticker at a new health-check interval.
type healthTick struct {
	t     clock.Ticker
	every time.Duration
}

// healthLoop checks every pool's health every interval, switching to the
// ticker a reload hands over (the caller did s.wg.Add).
func (s *Server) healthLoop(every time.Duration) {
	defer s.wg.Done()
	t := s.clock.NewTicker(every)
	defer func() { t.Stop() }()
	for {
		select {
		case <-s.stop:
			return
		case h := <-s.healthTicks:
			t.Stop()
			t, every = h.t, h.every
		case <-t.C():
			s.checkHealth(every)
		}
	}
}

// refreshUsage reads shared in-flight counts so policies see what other
// replicas hold; this replica's own count is always live.
func (s *Server) refreshUsage() {
	st := s.state.Load()
	names := make([]string, len(st.pools))
	for i, p := range st.pools {
		names[i] = p.cfg.Name
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.UsageRefresh)
	u, err := s.store.Usage(ctx, names)
	cancel()
	if err != nil {
		s.tel.inst.StoreErrors.Add(context.Background(), 1, storeErrUsage.add...)
		return
	}
	for _, p := range st.pools {
		p.shared.Store(int64(u[p.cfg.Name].InFlight))
	}
}

// checkHealth checks every pool once, concurrently, each bounded by timeout.
func (s *Server) checkHealth(timeout time.Duration) {
	var wg sync.WaitGroup
	for _, p := range s.state.Load().pools {
		wg.Add(1)
		go func(p *pool) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), checkTimeout(timeout))
			err := p.backend.Check(ctx)
			cancel()
			if p.health.setActive(err == nil, err) {
				if err != nil {
					s.log.Warn("pool failing health checks", "pool", p.cfg.Name, "err", err)
					s.events.publish("unhealthy", p.cfg.Name, "failing active health checks: "+err.Error(), "")
				} else {
					s.log.Info("pool healthy again", "pool", p.cfg.Name)
					s.events.publish("restored", p.cfg.Name, "passing active health checks again", "")
				}
			}
		}(p)
	}
	wg.Wait()
}

// checkTimeout bounds one active health check: the check interval, but at
// least half a second (a check cut shorter fails on any busy host) and at most
// two seconds.
func checkTimeout(interval time.Duration) time.Duration {
	return min(max(interval, 500*time.Millisecond), 2*time.Second)
}

// ListModels implements pb.InferenceServer.
func (s *Server) ListModels(context.Context, *pb.ListModelsRequest) (*pb.ListModelsResponse, error) {
	st := s.state.Load()
	resp := &pb.ListModelsResponse{}
	for _, m := range st.fleet.Models {
		pm := &pb.Model{Name: m.Name, MaxInputTokens: int32(m.MaxInputTokens), MaxOutputTokens: int32(m.MaxOutputTokens), Kind: m.KindOrDefault()}
		for _, p := range st.pools {
			for _, name := range p.cfg.Models {
				if name == m.Name {
					pm.Placements = append(pm.Placements, &pb.ModelPlacement{Pool: p.cfg.Name, Cloud: p.cfg.Cloud, Region: p.cfg.Region, Accelerator: p.cfg.Accelerator})
				}
			}
		}
		sort.Slice(pm.Placements, func(i, j int) bool { return pm.Placements[i].Pool < pm.Placements[j].Pool })
		resp.Models = append(resp.Models, pm)
	}
	return resp, nil
}

func randomID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}
