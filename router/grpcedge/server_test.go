package grpcedge_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/grpcnative"
	"github.com/switchyard-dev/switchyard/backends/sim"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/grpcedge"
	"github.com/switchyard-dev/switchyard/router/routertest"
)

// bigClientEnv makes the test binary a client that sends one 60 MiB
// Generate to the address it names and prints the status code: the server's
// allocations are then measured in a process that holds no client buffers.
const bigClientEnv = "SWITCHYARD_TEST_BIG_CLIENT"

func bigClient(addr, key string) int {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(128<<20)))
	if err != nil {
		fmt.Println("dial:", err)
		return 2
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-api-key", key)
	}
	_, err = pb.NewInferenceClient(cc).Generate(ctx, &pb.GenerateRequest{Model: "m", Prompt: strings.Repeat("x", 60<<20), MaxTokens: 1})
	fmt.Println("code:", status.Code(err))
	return 0
}

const tenantKey = "tenant-secret-key"

// countingListener counts the bytes the server read from its connections.
type countingListener struct {
	net.Listener
	read atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &l.read}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

type portOpts struct {
	tenants  bool
	limits   grpcedge.PortOptions
	maxConns int
	extra    []grpc.ServerOption
	endpoint string // the pool's endpoint (default: a sim pool)
	// legacy builds the server as the router did before (64 MiB messages,
	// no authentication before decoding): the control of the body test.
	legacy bool
	// quiet checks the pool's health every 10 s instead of every 50 ms, so
	// the router's own background work allocates little while a test
	// counts the process's allocations.
	quiet bool
}

// clientPort serves a router the way the gateway does (ClientPortOptions,
// LimitListener, health, reflection) on loopback and returns its address and
// the counting listener under it.
func clientPort(t *testing.T, o portOpts) (string, *countingListener) {
	t.Helper()
	healthEvery := "50ms"
	if o.quiet {
		healthEvery = "10s"
	}
	ep := o.endpoint
	if ep == "" {
		ep = routertest.StartSimPool(t, sim.Options{Name: "p", Accelerator: "h100", MaxBatch: 64}).Addr
	}
	y := fmt.Sprintf(`models:
  - {name: m, max_input_tokens: 1000, max_output_tokens: 500}
pools:
  - {name: p, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: [%q], limits: {max_concurrent: 64}}
routing: {queue_max_wait: 100ms, health_check_interval: %s}
admin:
  tokens: [{name: ops, role: operator, sha256: %s}]
`, ep, healthEvery, router.HashToken("admin-token"))
	if o.tenants {
		y += fmt.Sprintf("tenants:\n  - {name: acme, api_key_sha256: [%s]}\n", router.HashToken(tenantKey))
	}
	fleet, err := config.Parse([]byte(y), "test fleet")
	if err != nil {
		t.Fatal(err)
	}
	reg := backends.NewRegistry()
	grpcnative.Register(reg, grpcnative.Options{})
	rt, err := router.New(router.Options{Fleet: fleet, Backends: reg})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: lis}
	var gs *grpc.Server
	if o.legacy {
		gs = grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	} else {
		gs = grpc.NewServer(grpcedge.ClientPortOptions(rt, o.limits, o.extra...)...)
	}
	grpcedge.Register(gs, rt)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	go func() { _ = gs.Serve(grpcedge.LimitListener(cl, o.maxConns)) }()
	t.Cleanup(func() { gs.Stop(); _ = rt.Close() })
	return lis.Addr().String(), cl
}

