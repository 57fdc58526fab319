// Package anthropichttp is switchyard's Anthropic Messages API front door:
// POST /v1/messages, unary and streamed (server-sent events framed as
// Anthropic frames them), mounted on the same HTTP listener as the
// OpenAI-compatible API (gateway/http.go passes it to openaihttp.Options.Mount,
// so the same connection limits and browser checks apply).
//
// It is an edge and nothing more: a Messages request becomes a
// switchyard.v1.GenerateRequest (system and messages as chat turns, tool_use
// and tool_result blocks as tool calls and tool turns, stop_sequences and
// sampling, tools and tool_choice) and goes through router.Server.CompleteAs /
// CompleteStreamAs with rpc label "http_messages": the same tenants
// (x-api-key or Authorization: Bearer, read by edgehttp.Caller and checked
// by the router), limits, routing, failover, continuation and metrics as
// every edge; the chosen pool speaks whatever its adapter speaks. Answers
// come back as Messages objects with Anthropic's stop reasons, usage and
// error shape; the router's errors are the core's (router/dispatch), mapped
// to Anthropic's statuses and error types from one table (errors.go).
// docs/anthropic.md lists every field.
//
// Import direction: anthropichttp imports router, router/dispatch and
// router/edgehttp; no other edge, and router never imports it.
package anthropichttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/switchyard-dev/switchyard/internal/httpedge"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/edgehttp"
)

// RPCMessages is the rpc label of POST /v1/messages in the router's metrics, logs and traces.
const RPCMessages = "http_messages"

// Path is where the handler serves.
const Path = "/v1/messages"

// Options configure a Handler.
type Options struct {
	// Router serves every call. Required.
	Router *router.Server
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider makes each call's server span. Default: no-op.
	TracerProvider trace.TracerProvider
	// Propagator reads a caller's traceparent. Default: none.
	Propagator propagation.TextMapPropagator
	// MaxBodyBytes bounds a request body; 0: 4 × Router.RecvLimit(0), as the OpenAI edge.
	MaxBodyBytes int64
	// BodyReadTimeout bounds reading one body (default 30s).
	BodyReadTimeout time.Duration
	// WriteTimeout bounds each write to the client (default 30s).
	WriteTimeout time.Duration
}

// Handler serves the Messages API. Safe for concurrent use.
type Handler struct {
	opts   Options
	log    *slog.Logger
	tracer trace.Tracer
}

var _ http.Handler = (*Handler)(nil)

// New builds a Handler over a router.
func New(o Options) (*Handler, error) {
	if o.Router == nil {
		return nil, errors.New("anthropichttp: router is required")
	}
	if o.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("anthropichttp: max body bytes must be >= 0, got %d", o.MaxBodyBytes)
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
	return &Handler{opts: o, log: o.Logger, tracer: o.TracerProvider.Tracer("github.com/switchyard-dev/switchyard/router/anthropichttp")}, nil
}

func (h *Handler) maxBody() int64 {
	if h.opts.MaxBodyBytes > 0 {
		return h.opts.MaxBodyBytes
	}
	return 4 * int64(h.opts.Router.RecvLimit(0))
}

// ServeHTTP serves POST /v1/messages; other methods get 405, other paths
// 404, in Anthropic's error shape. A panic fails that call with 500.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rw := &recorder{ResponseWriter: w}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			h.log.ErrorContext(r.Context(), "panic in anthropic handler", "panic", p, "stack", string(debug.Stack()))
			if !rw.wrote {
				writeError(rw, newError(http.StatusInternalServerError, typeAPI, "internal error"), "")
			}
		}
	}()
	switch {
	case r.URL.Path != Path:
		writeError(rw, newError(http.StatusNotFound, typeNotFound, "not found: "+quote(r.URL.Path)), "")
	case r.Method != http.MethodPost:
		writeError(rw, newError(http.StatusMethodNotAllowed, typeInvalidRequest, "method "+quote(r.Method)+" is not allowed on "+Path), "")
	default:
		h.messages(rw, r)
	}
}

type recorder struct {
	http.ResponseWriter
	wrote bool
}

