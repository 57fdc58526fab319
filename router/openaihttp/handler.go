// Package openaihttp is switchyard's OpenAI-compatible HTTP front door:
// POST /v1/chat/completions, POST /v1/completions and GET /v1/models, with
// server-sent events for stream: true, framed as the OpenAI API frames them.
//
// It is an edge and nothing more: every call goes through the router's
// Server.CompleteAs / Server.CompleteStreamAs / Server.EmbedAs, the same
// admission, tenant authentication, validation, routing, capacity, retries,
// continuation, queue and metrics as the gRPC API (rpc labels "http_chat",
// "http_completions" and "http_embeddings"). The caller's X-Api-Key (or
// Authorization: Bearer) header is read into a dispatch.Caller
// (edgehttp.Caller) and the router checks it (Server.AuthenticateCaller
// before the body is read, then admission). Routing hints come from
// X-Switchyard-* request headers; the route taken goes back in
// X-Switchyard-* response headers (for streams, the headers name the pool
// that sends the first token, told by CallInfo.OnRoute, and the final route
// comes as HTTP trailers and in the finishing chunk's "switchyard" field: a
// stream can be continued on another pool). The router's errors are the
// core's (router/dispatch); errors.go maps them to OpenAI's statuses and
// error bodies from one table, a 400's "param" from the field the
// *dispatch.InvalidError names.
//
// Import direction: openaihttp imports router, router/dispatch and
// router/edgehttp; router never imports it, and it imports no other edge.
package openaihttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/switchyard-dev/switchyard/internal/httpedge"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/edgehttp"
)

// RPC labels of HTTP calls in the router's metrics, logs and traces.
const (
	RPCChat        = "http_chat"
	RPCCompletions = "http_completions"
)

