// Package bedrocktest is a local fake of the Amazon Bedrock runtime's
// Converse and ConverseStream operations for tests, checking what the real
// service checks: every request's SigV4 signature is verified by signing
// the request again with the AWS SDK's own signer (aws/signer/v4) over the
// credentials the test allowed (a wrong key, secret, session token, region,
// service, or a signature older than 5 minutes is refused as Bedrock
// refuses it), the body must be a valid Converse request (roles alternate
// from user, no empty text, max_tokens >= 1, a final assistant turn
// without trailing whitespace), and ConverseStream answers in the real
// event-stream binary encoding, written with the SDK's encoder
// (aws/protocol/eventstream). Answers come from backends/internal/fakemodel.
package bedrocktest

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/switchyard-dev/switchyard/backends/internal/fakemodel"
)

// Known test credentials (not real ones; AWS documents this example pair).
const (
	AccessKeyID     = "AKIAIOSFODNN7EXAMPLE"
	SecretAccessKey = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

// Options configure a fake.
type Options struct {
	// Region the fake serves (the credential scope must name it); default us-east-1.
	Region string
	// TokenDelay is the time per generated token; default 2ms.
	TokenDelay time.Duration
	// ContextWindow: an input estimated above this many tokens is refused
	// with ValidationException "Input is too long"; default 2000.
	ContextWindow int
}

// Server is a running fake.
type Server struct {
	// URL is the endpoint to give the SDK (BaseEndpoint).
	URL string

	// Throttle: every call answers 429 ThrottlingException.
	Throttle atomic.Bool
	// Quota: every call answers 400 ServiceQuotaExceededException.
	Quota atomic.Bool
	// Deny: every call answers 403 AccessDeniedException (the role lacks
	// bedrock:InvokeModel).
	Deny atomic.Bool
	// CutAfter > 0: a stream breaks (connection dropped) after that many tokens.
	CutAfter atomic.Int64
	// ThrottleInStream > 0: a stream sends a throttlingException event after
	// that many tokens.
	ThrottleInStream atomic.Int64

	opts Options
	srv  *http.Server
	mu   sync.Mutex
	keys map[string]aws.Credentials // by access key id
	used map[string]int             // accepted calls by access key id
	// BadSignatures counts requests refused for their signature or credentials.
	BadSignatures atomic.Int64
	// Calls counts Converse and ConverseStream requests that passed the signature check.
	Calls atomic.Int64
	// LastBody is the last accepted request body.
	lastBody atomic.Pointer[[]byte]
}

// Start runs a fake on a loopback port until the test ends, allowing the
// known test credentials.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if o.TokenDelay == 0 {
		o.TokenDelay = 2 * time.Millisecond
	}
	if o.ContextWindow == 0 {
		o.ContextWindow = 2000
	}
	s := &Server{opts: o, keys: map[string]aws.Credentials{}, used: map[string]int{}}
	s.Allow(aws.Credentials{AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.URL = "http://" + lis.Addr().String()
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(lis) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

// Allow accepts signatures made with c (its session token must be sent when set).
func (s *Server) Allow(c aws.Credentials) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[c.AccessKeyID] = c
}

// Revoke refuses an access key from now on.
func (s *Server) Revoke(accessKeyID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, accessKeyID)
}

// Used is how many calls were accepted with an access key.
func (s *Server) Used(accessKeyID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used[accessKeyID]
}

// LastBody is the last accepted request's body.
func (s *Server) LastBody() []byte {
	if p := s.lastBody.Load(); p != nil {
		return *p
	}
	return nil
}

