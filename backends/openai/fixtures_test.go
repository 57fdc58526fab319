package openai

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fixtures", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fake is a real HTTP server on loopback that answers with recorded or
// documented bodies; it records what it was sent.
type fake struct {
	*httptest.Server
	mu       sync.Mutex
	bodies   []map[string]any
	headers  []http.Header
	hits     atomic.Int64
	handle   func(w http.ResponseWriter, r *http.Request)
	metrics  atomic.Pointer[[]byte]
	released chan struct{}
}

func newFake(t testing.TB, handle func(w http.ResponseWriter, r *http.Request)) *fake {
	t.Helper()
	f := &fake{handle: handle}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/metrics":
		if m := f.metrics.Load(); m != nil {
			_, _ = w.Write(*m)
			return
		}
		http.NotFound(w, r)
		return
	case "/health":
		return
	case "/v1/models":
		_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"meta-llama/Llama-3.3-70B-Instruct","object":"model"}]}`)
		return
	}
	f.hits.Add(1)
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	f.headers = append(f.headers, r.Header.Clone())
	f.mu.Unlock()
	f.handle(w, r)
}

func (f *fake) last() (map[string]any, http.Header) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[len(f.bodies)-1], f.headers[len(f.headers)-1]
}

func sse(body []byte) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(body)
	}
}

func newBackend(t *testing.T, opts map[string]string, o Options, urls ...string) *Backend {
	t.Helper()
	b, err := New(backends.Spec{Pool: "p", Endpoints: urls, MaxConcurrent: 8, Options: opts}, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func summarize(t *testing.T, chunks []*pb.GenerateChunk) (text string, tokens int32, final *pb.GenerateChunk) {
	t.Helper()
	var sb strings.Builder
	for i, c := range chunks {
		if (c.Usage != nil) != (i == len(chunks)-1) {
			t.Fatalf("chunk %d of %d has usage %v: only the last may", i, len(chunks), c.Usage)
		}
		sb.WriteString(c.Text)
		tokens += c.Tokens
	}
	return sb.String(), tokens, chunks[len(chunks)-1]
}

// Each server's documented stream shape comes out as the same switchyard
// stream: text in order, one final chunk whose tokens make the sum equal the
// server's usage, the finish reason mapped.
func TestStreamVariantsFromDocumentedFormats(t *testing.T) {
	for _, tc := range []struct {
		name, fixture string
		server        Server
		req           *pb.GenerateRequest
		text          string
		in, out       int32
		finish        pb.FinishReason
	}{
		{"vllm completions, stop string", "vllm-completions.sse", ServerVLLM, &pb.GenerateRequest{Model: "llama-3.3-70b", Prompt: "Say", MaxTokens: 8}, " Hello world", 5, 3, pb.FinishReason_FINISH_REASON_STOP_SEQUENCE},
		{"vllm chat, length", "vllm-chat.sse", ServerVLLM, &pb.GenerateRequest{Model: "llama-3.3-70b", Messages: chat("hi"), MaxTokens: 3}, "Bonjour le monde", 21, 3, pb.FinishReason_FINISH_REASON_LENGTH},
		{"sglang chat, matched_stop", "sglang-chat.sse", ServerSGLang, &pb.GenerateRequest{Model: "llama-3.3-70b", Messages: chat("count"), MaxTokens: 8}, "One two", 17, 3, pb.FinishReason_FINISH_REASON_STOP_SEQUENCE},
		{"tgi chat, eos_token", "tgi-chat.sse", ServerTGI, &pb.GenerateRequest{Model: "llama-3.3-70b", Messages: chat("what"), MaxTokens: 8}, "Deep learning.", 11, 3, pb.FinishReason_FINISH_REASON_STOP},
		{"ollama chat, zero usage until the end", "ollama-chat.sse", ServerOllama, &pb.GenerateRequest{Model: "llama-3.3-70b", Messages: chat("hey"), MaxTokens: 8}, "Hi there", 9, 2, pb.FinishReason_FINISH_REASON_STOP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, sse(fixture(t, tc.fixture)))
			b := newBackend(t, map[string]string{OptServer: string(tc.server), OptMetrics: "off", OptModelNames + ".llama-3.3-70b": "meta-llama/Llama-3.3-70B-Instruct"}, Options{}, f.URL)
			chunks, err := collect(context.Background(), b, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			text, tokens, final := summarize(t, chunks)
			if text != tc.text || tokens != tc.out || final.Usage.InputTokens != tc.in || final.Usage.OutputTokens != tc.out || final.FinishReason != tc.finish {
				t.Fatalf("got %q, %d tokens, final %+v; want %q, %d in, %d out, %v", text, tokens, final, tc.text, tc.in, tc.out, tc.finish)
			}
			body, _ := f.last()
			if body["model"] != "meta-llama/Llama-3.3-70B-Instruct" || body["stream"] != true {
				t.Fatalf("request body %v: the served model name and stream flag must be sent", body)
			}
			if so, _ := body["stream_options"].(map[string]any); so["include_usage"] != true {
				t.Fatalf("stream_options %v", body["stream_options"])
			}
		})
	}
}

// A server that sends no usage (or only zeros) gives no input count: the
// adapter reports input 0 for the router to charge its own estimate, never
// a guess of its own; output is the deltas sent (streams) or estimated from
// the text (unary).
func TestNoUsageFromTheServerIsNoInputCount(t *testing.T) {
	stream := "data: {\"choices\":[{\"text\":\"one \"}]}\n\ndata: {\"choices\":[{\"text\":\"two \",\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0}}\n\ndata: [DONE]\n\n"
	unary := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"choices":[{"text":"twelve bytes","finish_reason":"stop"}]}`)
	}
	req := &pb.GenerateRequest{Model: "m", Prompt: "a prompt of some forty bytes, give or take", MaxTokens: 9}
	b := newBackend(t, map[string]string{OptServer: "vllm", OptMetrics: "off"}, Options{}, newFake(t, sse([]byte(stream))).URL)
	chunks, err := collect(context.Background(), b, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, tokens, final := summarize(t, chunks); final.Usage.InputTokens != 0 || final.Usage.OutputTokens != 2 || tokens != 2 {
		t.Fatalf("stream without usage: %d tokens, final %+v; want input 0, output 2", tokens, final)
	}
	b = newBackend(t, map[string]string{OptServer: "vllm", OptMetrics: "off"}, Options{}, newFake(t, unary).URL)
	resp, err := b.Generate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Usage.InputTokens != 0 || resp.Usage.OutputTokens != 3 {
		t.Fatalf("unary without usage: %+v; want input 0, output 3", resp.Usage)
	}
}

