// Package router is the gateway: it admits inference calls, ranks pools with
// the routing policy, takes capacity in the shared capacity store, forwards
// to the pool's backend, fails over before anything was streamed (and resumes
// streams where the backend can continue them), and gives operators one
// interface (Operator). It speaks no wire of its own: the edges — gRPC
// (router/grpcedge), OpenAI and Anthropic HTTP, the console — import it and
// map its errors (dispatch.Code) to theirs.
//
// Import direction: router imports backends and proto, never an edge,
// loadtest or cmd.
package router

import (
	"cmp"
	"context"
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

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/clock"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/control"
	"github.com/switchyard-dev/switchyard/router/dispatch"
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
	// Observer, when set, hears of every step of the request path after the
	// router's own telemetry (dispatch.Observer; tests record with it).
	Observer dispatch.Observer
}

// Server is the router: the core (dispatch.Dispatcher) wired to the
// backends, the capacity and control stores and telemetry, with their
// lifecycle (reload, background loops, close). Edges call it: the gRPC edge
// (router/grpcedge) and the HTTP edges through CompleteAs, CompleteStreamAs
// and EmbedAs, operators' edges through Operator. Safe for concurrent use.
type Server struct {
	// opts holds the dependencies, defaults filled (Clock, Store, Control,
	// Policies, ...).
	opts Options
	log  *slog.Logger
	// disp runs every call's request path and holds the running generation.
	disp *dispatch.Dispatcher
	// tel observes the dispatcher and the edges; events fans out watch events.
	tel    *telemetryObs
	events *eventBus
	// ops is the operator state: the control state in force and the policy.
	ops operatorState
	// creds are the open streams' credential checks (revoke.go).
	creds credWatches
	// life is the background loops' and reload's state.
	life lifecycle
}

// operatorState is what operators change at run time.
type operatorState struct {
	ctl    atomic.Pointer[control.State]
	policy atomic.Pointer[policyHolder]
}

// lifecycle is the Server's background work and its end.
type lifecycle struct {
	metricCB metric.Registration
	reloadMu sync.Mutex
	// healthTicks hands the health loop a ticker at a reloaded
	// routing.health_check_interval (at most one pending; Reload replaces it).
	healthTicks chan healthTick
	// recvFixed is the largest max_input_tokens the gRPC receive limit was
	// built for (FixRecvLimit), 0 before: larger prompts need a restart.
	recvFixed atomic.Int64
	stop      chan struct{}
	wg        sync.WaitGroup
	closed    atomic.Bool
}

type policyHolder struct{ p policy.Policy }

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
		o.Replica = "router-" + dispatch.NewRequestID()[:8]
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
		opts:   o,
		log:    slog.New(telemetry.NewLogHandler(o.Logger.Handler())).With("replica", o.Replica),
		events: newEventBus(o.Replica, o.Clock),
		life:   lifecycle{stop: make(chan struct{}), healthTicks: make(chan healthTick, 1)},
	}
	s.tel = newTelemetryObs(s.log, o.TracerProvider.Tracer(telemetry.ScopeName), inst, s.events, o.Clock)
	g, err := s.buildGeneration(o.Fleet, nil)
	if err != nil {
		return nil, err
	}
	s.disp = dispatch.New(dispatch.Options{
		Store:      o.Store,
		Policy:     func() policy.Policy { return s.ops.policy.Load().p },
		Clock:      o.Clock,
		Observer:   dispatch.Tee(s.tel, o.Observer),
		Generation: g,
	})
	name := o.Fleet.Routing.Policy
	if o.Policy != "" {
		name = o.Policy
	}
	if err := s.setPolicy(name); err != nil {
		s.closeBackends(g, nil)
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
	if s.life.metricCB, err = inst.Meter.RegisterCallback(s.observe, inst.Observables()...); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("router metrics: %w", err)
	}
	s.life.wg.Add(4)
	go s.every(s.opts.UsageRefresh, s.refreshUsage)
	go s.healthLoop(o.Fleet.Routing.HealthCheckInterval.Std())
	// The first queued call re-checks every QueuePoll for capacity other
	// replicas (or operators) freed: this replica only hears of its own
	// releases. One waiter per tick, whatever the queue length; a waiter that
	// gets a slot passes the turn on.
	go s.every(s.opts.QueuePoll, s.disp.Poll)
	go s.watchControl()
	return s, nil
}

