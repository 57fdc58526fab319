// Package openai is the backend adapter for OpenAI-compatible HTTP model
// servers: vLLM (on GPUs, on Trainium/Inferentia through Neuron, on TPU),
// SGLang, TGI, TensorRT-LLM's trtllm-serve, llama.cpp's llama-server,
// Ollama and managed endpoints such as Azure OpenAI.
//
// Prompts go to /v1/completions, chats to /v1/chat/completions; streams are
// SSE with stream_options.include_usage. A pool has one or more endpoints
// (URLs, or dns:///name:port re-resolved periodically); each call goes to
// the endpoint with the fewest calls outstanding. The adapter scrapes each
// server's Prometheus /metrics off the request path into a backends.Load,
// honours 429/503 Retry-After by refusing that endpoint until the delay
// passes, and maps HTTP failures onto the gRPC codes the router classifies
// (see httpError). docs/backends.md has the per-server details.
package openai

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// AdapterName is the name the adapter registers under (a pool's `adapter:`).
const AdapterName = "openai"

// Options are the process-wide settings of the adapter.
type Options struct {
	// Logger for credential refusals and failing scrapes (default: slog.Default()).
	Logger *slog.Logger
	// Resolver for dns:/// endpoints (default: net.DefaultResolver).
	Resolver Resolver
	// RoundTripper, when set, wraps the pool's HTTP transport: a cloud
	// identity's bearer token (BearerTransport; Azure Entra ID in azure.go,
	// Vertex AI in backends/vertex).
	RoundTripper func(http.RoundTripper) http.RoundTripper
}

// Register adds the adapter to r under AdapterName.
func Register(r *backends.Registry, o Options) {
	r.Register(AdapterName, func(s backends.Spec) (backends.Backend, error) { return newPool(s, o) })
}

// Backend is one pool of OpenAI-compatible servers. Safe for concurrent use.
type Backend struct {
	cfg    *poolConfig
	eps    *endpointSet
	client *http.Client
	log    *slog.Logger
	now    func() time.Time

	key atomic.Pointer[string] // API key; "" for none

	authWarned atomic.Bool
	closed     atomic.Bool
	stop       context.CancelFunc
	done       chan struct{}

	logMu         sync.Mutex
	lastScrapeLog time.Time
}

var (
	_ backends.Backend      = (*Backend)(nil)
	_ backends.LoadReporter = (*Backend)(nil)
)

