package router

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/switchyard-dev/switchyard/internal/priority"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/control"
	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// Operator is all of the router its operators reach: the Admin API (router/
// grpcedge) and the web console (router/console) use it and nothing else of
// the router. Every method checks an admin token first — the viewer role to
// read, the operator role to change — so neither edge has an authorization
// path of its own.
//
// Tokens are plain strings, as the edge read them off its transport ("" when
// the caller sent none; BearerToken parses an "Authorization: Bearer" value).
// Answers are the switchyard.v1 Admin messages, the operator API's data
// model on every wire (gRPC, the console's protojson); nothing here is gRPC.
// Errors are the core's: dispatch.CodeOf and dispatch.PublicText give each
// edge what its own table maps (UnauthenticatedError, DeniedError,
// InvalidError naming the field, UnknownPoolError, RefusedError,
// UnavailableError).
//
// Safe for concurrent use. Server.Operator returns the router's.
type Operator interface {
	// Authorize checks token for role and returns the token's name (the
	// actor audits and events name). A token of the viewer role asked for
	// the operator role is a DeniedError, and its name is returned too.
	Authorize(token string, role Role) (name string, err error)
	// Snapshot is the fleet as operators see it now (viewer): every pool's
	// limits, load, weight, drain, health and capacity block, the counting
	// mode, the replica and its region, the active policy.
	Snapshot(token string) (*Snapshot, error)
	// Explain ranks the pools for a hypothetical request as the active
	// policy would now, with the reason each was chosen or skipped (viewer).
	// Invalid fields are named as in ExplainRouteRequest ("request",
	// "request.routing.residency").
	Explain(token string, req *pb.GenerateRequest) (*pb.ExplainRouteResponse, error)
	// Apply makes an operator change on every replica (through the control
	// store), audited under the token's name (operator; a drain's dry run:
	// viewer, and it changes nothing).
	Apply(ctx context.Context, token string, c Change) (*Applied, error)
	// Audit returns up to limit of the newest audited changes, newest first
	// (viewer; limit outside 1..1000: 100).
	Audit(ctx context.Context, token string, limit int) ([]*pb.AuditEntry, error)
	// Watch subscribes to this replica's events (viewer): a "hello" event,
	// then up to recent of the latest events, then each new one. The watch
	// ends when ctx does, when a reload removes the token (or its role), or
	// when the router stops. Close it when done.
	Watch(ctx context.Context, token string, recent int) (*Watch, error)
}

// Role is what an admin token may do.
type Role string

// The roles of config.AdminToken.Role.
const (
	// RoleViewer reads: the pools, explanations, the audit log, events.
	RoleViewer Role = "viewer"
	// RoleOperator also changes: weights, drains, overrides, the policy.
	RoleOperator Role = "operator"
)

// Snapshot is the fleet as operators see it (Operator.Snapshot).
type Snapshot struct {
	// Fleet is the Admin API's ListPools answer.
	Fleet *pb.ListPoolsResponse
	// Region is where this replica runs (Options.Region; "" when unset).
	Region string
}

// ChangeKind names an operator change.
type ChangeKind int

// The operator changes, each audited under its action name.
const (
	// ChangeWeight sets Pool's weight to Weight (set_weight).
	ChangeWeight ChangeKind = iota + 1
	// ChangeDrain drains Pool (drain): its calls in flight finish, new
	// traffic goes elsewhere. Refused without Force when the rest of the
	// fleet lacks the headroom to take the pool's load; DryRun only plans.
	ChangeDrain
	// ChangeResume undoes a drain of Pool (resume).
	ChangeResume
	// ChangeCapacityOverride replaces Pool's max concurrent with Limit
	// until Expires (zero: until cleared), or removes the override with
	// Clear (capacity_override).
	ChangeCapacityOverride
	// ChangePolicy switches every replica to the policy named Policy
	// (set_policy).
	ChangePolicy
)

// Change is one operator change (Operator.Apply). Kind says which fields
// count.
type Change struct {
	Kind ChangeKind
	// Pool is the pool changed (every kind but ChangePolicy).
	Pool string
	// Weight is ChangeWeight's new weight, in [0, 1000].
	Weight float64
	// DryRun (ChangeDrain) plans the drain and changes nothing.
	DryRun bool
	// Force (ChangeDrain) drains although the rest of the fleet lacks the
	// headroom to take the pool's load.
	Force bool
	// Limit is ChangeCapacityOverride's max concurrent, in [0, 1000000].
	Limit int
	// Expires ends ChangeCapacityOverride's override; it must be in the
	// future (zero: never, until cleared).
	Expires time.Time
	// Clear (ChangeCapacityOverride) removes the pool's override.
	Clear bool
	// Policy is ChangePolicy's policy name.
	Policy string

	// expiresErr is ChangeOf's error for an expiry no time can hold,
	// reported where Apply checks Expires.
	expiresErr error
}