// watchControl follows operator changes made on any replica.
func (s *Server) watchControl() {
	defer s.life.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-s.life.stop; cancel() }()
	s.opts.Control.Watch(ctx, func() {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := s.opts.Control.Get(rctx)
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
		prev := s.ops.ctl.Load()
		if prev != nil && next.Version <= prev.Version {
			return
		}
		n := next
		if !s.ops.ctl.CompareAndSwap(prev, &n) {
			continue
		}
		for _, p := range s.disp.Generation().Pools {
			p.SetControl(&n)
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

// buildGeneration makes the core's Generation for f, reusing backends (with
// their pools' counters and health) from prev for pools whose backend
// settings did not change, and sets the caller_region labels for f.
func (s *Server) buildGeneration(f *config.Fleet, prev *dispatch.Generation) (*dispatch.Generation, error) {
	env, err := dispatch.NewEnv(f, s.opts.Rand)
	if err != nil {
		return nil, err
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
	ctl := s.ops.ctl.Load()
	pools := make([]*dispatch.Pool, 0, len(f.Pools))
	for _, pc := range f.Pools {
		pc.Region, pc.Geography = intern(pc.Region), intern(pc.Geography)
		pc.Models = slices.Clone(pc.Models)
		for i, m := range pc.Models {
			pc.Models[i] = intern(m)
		}
		var p *dispatch.Pool
		if prev != nil {
			if old, ok := prev.Pool(pc.Name); ok && sameBackend(*old.Config(), pc) {
				p = newPool(pc, backendOf(old), old)
			}
		}
		if p == nil {
			b, err := s.opts.Backends.New(pc.Adapter, backends.Spec{
				Pool: pc.Name, Accelerator: pc.Accelerator, Endpoints: pc.Endpoints,
				MaxConcurrent: pc.Limits.MaxConcurrent, Options: pc.Options,
			})
			if err != nil {
				s.closePools(pools, prev)
				return nil, fmt.Errorf("build backends: %w", err)
			}
			p = newPool(pc, b, nil)
		}
		if ctl != nil {
			p.SetControl(ctl)
		}
		pools = append(pools, p)
	}
	regions := []string{s.opts.Region}
	for _, p := range pools {
		regions = append(regions, p.Config().Region)
	}
	for _, r := range f.Regions {
		regions = append(regions, r.Name)
	}
	s.tel.regions.Store(newCallerRegions(regions))
	return dispatch.NewGeneration(dispatch.GenerationOptions{Fleet: f, Pools: pools, Env: env}), nil
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

// closeBackends closes the backends of g's pools that keep does not share.
func (s *Server) closeBackends(g, keep *dispatch.Generation) { s.closePools(g.Pools, keep) }

// closePools closes the backends of pools that keep does not share.
func (s *Server) closePools(pools []*dispatch.Pool, keep *dispatch.Generation) {
	for _, p := range pools {
		if keep != nil {
			if k, ok := keep.Pool(p.Name()); ok && backendOf(k) == backendOf(p) {
				continue
			}
		}
		if err := backendOf(p).Close(); err != nil {
			s.log.Warn("close backend", "pool", p.Name(), "err", err)
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
// its generation; the wait queue's length (waiters beyond a shorter one are
// shed at once) and the retry budget are applied by Dispatcher.Swap, the
// health-check interval and routing.policy (unless --policy or an
// operator's choice overrides it) here. What only a restart applies
// (restartNeeded) is named in the reload's log line and config_reload event.
func (s *Server) Reload(f *config.Fleet) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("reload rejected: %w", err)
	}
	if _, err := s.opts.Policies.Get(f.Routing.Policy); err != nil {
		return fmt.Errorf("reload rejected: routing.policy: %w", err)
	}
	s.life.reloadMu.Lock()
	defer s.life.reloadMu.Unlock()
	if s.life.closed.Load() {
		return errors.New("reload rejected: the router is closed")
	}
	prev := s.disp.Generation()
	g, err := s.buildGeneration(f, prev)
	if err != nil {
		return fmt.Errorf("reload rejected: %w", err)
	}
	var notes []string
	if n := s.disp.Swap(g); n > 0 {
		notes = append(notes, fmt.Sprintf("%d queued calls shed: the wait queue is now %d long", n, f.Routing.QueueMaxLength))
	}
	if ctl := s.ops.ctl.Load(); ctl != nil {
		// An operator change applied while g was built reached prev's pools only.
		for _, p := range g.Pools {
			p.SetControl(ctl)
		}
	}
	s.closeBackends(prev, g)
	if n := s.revokeStale(g); n > 0 {
		s.log.Info("streams ended: their token or key was removed by the reload", "streams", n)
	}
	changed, more := s.applyRouting(prev.Fleet, f)
	notes = append(notes, more...)
	restart := s.restartNeeded(f)
	detail := fmt.Sprintf("fleet config reloaded from %s: %d pools", f.Source(), len(g.Pools))
	if len(changed) > 0 {
		detail += "; routing: " + strings.Join(changed, ", ")
	}
	if len(notes) > 0 {
		detail += "; " + strings.Join(notes, "; ")
	}
	attrs := []any{"source", f.Source(), "pools", len(g.Pools), "changed", changed, "notes", notes}
	if len(restart) > 0 {
		detail += "; needs a restart to take effect: " + strings.Join(restart, ", ")
		s.log.Warn("fleet config reloaded; some settings need a restart", append(attrs, "restart_needed", restart)...)
	} else {
		s.log.Info("fleet config reloaded", attrs...)
	}
	s.events.publish("config_reload", "", detail, "")
	return nil
}

// applyRouting applies the routing settings neither a call's generation nor
// Dispatcher.Swap carries, when next changes them: the health-check interval
// and the policy. It returns the routing settings that changed
// ("queue_max_length 1024 -> 1", every one in effect now) and notes on
// settings kept despite the file (routing.policy under --policy or an
// operator's choice). Called with reloadMu held.
func (s *Server) applyRouting(prev, next *config.Fleet) (changed, notes []string) {
	a, b := prev.Routing, next.Routing
	changed = routingChanges(a, b)
	if d := b.HealthCheckInterval.Std(); d != a.HealthCheckInterval.Std() {
		select {
		case old := <-s.life.healthTicks: // a ticker from an earlier reload the loop has not taken yet
			old.t.Stop()
		default:
		}
		s.life.healthTicks <- healthTick{t: s.opts.Clock.NewTicker(d), every: d}
	}
	if a.Policy != b.Policy {
		ctl := s.ops.ctl.Load()
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
	if fixed := s.life.recvFixed.Load(); fixed > 0 && int64(largestInput(f)) > fixed {
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

// DefaultRecvMargin is the room a request may take beyond the largest
// prompt a model accepts (max_input_tokens × 4 bytes): chat roles, sampling,
// routing hints, the request id, framing. RecvLimit's default margin.
const DefaultRecvMargin = 64 << 10

// RecvLimit is the largest request message an edge need accept: the running
// fleet's largest max_input_tokens × 4 bytes plus margin (DefaultRecvMargin
// when margin <= 0). It follows reloads.
func (s *Server) RecvLimit(margin int) int {
	if margin <= 0 {
		margin = DefaultRecvMargin
	}
	return largestInput(s.disp.Generation().Fleet)*backends.BytesPerToken + margin
}

// FixRecvLimit is RecvLimit for an edge that fixes its bound when it starts
// (the gRPC edge's receive limit): a later reload that raises a model's
// max_input_tokens above the bound names it among the settings that need a
// restart.
func (s *Server) FixRecvLimit(margin int) int {
	s.life.recvFixed.Store(int64(largestInput(s.disp.Generation().Fleet)))
	return s.RecvLimit(margin)
}

// Fleet returns the running fleet config.
func (s *Server) Fleet() *config.Fleet { return s.disp.Generation().Fleet }

// setPolicy switches this replica's routing policy (Admin.SetPolicy makes
// every replica switch through the control store).
func (s *Server) setPolicy(name string) error {
	p, err := s.opts.Policies.Get(name)
	if err != nil {
		return err
	}
	s.ops.policy.Store(&policyHolder{p: p})
	return nil
}

// PolicyName returns the active policy's name.
func (s *Server) PolicyName() string { return s.ops.policy.Load().p.Name() }

// Close stops background loops, closes backends and the store.
func (s *Server) Close() error {
	if !s.life.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.life.stop)
	s.life.wg.Wait()
	s.life.reloadMu.Lock()
	select {
	case h := <-s.life.healthTicks: // handed over by a reload the loop did not see
		h.t.Stop()
	default:
	}
	s.life.reloadMu.Unlock()
	if s.life.metricCB != nil {
		_ = s.life.metricCB.Unregister()
	}
	s.closeBackends(s.disp.Generation(), nil)
	return s.opts.Store.Close()
}

// every runs fn every d until the server stops (the caller did s.life.wg.Add).
func (s *Server) every(d time.Duration, fn func()) {
	defer s.life.wg.Done()
	t := s.opts.Clock.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.life.stop:
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
// ticker a reload hands over (the caller did s.life.wg.Add).
func (s *Server) healthLoop(every time.Duration) {
	defer s.life.wg.Done()
	t := s.opts.Clock.NewTicker(every)
	defer func() { t.Stop() }()
	for {
		select {
		case <-s.life.stop:
			return
		case h := <-s.life.healthTicks:
			t.Stop()
			t, every = h.t, h.every
		case <-t.C():
			s.checkHealth(every)
		}
	}
}

// minUsageRead is the least time a usage read is given (refreshUsage).
const minUsageRead = 500 * time.Millisecond

// refreshUsage reads shared in-flight counts so policies see what other
// replicas hold; this replica's own count is always live.
func (s *Server) refreshUsage() {
	g := s.disp.Generation()
	names := make([]string, len(g.Pools))
	for i, p := range g.Pools {
		names[i] = p.Name()
	}
	// The read is bounded by the refresh period, but never below
	// minUsageRead: a store's own timeout (Resilient's 150 ms) must fire
	// first, or a dead store never counts a failed read and never degrades.
	ctx, cancel := context.WithTimeout(context.Background(), max(s.opts.UsageRefresh, minUsageRead))
	u, err := s.opts.Store.Usage(ctx, names)
	cancel()
	if err != nil {
		s.tel.inst.StoreErrors.Add(context.Background(), 1, storeErrUsage.add...)
		return
	}
	for _, p := range g.Pools {
		p.SetShared(int64(u[p.Name()].InFlight))
	}
}

// checkHealth checks every pool once, concurrently, each bounded by timeout.
func (s *Server) checkHealth(timeout time.Duration) {
	var wg sync.WaitGroup
	for _, p := range s.disp.Generation().Pools {
		wg.Add(1)
		go func(p *dispatch.Pool) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), checkTimeout(timeout))
			err := backendOf(p).Check(ctx)
			cancel()
			if p.SetActiveHealth(err == nil, err) {
				if err != nil {
					s.log.Warn("pool failing health checks", "pool", p.Name(), "err", err)
					s.events.publish("unhealthy", p.Name(), "failing active health checks: "+err.Error(), "")
				} else {
					s.log.Info("pool healthy again", "pool", p.Name())
					s.events.publish("restored", p.Name(), "passing active health checks again", "")
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

// Models lists the running fleet's models, each with the pools serving it
// (switchyard.v1.Inference's ListModels answer).
func (s *Server) Models() *pb.ListModelsResponse {
	g := s.disp.Generation()
	resp := &pb.ListModelsResponse{}
	for _, m := range g.Fleet.Models {
		pm := &pb.Model{Name: m.Name, MaxInputTokens: int32(m.MaxInputTokens), MaxOutputTokens: int32(m.MaxOutputTokens), Kind: m.KindOrDefault()}
		for _, p := range g.ForModel(m.Name) {
			c := p.Config()
			pm.Placements = append(pm.Placements, &pb.ModelPlacement{Pool: c.Name, Cloud: c.Cloud, Region: c.Region, Accelerator: c.Accelerator})
		}
		sort.Slice(pm.Placements, func(i, j int) bool { return pm.Placements[i].Pool < pm.Placements[j].Pool })
		resp.Models = append(resp.Models, pm)
	}
	return resp
}