func (r *recorder) WriteHeader(code int) { r.wrote = true; r.ResponseWriter.WriteHeader(code) }
func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// version checks anthropic-version (required, as Anthropic's API requires
// it) and anthropic-beta (betas change behaviour the router cannot honour).
func version(hdr http.Header) (string, *httpError) {
	v := strings.TrimSpace(hdr.Get("Anthropic-Version"))
	if v == "" {
		return "", newError(http.StatusBadRequest, typeInvalidRequest, "anthropic-version: header is required (e.g. "+Version20230601+")")
	}
	if !slices.Contains(versions, v) {
		return "", newError(http.StatusBadRequest, typeInvalidRequest, fmt.Sprintf("anthropic-version: %s is not one of %s", quote(v), strings.Join(versions, ", ")))
	}
	if b := strings.TrimSpace(hdr.Get("Anthropic-Beta")); b != "" {
		return "", newError(http.StatusBadRequest, typeInvalidRequest, "anthropic-beta: beta features are not served, got "+quote(b))
	}
	return v, nil
}

func (h *Handler) messages(w http.ResponseWriter, r *http.Request) {
	ctx := h.opts.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := h.tracer.Start(ctx, "POST "+Path, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("http.request.method", r.Method), attribute.String("http.route", Path)))
	code := http.StatusOK
	defer func() {
		span.SetAttributes(attribute.Int("http.response.status_code", code))
		if code >= 500 {
			span.SetStatus(otelcodes.Error, http.StatusText(code))
		}
		span.End()
	}()
	fail := func(e *httpError) {
		code = e.status
		writeError(w, e, "")
	}
	caller := edgehttp.Caller(r.Header)
	if _, err := h.opts.Router.AuthenticateCaller(caller); err != nil {
		fail(fromError(err))
		return
	}
	ver, e := version(r.Header)
	if e != nil {
		fail(e)
		return
	}
	body, err := edgehttp.ReadBody(w, r, h.maxBody(), h.opts.BodyReadTimeout)
	if err != nil {
		if errors.Is(err, edgehttp.ErrTooLarge) {
			fail(newError(http.StatusRequestEntityTooLarge, typeTooLarge, err.Error()))
		} else {
			fail(newError(http.StatusBadRequest, typeInvalidRequest, err.Error()))
		}
		return
	}
	httpedge.Trust(ctx)
	p, err := parse(body, ver)
	if err != nil {
		fail(fromField(err))
		return
	}
	hints, err := edgehttp.ReadHints(r.Header)
	if err != nil {
		fail(fromField(err))
		return
	}
	// The call carries the client's request id (the router refuses one it
	// cannot take); the answers name it only when it is one the router takes
	// (edgehttp.RequestID).
	var answerID string
	p.req.RequestId, answerID = edgehttp.RequestID(hints.RequestID)
	w.Header().Set("Request-Id", answerID)
	w.Header().Set(edgehttp.HeaderRequestID, answerID)
	if hints.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, hints.Timeout)
		defer cancel()
	}
	c := &call{h: h, w: w, p: p, ci: router.CallInfo{RPC: RPCMessages, Caller: caller}, answerID: answerID, id: "msg_" + p.req.RequestId, model: p.req.GetModel()}
	if p.stream {
		code = c.stream(ctx)
		return
	}
	code = c.unary(ctx)
}

// call is one Messages call in progress.
type call struct {
	h  *Handler
	w  http.ResponseWriter
	p  *parsed
	ci router.CallInfo // the rpc label and the caller
	// answerID is the request id errors name (never a refused client id).
	answerID string
	id       string
	model    string

	// Streams only: mu orders the router's send callbacks and the end of the call.
	mu      sync.Mutex
	started bool
	ended   bool
	rc      *http.ResponseController
	out     []byte
	route   *pb.Route
	// The content block open now: -1 none; its kind and, for a tool call, its tool index.
	block     int
	blockKind string
	toolIndex int32
	blocks    int // blocks opened so far
	sawTool   bool
}

func (c *call) unary(ctx context.Context) int {
	resp, err := c.h.opts.Router.CompleteAs(ctx, c.ci, c.p.req)
	if err != nil {
		e := fromError(err)
		writeError(c.w, e, c.answerID)
		return e.status
	}
	hdr := c.w.Header()
	edgehttp.SetRouteHeaders(hdr, resp.GetRoute())
	m := &messageObject{ID: c.id, Type: "message", Role: "assistant", Model: c.model, Content: []contentBlock{},
		StopReason: stopReason(resp.GetFinishReason()), Usage: toUsage(resp.GetUsage()), Switchyard: toRoute(resp.GetRoute(), resp.GetRequestId())}
	if t := resp.GetText(); t != "" || len(resp.GetToolCalls()) == 0 {
		m.Content = append(m.Content, contentBlock{Type: "text", Text: &t})
	}
	for _, tc := range resp.GetToolCalls() {
		m.Content = append(m.Content, toolUse(tc.GetId(), tc.GetName(), tc.GetArguments()))
	}
	writeJSON(c.w, http.StatusOK, m)
	return http.StatusOK
}