// Options configure a Handler.
type Options struct {
	// Router serves every call. Required.
	Router *router.Server
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider makes the server span of each call (its children are the
	// router's attempt spans). Default: no-op.
	TracerProvider trace.TracerProvider
	// MeterProvider records every answer in OpenTelemetry's
	// http.server.request.duration (by method, route and status). Default:
	// no-op.
	MeterProvider metric.MeterProvider
	// Propagator reads a caller's traceparent. Default: none.
	Propagator propagation.TextMapPropagator
	// MaxBodyBytes bounds a request body. 0 derives it from the fleet like
	// the gRPC edge's receive limit: DefaultMaxBodyBytes(Router.RecvLimit(0)).
	MaxBodyBytes int64
	// BodyReadTimeout bounds reading one request body (default 30s).
	BodyReadTimeout time.Duration
	// WriteTimeout bounds each write to the client, so a client that stops
	// reading a stream cannot hold its slot (default 30s).
	WriteTimeout time.Duration
	// Now is the clock for "created" timestamps (default time.Now).
	Now func() time.Time
	// AllowedOrigins are the web origins ("https://app.example.com", or "*"
	// for all) whose pages may call the front door from a browser, with CORS.
	// A request with any other Origin header gets 403, except from the
	// request's own host and from localhost, 127.0.0.1 and [::1] on the port
	// the connection arrived on (origin.go). SDKs send no Origin.
	AllowedOrigins []string
	// AllowedHosts are host names (optionally name:port; any port matches)
	// a request's Host header may carry when the fleet has no tenants,
	// besides IP addresses, localhost and the hosts of AllowedOrigins; others
	// get 421 (DNS-rebinding defence). The command passes --http-listen's host.
	AllowedHosts []string
	// AnyHost turns the Host check off: the command sets it when the front
	// door listens beyond loopback (0.0.0.0, a pod or LAN address), where
	// clients reach it under names nobody lists (service DNS names, load
	// balancers) and a keyless fleet is open to whatever reaches it anyway.
	AnyHost bool
	// Mount serves other edges on the same listener, behind the same
	// browser checks: pattern (http.ServeMux syntax) → handler. The command
	// mounts the Anthropic Messages API (router/anthropichttp) at /v1/messages.
	Mount map[string]http.Handler
}

// Handler serves the OpenAI-compatible API. Safe for concurrent use.
type Handler struct {
	opts    Options
	log     *slog.Logger
	tracer  trace.Tracer
	mux     *http.ServeMux
	guard   *browserGuard
	started int64
	// duration is http.server.request.duration.
	duration metric.Float64Histogram
}

var _ http.Handler = (*Handler)(nil)

// New builds a Handler over a router.
func New(o Options) (*Handler, error) {
	if o.Router == nil {
		return nil, errors.New("openaihttp: router is required")
	}
	if o.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("openaihttp: max body bytes must be >= 0, got %d", o.MaxBodyBytes)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.TracerProvider == nil {
		o.TracerProvider = tracenoop.NewTracerProvider()
	}
	if o.Propagator == nil {
		o.Propagator = propagation.NewCompositeTextMapPropagator()
	}
	if o.BodyReadTimeout <= 0 {
		o.BodyReadTimeout = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	guard, err := newBrowserGuard(o.AllowedOrigins, o.AllowedHosts)
	if err != nil {
		return nil, fmt.Errorf("openaihttp: %w", err)
	}
	guard.anyHost = o.AnyHost
	if o.MeterProvider == nil {
		o.MeterProvider = metricnoop.NewMeterProvider()
	}
	dur, err := o.MeterProvider.Meter(scopeName).Float64Histogram("http.server.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP server requests."), metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		return nil, fmt.Errorf("openaihttp: %w", err)
	}
	h := &Handler{opts: o, log: o.Logger, tracer: o.TracerProvider.Tracer(scopeName), guard: guard, started: o.Now().Unix(), duration: dur}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", h.chat)
	mux.HandleFunc("POST /v1/completions", h.completions)
	mux.HandleFunc("POST /v1/embeddings", h.embeddings)
	mux.HandleFunc("GET /v1/models", h.models)
	mux.HandleFunc("GET /v1/models/{model...}", h.model)
	for pattern, hh := range o.Mount {
		mux.Handle(pattern, hh)
	}
	mux.HandleFunc("/", h.notFound)
	h.mux = mux
	return h, nil
}

// ServeHTTP implements http.Handler. Browser requests are checked first
// (origin.go): a Host the front door does not answer to without API keys gets
// 421, an Origin not allowed 403, a CORS preflight of an allowed origin 204.
// A panic in a handler fails that call with 500, logged with its stack, never
// the process.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &recorder{ResponseWriter: w}
	defer func() { h.record(r, rw, start) }()
	// Every answer names its request id, refusals and parse errors too
	// (edgehttp.RequestID): the client's X-Request-Id when the router takes
	// it, else a new one. The call carries the client's id, or the new one
	// when it sent none (parse reads the header); one the router refuses is
	// never echoed, and the router refuses the call naming x-request-id.
	callID, answerID := edgehttp.RequestID(r.Header.Get(HeaderRequestID))
	r.Header.Set(HeaderRequestID, callID)
	rw.Header().Set(HeaderRequestID, answerID)
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			h.log.ErrorContext(r.Context(), "panic in http handler", "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			if !rw.wrote {
				writeError(rw, newHTTPError(http.StatusInternalServerError, typeServer, "internal_error", "", "internal error"))
			}
		}
	}()
	v := h.guard.check(r, h.keysRequired)
	if v.refuse != nil {
		h.log.DebugContext(r.Context(), "browser request refused", "path", quote(r.URL.Path), "status", v.refuse.status, "reason", v.refuse.body.Message)
		if r.ProtoMajor == 1 && r.ContentLength != 0 {
			// The body is never read: close rather than wait for it, so the
			// answer goes out at once (net/http would drain it first).
			rw.Header().Set("Connection", "close")
		}
		writeError(rw, v.refuse)
		return
	}
	if v.cors != "" {
		setCORS(rw.Header(), v.cors, v.preflight, r)
		if v.preflight {
			rw.WriteHeader(http.StatusNoContent)
			return
		}
	}
	h.mux.ServeHTTP(rw, r)
}

// keysRequired says whether the running fleet (it follows reloads) makes
// calls present an API key: the router's rule (Server.KeysRequired).
func (h *Handler) keysRequired() bool { return h.opts.Router.KeysRequired() }