// awsError writes an error the way the restJson1 protocol does.
func awsError(w http.ResponseWriter, code int, kind, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", kind+":http://internal.amazon.com/coral/com.amazon.bedrock/")
	w.Header().Set("X-Amzn-RequestId", "fake-request")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"message": msg})
	_, _ = w.Write(b)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		// Unsigned probes of the endpoint: the real service answers them
		// with an error document, which proves it is reachable.
		awsError(w, http.StatusForbidden, "MissingAuthenticationTokenException", "Missing Authentication Token")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		return
	}
	if kind, msg := s.verify(r, body); kind != "" {
		s.BadSignatures.Add(1)
		code := http.StatusForbidden
		if kind == "UnrecognizedClientException" {
			code = http.StatusUnauthorized
		}
		awsError(w, code, kind, msg)
		return
	}
	// /model/{modelId}/converse or /model/{modelId}/converse-stream
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/model/")
	model, op, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || (op != "converse" && op != "converse-stream") {
		awsError(w, http.StatusNotFound, "UnknownOperationException", "unknown operation")
		return
	}
	if m, err := url.PathUnescape(model); err != nil || m == "" {
		awsError(w, http.StatusBadRequest, "ValidationException", "bad model identifier")
		return
	}
	s.Calls.Add(1)
	s.lastBody.Store(&body)
	switch {
	case s.Deny.Load():
		awsError(w, http.StatusForbidden, "AccessDeniedException", "You don't have access to the model with the specified model ID.")
		return
	case s.Throttle.Load():
		awsError(w, http.StatusTooManyRequests, "ThrottlingException", "Too many requests, please wait before trying again.")
		return
	case s.Quota.Load():
		awsError(w, http.StatusBadRequest, "ServiceQuotaExceededException", "You have exceeded your service quota for this model.")
		return
	}
	in, err := parseConverse(body)
	if err != nil {
		awsError(w, http.StatusBadRequest, "ValidationException", err.Error())
		return
	}
	if in.inputTokens > s.opts.ContextWindow {
		awsError(w, http.StatusBadRequest, "ValidationException", "Input is too long for requested model.")
		return
	}
	if op == "converse" {
		s.converse(w, r, in)
		return
	}
	s.converseStream(w, r, in)
}

// verify checks a Bedrock request's SigV4 signature against the allowed
// credentials; it returns the error kind and message Bedrock would answer,
// or "" when the signature holds.
func (s *Server) verify(r *http.Request, body []byte) (kind, msg string) {
	kind, msg, akid := VerifySigV4(r, body, s.opts.Region, "bedrock", func(id string) (aws.Credentials, bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		c, ok := s.keys[id]
		return c, ok
	})
	if kind == "" {
		s.mu.Lock()
		s.used[akid]++
		s.mu.Unlock()
	}
	return kind, msg
}

// VerifySigV4 checks a request's SigV4 signature the way an AWS service
// does, by signing a copy of it again with the SDK's own signer
// (aws/signer/v4) and the secret that lookup knows for its access key: the
// credential scope must name region and service, the date must be within 5
// minutes, a session token must match. It returns the error kind and
// message the service would answer ("" when the signature holds) and the
// access key id.
func VerifySigV4(r *http.Request, body []byte, wantRegion, wantService string, lookup func(accessKeyID string) (aws.Credentials, bool)) (kind, msg, akid string) {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return "MissingAuthenticationTokenException", "Missing Authentication Token", ""
	}
	fields := map[string]string{}
	for _, f := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return "IncompleteSignatureException", "Authorization header requires a valid Credential", ""
	}
	akid, region, service := scope[0], scope[2], scope[3]
	creds, known := lookup(akid)
	if !known {
		return "UnrecognizedClientException", "The security token included in the request is invalid.", akid
	}
	if region != wantRegion || service != wantService {
		return "InvalidSignatureException", fmt.Sprintf("Credential should be scoped to a valid region (%s) and service (%s)", wantRegion, wantService), akid
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "IncompleteSignatureException", "X-Amz-Date is missing or malformed", akid
	}
	if d := time.Since(when); d > 5*time.Minute || d < -5*time.Minute {
		return "InvalidSignatureException", "Signature expired", akid
	}
	if creds.SessionToken != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Amz-Security-Token")), []byte(creds.SessionToken)) != 1 {
		return "UnrecognizedClientException", "The security token included in the request is invalid.", akid
	}
	u, err := url.Parse("http://" + r.Host + r.URL.RequestURI())
	if err != nil {
		return "InvalidSignatureException", "bad request URI", akid
	}
	cp := &http.Request{Method: r.Method, URL: u, Host: r.Host, Header: http.Header{}}
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		switch h {
		case "host":
		case "content-length":
			cp.ContentLength = r.ContentLength
		default:
			if vs := r.Header.Values(h); len(vs) > 0 {
				cp.Header[http.CanonicalHeaderKey(h)] = vs
			}
		}
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, cp, hex.EncodeToString(sum[:]), service, region, when); err != nil {
		return "InvalidSignatureException", "cannot verify the signature", akid
	}
	if subtle.ConstantTimeCompare([]byte(cp.Header.Get("Authorization")), []byte(auth)) != 1 {
		return "InvalidSignatureException", "The request signature we calculated does not match the signature you provided.", akid
	}
	return "", "", akid
}

