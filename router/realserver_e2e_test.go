package router_test

// Real model servers as pools: llama.cpp llama-server processes on loopback,
// reached through the openai adapter, behind a real switchyard, called over
// gRPC.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/openai"
	"github.com/switchyard-dev/switchyard/backends/openai/llamatest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/routertest"
)

// realPool is a pool of one OpenAI-compatible endpoint.
type realPool struct {
	name, cloud, region string
	limit               int
	url                 string
	// options are extra adapter options in YAML flow form ("resolve_interval: 50ms").
	options string
}

type realFleet struct {
	rt     *router.Server
	client pb.InferenceClient
	admin  pb.AdminClient
}

func startRealFleet(t *testing.T, pools ...realPool) *realFleet {
	t.Helper()
	return startRealFleetWith(t, openai.Options{}, pools...)
}

func startRealFleetWith(t *testing.T, o openai.Options, pools ...realPool) *realFleet {
	t.Helper()
	var b strings.Builder
	// The fleet's input limit is above the servers' context windows, so an
	// overflow is found by the server, as with a real fleet whose servers
	// differ in context length.
	b.WriteString("models:\n  - {name: m, max_input_tokens: 100000, max_output_tokens: 4000}\npools:\n")
	for _, p := range pools {
		extra := ""
		if p.options != "" {
			extra = ", " + p.options
		}
		fmt.Fprintf(&b, "  - {name: %s, cloud: %s, region: %s, accelerator: cpu, models: [m], adapter: openai, endpoints: [%q], limits: {max_concurrent: %d},"+
			" options: {server: llamacpp, model_names: {m: %s}, metrics_interval: 50ms%s}}\n", p.name, p.cloud, p.region, p.url, p.limit, llamatest.Alias, extra)
	}
	b.WriteString("routing:\n  queue_max_wait: 2s\n  health_check_interval: 200ms\n  eject_after_failures: 3\n")
	fleet, err := config.Parse([]byte(b.String()), "real fleet")
	if err != nil {
		t.Fatal(err)
	}
	reg := backends.NewRegistry()
	openai.Register(reg, o)
	r := routertest.Start(t, routertest.Options{Router: router.Options{Fleet: fleet, Backends: reg,
		AdminTokens: []config.AdminToken{{Name: "view", Role: "viewer", SHA256: router.HashToken("view-secret")}}}})
	return &realFleet{rt: r.Server, client: r.Inference, admin: r.Admin}
}

// pools lists the pools as operators see them.
func (f *realFleet) pools(t *testing.T) map[string]*pb.PoolStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(bearer(context.Background(), "view-secret"), 2*time.Second)
	defer cancel()
	resp, err := f.admin.ListPools(ctx, &pb.ListPoolsRequest{})
	if err != nil {
		t.Fatalf("list pools: %v", err)
	}
	out := map[string]*pb.PoolStatus{}
	for _, p := range resp.Pools {
		out[p.Name] = p
	}
	return out
}

// idle waits until every pool's in-flight count is back to 0.
func (f *realFleet) idle(t *testing.T) {
	t.Helper()
	eventually(t, 5*time.Second, "every pool's in-flight count back to 0", func() bool {
		for _, p := range f.pools(t) {
			if p.InFlight != 0 {
				return false
			}
		}
		return true
	})
}

func chatReq(region string, maxTokens int32) *pb.GenerateRequest {
	return &pb.GenerateRequest{Model: "m", MaxTokens: maxTokens, Routing: &pb.RoutingHints{CallerRegion: region},
		Messages: []*pb.ChatMessage{{Role: "system", Content: "You are a switchyard guide."}, {Role: "user", Content: "Tell me about switchyards."}}}
}

