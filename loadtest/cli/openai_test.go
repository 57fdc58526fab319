package cli

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/openaihttp"
	"github.com/switchyard-dev/switchyard/router/routertest"
)

// startRouterWithHTTP runs a real router on the demo fleet (simulated pools,
// fast) with its gRPC API and its HTTP front door on loopback ports.
func startRouterWithHTTP(t testing.TB, timeScale float64) (grpcAddr, httpURL string) {
	t.Helper()
	r := routertest.Start(t, routertest.Options{TimeScale: timeScale, Router: router.Options{UsageRefresh: 250 * time.Millisecond}}) // the router's default refresh
	h, err := openaihttp.New(openaihttp.Options{Router: r.Server, Logger: routertest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	web := routertest.ServeHTTP(t, openaihttp.NewServer(openaihttp.ServerOptions{Handler: h}), routertest.Listen(t))
	return r.Addr, web.URL
}

// TestProtocolOpenAIComparesWithGRPCInOneReport replays the same slice of
// the Azure trace through gRPC and through the HTTP front door, streamed,
// and checks both runs are whole and comparable in one report.
func TestProtocolOpenAIComparesWithGRPCInOneReport(t *testing.T) {
	grpcAddr, httpURL := startRouterWithHTTP(t, 50)
	jsonPath := filepath.Join(t.TempDir(), "r.json")
	const n = 120
	stdout, stderr, err := runCmd(t, "--target", grpcAddr, "--http-target", httpURL, "--protocol", "grpc,openai",
		"--trace", azureTrace, "--speedup", "400", "--max-requests", "120", "--model", "llama-3.1-8b",
		"--caller-region", "us-east-1", "--no-progress", "--report-json", jsonPath)
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr)
	}
	rep := readReport(t, jsonPath)
	if len(rep.Runs) != 2 || rep.Runs[0].Label != "grpc" || rep.Runs[1].Label != "openai" {
		t.Fatalf("runs %d: %+v", len(rep.Runs), rep.Runs)
	}
	for _, r := range rep.Runs {
		if r.Requests.Sent != n || r.Requests.OK != n || r.SuccessRatio != 1 {
			t.Errorf("%s: requests %+v statuses %v", r.Label, r.Requests, r.Statuses)
		}
		if r.Latency["ttft"].Count != n || r.Latency["e2e"].Count != n || r.Latency["itl"].Count == 0 {
			t.Errorf("%s: latency counts %+v", r.Label, r.Latency)
		}
		// Both transports say when a request left the client.
		if r.Latency["client_wait"].Count != n {
			t.Errorf("%s: client wait measured on %d calls, want %d", r.Label, r.Latency["client_wait"].Count, n)
		}
		var routed int64
		for _, p := range r.Pools {
			routed += p.Requests
			if p.Region == "" || p.Cloud == "" {
				t.Errorf("%s: pool without place %+v", r.Label, p)
			}
		}
		if routed != n {
			t.Errorf("%s: %d calls have a route, want %d", r.Label, routed, n)
		}
	}
	if rep.Runs[1].Config.Protocol != "openai" || rep.Runs[1].Config.Target != httpURL || rep.Runs[0].Config.Protocol != "grpc" {
		t.Errorf("configs %+v / %+v", rep.Runs[0].Config, rep.Runs[1].Config)
	}
	// Two runs: the first gets a warm-up pass, which is not reported.
	if !strings.Contains(stderr, "warm-up (unreported)") {
		t.Errorf("no warm-up before the first of two runs:\n%s", stderr)
	}
	if !strings.Contains(stdout, "grpc") || !strings.Contains(stdout, "openai") {
		t.Errorf("summary lacks the runs:\n%s", stdout)
	}

	// Unary through the front door too.
	_, stderr, err = runCmd(t, "--target", grpcAddr, "--http-target", httpURL, "--protocol", "openai", "--unary",
		"--trace", azureTrace, "--speedup", "400", "--max-requests", "40", "--model", "llama-3.1-8b", "--no-progress",
		"--slo-success", "1", "--timeout", "20s")
	if err != nil {
		t.Fatalf("unary: %v\n%s", err, stderr)
	}
}

func TestProtocolFlagIsChecked(t *testing.T) {
	_, _, err := runCmd(t, "--format", "synthetic", "--protocol", "soap")
	if err == nil || !strings.Contains(err.Error(), "--protocol") {
		t.Fatalf("got %v", err)
	}
	_, _, err = runCmd(t, "--format", "synthetic", "--protocol", "openai", "--http-target", "ftp://x", "--target", "127.0.0.1:1", "--synthetic", "rate=1,duration=1s")
	if err == nil {
		t.Fatal("a bad --http-target was accepted")
	}
}