// recorder notes whether the response has started, and its status.
type recorder struct {
	http.ResponseWriter
	wrote  bool
	status int
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote && code >= 200 {
		r.wrote, r.status = true, code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.wrote, r.status = true, http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// scopeName is the instrumentation scope of the front door's spans and metrics.
const scopeName = "github.com/switchyard-dev/switchyard/router/openaihttp"

// durationBuckets are OpenTelemetry's advised boundaries for
// http.server.request.duration.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// record counts one answer in http.server.request.duration with the HTTP
// semantic conventions' attributes: method (known ones, else _OTHER), the
// route pattern matched (never the raw path), status, protocol, scheme, and
// error.type for 5xx. A call whose client left before any answer is 499.
func (h *Handler) record(r *http.Request, rw *recorder, start time.Time) {
	status := rw.status
	if !rw.wrote {
		status = 499
	}
	method := r.Method
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
	default:
		method = "_OTHER"
	}
	route := r.Pattern
	if i := strings.IndexByte(route, ' '); i >= 0 {
		route = route[i+1:]
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", method),
		attribute.Int("http.response.status_code", status),
		attribute.String("network.protocol.name", "http"),
		attribute.String("network.protocol.version", strings.TrimPrefix(r.Proto, "HTTP/")),
		attribute.String("url.scheme", scheme),
	}
	if route != "" {
		attrs = append(attrs, attribute.String("http.route", route))
	}
	if status >= 500 {
		attrs = append(attrs, attribute.String("error.type", strconv.Itoa(status)))
	}
	h.duration.Record(context.WithoutCancel(r.Context()), time.Since(start).Seconds(), metric.WithAttributes(attrs...))
}

// Unwrap lets http.ResponseController reach the connection (flush, deadlines).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// JSONExpansion is how many times larger than the gRPC edge's receive limit
// (router.Server.RecvLimit: the largest model's max_input_tokens × 4 bytes
// plus a margin) a JSON body may be: JSON escapes of non-ASCII text take up
// to 3× the bytes, and chat framing adds per message.
const JSONExpansion = 4

// DefaultMaxBodyBytes is the body limit when the gRPC edge accepts messages
// of up to recvLimit bytes.
func DefaultMaxBodyBytes(recvLimit int) int64 { return JSONExpansion * int64(recvLimit) }

// maxBody is the body limit now (it follows fleet reloads).
func (h *Handler) maxBody() int64 {
	if h.opts.MaxBodyBytes > 0 {
		return h.opts.MaxBodyBytes
	}
	return DefaultMaxBodyBytes(h.opts.Router.RecvLimit(0))
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models":
		writeError(w, newHTTPError(http.StatusMethodNotAllowed, typeInvalidRequest, "method_not_allowed", "", fmt.Sprintf("method %s is not allowed on %s", quote(r.Method), r.URL.Path)))
		return
	}
	writeError(w, newHTTPError(http.StatusNotFound, typeInvalidRequest, "unknown_url", "", fmt.Sprintf("invalid URL (%s %s)", quote(r.Method), quote(r.URL.Path))))
}

// authenticate refuses, before the body is read, a caller the router does
// not know (when the fleet has tenants): unknown callers never make the edge
// read and decode bodies. The router checks again at admission.
func (h *Handler) authenticate(ctx context.Context, caller dispatch.Caller) *httpError {
	if _, err := h.opts.Router.AuthenticateCaller(caller); err != nil {
		return fromError(err, nil)
	}
	if h.keysRequired() {
		// A known key: the connection no longer counts among the
		// unauthenticated ones (httpedge.Listener).
		httpedge.Trust(ctx)
	}
	return nil
}

// startSpan starts the call's server span, child of the caller's traceparent.
func (h *Handler) startSpan(r *http.Request, route string) (context.Context, trace.Span) {
	ctx := h.opts.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	return h.tracer.Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("http.request.method", r.Method),
		attribute.String("http.route", route),
		attribute.String("network.protocol.version", strings.TrimPrefix(r.Proto, "HTTP/")),
	))
}

func endSpan(span trace.Span, status int) {
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}

// readBody reads the bounded body within the read timeout.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *httpError) {
	limit := h.maxBody()
	if r.ContentLength > limit {
		return nil, newHTTPError(http.StatusRequestEntityTooLarge, typeInvalidRequest, "request_too_large", "", fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes", r.ContentLength, limit))
	}
	rc := http.NewResponseController(w)
	if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); !ok || srv.ReadTimeout <= 0 || srv.ReadTimeout > h.opts.BodyReadTimeout {
		// The server's ReadTimeout, counted from the request's first byte,
		// is the deadline when it is the sooner one.
		_ = rc.SetReadDeadline(time.Now().Add(h.opts.BodyReadTimeout))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		// The connection is not reused: the rest of the body is never read
		// (the read deadline stays, so nothing waits for it).
		w.Header().Set("Connection", "close")
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, newHTTPError(http.StatusRequestEntityTooLarge, typeInvalidRequest, "request_too_large", "", fmt.Sprintf("request body exceeds the limit of %d bytes", limit))
		}
		return nil, newHTTPError(http.StatusBadRequest, typeInvalidRequest, "body_read_failed", "", "could not read the request body within the time allowed")
	}
	// No deadline while the call runs: a client's disconnect is noticed by
	// the server's background read.
	_ = rc.SetReadDeadline(time.Time{})
	return body, nil
}