// Prompts and chats, unary and streamed, through a real switchyard to real
// llama-servers: usage adds up, the route is filled, a context overflow is
// the client's INVALID_ARGUMENT naming its input, counters return to 0.
func TestRealServersThroughTheRouter(t *testing.T) {
	a := llamatest.Start(t, llamatest.Options{Slots: 2})
	b := llamatest.Start(t, llamatest.Options{Slots: 2})
	f := startRealFleet(t,
		realPool{name: "llama-use1", cloud: "aws", region: "us-east-1", limit: 2, url: a.URL},
		realPool{name: "llama-weu", cloud: "azure", region: "westeurope", limit: 2, url: b.URL})
	ctx := ctxT(t, 60*time.Second)
	for _, r := range []*pb.GenerateRequest{req("us-east-1", 16), chatReq("westeurope", 16)} {
		want := "llama-use1"
		if r.Routing.CallerRegion == "westeurope" {
			want = "llama-weu"
		}
		resp, err := f.client.Generate(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Usage.GetOutputTokens() != 16 || resp.Usage.GetInputTokens() < 2 || resp.Text == "" || resp.Route.GetPool() != want {
			t.Fatalf("unary: %+v (want 16 tokens from %s)", resp, want)
		}
		text, tokens, last, err := stream(ctx, f.client, r)
		if err != nil {
			t.Fatal(err)
		}
		if tokens != 16 || last.GetUsage().GetOutputTokens() != 16 || last.GetFinishReason() != pb.FinishReason_FINISH_REASON_LENGTH || text == "" || last.GetRoute().GetPool() != want {
			t.Fatalf("stream: %d tokens, last %+v (want 16 from %s)", tokens, last, want)
		}
	}
	long := strings.Repeat("switchyard ", 2000) // ~4,000 tokens: over the servers' 512-token slots
	for _, r := range []*pb.GenerateRequest{
		{Model: "m", Prompt: long, MaxTokens: 4},
		{Model: "m", Messages: []*pb.ChatMessage{{Role: "user", Content: long}}, MaxTokens: 4},
	} {
		field := "prompt"
		if r.Prompt == "" {
			field = "messages"
		}
		_, err := f.client.Generate(ctx, r)
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), field+": longer than the context window") {
			t.Fatalf("overflow: %v, want INVALID_ARGUMENT naming %s", err, field)
		}
		_, _, _, err = stream(ctx, f.client, r)
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), field+": ") {
			t.Fatalf("streamed overflow: %v, want INVALID_ARGUMENT naming %s", err, field)
		}
	}
	for name, p := range f.pools(t) {
		if p.Ejected {
			t.Fatalf("pool %s ejected after client faults", name)
		}
	}
	f.idle(t)
}

// A pool's server killed mid-stream: the router continues the stream on the
// other llama-server and the client sees one stream of max_tokens tokens,
// with both pools in the route, for a prompt and for a chat.
func TestRealServerKilledMidStreamIsContinuedElsewhere(t *testing.T) {
	a := llamatest.Start(t, llamatest.Options{Slots: 1, CtxSize: 4096})
	b := llamatest.Start(t, llamatest.Options{Slots: 1, CtxSize: 4096})
	f := startRealFleet(t,
		realPool{name: "llama-use1", cloud: "aws", region: "us-east-1", limit: 1, url: a.URL},
		realPool{name: "llama-usc1", cloud: "gcp", region: "us-central1", limit: 1, url: b.URL})
	ctx := ctxT(t, 60*time.Second)
	for i, r := range []*pb.GenerateRequest{req("us-east-1", 1200), chatReq("us-east-1", 1200)} {
		if i > 0 {
			a = a.Restart(t)
			eventually(t, 5*time.Second, "the restarted pool healthy and out of ejection", func() bool {
				p := f.pools(t)["llama-use1"]
				return p.Health == "SERVING" && !p.Ejected
			})
		}
		s, err := f.client.GenerateStream(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		var text strings.Builder
		var tokens int32
		var last *pb.GenerateChunk
		killed := false
		for {
			ch, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("stream %d broke for the client after %d tokens: %v", i, tokens, err)
			}
			text.WriteString(ch.Text)
			tokens += ch.Tokens
			last = ch
			if !killed && tokens >= 20 {
				a.Kill()
				killed = true
			}
		}
		if !killed {
			t.Fatal("stream ended before the kill")
		}
		route := last.GetRoute()
		if tokens != 1200 || last.GetUsage().GetOutputTokens() != 1200 || route.GetPool() != "llama-usc1" ||
			strings.Join(route.GetPoolsTried(), ",") != "llama-use1,llama-usc1" {
			t.Fatalf("stream %d: %d tokens, usage %v, route %v: want one stream of 1200 tokens from llama-use1 then llama-usc1", i, tokens, last.GetUsage(), route)
		}
		f.idle(t)
	}
}

