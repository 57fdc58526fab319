// Package bedrock is the backend adapter for Amazon Bedrock (`adapter:
// bedrock`): a pool is one region's bedrock-runtime endpoint, called with
// the Converse and ConverseStream operations of the AWS SDK for Go v2, signed
// (SigV4) with credentials from the SDK's default chain (environment, shared
// config and credential_process, web identity / IRSA, container and instance
// roles), optionally through a role assumed with STS.
//
// Credentials are fetched at start-up and checked every credential_refresh
// off the request path (the SDK's cache renews them 5 minutes before they
// expire); a failing refresh makes this pool's health checks fail and
// nothing else. Throttling (ThrottlingException, ServiceQuotaExceeded, HTTP
// 429) is a shortage: RESOURCE_EXHAUSTED, the pool backs off locally
// (doubling from throttle_backoff) and reports no capacity meanwhile, so the
// router moves the call on and shifts traffic until the quota recovers.
// Refused credentials (401/403) are a failure (UNAVAILABLE, logged once):
// the router ejects the pool; no call retries them. The SDK's own retries
// are off: moving on is the router's job.
package bedrock

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/document"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/schemas"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/transport/http/protocol/restjson1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/internal/managed"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// AdapterName is the name the adapter registers under (a pool's `adapter:`).
const AdapterName = "bedrock"

// Options are the process-wide settings of the adapter.
type Options struct {
	// Logger for credential failures and refusals (default: slog.Default()).
	Logger *slog.Logger
}

// Register adds the adapter to r under AdapterName.
func Register(r *backends.Registry, o Options) {
	r.Register(AdapterName, func(s backends.Spec) (backends.Backend, error) { return New(s, o) })
}

// Backend is one Bedrock pool. Safe for concurrent use.
type Backend struct {
	cfg    *poolConfig
	client *bedrockruntime.Client
	creds  aws.CredentialsProvider
	httpc  *http.Client
	gate   *managed.Gate
	log    *slog.Logger

	credID atomic.Pointer[[sha256.Size]byte] // which credentials the last refresh saw (a digest, never the key)
	closed atomic.Bool
	stop   context.CancelFunc
	done   chan struct{}
}

var (
	_ backends.Backend      = (*Backend)(nil)
	_ backends.LoadReporter = (*Backend)(nil)
)

// New validates the pool's options, loads the AWS configuration (files and
// environment only) and starts the credential refresh. It does not touch
// the network before returning.
func New(spec backends.Spec, o Options) (*Backend, error) {
	cfg, err := parseSpec(spec)
	if err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	// The SDK's buildable client keeps AWS_CA_BUNDLE and the shared config's
	// ca_bundle working; redirects are never followed.
	build := awshttp.NewBuildableClient().WithDialerOptions(func(d *net.Dialer) {
		d.Timeout, d.KeepAlive = 5*time.Second, 30*time.Second
	}).WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 4*cfg.maxConcurrent, cfg.maxConcurrent+2
		tr.IdleConnTimeout, tr.TLSHandshakeTimeout = 90*time.Second, 10*time.Second
	})
	window := func(co *aws.CredentialsCacheOptions) { co.ExpiryWindow = 5 * time.Minute }
	loads := []func(*config.LoadOptions) error{
		config.WithRegion(cfg.region),
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		config.WithHTTPClient(build),
		config.WithCredentialsCacheOptions(window),
	}
	if cfg.profile != "" {
		loads = append(loads, config.WithSharedConfigProfile(cfg.profile))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	awsCfg, err := config.LoadDefaultConfig(ctx, loads...)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("AWS configuration (option %s, AWS_* environment, shared config files): %w", OptProfile, err)
	}
	// The transport as the configuration built it (CA bundle applied), owned
	// here so Close can drop its connections.
	tr := build.GetTransport()
	if bc, ok := awsCfg.HTTPClient.(*awshttp.BuildableClient); ok {
		tr = bc.GetTransport()
	}
	httpc := &http.Client{Transport: ownBody{tr}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	awsCfg.HTTPClient = httpc
	if cfg.roleARN != "" {
		ar := stscreds.NewAssumeRoleProvider(sts.NewFromConfig(awsCfg), cfg.roleARN, func(ao *stscreds.AssumeRoleOptions) {
			ao.RoleSessionName = cfg.roleSession
			if cfg.externalID != "" {
				ao.ExternalID = aws.String(cfg.externalID)
			}
		})
		awsCfg.Credentials = aws.NewCredentialsCache(ar, window)
	}
	client := bedrockruntime.NewFromConfig(awsCfg, func(bo *bedrockruntime.Options) {
		if cfg.endpoint != "" {
			bo.BaseEndpoint = aws.String(cfg.endpoint)
		}
		bo.Retryer = aws.NopRetryer{}
	})
	b := &Backend{
		cfg: cfg, client: client, creds: awsCfg.Credentials, httpc: httpc, log: o.Logger, done: make(chan struct{}),
		gate: &managed.Gate{Pool: cfg.pool, MaxConcurrent: cfg.maxConcurrent, BackoffMin: cfg.backoffMin, BackoffMax: cfg.backoffMax},
	}
	lctx, stop := context.WithCancel(context.Background())
	b.stop = stop
	go b.loop(lctx)
	return b, nil
}

