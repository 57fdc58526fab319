package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// startWithMetrics runs the router on the demo fleet with --metrics-listen
// on a free port and returns the gRPC address and the metrics URL.
func startWithMetrics(t *testing.T) (addr, metricsURL string) {
	t.Helper()
	addr, metricsURL, _ = startMetricsRouter(t, io.Discard, "--sim-time-scale", "50")
	return addr, metricsURL
}

// startMetricsRouter calls Run with --metrics-listen on a free port and
// args, copies everything Run writes to stdout into tee, and returns the
// gRPC address, the metrics URL and a stop function that cancels Run and
// returns its error (also called at cleanup).
func startMetricsRouter(t *testing.T, tee io.Writer, args ...string) (addr, metricsURL string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := Run(ctx, append([]string{"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
			"--console-listen", "off", "--log-level", "warn"}, args...), io.MultiWriter(pw, tee), io.Discard)
		pw.Close()
		done <- err
	}()
	listenRe := regexp.MustCompile(`listening on (\S+)`)
	metricsRe := regexp.MustCompile(`metrics on (\S+)`)
	sc := bufio.NewScanner(pr)
	for addr == "" && sc.Scan() {
		if m := metricsRe.FindStringSubmatch(sc.Text()); m != nil {
			metricsURL = m[1]
		}
		if m := listenRe.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if addr == "" || metricsURL == "" {
		cancel()
		t.Fatalf("router did not start (addr %q, metrics %q): %v", addr, metricsURL, <-done)
	}
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = errors.New("Run did not return")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return addr, metricsURL, stop
}

func TestMetricsEndpointAfterRealCalls(t *testing.T) {
	addr, url := startWithMetrics(t)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	client := pb.NewInferenceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := &pb.GenerateRequest{Model: "llama-3.1-8b", Prompt: "count the switchyards", MaxTokens: 8, Routing: &pb.RoutingHints{CallerRegion: "us-east-1"}}
	for range 2 {
		if _, err := client.Generate(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	s, err := client.GenerateStream(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := s.Recv(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	text := string(body)
	sum := func(name string, labels ...string) (n int) {
		for line := range strings.SplitSeq(text, "\n") {
			rest, ok := strings.CutPrefix(line, name+"{")
			if !ok {
				continue
			}
			all := true
			for _, l := range labels {
				all = all && strings.Contains(rest, l)
			}
			if all {
				var v float64
				if _, err := fmt.Sscan(rest[strings.LastIndex(rest, " ")+1:], &v); err == nil {
					n += int(v)
				}
			}
		}
		return n
	}
	model := `gen_ai_request_model="llama-3.1-8b"`
	checks := []struct {
		name   string
		labels []string
		want   int
	}{
		{"switchyard_requests_total", []string{model, `rpc="generate"`, `status="OK"`}, 2},
		{"switchyard_requests_total", []string{model, `rpc="generate_stream"`, `status="OK"`}, 1},
		{"switchyard_request_duration_seconds_count", []string{model, `status="OK"`}, 3},
		{"gen_ai_server_time_to_first_token_seconds_count", []string{model}, 1},
		{"gen_ai_server_time_per_output_token_seconds_count", []string{model}, 1},
		{"gen_ai_client_token_usage_sum", []string{model, `gen_ai_token_type="output"`}, 24},
		{"switchyard_attempts_total", []string{`outcome="ok"`}, 3},
		{"switchyard_capacity_acquire_duration_seconds_count", []string{`result="ok"`}, 3},
		{"switchyard_capacity_mode", []string{`mode="local"`}, 1},
		{"switchyard_pool_limit", []string{`pool="aws-use1-trn2"`, `cloud="aws"`, `region="us-east-1"`, `accelerator="trn2"`}, 64},
		{"switchyard_pool_healthy", nil, 8},
		{"switchyard_pool_drained", nil, 0},
		{"rpc_server_call_duration_seconds_count", []string{`rpc_method="switchyard.v1.Inference/Generate"`, `rpc_response_status_code="OK"`, `rpc_system_name="grpc"`}, 2},
		{"rpc_server_call_duration_seconds_count", []string{`rpc_method="switchyard.v1.Inference/GenerateStream"`, `rpc_response_status_code="OK"`}, 1},
		{"rpc_server_call_duration_seconds_count", []string{`rpc_method="grpc.health.v1.Health/Check"`}, 0}, // probes are not measured
	}
	for _, c := range checks {
		if got := sum(c.name, c.labels...); got != c.want {
			t.Errorf("%s{%s} = %d, want %d", c.name, strings.Join(c.labels, ","), got, c.want)
		}
	}
	for _, name := range []string{"switchyard_pool_in_flight{", "switchyard_pool_headroom{", "switchyard_pool_ejected{", "switchyard_queue_length", "go_goroutines"} {
		if !strings.Contains(text, "\n"+name) {
			t.Errorf("no %s series", name)
		}
	}
	if t.Failed() {
		t.Log(text)
	}
}

func TestMetricsListenOffAndBadExporter(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
	err := Run(context.Background(), []string{"--listen", "127.0.0.1:0", "--metrics-listen", "off", "--console-listen", "off"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "OTEL_TRACES_EXPORTER") {
		t.Fatalf("want an OTEL_TRACES_EXPORTER error, got %v", err)
	}
}