// A llama-server whose one slot is busy with a long generation shows it in
// its /metrics; the router sees it and sends calls from that region to the
// farther pool instead of queueing them there.
func TestRealServerBusySlotsSeenThroughMetrics(t *testing.T) {
	near := llamatest.Start(t, llamatest.Options{Slots: 1, CtxSize: 8192})
	far := llamatest.Start(t, llamatest.Options{Slots: 4})
	f := startRealFleet(t,
		realPool{name: "llama-near", cloud: "aws", region: "us-east-1", limit: 1, url: near.URL},
		realPool{name: "llama-far", cloud: "azure", region: "westeurope", limit: 4, url: far.URL})
	ctx := ctxT(t, 60*time.Second)
	// Idle, the near pool takes the near caller's calls.
	eventually(t, 5*time.Second, "the near server's load report", func() bool { _, ok := f.rt.PoolLoads()["llama-near"]; return ok })
	for range 3 {
		// Quiet: the router's shared in-flight count and the server's report
		// have caught up with the last call (the near pool's limit is 1).
		f.idle(t)
		eventually(t, 5*time.Second, "the near server reporting nothing running", func() bool {
			l, ok := f.rt.PoolLoads()["llama-near"]
			return ok && l.Running == 0
		})
		resp, err := f.client.Generate(ctx, req("us-east-1", 4))
		if err != nil || resp.Route.GetPool() != "llama-near" {
			t.Fatalf("idle fleet: %v %v, want llama-near", resp.GetRoute(), err)
		}
	}
	// Its only slot busy with a long generation sent to it directly.
	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		body := `{"model":"tiny-llama","prompt":"go on","max_tokens":7000,"stream":true}`
		hreq, _ := http.NewRequestWithContext(bg, http.MethodPost, near.URL+"/v1/completions", strings.NewReader(body))
		if resp, err := http.DefaultClient.Do(hreq); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	eventually(t, 5*time.Second, "the near server reporting its one slot busy", func() bool {
		l := f.rt.PoolLoads()["llama-near"]
		return l.Running == 1 && l.Capacity == 1
	})
	for range 6 {
		resp, err := f.client.Generate(ctx, req("us-east-1", 4))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Route.GetPool() != "llama-far" {
			t.Fatalf("call routed to %s while the near server's slot was busy", resp.Route.GetPool())
		}
	}
	if deferred := scrapeGauge(t, near.URL, "llamacpp:requests_deferred"); deferred != 0 {
		t.Fatalf("%v calls queued inside the busy server", deferred)
	}
	stopBG()
	wg.Wait()
	f.idle(t)
}

func scrapeGauge(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	t.Fatalf("%s not in %s/metrics", name, base)
	return 0
}

// throttle is a small HTTP proxy in front of a llama-server that answers
// completions with 429 or 503 and a Retry-After while refusing is on.
type throttle struct {
	*http.Server
	url     string
	code    atomic.Int64 // 0: pass through
	refused atomic.Int64
}

func startThrottle(t *testing.T, target string) *throttle {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	th := &throttle{}
	th.Server = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code := th.code.Load(); code != 0 && r.Method == http.MethodPost {
			th.refused.Add(1)
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(int(code))
			_, _ = io.WriteString(w, `{"error":{"message":"over capacity, try later","type":"rate_limit_error"}}`)
			return
		}
		proxy.ServeHTTP(w, r)
	})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = th.Serve(lis) }()
	t.Cleanup(func() { _ = th.Close() })
	th.url = "http://" + lis.Addr().String()
	return th
}

