package router_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/grpcnative"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/capacity/redistest"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/control"
	"github.com/switchyard-dev/switchyard/router/grpcedge"
	"github.com/switchyard-dev/switchyard/router/routertest"
)

var adminTokens = []config.AdminToken{
	{Name: "ops", Role: "operator", SHA256: router.HashToken("op-secret")},
	{Name: "view", Role: "viewer", SHA256: router.HashToken("view-secret")},
}

func bearer(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// replica is one router process-equivalent: its own gRPC server and clients.
type replica struct {
	rt    *router.Server
	inf   pb.InferenceClient
	admin pb.AdminClient
}

func fleetYAML(pools []*simPool) string {
	var b strings.Builder
	b.WriteString("models:\n  - {name: m, max_input_tokens: 1000, max_output_tokens: 500}\npools:\n")
	for _, p := range pools {
		b.WriteString("  - {name: " + p.name + ", cloud: " + p.cloud + ", region: " + p.region + ", accelerator: " + p.accel +
			", models: [m], endpoints: [\"" + p.addr + "\"], limits: {max_concurrent: " + itoa(p.limit) + "}}\n")
	}
	b.WriteString("routing:\n  queue_max_wait: 300ms\n  health_check_interval: 100ms\n")
	return b.String()
}

func itoa(n int) string { return strconv.Itoa(n) }

func startReplica(t testing.TB, fleet *config.Fleet, store capacity.Store, ctl control.Store) *replica {
	t.Helper()
	return startReplicaWith(t, router.Options{Fleet: fleet, Store: store, Control: ctl})
}

// startReplicaWith serves a router built from o on loopback (Admin too,
// routertest.Start); unset, its admin tokens are the tests'.
func startReplicaWith(t testing.TB, o router.Options) *replica {
	t.Helper()
	if o.AdminTokens == nil {
		o.AdminTokens = adminTokens
	}
	r := routertest.Start(t, routertest.Options{Router: o})
	return &replica{rt: r.Server, inf: r.Inference, admin: r.Admin}
}

func twoReplicasOnRedis(t *testing.T, pools []*simPool) (*replica, *replica) {
	srv := redistest.StartServer(t)
	for _, p := range pools {
		startSimPool(t, p)
	}
	fleet, err := config.Parse([]byte(fleetYAML(pools)), "admin test fleet")
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string) *replica {
		store, err := capacity.NewRedis(capacity.RedisOptions{URL: srv.URL(), Replica: name, LeaseTTL: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		t.Cleanup(func() { _ = c.Close() })
		return startReplica(t, fleet, store, control.NewRedis(control.RedisOptions{Client: c, Reread: 500 * time.Millisecond}))
	}
	return mk("r1"), mk("r2")
}

func drainedOn(t *testing.T, r *replica, pool string) bool {
	t.Helper()
	resp, err := r.admin.ListPools(bearer(context.Background(), "view-secret"), &pb.ListPoolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Pools {
		if p.Name == pool {
			return p.Drained
		}
	}
	t.Fatalf("pool %s not listed", pool)
	return false
}

func weightOf(t *testing.T, r *replica, pool string) float64 {
	t.Helper()
	resp, err := r.admin.ListPools(bearer(context.Background(), "view-secret"), &pb.ListPoolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Pools {
		if p.Name == pool {
			return p.Weight
		}
	}
	t.Fatalf("pool %s not listed", pool)
	return 0
}

func TestAdminChangeReachesEveryReplicaWithinASecond(t *testing.T) {
	pools := []*simPool{
		{name: "a", cloud: "aws", region: "us-east-1", accel: "h100", limit: 4},
		{name: "b", cloud: "gcp", region: "us-east4", accel: "h100", limit: 4},
	}
	r1, r2 := twoReplicasOnRedis(t, pools)
	ctx := bearer(ctxT(t, 10*time.Second), "op-secret")
	start := time.Now()
	if _, err := r1.admin.SetWeight(ctx, &pb.SetWeightRequest{Pool: "a", Weight: 4}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "replica 2 sees weight 4", func() bool { return weightOf(t, r2, "a") == 4 })
	if took := time.Since(start); took > time.Second {
		t.Fatalf("replica 2 saw weight 4 after %v, want within 1s", took)
	}
	// The policy switch reaches the other replica too.
	if _, err := r1.admin.SetPolicy(ctx, &pb.SetPolicyRequest{Policy: "least_request"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "replica 2 switches to least_request", func() bool { return r2.rt.PolicyName() == "least_request" })
	audit, err := r2.admin.ListAudit(ctx, &pb.ListAuditRequest{Limit: 10})
	if err != nil || len(audit.Entries) != 2 || audit.Entries[1].Actor != "ops" || audit.Entries[1].Before != "1" || audit.Entries[1].After != "4" {
		t.Fatalf("audit %v %v", audit, err)
	}
}

func TestDrainedPoolGetsNoNewRequestsWhileInFlightFinish(t *testing.T) {
	pools := []*simPool{
		{name: "a", cloud: "aws", region: "us-east-1", accel: "h100", limit: 8, timeScale: 1},
		{name: "b", cloud: "gcp", region: "us-east4", accel: "h100", limit: 8},
	}
	r1, r2 := twoReplicasOnRedis(t, pools)
	ctx := ctxT(t, 20*time.Second)
	// A long call lands on "a" (the caller's region).
	var wg sync.WaitGroup
	var longErr error
	var longPool string
	wg.Add(1)
	go func() {
		defer wg.Done()
		resp, err := r1.inf.Generate(ctx, req("us-east-1", 250)) // a few seconds of decode
		longErr, longPool = err, resp.GetRoute().GetPool()
	}()
	testwait.For(t, 5*time.Second, "the long call running on a", func() bool { return pools[0].pool.Stats().Running > 0 })
	op := bearer(ctx, "op-secret")
	dry, err := r1.admin.Drain(op, &pb.DrainRequest{Pool: "a", DryRun: true})
	if err != nil || dry.Applied || !dry.FleetHasHeadroom || len(dry.Targets) != 1 || dry.Targets[0].Pools[0] != "b" {
		t.Fatalf("dry run: %v %v", dry, err)
	}
	if _, err := r1.admin.Drain(op, &pb.DrainRequest{Pool: "a"}); err != nil {
		t.Fatal(err)
	}
	// Within a second every replica has it.
	if took := eventually(t, 3*time.Second, "the drain reaches replica 2", func() bool { return drainedOn(t, r2, "a") }); took > time.Second {
		t.Fatalf("drain reached the other replica after %v, want within a second", took)
	}
	servedBefore := pools[0].pool.Stats().Served
	for i := 0; i < 10; i++ {
		for _, r := range []*replica{r1, r2} {
			resp, err := r.inf.Generate(ctx, req("us-east-1", 4))
			if err != nil || resp.GetRoute().GetPool() != "b" {
				t.Fatalf("after drain: %v %v, want pool b", resp.GetRoute(), err)
			}
		}
	}
	wg.Wait()
	if longErr != nil || longPool != "a" {
		t.Fatalf("in-flight call on the drained pool: %v on %s, want it to finish on a", longErr, longPool)
	}
	if served := pools[0].pool.Stats().Served; served != servedBefore+1 {
		t.Fatalf("drained pool served %d new calls", served-servedBefore-1)
	}
	if _, err := r2.admin.Resume(op, &pb.ResumeRequest{Pool: "a"}); err != nil {
		t.Fatal(err)
	}
}

func TestAdminAuth(t *testing.T) {
	pools := usEU()
	for _, p := range pools {
		startSimPool(t, p)
	}
	fleet, err := config.Parse([]byte(fleetYAML(pools)), "auth fleet")
	if err != nil {
		t.Fatal(err)
	}
	r := startReplica(t, fleet, nil, nil)
	ctx := ctxT(t, 5*time.Second)
	cases := []struct {
		name string
		ctx  context.Context
		call func(ctx context.Context) error
		code codes.Code
	}{
		{"no token", ctx, func(c context.Context) error { _, err := r.admin.ListPools(c, &pb.ListPoolsRequest{}); return err }, codes.Unauthenticated},
		{"wrong token", bearer(ctx, "nope"), func(c context.Context) error { _, err := r.admin.ListPools(c, &pb.ListPoolsRequest{}); return err }, codes.Unauthenticated},
		{"viewer reads", bearer(ctx, "view-secret"), func(c context.Context) error { _, err := r.admin.ListPools(c, &pb.ListPoolsRequest{}); return err }, codes.OK},
		{"viewer changes", bearer(ctx, "view-secret"), func(c context.Context) error {
			_, err := r.admin.SetWeight(c, &pb.SetWeightRequest{Pool: "aws-use1", Weight: 2})
			return err
		}, codes.PermissionDenied},
		{"operator changes", bearer(ctx, "op-secret"), func(c context.Context) error {
			_, err := r.admin.SetWeight(c, &pb.SetWeightRequest{Pool: "aws-use1", Weight: 2})
			return err
		}, codes.OK},
		{"unknown pool", bearer(ctx, "op-secret"), func(c context.Context) error {
			_, err := r.admin.Resume(c, &pb.ResumeRequest{Pool: "nope"})
			return err
		}, codes.NotFound},
		{"bad weight", bearer(ctx, "op-secret"), func(c context.Context) error {
			_, err := r.admin.SetWeight(c, &pb.SetWeightRequest{Pool: "aws-use1", Weight: -1})
			return err
		}, codes.InvalidArgument},
		{"watch without token", ctx, func(c context.Context) error {
			s, err := r.admin.WatchEvents(c, &pb.WatchEventsRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.Unauthenticated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := status.Code(c.call(c.ctx)); got != c.code {
				t.Fatalf("got %v, want %v", got, c.code)
			}
		})
	}
}

func TestAdminRefusesAllWithoutTokens(t *testing.T) {
	pools := usEU()
	for _, p := range pools {
		startSimPool(t, p)
	}
	fleet, err := config.Parse([]byte(fleetYAML(pools)), "no tokens")
	if err != nil {
		t.Fatal(err)
	}
	reg := backends.NewRegistry()
	grpcnative.Register(reg, grpcnative.Options{})
	rt, err := router.New(router.Options{Fleet: fleet, Backends: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	_, err = grpcedge.NewAdmin(rt.Operator()).ListPools(metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer anything")), &pb.ListPoolsRequest{})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("got %v, want UNAUTHENTICATED saying the admin API is disabled", err)
	}
}

func TestCapacityOverrideExplainAndWatch(t *testing.T) {
	pools := usEU()
	for _, p := range pools {
		startSimPool(t, p)
	}
	fleet, err := config.Parse([]byte(fleetYAML(pools)), "override fleet")
	if err != nil {
		t.Fatal(err)
	}
	r := startReplica(t, fleet, nil, nil)
	ctx := bearer(ctxT(t, 10*time.Second), "op-secret")
	w, err := r.admin.WatchEvents(ctx, &pb.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := w.Recv(); err != nil || ev.Kind != "hello" {
		t.Fatalf("first event %v %v", ev, err)
	}
	resp, err := r.admin.SetCapacityOverride(ctx, &pb.SetCapacityOverrideRequest{Pool: "aws-use1", Limit: 0})
	if err != nil || resp.Pool.Limit != 0 || resp.Pool.ConfiguredLimit != 4 {
		t.Fatalf("override: %v %v", resp, err)
	}
	ev, err := w.Recv()
	if err != nil || ev.Kind != "capacity_override" || ev.Pool != "aws-use1" || ev.Actor != "ops" {
		t.Fatalf("event %v %v (the actor is the operator token's name)", ev, err)
	}
	ex, err := r.admin.ExplainRoute(ctx, &pb.ExplainRouteRequest{Request: req("us-east-1", 8)})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Candidates[0].Pool != "gcp-usc1" || ex.Candidates[0].Rank != 1 || ex.Candidates[0].Tier != "geography" {
		t.Fatalf("explain first %v", ex.Candidates[0])
	}
	var skipped *pb.Candidate
	for _, c := range ex.Candidates {
		if c.Pool == "aws-use1" {
			skipped = c
		}
	}
	if skipped == nil || skipped.Eligible || !strings.Contains(skipped.Reason, "capacity is zero") {
		t.Fatalf("aws-use1 in explain: %v", skipped)
	}
	// Traffic honours the override.
	g, err := r.inf.Generate(ctx, req("us-east-1", 4))
	if err != nil || g.Route.Pool == "aws-use1" {
		t.Fatalf("call with aws-use1 at zero capacity: %v %v", g.GetRoute(), err)
	}
	if _, err := r.admin.SetCapacityOverride(ctx, &pb.SetCapacityOverrideRequest{Pool: "aws-use1", Clear: true}); err != nil {
		t.Fatal(err)
	}
	if ev, err := w.Recv(); err != nil || !strings.Contains(ev.Detail, "cleared") {
		t.Fatalf("clear event %v %v", ev, err)
	}
}

func TestInvalidReloadLeavesServingUntouched(t *testing.T) {
	f := startFleet(t, fleetOpts{}, usEU()...)
	ctx := ctxT(t, 10*time.Second)
	bad := *f.rt.Fleet()
	bad.Pools = append([]config.Pool(nil), bad.Pools...)
	bad.Pools[0].Limits.MaxConcurrent = -3
	err := f.rt.Reload(&bad)
	if err == nil || !strings.Contains(err.Error(), "max_concurrent") {
		t.Fatalf("invalid reload: %v", err)
	}
	if _, err := f.client.Generate(ctx, req("us-east-1", 4)); err != nil {
		t.Fatalf("serving after a rejected reload: %v", err)
	}
	if f.rt.Fleet().Pools[0].Limits.MaxConcurrent != 4 {
		t.Fatal("running config changed by a rejected reload")
	}
	good := *f.rt.Fleet()
	good.Pools = append([]config.Pool(nil), good.Pools[1:]...) // remove aws-use1
	if err := f.rt.Reload(&good); err != nil {
		t.Fatal(err)
	}
	resp, err := f.client.Generate(ctx, req("us-east-1", 4))
	if err != nil || resp.Route.Pool == "aws-use1" {
		t.Fatalf("after reload without aws-use1: %v %v", resp.GetRoute(), err)
	}
}