// New validates the pool's options and endpoints and starts the background
// loop (scrapes, DNS re-resolution, key file re-reads). It does not touch the
// network before returning.
func New(spec backends.Spec, o Options) (*Backend, error) {
	cfg, err := parseSpec(spec)
	if err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4 * cfg.maxConcurrent,
		MaxIdleConnsPerHost:   cfg.maxConcurrent + 2, // the pool's calls plus scrapes and checks
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
	if cfg.tls != nil {
		tr.TLSClientConfig = cfg.tls.Clone()
	} else {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	for _, t := range cfg.targets {
		if t.dynamic() && tr.TLSClientConfig.ServerName == "" {
			// Addresses come from DNS: certificates name the DNS name.
			tr.TLSClientConfig.ServerName = t.host
		}
	}
	var rt http.RoundTripper = tr
	if o.RoundTripper != nil {
		rt = o.RoundTripper(tr)
	}
	b := &Backend{
		cfg: cfg, eps: newEndpointSet(cfg, o.Resolver), log: o.Logger, now: time.Now,
		client: &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		done:   make(chan struct{}),
	}
	if err := b.loadKey(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.stop = cancel
	go b.loop(ctx)
	return b, nil
}

func (b *Backend) loadKey() error {
	key := ""
	switch {
	case b.cfg.keyEnv != "":
		key = strings.TrimSpace(os.Getenv(b.cfg.keyEnv))
	case b.cfg.keyFile != "":
		k, err := readKeyFile(b.cfg.keyFile)
		if err != nil {
			return err
		}
		key = k
	}
	b.key.Store(&key)
	return nil
}

// keyReread is how often an api_key_file is read again (rotated secrets).
const keyReread = 30 * time.Second

// loop runs the off-request-path work until Close.
func (b *Backend) loop(ctx context.Context) {
	defer close(b.done)
	if err := b.eps.resolve(ctx); err != nil {
		b.log.Warn("resolve endpoints", "pool", b.cfg.pool, "err", err)
	}
	scrapeEvery := b.cfg.metricsEvery
	if !b.cfg.metrics {
		scrapeEvery = time.Hour
	}
	scrape := time.NewTicker(scrapeEvery)
	defer scrape.Stop()
	resolve := time.NewTicker(b.cfg.resolveEvery)
	defer resolve.Stop()
	reread := time.NewTicker(keyReread)
	defer reread.Stop()
	if b.cfg.metrics {
		b.scrape(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-scrape.C:
			if b.cfg.metrics {
				b.scrape(ctx)
			}
		case <-resolve.C:
			if err := b.eps.resolve(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("re-resolve endpoints; keeping the previous addresses", "pool", b.cfg.pool, "err", err)
			}
		case <-reread.C:
			if b.cfg.keyFile != "" {
				if err := b.loadKey(); err != nil {
					b.log.Warn("re-read api key file; keeping the previous key", "pool", b.cfg.pool, "err", err)
				}
			}
		}
	}
}

// authorize sets the pool's credential header. The key is never logged.
func (b *Backend) authorize(r *http.Request) {
	key := *b.key.Load()
	if key == "" {
		return
	}
	if b.cfg.authHeader == "api-key" {
		r.Header.Set("api-key", key)
	} else {
		r.Header.Set("Authorization", "Bearer "+key)
	}
}

// authFailed logs a credential refusal loudly, once until a call succeeds again.
func (b *Backend) authFailed(ep *endpoint, code int) {
	if b.authWarned.CompareAndSwap(false, true) {
		b.log.Error("model server refused the pool's credentials: the pool fails every call until this is fixed",
			"pool", b.cfg.pool, "endpoint", ep.name, "http_status", code, "api_key_env", b.cfg.keyEnv, "api_key_file", b.cfg.keyFile)
	}
}

// Load implements backends.LoadReporter.
func (b *Backend) Load() (backends.Load, bool) {
	return b.eps.load(b.now(), 4*b.cfg.metricsEvery)
}

// Capabilities implements backends.Backend: prompts can always be continued
// (prompt + generated text); chats where the server kind has a way (see
// chatContinue), so a pool of plain OpenAI/Azure endpoints claims none.
// Tools, response_format, logprobs and embeddings follow the server kind
// (traits; docs/backends.md).
func (b *Backend) Capabilities() backends.Capabilities {
	t := b.cfg.traits
	return backends.Capabilities{Continuation: t.chatContinue != continueNone,
		Tools: t.tools, ResponseFormat: t.responseFormat, Logprobs: t.logprobs, Embeddings: t.embeddings, NoTopK: !t.topK}
}

// Close stops the background loop and closes idle connections.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.stop()
	<-b.done
	b.client.CloseIdleConnections()
	return nil
}

// call is one HTTP exchange with an endpoint.
type call struct {
	ep     *endpoint
	in     *built
	resp   *http.Response
	cancel context.CancelFunc
	// timedOut is set when the adapter's own bound (request or idle timeout) ended the call.
	timedOut atomic.Bool
	idle     *time.Timer
}

func (c *call) close() {
	if c.idle != nil {
		c.idle.Stop()
	}
	if c.resp != nil {
		_ = c.resp.Body.Close()
	}
	c.cancel()
	c.ep.outstanding.Add(-1)
}

// start picks an endpoint and sends the request; on return without error
// the response is 200 and the caller must close the call.
func (b *Backend) start(ctx context.Context, req *pb.GenerateRequest, stream bool) (*call, error) {
	if b.closed.Load() {
		return nil, status.Errorf(codes.Unavailable, "pool %s: backend closed", b.cfg.pool)
	}
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	in, err := b.cfg.build(req, stream)
	if err != nil {
		return nil, err
	}
	in.affinity = affinityKey(req)
	return b.send(ctx, in, stream)
}

// send posts a built request to an endpoint; on return without error the
// response is 200 and the caller must close the call.
func (b *Backend) send(ctx context.Context, in *built, stream bool) (*call, error) {
	if len(b.eps.list()) == 0 {
		_ = b.eps.resolve(ctx)
	}
	ep, err := b.eps.pick(b.now(), in.affinity)
	if err != nil {
		return nil, err
	}
	ep.outstanding.Add(1)
	cctx, cancel := context.WithCancel(ctx)
	c := &call{ep: ep, in: in, cancel: cancel}
	bound := time.AfterFunc(b.cfg.requestMax, func() { c.timedOut.Store(true); cancel() })
	c.idle = bound
	var resp *http.Response
	for try := 0; ; try++ {
		// A kept-alive connection the server closed just as it was reused
		// fails before any answer; that one exchange is tried once more on
		// a new connection (the server never saw the request whole).
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		hreq, err := http.NewRequestWithContext(httptrace.WithClientTrace(cctx, trace), http.MethodPost, ep.base+in.path, bytes.NewReader(in.body))
		if err != nil {
			c.close()
			return nil, status.Errorf(codes.Internal, "pool %s: build request: %v", b.cfg.pool, err)
		}
		hreq.Header.Set("Content-Type", "application/json")
		if stream {
			hreq.Header.Set("Accept", "text/event-stream")
		}
		b.authorize(hreq)
		resp, err = b.client.Do(hreq)
		if err == nil {
			break
		}
		if try == 0 && reused && ctx.Err() == nil && !c.timedOut.Load() {
			continue
		}
		c.close()
		return nil, b.transportError(ctx, c, err)
	}
	c.resp = resp
	if resp.StatusCode != http.StatusOK {
		herr, ref := b.httpError(resp, ep, in)
		if ref != nil {
			ep.refuse(b.now().Add(ref.after))
		}
		if resp.StatusCode >= 500 && ref == nil {
			ep.failed(b.now())
		}
		c.close()
		return nil, herr
	}
	b.authWarned.Store(false)
	return c, nil
}

// transportError classifies a failure below HTTP: the caller's own end, the
// adapter's timeout, or the server (refused, reset, cut) — a pool failure.
func (b *Backend) transportError(ctx context.Context, c *call, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	c.ep.failed(b.now())
	if c.timedOut.Load() {
		return status.Errorf(codes.Unavailable, "pool %s endpoint %s: no answer within %s", b.cfg.pool, c.ep.name, b.cfg.requestMax)
	}
	return status.Errorf(codes.Unavailable, "pool %s endpoint %s: %v", b.cfg.pool, c.ep.name, scrub(err))
}

// scrub drops the URL from a transport error (it may carry a query an
// operator considers private); the endpoint is named separately.
func scrub(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// maxResponseBody bounds a unary response (embeddings; a completion's bound
// is answerLimits').
const maxResponseBody = 16 << 20

// answerLimits bound a backend's answer to a call of maxTokens output
// tokens, from what those tokens can take: one SSE line (event) at most
// 16 KiB plus every token's text JSON-escaped (6 bytes a byte), up to
// maxEventBytes; the whole answer (a stream's bytes, or a unary body) 64 KiB
// plus 8 KiB a token (an event with logprobs and its framing), up to
// maxResponseBody for a unary one. A backend that ignores max_tokens and
// writes without end is cut off there (backends.RunawayError).
func answerLimits(maxTokens int32) (line, total int64) {
	n := int64(max(maxTokens, 1))
	line = min(maxEventBytes, 16<<10+n*backends.MaxTokenBytes*6)
	total = 64<<10 + n*(8<<10)
	return line, total
}

// errTooLong: a backend's answer passed answerLimits' total.
var errTooLong = errors.New("answer longer than allowed")

// limitedBody reads at most limit bytes, then fails with errTooLong.
type limitedBody struct {
	r    io.Reader
	left int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errTooLong
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// Generate implements backends.Backend.
func (b *Backend) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	c, err := b.start(ctx, req, false)
	if err != nil {
		return nil, err
	}
	defer c.close()
	_, limit := answerLimits(req.GetMaxTokens())
	limit = min(limit, maxResponseBody)
	body, err := io.ReadAll(io.LimitReader(c.resp.Body, limit+1))
	if err != nil {
		return nil, b.transportError(ctx, c, err)
	}
	if int64(len(body)) > limit {
		c.ep.failed(b.now())
		return nil, &backends.RunawayError{Pool: b.cfg.pool, MaxTokens: req.GetMaxTokens(), What: fmt.Sprintf("response of more than %d bytes", limit)}
	}
	var w wireResponse
	if err := json.Unmarshal(body, &w); err != nil || w.isError() || len(w.Choices) == 0 {
		return nil, status.Errorf(codes.Unavailable, "pool %s endpoint %s: response is not a completion: %s", b.cfg.pool, c.ep.name, quote(string(body)))
	}
	c.ep.succeeded()
	ch := &w.Choices[0]
	text := ch.Content()
	if b.cfg.traits.echoesPrefill && c.in.prefill != "" {
		text = strings.TrimPrefix(text, c.in.prefill)
	}
	resp := &pb.GenerateResponse{Text: text, FinishReason: ch.Finish(), Logprobs: ParseLogprobs(ch.Logprobs)}
	for _, tc := range ch.ToolCalls() {
		resp.ToolCalls = append(resp.ToolCalls, tc.Proto())
	}
	if resp.FinishReason == pb.FinishReason_FINISH_REASON_UNSPECIFIED {
		resp.FinishReason = pb.FinishReason_FINISH_REASON_STOP
	}
	if u := w.Usage; u != nil && (u.PromptTokens > 0 || u.CompletionTokens > 0) {
		resp.Usage = u.Proto()
	} else {
		// No count from the server: input 0 (the router uses its estimate),
		// output estimated from the text.
		resp.Usage = &pb.Usage{OutputTokens: int32(backends.EstimateTokens(text))}
	}
	return resp, nil
}

// maxToolCalls bounds a streamed tool call's index.
const maxToolCalls = 128

// maxEventBytes bounds one SSE line.
const maxEventBytes = 1 << 20

// GenerateStream implements backends.Backend. Every content delta becomes a
// chunk of one token (servers send one token per event; a server that sends
// more is corrected on the final chunk, which carries the rest of the
// server's completion_tokens, the usage and the finish reason), or of more
// for a delta longer than backends.MaxTokenBytes. A stream that ends without
// a finish reason or [DONE] is UNAVAILABLE; one longer than answerLimits
// allows for its max_tokens is a backends.RunawayError.
func (b *Backend) GenerateStream(ctx context.Context, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error) error {
	c, err := b.start(ctx, req, true)
	if err != nil {
		return err
	}
	defer c.close()
	// From here the idle bound: each line read pushes it back.
	c.idle.Stop()
	c.idle = time.AfterFunc(b.cfg.idleMax, func() { c.timedOut.Store(true); c.cancel() })
	total := time.AfterFunc(b.cfg.requestMax, func() { c.timedOut.Store(true); c.cancel() })
	defer total.Stop()

	lineMax, totalMax := answerLimits(req.GetMaxTokens())
	body := &limitedBody{r: c.resp.Body, left: totalMax}
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, min(64<<10, lineMax)), int(lineMax))
	var (
		sent     int32
		finish   pb.FinishReason
		usage    *WireUsage
		done     bool
		anyEvent bool
	)
	for sc.Scan() {
		c.idle.Reset(b.cfg.idleMax)
		line := sc.Bytes()
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue // comments, event:, id:, blank separators
		}
		data = bytes.TrimSpace(data)
		if string(data) == "[DONE]" {
			done = true
			break
		}
		anyEvent = true
		var w wireResponse
		if err := json.Unmarshal(data, &w); err != nil {
			if body.left <= 0 { // the last line, cut at the limit
				c.ep.failed(b.now())
				return &backends.RunawayError{Pool: b.cfg.pool, MaxTokens: req.GetMaxTokens(), What: fmt.Sprintf("stream of more than %d bytes after %d tokens", totalMax, sent)}
			}
			return status.Errorf(codes.Unavailable, "pool %s endpoint %s: bad stream event: %s", b.cfg.pool, c.ep.name, quote(string(data)))
		}
		if w.isError() {
			f := parseFault(data)
			return status.Errorf(codes.Unavailable, "pool %s endpoint %s: error in stream after %d tokens: %s", b.cfg.pool, c.ep.name, sent, quote(f.message))
		}
		if u := w.Usage; u != nil && (u.PromptTokens > 0 || u.CompletionTokens > 0) {
			usage = u
		}
		for i := range w.Choices {
			ch := &w.Choices[i]
			t, calls := ch.Content(), ch.ToolCalls()
			if t != "" || len(calls) > 0 {
				size := len(t)
				for j := range calls {
					size += len(calls[j].Function.Arguments)
				}
				// One token per event, or more for a delta longer than a
				// token can be: the router stops the call at its max_tokens.
				out := &pb.GenerateChunk{Text: t, Tokens: backends.DeltaTokens(size), Logprobs: ParseLogprobs(ch.Logprobs)}
				for j := range calls {
					d := &pb.ToolCallDelta{Id: calls[j].ID, Name: calls[j].Function.Name, Arguments: calls[j].Function.Arguments}
					if calls[j].Index != nil {
						d.Index = int32(min(max(*calls[j].Index, 0), maxToolCalls))
					} else {
						d.Index = int32(j)
					}
					out.ToolCalls = append(out.ToolCalls, d)
				}
				// A slow client is not a silent server: the idle bound waits.
				c.idle.Stop()
				if err := send(out); err != nil {
					return err
				}
				c.idle.Reset(b.cfg.idleMax)
				sent += out.Tokens
			}
			if fr := ch.Finish(); fr != pb.FinishReason_FINISH_REASON_UNSPECIFIED {
				finish = fr
			}
		}
	}
	if err := sc.Err(); err != nil && !done {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		c.ep.failed(b.now())
		switch {
		case errors.Is(err, errTooLong):
			return &backends.RunawayError{Pool: b.cfg.pool, MaxTokens: req.GetMaxTokens(), What: fmt.Sprintf("stream of more than %d bytes after %d tokens", totalMax, sent)}
		case errors.Is(err, bufio.ErrTooLong):
			return &backends.RunawayError{Pool: b.cfg.pool, MaxTokens: req.GetMaxTokens(), What: fmt.Sprintf("stream event longer than %d bytes", lineMax)}
		}
		if c.timedOut.Load() {
			return status.Errorf(codes.Unavailable, "pool %s endpoint %s: stream silent for %s or longer than %s after %d tokens", b.cfg.pool, c.ep.name, b.cfg.idleMax, b.cfg.requestMax, sent)
		}
		return status.Errorf(codes.Unavailable, "pool %s endpoint %s: stream broke after %d tokens: %v", b.cfg.pool, c.ep.name, sent, scrub(err))
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if !done && finish == pb.FinishReason_FINISH_REASON_UNSPECIFIED {
		c.ep.failed(b.now())
		return status.Errorf(codes.Unavailable, "pool %s endpoint %s: %v after %d tokens", b.cfg.pool, c.ep.name, errStreamCut, sent)
	}
	if !anyEvent {
		return status.Errorf(codes.Unavailable, "pool %s endpoint %s: stream had no events", b.cfg.pool, c.ep.name)
	}
	c.ep.succeeded()
	if finish == pb.FinishReason_FINISH_REASON_UNSPECIFIED {
		finish = pb.FinishReason_FINISH_REASON_STOP
	}
	final := &pb.GenerateChunk{FinishReason: finish}
	if usage != nil {
		out := clampTokens(usage.CompletionTokens)
		final.Tokens = max(0, out-sent)
		final.Usage = usage.Proto()
		final.Usage.OutputTokens = max(out, sent)
	} else {
		// No count from the server: input 0 (the router uses its estimate),
		// output the deltas sent.
		final.Usage = &pb.Usage{OutputTokens: sent}
	}
	return send(final)
}

