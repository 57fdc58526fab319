package openai

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/backendtest"
	"github.com/switchyard-dev/switchyard/backends/internal/fakemodel"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

const (
	entraTenant    = "00000000-0000-0000-0000-0000000000aa"
	entraClient    = "00000000-0000-0000-0000-0000000000bb"
	entraSecret    = "entra-test-secret-NOT-REAL-0123456789"
	entraAssertion = "eyJhbGciOiJSUzI1NiJ9.federated-token-from-kubernetes.signature"
)

// entraAuthority is a local Microsoft Entra ID authority over TLS (its
// certificate from a test CA the pool is given): the OpenID configuration
// MSAL reads, and the v2.0 token endpoint taking the client-credentials
// grant with the client secret or a federated client assertion (workload
// identity); it issues tokens that expire after ttl.
type entraAuthority struct {
	*httptest.Server
	caFile    string
	ttl       atomic.Int64 // seconds
	refuse    atomic.Bool
	issued    atomic.Int64
	badSecret atomic.Int64
	miClient  atomic.Pointer[string] // the user-assigned identity the managed identity endpoint was last asked for
	mu        sync.Mutex
	tokens    map[string]time.Time
}

func testCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "switchyard test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca, key, path
}

func startEntra(t *testing.T) *entraAuthority {
	t.Helper()
	ca, caKey, caFile := testCA(t)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	a := &entraAuthority{caFile: caFile, tokens: map[string]time.Time{}}
	a.ttl.Store(3600)
	a.Server = httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	a.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: leafKey}}}
	a.StartTLS()
	t.Cleanup(a.Close)
	return a
}