// ChangeOf is the Change an Admin API request asks for: a
// *pb.SetWeightRequest, *pb.DrainRequest, *pb.ResumeRequest,
// *pb.SetCapacityOverrideRequest or *pb.SetPolicyRequest (the messages of
// both operator wires). ok is false for any other message.
func ChangeOf(req proto.Message) (c Change, ok bool) {
	switch r := req.(type) {
	case *pb.SetWeightRequest:
		return Change{Kind: ChangeWeight, Pool: r.GetPool(), Weight: r.GetWeight()}, true
	case *pb.DrainRequest:
		return Change{Kind: ChangeDrain, Pool: r.GetPool(), DryRun: r.GetDryRun(), Force: r.GetForce()}, true
	case *pb.ResumeRequest:
		return Change{Kind: ChangeResume, Pool: r.GetPool()}, true
	case *pb.SetCapacityOverrideRequest:
		c := Change{Kind: ChangeCapacityOverride, Pool: r.GetPool(), Limit: int(r.GetLimit()), Clear: r.GetClear()}
		if ts := r.GetExpires(); ts != nil {
			if err := ts.CheckValid(); err != nil {
				c.expiresErr = invalid("expires", "%v", err)
			} else {
				c.Expires = ts.AsTime()
			}
		}
		return c, true
	case *pb.SetPolicyRequest:
		return Change{Kind: ChangePolicy, Policy: r.GetPolicy()}, true
	}
	return Change{}, false
}

// Applied is what a change did (Operator.Apply).
type Applied struct {
	// Pool is the pool's status after the change (nil for ChangePolicy).
	Pool *pb.PoolStatus
	// Drain is ChangeDrain's plan: which other pools take the traffic of
	// each model, whether they have the headroom, the pool's status, and
	// whether the drain was applied (false for a dry run).
	Drain *pb.DrainResponse
	// Previous and Policy are the policy before and after a ChangePolicy.
	Previous, Policy string
}

// HashToken returns the hex SHA-256 under which a token is stored in config.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// BearerToken is the token of an "Authorization: Bearer <token>" value as an
// edge read it off its transport: "" (no error) when the value is empty, an
// UnauthenticatedError when it is in another form.
func BearerToken(authorization string) (string, error) {
	if authorization == "" {
		return "", nil
	}
	tok, ok := strings.CutPrefix(authorization, "Bearer ")
	if !ok || tok == "" {
		return "", unauthenticated("authorization must be \"Bearer <token>\"")
	}
	return tok, nil
}

// Operator returns the router's operator interface.
func (s *Server) Operator() Operator { return operator{s} }

// operator is the Server as operators see it.
type operator struct{ s *Server }

var _ Operator = operator{}

func (o operator) Authorize(token string, role Role) (string, error) {
	return o.s.authorizeIn(o.s.disp.Generation(), token, role)
}

// authorizeIn checks token for role against g's admin tokens and the
// Options' (SWITCHYARD_ADMIN_TOKEN).
func (s *Server) authorizeIn(g *dispatch.Generation, token string, role Role) (string, error) {
	if len(g.Fleet.Admin.Tokens) == 0 && len(s.opts.AdminTokens) == 0 {
		return "", unauthenticated("the admin API is disabled: no admin token is configured (config admin.tokens or SWITCHYARD_ADMIN_TOKEN)")
	}
	if token == "" {
		return "", unauthenticated("missing authorization: Bearer <token>")
	}
	h := []byte(HashToken(token))
	for _, ts := range [][]config.AdminToken{g.Fleet.Admin.Tokens, s.opts.AdminTokens} {
		for _, t := range ts {
			if subtle.ConstantTimeCompare(h, []byte(strings.ToLower(t.SHA256))) == 1 {
				if role == RoleOperator && Role(t.Role) != RoleOperator {
					return t.Name, &dispatch.DeniedError{Reason: fmt.Sprintf("token %q has role %s; this call needs %s", t.Name, t.Role, RoleOperator)}
				}
				return t.Name, nil
			}
		}
	}
	return "", unauthenticated("unknown token")
}