// Check implements backends.Backend: healthy when at least one endpoint
// answers its server's /health (where the kind has one) and its
// /v1/models lists every mapped model name.
func (b *Backend) Check(ctx context.Context) error {
	eps := b.eps.list()
	if len(eps) == 0 {
		_ = b.eps.resolve(ctx)
		eps = b.eps.list()
	}
	if len(eps) == 0 {
		return status.Errorf(codes.Unavailable, "pool %s: no endpoint resolved", b.cfg.pool)
	}
	var last error
	for _, e := range eps {
		if last = b.checkOne(ctx, e); last == nil {
			return nil
		}
	}
	return status.Errorf(codes.Unavailable, "pool %s: no healthy endpoint: %v", b.cfg.pool, last)
}

// maxModelsBody bounds a /v1/models response.
const maxModelsBody = 4 << 20

func (b *Backend) checkOne(ctx context.Context, e *endpoint) error {
	if b.cfg.traits.health {
		if _, err := b.get(ctx, e.root+"/health", maxErrorBody); err != nil {
			return fmt.Errorf("endpoint %s: %w", e.name, err)
		}
	}
	body, err := b.get(ctx, e.base+"/models", maxModelsBody)
	if err != nil {
		return fmt.Errorf("endpoint %s: %w", e.name, err)
	}
	if !b.cfg.traits.checkModels || len(b.cfg.modelNames) == 0 {
		return nil
	}
	var v struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("endpoint %s: /models: %w", e.name, err)
	}
	have := map[string]bool{}
	for _, m := range v.Data {
		have[m.ID] = true
	}
	for fleet, served := range b.cfg.modelNames {
		if !have[served] {
			return fmt.Errorf("endpoint %s: /models does not list %q (model_names.%s)", e.name, quote(served), fleet)
		}
	}
	return nil
}