func (a *entraAuthority) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.HasSuffix(r.URL.Path, "/v2.0/.well-known/openid-configuration"):
		tenant := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]
		base := a.URL + "/" + tenant
		_ = json.NewEncoder(w).Encode(map[string]string{
			"token_endpoint": base + "/oauth2/v2.0/token", "authorization_endpoint": base + "/oauth2/v2.0/authorize",
			"issuer": base + "/v2.0", "device_authorization_endpoint": base + "/oauth2/v2.0/devicecode"})
	case r.URL.Path == "/"+entraTenant+"/oauth2/v2.0/token" && r.Method == http.MethodPost:
		_ = r.ParseForm()
		f := r.PostForm
		ok := f.Get("grant_type") == "client_credentials" && f.Get("client_id") == entraClient && strings.HasPrefix(f.Get("scope"), DefaultAzureScope) // MSAL adds openid offline_access profile
		secret := subtle.ConstantTimeCompare([]byte(f.Get("client_secret")), []byte(entraSecret)) == 1
		assertion := f.Get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" && f.Get("client_assertion") == entraAssertion
		if !ok || !(secret || assertion) || a.refuse.Load() {
			a.badSecret.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}`)
			return
		}
		n := a.issued.Add(1)
		tok := fmt.Sprintf("entra-token-%d-%d", n, time.Now().UnixNano())
		ttl := a.ttl.Load()
		a.mu.Lock()
		a.tokens[tok] = time.Now().Add(time.Duration(ttl) * time.Second)
		a.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": tok})
	case r.URL.Path == "/msi/token":
		// The managed identity endpoint App Service and Container Apps
		// expose (IDENTITY_ENDPOINT, IDENTITY_HEADER).
		q := r.URL.Query()
		if r.Header.Get("X-Identity-Header") != "identity-header-secret" || q.Get("resource") != "https://cognitiveservices.azure.com" || q.Get("api-version") == "" || a.refuse.Load() {
			a.badSecret.Add(1)
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"statusCode":400,"message":"No managed identity or bad request"}`)
			return
		}
		id := q.Get("client_id")
		a.miClient.Store(&id)
		n := a.issued.Add(1)
		tok := fmt.Sprintf("entra-mi-token-%d-%d", n, time.Now().UnixNano())
		ttl := a.ttl.Load()
		a.mu.Lock()
		a.tokens[tok] = time.Now().Add(time.Duration(ttl) * time.Second)
		a.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_on": fmt.Sprint(time.Now().Unix() + ttl),
			"resource": q.Get("resource"), "token_type": "Bearer"})
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"error":"not_found"}`)
	}
}

func (a *entraAuthority) valid(tok string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	exp, ok := a.tokens[tok]
	return ok && time.Now().Before(exp)
}

// azureOpenAI is a local Azure OpenAI resource: the v1 API and the
// deployments form, accepting only unexpired tokens its authority issued.
type azureOpenAI struct {
	*httptest.Server
	auth     *entraAuthority
	throttle atomic.Bool
	forbid   atomic.Bool
	refused  atomic.Int64
	lastPath atomic.Pointer[string]
	delay    time.Duration
}

func startAzureOpenAI(t *testing.T, auth *entraAuthority, delay time.Duration) *azureOpenAI {
	t.Helper()
	z := &azureOpenAI{auth: auth, delay: delay}
	z.Server = httptest.NewServer(http.HandlerFunc(z.serve))
	t.Cleanup(z.Close)
	return z
}

func azError(w http.ResponseWriter, code int, kind, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": kind, "message": msg}})
}

func (z *azureOpenAI) serve(w http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !z.auth.valid(tok) || r.Header.Get("Api-Key") != "" {
		z.refused.Add(1)
		azError(w, http.StatusUnauthorized, "401", "Access denied due to invalid subscription key or wrong API endpoint, or an expired token.")
		return
	}
	p := r.URL.Path + "?" + r.URL.RawQuery
	z.lastPath.Store(&p)
	if z.forbid.Load() {
		azError(w, http.StatusForbidden, "PermissionDenied", "The principal lacks the Cognitive Services OpenAI User role.")
		return
	}
	if r.Method == http.MethodGet && (r.URL.Path == "/openai/v1/models" || r.URL.Path == "/openai/models") {
		_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"gpt-4o","object":"model"}]}`)
		return
	}
	if z.throttle.Load() {
		w.Header().Set("Retry-After", "1")
		azError(w, http.StatusTooManyRequests, "429", "Requests to the ChatCompletions_Create Operation have exceeded call rate limit.")
		return
	}
	var req struct {
		Model    string `json:"model"`
		Prompt   *string
		Messages []struct{ Role, Content string }
		Max      int  `json:"max_completion_tokens"`
		MaxT     int  `json:"max_tokens"`
		Stream   bool `json:"stream"`
	}
	body, _ := io.ReadAll(r.Body)
	if json.Unmarshal(body, &req) != nil {
		azError(w, http.StatusBadRequest, "invalid_request", "bad body")
		return
	}
	var key strings.Builder
	if req.Prompt != nil {
		key.WriteString(*req.Prompt)
	}
	for _, m := range req.Messages {
		key.WriteString(m.Role + ":" + m.Content + "\n")
	}
	if len(key.String()) > 8000 {
		azError(w, http.StatusBadRequest, "context_length_exceeded", "This model's maximum context length is 2000 tokens.")
		return
	}
	n := max(req.Max, req.MaxT)
	in := fakemodel.InputTokens(key.String())
	chunk := func(v any) {
		b, _ := json.Marshal(v)
		_, _ = fmt.Fprintf(w, "data: %s\n\n", b)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	if !req.Stream {
		var text strings.Builder
		got, err := fakemodel.Generate(r.Context(), key.String(), "", n, z.delay, func(s string) error { text.WriteString(s); return nil })
		if err != nil {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"object": "chat.completion", "choices": []any{map[string]any{"index": 0,
			"message": map[string]string{"role": "assistant", "content": text.String()}, "text": text.String(), "finish_reason": "length"}},
			"usage": map[string]int{"prompt_tokens": in, "completion_tokens": got}})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	got, err := fakemodel.Generate(r.Context(), key.String(), "", n, z.delay, func(s string) error {
		chunk(map[string]any{"choices": []any{map[string]any{"index": 0, "delta": map[string]string{"content": s}, "text": s}}})
		return nil
	})
	if err != nil {
		return
	}
	chunk(map[string]any{"choices": []any{map[string]any{"index": 0, "delta": map[string]string{}, "finish_reason": "length"}}})
	chunk(map[string]any{"choices": []any{}, "usage": map[string]int{"prompt_tokens": in, "completion_tokens": got}})
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
}

