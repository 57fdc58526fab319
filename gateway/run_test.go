package gateway

import (
	"bufio"
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
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/config"
)

// startRouter calls Run on a free port and returns the address and a stop
// function that cancels ctx and returns Run's error.
func startRouter(t testing.TB, args ...string) (string, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := Run(ctx, append([]string{"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-level", "warn", "--metrics-listen", "off", "--console-listen", "off"}, args...), pw, io.Discard)
		pw.Close()
		done <- err
	}()
	addrRe := regexp.MustCompile(`listening on (\S+)`)
	sc := bufio.NewScanner(pr)
	addr := ""
	for sc.Scan() {
		if m := addrRe.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if addr == "" {
		cancel()
		t.Fatalf("router did not start: %v", <-done)
	}
	var stopped bool
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("Run did not return")
		}
	}
	t.Cleanup(func() { _ = stop() })
	return addr, stop
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func TestDemoFleetServesWithReflectionAndHealth(t *testing.T) {
	addr, stop := startRouter(t, "--sim-time-scale", "50")
	cc := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Reflection lists the Inference service (what grpcurl relies on).
	rc, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var services []string
	for _, s := range r.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	for _, want := range []string{"switchyard.v1.Inference", "switchyard.v1.Admin", "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(services, ","), want) {
			t.Fatalf("reflection lists %v, missing %s", services, want)
		}
	}
	h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "switchyard.v1.Inference"})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v", h, err)
	}

	inf := pb.NewInferenceClient(cc)
	models, err := inf.ListModels(ctx, &pb.ListModelsRequest{})
	if err != nil || len(models.Models) == 0 {
		t.Fatalf("ListModels %v %v", models, err)
	}
	m := models.Models[0]
	clouds := map[string]bool{}
	for _, p := range m.Placements {
		clouds[p.Cloud] = true
	}
	if len(clouds) != 3 {
		t.Fatalf("model %s served from clouds %v, want aws, gcp and azure", m.Name, clouds)
	}
	resp, err := inf.Generate(ctx, &pb.GenerateRequest{Model: m.Name, Prompt: "hello", MaxTokens: 5, Routing: &pb.RoutingHints{CallerRegion: "westeurope"}})
	if err != nil || resp.Route.Region != "westeurope" {
		t.Fatalf("Generate: %v %v", resp.GetRoute(), err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run returned %v after cancel", err)
	}
}

func TestShutdownLetsInFlightStreamsFinish(t *testing.T) {
	addr, stop := startRouter(t, "--sim-time-scale", "2", "--shutdown-timeout", "20s")
	inf := pb.NewInferenceClient(dial(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := inf.GenerateStream(ctx, &pb.GenerateRequest{Model: "llama-3.1-8b", Prompt: "a long answer please", MaxTokens: 200})
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	tokens := first.Tokens
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }() // SIGTERM equivalent while the stream runs
	var last *pb.GenerateChunk
	for {
		ch, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("in-flight stream cut by shutdown after %d tokens: %v", tokens, err)
		}
		tokens += ch.Tokens
		last = ch
	}
	if tokens != 200 || last.GetRoute().GetPool() == "" {
		t.Fatalf("stream ended with %d tokens, route %v", tokens, last.GetRoute())
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

func TestBadConfigAndFlagsAreClearErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "fleet.yaml")
	src := strings.Replace(string(config.DemoYAML()), "max_concurrent: 64", "max_concurrent: -1", 1)
	if err := os.WriteFile(bad, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge.yaml") // the outside probe's 2^62: its 4-bytes-a-token receive limit overflowed
	if err := os.WriteFile(huge, []byte(strings.Replace(string(config.DemoYAML()), "max_input_tokens: 8192", "max_input_tokens: 4611686018427387904", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--config", bad}, `pool "aws-use1-trn2": limits.max_concurrent`},
		{[]string{"--config", huge}, `max_input_tokens: must be at most 16777216`},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, "missing.yaml"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--policy", "fastest"}, "unknown policy"},
		{[]string{"--listen", "256.0.0.1:1"}, "listen"},
		{[]string{"--tls-cert", "x.pem"}, "--tls-key"},
		{[]string{"stray"}, "unexpected arguments"},
		{[]string{"--stream-workers", "-1"}, "stream-workers"},
		{[]string{"--debug-listen", "0.0.0.0:0"}, "loopback only"},
		{[]string{"--debug-listen", "router.internal:0"}, "loopback only"},
		{[]string{"--stream-workers", "100000"}, "stream-workers"},
		{[]string{"--max-streams-per-connection", "0"}, "max-streams-per-connection"},
	}
	for _, c := range cases {
		err := Run(context.Background(), append([]string{"--metrics-listen", "off"}, c.args...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Run %v: got %v, want an error containing %q", c.args, err, c.want)
		}
	}
}

// --stream-workers 0 (a goroutine per call) and a small pool both serve.
func TestStreamWorkersSettingsServe(t *testing.T) {
	for _, n := range []string{"0", "2"} {
		addr, stop := startRouter(t, "--sim-time-scale", "50", "--stream-workers", n)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		client := pb.NewInferenceClient(dial(t, addr))
		for range 4 { // more calls than a pool of 2 has workers, one after another
			if _, err := client.Generate(ctx, &pb.GenerateRequest{Model: "llama-3.1-8b", Prompt: "hi", MaxTokens: 2}); err != nil {
				t.Errorf("--stream-workers %s: %v", n, err)
			}
		}
		cancel()
		if err := stop(); err != nil {
			t.Errorf("--stream-workers %s: Run: %v", n, err)
		}
	}
}

// TestLogDurationsAreReadable: a duration in a log line reads "30s", in
// JSON and text logs alike (JSON wrote integer nanoseconds).
func TestLogDurationsAreReadable(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var b strings.Builder
		log, err := newLogger(&b, "info", format)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("stream silent", "timeout", 30*time.Second, "took", 1500*time.Microsecond)
		out := b.String()
		if !strings.Contains(out, "30s") || !strings.Contains(out, "1.5ms") || strings.Contains(out, "30000000000") {
			t.Errorf("%s log: %s", format, out)
		}
	}
}

// ExitCode is what the process exits with: 0 for success and for -h (the
// usage alone), 1 with "switchyard: " and the error for a failed Run.
func TestExitCode(t *testing.T) {
	var usage, errOut strings.Builder
	err := Run(context.Background(), []string{"-h"}, io.Discard, &usage)
	if got := ExitCode(err, &errOut); got != 0 || errOut.Len() != 0 || !strings.Contains(usage.String(), "-shutdown-timeout") {
		t.Errorf("-h: ExitCode %d, error output %q, usage %q; want 0, none and the flags", got, errOut.String(), usage.String())
	}
	err = Run(context.Background(), []string{"--log-level", "loud"}, io.Discard, io.Discard)
	if got := ExitCode(err, &errOut); got != 1 || !strings.HasPrefix(errOut.String(), "switchyard: --log-level \"loud\"") {
		t.Errorf("bad --log-level: ExitCode %d, stderr %q; want 1 and the error", got, errOut.String())
	}
	if got := ExitCode(nil, io.Discard); got != 0 {
		t.Errorf("ExitCode(nil) = %d, want 0", got)
	}
}