// pool finds the pool an operator call names.
func (o operator) pool(name string) (*dispatch.Pool, error) {
	if name == "" {
		return nil, invalid("pool", "required")
	}
	p, ok := o.s.disp.Generation().Pool(name)
	if !ok {
		return nil, &dispatch.UnknownPoolError{Pool: echo(name)}
	}
	return p, nil
}

func (o operator) Snapshot(token string) (*Snapshot, error) {
	if _, err := o.Authorize(token, RoleViewer); err != nil {
		return nil, err
	}
	s := o.s
	now := s.opts.Clock.Now()
	resp := &pb.ListPoolsResponse{CountingMode: countingMode(s.opts.Store.Status().Mode), Replica: s.opts.Replica, Policy: s.PolicyName()}
	var blocks map[string]*pb.CapacityBlock
	if br, ok := s.opts.Store.(capacity.BlockReporter); ok {
		st := br.Blocks()
		resp.Acquires, resp.StoreRoundTrips, resp.SyncRoundTrips = st.Acquires, st.Trips, st.SyncTrips
		blocks = make(map[string]*pb.CapacityBlock, len(st.Pools))
		for _, b := range st.Pools {
			blocks[b.Pool] = blockStatus(b)
		}
	}
	for _, p := range s.disp.Generation().Pools {
		ps := poolStatus(p, now)
		ps.Block = blocks[p.Config().Name]
		resp.Pools = append(resp.Pools, ps)
	}
	return &Snapshot{Fleet: resp, Region: s.opts.Region}, nil
}

// views snapshots every pool of g.
func views(g *dispatch.Generation, now time.Time) []policy.PoolView {
	out := make([]policy.PoolView, len(g.Pools))
	for i, p := range g.Pools {
		out[i] = p.View(now)
	}
	return out
}

// effectiveHeadroom is a candidate's headroom as operators see it (the
// backend's report applied, policy.PoolView.EffectiveHeadroom).
func effectiveHeadroom(vs []policy.PoolView, c policy.Candidate) int {
	if c.Index >= 0 && c.Index < len(vs) && vs[c.Index].Name == c.Pool {
		return vs[c.Index].EffectiveHeadroom()
	}
	return c.Headroom
}

// poolStatus reports one pool as operators see it.
func poolStatus(p *dispatch.Pool, now time.Time) *pb.PoolStatus {
	v := p.View(now)
	_, o := p.Limit(now)
	c := p.Config()
	ps := &pb.PoolStatus{
		Name: c.Name, Cloud: c.Cloud, Region: c.Region, Geography: c.Geography, Accelerator: c.Accelerator,
		Models: c.Models, Limit: int32(v.EffectiveLimit()), ConfiguredLimit: int32(c.Limits.MaxConcurrent),
		InFlight: int32(v.InFlight), Headroom: int32(v.EffectiveHeadroom()), Weight: v.Weight, Drained: v.Drained, Ejected: v.Ejected,
		CostPerMillionTokens: c.CostPerMillionTokens, Health: "SERVING",
	}
	if r := v.Reported; r != nil {
		ps.BackendLoad = &pb.BackendLoad{Running: int32(r.Running), Queued: int32(r.Queued), Capacity: int32(r.Capacity)}
	}
	ps.LimitReason = limitReason(&v, c.Limits.MaxConcurrent)
	if v.Unhealthy {
		ps.Health = "NOT_SERVING"
	}
	if o != nil {
		ps.CapacityOverride = int32(o.Limit)
		if !o.Expires.IsZero() {
			ps.OverrideExpires = timestamppb.New(o.Expires)
		}
	}
	return ps
}

// limitReason says why a pool's effective limit is below its configured
// one ("" when it is not): the backend's report when that is the smallest,
// else the operator's override.
func limitReason(v *policy.PoolView, configured int) string {
	eff := v.EffectiveLimit()
	switch {
	case eff >= configured:
		return ""
	case eff < v.Limit:
		return fmt.Sprintf("short: backend reports %d of %d", eff, configured)
	default:
		return fmt.Sprintf("override %d of %d", eff, configured)
	}
}

func countingMode(m capacity.Mode) pb.CountingMode {
	switch m {
	case capacity.ModeLocal:
		return pb.CountingMode_COUNTING_MODE_LOCAL
	case capacity.ModeShared:
		return pb.CountingMode_COUNTING_MODE_SHARED
	case capacity.ModeDegraded:
		return pb.CountingMode_COUNTING_MODE_DEGRADED
	}
	return pb.CountingMode_COUNTING_MODE_UNSPECIFIED
}

