// Package vertextest is a local fake of Google Vertex AI for tests, with its
// own OAuth token server, checking what the real services check. The token
// server takes the JWT-bearer grant a service account makes (the key file
// written by ServiceAccountFile points its token_uri here): it verifies the
// assertion's RS256 signature with the account's public key, its issuer,
// audience, scope and lifetime, and issues access tokens that expire after
// TokenTTL. The Vertex fake accepts only unexpired tokens it issued and only
// the configured project, validates the Anthropic Messages body of
// rawPredict / streamRawPredict as the API does (anthropic_version, no
// model field, max_tokens, alternating non-empty turns, no trailing
// whitespace on a final assistant turn) and answers with Anthropic's JSON
// and SSE event shapes; it also serves a self-deployed endpoint's
// OpenAI-compatible chat completions. Answers come from
// backends/internal/fakemodel.
package vertextest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/switchyard-dev/switchyard/backends/internal/fakemodel"
)

// Options configure a fake.
type Options struct {
	// Project the fake serves (default test-project); others get 403.
	Project string
	// TokenTTL is the lifetime of issued tokens (default 1h).
	TokenTTL time.Duration
	// TokenDelay is the time per generated token (default 2ms).
	TokenDelay time.Duration
	// ContextWindow in input tokens (default 2000).
	ContextWindow int
}

// Server is a running fake: the OAuth token server and Vertex AI.
type Server struct {
	// URL is the Vertex endpoint (a pool's endpoints: [URL]).
	URL string
	// TokenURI is the OAuth token endpoint (a service account's token_uri).
	TokenURI string

	// Throttle: calls answer 429 RESOURCE_EXHAUSTED.
	Throttle atomic.Bool
	// Overloaded: calls answer 529 overloaded_error (Anthropic's capacity signal).
	Overloaded atomic.Bool
	// CutAfter > 0: streams drop the connection after that many tokens.
	CutAfter atomic.Int64
	// RefuseGrants: the token server refuses every grant (a revoked key).
	RefuseGrants atomic.Bool

	// Granted counts tokens issued; BadAssertions grants refused; Unauthorized calls refused for their token.
	Granted, BadAssertions, Unauthorized atomic.Int64

	opts     Options
	key      *rsa.PrivateKey
	email    string
	mu       sync.Mutex
	tokens   map[string]time.Time
	lastBody atomic.Pointer[[]byte]
	srv      *http.Server
}

var (
	keyOnce sync.Once
	testKey *rsa.PrivateKey
	keyErr  error
)