// converseRequest mirrors the Converse body the fake accepts (unknown
// fields are refused, as the service's validation does).
type converseRequest struct {
	Messages []struct {
		Role    string `json:"role"`
		Content []struct {
			Text    *string `json:"text"`
			ToolUse *struct {
				ToolUseID string          `json:"toolUseId"`
				Name      string          `json:"name"`
				Input     json.RawMessage `json:"input"`
			} `json:"toolUse"`
			ToolResult *struct {
				ToolUseID string `json:"toolUseId"`
				Content   []struct {
					Text *string         `json:"text"`
					JSON json.RawMessage `json:"json"`
				} `json:"content"`
				Status string `json:"status"`
			} `json:"toolResult"`
		} `json:"content"`
	} `json:"messages"`
	ToolConfig *struct {
		Tools []struct {
			ToolSpec *struct {
				Name        string `json:"name"`
				Description string `json:"description"`
				InputSchema struct {
					JSON json.RawMessage `json:"json"`
				} `json:"inputSchema"`
				Strict *bool `json:"strict"`
			} `json:"toolSpec"`
		} `json:"tools"`
		ToolChoice *struct {
			Auto *struct{} `json:"auto"`
			Any  *struct{} `json:"any"`
			Tool *struct {
				Name string `json:"name"`
			} `json:"tool"`
		} `json:"toolChoice"`
	} `json:"toolConfig"`
	System []struct {
		Text *string `json:"text"`
	} `json:"system"`
	InferenceConfig *struct {
		MaxTokens     *int     `json:"maxTokens"`
		Temperature   *float64 `json:"temperature"`
		TopP          *float64 `json:"topP"`
		StopSequences []string `json:"stopSequences"`
	} `json:"inferenceConfig"`
	AdditionalModelRequestFields map[string]any `json:"additionalModelRequestFields"`
}

type parsed struct {
	key         string // the conversation without a trailing assistant turn
	prefill     string
	maxTokens   int
	inputTokens int
	// tool is the tool the answer calls ("": a text answer): tools were
	// given and the last user turn is not a tool result.
	tool string
}

