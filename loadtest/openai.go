package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/openai"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// OpenAIOptions configure NewOpenAIClient.
type OpenAIOptions struct {
	// BaseURL is the router's HTTP front door, e.g. http://127.0.0.1:8080
	// (the /v1/... paths are appended). Required.
	BaseURL string
	// APIKey, when set, is sent as Authorization: Bearer.
	APIKey string
	// MaxConns bounds connections to the front door (default 1000): HTTP/1.1
	// keep-alive connections, one per call in flight, reused between calls.
	MaxConns int
	// HTTP2 speaks h2c (HTTP/2 with prior knowledge) instead of HTTP/1.1.
	HTTP2 bool
}

// OpenAIClient calls the router's OpenAI-compatible HTTP front door and
// presents it as a pb.InferenceClient, so Replay drives the HTTP edge exactly
// as it drives gRPC: a request with messages goes to /v1/chat/completions,
// one with a prompt to /v1/completions; routing hints, priority, request id
// and the call's deadline travel as x-switchyard-* headers; the route comes
// back from the response's "switchyard" field; HTTP errors become the gRPC
// codes the router would have answered. Safe for concurrent use; a stream is
// read by one goroutine.
type OpenAIClient struct {
	base   string
	key    string
	client *http.Client
	tr     *http.Transport
}

var _ pb.InferenceClient = (*OpenAIClient)(nil)

// maxResponseBytes bounds an unstreamed answer and one SSE line.
const maxResponseBytes = 16 << 20

// NewOpenAIClient returns a client of the front door at o.BaseURL.
func NewOpenAIClient(o OpenAIOptions) (*OpenAIClient, error) {
	base := strings.TrimRight(o.BaseURL, "/")
	base = strings.TrimSuffix(base, "/v1")
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("openai client: base URL %q must start with http:// or https://", o.BaseURL)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConcurrency
	}
	tr := &http.Transport{
		MaxIdleConns: o.MaxConns, MaxIdleConnsPerHost: o.MaxConns, MaxConnsPerHost: o.MaxConns,
		IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: 0, DisableCompression: true,
	}
	if o.HTTP2 {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	return &OpenAIClient{base: base, key: o.APIKey, tr: tr, client: &http.Client{Transport: tr}}, nil
}

// EstimatesChunkTokens reports that stream chunks' token counts are
// estimates (OpenAI's chunks carry none): Replay uses the server's usage
// when the stream ends with one, and marks the call's count estimated when not.
func (c *OpenAIClient) EstimatesChunkTokens() bool { return true }

// Close closes idle connections.
func (c *OpenAIClient) Close() { c.tr.CloseIdleConnections() }

// openAIAnswer is a whole answer or one streamed chunk, of either endpoint:
// the adapter's wire types (backends/openai) plus the front door's
// switchyard field and OpenAI's error object.
type openAIAnswer struct {
	Choices    []openai.WireChoice `json:"choices"`
	Usage      *openai.WireUsage   `json:"usage"`
	Switchyard *struct {
		Pool        string   `json:"pool"`
		Cloud       string   `json:"cloud"`
		Region      string   `json:"region"`
		Accelerator string   `json:"accelerator"`
		Attempts    int32    `json:"attempts"`
		PoolsTried  []string `json:"pools_tried"`
		Policy      string   `json:"policy"`
		RequestID   string   `json:"request_id"`
	} `json:"switchyard"`
	Error *openAIError `json:"error"`
}

type openAIError struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code"`
}

func (a *openAIAnswer) route() *pb.Route {
	s := a.Switchyard
	if s == nil {
		return nil
	}
	return &pb.Route{Pool: s.Pool, Cloud: s.Cloud, Region: s.Region, Accelerator: s.Accelerator, Attempts: s.Attempts, PoolsTried: s.PoolsTried, Policy: s.Policy}
}

func (a *openAIAnswer) usage() *pb.Usage {
	if a.Usage == nil {
		return nil
	}
	return a.Usage.Proto()
}

func (a *openAIAnswer) text() string {
	if len(a.Choices) == 0 {
		return ""
	}
	return a.Choices[0].Content()
}

func (a *openAIAnswer) finish() pb.FinishReason {
	if len(a.Choices) == 0 {
		return pb.FinishReason_FINISH_REASON_UNSPECIFIED
	}
	return a.Choices[0].Finish()
}