// A stream without a final chunk or [DONE], an error event in the stream,
// and a stream cut by the connection are pool failures, never a short answer.
func TestStreamFailuresAreUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		handle func(w http.ResponseWriter, r *http.Request)
		want   string
	}{
		{"no final chunk", sse(fixture(t, "cut.sse")), "without a final chunk"},
		{"error event", sse(fixture(t, "vllm-error-in-stream.sse")), "engine dead"},
		{"connection cut", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			body := fixture(t, "cut.sse")
			_, _ = w.Write(body[:bytes.Index(body, []byte("\n\n"))+2]) // one whole event
			w.(http.Flusher).Flush()
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		}, "stream broke"},
		{"garbage", sse([]byte("data: {not json\n\n")), "bad stream event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.handle)
			b := newBackend(t, map[string]string{OptServer: "vllm", OptMetrics: "off"}, Options{}, f.URL)
			var got int
			err := b.GenerateStream(context.Background(), &pb.GenerateRequest{Model: "m", Prompt: "x", MaxTokens: 9}, func(c *pb.GenerateChunk) error {
				if c.Usage != nil || c.FinishReason != pb.FinishReason_FINISH_REASON_UNSPECIFIED {
					t.Errorf("a failed stream sent a final chunk %+v", c)
				}
				got++
				return nil
			})
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want UNAVAILABLE containing %q", err, tc.want)
			}
		})
	}
}