// A server answering 429 or 503 with Retry-After: traffic shifts to the
// other pool at once, the refusing endpoint is not asked again until the
// delay passes, the pool is never ejected, and traffic comes back after.
// A 401 is a failure instead: the pool is ejected.
func TestRealServer429And503ShiftTrafficWithoutEjection(t *testing.T) {
	near := llamatest.Start(t, llamatest.Options{Slots: 2})
	far := llamatest.Start(t, llamatest.Options{Slots: 2})
	th := startThrottle(t, near.URL)
	f := startRealFleet(t,
		realPool{name: "llama-near", cloud: "aws", region: "us-east-1", limit: 2, url: th.url},
		realPool{name: "llama-far", cloud: "azure", region: "westeurope", limit: 2, url: far.URL})
	ctx := ctxT(t, 60*time.Second)
	if resp, err := f.client.Generate(ctx, req("us-east-1", 4)); err != nil || resp.Route.GetPool() != "llama-near" {
		t.Fatalf("before refusing: %v %v", resp.GetRoute(), err)
	}
	for _, code := range []int64{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		th.code.Store(code)
		th.refused.Store(0)
		start := time.Now()
		for i := range 8 {
			var pool string
			if i%2 == 0 {
				resp, err := f.client.Generate(ctx, req("us-east-1", 4))
				if err != nil {
					t.Fatalf("HTTP %d: call %d failed for the client: %v", code, i, err)
				}
				pool = resp.Route.GetPool()
			} else {
				_, tokens, last, err := stream(ctx, f.client, req("us-east-1", 4))
				if err != nil || tokens != 4 {
					t.Fatalf("HTTP %d: stream %d: %d tokens, %v", code, i, tokens, err)
				}
				pool = last.GetRoute().GetPool()
			}
			if pool != "llama-far" {
				t.Fatalf("HTTP %d: call %d served by %s", code, i, pool)
			}
		}
		// Asked once, then left alone for each Retry-After second that passed.
		if n, most := th.refused.Load(), 2+int64(time.Since(start)/time.Second); n < 1 || n > most {
			t.Fatalf("HTTP %d: the refusing server was asked %d times in %s with Retry-After: 1, want 1 to %d", code, n, time.Since(start), most)
		}
		p := f.pools(t)["llama-near"]
		if p.Ejected {
			t.Fatalf("HTTP %d: the refusing pool was ejected", code)
		}
		th.code.Store(0)
		eventually(t, 5*time.Second, "traffic back on the near pool after the delay", func() bool {
			resp, err := f.client.Generate(ctx, req("us-east-1", 4))
			return err == nil && resp.Route.GetPool() == "llama-near"
		})
	}
	// Refused credentials are the pool's misconfiguration: a failure, so the
	// calls fail over and the pool is ejected after consecutive ones.
	th.code.Store(http.StatusUnauthorized)
	for i := range 4 {
		resp, err := f.client.Generate(ctx, req("us-east-1", 4))
		if err != nil || resp.Route.GetPool() != "llama-far" {
			t.Fatalf("401: call %d: %v %v, want it served by llama-far", i, resp.GetRoute(), err)
		}
	}
	if !f.pools(t)["llama-near"].Ejected {
		t.Fatal("a pool whose server refuses its credentials was not ejected")
	}
	th.code.Store(0)
	f.idle(t)
}

// dnsName answers lookups of one name from a list the test changes, the way
// a Kubernetes headless Service's records follow its ready pods.
type dnsName struct {
	mu    sync.Mutex
	name  string
	addrs []string
}

func (d *dnsName) LookupHost(ctx context.Context, host string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if host != d.name {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return append([]string(nil), d.addrs...), nil
}

func (d *dnsName) set(addrs ...string) {
	d.mu.Lock()
	d.addrs = addrs
	d.mu.Unlock()
}

// A pool given as dns:///name:port: llama-servers ("pods") on two loopback
// addresses and one port come and go behind the name, and the pool follows
// without a config change or a failed call.
func TestRealServersBehindADNSNameComeAndGo(t *testing.T) {
	first := llamatest.Start(t, llamatest.Options{Slots: 2, Host: "127.0.0.1"})
	second := llamatest.Start(t, llamatest.Options{Slots: 2, Host: "127.0.0.2", Port: first.Port})
	dns := &dnsName{name: "llama.inference.svc.cluster.local"}
	dns.set("127.0.0.1")
	f := startRealFleetWith(t, openai.Options{Resolver: dns}, realPool{name: "llama-svc", cloud: "aws", region: "us-east-1", limit: 4,
		url: fmt.Sprintf("dns:///%s:%d", dns.name, first.Port), options: "resolve_interval: 50ms"})
	ctx := ctxT(t, 60*time.Second)
	served := func(s *llamatest.Server) float64 { return scrapeGauge(t, s.URL, "llamacpp:tokens_predicted_total") }
	call := func() {
		t.Helper()
		resp, err := f.client.Generate(ctx, req("us-east-1", 4))
		if err != nil || resp.Usage.GetOutputTokens() != 4 {
			t.Fatalf("call through the DNS name: %v %v", resp, err)
		}
	}
	for range 4 {
		call()
	}
	if served(first) != 16 || served(second) != 0 {
		t.Fatalf("one pod behind the name: tokens %v / %v, want 16 / 0", served(first), served(second))
	}
	dns.set("127.0.0.1", "127.0.0.2") // a pod is added
	eventually(t, 10*time.Second, "calls reaching the added pod", func() bool {
		call()
		return served(second) > 0
	})
	dns.set("127.0.0.2") // the first pod leaves the Service, then goes away
	before := served(first)
	eventually(t, 10*time.Second, "the removed pod no longer called", func() bool {
		n := served(first)
		for range 6 { // ties rotate: with both pods listed, 6 calls in a row never all miss one
			call()
		}
		return served(first) == n
	})
	if served(first) > before+6*4 {
		t.Fatalf("the removed pod kept getting calls: %v tokens after removal", served(first)-before)
	}
	first.Kill()
	for range 6 {
		call()
	}
	f.idle(t)
}