func (h *Handler) chat(w http.ResponseWriter, r *http.Request) {
	h.complete(w, r, RPCChat, "/v1/chat/completions", func(body []byte) (*parsed, error) {
		return parseChat(body, r.Header, h.defaultMaxTokens)
	})
}

func (h *Handler) completions(w http.ResponseWriter, r *http.Request) {
	h.complete(w, r, RPCCompletions, "/v1/completions", func(body []byte) (*parsed, error) {
		return parseCompletion(body, r.Header)
	})
}

// defaultMaxTokens is a chat's max_tokens when the client sets none: the
// model's max_output_tokens, as OpenAI's "up to the model's limit" (0 for an
// unknown model, which the router refuses with 404 first).
func (h *Handler) defaultMaxTokens(model string) int32 {
	if m, ok := h.opts.Router.Fleet().Model(model); ok {
		return int32(m.MaxOutputTokens)
	}
	return 0
}

// complete runs one chat or text completion, streamed or not.
func (h *Handler) complete(w http.ResponseWriter, r *http.Request, rpc, route string, parse func([]byte) (*parsed, error)) {
	ctx, span := h.startSpan(r, route)
	op := "text_completion"
	if rpc == RPCChat {
		op = "chat"
	}
	span.SetAttributes(attribute.String("gen_ai.operation.name", op))
	status := http.StatusOK
	defer func() { endSpan(span, status) }()
	fail := func(e *httpError) {
		status = e.status
		writeError(w, e)
	}

	caller := edgehttp.Caller(r.Header)
	if e := h.authenticate(ctx, caller); e != nil {
		fail(e)
		return
	}
	body, e := h.readBody(w, r)
	if e != nil {
		fail(e)
		return
	}
	httpedge.Trust(ctx) // a whole request came in (and its key, if any, is known)
	p, err := parse(body)
	if err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			fail(fromFieldError(fe))
		} else {
			fail(newHTTPError(http.StatusBadRequest, typeInvalidRequest, "invalid_value", "", err.Error()))
		}
		return
	}
	if p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	c := &call{h: h, w: w, p: p, ci: router.CallInfo{RPC: rpc, Caller: caller}, model: p.req.GetModel(), created: h.opts.Now().Unix()}
	if c.chat() {
		c.id = "chatcmpl-" + p.req.RequestId
	} else {
		c.id = "cmpl-" + p.req.RequestId
	}
	if p.stream {
		status = c.stream(ctx)
		return
	}
	status = c.unary(ctx)
}

// call is one completion in progress.
type call struct {
	h       *Handler
	w       http.ResponseWriter
	p       *parsed
	ci      router.CallInfo // the rpc label and the caller
	id      string
	model   string
	created int64

	// Streams only: mu orders the router's send callbacks and the end of
	// the call, so nothing is written after CompleteStreamAs returned.
	mu      sync.Mutex
	started bool // headers and the first event are out
	ended   bool // CompleteStreamAs returned: no more writes
	rc      *http.ResponseController
	out     []byte    // events not yet written
	route   *pb.Route // the pool serving now (CallInfo.OnRoute), for the headers
	// textOffset is where the next text completion chunk starts (logprobs' text_offset).
	textOffset int
}

func (c *call) chat() bool { return c.ci.RPC == RPCChat }

func (c *call) unary(ctx context.Context) int {
	resp, err := c.h.opts.Router.CompleteAs(ctx, c.ci, c.p.req)
	if err != nil {
		e := fromError(err, c.p)
		writeError(c.w, e)
		return e.status
	}
	hdr := c.w.Header()
	hdr.Set(HeaderRequestID, resp.GetRequestId())
	setRouteHeaders(hdr, resp.GetRoute())
	fr := finishReason(resp.GetFinishReason())
	ri := toRouteInfo(resp.GetRoute(), resp.GetRequestId())
	var body any
	if c.chat() {
		msg := assistantOutput{Role: "assistant", ToolCalls: toToolCalls(resp.GetToolCalls())}
		if text := resp.GetText(); text != "" || len(msg.ToolCalls) == 0 {
			msg.Content = &text
		}
		body = &chatCompletion{ID: c.id, Object: "chat.completion", Created: c.created, Model: c.model,
			Choices:    []chatChoice{{Index: 0, Message: msg, Logprobs: toChatLogprobs(resp.GetLogprobs()), FinishReason: fr}},
			Usage:      toUsage(resp.GetUsage()),
			Switchyard: ri,
		}
	} else {
		body = &textCompletion{ID: c.id, Object: "text_completion", Created: c.created, Model: c.model,
			Choices:    []textChoice{{Text: resp.GetText(), Index: 0, Logprobs: toTextLogprobs(resp.GetLogprobs(), 0), FinishReason: &fr}},
			Usage:      toUsage(resp.GetUsage()),
			Switchyard: ri,
		}
	}
	writeJSON(c.w, http.StatusOK, body)
	return http.StatusOK
}

