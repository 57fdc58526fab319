package router

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/priority"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/control"
	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// Admin is the operator control plane (switchyard.v1.Admin). Every call
// needs "authorization: Bearer <token>": reads need the viewer role, changes
// the operator role. With no token configured every call is refused.
type Admin struct {
	pb.UnimplementedAdminServer
	v adminView
}

var _ pb.AdminServer = (*Admin)(nil)

// adminView is all of the router the Admin API sees: the fleet and its
// pools' state, the operator changes, the policies, the events. Nothing of
// the request path.
type adminView struct {
	state       func() *dispatch.Generation
	apply       func(control.State) // applyControl: swap in a newer control state
	policy      func() policy.Policy
	policies    *policy.Registry
	control     control.Store
	counting    func() capacity.Status
	blocks      capacity.BlockReporter // nil unless counting is leased
	events      *eventBus
	clock       clock.Clock
	log         *slog.Logger
	replica     string
	region      string
	adminTokens []config.AdminToken
	stop        <-chan struct{}
	// watchCredential ends a stream's context when a reload revokes its
	// token (revoke.go).
	watchCredential func(context.Context, func(*dispatch.Generation) error) (context.Context, func())
}

// Admin returns the control-plane service for this router.
func (s *Server) Admin() *Admin {
	return &Admin{v: adminView{
		state:       s.disp.Generation,
		apply:       s.applyControl,
		policy:      func() policy.Policy { return s.ops.policy.Load().p },
		policies:    s.opts.Policies,
		control:     s.opts.Control,
		counting:    s.opts.Store.Status,
		blocks:      blockReporter(s.opts.Store),
		events:      s.events,
		clock:       s.opts.Clock,
		log:         s.log,
		replica:     s.opts.Replica,
		region:      s.opts.Region,
		adminTokens: s.opts.AdminTokens,
		stop:        s.life.stop,

		watchCredential: s.watchCredential,
	}}
}

// RegisterAdmin adds the Admin service to a gRPC server.
func (s *Server) RegisterAdmin(gs *grpc.Server) { pb.RegisterAdminServer(gs, s.Admin()) }

var (
	errPermissionDenied = errors.New("permission denied")
	errPoolNotFound     = errors.New("unknown pool")
	errFailedPrecond    = errors.New("refused")
)

const (
	roleViewer   = "viewer"
	roleOperator = "operator"
)

// HashToken returns the hex SHA-256 under which a token is stored in config.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// authorize checks the bearer token and role; it returns the token's name.
func (a *Admin) authorize(ctx context.Context, role string) (string, error) {
	return a.authorizeIn(ctx, a.v.state(), role)
}

// authorizeIn is authorize against the config of st.
func (a *Admin) authorizeIn(ctx context.Context, st *dispatch.Generation, role string) (string, error) {
	tokens := append(append([]config.AdminToken(nil), st.Fleet.Admin.Tokens...), a.v.adminTokens...)
	if len(tokens) == 0 {
		return "", unauthenticated("the admin API is disabled: no admin token is configured (config admin.tokens or SWITCHYARD_ADMIN_TOKEN)")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	tok, present := bearerToken(md)
	if !present {
		return "", unauthenticated("missing authorization: Bearer <token>")
	}
	if tok == "" {
		return "", unauthenticated("authorization must be \"Bearer <token>\"")
	}
	h := []byte(HashToken(tok))
	for _, t := range tokens {
		if subtle.ConstantTimeCompare(h, []byte(strings.ToLower(t.SHA256))) == 1 {
			if role == roleOperator && t.Role != roleOperator {
				return t.Name, fmt.Errorf("%w: token %q has role %s; this call needs %s", errPermissionDenied, t.Name, t.Role, roleOperator)
			}
			return t.Name, nil
		}
	}
	return "", unauthenticated("unknown token")
}

// adminStatus maps admin errors to statuses (toStatus covers the shared ones).
func adminStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errPermissionDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, errPoolNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errFailedPrecond):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return toStatus(err)
}

func (a *Admin) pool(name string) (*dispatch.Pool, error) {
	if name == "" {
		return nil, invalid("pool", "required")
	}
	p, ok := a.v.state().Pool(name)
	if !ok {
		return nil, fmt.Errorf("%w %q (see ListPools)", errPoolNotFound, name)
	}
	return p, nil
}

// operatorOn authorizes a change to the named pool and finds it.
func (a *Admin) operatorOn(ctx context.Context, name string) (actor string, p *dispatch.Pool, err error) {
	if actor, err = a.authorize(ctx, roleOperator); err != nil {
		return "", nil, err
	}
	p, err = a.pool(name)
	return actor, p, err
}