func dialT(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(128<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// With tenants configured, a 60 MiB message without an API key is answered
// UNAUTHENTICATED from its headers: the server neither receives nor decodes
// the body (it used to read and decode up to 64 MiB first, then answer
// INVALID_ARGUMENT). The client runs in another process so that the
// allocation count is the server's alone.
func TestUnauthenticatedBodyNeverDecoded(t *testing.T) {
	// Control, same run: the server as it was built before reads and decodes
	// the whole message, so the measurement can see a decode when one happens.
	legacyAddr, legacyCL := clientPort(t, portOpts{tenants: true, legacy: true, quiet: true})
	out, read, alloc := sendBig(t, legacyAddr, legacyCL, "")
	t.Logf("control (before): no key: %s; server read %d KiB, allocated %d KiB", out, read>>10, alloc>>10)
	if read < 60<<20 || alloc < 60<<20 {
		t.Fatalf("control: the old server read %d MiB and allocated %d MiB of a 60 MiB message; the measurement cannot see a decode", read>>20, alloc>>20)
	}
	addr, cl := clientPort(t, portOpts{tenants: true, quiet: true})
	for _, tc := range []struct {
		key  string
		want codes.Code
	}{
		{"", codes.Unauthenticated},
		{"wrong-key", codes.Unauthenticated},
		// A known caller is held to the receive limit (1000 tokens × 4 + 64 KiB), from the length prefix.
		{tenantKey, codes.ResourceExhausted},
	} {
		out, read, alloc := sendBig(t, addr, cl, tc.key)
		t.Logf("key %q: %s; server read %d KiB, allocated %d KiB", tc.key, out, read>>10, alloc>>10)
		if want := "code: " + tc.want.String(); !strings.Contains(out, want) {
			t.Fatalf("key %q: client saw %q, want %q", tc.key, out, want)
		}
		if read > 8<<20 {
			t.Errorf("key %q: the server read %d MiB of a 60 MiB message it refuses", tc.key, read>>20)
		}
		// The allocation count is the whole server process's while the client
		// runs (health checks and other background work included), so the
		// bound is half the message: a decode allocates all of it and more
		// (the control above).
		if alloc > 30<<20 {
			t.Errorf("key %q: the server allocated %d MiB while refusing a 60 MiB message", tc.key, alloc>>20)
		}
	}
}

// sendBig runs the client process once against addr and returns its output,
// the bytes the server read and what this (the server's) process allocated.
func sendBig(t *testing.T, addr string, cl *countingListener, key string) (out string, read int64, alloc uint64) {
	t.Helper()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	read0 := cl.read.Load()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), bigClientEnv+"="+addr, bigClientEnv+"_KEY="+key)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client process: %v: %s", err, b)
	}
	// The client has exited; let the server drain what it sent (the read
	// count stays put for 200ms), bounded.
	last, stable := cl.read.Load(), time.Now()
	testwait.Until(5*time.Second, func() bool {
		if n := cl.read.Load(); n != last {
			last, stable = n, time.Now()
		}
		return time.Since(stable) >= 200*time.Millisecond
	})
	runtime.ReadMemStats(&after)
	return string(bytes.TrimSpace(b)), cl.read.Load() - read0, after.TotalAlloc - before.TotalAlloc
}