// stream runs a streamed call: headers and message_start go out with the
// first chunk, so a call refused before any token gets its HTTP status and
// error body; after that a failure ends the stream with an error event.
func (c *call) stream(ctx context.Context) int {
	c.rc = http.NewResponseController(c.w)
	c.block = -1
	ci := c.ci
	ci.OnRoute = c.onRoute
	err := c.h.opts.Router.CompleteStreamAs(ctx, ci, c.p.req, c.send)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended = true
	if err == nil {
		return http.StatusOK
	}
	e := fromError(err)
	if !c.started {
		writeError(c.w, e, c.answerID)
		return e.status
	}
	if e.status == 499 {
		return e.status
	}
	if werr := c.event("error", apiError{Type: "error", Error: e.body, RequestID: c.answerID}); werr == nil {
		if werr := c.flush(); werr != nil {
			c.h.log.DebugContext(ctx, "stream error event not delivered", "err", werr)
		}
	}
	return e.status
}

func (c *call) onRoute(r *pb.Route) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.route = r
}

// send is the router's callback for each chunk, in order.
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
		edgehttp.SetRouteHeaders(hdr, c.route)
		hdr.Set("Trailer", strings.Join(edgehttp.RouteHeaders, ", "))
		c.w.WriteHeader(http.StatusOK)
		start := messageObject{ID: c.id, Type: "message", Role: "assistant", Model: c.model, Content: []contentBlock{},
			Usage: &usage{InputTokens: 0, OutputTokens: 0}}
		if err := c.event("message_start", map[string]any{"type": "message_start", "message": start}); err != nil {
			return err
		}
		if err := c.event("ping", map[string]string{"type": "ping"}); err != nil {
			return err
		}
	}
	if t := ch.GetText(); t != "" {
		if c.blockKind != "text" {
			if err := c.open("text", contentBlock{Type: "text", Text: new(string)}, 0); err != nil {
				return err
			}
		}
		if err := c.event("content_block_delta", map[string]any{"type": "content_block_delta", "index": c.block, "delta": map[string]string{"type": "text_delta", "text": t}}); err != nil {
			return err
		}
	}
	for _, d := range ch.GetToolCalls() {
		if c.blockKind != "tool_use" || d.GetIndex() != c.toolIndex || d.GetId() != "" {
			if err := c.open("tool_use", contentBlock{Type: "tool_use", ID: d.GetId(), Name: d.GetName(), Input: json.RawMessage("{}")}, d.GetIndex()); err != nil {
				return err
			}
		}
		if a := d.GetArguments(); a != "" {
			if err := c.event("content_block_delta", map[string]any{"type": "content_block_delta", "index": c.block, "delta": map[string]string{"type": "input_json_delta", "partial_json": a}}); err != nil {
				return err
			}
		}
	}
	last := ch.GetRoute() != nil || ch.GetFinishReason() != pb.FinishReason_FINISH_REASON_UNSPECIFIED
	if !last {
		return c.flush()
	}
	if err := c.closeBlock(); err != nil {
		return err
	}
	u := toUsage(ch.GetUsage())
	if err := c.event("message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": stopReason(ch.GetFinishReason()), "stop_sequence": nil},
		"usage": u, "switchyard": toRoute(ch.GetRoute(), ch.GetRequestId())}); err != nil {
		return err
	}
	if err := c.event("message_stop", map[string]string{"type": "message_stop"}); err != nil {
		return err
	}
	edgehttp.SetRouteHeaders(c.w.Header(), ch.GetRoute()) // trailers
	return c.flush()
}

// open closes the open block and starts a new one.
func (c *call) open(kind string, b contentBlock, toolIndex int32) error {
	if err := c.closeBlock(); err != nil {
		return err
	}
	c.block, c.blockKind, c.toolIndex = c.blocks, kind, toolIndex
	c.blocks++
	return c.event("content_block_start", map[string]any{"type": "content_block_start", "index": c.block, "content_block": b})
}

func (c *call) closeBlock() error {
	if c.block < 0 {
		return nil
	}
	i := c.block
	c.block, c.blockKind = -1, ""
	return c.event("content_block_stop", map[string]any{"type": "content_block_stop", "index": i})
}

// event appends one SSE event "event: NAME\ndata: JSON\n\n".
func (c *call) event(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	c.out = append(c.out, "event: "...)
	c.out = append(c.out, name...)
	c.out = append(c.out, "\ndata: "...)
	c.out = append(c.out, b...)
	c.out = append(c.out, '\n', '\n')
	return nil
}

// flush sends the pending events in one write, within the write timeout.
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
