// Package vertex is the backend adapter for Google Vertex AI (`adapter:
// vertex`): Anthropic models on Vertex through rawPredict and
// streamRawPredict with the Anthropic Messages body (api: anthropic), Gemini
// through generateContent and streamGenerateContent (api: gemini), and the
// OpenAI-compatible chat completions of a self-deployed model's endpoint
// (api: openai, e.g. vLLM on TPU from Model Garden; served by the openai
// adapter with this package's token).
//
// Tokens come from golang.org/x/oauth2/google: Application Default
// Credentials (GOOGLE_APPLICATION_CREDENTIALS, the gcloud file, Workload
// Identity and the metadata server on GKE/GCE) or a service-account key
// file. They are fetched at start-up and renewed token_refresh_before they
// expire, off the request path; a failing refresh fails this pool's health
// checks only. 429 / RESOURCE_EXHAUSTED and Anthropic's overloaded (529)
// are shortages: RESOURCE_EXHAUSTED, a local back-off with no capacity
// reported, as for Bedrock. 401/403 fail the pool (UNAVAILABLE, logged once,
// held 30 s or until the token changes): no retry loop.
package vertex

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/internal/managed"
	"github.com/switchyard-dev/switchyard/backends/openai"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// AdapterName is the name the adapter registers under (a pool's `adapter:`).
const AdapterName = "vertex"

// Scope is the OAuth scope the tokens are asked for.
const Scope = "https://www.googleapis.com/auth/cloud-platform"

// Options are the process-wide settings of the adapter.
type Options struct {
	// Logger for token failures and refusals (default: slog.Default()).
	Logger *slog.Logger
}

// Register adds the adapter to r under AdapterName.
func Register(r *backends.Registry, o Options) {
	r.Register(AdapterName, func(s backends.Spec) (backends.Backend, error) { return New(s, o) })
}