// post sends req to the endpoint its input calls for.
func (c *OpenAIClient) post(ctx context.Context, req *pb.GenerateRequest, stream bool) (*http.Response, error) {
	w, path := openai.NewWireRequest(req, stream)
	b, err := w.Encode()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode request: %v", err)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1"+path, bytes.NewReader(b))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "build request: %v", err)
	}
	h := hr.Header
	h.Set("Content-Type", "application/json")
	if c.key != "" {
		h.Set("Authorization", "Bearer "+c.key)
	}
	if r := req.GetRouting(); r != nil {
		setIf(h, "X-Switchyard-Caller-Region", r.GetCallerRegion())
		setIf(h, "X-Switchyard-Residency", r.GetResidency())
		setIf(h, "X-Switchyard-Preferred-Cloud", r.GetPreferredCloud())
		setIf(h, "X-Switchyard-Preferred-Accelerator", r.GetPreferredAccelerator())
		setIf(h, "X-Switchyard-Prefix-Key", r.GetPrefixKey())
	}
	if req.GetPriority() != pb.Priority_PRIORITY_UNSPECIFIED {
		h.Set("X-Switchyard-Priority", priorityName(req.GetPriority()))
	}
	setIf(h, "X-Request-Id", req.GetRequestId())
	if dl, ok := ctx.Deadline(); ok {
		// The router gets the same deadline a gRPC call would carry.
		if left := time.Until(dl); left > time.Millisecond {
			h.Set("X-Switchyard-Timeout", left.Round(time.Millisecond).String())
		}
	}
	if md, ok := metadata.FromOutgoingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			h.Set("Authorization", v[0])
		}
	}
	if _, ok := ctx.Value(sendMarkKey{}).(*sendMark); ok {
		// A replayed call: its client wait ends when the headers are written
		// (after it got a connection, or a stream of an h2c one).
		hr = hr.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { MarkSent(ctx) }}))
	}
	resp, err := c.client.Do(hr)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, httpStatusError(resp)
	}
	return resp, nil
}

func setIf(h http.Header, k, v string) {
	if v != "" {
		h.Set(k, v)
	}
}

func priorityName(p pb.Priority) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "PRIORITY_"))
}

// transportError is a context error when the call's context ended (so
// Replay counts it as the deadline or a cancel), else UNAVAILABLE.
func transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return status.Errorf(codes.Unavailable, "http: %v", err)
}

// httpStatusError maps the front door's status and error body back to the
// gRPC code the router answered.
func httpStatusError(resp *http.Response) error {
	var a openAIAnswer
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := http.StatusText(resp.StatusCode)
	if json.Unmarshal(b, &a) == nil && a.Error != nil {
		msg = a.Error.Message
	}
	code := codes.Unknown
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		code = codes.InvalidArgument
	case http.StatusUnauthorized:
		code = codes.Unauthenticated
	case http.StatusForbidden:
		code = codes.PermissionDenied
	case http.StatusNotFound:
		code = codes.NotFound
	case http.StatusConflict:
		code = codes.AlreadyExists
	case http.StatusTooManyRequests:
		code = codes.ResourceExhausted
	case 499:
		code = codes.Canceled
	case http.StatusInternalServerError:
		code = codes.Internal
	case http.StatusNotImplemented:
		code = codes.Unimplemented
	case http.StatusGatewayTimeout:
		code = codes.DeadlineExceeded
	default:
		if resp.StatusCode >= 500 {
			code = codes.Unavailable
		}
	}
	return status.Error(code, msg)
}

// streamError maps an SSE error event to a gRPC status.
func streamError(e *openAIError) error {
	code := codes.Internal
	switch e.Code {
	case "service_unavailable":
		code = codes.Unavailable
	case "deadline_exceeded":
		code = codes.DeadlineExceeded
	case "rate_limit_exceeded":
		code = codes.ResourceExhausted
	case "canceled":
		code = codes.Canceled
	}
	return status.Error(code, e.Message)
}

// Generate implements pb.InferenceClient with an unstreamed completion.
func (c *OpenAIClient) Generate(ctx context.Context, req *pb.GenerateRequest, _ ...grpc.CallOption) (*pb.GenerateResponse, error) {
	resp, err := c.post(ctx, req, false)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes)) // to EOF: the connection is reused
	if err != nil {
		return nil, transportError(ctx, fmt.Errorf("read answer: %w", err))
	}
	var a openAIAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, status.Errorf(codes.Internal, "decode answer: %v", err)
	}
	out := &pb.GenerateResponse{Text: a.text(), Usage: a.usage(), FinishReason: a.finish(), Route: a.route()}
	if a.Switchyard != nil {
		out.RequestId = a.Switchyard.RequestID
	}
	return out, nil
}

// GenerateStream implements pb.InferenceClient with a streamed completion
// (stream_options.include_usage on).
func (c *OpenAIClient) GenerateStream(ctx context.Context, req *pb.GenerateRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[pb.GenerateChunk], error) {
	resp, err := c.post(ctx, req, true)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxResponseBytes)
	return &sseStream{ctx: ctx, body: resp.Body, sc: sc, header: resp.Header}, nil
}

