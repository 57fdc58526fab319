package routertest_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends/sim"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/routertest"
)

// Two routers over the same two simulated pools (each on its own gRPC
// server): both serve, their Admin answers the operator token they were
// given, a killed pool fails over to the other, and everything stops at
// cleanup (goleak in TestMain).
func TestClusterOverSimPools(t *testing.T) {
	a := routertest.StartSimPool(t, sim.Options{Name: "a", Accelerator: "h100", MaxBatch: 2})
	b := routertest.StartSimPool(t, sim.Options{Name: "b", Accelerator: "h100", MaxBatch: 2})
	yaml := fmt.Sprintf("models:\n  - {name: m, max_input_tokens: 100, max_output_tokens: 20}\npools:\n"+
		"  - {name: a, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: [%q], limits: {max_concurrent: 2}}\n"+
		"  - {name: b, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: [%q], limits: {max_concurrent: 2}}\n"+
		"routing:\n  policy: round_robin\n", a.Addr, b.Addr)
	tokens := []config.AdminToken{{Name: "op", Role: "operator", SHA256: router.HashToken("op-token")}}
	rs := routertest.StartN(t, 2, func(i int) routertest.Options {
		return routertest.Options{FleetYAML: yaml, Router: router.Options{AdminTokens: tokens}}
	})
	ctx := routertest.Context(t, 20*time.Second)
	served := map[string]int{}
	for _, r := range rs {
		for range 4 {
			resp, err := r.Inference.Generate(ctx, &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 3})
			if err != nil {
				t.Fatal(err)
			}
			served[resp.GetRoute().GetPool()]++
		}
		if _, err := r.Admin.ListPools(ctx, &pb.ListPoolsRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("ListPools without a token: %v, want UNAUTHENTICATED", err)
		}
		resp, err := r.Admin.ListPools(routertest.Bearer(ctx, "op-token"), &pb.ListPoolsRequest{})
		if err != nil || len(resp.GetPools()) != 2 {
			t.Fatalf("ListPools with the operator token: %v %v", resp, err)
		}
	}
	if served["a"] == 0 || served["b"] == 0 {
		t.Fatalf("served %v: round robin over both pools from both routers", served)
	}
	a.Kill()
	for i := range 4 {
		resp, err := rs[0].Inference.Generate(ctx, &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 3})
		if err != nil || resp.GetRoute().GetPool() != "b" {
			t.Fatalf("call %d after a was killed: %v %v, want b", i, resp.GetRoute(), err)
		}
	}
}

// The default router serves the demo fleet from in-process simulated pools
// on its Host; ServeHTTP serves a handler on loopback with its own client.
func TestDemoFleetAndHTTP(t *testing.T) {
	r := routertest.Start(t, routertest.Options{})
	ctx := routertest.Context(t, 20*time.Second)
	resp, err := r.Inference.Generate(ctx, &pb.GenerateRequest{Model: "llama-3.1-8b", Prompt: "hello", MaxTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Host.Pool(resp.GetRoute().GetPool()); !ok {
		t.Fatalf("served by %q, which the router's Host does not run", resp.GetRoute().GetPool())
	}
	web := routertest.ServeHTTP(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, r.Server.PolicyName())
	}), ReadHeaderTimeout: time.Second}, routertest.Listen(t))
	hr, err := web.Client.Get(web.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hr.Body)
	_ = hr.Body.Close()
	if !strings.HasPrefix(web.URL, "http://127.0.0.1:") || string(body) != "switchyard" {
		t.Fatalf("GET %s: %q", web.URL, body)
	}
}