// Start runs the fake on a loopback port until the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Project == "" {
		o.Project = "test-project"
	}
	if o.TokenTTL == 0 {
		o.TokenTTL = time.Hour
	}
	if o.TokenDelay == 0 {
		o.TokenDelay = 2 * time.Millisecond
	}
	if o.ContextWindow == 0 {
		o.ContextWindow = 2000
	}
	keyOnce.Do(func() { testKey, keyErr = rsa.GenerateKey(rand.Reader, 2048) })
	if keyErr != nil {
		t.Fatal(keyErr)
	}
	s := &Server{opts: o, key: testKey, email: "switchyard@" + o.Project + ".iam.gserviceaccount.com", tokens: map[string]time.Time{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.URL = "http://" + lis.Addr().String()
	s.TokenURI = s.URL + "/token"
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(lis) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

// ServiceAccountFile writes a service-account key file whose token_uri is
// the fake's token server, and returns its path.
func (s *Server) ServiceAccountFile(t testing.TB) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(s.key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": s.opts.Project, "private_key_id": "fake-key-1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": s.email, "client_id": "1234567890", "token_uri": s.TokenURI,
	})
	path := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// WrongKeyFile is a key file for the same account signed by another key:
// the token server refuses its assertions.
func (s *Server) WrongKeyFile(t testing.TB) string {
	t.Helper()
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(other)
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": s.opts.Project, "private_key_id": "fake-key-2",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": s.email, "client_id": "1234567890", "token_uri": s.TokenURI,
	})
	path := filepath.Join(t.TempDir(), "wrong.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// LastBody is the last accepted request body.
func (s *Server) LastBody() []byte {
	if p := s.lastBody.Load(); p != nil {
		return *p
	}
	return nil
}

func googleError(w http.ResponseWriter, code int, st, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": msg, "status": st}})
	_, _ = w.Write(b)
}

func anthropicError(w http.ResponseWriter, code int, kind, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": kind, "message": msg}})
	_, _ = w.Write(b)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		s.grant(w, r)
		return
	}
	if r.Method != http.MethodPost {
		googleError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL was not found on this server.")
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	exp, known := s.tokens[tok]
	s.mu.Unlock()
	if !ok || !known || !time.Now().Before(exp) {
		s.Unauthorized.Add(1)
		googleError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token.")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	// v1/projects/P/locations/L/publishers/anthropic/models/M:verb or
	// v1beta1/projects/P/locations/L/endpoints/E/chat/completions
	if len(parts) < 6 || parts[1] != "projects" || parts[3] != "locations" {
		googleError(w, http.StatusNotFound, "NOT_FOUND", "unknown method")
		return
	}
	if parts[2] != s.opts.Project {
		googleError(w, http.StatusForbidden, "PERMISSION_DENIED", "Permission 'aiplatform.endpoints.predict' denied on resource (or it may not exist).")
		return
	}
	s.lastBody.Store(&body)
	switch {
	case s.Throttle.Load():
		googleError(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model.")
		return
	case s.Overloaded.Load():
		anthropicError(w, 529, "overloaded_error", "Overloaded")
		return
	}
	switch {
	case parts[0] == "v1" && len(parts) == 9 && parts[5] == "publishers" && parts[6] == "anthropic" && parts[7] == "models":
		_, verb, _ := strings.Cut(parts[8], ":")
		if verb != "rawPredict" && verb != "streamRawPredict" {
			googleError(w, http.StatusNotFound, "NOT_FOUND", "unknown method")
			return
		}
		s.anthropic(w, r, body, verb == "streamRawPredict")
	case parts[0] == "v1" && len(parts) == 9 && parts[5] == "publishers" && parts[6] == "google" && parts[7] == "models":
		_, verb, _ := strings.Cut(parts[8], ":")
		switch {
		case verb == "generateContent":
			s.gemini(w, r, body, false)
		case verb == "streamGenerateContent" && r.URL.Query().Get("alt") == "sse":
			s.gemini(w, r, body, true)
		default:
			googleError(w, http.StatusNotFound, "NOT_FOUND", "unknown method")
		}
	case parts[0] == "v1beta1" && len(parts) == 9 && parts[5] == "endpoints" && parts[7] == "chat" && parts[8] == "completions":
		s.chat(w, r, body)
	default:
		googleError(w, http.StatusNotFound, "NOT_FOUND", "unknown method")
	}
}

// grant verifies a JWT-bearer assertion and issues an access token.
func (s *Server) grant(w http.ResponseWriter, r *http.Request) {
	refuse := func(msg string) {
		s.BadAssertions.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprintf(w, `{"error":"invalid_grant","error_description":%q}`, msg)
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		refuse("unsupported grant")
		return
	}
	if s.RefuseGrants.Load() {
		refuse("Invalid JWT Signature.")
		return
	}
	parts := strings.Split(r.PostForm.Get("assertion"), ".")
	if len(parts) != 3 {
		refuse("malformed assertion")
		return
	}
	var hdr struct{ Alg, Typ, Kid string }
	var claims struct {
		Iss, Scope, Aud string
		Iat, Exp        int64
	}
	if decode(parts[0], &hdr) != nil || decode(parts[1], &claims) != nil || hdr.Alg != "RS256" {
		refuse("malformed assertion")
		return
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err != nil || rsa.VerifyPKCS1v15(&s.key.PublicKey, crypto.SHA256, sum[:], sig) != nil {
		refuse("Invalid JWT Signature.")
		return
	}
	now := time.Now().Unix()
	switch {
	case claims.Iss != s.email:
		refuse("Invalid issuer")
	case claims.Aud != s.TokenURI:
		refuse("Invalid JWT: audience is not the token endpoint")
	case !strings.Contains(" "+claims.Scope+" ", " https://www.googleapis.com/auth/cloud-platform "):
		refuse("Invalid scope")
	case claims.Exp <= now || claims.Iat > now+60 || claims.Exp-claims.Iat > 3600:
		refuse("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")
	default:
		n := s.Granted.Add(1)
		tok := fmt.Sprintf("ya29.fake-%d-%d", n, time.Now().UnixNano())
		s.mu.Lock()
		s.tokens[tok] = time.Now().Add(s.opts.TokenTTL)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_in": int(s.opts.TokenTTL / time.Second), "token_type": "Bearer"})
	}
}

func decode(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

type block struct {
	Type      string          `json:"type"`
	Text      *string         `json:"text"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
}

type messagesRequest struct {
	AnthropicVersion string `json:"anthropic_version"`
	Messages         []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Tools []struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		InputSchema json.RawMessage `json:"input_schema"`
	} `json:"tools"`
	ToolChoice *struct {
		Type                   string `json:"type"`
		Name                   string `json:"name"`
		DisableParallelToolUse *bool  `json:"disable_parallel_tool_use"`
	} `json:"tool_choice"`
	System        string   `json:"system"`
	MaxTokens     *int     `json:"max_tokens"`
	Stream        bool     `json:"stream"`
	Temperature   *float64 `json:"temperature"`
	TopP          *float64 `json:"top_p"`
	TopK          *int     `json:"top_k"`
	StopSequences []string `json:"stop_sequences"`
}

// conversation is a validated request: the answer's key, the prefill, the limits.
type conversation struct {
	key, prefill string
	maxTokens    int
	input        int
	tool         string // the tool the answer calls, or "" for text
}

func validateMessages(body []byte, stream bool) (*conversation, error) {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	var m messagesRequest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%v", err) // e.g. `json: unknown field "model"`
	}
	switch {
	case m.AnthropicVersion != "vertex-2023-10-16":
		return nil, errors.New("anthropic_version: Field required (vertex-2023-10-16)")
	case m.MaxTokens == nil || *m.MaxTokens < 1:
		return nil, errors.New("max_tokens: Field required, at least 1")
	case len(m.Messages) == 0:
		return nil, errors.New("messages: at least one message is required")
	case m.Stream != stream:
		return nil, errors.New("stream: must be true for streamRawPredict and absent for rawPredict")
	}
	c := &conversation{maxTokens: *m.MaxTokens}
	texts := []string{}
	if m.System != "" {
		texts = append(texts, "system:"+m.System)
	}
	used := map[string]bool{}
	lastIsResult := false
	for i, msg := range m.Messages {
		want := "user"
		if i%2 == 1 {
			want = "assistant"
		}
		if msg.Role != want {
			return nil, fmt.Errorf("messages: roles must alternate between \"user\" and \"assistant\", starting with \"user\"")
		}
		var blocks []block
		var plain string
		if json.Unmarshal(msg.Content, &plain) == nil {
			blocks = []block{{Type: "text", Text: &plain}}
		} else if err := json.Unmarshal(msg.Content, &blocks); err != nil || len(blocks) == 0 {
			return nil, fmt.Errorf("messages.%d.content: a string or a non-empty list of content blocks", i)
		}
		var b strings.Builder
		lastIsResult = false
		for j, bl := range blocks {
			switch bl.Type {
			case "text":
				if bl.Text == nil || *bl.Text == "" {
					return nil, fmt.Errorf("messages.%d: all messages must have non-empty content", i)
				}
				b.WriteString(*bl.Text)
			case "tool_use":
				if msg.Role != "assistant" || len(m.Tools) == 0 || bl.ID == "" || !json.Valid(bl.Input) || bl.Input[0] != '{' {
					return nil, fmt.Errorf("messages.%d.content.%d: tool_use blocks need tools defined and an object input", i, j)
				}
				used[bl.ID] = true
				b.WriteString("[call " + bl.Name + " " + string(bl.Input) + "]")
			case "tool_result":
				if msg.Role != "user" || len(m.Tools) == 0 || !used[bl.ToolUseID] {
					return nil, fmt.Errorf("messages.%d.content.%d: unexpected `tool_use_id` found in `tool_result` blocks", i, j)
				}
				var rs string
				_ = json.Unmarshal(bl.Content, &rs)
				b.WriteString("[result " + rs + "]")
				lastIsResult = true
			default:
				return nil, fmt.Errorf("messages.%d.content.%d.type: %q is not a content block type", i, j, bl.Type)
			}
		}
		content := b.String()
		if i == len(m.Messages)-1 && msg.Role == "assistant" {
			if strings.TrimRightFunc(content, unicode.IsSpace) != content {
				return nil, errors.New("messages: final assistant content cannot end with trailing whitespace")
			}
			c.prefill = content
			continue
		}
		texts = append(texts, msg.Role+":"+content)
	}
	for _, t := range m.Tools {
		if t.Name == "" || !json.Valid(t.InputSchema) {
			return nil, errors.New("tools: each tool needs a name and an input_schema")
		}
	}
	if len(m.Tools) > 0 && c.prefill == "" && !lastIsResult && (m.ToolChoice == nil || m.ToolChoice.Type != "none") {
		c.tool = m.Tools[0].Name
		if m.ToolChoice != nil && m.ToolChoice.Type == "tool" {
			c.tool = m.ToolChoice.Name
		}
	}
	c.key = strings.Join(texts, "\n")
	c.input = fakemodel.InputTokens(c.key, c.prefill)
	return c, nil
}

func (s *Server) anthropic(w http.ResponseWriter, r *http.Request, body []byte, stream bool) {
	c, err := validateMessages(body, stream)
	if err != nil {
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	if c.input > s.opts.ContextWindow {
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("prompt is too long: %d tokens > %d maximum", c.input, s.opts.ContextWindow))
		return
	}
	args := `{"query":"` + strings.TrimSpace(fakemodel.Token(c.key, 0)) + `"}`
	if !stream && c.tool != "" {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": "msg_vrtx_fake", "type": "message", "role": "assistant", "model": "claude-fake",
			"content":     []any{map[string]any{"type": "tool_use", "id": "toolu_fake1", "name": c.tool, "input": json.RawMessage(args)}},
			"stop_reason": "tool_use", "usage": map[string]int{"input_tokens": c.input, "output_tokens": 3},
		})
		return
	}
	if !stream {
		var text strings.Builder
		n, err := fakemodel.Generate(r.Context(), c.key, c.prefill, c.maxTokens, s.opts.TokenDelay, func(t string) error { text.WriteString(t); return nil })
		if err != nil {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": "msg_vrtx_fake", "type": "message", "role": "assistant", "model": "claude-fake",
			"content":     []any{map[string]string{"type": "text", "text": text.String()}},
			"stop_reason": "max_tokens", "stop_sequence": nil,
			"usage": map[string]int{"input_tokens": c.input, "output_tokens": n},
		})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	event := func(kind string, v any) error {
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", kind, b); err != nil {
			return err
		}
		if fl != nil {
			fl.Flush()
		}
		return nil
	}
	_ = event("message_start", map[string]any{"type": "message_start", "message": map[string]any{"id": "msg_vrtx_fake", "type": "message", "role": "assistant",
		"content": []any{}, "usage": map[string]int{"input_tokens": c.input, "output_tokens": 1}}})
	if c.tool != "" {
		half := len(args) / 2
		_ = event("content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "tool_use", "id": "toolu_fake1", "name": c.tool, "input": map[string]any{}}})
		_ = event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]string{"type": "input_json_delta", "partial_json": args[:half]}})
		_ = event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]string{"type": "input_json_delta", "partial_json": args[half:]}})
		_ = event("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
		_ = event("message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": "tool_use"}, "usage": map[string]int{"output_tokens": 3}})
		_ = event("message_stop", map[string]string{"type": "message_stop"})
		return
	}
	_ = event("content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]string{"type": "text", "text": ""}})
	_ = event("ping", map[string]string{"type": "ping"})
	cut := int(s.CutAfter.Load())
	sent := 0
	_, err = fakemodel.Generate(r.Context(), c.key, c.prefill, c.maxTokens, s.opts.TokenDelay, func(t string) error {
		if cut > 0 && sent == cut {
			panic(http.ErrAbortHandler) // the connection drops mid-answer
		}
		sent++
		return event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]string{"type": "text_delta", "text": t}})
	})
	if err != nil {
		return
	}
	_ = event("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
	_ = event("message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": "max_tokens", "stop_sequence": nil}, "usage": map[string]int{"output_tokens": sent}})
	_ = event("message_stop", map[string]string{"type": "message_stop"})
}

// chat serves a self-deployed model's OpenAI-compatible chat completions.
func (s *Server) chat(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		Messages []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
		MaxTokens           int  `json:"max_tokens"`
		MaxCompletionTokens int  `json:"max_completion_tokens"`
		Stream              bool `json:"stream"`
	}
	if err := json.Unmarshal(body, &req); err != nil || len(req.Messages) == 0 {
		googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "messages: required")
		return
	}
	limit := max(req.MaxTokens, req.MaxCompletionTokens)
	if limit < 1 {
		limit = 16
	}
	var texts []string
	for _, m := range req.Messages {
		texts = append(texts, m.Role+":"+m.Content)
	}
	key := strings.Join(texts, "\n")
	in := fakemodel.InputTokens(key)
	if !req.Stream {
		var text strings.Builder
		n, err := fakemodel.Generate(r.Context(), key, "", limit, s.opts.TokenDelay, func(t string) error { text.WriteString(t); return nil })
		if err != nil {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "chatcmpl-fake", "object": "chat.completion", "model": "served",
			"choices": []any{map[string]any{"index": 0, "message": map[string]string{"role": "assistant", "content": text.String()}, "finish_reason": "length"}},
			"usage":   map[string]int{"prompt_tokens": in, "completion_tokens": n, "total_tokens": in + n}})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl, _ := w.(http.Flusher)
	n, err := fakemodel.Generate(r.Context(), key, "", limit, s.opts.TokenDelay, func(t string) error {
		b, _ := json.Marshal(map[string]any{"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": []any{map[string]any{"index": 0, "delta": map[string]string{"content": t}}}})
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return err
		}
		if fl != nil {
			fl.Flush()
		}
		return nil
	})
	if err != nil {
		return
	}
	b, _ := json.Marshal(map[string]any{"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": []any{map[string]any{"index": 0, "delta": map[string]string{}, "finish_reason": "length"}}})
	u, _ := json.Marshal(map[string]any{"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": []any{}, "usage": map[string]int{"prompt_tokens": in, "completion_tokens": n, "total_tokens": in + n}})
	_, _ = fmt.Fprintf(w, "data: %s\n\ndata: %s\n\ndata: [DONE]\n\n", b, u)
}

// StartMetadata runs a fake GCE/GKE metadata server (give its host to the
// Google libraries as GCE_METADATA_HOST) whose default service account's
// tokens the Vertex fake accepts. Like the real one it answers only
// requests with "Metadata-Flavor: Google", and it asks clients not to keep
// connections alive.
func (s *Server) StartMetadata(t testing.TB) (host string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.Header().Set("Metadata-Flavor", "Google")
		if r.Header.Get("Metadata-Flavor") != "Google" {
			s.BadAssertions.Add(1)
			http.Error(w, "Missing Metadata-Flavor:Google header.", http.StatusForbidden)
			return
		}
		switch r.URL.Path {
		case "/computeMetadata/v1/project/project-id":
			_, _ = io.WriteString(w, s.opts.Project)
		case "/computeMetadata/v1/instance/service-accounts/default/token":
			if !strings.Contains(r.URL.Query().Get("scopes"), "https://www.googleapis.com/auth/cloud-platform") {
				s.BadAssertions.Add(1)
				http.Error(w, "scope not granted", http.StatusForbidden)
				return
			}
			n := s.Granted.Add(1)
			tok := fmt.Sprintf("ya29.metadata-%d-%d", n, time.Now().UnixNano())
			s.mu.Lock()
			s.tokens[tok] = time.Now().Add(s.opts.TokenTTL)
			s.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_in": int(s.opts.TokenTTL / time.Second), "token_type": "Bearer"})
		default:
			http.Error(w, "not found", http.StatusNotFound)
		}
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return lis.Addr().String()
}

// gemini serves generateContent and streamGenerateContent (alt=sse),
// validating the body as the API does: known fields only, contents of
// role user or model with non-empty text parts, ending with the user's
// turn, maxOutputTokens >= 1.
func (s *Server) gemini(w http.ResponseWriter, r *http.Request, body []byte, stream bool) {
	var req struct {
		Contents []struct {
			Role  string `json:"role"`
			Parts []struct {
				Text *string `json:"text"`
			} `json:"parts"`
		} `json:"contents"`
		SystemInstruction *struct {
			Role  string `json:"role"`
			Parts []struct {
				Text *string `json:"text"`
			} `json:"parts"`
		} `json:"systemInstruction"`
		GenerationConfig *struct {
			MaxOutputTokens  *int     `json:"maxOutputTokens"`
			Temperature      *float64 `json:"temperature"`
			TopP             *float64 `json:"topP"`
			TopK             *float64 `json:"topK"`
			StopSequences    []string `json:"stopSequences"`
			Seed             *int64   `json:"seed"`
			PresencePenalty  *float64 `json:"presencePenalty"`
			FrequencyPenalty *float64 `json:"frequencyPenalty"`
		} `json:"generationConfig"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	bad := func(msg string) { googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", msg) }
	if err := dec.Decode(&req); err != nil {
		bad("Invalid JSON payload received. " + err.Error())
		return
	}
	if len(req.Contents) == 0 {
		bad("contents is not specified")
		return
	}
	maxTokens := 8192
	if gc := req.GenerationConfig; gc != nil && gc.MaxOutputTokens != nil {
		if *gc.MaxOutputTokens < 1 {
			bad("max_output_tokens must be positive")
			return
		}
		maxTokens = *gc.MaxOutputTokens
	}
	var texts []string
	if si := req.SystemInstruction; si != nil {
		for _, p := range si.Parts {
			if p.Text == nil || *p.Text == "" {
				bad("system_instruction: text parts must not be empty")
				return
			}
			texts = append(texts, "system:"+*p.Text)
		}
	}
	for i, c := range req.Contents {
		if c.Role != "user" && c.Role != "model" {
			bad(fmt.Sprintf("contents[%d].role: Please use a valid role: user, model.", i))
			return
		}
		if len(c.Parts) == 0 {
			bad(fmt.Sprintf("contents[%d].parts: must not be empty", i))
			return
		}
		for _, p := range c.Parts {
			if p.Text == nil || *p.Text == "" {
				bad(fmt.Sprintf("contents[%d].parts: text must not be empty", i))
				return
			}
			texts = append(texts, c.Role+":"+*p.Text)
		}
	}
	if req.Contents[len(req.Contents)-1].Role != "user" {
		bad("Please ensure that multiturn requests end with a user role or a function response.")
		return
	}
	key := strings.Join(texts, "\n")
	in := fakemodel.InputTokens(key)
	if in > s.opts.ContextWindow {
		bad(fmt.Sprintf("The input token count (%d) exceeds the maximum number of tokens allowed (%d).", in, s.opts.ContextWindow))
		return
	}
	answer := func(text, finish string, out int) map[string]any {
		cand := map[string]any{"content": map[string]any{"role": "model", "parts": []any{map[string]string{"text": text}}}}
		if finish != "" {
			cand["finishReason"] = finish
		}
		v := map[string]any{"candidates": []any{cand}, "modelVersion": "gemini-fake"}
		if finish != "" {
			v["usageMetadata"] = map[string]int{"promptTokenCount": in, "candidatesTokenCount": out, "totalTokenCount": in + out}
		}
		return v
	}
	if !stream {
		var text strings.Builder
		n, err := fakemodel.Generate(r.Context(), key, "", maxTokens, s.opts.TokenDelay, func(t string) error { text.WriteString(t); return nil })
		if err != nil {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer(text.String(), "MAX_TOKENS", n))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl, _ := w.(http.Flusher)
	cut, sent := int(s.CutAfter.Load()), 0
	n, err := fakemodel.Generate(r.Context(), key, "", maxTokens, s.opts.TokenDelay, func(t string) error {
		if cut > 0 && sent == cut {
			panic(http.ErrAbortHandler) // the connection drops mid-answer
		}
		sent++
		b, _ := json.Marshal(answer(t, "", 0))
		if _, err := fmt.Fprintf(w, "data: %s\r\n\r\n", b); err != nil {
			return err
		}
		if fl != nil {
			fl.Flush()
		}
		return nil
	})
	if err != nil {
		return
	}
	b, _ := json.Marshal(answer("", "MAX_TOKENS", n))
	_, _ = fmt.Fprintf(w, "data: %s\r\n\r\n", b)
}
