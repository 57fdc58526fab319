package openaihttp_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc/metadata"

	"github.com/switchyard-dev/switchyard/backends/sim"
	"github.com/switchyard-dev/switchyard/internal/httpedge"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/openaihttp"
	"github.com/switchyard-dev/switchyard/router/routertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const adminToken = "front-door-test-operator"

// frontDoor is a real router serving the demo fleet (embedded simulated
// pools) behind the HTTP front door on a loopback port, with its Admin API on
// a loopback gRPC port.
type frontDoor struct {
	rt    *router.Server
	host  *sim.Host
	url   string // http://127.0.0.1:PORT
	admin pb.AdminClient
	// lis is the front door's listener (connection counts).
	lis *httpedge.Listener
	// client has its own transport, closed at cleanup (no leaked conns).
	client *http.Client
}

type doorOpts struct {
	// timeScale of the simulated pools (default 50: fast).
	timeScale float64
	// extraYAML is appended to the demo fleet (tenants:).
	extraYAML string
	// fleetYAML replaces the demo fleet (pools may use the sim and openai adapters).
	fleetYAML string
	// server overrides the HTTP server's timeouts.
	server  openaihttp.ServerOptions
	handler openaihttp.Options
	// maxConns and maxUnauth cap the listener (default: the front door's).
	maxConns, maxUnauth int
	// meter and tracer go to the router (default no-op).
	meter  metric.MeterProvider
	tracer trace.TracerProvider
}

// startFrontDoor starts the router (routertest.Start) and serves the front
// door in front of it (routertest.ServeHTTP).
func startFrontDoor(t *testing.T, o doorOpts) *frontDoor {
	t.Helper()
	src := config.DemoYAML()
	if o.fleetYAML != "" {
		src = []byte(o.fleetYAML)
	}
	r := routertest.Start(t, routertest.Options{
		FleetYAML: string(append(src, o.extraYAML...)),
		TimeScale: o.timeScale,
		Router: router.Options{
			Replica: "front-test", MeterProvider: o.meter, TracerProvider: o.tracer,
			AdminTokens: []config.AdminToken{{Name: "test", Role: "operator", SHA256: router.HashToken(adminToken)}},
		},
	})
	ho := o.handler
	ho.Router = r.Server
	ho.Logger = routertest.Discard
	h, err := openaihttp.New(ho)
	if err != nil {
		t.Fatal(err)
	}
	hlis := openaihttp.NewListener(routertest.Listen(t), o.maxConns, o.maxUnauth)
	so := o.server
	so.Handler = h
	so.Listener = hlis
	web := routertest.ServeHTTP(t, openaihttp.NewServer(so), hlis)
	return &frontDoor{rt: r.Server, host: r.Host, url: web.URL, admin: r.Admin, lis: hlis, client: web.Client}
}

func (fd *frontDoor) adminCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+adminToken)
}

// inFlight reads every pool's in-flight count through the Admin API.
func (fd *frontDoor) inFlight(t *testing.T) map[string]int32 {
	t.Helper()
	resp, err := fd.admin.ListPools(fd.adminCtx(t), &pb.ListPoolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int32{}
	for _, p := range resp.GetPools() {
		out[p.GetName()] = p.GetInFlight()
	}
	return out
}

func total(m map[string]int32) (n int32) {
	for _, v := range m {
		n += v
	}
	return n
}

// waitInFlight polls ListPools until the fleet's in-flight total is want.
func (fd *frontDoor) waitInFlight(t *testing.T, want int32, within time.Duration) map[string]int32 {
	t.Helper()
	var m map[string]int32
	if !testwait.Until(within, func() bool { m = fd.inFlight(t); return total(m) == want }) {
		t.Fatalf("in flight %v (total %d), want total %d within %s", m, total(m), want, within)
	}
	return m
}

// euRegions are the demo fleet's EU pools' regions.
var euRegions = map[string]bool{"eu-west-1": true, "europe-west4": true, "westeurope": true}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// curlPath is the curl binary; scripts/test.sh installs curl when missing.
func curlPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl is required (scripts/test.sh installs it): %v", err)
	}
	return p
}

// curl runs curl with args and returns its stdout.
func curl(t *testing.T, args ...string) string {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	cmd := exec.CommandContext(ctx, curlPath(t), append([]string{"-sS", "--max-time", "25"}, args...)...)
	cmd.Env = append(os.Environ(), "NO_PROXY=127.0.0.1", "no_proxy=127.0.0.1")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("curl %s: %v: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		t.Fatalf("curl: %v", err)
	}
	return string(out)
}
