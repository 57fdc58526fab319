package telemetry_test

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/internal/testwait"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// relay answers Check by calling the next hop's Check (a router calling a
// backend) and remembers the traceparent each hop received.
type relay struct {
	healthpb.UnimplementedHealthServer
	next   healthpb.HealthClient // nil: the last hop
	gotTP  chan string
	failAs atomic.Uint32 // a codes.Code; 0 (OK) answers
}

func (r *relay) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	tp := metadata.ValueFromIncomingContext(ctx, "traceparent")
	select {
	case r.gotTP <- strings.Join(tp, ","):
	default:
	}
	if c := codes.Code(r.failAs.Load()); c != codes.OK {
		return nil, status.Error(c, "refused")
	}
	if r.next != nil {
		return r.next.Check(ctx, req)
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func serve(t *testing.T, h healthpb.HealthServer, opts ...grpc.ServerOption) (*grpc.Server, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(gs, h)
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	return gs, l.Addr().String()
}

func dialT(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// A caller -> router -> backend chain over loopback: the router's server
// and client interceptors record both call durations with the conventions'
// attributes, pass the caller's traceparent on, and name methods the server
// does not serve "_OTHER" (never the client's string).
func TestRPCMetricsOnARealChain(t *testing.T) {
	tel, err := telemetry.New(context.Background(), telemetry.Options{Metrics: true, Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	m, err := telemetry.NewRPCMetrics(telemetry.RPCMetricsOptions{MeterProvider: tel.MeterProvider, PassTraceContext: true})
	if err != nil {
		t.Fatal(err)
	}

	backend := &relay{gotTP: make(chan string, 1)}
	_, backendAddr := serve(t, backend)
	link := dialT(t, backendAddr, grpc.WithChainUnaryInterceptor(m.UnaryClient), grpc.WithChainStreamInterceptor(m.StreamClient))
	router := &relay{next: healthpb.NewHealthClient(link), gotTP: make(chan string, 1)}
	gs, routerAddr := serve(t, router, grpc.ChainUnaryInterceptor(m.UnaryServer), grpc.ChainStreamInterceptor(m.StreamServer))
	m.SetServerMethods(gs.GetServiceInfo())

	cc := dialT(t, routerAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for range 3 {
		if _, err := healthpb.NewHealthClient(cc).Check(metadata.AppendToOutgoingContext(ctx, "traceparent", tp), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := <-backend.gotTP; got != tp {
		t.Errorf("backend got traceparent %q, want the caller's %q", got, tp)
	}
	// Methods the server does not serve, as an attacker would send them.
	for _, name := range []string{"/evil.Svc/A", "/evil.Svc/B", "/grpc.health.v1.Health/Nope"} {
		if err := cc.Invoke(ctx, name, &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{}); status.Code(err) != codes.Unimplemented {
			t.Fatalf("%s: %v, want UNIMPLEMENTED", name, err)
		}
	}
	// A failure from the backend: the client side counts it as an error.
	backend.failAs.Store(uint32(codes.Unavailable))
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("failing backend: %v, want UNAVAILABLE", err)
	}

	families, err := tel.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string][]*dto.Metric{}
	for _, f := range families {
		series[f.GetName()] = f.GetMetric()
	}
	count := func(name string, want map[string]string) (n uint64) {
		for _, s := range series[name] {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
				if strings.Contains(l.GetValue(), "evil") || strings.Contains(l.GetValue(), "Nope") {
					t.Errorf("%s has a client-chosen method name as a label: %v", name, labels)
				}
			}
			match := true
			for k, v := range want {
				match = match && labels[k] == v
			}
			if match {
				n += s.GetHistogram().GetSampleCount()
			}
		}
		return n
	}
	method := "grpc.health.v1.Health/Check"
	host, port, _ := net.SplitHostPort(backendAddr)
	checks := []struct {
		name   string
		labels map[string]string
		want   uint64
	}{
		{"rpc_server_call_duration_seconds", map[string]string{"rpc_method": method, "rpc_response_status_code": "OK", "rpc_system_name": "grpc"}, 3},
		{"rpc_server_call_duration_seconds", map[string]string{"rpc_method": method, "rpc_response_status_code": "UNAVAILABLE", "error_type": "UNAVAILABLE"}, 1},
		{"rpc_client_call_duration_seconds", map[string]string{"rpc_method": method, "rpc_response_status_code": "OK", "server_address": host, "server_port": port}, 3},
		{"rpc_client_call_duration_seconds", map[string]string{"rpc_method": method, "rpc_response_status_code": "UNAVAILABLE", "error_type": "UNAVAILABLE"}, 1},
	}
	for _, c := range checks {
		if got := count(c.name, c.labels); got != c.want {
			t.Errorf("%s%v: %d calls, want %d", c.name, c.labels, got, c.want)
		}
	}
}

// Without PassTraceContext the router does not forward a traceparent (the
// tracing handlers do it then, with the router's own span in between).
func TestRPCMetricsWithoutPassingTraceContext(t *testing.T) {
	m, err := telemetry.NewRPCMetrics(telemetry.RPCMetricsOptions{MeterProvider: noopMeters(t)})
	if err != nil {
		t.Fatal(err)
	}
	backend := &relay{gotTP: make(chan string, 1)}
	_, backendAddr := serve(t, backend)
	link := dialT(t, backendAddr, grpc.WithChainUnaryInterceptor(m.UnaryClient))
	_, routerAddr := serve(t, &relay{next: healthpb.NewHealthClient(link), gotTP: make(chan string, 1)}, grpc.ChainUnaryInterceptor(m.UnaryServer))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if _, err := healthpb.NewHealthClient(dialT(t, routerAddr)).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := <-backend.gotTP; got != "" {
		t.Errorf("backend got traceparent %q, want none", got)
	}
}

func noopMeters(t *testing.T) metric.MeterProvider {
	t.Helper()
	tel, err := telemetry.New(context.Background(), telemetry.Options{Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	return tel.MeterProvider
}

// A streaming call on a backend link is measured once: here it ends when
// its context is canceled mid-stream, with no receive pending (recorded
// CANCELLED, not UNKNOWN), and a receive after that does not count it again.
func TestRPCMetricsClientStreamCanceled(t *testing.T) {
	tel, err := telemetry.New(context.Background(), telemetry.Options{Metrics: true, Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	m, err := telemetry.NewRPCMetrics(telemetry.RPCMetricsOptions{MeterProvider: tel.MeterProvider})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	cc := dialT(t, l.Addr().String(), grpc.WithChainStreamInterceptor(m.StreamClient))

	ctx, cancel := context.WithCancel(context.Background())
	w, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	count := func() (n uint64) {
		families, err := tel.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() != "rpc_client_call_duration_seconds" {
				continue
			}
			for _, s := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range s.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["rpc_method"] != "grpc.health.v1.Health/Watch" || labels["rpc_response_status_code"] != "CANCELLED" {
					t.Errorf("stream recorded as %v, want Watch CANCELLED", labels)
				}
				n += s.GetHistogram().GetSampleCount()
			}
		}
		return n
	}
	// No receive yet: the context's end alone records the call.
	testwait.For(t, 5*time.Second, "the canceled stream to be recorded", func() bool { return count() >= 1 })
	if _, err := w.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("receive after cancel: %v, want CANCELLED", err)
	}
	if n := count(); n != 1 {
		t.Errorf("the stream was recorded %d times, want once", n)
	}
}

// Methods Measured excludes (the router's health checks of its backends)
// are not recorded on the client side either.
func TestRPCMetricsClientSkipsUnmeasuredMethods(t *testing.T) {
	tel, err := telemetry.New(context.Background(), telemetry.Options{Metrics: true, Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	m, err := telemetry.NewRPCMetrics(telemetry.RPCMetricsOptions{MeterProvider: tel.MeterProvider,
		Measured: func(method string) bool { return !strings.HasPrefix(method, "/grpc.health.") }})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := serve(t, &relay{gotTP: make(chan string, 1)})
	cc := dialT(t, addr, grpc.WithChainUnaryInterceptor(m.UnaryClient), grpc.WithChainStreamInterceptor(m.StreamClient))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	families, err := tel.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "rpc_client_call_duration_seconds" {
			t.Errorf("a health check was measured: %v", f.GetMetric())
		}
	}
}
