package sim

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

func TestHostFaultsAndStats(t *testing.T) {
	h := NewHost()
	a := newPool(t, Options{Name: "a", TimeScale: fast})
	b := newPool(t, Options{Name: "b", Accelerator: "trn2", TimeScale: fast})
	h.Add(a)
	h.Add(b)
	ctx := context.Background()

	resp, err := h.InjectFault(ctx, &pb.InjectFaultRequest{Fault: &pb.Fault{Slowdown: 2}})
	if err != nil || len(resp.Pools) != 2 || resp.Pools[0] != "a" || resp.Pools[1] != "b" {
		t.Fatalf("inject all: %v %v", resp, err)
	}
	if _, err := h.InjectFault(ctx, &pb.InjectFaultRequest{Fault: &pb.Fault{Pool: "a", Outage: true}}); err != nil {
		t.Fatal(err)
	}
	if a.Fault().GetSlowdown() != 0 || !a.Fault().GetOutage() || b.Fault().GetSlowdown() != 2 {
		t.Fatalf("faults a=%v b=%v (a fault replaces, b untouched)", a.Fault(), b.Fault())
	}
	_, err = h.InjectFault(ctx, &pb.InjectFaultRequest{Fault: &pb.Fault{Pool: "zzz"}})
	wantCode(t, err, codes.NotFound)
	_, err = h.InjectFault(ctx, &pb.InjectFaultRequest{Fault: &pb.Fault{ErrorRate: 3}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.InjectFault(ctx, &pb.InjectFaultRequest{})
	wantCode(t, err, codes.InvalidArgument)

	st, err := h.SimStats(ctx, &pb.SimStatsRequest{})
	if err != nil || len(st.Pools) != 2 || st.Pools[0].Pool != "a" || !st.Pools[0].Fault.Outage || st.Pools[1].Accelerator != "trn2" {
		t.Fatalf("stats %v %v", st, err)
	}
	if _, err := h.ClearFaults(ctx, &pb.ClearFaultsRequest{Pool: "a"}); err != nil {
		t.Fatal(err)
	}
	if isFaulty(a.Fault()) || !isFaulty(b.Fault()) {
		t.Fatal("clear one pool")
	}
	if _, err := h.ClearFaults(ctx, &pb.ClearFaultsRequest{}); err != nil || isFaulty(b.Fault()) {
		t.Fatal("clear all", err)
	}
	_, err = h.ClearFaults(ctx, &pb.ClearFaultsRequest{Pool: "zzz"})
	wantCode(t, err, codes.NotFound)
}

func TestHostReplaceCarriesFaultAndCloseRemoves(t *testing.T) {
	h := NewHost()
	old := newPool(t, Options{Name: "p", TimeScale: fast})
	h.Add(old)
	if err := old.SetFault(&pb.Fault{CapacityLoss: 0.5}); err != nil {
		t.Fatal(err)
	}
	repl := newPool(t, Options{Name: "p", TimeScale: fast})
	if !h.Add(repl) {
		t.Fatal("Add did not report the replacement")
	}
	if repl.Fault().GetCapacityLoss() != 0.5 {
		t.Fatal("fault lost on replacement")
	}
	_ = old.Close() // the old pool closing must not unhost the new one
	if got, ok := h.Pool("p"); !ok || got != repl {
		t.Fatal("replacement unhosted by the old pool's Close")
	}
	_ = repl.Close()
	if _, ok := h.Pool("p"); ok || len(h.Pools()) != 0 {
		t.Fatal("closed pool still hosted")
	}
}

func TestRegisterBuildsHostedPools(t *testing.T) {
	r := backends.NewRegistry()
	h := NewHost()
	Register(r, RegistryOptions{Host: h, TimeScale: fast, QueueLength: 3})
	b, err := r.New(AdapterName, backends.Spec{
		Pool: "gcp-tpu", Accelerator: "tpu-v6e", MaxConcurrent: 5, Endpoints: []string{"sim"},
		Options: map[string]string{"models": "llama-3.1-8b, llama-3.3-70b", "cloud": "gcp", "region": "us-central1", "early_stop_rate": "0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if !b.Capabilities().Continuation {
		t.Fatal("sim must support continuation")
	}
	p, ok := h.Pool("gcp-tpu")
	if !ok || backends.Backend(p) != b {
		t.Fatal("pool not hosted")
	}
	o := p.Options()
	if o.MaxBatch != 5 || o.QueueLength != 3 || o.TimeScale != fast || len(o.Models) != 2 || o.Cloud != "gcp" {
		t.Fatalf("options %+v", o)
	}
	resp, err := b.Generate(context.Background(), &pb.GenerateRequest{Model: "llama-3.1-8b", Prompt: "hi", MaxTokens: 3})
	if err != nil || resp.Route.GetRegion() != "us-central1" || resp.Usage.GetOutputTokens() != 3 {
		t.Fatalf("generate %v %v", resp, err)
	}
	for _, spec := range []backends.Spec{
		{Pool: "x", Accelerator: "h100", Options: map[string]string{"time_scal": "2"}},
		{Pool: "x", Accelerator: "h100", Options: map[string]string{"time_scale": "fast"}},
		{Pool: "x", Accelerator: "h100", Options: map[string]string{"time_scale": "-1"}},
		{Pool: "x", Accelerator: "h100", Options: map[string]string{"queue_length": "-1"}},
		{Pool: "x", Accelerator: "quantum-1"},
	} {
		if _, err := r.New(AdapterName, spec); err == nil {
			t.Errorf("spec %+v accepted", spec)
		}
	}
	if _, ok := h.Pool("x"); ok {
		t.Fatal("failed build was hosted")
	}
}

// serve starts a real gRPC server on a free loopback port exposing p as
// Inference and h as SimControl, and returns a client connection.
func serve(t *testing.T, p *Pool, h *Host) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterInferenceServer(s, NewInferenceServer(p))
	pb.RegisterSimControlServer(s, h)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestGRPCServer(t *testing.T) {
	p := newPool(t, Options{Name: "azure-b200", Accelerator: "b200", MaxBatch: 8, TimeScale: fast,
		Models: []Model{{Name: "llama-3.3-70b", MaxInputTokens: 8192, MaxOutputTokens: 2048}}, Cloud: "azure", Region: "eastus"})
	h := NewHost()
	h.Add(p)
	conn := serve(t, p, h)
	inf := pb.NewInferenceClient(conn)
	ctl := pb.NewSimControlClient(conn)
	ctx := context.Background()

	resp, err := inf.Generate(ctx, req("over the wire", 25))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Usage.GetOutputTokens() != 25 || backends.EstimateTokens(resp.Text) != 25 || resp.Route.GetPool() != "azure-b200" {
		t.Fatalf("unary %v", resp)
	}

	stream, err := inf.GenerateStream(ctx, req("over the wire", 25))
	if err != nil {
		t.Fatal(err)
	}
	text, tokens := "", 0
	var last *pb.GenerateChunk
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		text += c.Text
		tokens += int(c.Tokens)
		last = c
	}
	if text != resp.Text || tokens != 25 || last.GetUsage().GetOutputTokens() != 25 || last.FinishReason != pb.FinishReason_FINISH_REASON_LENGTH {
		t.Fatalf("stream text %q tokens %d last %v", text, tokens, last)
	}

	models, err := inf.ListModels(ctx, &pb.ListModelsRequest{})
	if err != nil || len(models.Models) != 1 || models.Models[0].MaxOutputTokens != 2048 || models.Models[0].Placements[0].Accelerator != "b200" {
		t.Fatalf("models %v %v", models, err)
	}

	bad := req("x", 5)
	bad.Model = "nope"
	_, err = inf.Generate(ctx, bad)
	wantCode(t, err, codes.NotFound)

	if _, err := ctl.InjectFault(ctx, &pb.InjectFaultRequest{Fault: &pb.Fault{Outage: true}}); err != nil {
		t.Fatal(err)
	}
	_, err = inf.Generate(ctx, req("x", 5))
	wantCode(t, err, codes.Unavailable)
	s, err := stream2err(inf.GenerateStream(ctx, req("x", 5)))
	wantCode(t, err, codes.Unavailable)
	_ = s
	st, err := ctl.SimStats(ctx, &pb.SimStatsRequest{})
	if err != nil || st.Pools[0].Served != 2 || st.Pools[0].Failed != 2 || st.Pools[0].MaxBatch != 8 {
		t.Fatalf("stats %v %v", st, err)
	}
	if _, err := ctl.ClearFaults(ctx, &pb.ClearFaultsRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := inf.Generate(ctx, req("x", 5)); err != nil {
		t.Fatal(err)
	}
}

// stream2err drains a client stream and returns the chunks and the final error.
func stream2err(s grpc.ServerStreamingClient[pb.GenerateChunk], err error) ([]*pb.GenerateChunk, error) {
	if err != nil {
		return nil, err
	}
	var out []*pb.GenerateChunk
	for {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, c)
	}
}