func parseConverse(body []byte) (*parsed, error) {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	var in converseRequest
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("malformed request body: %v", err)
	}
	if len(in.Messages) == 0 {
		return nil, errors.New("A conversation must start with a user message.")
	}
	p := &parsed{maxTokens: 4096}
	if ic := in.InferenceConfig; ic != nil && ic.MaxTokens != nil {
		if *ic.MaxTokens < 1 {
			return nil, errors.New("1 validation error detected: Value at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1")
		}
		p.maxTokens = *ic.MaxTokens
	}
	var texts []string
	for _, sys := range in.System {
		if sys.Text == nil || *sys.Text == "" {
			return nil, errors.New("The text field in the SystemContentBlock object is blank.")
		}
		texts = append(texts, "system:"+*sys.Text)
	}
	used := map[string]bool{}
	lastIsResult := false
	for i, m := range in.Messages {
		want := "user"
		if i%2 == 1 {
			want = "assistant"
		}
		if m.Role != want {
			return nil, errors.New("A conversation must alternate between user and assistant roles.")
		}
		if len(m.Content) == 0 {
			return nil, fmt.Errorf("messages.%d.content: at least one content block is required", i)
		}
		var b strings.Builder
		lastIsResult = false
		for _, c := range m.Content {
			switch {
			case c.Text != nil && c.ToolUse == nil && c.ToolResult == nil:
				if *c.Text == "" {
					return nil, errors.New("The text field in the ContentBlock object is blank.")
				}
				b.WriteString(*c.Text)
			case c.ToolUse != nil && c.Text == nil && c.ToolResult == nil:
				if m.Role != "assistant" || in.ToolConfig == nil || c.ToolUse.ToolUseID == "" || !json.Valid(c.ToolUse.Input) {
					return nil, errors.New("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
				}
				used[c.ToolUse.ToolUseID] = true
				b.WriteString("[call " + c.ToolUse.Name + " " + string(c.ToolUse.Input) + "]")
			case c.ToolResult != nil && c.Text == nil && c.ToolUse == nil:
				if m.Role != "user" || in.ToolConfig == nil || !used[c.ToolResult.ToolUseID] || len(c.ToolResult.Content) == 0 {
					return nil, errors.New("The toolUseId in a toolResult block must match a toolUse block in the previous assistant turn.")
				}
				for _, rc := range c.ToolResult.Content {
					if rc.Text != nil {
						b.WriteString("[result " + *rc.Text + "]")
					}
				}
				lastIsResult = true
			default:
				return nil, errors.New("A content block must set exactly one of text, toolUse or toolResult.")
			}
		}
		last := i == len(in.Messages)-1
		if last && m.Role == "assistant" {
			if t := b.String(); strings.TrimRightFunc(t, unicode.IsSpace) != t {
				return nil, errors.New("The final assistant content cannot end with trailing whitespace.")
			}
			p.prefill = b.String()
			continue
		}
		texts = append(texts, m.Role+":"+b.String())
	}
	if tc := in.ToolConfig; tc != nil {
		if len(tc.Tools) == 0 {
			return nil, errors.New("The toolConfig field must have at least one tool.")
		}
		for _, t := range tc.Tools {
			if t.ToolSpec == nil || t.ToolSpec.Name == "" || !json.Valid(t.ToolSpec.InputSchema.JSON) {
				return nil, errors.New("A tool must have a name and a JSON input schema.")
			}
		}
		if p.prefill == "" && !lastIsResult {
			p.tool = tc.Tools[0].ToolSpec.Name
			if ch := tc.ToolChoice; ch != nil && ch.Tool != nil {
				p.tool = ch.Tool.Name
			}
		}
	}
	p.key = strings.Join(texts, "\n")
	p.inputTokens = fakemodel.InputTokens(p.key, p.prefill)
	return p, nil
}

type usage struct {
	InputTokens  int `json:"inputTokens"`
	OutputTokens int `json:"outputTokens"`
	TotalTokens  int `json:"totalTokens"`
}

// toolArgs is the fake's tool call input for a conversation.
func toolArgs(in *parsed) string {
	return `{"query":"` + strings.TrimSpace(fakemodel.Token(in.key, 0)) + `"}`
}