// entraEnv points azidentity at the local authority with the client-secret credential's identity.
func entraEnv(t *testing.T, a *entraAuthority) {
	t.Setenv("AZURE_AUTHORITY_HOST", a.URL+"/")
	t.Setenv("AZURE_TENANT_ID", entraTenant)
	t.Setenv("AZURE_CLIENT_ID", entraClient)
	t.Setenv("AZURE_CLIENT_SECRET", entraSecret)
}

func entraPoolFor(t *testing.T, a *entraAuthority, url string, extra map[string]string, log *slog.Logger) backends.Backend {
	t.Helper()
	o := map[string]string{OptAzureAuth: "entra", OptAzureCredential: "secret", OptAzureAuthorityCAFile: a.caFile,
		OptAzureDisableInstanceDiscovery: "true", OptModelNames + ".gpt": "gpt-4o"}
	for k, v := range extra {
		o[k] = v
	}
	b, err := newPool(backends.Spec{Pool: "azure-weu", Endpoints: []string{url}, MaxConcurrent: 8, Options: o}, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// An Azure OpenAI pool with Entra ID passes the backend contract: its
// tokens come from azidentity's client-secret credential against a local
// authority over TLS (AZURE_AUTHORITY_HOST, a test CA), and the resource
// accepts only tokens that authority issued.
func TestEntraContractAgainstLocalAuthority(t *testing.T) {
	a := startEntra(t)
	entraEnv(t, a)
	z := startAzureOpenAI(t, a, 3*time.Millisecond)
	full := startAzureOpenAI(t, a, 0)
	full.throttle.Store(true)
	backendtest.Run(t, backendtest.Harness{
		New:           func(t *testing.T) backends.Backend { return entraPoolFor(t, a, z.URL+"/openai/v1", nil, nil) },
		Model:         "gpt",
		LongMaxTokens: 3000,
		Broken: func(t *testing.T) backends.Backend {
			lis, _ := net.Listen("tcp", "127.0.0.1:0")
			url := "http://" + lis.Addr().String() + "/openai/v1"
			_ = lis.Close()
			return entraPoolFor(t, a, url, nil, nil)
		},
		Full:        func(t *testing.T) backends.Backend { return entraPoolFor(t, a, full.URL+"/openai/v1", nil, nil) },
		ClientFault: &pb.GenerateRequest{Model: "gpt", Prompt: strings.Repeat("overflow ", 1200), MaxTokens: 4},
	})
	if a.issued.Load() == 0 || z.refused.Load() != 0 {
		t.Fatalf("authority issued %d tokens, the resource refused %d calls", a.issued.Load(), z.refused.Load())
	}
}

// Short-lived tokens are renewed off the request path before they expire:
// calls keep succeeding over several token lifetimes with none refused. A
// failing renewal fails the pool's health check, and it heals.
func TestEntraTokenRefreshedBeforeExpiry(t *testing.T) {
	a := startEntra(t)
	a.ttl.Store(3) // inside MSAL's 5-minute renewal window: every check renews
	entraEnv(t, a)
	z := startAzureOpenAI(t, a, 0)
	b := entraPoolFor(t, a, z.URL+"/openai/v1", map[string]string{OptAzureTokenRefresh: "100ms"}, nil)
	ctx := ctxFor(t, 30*time.Second)
	req := &pb.GenerateRequest{Model: "gpt", Messages: []*pb.ChatMessage{{Role: "user", Content: "hi"}}, MaxTokens: 3}
	start := time.Now()
	testwait.For(t, 20*time.Second, "calls succeeding over two token lifetimes", func() bool {
		if _, err := b.Generate(ctx, req); err != nil {
			t.Fatalf("after %s: %v", time.Since(start), err)
		}
		return time.Since(start) > 7*time.Second
	})
	if a.issued.Load() < 5 || z.refused.Load() != 0 {
		t.Fatalf("%d tokens issued, %d calls refused", a.issued.Load(), z.refused.Load())
	}
	a.refuse.Store(true)
	testwait.For(t, 10*time.Second, "the failing renewal failing the health check", func() bool { return b.Check(ctx) != nil })
	a.refuse.Store(false)
	testwait.For(t, 10*time.Second, "the health check passing again", func() bool { return b.Check(ctx) == nil })
}

// A wrong client secret: no token, the calls are UNAVAILABLE without
// reaching the resource, the health check fails, and the secret appears in
// no error and no log. A principal without the role (403 from the
// resource) is refused credentials: UNAVAILABLE, a pool failure.
func TestEntraWrongCredentials(t *testing.T) {
	a := startEntra(t)
	entraEnv(t, a)
	t.Setenv("AZURE_CLIENT_SECRET", "wrong-secret-value-0000")
	z := startAzureOpenAI(t, a, 0)
	var logs bytes.Buffer
	b := entraPoolFor(t, a, z.URL+"/openai/v1", nil, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx := ctxFor(t, 20*time.Second)
	req := &pb.GenerateRequest{Model: "gpt", Prompt: "hi", MaxTokens: 2}
	_, err := b.Generate(ctx, req)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "bearer token") {
		t.Fatalf("wrong secret: %v, want UNAVAILABLE naming the token", err)
	}
	if a.badSecret.Load() == 0 || z.refused.Load() != 0 || z.lastPath.Load() != nil {
		t.Fatalf("authority refused %d grants; the resource saw %d calls", a.badSecret.Load(), z.refused.Load())
	}
	if b.Check(ctx) == nil {
		t.Fatal("health check passed without a token")
	}
	for _, s := range []string{"wrong-secret-value-0000", entraSecret} {
		if strings.Contains(err.Error(), s) || strings.Contains(logs.String(), s) {
			t.Fatal("a secret reached an error or the log")
		}
	}
	t.Setenv("AZURE_CLIENT_SECRET", entraSecret)
	good := entraPoolFor(t, a, z.URL+"/openai/v1", nil, nil)
	z.forbid.Store(true)
	if _, err := good.Generate(ctx, req); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "refused the pool's credentials") {
		t.Fatalf("403: %v, want UNAVAILABLE for refused credentials", err)
	}
}

// Workload identity (AKS): the federated token file's assertion is
// exchanged for an Entra ID token; the authority checks the assertion.
func TestEntraWorkloadIdentity(t *testing.T) {
	a := startEntra(t)
	entraEnv(t, a)
	file := filepath.Join(t.TempDir(), "azure-identity-token")
	if err := os.WriteFile(file, []byte(entraAssertion), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AZURE_FEDERATED_TOKEN_FILE", file)
	t.Setenv("AZURE_CLIENT_SECRET", "")
	z := startAzureOpenAI(t, a, 0)
	b := entraPoolFor(t, a, z.URL+"/openai/v1", map[string]string{OptAzureCredential: "workload"}, nil)
	resp, err := b.Generate(ctxFor(t, 20*time.Second), &pb.GenerateRequest{Model: "gpt", Messages: []*pb.ChatMessage{{Role: "user", Content: "hi"}}, MaxTokens: 3})
	if err != nil || resp.GetUsage().GetOutputTokens() != 3 || a.issued.Load() == 0 {
		t.Fatalf("workload identity: %v %v (issued %d)", resp, err, a.issued.Load())
	}
}

// Managed identity (App Service / Container Apps style endpoint): the
// token for a user-assigned identity (azure.client_id) comes from
// IDENTITY_ENDPOINT with the IDENTITY_HEADER secret, for the Azure OpenAI
// resource. (The identity is new on every run: MSAL keeps managed identity
// tokens in a process-wide cache.)
func TestEntraManagedIdentity(t *testing.T) {
	a := startEntra(t)
	t.Setenv("IDENTITY_ENDPOINT", a.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", "identity-header-secret")
	t.Setenv("AZURE_CLIENT_ID", "")
	z := startAzureOpenAI(t, a, 0)
	id := fmt.Sprintf("00000000-0000-0000-0000-%012d", time.Now().UnixNano()%1e12)
	b := entraPoolFor(t, a, z.URL+"/openai/v1", map[string]string{OptAzureCredential: "managed", OptAzureClientID: id}, nil)
	resp, err := b.Generate(ctxFor(t, 20*time.Second), &pb.GenerateRequest{Model: "gpt", Messages: []*pb.ChatMessage{{Role: "user", Content: "hi"}}, MaxTokens: 3})
	if err != nil || resp.GetUsage().GetOutputTokens() != 3 || a.issued.Load() == 0 || a.badSecret.Load() != 0 {
		t.Fatalf("managed identity: %v %v (issued %d, refused %d)", resp, err, a.issued.Load(), a.badSecret.Load())
	}
	if got := a.miClient.Load(); got == nil || *got != id {
		t.Fatalf("the endpoint was asked for identity %v, want the pool's %s", got, id)
	}
}

// The deployments URL form: a chat for deployment gpt-4o goes to
// /openai/deployments/gpt-4o/chat/completions?api-version=..., the health
// check to /openai/models?api-version=..., with the Entra token.
func TestAzureDeploymentsURLForm(t *testing.T) {
	a := startEntra(t)
	entraEnv(t, a)
	z := startAzureOpenAI(t, a, 0)
	b := entraPoolFor(t, a, z.URL+"/openai", map[string]string{OptAzureAPIVersion: "2024-10-21"}, nil)
	ctx := ctxFor(t, 20*time.Second)
	chunks := backendtest.Stream(t, ctx, b, &pb.GenerateRequest{Model: "gpt", Messages: []*pb.ChatMessage{{Role: "user", Content: "hi"}}, MaxTokens: 3})
	if got := *z.lastPath.Load(); got != "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21" || chunks[len(chunks)-1].GetUsage().GetOutputTokens() != 3 {
		t.Fatalf("path %s, usage %v", got, chunks[len(chunks)-1].GetUsage())
	}
	if err := b.Check(ctx); err != nil || *z.lastPath.Load() != "/openai/models?api-version=2024-10-21" {
		t.Fatalf("check: %v via %s", err, *z.lastPath.Load())
	}
}

// Azure options are validated with the others, each named.
func TestAzureOptionsValidated(t *testing.T) {
	t.Setenv("AZURE_CLIENT_SECRET", "")
	cases := []struct {
		opts map[string]string
		want string
	}{
		{map[string]string{OptAzureAuth: "aad"}, "option azure.auth"},
		{map[string]string{OptAzureAuth: "entra", OptAzureCredential: "cli"}, "option azure.credential"},
		{map[string]string{OptAzureAuth: "entra", OptAPIKeyEnv: "HOME"}, "option api_key_env: not with azure.auth"},
		{map[string]string{OptAzureAuth: "entra", OptServer: "vllm"}, "option server"},
		{map[string]string{OptAzureAuth: "entra", OptAzureCredential: "secret"}, "option azure.client_secret_env"},
		{map[string]string{OptAzureCredential: "managed"}, "option azure.auth: entra is required"},
		{map[string]string{OptAzureAPIVersion: "2024/10"}, "option azure.api_version"},
		{map[string]string{OptAzureAuth: "entra", OptAzureScope: "http://x"}, "option azure.scope"},
		{map[string]string{"azure.region": "x"}, `unknown option "azure.region"`},
	}
	for _, c := range cases {
		if _, err := newPool(backends.Spec{Pool: "p", Endpoints: []string{"https://x.openai.azure.com/openai/v1"}, Options: c.opts}, Options{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.opts, err, c.want)
		}
	}
}
