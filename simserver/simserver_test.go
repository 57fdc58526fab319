package simserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/syncbuf"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

const fleetYAML = `models:
  - name: llama-3.3-70b
    max_input_tokens: 8192
    max_output_tokens: 2048
pools:
  - name: aws-h100
    cloud: aws
    region: us-east-1
    accelerator: h100
    models: [llama-3.3-70b]
    endpoints: ["127.0.0.1:0"]
    limits: {max_concurrent: 4}
  - name: gcp-v6e
    cloud: gcp
    region: europe-west4
    accelerator: tpu-v6e
    models: [llama-3.3-70b]
    endpoints: ["127.0.0.1:0"]
    limits: {max_concurrent: 2}
  - name: embedded
    cloud: azure
    region: eastus
    accelerator: b200
    models: [llama-3.3-70b]
    endpoints: [sim]
    limits: {max_concurrent: 2}
sim:
  time_scale: 1000
`

var servingRE = regexp.MustCompile(`(?m)^pool (\S+) .* serving on (\S+)$`)
var controlRE = regexp.MustCompile(`(?m)^control serving on (\S+)$`)

// start runs Run in the background and waits for it to announce addrs.
func start(t *testing.T, args []string, pools int) (addrs map[string]string, control string, out *syncbuf.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = &syncbuf.Buffer{}
	errOut := &syncbuf.Buffer{}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, args, out, errOut) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("run did not return after cancel")
		}
	})
	started := testwait.Until(5*time.Second, func() bool {
		s := out.String()
		if m := servingRE.FindAllStringSubmatch(s, -1); len(m) == pools && controlRE.MatchString(s) {
			addrs = map[string]string{}
			for _, x := range m {
				addrs[x[1]] = x[2]
			}
			control = controlRE.FindStringSubmatch(s)[1]
			return true
		}
		select {
		case err := <-done:
			t.Fatalf("run ended early: %v\nstdout:\n%s\nstderr:\n%s", err, s, errOut.String())
		default:
		}
		return false
	})
	if !started {
		t.Fatalf("servers did not start; stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
	return addrs, control, out
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestRunServesConfigPools(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(cfg, []byte(fleetYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs, control, _ := start(t, []string{"--config", cfg, "--control-listen", "127.0.0.1:0", "--time-scale", "100000", "--log-level", "warn"}, 2)
	if _, ok := addrs["embedded"]; ok || addrs["aws-h100"] == "" || addrs["gcp-v6e"] == "" {
		t.Fatalf("served %v, want the two host:port pools", addrs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn := dial(t, addrs["gcp-v6e"])
	inf := pb.NewInferenceClient(conn)
	req := &pb.GenerateRequest{Model: "llama-3.3-70b", Prompt: "hello simulator", MaxTokens: 20}
	resp, err := inf.Generate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Route.GetPool() != "gcp-v6e" || resp.Route.GetAccelerator() != "tpu-v6e" || resp.Route.GetRegion() != "europe-west4" ||
		backends.EstimateTokens(resp.Text) != 20 {
		t.Fatalf("response %v", resp)
	}
	stream, err := inf.GenerateStream(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	tokens := 0
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		tokens += int(c.Tokens)
	}
	if tokens != 20 {
		t.Fatalf("streamed %d tokens", tokens)
	}
	_, err = inf.Generate(ctx, &pb.GenerateRequest{Model: "llama-3.3-70b", Prompt: "x", MaxTokens: 4096})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("over model limit: %v", err)
	}

	// Fault injection through the control address reaches the pool and its health.
	ctl := pb.NewSimControlClient(dial(t, control))
	if _, err := ctl.InjectFault(ctx, &pb.InjectFaultRequest{Fault: &pb.Fault{Pool: "gcp-v6e", Outage: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := inf.Generate(ctx, req); status.Code(err) != codes.Unavailable {
		t.Fatalf("during outage: %v", err)
	}
	hc := healthpb.NewHealthClient(conn)
	h, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "switchyard.v1.Inference"})
	if err != nil || h.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health during outage %v %v", h, err)
	}
	st, err := ctl.SimStats(ctx, &pb.SimStatsRequest{})
	if err != nil || len(st.Pools) != 2 || st.Pools[1].Pool != "gcp-v6e" || st.Pools[1].Served != 2 || st.Pools[1].Failed != 1 {
		t.Fatalf("stats %v %v", st, err)
	}
	if _, err := ctl.ClearFaults(ctx, &pb.ClearFaultsRequest{}); err != nil {
		t.Fatal(err)
	}
	h, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "switchyard.v1.Inference"})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after clear %v %v", h, err)
	}
	// The other pool is served too, with SimControl on its own address.
	other := pb.NewInferenceClient(dial(t, addrs["aws-h100"]))
	if r, err := other.Generate(ctx, req); err != nil || r.Route.GetPool() != "aws-h100" {
		t.Fatalf("aws-h100: %v %v", r, err)
	}
}

func TestRunWithPoolFlags(t *testing.T) {
	addrs, _, out := start(t, []string{"--pool", "solo=trn3:3@127.0.0.1:0", "--control-listen", "127.0.0.1:0", "--time-scale", "100000"}, 1)
	if !strings.Contains(out.String(), "pool solo (trn3, batch 3, queue 12") {
		t.Fatalf("announcement %q", out.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := pb.NewInferenceClient(dial(t, addrs["solo"])).Generate(ctx, &pb.GenerateRequest{Model: "any-8b", Prompt: "p", MaxTokens: 3})
	if err != nil || r.Usage.GetOutputTokens() != 3 {
		t.Fatalf("%v %v", r, err)
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(cfg, []byte(fleetYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{},
		{"--pool", "x"},
		{"--pool", "x=h100:abc@127.0.0.1:0"},
		{"--pool", "x=h100:4"},
		{"--pool", "x=quantum:4@127.0.0.1:0"},
		{"--pool", "x=h100:4@127.0.0.1:0", "--pool", "x=h200:4@127.0.0.1:0"},
		{"--config", cfg, "--pools", "nope"},
		{"--config", cfg, "--pools", "embedded"},
		{"--config", filepath.Join(t.TempDir(), "missing.yaml")},
		{"--pools", "aws-h100"},
		{"--pool", "x=h100:4@127.0.0.1:0", "--log-level", "loud"},
		{"--time-scale", "-1", "--pool", "x=h100:4@127.0.0.1:0"},
		{"stray"},
	} {
		var out, errOut bytes.Buffer
		if err := Run(context.Background(), args, &out, &errOut); err == nil {
			t.Errorf("Run(%q) succeeded", args)
		}
	}
}

func TestRunPrintsProfiles(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"--profiles"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "| trn2 |") {
		t.Fatalf("profiles output %q", out.String())
	}
}

// ExitCode is what the process exits with: 2 and the error on stderr for a
// failed Run, the usage alone (already printed by the flag package) for
// --help, 0 for success.
func TestExitCode(t *testing.T) {
	var errOut bytes.Buffer
	err := Run(context.Background(), []string{"--pool", "x"}, io.Discard, &errOut)
	if got := ExitCode(err, &errOut); got != 2 {
		t.Errorf("ExitCode(bad --pool) = %d, want 2", got)
	}
	if !strings.Contains(errOut.String(), "\nswitchyard-sim: invalid value \"x\" for flag -pool: --pool \"x\": missing NAME=") {
		t.Errorf("stderr after a bad --pool: %q", errOut.String())
	}

	errOut.Reset()
	err = Run(context.Background(), []string{"-h"}, io.Discard, &errOut)
	if got := ExitCode(err, &errOut); got != 2 {
		t.Errorf("ExitCode(-h) = %d, want 2", got)
	}
	if s := errOut.String(); !strings.Contains(s, "-control-listen") || strings.Contains(s, "\nswitchyard-sim: ") {
		t.Errorf("stderr after -h: want the usage once and no error line, got %q", s)
	}

	if got := ExitCode(nil, &errOut); got != 0 {
		t.Errorf("ExitCode(nil) = %d, want 0", got)
	}
}