// HTTP answers map onto the classes the router acts on.
func TestHTTPErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   int
		header map[string]string
		body   string
		prompt bool
		want   codes.Code
		msg    string
	}{
		{"vllm context overflow", 400, nil, `{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion).","type":"BadRequestError","param":null,"code":400}`, false, codes.InvalidArgument, "messages: longer than the context window"},
		{"llama.cpp overflow", 400, nil, `{"error":{"code":400,"message":"request (3002 tokens) exceeds the available context size (1024 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":3002,"n_ctx":1024}}`, true, codes.InvalidArgument, "prompt: longer than the context window"},
		{"tgi validation", 422, nil, `{"error":"Input validation error: inputs tokens + max_new_tokens must be <= 4096. Given: 4000 inputs tokens and 500 max_new_tokens","error_type":"validation"}`, true, codes.InvalidArgument, "prompt: longer than the context window"},
		{"bad field", 400, nil, `{"error":{"message":"temperature must be a number","type":"invalid_request_error"}}`, true, codes.InvalidArgument, "prompt: rejected by pool p"},
		{"payload too large", 413, nil, `too big`, true, codes.InvalidArgument, "prompt: longer than the context window"},
		{"unknown model", 404, nil, `{"error":{"message":"The model does not exist.","type":"NotFoundError"}}`, true, codes.InvalidArgument, "model: pool p"},
		{"rate limited", 429, map[string]string{"Retry-After": "2"}, `{"error":{"message":"Rate limit is exceeded.","code":"429"}}`, true, codes.ResourceExhausted, "retry after 2s"},
		{"overloaded with retry-after", 503, map[string]string{"Retry-After": "1"}, `busy`, true, codes.ResourceExhausted, "out of room"},
		{"503 without retry-after", 503, nil, `{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}`, true, codes.Unavailable, "Loading model"},
		{"server error", 500, nil, "boom\n\x1b[31m" + strings.Repeat("x", 500), true, codes.Unavailable, "HTTP 500: boom"},
		{"unauthorized", 401, nil, `{"error":{"message":"Incorrect API key provided: sk-test-123"}}`, true, codes.Unavailable, "refused the pool's credentials"},
		{"forbidden", 403, nil, ``, true, codes.Unavailable, "refused the pool's credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.code)
				_, _ = io.WriteString(w, tc.body)
			})
			var logs bytes.Buffer
			b := newBackend(t, map[string]string{OptServer: "vllm", OptMetrics: "off"}, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, f.URL)
			req := &pb.GenerateRequest{Model: "m", Prompt: "x", MaxTokens: 4}
			if !tc.prompt {
				req = &pb.GenerateRequest{Model: "m", Messages: chat("x"), MaxTokens: 4}
			}
			for _, stream := range []bool{false, true} {
				var err error
				if stream {
					e := b.eps.list()[0]
					e.mu.Lock()
					e.coolUntil = time.Time{} // let the second call through
					e.mu.Unlock()
					_, err = collect(context.Background(), b, req)
				} else {
					_, err = b.Generate(context.Background(), req)
				}
				st := status.Convert(err)
				if st.Code() != tc.want || !strings.Contains(st.Message(), tc.msg) {
					t.Fatalf("stream=%v: %v, want %v containing %q", stream, err, tc.want, tc.msg)
				}
				if len(st.Message()) > 400 || strings.ContainsAny(st.Message(), "\n\x1b") || strings.Contains(st.Message(), "sk-test") {
					t.Fatalf("error message not bounded to one printable line: %q", st.Message())
				}
			}
			if strings.Contains(logs.String(), "sk-test") {
				t.Fatalf("a server's echo of a key reached the log:\n%s", logs.String())
			}
			if tc.code == 401 || tc.code == 403 {
				if n := strings.Count(logs.String(), "refused the pool's credentials"); n != 1 {
					t.Fatalf("credential refusal logged %d times, want once:\n%s", n, logs.String())
				}
			}
		})
	}
}