// loop refreshes credentials until Close: at once, then every credential_refresh.
func (b *Backend) loop(ctx context.Context) {
	defer close(b.done)
	t := time.NewTicker(b.cfg.refreshEvery)
	defer t.Stop()
	for {
		b.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// credentialTimeout bounds one background credential fetch.
const credentialTimeout = 30 * time.Second

func (b *Backend) refresh(ctx context.Context) {
	if b.creds == nil {
		b.gate.CredentialsRefreshed(errors.New("no credential provider"), false)
		return
	}
	rctx, cancel := context.WithTimeout(ctx, credentialTimeout)
	defer cancel()
	c, err := b.creds.Retrieve(rctx)
	if ctx.Err() != nil {
		return
	}
	changed := false
	if err == nil {
		id := sha256.Sum256([]byte(c.AccessKeyID + "\x00" + c.SessionToken))
		prev := b.credID.Swap(&id)
		changed = prev == nil || *prev != id
	}
	if b.gate.CredentialsRefreshed(err, changed) {
		if err != nil {
			b.log.Error("AWS credentials could not be refreshed: the pool fails its health checks until they are",
				"pool", b.cfg.pool, "err", credentialError(err))
		} else {
			b.log.Info("AWS credentials refreshed", "pool", b.cfg.pool)
		}
	}
}

// Load implements backends.LoadReporter.
func (b *Backend) Load() (backends.Load, bool) { return b.gate.Load() }

// Capabilities implements backends.Backend: with continuation on, a trailing
// assistant turn is continued (Anthropic models on Bedrock do this); tools
// go through Converse's toolConfig. JSON mode and logprobs are not offered.
func (b *Backend) Capabilities() backends.Capabilities {
	return backends.Capabilities{Continuation: b.cfg.continuation, Tools: true, NoTopK: !b.cfg.anyTopK()}
}

// Close stops the refresh loop and closes idle connections.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.stop()
	<-b.done
	b.httpc.CloseIdleConnections()
	return nil
}

// maxRequestBody bounds a request body the adapter sends.
const maxRequestBody = 32 << 20

// ownBody hands the transport a copy of the SDK's request body. The SDK
// closes its body stream as soon as an event stream's response headers
// arrive; net/http, after writing Content-Length bytes, still reads the body
// once more to check for extra bytes, and a closed stream there fails the
// write and closes the connection under the stream being read (seen against
// the fake as "use of closed network connection" right after messageStart).
type ownBody struct{ next http.RoundTripper }

// CloseIdleConnections reaches the transport's (http.Client.CloseIdleConnections calls it).
func (o ownBody) CloseIdleConnections() {
	if c, ok := o.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func (o ownBody) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return o.next.RoundTrip(r)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	_ = r.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	if len(b) > maxRequestBody {
		return nil, fmt.Errorf("request body larger than %d bytes", maxRequestBody)
	}
	c := r.Clone(r.Context())
	c.Body = io.NopCloser(bytes.NewReader(b))
	c.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	c.ContentLength = int64(len(b))
	return o.next.RoundTrip(c)
}

// Check implements backends.Backend: healthy when the credentials refresh,
// the service has not refused them, and the endpoint answers HTTP.
func (b *Backend) Check(ctx context.Context) error {
	if b.closed.Load() {
		return status.Errorf(codes.Unavailable, "pool %s: backend closed", b.cfg.pool)
	}
	if err := b.gate.Health(); err != nil {
		return status.Errorf(codes.Unavailable, "pool %s: %v", b.cfg.pool, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, b.cfg.probeURL(), nil)
	if err != nil {
		return status.Errorf(codes.Internal, "pool %s: probe: %v", b.cfg.pool, err)
	}
	resp, err := b.httpc.Do(req)
	if err != nil {
		return status.Errorf(codes.Unavailable, "pool %s: endpoint unreachable: %v", b.cfg.pool, scrub(err))
	}
	_ = resp.Body.Close()
	return nil
}

// input is a Converse request built from a switchyard request.
type input struct {
	model    string
	messages []types.Message
	system   []types.SystemContentBlock
	inf      *types.InferenceConfiguration
	tools    *types.ToolConfiguration
	extra    document.Interface
	field    string // the client's input in errors: prompt or messages
	trimmed  bool   // trailing whitespace was cut from the continued turn
}

// jsonDoc parses JSON text into a document for the SDK.
func jsonDoc(text string) (document.Interface, error) {
	var v any
	if err := json.Unmarshal([]byte(text), &v); err != nil {
		return nil, err
	}
	return document.NewLazyDocument(v), nil
}

// build maps the request: a prompt is one user turn; system messages go to
// system; consecutive turns of one role are joined (Converse wants them to
// alternate; a tool result is a user turn); an assistant's tool calls are
// toolUse blocks; a continuation (or a client's own trailing assistant
// turn) is a trailing assistant turn the model continues, asking only for
// the remaining max_tokens; tools and tool_choice go to toolConfig.
func (c *poolConfig) build(req *pb.GenerateRequest) (*input, error) {
	cont := req.GetContinuation()
	maxTokens := req.GetMaxTokens() - max(cont.GetGeneratedTokens(), 0)
	if maxTokens < 1 {
		maxTokens = 1
	}
	in := &input{model: c.modelID(req.GetModel()), field: "prompt"}
	add := func(role types.ConversationRole, blocks ...types.ContentBlock) {
		if n := len(in.messages); n > 0 && in.messages[n-1].Role == role {
			last := &in.messages[n-1]
			if t, ok := blocks[0].(*types.ContentBlockMemberText); ok && len(blocks) == 1 {
				if prev, ok := last.Content[len(last.Content)-1].(*types.ContentBlockMemberText); ok {
					prev.Value += "\n\n" + t.Value
					return
				}
			}
			last.Content = append(last.Content, blocks...)
			return
		}
		in.messages = append(in.messages, types.Message{Role: role, Content: blocks})
	}
	text := func(s string) types.ContentBlock { return &types.ContentBlockMemberText{Value: s} }
	toolTurns := false
	if msgs := req.GetMessages(); len(msgs) > 0 {
		in.field = "messages"
		for i, m := range msgs {
			switch m.GetRole() {
			case "system":
				if m.GetContent() != "" {
					in.system = append(in.system, &types.SystemContentBlockMemberText{Value: m.GetContent()})
				}
			case "user":
				if m.GetContent() == "" {
					return nil, status.Errorf(codes.InvalidArgument, "messages[%d].content: empty (Bedrock refuses empty turns)", i)
				}
				add(types.ConversationRoleUser, text(m.GetContent()))
			case "assistant":
				var blocks []types.ContentBlock
				if m.GetContent() != "" {
					blocks = append(blocks, text(m.GetContent()))
				}
				for j, tc := range m.GetToolCalls() {
					args := tc.GetArguments()
					if args == "" {
						args = "{}"
					}
					doc, err := jsonDoc(args)
					if err != nil {
						return nil, status.Errorf(codes.InvalidArgument, "messages[%d].tool_calls[%d].arguments: not JSON (Bedrock takes tool input as a JSON document)", i, j)
					}
					blocks = append(blocks, &types.ContentBlockMemberToolUse{Value: types.ToolUseBlock{ToolUseId: aws.String(tc.GetId()), Name: aws.String(tc.GetName()), Input: doc}})
					toolTurns = true
				}
				if len(blocks) == 0 {
					return nil, status.Errorf(codes.InvalidArgument, "messages[%d].content: empty (Bedrock refuses empty turns)", i)
				}
				add(types.ConversationRoleAssistant, blocks...)
			case "tool":
				if m.GetContent() == "" {
					return nil, status.Errorf(codes.InvalidArgument, "messages[%d].content: an empty tool result (Bedrock refuses empty text)", i)
				}
				add(types.ConversationRoleUser, &types.ContentBlockMemberToolResult{Value: types.ToolResultBlock{ToolUseId: aws.String(m.GetToolCallId()),
					Content: []types.ToolResultContentBlock{&types.ToolResultContentBlockMemberText{Value: m.GetContent()}}}})
				toolTurns = true
			default:
				return nil, status.Errorf(codes.InvalidArgument, "messages[%d].role: %q is not system, user, assistant or tool", i, managed.Quote(m.GetRole()))
			}
		}
		if len(in.messages) == 0 || in.messages[0].Role != types.ConversationRoleUser {
			return nil, status.Errorf(codes.InvalidArgument, "messages: Bedrock needs the first non-system turn to be the user's")
		}
	} else {
		if req.GetPrompt() == "" {
			return nil, status.Errorf(codes.InvalidArgument, "prompt: empty")
		}
		add(types.ConversationRoleUser, text(req.GetPrompt()))
	}
	if g := cont.GetGeneratedText(); g != "" {
		add(types.ConversationRoleAssistant, text(g))
	}
	if last := &in.messages[len(in.messages)-1]; last.Role == types.ConversationRoleAssistant {
		// A continued turn may not end in whitespace; the model's next
		// token then brings its own leading space, which is cut.
		if tb, ok := last.Content[len(last.Content)-1].(*types.ContentBlockMemberText); ok {
			if t := strings.TrimRightFunc(tb.Value, unicode.IsSpace); t != tb.Value {
				tb.Value, in.trimmed = t, true
			}
			if tb.Value == "" && len(last.Content) == 1 {
				in.messages = in.messages[:len(in.messages)-1]
			}
		}
	}
	if err := c.buildTools(req, in, toolTurns); err != nil {
		return nil, err
	}
	in.inf = &types.InferenceConfiguration{MaxTokens: aws.Int32(maxTokens)}
	if sp := req.GetSampling(); sp != nil {
		in.inf.Temperature, in.inf.TopP, in.inf.StopSequences = sp.Temperature, sp.TopP, sp.GetStop()
		if sp.TopK != nil {
			if !c.sendTopK(in.model) {
				// Converse has no top_k; only a model that takes it in its own
				// fields (Anthropic's) gets it. Refused, never dropped.
				return nil, status.Errorf(codes.InvalidArgument, "sampling.top_k: Bedrock model %q takes no top_k (the pool's top_k option turns it on for a model that does)", in.model)
			}
			in.extra = document.NewLazyDocument(map[string]any{"top_k": sp.GetTopK()})
		}
	}
	return in, nil
}

// buildTools maps tools and tool_choice to toolConfig. Converse has no
// "none" choice and no switch for parallel calls: tool_choice none leaves
// the tools out (refused when the conversation already has tool turns,
// which Converse only takes with toolConfig), parallel_tool_calls false is
// refused, naming the field.
func (c *poolConfig) buildTools(req *pb.GenerateRequest, in *input, toolTurns bool) error {
	if p := req.ParallelToolCalls; p != nil && !*p && len(req.GetTools()) > 0 {
		return status.Errorf(codes.InvalidArgument, "parallel_tool_calls: false cannot be honoured by Bedrock's Converse (no such switch)")
	}
	choice := req.GetToolChoice()
	if len(req.GetTools()) == 0 || choice.GetMode() == "none" {
		if toolTurns {
			return status.Errorf(codes.InvalidArgument, "tools: Bedrock needs the tools declared when the conversation has tool calls or results (tool_choice none cannot be honoured there)")
		}
		return nil
	}
	tc := &types.ToolConfiguration{}
	for i, t := range req.GetTools() {
		schema := t.GetParametersJson()
		if schema == "" {
			schema = `{"type":"object","properties":{}}`
		}
		doc, err := jsonDoc(schema)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "tools[%d].parameters: not JSON", i)
		}
		spec := types.ToolSpecification{Name: aws.String(t.GetName()), InputSchema: &types.ToolInputSchemaMemberJson{Value: doc}, Strict: t.Strict}
		if t.GetDescription() != "" {
			spec.Description = aws.String(t.GetDescription())
		}
		tc.Tools = append(tc.Tools, &types.ToolMemberToolSpec{Value: spec})
	}
	switch choice.GetMode() {
	case "", "auto":
		tc.ToolChoice = &types.ToolChoiceMemberAuto{}
	case "required":
		tc.ToolChoice = &types.ToolChoiceMemberAny{}
	case "function":
		tc.ToolChoice = &types.ToolChoiceMemberTool{Value: types.SpecificToolChoice{Name: aws.String(choice.GetFunctionName())}}
	default:
		return status.Errorf(codes.InvalidArgument, "tool_choice.mode: %q is not auto, none, required or function", managed.Quote(choice.GetMode()))
	}
	in.tools = tc
	return nil
}