func (s *Server) converse(w http.ResponseWriter, r *http.Request, in *parsed) {
	if in.tool != "" {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"output": map[string]any{"message": map[string]any{"role": "assistant", "content": []any{
				map[string]any{"toolUse": map[string]any{"toolUseId": "tooluse_fake1", "name": in.tool, "input": json.RawMessage(toolArgs(in))}}}}},
			"stopReason": "tool_use", "usage": usage{in.inputTokens, 3, in.inputTokens + 3}, "metrics": map[string]int{"latencyMs": 1},
		})
		return
	}
	var text strings.Builder
	n, err := fakemodel.Generate(r.Context(), in.key, in.prefill, in.maxTokens, s.opts.TokenDelay, func(tok string) error {
		text.WriteString(tok)
		return nil
	})
	if err != nil {
		return
	}
	out := map[string]any{
		"output":     map[string]any{"message": map[string]any{"role": "assistant", "content": []any{map[string]string{"text": text.String()}}}},
		"stopReason": "max_tokens",
		"usage":      usage{in.inputTokens, n, in.inputTokens + n},
		"metrics":    map[string]int{"latencyMs": 1},
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *Server) converseStream(w http.ResponseWriter, r *http.Request, in *parsed) {
	w.Header().Set("Content-Type", "application/vnd.amazon.eventstream")
	w.Header().Set("X-Amzn-RequestId", "fake-request")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	enc := eventstream.NewEncoder()
	event := func(kind string, payload any) error {
		b, _ := json.Marshal(payload)
		var h eventstream.Headers
		h.Set(":event-type", eventstream.StringValue(kind))
		h.Set(":content-type", eventstream.StringValue("application/json"))
		h.Set(":message-type", eventstream.StringValue("event"))
		if err := enc.Encode(w, eventstream.Message{Headers: h, Payload: b}); err != nil {
			return err
		}
		if fl != nil {
			fl.Flush()
		}
		return nil
	}
	if event("messageStart", map[string]string{"role": "assistant"}) != nil {
		return
	}
	if in.tool != "" {
		args := toolArgs(in)
		half := len(args) / 2
		_ = event("contentBlockStart", map[string]any{"contentBlockIndex": 0, "start": map[string]any{"toolUse": map[string]string{"toolUseId": "tooluse_fake1", "name": in.tool}}})
		_ = event("contentBlockDelta", map[string]any{"contentBlockIndex": 0, "delta": map[string]any{"toolUse": map[string]string{"input": args[:half]}}})
		_ = event("contentBlockDelta", map[string]any{"contentBlockIndex": 0, "delta": map[string]any{"toolUse": map[string]string{"input": args[half:]}}})
		_ = event("contentBlockStop", map[string]int{"contentBlockIndex": 0})
		_ = event("messageStop", map[string]string{"stopReason": "tool_use"})
		_ = event("metadata", map[string]any{"usage": usage{in.inputTokens, 3, in.inputTokens + 3}, "metrics": map[string]int{"latencyMs": 1}})
		return
	}
	cut, throttleAt := int(s.CutAfter.Load()), int(s.ThrottleInStream.Load())
	sent := 0
	_, err := fakemodel.Generate(r.Context(), in.key, in.prefill, in.maxTokens, s.opts.TokenDelay, func(tok string) error {
		if cut > 0 && sent == cut {
			panic(http.ErrAbortHandler) // the connection drops mid-answer
		}
		if throttleAt > 0 && sent == throttleAt {
			var h eventstream.Headers
			h.Set(":exception-type", eventstream.StringValue("throttlingException"))
			h.Set(":content-type", eventstream.StringValue("application/json"))
			h.Set(":message-type", eventstream.StringValue("exception"))
			_ = enc.Encode(w, eventstream.Message{Headers: h, Payload: []byte(`{"message":"Too many tokens, please wait before trying again."}`)})
			return errors.New("throttled")
		}
		sent++
		return event("contentBlockDelta", map[string]any{"contentBlockIndex": 0, "delta": map[string]string{"text": tok}})
	})
	if err != nil {
		return
	}
	_ = event("contentBlockStop", map[string]int{"contentBlockIndex": 0})
	_ = event("messageStop", map[string]string{"stopReason": "max_tokens"})
	_ = event("metadata", map[string]any{"usage": usage{in.inputTokens, sent, in.inputTokens + sent}, "metrics": map[string]int{"latencyMs": 1}})
}