// stream runs a streamed completion. Headers go out with the first chunk, so
// a call refused before any token (429, 503, 404, ...) still gets its HTTP
// status and error body; after that, a failure ends the stream with an SSE
// error event.
func (c *call) stream(ctx context.Context) int {
	c.rc = http.NewResponseController(c.w)
	ci := c.ci
	ci.OnRoute = c.onRoute
	err := c.h.opts.Router.CompleteStreamAs(ctx, ci, c.p.req, c.send)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended = true
	if err == nil {
		return http.StatusOK
	}
	e := fromError(err, c.p)
	if !c.started {
		writeError(c.w, e)
		return e.status
	}
	if e.status == 499 {
		return e.status // the client left: nobody to tell
	}
	// Tokens were sent and the call could not be finished: say so in the
	// stream, never a silent truncation.
	if werr := c.flushWith(errorBody{Error: e.body}); werr != nil {
		c.h.log.DebugContext(ctx, "stream error event not delivered", "err", werr)
	}
	return e.status
}

// onRoute notes the pool serving the call now; the headers, sent with the
// first chunk, name it.
func (c *call) onRoute(r *pb.Route) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.route = r
}

// send is the router's callback for each chunk, in order. The events one
// chunk makes (the role chunk and the first text; the last text, the
// finishing chunk, the usage chunk and [DONE]) go out in one write.
func (c *call) send(ch *pb.GenerateChunk) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return errors.New("stream already ended")
	}
	if !c.started {
		c.started = true
		hdr := c.w.Header()
		hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
		hdr.Set("Cache-Control", "no-cache")
		hdr.Set("X-Accel-Buffering", "no")
		hdr.Set(HeaderRequestID, ch.GetRequestId())
		// The route headers name the pool sending the first token; the same
		// names come again as trailers with the final route.
		setRouteHeaders(hdr, c.route)
		hdr.Set("Trailer", strings.Join(routeHeaders, ", "))
		c.w.WriteHeader(http.StatusOK)
		if c.chat() {
			// OpenAI's first chunk carries the role and empty content.
			empty := ""
			if err := c.add(c.chatChunk(delta{Role: "assistant", Content: &empty}, nil)); err != nil {
				return err
			}
		}
	}
	last := ch.GetRoute() != nil || ch.GetFinishReason() != pb.FinishReason_FINISH_REASON_UNSPECIFIED
	if ch.GetText() != "" || len(ch.GetToolCalls()) > 0 || len(ch.GetLogprobs()) > 0 {
		text := ch.GetText()
		var err error
		if c.chat() {
			d := delta{ToolCalls: toToolCallDeltas(ch.GetToolCalls())}
			if text != "" || len(d.ToolCalls) == 0 {
				d.Content = &text
			}
			cc := c.chatChunk(d, nil)
			cc.Choices[0].Logprobs = toChatLogprobs(ch.GetLogprobs())
			err = c.add(cc)
		} else {
			tc := c.textChunk(text, nil)
			tc.Choices[0].Logprobs = toTextLogprobs(ch.GetLogprobs(), c.textOffset)
			c.textOffset += len(text)
			err = c.add(tc)
		}
		if err != nil {
			return err
		}
	}
	if !last {
		return c.flush()
	}
	fr := finishReason(ch.GetFinishReason())
	var fin any
	if c.chat() {
		cc := c.chatChunk(delta{}, &fr)
		cc.Switchyard = toRouteInfo(ch.GetRoute(), ch.GetRequestId())
		fin = cc
	} else {
		tc := c.textChunk("", &fr)
		tc.Switchyard = toRouteInfo(ch.GetRoute(), ch.GetRequestId())
		fin = tc
	}
	if err := c.add(fin); err != nil {
		return err
	}
	if c.p.includeUsage {
		var u any
		if c.chat() {
			u = &chatChunk{ID: c.id, Object: "chat.completion.chunk", Created: c.created, Model: c.model, Choices: []chatChunkChoice{}, Usage: toUsage(ch.GetUsage())}
		} else {
			u = &textCompletion{ID: c.id, Object: "text_completion", Created: c.created, Model: c.model, Choices: []textChoice{}, Usage: toUsage(ch.GetUsage())}
		}
		if err := c.add(u); err != nil {
			return err
		}
	}
	setRouteHeaders(c.w.Header(), ch.GetRoute()) // trailers: declared above, sent after the body
	c.out = append(c.out, "data: [DONE]\n\n"...)
	return c.flush()
}