// stop maps Bedrock's stop reasons.
func stop(r types.StopReason) pb.FinishReason {
	switch r {
	case types.StopReasonMaxTokens, types.StopReasonModelContextWindowExceeded:
		return pb.FinishReason_FINISH_REASON_LENGTH
	case types.StopReasonStopSequence:
		return pb.FinishReason_FINISH_REASON_STOP_SEQUENCE
	case types.StopReasonContentFiltered, types.StopReasonGuardrailIntervened:
		return pb.FinishReason_FINISH_REASON_CONTENT_FILTER
	case types.StopReasonToolUse:
		return pb.FinishReason_FINISH_REASON_TOOL_CALLS
	default: // end_turn, anything newer
		return pb.FinishReason_FINISH_REASON_STOP
	}
}

func clamp(v *int32) int32 {
	if v == nil || *v < 0 {
		return 0
	}
	return *v
}

// call is the per-call bound: the caller's context, request_timeout, and
// (for streams) the idle bound, telling its own end from the caller's.
type call struct {
	ctx      context.Context
	cancel   context.CancelFunc
	timedOut atomic.Bool
}

func (b *Backend) begin(ctx context.Context) *call {
	c := &call{}
	c.ctx, c.cancel = context.WithCancel(ctx)
	t := time.AfterFunc(b.cfg.requestMax, func() { c.timedOut.Store(true); c.cancel() })
	context.AfterFunc(c.ctx, func() { t.Stop() })
	return c
}