// views snapshots every pool of st.
func views(st *dispatch.Generation, now time.Time) []policy.PoolView {
	out := make([]policy.PoolView, len(st.Pools))
	for i, p := range st.Pools {
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
	ps := &pb.PoolStatus{
		Name: p.Config().Name, Cloud: p.Config().Cloud, Region: p.Config().Region, Geography: p.Config().Geography, Accelerator: p.Config().Accelerator,
		Models: p.Config().Models, Limit: int32(v.EffectiveLimit()), ConfiguredLimit: int32(p.Config().Limits.MaxConcurrent),
		InFlight: int32(v.InFlight), Headroom: int32(v.EffectiveHeadroom()), Weight: v.Weight, Drained: v.Drained, Ejected: v.Ejected,
		CostPerMillionTokens: p.Config().CostPerMillionTokens, Health: "SERVING",
	}
	if r := v.Reported; r != nil {
		ps.BackendLoad = &pb.BackendLoad{Running: int32(r.Running), Queued: int32(r.Queued), Capacity: int32(r.Capacity)}
	}
	ps.LimitReason = limitReason(&v, p.Config().Limits.MaxConcurrent)
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

// ListPools implements pb.AdminServer.
func (a *Admin) ListPools(ctx context.Context, _ *pb.ListPoolsRequest) (*pb.ListPoolsResponse, error) {
	if _, err := a.authorize(ctx, roleViewer); err != nil {
		return nil, adminStatus(err)
	}
	now := a.v.clock.Now()
	resp := &pb.ListPoolsResponse{CountingMode: countingMode(a.v.counting().Mode), Replica: a.v.replica, Policy: a.v.policy().Name()}
	var blocks map[string]*pb.CapacityBlock
	if a.v.blocks != nil {
		st := a.v.blocks.Blocks()
		resp.Acquires, resp.StoreRoundTrips, resp.SyncRoundTrips = st.Acquires, st.Trips, st.SyncTrips
		blocks = make(map[string]*pb.CapacityBlock, len(st.Pools))
		for _, b := range st.Pools {
			blocks[b.Pool] = blockStatus(b)
		}
	}
	for _, p := range a.v.state().Pools {
		ps := poolStatus(p, now)
		ps.Block = blocks[p.Config().Name]
		resp.Pools = append(resp.Pools, ps)
	}
	return resp, nil
}

// blockReporter is the store's block view when it leases blocks, else nil.
func blockReporter(s capacity.Store) capacity.BlockReporter {
	if br, ok := s.(capacity.BlockReporter); ok {
		return br
	}
	return nil
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

// change applies an operator change through the control store, audits it and
// returns the pool's new status.
func (a *Admin) change(ctx context.Context, actor, action, pool string, fn func(*control.State) (before, after string, err error)) (*pb.PoolStatus, error) {
	var before, after string
	next, err := a.v.control.Update(ctx, func(st *control.State) error {
		var err error
		if before, after, err = fn(st); err == nil {
			st.Actor = actor // watch events on every replica say who changed it
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	a.v.apply(next)
	entry := control.Entry{Time: a.v.clock.Now().UTC(), Actor: actor, Action: action, Pool: pool, Before: before, After: after}
	if err := a.v.control.AppendAudit(ctx, entry); err != nil {
		a.v.log.Error("audit entry not recorded", "action", action, "pool", pool, "actor", actor, "err", err)
	}
	a.v.log.Info("operator change", "actor", actor, "action", action, "pool", pool, "before", before, "after", after)
	if pool == "" {
		return nil, nil
	}
	p, err := a.pool(pool)
	if err != nil {
		return nil, err
	}
	return poolStatus(p, a.v.clock.Now()), nil
}

// SetWeight implements pb.AdminServer.
func (a *Admin) SetWeight(ctx context.Context, req *pb.SetWeightRequest) (*pb.PoolChangeResponse, error) {
	actor, p, err := a.operatorOn(ctx, req.GetPool())
	if err != nil {
		return nil, adminStatus(err)
	}
	if w := req.GetWeight(); w < 0 || w > 1000 || w != w {
		return nil, adminStatus(invalid("weight", "must be in [0, 1000], got %v", w))
	}
	ps, err := a.change(ctx, actor, "set_weight", p.Config().Name, func(st *control.State) (string, string, error) {
		before := fmt.Sprintf("%g", p.Config().WeightOf())
		if w, ok := st.Weights[p.Config().Name]; ok {
			before = fmt.Sprintf("%g", w)
		}
		st.Weights[p.Config().Name] = req.GetWeight()
		return before, fmt.Sprintf("%g", req.GetWeight()), nil
	})
	if err != nil {
		return nil, adminStatus(err)
	}
	return &pb.PoolChangeResponse{Pool: ps}, nil
}

// Drain implements pb.AdminServer. A dry run says where the pool's traffic
// would go; a real drain is refused without force when the rest of the fleet
// lacks the headroom to take the pool's current load.
func (a *Admin) Drain(ctx context.Context, req *pb.DrainRequest) (*pb.DrainResponse, error) {
	role := roleOperator
	if req.GetDryRun() {
		role = roleViewer
	}
	actor, err := a.authorize(ctx, role)
	if err != nil {
		return nil, adminStatus(err)
	}
	p, err := a.pool(req.GetPool())
	if err != nil {
		return nil, adminStatus(err)
	}
	resp := a.drainPlan(p)
	if req.GetDryRun() {
		resp.Pool = poolStatus(p, a.v.clock.Now())
		return resp, nil
	}
	if !resp.FleetHasHeadroom && !req.GetForce() {
		return nil, adminStatus(fmt.Errorf("%w: draining %s: %s; use force to drain anyway", errFailedPrecond, p.Config().Name, resp.Summary))
	}
	ps, err := a.change(ctx, actor, "drain", p.Config().Name, func(st *control.State) (string, string, error) {
		before := fmt.Sprintf("drained=%t", st.Drained[p.Config().Name])
		st.Drained[p.Config().Name] = true
		return before, "drained=true", nil
	})
	if err != nil {
		return nil, adminStatus(err)
	}
	resp.Pool, resp.Applied = ps, true
	return resp, nil
}

// drainPlan works out, per model the pool serves, which other pools would
// take its traffic and whether they have headroom for its in-flight load.
func (a *Admin) drainPlan(p *dispatch.Pool) *pb.DrainResponse {
	st := a.v.state()
	views := views(st, a.v.clock.Now())
	load := 0
	for _, v := range views {
		if v.Name == p.Config().Name {
			load = v.InFlight
		}
	}
	resp := &pb.DrainResponse{FleetHasHeadroom: true}
	var short []string
	for _, model := range p.Config().Models {
		eligible, _ := policy.Filter(&policy.Request{Model: model}, views, st.Env)
		t := &pb.DrainTarget{Model: model}
		for _, c := range eligible {
			if c.Pool == p.Config().Name {
				continue
			}
			t.Pools = append(t.Pools, c.Pool)
			t.Headroom += int32(effectiveHeadroom(views, c))
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

// Resume implements pb.AdminServer.
func (a *Admin) Resume(ctx context.Context, req *pb.ResumeRequest) (*pb.PoolChangeResponse, error) {
	actor, p, err := a.operatorOn(ctx, req.GetPool())
	if err != nil {
		return nil, adminStatus(err)
	}
	ps, err := a.change(ctx, actor, "resume", p.Config().Name, func(st *control.State) (string, string, error) {
		before := fmt.Sprintf("drained=%t", st.Drained[p.Config().Name])
		delete(st.Drained, p.Config().Name)
		return before, "drained=false", nil
	})
	if err != nil {
		return nil, adminStatus(err)
	}
	return &pb.PoolChangeResponse{Pool: ps}, nil
}

// SetCapacityOverride implements pb.AdminServer.
func (a *Admin) SetCapacityOverride(ctx context.Context, req *pb.SetCapacityOverrideRequest) (*pb.PoolChangeResponse, error) {
	actor, p, err := a.operatorOn(ctx, req.GetPool())
	if err != nil {
		return nil, adminStatus(err)
	}
	now := a.v.clock.Now()
	var o control.Override
	if !req.GetClear() {
		if req.GetLimit() < 0 || req.GetLimit() > 1_000_000 {
			return nil, adminStatus(invalid("limit", "must be in [0, 1000000], got %d", req.GetLimit()))
		}
		o.Limit = int(req.GetLimit())
		if req.GetExpires() != nil {
			if err := req.GetExpires().CheckValid(); err != nil {
				return nil, adminStatus(invalid("expires", "%v", err))
			}
			o.Expires = req.GetExpires().AsTime()
			if !o.Expires.After(now) {
				return nil, adminStatus(invalid("expires", "%s is in the past", o.Expires.Format(time.RFC3339)))
			}
		}
	}
	ps, err := a.change(ctx, actor, "capacity_override", p.Config().Name, func(st *control.State) (string, string, error) {
		describe := func(o control.Override, ok bool) string {
			if !ok || !o.Active(now) {
				return fmt.Sprintf("limit %d (config)", p.Config().Limits.MaxConcurrent)
			}
			if o.Expires.IsZero() {
				return fmt.Sprintf("limit %d", o.Limit)
			}
			return fmt.Sprintf("limit %d until %s", o.Limit, o.Expires.UTC().Format(time.RFC3339))
		}
		old, had := st.Overrides[p.Config().Name]
		before := describe(old, had)
		if req.GetClear() {
			delete(st.Overrides, p.Config().Name)
			return before, describe(control.Override{}, false), nil
		}
		st.Overrides[p.Config().Name] = o
		return before, describe(o, true), nil
	})
	if err != nil {
		return nil, adminStatus(err)
	}
	return &pb.PoolChangeResponse{Pool: ps}, nil
}

// SetPolicy implements pb.AdminServer: every replica switches.
func (a *Admin) SetPolicy(ctx context.Context, req *pb.SetPolicyRequest) (*pb.SetPolicyResponse, error) {
	actor, err := a.authorize(ctx, roleOperator)
	if err != nil {
		return nil, adminStatus(err)
	}
	if _, err := a.v.policies.Get(req.GetPolicy()); err != nil {
		return nil, adminStatus(invalid("policy", "%v", err))
	}
	prev := a.v.policy().Name()
	if _, err := a.change(ctx, actor, "set_policy", "", func(st *control.State) (string, string, error) {
		st.Policy = req.GetPolicy()
		return prev, req.GetPolicy(), nil
	}); err != nil {
		return nil, adminStatus(err)
	}
	return &pb.SetPolicyResponse{Previous: prev, Policy: a.v.policy().Name()}, nil
}

// ExplainRoute implements pb.AdminServer: the ranked candidates for a
// hypothetical request, with the reason each was chosen or skipped.
func (a *Admin) ExplainRoute(ctx context.Context, req *pb.ExplainRouteRequest) (*pb.ExplainRouteResponse, error) {
	if _, err := a.authorize(ctx, roleViewer); err != nil {
		return nil, adminStatus(err)
	}
	r := req.GetRequest()
	if r == nil {
		return nil, adminStatus(invalid("request", "required"))
	}
	st := a.v.state()
	if _, ok := st.Fleet.Model(r.GetModel()); !ok {
		return nil, adminStatus(&dispatch.UnknownModelError{Model: echo(r.GetModel())})
	}
	h := r.GetRouting()
	if !policy.ValidResidency(h.GetResidency()) {
		return nil, adminStatus(invalid("request.routing.residency", "%q is not one of %q", h.GetResidency(), policy.Residencies))
	}
	pol := a.v.policy()
	preq := &policy.Request{Model: r.GetModel(), Priority: priority.FromWire(r.GetPriority()), CallerRegion: cmp.Or(h.GetCallerRegion(), a.v.region), Residency: h.GetResidency(),
		PreferredCloud: h.GetPreferredCloud(), PreferredAccelerator: h.GetPreferredAccelerator(), Explain: true}
	vs := views(st, a.v.clock.Now())
	dec := policy.Decide(pol, preq, vs, st.Env)
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

// WatchEvents implements pb.AdminServer.
func (a *Admin) WatchEvents(req *pb.WatchEventsRequest, stream grpc.ServerStreamingServer[pb.Event]) error {
	if _, err := a.authorize(stream.Context(), roleViewer); err != nil {
		return adminStatus(err)
	}
	// A reload that removes the token (or its viewer role) ends the stream.
	ctx, unwatch := a.v.watchCredential(stream.Context(), func(st *dispatch.Generation) error {
		_, err := a.authorizeIn(stream.Context(), st, roleViewer)
		return err
	})
	defer unwatch()
	sub, recent := a.v.events.subscribeRecent(int(req.GetRecent()))
	defer a.v.events.unsubscribe(sub)
	if err := stream.Send(&pb.Event{Time: timestamppb.New(a.v.clock.Now()), Kind: "hello", Detail: fmt.Sprintf("watching replica %s (policy %s, counting %s)", a.v.replica, a.v.policy().Name(), a.v.counting().Mode)}); err != nil {
		return err
	}
	for _, ev := range recent {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			if err := revokedCause(ctx); err != nil {
				return adminStatus(err)
			}
			return nil
		case <-a.v.stop:
			return status.Error(codes.Unavailable, "router shutting down")
		case ev := <-sub.ch:
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

// ListAudit implements pb.AdminServer.
func (a *Admin) ListAudit(ctx context.Context, req *pb.ListAuditRequest) (*pb.ListAuditResponse, error) {
	if _, err := a.authorize(ctx, roleViewer); err != nil {
		return nil, adminStatus(err)
	}
	limit := int(req.GetLimit())
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	entries, err := a.v.control.Audit(ctx, limit)
	if err != nil {
		return nil, adminStatus(&dispatch.UnavailableError{Err: fmt.Errorf("audit log: %w", err)})
	}
	resp := &pb.ListAuditResponse{}
	for _, e := range entries {
		resp.Entries = append(resp.Entries, &pb.AuditEntry{Time: timestamppb.New(e.Time), Actor: e.Actor, Action: e.Action, Pool: e.Pool, Before: e.Before, After: e.After})
	}
	return resp, nil
}
