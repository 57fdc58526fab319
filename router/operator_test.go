package router_test

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/sim"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/dispatch"
)

// operatorRouter is a router over the demo fleet's in-process simulated
// pools with an operator ("alice") and a viewer ("dash") token.
func operatorRouter(t *testing.T, tokens ...config.AdminToken) *router.Server {
	t.Helper()
	fleet := config.Demo()
	reg := backends.NewRegistry()
	sim.Register(reg, sim.RegistryOptions{Host: sim.NewHost(), TimeScale: 50, QueueLength: fleet.Sim.QueueLength})
	if tokens == nil {
		tokens = []config.AdminToken{
			{Name: "alice", Role: "operator", SHA256: router.HashToken("op-token")},
			{Name: "dash", Role: "viewer", SHA256: router.HashToken("view-token")},
		}
	}
	rt, err := router.New(router.Options{Fleet: fleet, Backends: reg, Replica: "op-test", Region: "us-east-1",
		Logger: slog.New(slog.DiscardHandler), AdminTokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	return rt
}

func wantCode(t *testing.T, what string, err error, code dispatch.Code, text string) {
	t.Helper()
	if got := dispatch.CodeOf(err); got != code || !strings.Contains(dispatch.PublicText(err), text) {
		t.Fatalf("%s: got %v (%v), want %v containing %q", what, got, err, code, text)
	}
}

func TestOperatorAuthorize(t *testing.T) {
	op := operatorRouter(t).Operator()
	for _, c := range []struct {
		token string
		role  router.Role
		code  dispatch.Code
		text  string
		name  string
	}{
		{"", router.RoleViewer, dispatch.CodeUnauthenticated, "missing authorization: Bearer <token>", ""},
		{"nope", router.RoleViewer, dispatch.CodeUnauthenticated, "unknown token", ""},
		{"view-token", router.RoleViewer, dispatch.CodeOK, "", "dash"},
		{"view-token", router.RoleOperator, dispatch.CodePermissionDenied, `token "dash" has role viewer; this call needs operator`, "dash"},
		{"op-token", router.RoleOperator, dispatch.CodeOK, "", "alice"},
	} {
		name, err := op.Authorize(c.token, c.role)
		wantCode(t, c.token+" as "+string(c.role), err, c.code, c.text)
		if name != c.name {
			t.Errorf("%s as %s: name %q, want %q", c.token, c.role, name, c.name)
		}
	}

	off := operatorRouter(t, []config.AdminToken{}...).Operator()
	_, err := off.Authorize("anything", router.RoleViewer)
	wantCode(t, "no token configured", err, dispatch.CodeUnauthenticated, "the admin API is disabled")
}

func TestBearerToken(t *testing.T) {
	for in, want := range map[string]string{"": "", "Bearer abc": "abc", "Bearer a b": "a b"} {
		if got, err := router.BearerToken(in); err != nil || got != want {
			t.Errorf("BearerToken(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"Basic abc", "bearer abc", "Bearer ", "abc"} {
		_, err := router.BearerToken(in)
		wantCode(t, in, err, dispatch.CodeUnauthenticated, `authorization must be "Bearer <token>"`)
	}
}

func TestOperatorApply(t *testing.T) {
	rt := operatorRouter(t)
	op := rt.Operator()
	ctx := context.Background()
	const pool = "aws-use1-h100"

	// Refusals, in the order they are checked: the role, the pool, the value.
	_, err := op.Apply(ctx, "view-token", router.Change{Kind: router.ChangeWeight, Pool: pool, Weight: 2})
	wantCode(t, "viewer sets a weight", err, dispatch.CodePermissionDenied, "needs operator")
	_, err = op.Apply(ctx, "op-token", router.Change{Kind: router.ChangeWeight, Weight: 2})
	wantCode(t, "no pool", err, dispatch.CodeInvalid, "pool: required")
	_, err = op.Apply(ctx, "op-token", router.Change{Kind: router.ChangeWeight, Pool: strings.Repeat("x", 500), Weight: 2})
	wantCode(t, "unknown pool", err, dispatch.CodeNotFound, "(500 bytes) (see ListPools)")
	_, err = op.Apply(ctx, "op-token", router.Change{Kind: router.ChangeWeight, Pool: pool, Weight: 1001})
	var inv *dispatch.InvalidError
	if !errors.As(err, &inv) || inv.Fields[0] != "weight" {
		t.Fatalf("weight 1001: %v", err)
	}

	a, err := op.Apply(ctx, "op-token", router.Change{Kind: router.ChangeWeight, Pool: pool, Weight: 2.5})
	if err != nil || a.Pool.GetName() != pool || a.Pool.GetWeight() != 2.5 {
		t.Fatalf("set weight: %v %v", a, err)
	}
	a, err = op.Apply(ctx, "op-token", router.Change{Kind: router.ChangePolicy, Policy: "least_request"})
	if err != nil || a.Previous != "switchyard" || a.Policy != "least_request" || rt.PolicyName() != "least_request" {
		t.Fatalf("set policy: %+v %v", a, err)
	}
	_, err = op.Apply(ctx, "op-token", router.Change{Kind: router.ChangePolicy, Policy: "nope"})
	wantCode(t, "unknown policy", err, dispatch.CodeInvalid, "policy")

	// A dry-run drain is a viewer's and changes nothing.
	a, err = op.Apply(ctx, "view-token", router.Change{Kind: router.ChangeDrain, Pool: pool, DryRun: true})
	if err != nil || a.Drain.GetApplied() || !a.Drain.GetFleetHasHeadroom() || a.Drain.GetPool().GetDrained() || len(a.Drain.GetTargets()) != 3 {
		t.Fatalf("dry run: %v %v", a, err)
	}
	a, err = op.Apply(ctx, "op-token", router.Change{Kind: router.ChangeDrain, Pool: pool})
	if err != nil || !a.Drain.GetApplied() || !a.Pool.GetDrained() {
		t.Fatalf("drain: %v %v", a, err)
	}
	// bge-small is served by aws-use1-h100 and one other pool: with both
	// drained, nothing takes its traffic.
	other := ""
	for _, p := range config.Demo().Pools {
		if p.Name != pool && strings.Contains(strings.Join(p.Models, ","), "bge-small") {
			other = p.Name
		}
	}
	_, err = op.Apply(ctx, "op-token", router.Change{Kind: router.ChangeDrain, Pool: other})
	wantCode(t, "drain without headroom", err, dispatch.CodeFailedPrecondition, "use force to drain anyway")
	if _, err := op.Apply(ctx, "op-token", router.Change{Kind: router.ChangeResume, Pool: pool}); err != nil {
		t.Fatal(err)
	}

	// A capacity override: an expiry no time holds is refused after the
	// role, naming the field; one in the past too.
	bad, _ := router.ChangeOf(&pb.SetCapacityOverrideRequest{Pool: pool, Limit: 2, Expires: &timestamppb.Timestamp{Nanos: -1}})
	_, err = op.Apply(ctx, "view-token", bad)
	wantCode(t, "viewer, bad expiry", err, dispatch.CodePermissionDenied, "needs operator")
	_, err = op.Apply(ctx, "op-token", bad)
	wantCode(t, "bad expiry", err, dispatch.CodeInvalid, "expires")
	_, err = op.Apply(ctx, "op-token", router.Change{Kind: router.ChangeCapacityOverride, Pool: pool, Limit: 2, Expires: time.Now().Add(-time.Minute)})
	wantCode(t, "past expiry", err, dispatch.CodeInvalid, "is in the past")
	a, err = op.Apply(ctx, "op-token", router.Change{Kind: router.ChangeCapacityOverride, Pool: pool, Limit: 2})
	if err != nil || a.Pool.GetCapacityOverride() != 2 || a.Pool.GetLimit() != 2 {
		t.Fatalf("override: %v %v", a, err)
	}

	entries, err := op.Audit(ctx, "view-token", 0)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range entries {
		if e.GetActor() != "alice" {
			t.Errorf("audit entry by %q", e.GetActor())
		}
		actions = append(actions, e.GetAction())
	}
	if got := strings.Join(actions, ","); got != "capacity_override,resume,drain,set_policy,set_weight" {
		t.Fatalf("audit: %s", got)
	}
	_, err = op.Audit(ctx, "", 10)
	wantCode(t, "audit without a token", err, dispatch.CodeUnauthenticated, "missing authorization")
}

func TestChangeOf(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		req  proto.Message
		want router.Change
	}{
		{&pb.SetWeightRequest{Pool: "p", Weight: 3}, router.Change{Kind: router.ChangeWeight, Pool: "p", Weight: 3}},
		{&pb.DrainRequest{Pool: "p", DryRun: true, Force: true}, router.Change{Kind: router.ChangeDrain, Pool: "p", DryRun: true, Force: true}},
		{&pb.ResumeRequest{Pool: "p"}, router.Change{Kind: router.ChangeResume, Pool: "p"}},
		{&pb.SetCapacityOverrideRequest{Pool: "p", Limit: 4, Expires: timestamppb.New(exp)}, router.Change{Kind: router.ChangeCapacityOverride, Pool: "p", Limit: 4, Expires: exp}},
		{&pb.SetCapacityOverrideRequest{Pool: "p", Clear: true}, router.Change{Kind: router.ChangeCapacityOverride, Pool: "p", Clear: true}},
		{&pb.SetPolicyRequest{Policy: "random"}, router.Change{Kind: router.ChangePolicy, Policy: "random"}},
	} {
		got, ok := router.ChangeOf(c.req)
		if !ok || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ChangeOf(%v) = %+v, %t; want %+v", c.req, got, ok, c.want)
		}
	}
	if _, ok := router.ChangeOf(&pb.ListPoolsRequest{}); ok {
		t.Error("ListPoolsRequest read as a change")
	}
}

// next is the watch's next event, or fails the test after 5 s.
func next(t *testing.T, w *router.Watch) *pb.Event {
	t.Helper()
	select {
	case ev := <-w.Events():
		return ev
	case <-w.Done():
		t.Fatalf("watch ended: %v", w.Err())
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return nil
}

func ended(t *testing.T, w *router.Watch) error {
	t.Helper()
	select {
	case <-w.Done():
		return w.Err()
	case <-time.After(5 * time.Second):
		t.Fatal("watch still running after 5s")
	}
	return nil
}

func TestOperatorWatch(t *testing.T) {
	rt := operatorRouter(t)
	op := rt.Operator()
	ctx := context.Background()
	if _, err := op.Watch(ctx, "nope", 0); dispatch.CodeOf(err) != dispatch.CodeUnauthenticated {
		t.Fatalf("unknown token: %v", err)
	}
	if _, err := op.Apply(ctx, "op-token", router.Change{Kind: router.ChangeWeight, Pool: "aws-use1-h100", Weight: 2}); err != nil {
		t.Fatal(err)
	}

	// hello, the recent event, then each new one.
	w, err := op.Watch(ctx, "view-token", 10)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, w); ev.GetKind() != "hello" || !strings.Contains(ev.GetDetail(), "watching replica op-test (policy switchyard") {
		t.Fatalf("first event %v", ev)
	}
	if ev := next(t, w); ev.GetKind() != "weight" || ev.GetActor() != "alice" || ev.GetDetail() != "weight config -> 2" {
		t.Fatalf("recent event %v", ev)
	}
	if _, err := op.Apply(ctx, "op-token", router.Change{Kind: router.ChangeWeight, Pool: "aws-use1-h100", Weight: 3}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, w); ev.GetKind() != "weight" || ev.GetDetail() != "weight 2 -> 3" {
		t.Fatalf("new event %v", ev)
	}
	w.Close()
	if err := ended(t, w); err != nil {
		t.Fatalf("closed watch: %v", err)
	}
	w.Close() // idempotent

	// The caller's context ends it without an error.
	cctx, cancel := context.WithCancel(ctx)
	w, err = op.Watch(cctx, "view-token", 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := ended(t, w); err != nil {
		t.Fatalf("cancelled watch: %v", err)
	}
	w.Close()

	// A reload that removes the token ends it: unauthenticated.
	f := config.Demo()
	f.Admin.Tokens = []config.AdminToken{{Name: "temp", Role: "viewer", SHA256: router.HashToken("temp-token")}}
	if err := rt.Reload(f); err != nil {
		t.Fatal(err)
	}
	w, err = op.Watch(ctx, "temp-token", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := rt.Reload(config.Demo()); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "revoked", ended(t, w), dispatch.CodeUnauthenticated, "credential revoked by a config reload: unauthenticated: unknown token")

	// The router stopping ends it: unavailable.
	w2, err := op.Watch(ctx, "view-token", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	_ = rt.Close()
	wantCode(t, "router closed", ended(t, w2), dispatch.CodeUnavailable, "router shutting down")
}

func TestOperatorSnapshotAndExplain(t *testing.T) {
	op := operatorRouter(t).Operator()
	if _, err := op.Snapshot("nope"); dispatch.CodeOf(err) != dispatch.CodeUnauthenticated {
		t.Fatalf("snapshot, unknown token: %v", err)
	}
	snap, err := op.Snapshot("view-token")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Region != "us-east-1" || snap.Fleet.GetReplica() != "op-test" || snap.Fleet.GetPolicy() != "switchyard" ||
		snap.Fleet.GetCountingMode() != pb.CountingMode_COUNTING_MODE_LOCAL || len(snap.Fleet.GetPools()) != len(config.Demo().Pools) {
		t.Fatalf("snapshot: region %q, %v", snap.Region, snap.Fleet)
	}

	_, err = op.Explain("view-token", nil)
	wantCode(t, "no request", err, dispatch.CodeInvalid, "request: required")
	_, err = op.Explain("view-token", &pb.GenerateRequest{Model: "nope"})
	wantCode(t, "unknown model", err, dispatch.CodeNotFound, "unknown model")
	_, err = op.Explain("view-token", &pb.GenerateRequest{Model: "llama-3.1-8b", Routing: &pb.RoutingHints{Residency: "mars"}})
	wantCode(t, "bad residency", err, dispatch.CodeInvalid, "request.routing.residency")
	ex, err := op.Explain("view-token", &pb.GenerateRequest{Model: "bge-small"})
	if err != nil {
		t.Fatal(err)
	}
	ranked := 0
	for _, c := range ex.GetCandidates() {
		if c.GetEligible() {
			ranked++
			if c.GetRank() != int32(ranked) {
				t.Errorf("candidate %s ranked %d, want %d", c.GetPool(), c.GetRank(), ranked)
			}
		}
	}
	if ex.GetPolicy() != "switchyard" || ranked != 2 || len(ex.GetCandidates()) != len(config.Demo().Pools) {
		t.Fatalf("explain: %v", ex)
	}
}