func (b *Backend) prepare(ctx context.Context, req *pb.GenerateRequest) (*input, func(), error) {
	if b.closed.Load() {
		return nil, nil, status.Errorf(codes.Unavailable, "pool %s: backend closed", b.cfg.pool)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, status.FromContextError(err).Err()
	}
	in, err := b.cfg.build(req)
	if err != nil {
		return nil, nil, err
	}
	done, err := b.gate.Admit()
	if err != nil {
		return nil, nil, err
	}
	return in, done, nil
}

// Generate implements backends.Backend with Converse.
func (b *Backend) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	in, done, err := b.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	defer done()
	c := b.begin(ctx)
	defer c.cancel()
	out, err := b.client.Converse(c.ctx, &bedrockruntime.ConverseInput{
		ModelId: aws.String(in.model), Messages: in.messages, System: in.system, InferenceConfig: in.inf,
		ToolConfig: in.tools, AdditionalModelRequestFields: in.extra,
	})
	if err != nil {
		return nil, b.fail(ctx, c, err, in, 0)
	}
	b.gate.Succeeded()
	var text strings.Builder
	var calls []*pb.ToolCall
	if m, ok := out.Output.(*types.ConverseOutputMemberMessage); ok {
		for _, cb := range m.Value.Content {
			switch v := cb.(type) {
			case *types.ContentBlockMemberText:
				text.WriteString(v.Value)
			case *types.ContentBlockMemberToolUse:
				args := []byte("{}")
				if v.Value.Input != nil {
					if b, err := v.Value.Input.MarshalSmithyDocument(); err == nil {
						args = b
					}
				}
				calls = append(calls, &pb.ToolCall{Id: aws.ToString(v.Value.ToolUseId), Name: aws.ToString(v.Value.Name), Arguments: string(args)})
			}
		}
	}
	s := text.String()
	if in.trimmed {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
	}
	resp := &pb.GenerateResponse{Text: s, FinishReason: stop(out.StopReason), ToolCalls: calls}
	if u := out.Usage; u != nil && (clamp(u.InputTokens) > 0 || clamp(u.OutputTokens) > 0) {
		resp.Usage = &pb.Usage{InputTokens: clamp(u.InputTokens), OutputTokens: clamp(u.OutputTokens)}
	} else {
		resp.Usage = &pb.Usage{OutputTokens: int32(backends.EstimateTokens(s))}
	}
	return resp, nil
}

