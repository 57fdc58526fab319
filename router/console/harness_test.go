package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends/sim"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/console"
	"github.com/switchyard-dev/switchyard/router/routertest"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

func TestMain(m *testing.M) {
	code := m.Run()
	// The tests' HTTP client keeps idle keep-alive connections.
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(
			// go-redis retries a failed dial once a second; after Close it
			// stops at its next try (the degraded-counting test's Redis is down).
			goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Tokens of the test fleet: an operator (alice) and a viewer (dashboards).
const (
	operatorToken = "s3cret-operator-token"
	viewerToken   = "s3cret-viewer-token"
)

// fixture is a real router (the embedded demo fleet of simulated pools, with
// its Prometheus registry) serving gRPC on loopback, and its console served
// over HTTP on loopback.
type fixture struct {
	tel     *telemetry.Telemetry
	rt      *router.Server
	console *console.Console
	url     string // http://127.0.0.1:port
	grpc    *grpc.ClientConn
	host    *sim.Host
}

type fixtureOptions struct {
	console.Options
	// Store counts capacity (default: in memory).
	Store capacity.Store
	// QueueMaxWait overrides the demo fleet's routing.queue_max_wait.
	QueueMaxWait time.Duration
}

func newFixture(t testing.TB, fo fixtureOptions) *fixture {
	t.Helper()
	ctx := context.Background()
	tel, err := telemetry.New(ctx, telemetry.Options{Replica: "console-test", Metrics: true, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	fleet := config.Demo()
	if fo.QueueMaxWait > 0 {
		fleet.Routing.QueueMaxWait = config.Duration(fo.QueueMaxWait)
	}
	r := routertest.Start(t, routertest.Options{Router: router.Options{
		Fleet: fleet, Replica: "console-test", Region: "us-east-1",
		AdminTokens: []config.AdminToken{
			{Name: "alice", Role: "operator", SHA256: router.HashToken(operatorToken)},
			{Name: "dashboards", Role: "viewer", SHA256: router.HashToken(viewerToken)},
		},
		MeterProvider: tel.MeterProvider, TracerProvider: tel.TracerProvider, Store: fo.Store,
	}})

	o := fo.Options
	o.Operator = r.Server.Operator()
	o.Gatherer = tel.Registry
	if o.SampleEvery == 0 {
		o.SampleEvery = 200 * time.Millisecond
	}
	if o.FleetEvery == 0 {
		o.FleetEvery = 200 * time.Millisecond
	}
	c, err := console.New(o)
	if err != nil {
		t.Fatal(err)
	}
	lis := routertest.Listen(t)
	web := routertest.ServeHTTP(t, console.NewHTTPServer(c.Handler(), routertest.Discard), lis)
	t.Cleanup(c.Close) // before the server closes: its streams end first
	return &fixture{tel: tel, rt: r.Server, console: c, url: web.URL, grpc: r.Conn, host: r.Host}
}

// post calls POST /api/v1/<method> with token and a JSON body; it returns
// the status and the decoded answer.
func (f *fixture) post(t *testing.T, token, method, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.url+"/api/v1/"+method, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, req)
}

func (f *fixture) get(t *testing.T, token, path string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		return resp.StatusCode, map[string]any{"text": string(b)}
	}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %v: %.200s", req.Method, req.URL.Path, err, b)
		}
	}
	return resp.StatusCode, out
}

// traffic sends n unary calls from callers in region, bounded by a deadline.
func (f *fixture) traffic(t *testing.T, n int, region string) {
	t.Helper()
	cl := pb.NewInferenceClient(f.grpc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		if _, err := cl.Generate(ctx, &pb.GenerateRequest{Model: "llama-3.1-8b", Prompt: "hello there", MaxTokens: 4,
			Routing: &pb.RoutingHints{CallerRegion: region}}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
}

// fillFleet makes every pool full: a capacity override of 1 on each (set
// through the console's API), a slowdown on every simulated pool so that a
// call never finishes, and one such call held on each pool. It returns once
// the router counts them all in flight; the held calls end at cleanup.
func (f *fixture) fillFleet(t *testing.T) {
	t.Helper()
	pools := f.rt.Fleet().PoolNames()
	for _, p := range pools {
		if code, body := f.post(t, operatorToken, "SetCapacityOverride", fmt.Sprintf(`{"pool":%q,"limit":1}`, p)); code != http.StatusOK {
			t.Fatalf("override %s: %d %v", p, code, body)
		}
	}
	if _, err := f.host.InjectFault(context.Background(), &pb.InjectFaultRequest{Fault: &pb.Fault{Slowdown: 1e6}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	cl := pb.NewInferenceClient(f.grpc)
	for range pools { // llama-3.3-70b is on every pool
		wg.Go(func() {
			_, _ = cl.Generate(ctx, &pb.GenerateRequest{Model: "llama-3.3-70b", Prompt: "hold", MaxTokens: 4})
		})
	}
	testwait.For(t, 10*time.Second, "a call held on every pool", func() bool {
		code, body := f.post(t, viewerToken, "ListPools", `{}`)
		if code != http.StatusOK {
			t.Fatalf("ListPools: %d %v", code, body)
		}
		n := 0
		for _, p := range body["pools"].([]any) {
			if inFlight, _ := p.(map[string]any)["inFlight"].(float64); inFlight == 1 {
				n++
			}
		}
		return n == len(pools)
	})
}

// shed sends n unary calls from callers in region ("" names none) to a full
// fleet; each must be refused with RESOURCE_EXHAUSTED.
func (f *fixture) shed(t *testing.T, n int, region string) {
	t.Helper()
	cl := pb.NewInferenceClient(f.grpc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		_, err := cl.Generate(ctx, &pb.GenerateRequest{Model: "llama-3.1-8b", Prompt: "hello there", MaxTokens: 4,
			Routing: &pb.RoutingHints{CallerRegion: region}})
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("call %d from %q: %v, want RESOURCE_EXHAUSTED", i, region, err)
		}
	}
}