// ListModels implements pb.InferenceClient from GET /v1/models (names only:
// the HTTP API does not state limits or placements).
func (c *OpenAIClient) ListModels(ctx context.Context, _ *pb.ListModelsRequest, _ ...grpc.CallOption) (*pb.ListModelsResponse, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/models", nil)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "build request: %v", err)
	}
	if c.key != "" {
		hr.Header.Set("Authorization", "Bearer "+c.key)
	}
	if _, ok := ctx.Value(sendMarkKey{}).(*sendMark); ok {
		// A replayed call: its client wait ends when the headers are written
		// (after it got a connection, or a stream of an h2c one).
		hr = hr.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { MarkSent(ctx) }}))
	}
	resp, err := c.client.Do(hr)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, httpStatusError(resp)
	}
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(&list); err != nil {
		return nil, transportError(ctx, fmt.Errorf("decode models: %w", err))
	}
	out := &pb.ListModelsResponse{}
	for _, m := range list.Data {
		out.Models = append(out.Models, &pb.Model{Name: m.ID})
	}
	return out, nil
}

// sseStream reads the front door's server-sent events as GenerateChunks:
// one per text chunk (its tokens estimated from its bytes), the finishing chunk with the route,
// the usage chunk, then io.EOF at [DONE]. An error event is its status; a
// body that ends before [DONE] is UNAVAILABLE (a truncated stream).
type sseStream struct {
	ctx    context.Context
	body   io.ReadCloser
	sc     *bufio.Scanner
	header http.Header
	done   bool
	route  *pb.Route
}

var _ grpc.ServerStreamingClient[pb.GenerateChunk] = (*sseStream)(nil)

func (s *sseStream) Recv() (*pb.GenerateChunk, error) {
	if s.done {
		return nil, io.EOF
	}
	for s.sc.Scan() {
		data, ok := strings.CutPrefix(s.sc.Text(), "data: ")
		if !ok {
			continue // blank separator lines, comments
		}
		if data == "[DONE]" {
			s.finish()
			return nil, io.EOF
		}
		var a openAIAnswer
		if err := json.Unmarshal([]byte(data), &a); err != nil {
			s.finish()
			return nil, status.Errorf(codes.Internal, "bad event: %v", err)
		}
		if a.Error != nil {
			s.finish()
			return nil, streamError(a.Error)
		}
		if r := a.route(); r != nil {
			s.route = r
		}
		if u := a.usage(); u != nil && len(a.Choices) == 0 {
			return &pb.GenerateChunk{Usage: u, Route: s.route}, nil
		}
		text, fin := a.text(), a.finish()
		if text == "" && fin == pb.FinishReason_FINISH_REASON_UNSPECIFIED {
			continue // the role-only first chunk
		}
		// OpenAI's chunks carry no token count: estimate it as everywhere
		// else (4 bytes a token), so inter-token latency divides a chunk's
		// gap over about as many tokens as over gRPC.
		return &pb.GenerateChunk{Text: text, Tokens: int32(backends.EstimateTokens(text)), FinishReason: fin, Route: a.route()}, nil
	}
	s.finish()
	if err := s.sc.Err(); err != nil {
		return nil, transportError(s.ctx, err)
	}
	if s.ctx.Err() != nil {
		return nil, s.ctx.Err()
	}
	return nil, status.Error(codes.Unavailable, "the stream ended before data: [DONE]")
}

func (s *sseStream) finish() {
	if !s.done {
		s.done = true
		_ = s.body.Close()
	}
}

// The rest of grpc.ClientStream, for the interface.

func (s *sseStream) Header() (metadata.MD, error) {
	md := metadata.MD{}
	for k, v := range s.header {
		md.Set(k, v...)
	}
	return md, nil
}
func (s *sseStream) Trailer() metadata.MD     { return metadata.MD{} }
func (s *sseStream) CloseSend() error         { return nil }
func (s *sseStream) Context() context.Context { return s.ctx }
func (s *sseStream) SendMsg(any) error        { return errors.New("sse stream: no messages to send") }
func (s *sseStream) RecvMsg(m any) error      { return errors.New("sse stream: use Recv") }

// Embed implements pb.InferenceClient. The load tester replays generation
// traces only: embeddings are not driven over the HTTP edge by it.
func (c *OpenAIClient) Embed(context.Context, *pb.EmbedRequest, ...grpc.CallOption) (*pb.EmbedResponse, error) {
	return nil, status.Error(codes.Unimplemented, "openai client: Embed is not driven by the load tester")
}