// GenerateStream implements backends.Backend with ConverseStream. Every
// text delta becomes a chunk of one token; the final chunk carries the rest
// of Bedrock's output count, its usage and the stop reason. A stream that
// ends without messageStop is UNAVAILABLE (the router continues it
// elsewhere), as is one silent for stream_idle_timeout.
func (b *Backend) GenerateStream(ctx context.Context, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error) error {
	in, done, err := b.prepare(ctx, req)
	if err != nil {
		return err
	}
	defer done()
	c := b.begin(ctx)
	defer c.cancel()
	out, err := b.client.ConverseStream(c.ctx, &bedrockruntime.ConverseStreamInput{
		ModelId: aws.String(in.model), Messages: in.messages, System: in.system, InferenceConfig: in.inf,
		ToolConfig: in.tools, AdditionalModelRequestFields: in.extra,
	}, ownProtocol)
	if err != nil {
		return b.fail(ctx, c, err, in, 0)
	}
	es := out.GetStream()
	defer es.Close()
	idle := time.AfterFunc(b.cfg.idleMax, func() { c.timedOut.Store(true); c.cancel() })
	defer idle.Stop()
	var (
		sent    int32
		finish  pb.FinishReason
		usage   *types.TokenUsage
		stopped bool
		trim    = in.trimmed
	)
	toolIndex := map[int32]int32{} // content block index -> tool call index
	emit := func(out *pb.GenerateChunk) error {
		idle.Stop() // a slow client is not a silent service
		if err := send(out); err != nil {
			return err
		}
		idle.Reset(b.cfg.idleMax)
		sent += out.Tokens
		return nil
	}
	for ev := range es.Events() {
		idle.Reset(b.cfg.idleMax)
		switch v := ev.(type) {
		case *types.ConverseStreamOutputMemberContentBlockStart:
			st, ok := v.Value.Start.(*types.ContentBlockStartMemberToolUse)
			if !ok || len(toolIndex) >= maxToolCalls {
				continue
			}
			ti := int32(len(toolIndex))
			toolIndex[aws.ToInt32(v.Value.ContentBlockIndex)] = ti
			d := &pb.ToolCallDelta{Index: ti, Id: aws.ToString(st.Value.ToolUseId), Name: aws.ToString(st.Value.Name)}
			if err := emit(&pb.GenerateChunk{Tokens: 1, ToolCalls: []*pb.ToolCallDelta{d}}); err != nil {
				return err
			}
		case *types.ConverseStreamOutputMemberContentBlockDelta:
			if tu, ok := v.Value.Delta.(*types.ContentBlockDeltaMemberToolUse); ok {
				ti, known := toolIndex[aws.ToInt32(v.Value.ContentBlockIndex)]
				if a := aws.ToString(tu.Value.Input); known && a != "" {
					if err := emit(&pb.GenerateChunk{Tokens: backends.DeltaTokens(len(a)), ToolCalls: []*pb.ToolCallDelta{{Index: ti, Arguments: a}}}); err != nil {
						return err
					}
				}
				continue
			}
			d, ok := v.Value.Delta.(*types.ContentBlockDeltaMemberText)
			if !ok {
				continue
			}
			t := d.Value
			if trim {
				t = strings.TrimLeftFunc(t, unicode.IsSpace)
				trim = t == ""
			}
			if t == "" {
				continue
			}
			if err := emit(&pb.GenerateChunk{Text: t, Tokens: backends.DeltaTokens(len(t))}); err != nil {
				return err
			}
		case *types.ConverseStreamOutputMemberMessageStop:
			finish, stopped = stop(v.Value.StopReason), true
		case *types.ConverseStreamOutputMemberMetadata:
			usage = v.Value.Usage
		}
	}
	if err := es.Err(); err != nil {
		return b.fail(ctx, c, err, in, sent)
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if !stopped {
		if c.timedOut.Load() {
			return status.Errorf(codes.Unavailable, "pool %s: stream silent for %s or longer than %s after %d tokens", b.cfg.pool, b.cfg.idleMax, b.cfg.requestMax, sent)
		}
		return status.Errorf(codes.Unavailable, "pool %s: stream ended without messageStop after %d tokens", b.cfg.pool, sent)
	}
	b.gate.Succeeded()
	final := &pb.GenerateChunk{FinishReason: finish}
	if usage != nil && (clamp(usage.InputTokens) > 0 || clamp(usage.OutputTokens) > 0) {
		o := clamp(usage.OutputTokens)
		final.Tokens = max(0, o-sent)
		final.Usage = &pb.Usage{InputTokens: clamp(usage.InputTokens), OutputTokens: max(o, sent)}
	} else {
		final.Usage = &pb.Usage{OutputTokens: sent}
	}
	return send(final)
}

// ownProtocol gives one ConverseStream call its own protocol instance. The
// SDK's restJson1 protocol keeps one event-stream decoder and payload buffer
// per instance, and the client shares its instance between calls: two
// streams read at once race on them (the race detector shows it, and
// payloads can mix). A fresh instance per stream keeps them apart.
func ownProtocol(o *bedrockruntime.Options) {
	o.Protocol = restjson1.New(schemas.AmazonBedrockFrontendService)
}

// maxToolCalls bounds the tool calls one streamed answer may carry.
const maxToolCalls = 128

// Error codes that mean the caller's credentials were refused.
var deniedCodes = map[string]bool{
	"AccessDeniedException": true, "UnrecognizedClientException": true, "InvalidSignatureException": true,
	"ExpiredTokenException": true, "IncompleteSignature": true, "IncompleteSignatureException": true,
	"MissingAuthenticationTokenException": true, "InvalidClientTokenId": true, "SignatureDoesNotMatch": true,
	"ExpiredToken": true,
}

// Error codes that mean the pool is out of room: a shortage.
var shortCodes = map[string]bool{
	"ThrottlingException": true, "ServiceQuotaExceededException": true, "TooManyRequestsException": true,
	"ModelNotReadyException": true,
}

// fail classifies an SDK error into the codes the router acts on. Neither
// credentials nor request text appear in it: the SDK's messages name the
// operation, the status and the service's own message (quoted, bounded).
func (b *Backend) fail(ctx context.Context, c *call, err error, in *input, sent int32) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	where := "pool " + b.cfg.pool
	if c.timedOut.Load() {
		return status.Errorf(codes.Unavailable, "%s: no answer within %s (or a stream silent for %s) after %d tokens", where, b.cfg.requestMax, b.cfg.idleMax, sent)
	}
	if m := err.Error(); strings.Contains(m, "retrieve credentials") || strings.Contains(m, "refresh cached credentials") {
		// No request reached Bedrock: the credential chain (or STS) failed.
		return status.Errorf(codes.Unavailable, "%s: AWS credentials: %s", where, credentialError(err))
	}
	code, msg, httpStatus := "", "", 0
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code, msg = ae.ErrorCode(), managed.Quote(ae.ErrorMessage())
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		httpStatus = re.HTTPStatusCode()
	}
	switch {
	case shortCodes[code] || httpStatus == http.StatusTooManyRequests:
		back := b.gate.Throttled()
		return status.Errorf(codes.ResourceExhausted, "%s: throttled by Bedrock (%s) after %d tokens, backing off %s: %s", where, code, sent, back, msg)
	case deniedCodes[code] || httpStatus == http.StatusUnauthorized || httpStatus == http.StatusForbidden:
		if b.gate.Denied() {
			b.log.Error("Bedrock refused the pool's credentials: the pool fails until they change (check bedrock:InvokeModel and bedrock:InvokeModelWithResponseStream on the model, and options region, profile, role_arn)",
				"pool", b.cfg.pool, "code", code, "http_status", httpStatus)
		}
		return status.Errorf(codes.Unavailable, "%s: Bedrock refused the pool's credentials (%s, HTTP %d): %s", where, code, httpStatus, msg)
	case code == "ValidationException":
		l := strings.ToLower(msg)
		if strings.Contains(l, "too long") || strings.Contains(l, "context window") || strings.Contains(l, "too many tokens") || strings.Contains(l, "max_tokens") && strings.Contains(l, "exceed") {
			return status.Errorf(codes.InvalidArgument, "%s: longer than the context window of %s (ValidationException): %s", in.field, where, msg)
		}
		return status.Errorf(codes.InvalidArgument, "%s: rejected by %s (ValidationException): %s", in.field, where, msg)
	case code == "ResourceNotFoundException":
		return status.Errorf(codes.InvalidArgument, "model: %s does not serve it (model id %s): %s", where, managed.Quote(in.model), msg)
	case code != "":
		return status.Errorf(codes.Unavailable, "%s: Bedrock %s (HTTP %d) after %d tokens: %s", where, code, httpStatus, sent, msg)
	}
	return status.Errorf(codes.Unavailable, "%s: after %d tokens: %s", where, sent, managed.Quote(scrub(err).Error()))
}

// scrub keeps a transport error's network cause (dial, read) when there
// is one, without the SDK's wrapping.
func scrub(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe
	}
	return err
}

// credentialError is a credential failure fit for a log: the SDK's message
// up to any quoted process output (a credential_process's output may hold
// a secret), bounded.
func credentialError(err error) string {
	m := err.Error()
	if i := strings.Index(m, "process output"); i >= 0 {
		m = m[:i] + "process output (not shown)"
	}
	return managed.Quote(m)
}