// With tenants configured, ListModels, reflection, Generate of an unknown
// model and Admin answer UNAUTHENTICATED without credentials; health stays
// open for probes.
func TestEveryMethodNeedsAKeyWithTenants(t *testing.T) {
	addr, _ := clientPort(t, portOpts{tenants: true})
	cc := dialT(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keyed := metadata.AppendToOutgoingContext(ctx, "x-api-key", tenantKey)
	inf := pb.NewInferenceClient(cc)

	if _, err := inf.ListModels(ctx, &pb.ListModelsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListModels without a key: %v, want UNAUTHENTICATED", err)
	}
	if r, err := inf.ListModels(keyed, &pb.ListModelsRequest{}); err != nil || len(r.GetModels()) != 1 {
		t.Errorf("ListModels with a key: %v %v", r, err)
	}
	_, err := inf.Generate(ctx, &pb.GenerateRequest{Model: "zzz", Prompt: "hi", MaxTokens: 1})
	if status.Code(err) != codes.Unauthenticated || strings.Contains(status.Convert(err).Message(), "zzz") {
		t.Errorf("Generate of an unknown model without a key: %v, want UNAUTHENTICATED that does not mention the model", err)
	}
	if _, err := inf.Generate(keyed, &pb.GenerateRequest{Model: "zzz", Prompt: "hi", MaxTokens: 1}); status.Code(err) != codes.NotFound {
		t.Errorf("Generate of an unknown model with a key: %v, want NOT_FOUND", err)
	}
	s, err := inf.GenerateStream(ctx, &pb.GenerateRequest{Model: "m", Prompt: "hi", MaxTokens: 1})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("GenerateStream without a key: %v, want UNAUTHENTICATED", err)
	}
	listServices := func(ctx context.Context) error {
		rc, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err != nil {
			return err
		}
		// A refused stream may already be closed when Send runs; grpc-go then
		// returns io.EOF from Send and the real status from Recv.
		if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		_, err = rc.Recv()
		return err
	}
	if err := listServices(ctx); status.Code(err) != codes.Unauthenticated {
		t.Errorf("reflection without a key: %v, want UNAUTHENTICATED", err)
	}
	if err := listServices(keyed); err != nil {
		t.Errorf("reflection with an API key: %v", err)
	}
	if err := listServices(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer admin-token")); err != nil {
		t.Errorf("reflection with an admin token: %v", err)
	}
	adm := pb.NewAdminClient(cc)
	if _, err := adm.ListPools(ctx, &pb.ListPoolsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Admin without a token: %v, want UNAUTHENTICATED", err)
	}
	if _, err := adm.ListPools(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer admin-token"), &pb.ListPoolsRequest{}); err != nil {
		t.Errorf("Admin with its token: %v", err)
	}
	if h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health without a key: %v %v, want SERVING", h, err)
	}
}

// A backend's dial error (an internal address) never reaches the client: the
// status keeps its code, the text names no address.
func TestBackendAddressesNeverReachClients(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close() // nothing listens there any more: dials are refused
	addr, _ := clientPort(t, portOpts{endpoint: deadAddr})
	inf := pb.NewInferenceClient(dialT(t, addr))
	_, port, _ := net.SplitHostPort(deadAddr)
	calls := 0
	answer := func() string { // one call; its answer must keep its code and name no address
		calls++
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := inf.Generate(ctx, &pb.GenerateRequest{Model: "m", Prompt: "hi", MaxTokens: 1})
		msg := status.Convert(err).Message()
		if status.Code(err) != codes.Unavailable && status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("call %d to a dead backend: %v, want UNAVAILABLE", calls, err)
		}
		for _, leak := range []string{"127.0.0.1", port, "dial", "connection refused"} {
			if strings.Contains(msg, leak) {
				t.Fatalf("call %d: the client sees %q, which has %q", calls, msg, leak)
			}
		}
		return msg
	}
	// The first call fails on the dial; once health checks or ejection take
	// the pool out, calls are refused before any dial. Both answers are checked.
	first := answer()
	testwait.For(t, 10*time.Second, "the dead pool to be taken out of rotation", func() bool { return answer() != first })
}