func (c *call) nullUsage() any {
	if c.p.includeUsage {
		return (*usage)(nil)
	}
	return nil
}

func (c *call) chatChunk(d delta, finish *string) *chatChunk {
	return &chatChunk{ID: c.id, Object: "chat.completion.chunk", Created: c.created, Model: c.model,
		Choices: []chatChunkChoice{{Index: 0, Delta: d, FinishReason: finish}}, Usage: c.nullUsage()}
}

func (c *call) textChunk(text string, finish *string) *textCompletion {
	return &textCompletion{ID: c.id, Object: "text_completion", Created: c.created, Model: c.model,
		Choices: []textChoice{{Text: text, Index: 0, FinishReason: finish}}, Usage: c.nullUsage()}
}

// add appends one SSE event "data: JSON" to the pending output.
func (c *call) add(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	c.out = append(c.out, "data: "...)
	c.out = append(c.out, b...)
	c.out = append(c.out, '\n', '\n')
	return nil
}

// flushWith adds v and flushes.
func (c *call) flushWith(v any) error {
	if err := c.add(v); err != nil {
		return err
	}
	return c.flush()
}

// flush sends the pending events within the write timeout, in one write.
func (c *call) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	_ = c.rc.SetWriteDeadline(time.Now().Add(c.h.opts.WriteTimeout))
	_, err := c.w.Write(c.out)
	c.out = c.out[:0]
	if err != nil {
		return fmt.Errorf("write to client: %w", err)
	}
	if err := c.rc.Flush(); err != nil {
		return fmt.Errorf("flush to client: %w", err)
	}
	return nil
}

func (h *Handler) models(w http.ResponseWriter, r *http.Request) {
	ctx, span := h.startSpan(r, "/v1/models")
	status := http.StatusOK
	defer func() { endSpan(span, status) }()
	if e := h.authenticate(ctx, edgehttp.Caller(r.Header)); e != nil {
		status = e.status
		writeError(w, e)
		return
	}
	// The fleet's models in its order, as the gRPC ListModels lists them.
	out := modelList{Object: "list", Data: []modelObject{}}
	for _, m := range h.opts.Router.Fleet().Models {
		out.Data = append(out.Data, modelObject{ID: m.Name, Object: "model", Created: h.started, OwnedBy: "switchyard"})
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) model(w http.ResponseWriter, r *http.Request) {
	ctx, span := h.startSpan(r, "/v1/models/{model}")
	status := http.StatusOK
	defer func() { endSpan(span, status) }()
	if e := h.authenticate(ctx, edgehttp.Caller(r.Header)); e != nil {
		status = e.status
		writeError(w, e)
		return
	}
	name := r.PathValue("model")
	m, ok := h.opts.Router.Fleet().Model(name)
	if !ok {
		e := newHTTPError(http.StatusNotFound, typeInvalidRequest, "model_not_found", "model", fmt.Sprintf("the model %s does not exist: see GET /v1/models", quote(name)))
		status = e.status
		writeError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, modelObject{ID: m.Name, Object: "model", Created: h.started, OwnedBy: "switchyard"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"message":"could not encode the response","type":"server_error","param":null,"code":"internal_error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	// A client that does not read its answer cannot hold the connection.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(answerWriteTimeout))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// answerWriteTimeout bounds writing one JSON answer (an unstreamed
// completion, a model list, an error).
const answerWriteTimeout = 30 * time.Second

func writeError(w http.ResponseWriter, e *httpError) {
	if e.status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", retryAfterSeconds(e.retryAfter))
		w.Header().Set("Retry-After-Ms", fmt.Sprint(max(e.retryAfter.Milliseconds(), 1)))
	}
	writeJSON(w, e.status, errorBody{Error: e.body})
}