func blockStatus(b capacity.PoolBlock) *pb.CapacityBlock {
	out := &pb.CapacityBlock{
		Home: b.Home, Granted: b.Granted, Free: b.Free, Stranded: b.Stranded, Learning: b.Learning,
		Holders: int32(b.Holders), GrantedAll: b.GrantedAll,
	}
	if !b.Expires.IsZero() {
		out.Expires = timestamppb.New(b.Expires)
	}
	return out
}

func (o operator) Explain(token string, r *pb.GenerateRequest) (*pb.ExplainRouteResponse, error) {
	if _, err := o.Authorize(token, RoleViewer); err != nil {
		return nil, err
	}
	if r == nil {
		return nil, invalid("request", "required")
	}
	s := o.s
	g := s.disp.Generation()
	if _, ok := g.Fleet.Model(r.GetModel()); !ok {
		return nil, &dispatch.UnknownModelError{Model: echo(r.GetModel())}
	}
	h := r.GetRouting()
	if !policy.ValidResidency(h.GetResidency()) {
		return nil, invalid("request.routing.residency", "%q is not one of %q", h.GetResidency(), policy.Residencies)
	}
	preq := &policy.Request{Model: r.GetModel(), Priority: priority.FromWire(r.GetPriority()), CallerRegion: cmp.Or(h.GetCallerRegion(), s.opts.Region), Residency: h.GetResidency(),
		PreferredCloud: h.GetPreferredCloud(), PreferredAccelerator: h.GetPreferredAccelerator(), Explain: true}
	vs := views(g, s.opts.Clock.Now())
	dec := policy.Decide(s.ops.policy.Load().p, preq, vs, g.Env)
	resp := &pb.ExplainRouteResponse{Policy: dec.Policy}
	for i, c := range dec.Ranked {
		resp.Candidates = append(resp.Candidates, &pb.Candidate{Pool: c.Pool, Rank: int32(i + 1), Eligible: true, Reason: c.Reason,
			Tier: c.Tier.String(), Headroom: int32(effectiveHeadroom(vs, c)), Weight: c.Weight, Score: c.Score})
	}
	sort.SliceStable(dec.Skipped, func(i, j int) bool { return dec.Skipped[i].Pool < dec.Skipped[j].Pool })
	for _, c := range dec.Skipped {
		resp.Candidates = append(resp.Candidates, &pb.Candidate{Pool: c.Pool, Reason: c.Reason, Tier: c.Tier.String(), Headroom: int32(effectiveHeadroom(vs, c)), Weight: c.Weight})
	}
	return resp, nil
}

func (o operator) Apply(ctx context.Context, token string, c Change) (*Applied, error) {
	role := RoleOperator
	if c.Kind == ChangeDrain && c.DryRun {
		role = RoleViewer
	}
	actor, err := o.Authorize(token, role)
	if err != nil {
		return nil, err
	}
	if c.Kind == ChangePolicy {
		return o.setPolicy(ctx, actor, c.Policy)
	}
	p, err := o.pool(c.Pool)
	if err != nil {
		return nil, err
	}
	name := p.Config().Name
	switch c.Kind {
	case ChangeWeight:
		if w := c.Weight; w < 0 || w > 1000 || w != w {
			return nil, invalid("weight", "must be in [0, 1000], got %v", w)
		}
		return o.change(ctx, actor, "set_weight", name, func(st *control.State) (string, string) {
			before := fmt.Sprintf("%g", p.Config().WeightOf())
			if w, ok := st.Weights[name]; ok {
				before = fmt.Sprintf("%g", w)
			}
			st.Weights[name] = c.Weight
			return before, fmt.Sprintf("%g", c.Weight)
		})
	case ChangeDrain:
		return o.drain(ctx, actor, p, c)
	case ChangeResume:
		return o.change(ctx, actor, "resume", name, func(st *control.State) (string, string) {
			before := fmt.Sprintf("drained=%t", st.Drained[name])
			delete(st.Drained, name)
			return before, "drained=false"
		})
	case ChangeCapacityOverride:
		return o.override(ctx, actor, p, c)
	}
	return nil, invalid("kind", "unknown change %d", c.Kind)
}