// One connection runs at most MaxStreams calls at once; connections past
// the limit are closed when accepted and cost no goroutines; a connection
// that never completes its handshake is closed after the handshake timeout.
func TestStreamAndConnectionLimits(t *testing.T) {
	var cur, peak atomic.Int64
	count := grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == "/switchyard.v1.Inference/Generate" {
			n := cur.Add(1)
			defer cur.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
		}
		return h(ctx, req)
	})
	const maxConns = 4
	addr, _ := clientPort(t, portOpts{limits: grpcedge.PortOptions{MaxStreams: 3, HandshakeTimeout: 300 * time.Millisecond}, maxConns: maxConns, extra: []grpc.ServerOption{count}})
	inf := pb.NewInferenceClient(dialT(t, addr))
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := inf.Generate(ctx, &pb.GenerateRequest{Model: "m", Prompt: "tell me about switchyards", MaxTokens: 60})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("call: %v", err)
		}
	}
	if p := peak.Load(); p != 3 {
		t.Fatalf("peak calls on one connection %d, want exactly the limit 3", p)
	}

	// The gRPC connection above holds one slot; fill the rest with idle
	// handshakes, then every further connection is closed at once.
	var held []net.Conn
	for i := 0; i < maxConns-1; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	g0 := runtime.NumGoroutine()
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("connection %d past the limit: read %v, want it closed at once", i, err)
		}
		_ = c.Close()
	}
	if g := runtime.NumGoroutine(); g > g0+5 {
		t.Errorf("goroutines %d -> %d after 20 refused connections", g0, g)
	}
	// The idle handshakes are closed by the server after 300ms.
	for i, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		start := time.Now()
		buf := make([]byte, 4096)
		var err error
		for err == nil {
			_, err = c.Read(buf) // the server's SETTINGS frame first, then EOF
		}
		if isTimeout(err) {
			t.Fatalf("idle connection %d still open after %s", i, time.Since(start))
		}
		_ = c.Close()
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// A connection with no call for the idle timeout is closed by the server
// (GOAWAY, then the client reconnects on its next call); before, idle
// connections stayed open for good.
func TestIdleConnectionsClosed(t *testing.T) {
	addr, _ := clientPort(t, portOpts{limits: grpcedge.PortOptions{IdleTimeout: 300 * time.Millisecond}})
	cc := dialT(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pb.NewInferenceClient(cc).ListModels(ctx, &pb.ListModelsRequest{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for cc.GetState() == connectivity.Ready {
		if !cc.WaitForStateChange(ctx, connectivity.Ready) {
			t.Fatalf("connection still open %s after its last call (idle timeout 300ms)", time.Since(start))
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("idle connection closed after %s, want about 300ms", d)
	}
}

// SimControl off the host is served with OperatorInterceptors: no token is
// UNAUTHENTICATED, a viewer token PERMISSION_DENIED, an operator token passes.
func TestOperatorInterceptorsGuardSimControl(t *testing.T) {
	fleet, err := config.Parse([]byte(fmt.Sprintf(`models:
  - {name: m, max_input_tokens: 100, max_output_tokens: 10}
pools:
  - {name: p, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: [sim], limits: {max_concurrent: 4}}
admin:
  tokens:
    - {name: ops, role: operator, sha256: %s}
    - {name: view, role: viewer, sha256: %s}
`, router.HashToken("op-token"), router.HashToken("view-token"))), "fleet")
	if err != nil {
		t.Fatal(err)
	}
	reg := backends.NewRegistry()
	host := sim.NewHost()
	sim.Register(reg, sim.RegistryOptions{Host: host, TimeScale: 50})
	rt, err := router.New(router.Options{Fleet: fleet, Backends: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	unary, stream := grpcedge.OperatorInterceptors(rt.Operator(), slog.New(slog.DiscardHandler))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	pb.RegisterSimControlServer(gs, host)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	sc := pb.NewSimControlClient(dialT(t, lis.Addr().String()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fault := &pb.InjectFaultRequest{Fault: &pb.Fault{Pool: "p", Outage: true}}
	for _, tc := range []struct {
		token string
		want  codes.Code
	}{{"", codes.Unauthenticated}, {"wrong", codes.Unauthenticated}, {"view-token", codes.PermissionDenied}, {"op-token", codes.OK}} {
		cctx := ctx
		if tc.token != "" {
			cctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tc.token)
		}
		if _, err := sc.InjectFault(cctx, fault); status.Code(err) != tc.want {
			t.Errorf("InjectFault with token %q: %v, want %v", tc.token, err, tc.want)
		}
	}
}

// A client pinging faster than the enforcement policy allows (every 10 s)
// is sent GOAWAY ENHANCE_YOUR_CALM "too_many_pings" and disconnected.
func TestKeepalivePingFloodClosed(t *testing.T) {
	addr, _ := clientPort(t, portOpts{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, bufio.NewReader(c))
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := 0; i < 50; i++ {
			if fr.WritePing(false, [8]byte{byte(i)}) != nil {
				return
			}
		}
	}()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended without GOAWAY: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || !strings.Contains(string(ga.DebugData()), "too_many_pings") {
				t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", ga.ErrCode, ga.DebugData())
			}
			return
		}
	}
}