// A 429 with Retry-After: the call is a shortage, the endpoint is refused
// locally (no request reaches the server) and reports no capacity until the
// delay passes; then calls flow again.
func TestRetryAfterRefusesTheEndpointUntilTheDelayPasses(t *testing.T) {
	var limited atomic.Bool
	limited.Store(true)
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		if limited.Load() {
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _ = io.WriteString(w, `{"choices":[{"text":"ok","finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	})
	b := newBackend(t, map[string]string{OptServer: "openai"}, Options{}, f.URL)
	var mu sync.Mutex
	now := time.Now()
	b.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	req := &pb.GenerateRequest{Model: "m", Prompt: "x", MaxTokens: 1}
	if _, ok := b.Load(); ok {
		t.Fatal("a server without metrics reported load before any refusal")
	}
	if _, err := b.Generate(context.Background(), req); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("first call: %v", err)
	}
	limited.Store(false)
	for range 3 {
		if _, err := b.Generate(context.Background(), req); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("call during the delay: %v", err)
		}
	}
	if n := f.hits.Load(); n != 1 {
		t.Fatalf("server saw %d calls during its Retry-After, want 1", n)
	}
	if l, ok := b.Load(); !ok || l.Capacity != 0 {
		t.Fatalf("load during the delay %+v %v: want reported and no capacity", l, ok)
	}
	advance(5 * time.Second)
	if _, err := b.Generate(context.Background(), req); err != nil {
		t.Fatalf("after the delay: %v", err)
	}
	if _, ok := b.Load(); ok {
		t.Fatal("load still reported after the delay on a server without metrics")
	}
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", time.Second}, {"3", 3 * time.Second}, {"0.5", 500 * time.Millisecond}, {"0", 100 * time.Millisecond},
		{"99999999", time.Minute}, {"-4", time.Second}, {"soon", time.Second},
		{now.Add(7 * time.Second).Format(http.TimeFormat), 7 * time.Second},
	} {
		if got := retryAfter(tc.v, now, time.Minute); got != tc.want {
			t.Errorf("Retry-After %q: %s, want %s", tc.v, got, tc.want)
		}
	}
}

// The load signal per server kind, from documented (vLLM, SGLang, TGI) and
// recorded (llama.cpp) metrics.
func TestParseLoadPerServer(t *testing.T) {
	for _, tc := range []struct {
		server  Server
		fixture string
		want    serverLoad
	}{
		{ServerVLLM, "vllm.prom", serverLoad{running: 61, queued: 2}},
		{ServerVLLM, "vllm-v0-kvfull.prom", serverLoad{running: 12, saturated: true}},
		{ServerSGLang, "sglang.prom", serverLoad{running: 18}},
		{ServerTGI, "tgi.prom", serverLoad{running: 7, queued: 3}},
		{ServerLlamaCpp, "llamacpp.prom", serverLoad{}},
	} {
		got, err := parseLoad(tc.server, fixture(t, tc.fixture))
		if err != nil || got != tc.want {
			t.Errorf("%s %s: %+v %v, want %+v", tc.server, tc.fixture, got, err, tc.want)
		}
	}
	if _, err := parseLoad(ServerVLLM, fixture(t, "tgi.prom")); err == nil || !strings.Contains(err.Error(), "server: vllm right?") {
		t.Errorf("vLLM names on TGI metrics: %v", err)
	}
	if _, err := parseLoad(ServerTGI, []byte("tgi_queue_size{ 3\n")); err == nil {
		t.Error("malformed metrics accepted")
	}
	if got, _ := parseLoad(ServerTGI, []byte("tgi_queue_size NaN\ntgi_batch_current_size -5\n")); got != (serverLoad{}) {
		t.Errorf("NaN and negative gauges: %+v", got)
	}
}

// Scraped metrics become the pool's load: a vLLM server with a queue is full
// at what it runs; two endpoints add up.
func TestScrapedLoadAcrossEndpoints(t *testing.T) {
	a := newFake(t, nil)
	a.metrics.Store(ptr(fixture(t, "vllm.prom")))
	bsrv := newFake(t, nil)
	bsrv.metrics.Store(ptr(fixture(t, "sglang.prom")))
	b := newBackend(t, map[string]string{OptServer: "vllm", OptMetricsInterval: "20ms", OptSlotsPerEndpoint: "64"}, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, a.URL, bsrv.URL)
	var l backends.Load
	var ok bool
	if !testwait.Until(5*time.Second, func() bool {
		l, ok = b.Load()
		// a: 61 running, 2 queued → full at 61; b's metrics are not vLLM's: unknown, 64 slots, nothing outstanding.
		return ok && l.Running == 61 && l.Queued == 2 && l.Capacity == 61+64
	}) {
		t.Fatalf("load %+v %v", l, ok)
	}
}

// Calls go to the endpoint with the fewest outstanding; one that refuses
// connections goes to the back of the line.
func TestLeastOutstandingAndDeadEndpoints(t *testing.T) {
	release := make(chan struct{})
	var aHits, bHits atomic.Int64
	handler := func(hits *atomic.Int64, block bool) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			if block {
				<-release
			}
			_, _ = io.WriteString(w, `{"choices":[{"text":"ok","finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
		}
	}
	a := newFake(t, handler(&aHits, true))
	bsrv := newFake(t, handler(&bHits, false))
	be := newBackend(t, map[string]string{OptMetrics: "off"}, Options{}, a.URL, bsrv.URL)
	req := &pb.GenerateRequest{Model: "m", Prompt: "x", MaxTokens: 1}
	// Park one call on whichever endpoint it lands; then the next 6 go to the other.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _, _ = be.Generate(context.Background(), req) }()
	testwait.For(t, 5*time.Second, "the first call to reach an endpoint", func() bool { return aHits.Load()+bHits.Load() > 0 })
	if aHits.Load() == 0 {
		// It landed on b and finished; park it on a explicitly.
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = be.Generate(context.Background(), req) }()
		testwait.For(t, 5*time.Second, "a call parked on endpoint a", func() bool { return aHits.Load() > 0 })
	}
	before := bHits.Load()
	for range 6 {
		if _, err := be.Generate(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if got := bHits.Load() - before; got != 6 || aHits.Load() != 1 {
		t.Fatalf("with a call outstanding on a: b got %d of 6, a %d in all", got, aHits.Load())
	}
	close(release)
	wg.Wait()

	// A dead endpoint: its first call fails (UNAVAILABLE), then the live one is preferred.
	dead := newFake(t, nil)
	dead.Close()
	be2 := newBackend(t, map[string]string{OptMetrics: "off"}, Options{}, dead.URL, bsrv.URL)
	fails := 0
	for range 10 {
		if _, err := be2.Generate(context.Background(), req); err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("dead endpoint: %v", err)
			}
			fails++
		}
	}
	if fails != 1 {
		t.Fatalf("%d of 10 calls failed on a dead endpoint, want 1 (then it goes to the back)", fails)
	}
}

type fakeResolver struct {
	mu    sync.Mutex
	addrs []string
	err   error
	calls int
}

func (r *fakeResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if host != "llama.inference.svc" {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return append([]string(nil), r.addrs...), r.err
}

func (r *fakeResolver) set(err error, addrs ...string) {
	r.mu.Lock()
	r.addrs, r.err = addrs, err
	r.mu.Unlock()
}

// dns:/// endpoints follow the name: new addresses get calls, gone ones
// stop getting them, and a failed lookup keeps the last answer.
func TestDNSEndpointsFollowTheName(t *testing.T) {
	lis1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := lis1.Addr().(*net.TCPAddr).Port
	lis2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	var seen sync.Map
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Context().Value(http.LocalAddrContextKey).(net.Addr).String())
		v, _ := seen.LoadOrStore(host, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		_, _ = io.WriteString(w, `{"choices":[{"text":"ok","finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	})
	for _, l := range []net.Listener{lis1, lis2} {
		s := &httptest.Server{Listener: l, Config: &http.Server{Handler: h}}
		s.Start()
		t.Cleanup(s.Close)
	}
	count := func(ip string) int64 {
		v, ok := seen.Load(ip)
		if !ok {
			return 0
		}
		return v.(*atomic.Int64).Load()
	}
	r := &fakeResolver{}
	r.set(nil, "127.0.0.1")
	b := newBackend(t, map[string]string{OptMetrics: "off", OptResolveInterval: "1h"}, Options{Resolver: r}, "dns:///llama.inference.svc:"+itoa(port))
	ctx := context.Background()
	req := &pb.GenerateRequest{Model: "m", Prompt: "x", MaxTokens: 1}
	call := func(n int) {
		for range n {
			if _, err := b.Generate(ctx, req); err != nil {
				t.Fatal(err)
			}
		}
	}
	call(4)
	if count("127.0.0.1") != 4 || count("127.0.0.2") != 0 {
		t.Fatalf("one address: %d/%d", count("127.0.0.1"), count("127.0.0.2"))
	}
	r.set(nil, "127.0.0.2", "127.0.0.1")
	if err := b.eps.resolve(ctx); err != nil {
		t.Fatal(err)
	}
	call(6)
	if count("127.0.0.2") == 0 {
		t.Fatal("a new address got no calls")
	}
	r.set(&net.DNSError{Err: "server misbehaving", Name: "llama.inference.svc", IsTemporary: true})
	if err := b.eps.resolve(ctx); err == nil {
		t.Fatal("a failed lookup was not reported")
	}
	if n := len(b.eps.list()); n != 2 {
		t.Fatalf("a failed lookup left %d endpoints, want the previous 2", n)
	}
	r.set(nil, "127.0.0.2")
	if err := b.eps.resolve(ctx); err != nil {
		t.Fatal(err)
	}
	before := count("127.0.0.1")
	call(4)
	if count("127.0.0.1") != before {
		t.Fatal("a removed address still got calls")
	}
	// The background loop resolves too (resolve_interval), without a call.
	r2 := &fakeResolver{}
	r2.set(nil, "127.0.0.1")
	b2 := newBackend(t, map[string]string{OptMetrics: "off", OptResolveInterval: "10ms"}, Options{Resolver: r2}, "dns:///llama.inference.svc:"+itoa(port))
	testwait.For(t, 5*time.Second, "three background re-resolutions", func() bool {
		r2.mu.Lock()
		n := r2.calls
		r2.mu.Unlock()
		return n >= 3 && len(b2.eps.list()) == 1
	})
}

func itoa(n int) string { return strconv.Itoa(n) }

// Credentials from an environment variable or a file, as Bearer or Azure's
// api-key header; never in an error or log.
func TestCredentials(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	})
	t.Setenv("SWITCHYARD_TEST_KEY", "sk-env-secret")
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("file-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	req := &pb.GenerateRequest{Model: "gpt-4o", Messages: chat("x"), MaxTokens: 5, Sampling: &pb.SamplingParameters{TopK: ptr[int32](3)}}
	for _, tc := range []struct {
		opts         map[string]string
		header, want string
	}{
		{map[string]string{OptAPIKeyEnv: "SWITCHYARD_TEST_KEY"}, "Authorization", "Bearer sk-env-secret"},
		{map[string]string{OptAPIKeyFile: keyFile, OptAuthHeader: "api-key", OptModelNames + ".gpt-4o": "my-deployment"}, "Api-Key", "file-secret"},
	} {
		tc.opts[OptServer] = "openai"
		b := newBackend(t, tc.opts, Options{}, f.URL+"/openai/v1")
		if _, err := b.Generate(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		body, h := f.last()
		if h.Get(tc.header) != tc.want {
			t.Fatalf("%v: header %s = %q", tc.opts, tc.header, h.Get(tc.header))
		}
		if _, ok := body["top_k"]; ok || body["max_completion_tokens"] != float64(5) || body["max_tokens"] != nil {
			t.Fatalf("OpenAI/Azure body %v: no top_k, max_completion_tokens instead of max_tokens", body)
		}
	}
	if body, _ := f.last(); body["model"] != "my-deployment" {
		t.Fatalf("deployment name not sent: %v", body["model"])
	}
	_, err := New(backends.Spec{Pool: "p", Endpoints: []string{f.URL}, Options: map[string]string{OptAPIKeyEnv: "SWITCHYARD_TEST_UNSET"}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "SWITCHYARD_TEST_UNSET is empty or unset") {
		t.Fatalf("unset key variable: %v", err)
	}
}

// TLS with a given CA and a client certificate; without the CA the server
// is not trusted.
func TestTLSWithGivenCA(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client cert", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, `{"choices":[{"text":"ok","finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writePEM(t, ca, "CERTIFICATE", srv.Certificate().Raw)
	// The test server's own pair doubles as a client certificate.
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePEM(t, cert, "CERTIFICATE", srv.TLS.Certificates[0].Certificate[0])
	writeKey(t, key, srv.TLS.Certificates[0].PrivateKey)
	req := &pb.GenerateRequest{Model: "m", Prompt: "x", MaxTokens: 1}
	b := newBackend(t, map[string]string{OptMetrics: "off", OptTLSCAFile: ca, OptTLSCertFile: cert, OptTLSKeyFile: key}, Options{}, srv.URL)
	if _, err := b.Generate(context.Background(), req); err != nil {
		t.Fatalf("with the CA and a client cert: %v", err)
	}
	plain := newBackend(t, map[string]string{OptMetrics: "off"}, Options{}, srv.URL)
	if _, err := plain.Generate(context.Background(), req); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA: %v", err)
	}
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Bad options fail at startup, naming the option; nothing is secret in the message.
func TestOptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		eps  []string
		opts map[string]string
		want string
	}{
		{[]string{"http://h:1"}, map[string]string{"sever": "vllm"}, `unknown option "sever"`},
		{[]string{"http://h:1"}, map[string]string{OptServer: "triton"}, `option server: "triton" is not one of`},
		{[]string{"http://h:1"}, map[string]string{OptMetricsInterval: "-1s"}, "option metrics_interval"},
		{[]string{"http://h:1"}, map[string]string{OptSlotsPerEndpoint: "0"}, "option slots_per_endpoint"},
		{[]string{"http://h:1"}, map[string]string{OptServer: "ollama", OptMetrics: "on"}, "server ollama has no load metrics"},
		{[]string{"http://h:1"}, map[string]string{OptAPIKeyEnv: "A", OptAPIKeyFile: "/x"}, "not both"},
		{[]string{"http://h:1"}, map[string]string{OptAPIKeyFile: "/nonexistent/key"}, "api key file"},
		{[]string{"http://h:1"}, map[string]string{OptAuthHeader: "x-token"}, "option auth_header"},
		{[]string{"http://h:1"}, map[string]string{OptTLSCertFile: "/a.pem"}, "go together"},
		{[]string{"http://h:1"}, map[string]string{OptTLSCAFile: "/nonexistent/ca.pem"}, "tls.ca_file"},
		{[]string{"http://h:1"}, map[string]string{OptModelNames + ".m": ""}, "option model_names.m"},
		{[]string{"h:1"}, nil, `endpoint "h:1": want http(s)://`},
		{[]string{"http://user:pw@h:1"}, nil, "want http(s)://"},
		{[]string{"dns:///h"}, nil, "want dns:///host:port"},
		{[]string{"dns:///h:http"}, nil, "is not a number"},
		{nil, nil, "no endpoints"},
	} {
		_, err := New(backends.Spec{Pool: "p", Endpoints: tc.eps, Options: tc.opts}, Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want an error containing %q", tc.eps, tc.opts, err, tc.want)
		}
	}
}

// A trailing assistant message per server kind: vLLM and SGLang get the
// continue flags, llama.cpp/TGI/Ollama the bare prefill, trtllm-serve the
// flattened chat on /v1/completions; OpenAI refuses to continue a chat.
func TestChatContinuationRequests(t *testing.T) {
	cont := &pb.GenerateRequest{Model: "m", Messages: chat("hi"), MaxTokens: 10, Continuation: &pb.Continuation{GeneratedText: "Once upon", GeneratedTokens: 3}}
	for _, tc := range []struct {
		server   Server
		path     string
		flags    bool
		lastText string
	}{
		{ServerVLLM, "/chat/completions", true, "Once upon"},
		{ServerSGLang, "/chat/completions", true, "Once upon"},
		{ServerLlamaCpp, "/chat/completions", false, "Once upon"},
		{ServerTGI, "/chat/completions", false, "Once upon"},
		{ServerOllama, "/chat/completions", false, "Once upon"},
		{ServerTRTLLM, "/completions", false, ""},
	} {
		c, err := parseSpec(backends.Spec{Pool: "p", Endpoints: []string{"http://h:1"}, Options: map[string]string{OptServer: string(tc.server)}})
		if err != nil {
			t.Fatal(err)
		}
		in, err := c.build(cont, true)
		if err != nil {
			t.Fatal(err)
		}
		var w map[string]any
		_ = json.Unmarshal(in.body, &w)
		if in.path != tc.path || (w["continue_final_message"] == true) != tc.flags || (w["add_generation_prompt"] == false) != tc.flags || w["max_tokens"] != float64(7) {
			t.Errorf("%s: %s %v", tc.server, in.path, w)
		}
		if tc.lastText != "" {
			msgs := w["messages"].([]any)
			last := msgs[len(msgs)-1].(map[string]any)
			if last["role"] != "assistant" || last["content"] != tc.lastText || in.prefill != tc.lastText {
				t.Errorf("%s: last message %v", tc.server, last)
			}
		} else if p, _ := w["prompt"].(string); !strings.HasSuffix(p, "user: hi\nassistant:Once upon") {
			t.Errorf("%s: flattened prompt %q", tc.server, p)
		}
	}
	c, _ := parseSpec(backends.Spec{Pool: "p", Endpoints: []string{"http://h:1"}})
	if _, err := c.build(cont, true); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("openai chat continuation: %v", err)
	}
	b := &Backend{cfg: c}
	if b.Capabilities().Continuation {
		t.Error("server: openai must not claim continuation")
	}
}

func writeKey(t *testing.T, path string, key any) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "PRIVATE KEY", der)
}

// metrics_port: the load signal read from another port of the same host
// (TGI 3 serves /metrics on --prometheus-port).
func TestMetricsOnTheirOwnPort(t *testing.T) {
	api := newFake(t, nil)
	prom := newFake(t, nil)
	prom.metrics.Store(ptr(fixture(t, "tgi.prom")))
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(prom.URL, "http://"))
	b := newBackend(t, map[string]string{OptServer: "tgi", OptMetricsInterval: "20ms", OptMetricsPort: port, OptSlotsPerEndpoint: "16"}, Options{}, api.URL)
	var l backends.Load
	var ok bool
	if !testwait.Until(5*time.Second, func() bool {
		l, ok = b.Load()
		return ok && l.Running == 7 && l.Queued == 3 && l.Capacity == 7 // queued calls: full at what runs
	}) {
		t.Fatalf("load %+v %v", l, ok)
	}
	if _, err := New(backends.Spec{Pool: "p", Endpoints: []string{api.URL}, Options: map[string]string{OptMetricsPort: "99999"}}, Options{}); err == nil {
		t.Fatal("bad metrics_port accepted")
	}
}

// A server that stops talking is a failure within the adapter's bounds (the
// caller set no deadline); a client slow to take chunks is not.
func TestSilentServersAndSlowClients(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hang := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		ev := fixture(t, "cut.sse")
		_, _ = w.Write(ev[:bytes.Index(ev, []byte("\n\n"))+2])
		w.(http.Flusher).Flush()
		select { // then silence
		case <-release:
		case <-r.Context().Done():
		}
	})
	b := newBackend(t, map[string]string{OptMetrics: "off", OptStreamIdleTimeout: "100ms", OptRequestTimeout: "300ms"}, Options{}, hang.URL)
	req := &pb.GenerateRequest{Model: "m", Prompt: "x", MaxTokens: 5}
	start := time.Now()
	_, err := collect(context.Background(), b, req)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "silent") || time.Since(start) > 2*time.Second {
		t.Fatalf("silent stream: %v after %s", err, time.Since(start))
	}
	start = time.Now()
	if _, err := b.Generate(context.Background(), req); status.Code(err) != codes.Unavailable || time.Since(start) > 2*time.Second {
		t.Fatalf("unary call to a server that never finishes: %v after %s", err, time.Since(start))
	}

	fast := newFake(t, sse(fixture(t, "vllm-chat.sse")))
	slow := newBackend(t, map[string]string{OptServer: "vllm", OptMetrics: "off", OptStreamIdleTimeout: "50ms"}, Options{}, fast.URL)
	err = slow.GenerateStream(context.Background(), &pb.GenerateRequest{Model: "m", Messages: chat("x"), MaxTokens: 3}, func(c *pb.GenerateChunk) error {
		time.Sleep(120 * time.Millisecond) // a slow client, longer than the idle bound per chunk
		return nil
	})
	if err != nil {
		t.Fatalf("slow client: %v", err)
	}
}