// change applies an operator change through the control store, audits it
// and returns the pool's new status (none when pool is "").
func (o operator) change(ctx context.Context, actor, action, pool string, fn func(*control.State) (before, after string)) (*Applied, error) {
	s := o.s
	var before, after string
	next, err := s.opts.Control.Update(ctx, func(st *control.State) error {
		before, after = fn(st)
		st.Actor = actor // watch events on every replica say who changed it
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.applyControl(next)
	entry := control.Entry{Time: s.opts.Clock.Now().UTC(), Actor: actor, Action: action, Pool: pool, Before: before, After: after}
	if err := s.opts.Control.AppendAudit(ctx, entry); err != nil {
		s.log.Error("audit entry not recorded", "action", action, "pool", pool, "actor", actor, "err", err)
	}
	s.log.Info("operator change", "actor", actor, "action", action, "pool", pool, "before", before, "after", after)
	if pool == "" {
		return &Applied{}, nil
	}
	p, err := o.pool(pool)
	if err != nil {
		return nil, err
	}
	return &Applied{Pool: poolStatus(p, s.opts.Clock.Now())}, nil
}

// drain plans a drain of p and, unless c is a dry run, applies it.
func (o operator) drain(ctx context.Context, actor string, p *dispatch.Pool, c Change) (*Applied, error) {
	plan := o.drainPlan(p)
	if c.DryRun {
		plan.Pool = poolStatus(p, o.s.opts.Clock.Now())
		return &Applied{Pool: plan.Pool, Drain: plan}, nil
	}
	name := p.Config().Name
	if !plan.FleetHasHeadroom && !c.Force {
		return nil, &dispatch.RefusedError{Reason: fmt.Sprintf("draining %s: %s; use force to drain anyway", name, plan.Summary)}
	}
	a, err := o.change(ctx, actor, "drain", name, func(st *control.State) (string, string) {
		before := fmt.Sprintf("drained=%t", st.Drained[name])
		st.Drained[name] = true
		return before, "drained=true"
	})
	if err != nil {
		return nil, err
	}
	plan.Pool, plan.Applied = a.Pool, true
	a.Drain = plan
	return a, nil
}

// drainPlan works out, per model the pool serves, which other pools would
// take its traffic and whether they have headroom for its in-flight load.
func (o operator) drainPlan(p *dispatch.Pool) *pb.DrainResponse {
	g := o.s.disp.Generation()
	vs := views(g, o.s.opts.Clock.Now())
	name := p.Config().Name
	load := 0
	for _, v := range vs {
		if v.Name == name {
			load = v.InFlight
		}
	}
	resp := &pb.DrainResponse{FleetHasHeadroom: true}
	var short []string
	for _, model := range p.Config().Models {
		eligible, _ := policy.Filter(&policy.Request{Model: model}, vs, g.Env)
		t := &pb.DrainTarget{Model: model}
		for _, c := range eligible {
			if c.Pool == name {
				continue
			}
			t.Pools = append(t.Pools, c.Pool)
			t.Headroom += int32(effectiveHeadroom(vs, c))
		}
		resp.Targets = append(resp.Targets, t)
		if len(t.Pools) == 0 || int(t.Headroom) < max(load, 1) {
			resp.FleetHasHeadroom = false
			short = append(short, fmt.Sprintf("model %s: other pools have headroom %d for %d in flight", model, t.Headroom, load))
		}
	}
	if resp.FleetHasHeadroom {
		resp.Summary = fmt.Sprintf("%d calls in flight would finish; new traffic moves to %d other pools with headroom", load, len(resp.Targets[0].Pools))
	} else {
		resp.Summary = "the rest of the fleet lacks headroom: " + strings.Join(short, "; ")
	}
	return resp
}

// override sets or clears p's capacity override.
func (o operator) override(ctx context.Context, actor string, p *dispatch.Pool, c Change) (*Applied, error) {
	now := o.s.opts.Clock.Now()
	var ov control.Override
	if !c.Clear {
		if c.Limit < 0 || c.Limit > 1_000_000 {
			return nil, invalid("limit", "must be in [0, 1000000], got %d", c.Limit)
		}
		if c.expiresErr != nil {
			return nil, c.expiresErr
		}
		ov.Limit, ov.Expires = c.Limit, c.Expires
		if !ov.Expires.IsZero() && !ov.Expires.After(now) {
			return nil, invalid("expires", "%s is in the past", ov.Expires.Format(time.RFC3339))
		}
	}
	name, configured := p.Config().Name, p.Config().Limits.MaxConcurrent
	describe := func(o control.Override, ok bool) string {
		if !ok || !o.Active(now) {
			return fmt.Sprintf("limit %d (config)", configured)
		}
		if o.Expires.IsZero() {
			return fmt.Sprintf("limit %d", o.Limit)
		}
		return fmt.Sprintf("limit %d until %s", o.Limit, o.Expires.UTC().Format(time.RFC3339))
	}
	return o.change(ctx, actor, "capacity_override", name, func(st *control.State) (string, string) {
		old, had := st.Overrides[name]
		before := describe(old, had)
		if c.Clear {
			delete(st.Overrides, name)
			return before, describe(control.Override{}, false)
		}
		st.Overrides[name] = ov
		return before, describe(ov, true)
	})
}

// setPolicy switches every replica to the named policy.
func (o operator) setPolicy(ctx context.Context, actor, name string) (*Applied, error) {
	if _, err := o.s.opts.Policies.Get(name); err != nil {
		return nil, invalid("policy", "%v", err)
	}
	prev := o.s.PolicyName()
	if _, err := o.change(ctx, actor, "set_policy", "", func(st *control.State) (string, string) {
		st.Policy = name
		return prev, name
	}); err != nil {
		return nil, err
	}
	return &Applied{Previous: prev, Policy: o.s.PolicyName()}, nil
}

func (o operator) Audit(ctx context.Context, token string, limit int) ([]*pb.AuditEntry, error) {
	if _, err := o.Authorize(token, RoleViewer); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	entries, err := o.s.opts.Control.Audit(ctx, limit)
	if err != nil {
		return nil, &dispatch.UnavailableError{Err: fmt.Errorf("audit log: %w", err)}
	}
	out := make([]*pb.AuditEntry, 0, len(entries))
	for _, e := range entries {
		out = append(out, &pb.AuditEntry{Time: timestamppb.New(e.Time), Actor: e.Actor, Action: e.Action, Pool: e.Pool, Before: e.Before, After: e.After})
	}
	return out, nil
}

// errShuttingDown ends the watches of a router that stops.
var errShuttingDown = errors.New("router shutting down")

// Watch is an open event subscription (Operator.Watch). Its methods are
// safe for concurrent use.
type Watch struct {
	events <-chan *pb.Event
	ctx    context.Context
	close  func()
}

// Events delivers the watch's events in order: "hello" (the replica, policy
// and counting mode watched), the recent events asked for, then each new
// one. It is never closed: wait on Done as well. A watcher that falls
// behind loses events and is then sent a "dropped" event saying how many.
func (w *Watch) Events() <-chan *pb.Event { return w.events }

// Done is closed when the watch ends (Err says why).
func (w *Watch) Done() <-chan struct{} { return w.ctx.Done() }

// Err is why the watch ended: nil while it runs or when the caller's ctx
// ended it, an UnauthenticatedError or DeniedError when a reload removed the
// token or its role, an UnavailableError when the router stopped.
func (w *Watch) Err() error {
	if w.ctx.Err() == nil {
		return nil
	}
	cause := context.Cause(w.ctx)
	switch {
	case errors.Is(cause, errShuttingDown):
		return &dispatch.UnavailableError{Err: errShuttingDown}
	case isRevoked(cause):
		return cause
	}
	return nil
}

// Close ends the watch. Idempotent.
func (w *Watch) Close() { w.close() }

func (o operator) Watch(ctx context.Context, token string, recent int) (*Watch, error) {
	if _, err := o.Authorize(token, RoleViewer); err != nil {
		return nil, err
	}
	s := o.s
	// A reload that removes the token (or its viewer role) ends the watch.
	ctx, unwatch := s.watchCredential(ctx, func(g *dispatch.Generation) error {
		_, err := s.authorizeIn(g, token, RoleViewer)
		return err
	})
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-s.life.stop:
			cancel(errShuttingDown)
		case <-ctx.Done():
		}
	}()
	hello := &pb.Event{Time: timestamppb.New(s.opts.Clock.Now()), Kind: "hello",
		Detail: fmt.Sprintf("watching replica %s (policy %s, counting %s)", s.opts.Replica, s.PolicyName(), s.opts.Store.Status().Mode)}
	sub := s.events.subscribeWith(hello, recent)
	return &Watch{events: sub.ch, ctx: ctx, close: func() {
		s.events.unsubscribe(sub)
		cancel(nil)
		unwatch()
	}}, nil
}

// unauthenticated is an UNAUTHENTICATED error with a reason.
func unauthenticated(format string, args ...any) error {
	return &dispatch.UnauthenticatedError{Reason: fmt.Sprintf(format, args...)}
}