// New validates the pool's options (nothing touches the network) and
// starts the token refresh: an Anthropic pool (*Backend), or for api:
// openai an openai adapter pool carrying the token (*OpenAIPool).
func New(spec backends.Spec, o Options) (backends.Backend, error) {
	cfg, err := parseSpec(spec)
	if err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	gate := &managed.Gate{Pool: cfg.pool, MaxConcurrent: cfg.maxConcurrent, BackoffMin: cfg.backoffMin, BackoffMax: cfg.backoffMax}
	ref := newRefresher(cfg, gate, o.Logger)
	if cfg.api == "openai" {
		return newOpenAIPool(spec, cfg, gate, ref, o)
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4 * cfg.maxConcurrent,
		MaxIdleConnsPerHost:   cfg.maxConcurrent + 2,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
	b := &Backend{cfg: cfg, gate: gate, ref: ref, log: o.Logger,
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	ref.Start(context.Background())
	return b, nil
}

// newRefresher fetches tokens from ADC (or the pool's key file): a fresh
// credential lookup whenever the held token is within refresh_before of
// its expiry, so a renewal never waits for the library's own cache.
func newRefresher(cfg *poolConfig, gate *managed.Gate, log *slog.Logger) *managed.Refresher {
	var held atomic.Pointer[managed.Token]
	fetch := func(ctx context.Context) (managed.Token, error) {
		if t := held.Load(); t != nil && (t.Expiry.IsZero() || time.Until(t.Expiry) > cfg.refreshBefore) {
			return *t, nil
		}
		hc := &http.Client{Timeout: managed.FetchTimeout, Transport: http.DefaultTransport}
		ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
		params := google.CredentialsParams{Scopes: []string{Scope}, EarlyTokenRefresh: cfg.refreshBefore}
		var creds *google.Credentials
		var err error
		if cfg.credsFile != "" {
			var b []byte
			if b, err = os.ReadFile(cfg.credsFile); err == nil {
				creds, err = google.CredentialsFromJSONWithTypeAndParams(ctx, b, google.ServiceAccount, params)
			}
		} else {
			creds, err = google.FindDefaultCredentialsWithParams(ctx, params)
		}
		if err != nil {
			return managed.Token{}, fmt.Errorf("google credentials: %w", err)
		}
		tok, err := creds.TokenSource.Token()
		if err != nil {
			return managed.Token{}, fmt.Errorf("google token: %w", err)
		}
		t := managed.Token{Value: tok.AccessToken, Expiry: tok.Expiry}
		held.Store(&t)
		return t, nil
	}
	return &managed.Refresher{Pool: cfg.pool, Every: cfg.refreshEvery, Fetch: fetch, Gate: gate, Log: log}
}

// OpenAIPool is a Vertex pool with api: openai: the openai adapter's pool
// (server: openai) on the endpoint's OpenAI-compatible base, carrying this
// package's token.
type OpenAIPool struct {
	*openai.Backend
	cfg   *poolConfig
	gate  *managed.Gate
	ref   *managed.Refresher
	probe *http.Client
}

var (
	_ backends.Backend      = (*OpenAIPool)(nil)
	_ backends.LoadReporter = (*OpenAIPool)(nil)
)

func newOpenAIPool(spec backends.Spec, cfg *poolConfig, gate *managed.Gate, ref *managed.Refresher, o Options) (*OpenAIPool, error) {
	opts := map[string]string{openai.OptServer: "openai"}
	for k, v := range cfg.openaiOptions {
		opts[k] = v
	}
	for m, n := range cfg.modelNames {
		opts[openai.OptModelNames+"."+m] = n
	}
	opts[openai.OptRequestTimeout] = cfg.requestMax.String()
	opts[openai.OptStreamIdleTimeout] = cfg.idleMax.String()
	inner, err := openai.New(backends.Spec{Pool: spec.Pool, Accelerator: spec.Accelerator, Endpoints: []string{cfg.openaiBase()},
		MaxConcurrent: spec.MaxConcurrent, Options: opts}, openai.Options{Logger: o.Logger, RoundTripper: openai.BearerTransport(ref, nil)})
	if err != nil {
		return nil, err
	}
	p := &OpenAIPool{Backend: inner, cfg: cfg, gate: gate, ref: ref, probe: probeClient()}
	ref.Start(context.Background())
	return p, nil
}

// Check implements backends.Backend: the token refreshing and the
// endpoint reachable (Vertex serves no model list under the base).
func (p *OpenAIPool) Check(ctx context.Context) error {
	if err := p.gate.Health(); err != nil {
		return status.Errorf(codes.Unavailable, "pool %s: %v", p.cfg.pool, err)
	}
	if _, err := p.ref.Bearer(); err != nil {
		return status.Errorf(codes.Unavailable, "pool %s: %v", p.cfg.pool, err)
	}
	return probe(ctx, p.probe, p.cfg)
}

// Generate implements backends.Backend. Vertex endpoints serve chat
// completions only: a prompt is sent as one user turn.
func (p *OpenAIPool) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	p.ref.WaitFirst(ctx)
	return p.Backend.Generate(ctx, asChat(req))
}

// GenerateStream implements backends.Backend (a prompt as one user turn).
func (p *OpenAIPool) GenerateStream(ctx context.Context, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error) error {
	p.ref.WaitFirst(ctx)
	return p.Backend.GenerateStream(ctx, asChat(req), send)
}

func asChat(req *pb.GenerateRequest) *pb.GenerateRequest {
	if len(req.GetMessages()) > 0 || req.GetPrompt() == "" {
		return req
	}
	c := proto.Clone(req).(*pb.GenerateRequest)
	c.Messages = []*pb.ChatMessage{{Role: "user", Content: c.GetPrompt()}}
	c.Prompt = ""
	return c
}

// Close stops the token refresh and the inner pool.
func (p *OpenAIPool) Close() error {
	p.ref.Close()
	p.probe.CloseIdleConnections()
	return p.Backend.Close()
}

func probeClient() *http.Client {
	return &http.Client{
		Transport:     &http.Transport{Proxy: http.ProxyFromEnvironment, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, TLSHandshakeTimeout: 5 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// probe sees the endpoint answer HTTP (any status).
func probe(ctx context.Context, c *http.Client, cfg *poolConfig) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, cfg.base+"/", nil)
	if err != nil {
		return status.Errorf(codes.Internal, "pool %s: probe: %v", cfg.pool, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return status.Errorf(codes.Unavailable, "pool %s: endpoint unreachable: %v", cfg.pool, scrub(err))
	}
	_ = resp.Body.Close()
	return nil
}
