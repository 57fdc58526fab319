package openai

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/internal/managed"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Azure options of the openai adapter (the pool's `options: {azure: {...}}`).
const (
	OptAzureAuth                     = "azure.auth"                       // entra: Entra ID bearer tokens instead of an API key
	OptAzureCredential               = "azure.credential"                 // default, workload, managed or secret; default: default
	OptAzureTenantID                 = "azure.tenant_id"                  // default AZURE_TENANT_ID
	OptAzureClientID                 = "azure.client_id"                  // default AZURE_CLIENT_ID (managed: a user-assigned identity)
	OptAzureClientSecretEnv          = "azure.client_secret_env"          // credential secret: the variable holding the secret; default AZURE_CLIENT_SECRET
	OptAzureScope                    = "azure.scope"                      // default https://cognitiveservices.azure.com/.default
	OptAzureAPIVersion               = "azure.api_version"                // the deployments URL form: /openai/deployments/NAME/...?api-version=V
	OptAzureAuthorityCAFile          = "azure.authority_ca_file"          // CA bundle for a private authority host
	OptAzureDisableInstanceDiscovery = "azure.disable_instance_discovery" // true for disconnected or private authority hosts
	OptAzureTokenRefresh             = "azure.token_refresh"              // how often the token is checked off the request path; default 1m
)

var azureOptions = []string{
	OptAzureAPIVersion, OptAzureAuth, OptAzureAuthorityCAFile, OptAzureClientID, OptAzureClientSecretEnv, OptAzureCredential,
	OptAzureDisableInstanceDiscovery, OptAzureScope, OptAzureTenantID, OptAzureTokenRefresh,
}

// DefaultAzureScope is the Entra ID scope of Azure OpenAI and AI Foundry.
const DefaultAzureScope = "https://cognitiveservices.azure.com/.default"

type azureConfig struct {
	set           bool // any azure option
	entra         bool
	credential    string
	tenantID      string
	clientID      string
	secretEnv     string
	scope         string
	apiVersion    string
	caFile        string
	noDiscovery   bool
	refresh       time.Duration
	maxConcurrent int
}

// parseAzure takes the azure.* options out of a spec and validates them,
// naming each; the rest goes to parseSpec.
func parseAzure(spec backends.Spec) (*azureConfig, backends.Spec, error) {
	c := &azureConfig{credential: "default", secretEnv: "AZURE_CLIENT_SECRET", scope: DefaultAzureScope, refresh: time.Minute,
		maxConcurrent: max(spec.MaxConcurrent, 1)}
	rest := spec
	rest.Options = map[string]string{}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("option %s: %s", key, fmt.Sprintf(format, args...)))
	}
	keys := make([]string, 0, len(spec.Options))
	for k := range spec.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := spec.Options[k]
		if !strings.HasPrefix(k, "azure.") {
			rest.Options[k] = v
			continue
		}
		c.set = true
		switch k {
		case OptAzureAuth:
			if v != "entra" {
				bad(k, "%q is not entra (leave it out for an API key)", v)
			}
			c.entra = true
		case OptAzureCredential:
			switch v {
			case "default", "workload", "managed", "secret":
			default:
				bad(k, "%q is not default, workload, managed or secret", v)
			}
			c.credential = v
		case OptAzureTenantID, OptAzureClientID:
			if v == "" || len(v) > 128 || strings.ContainsAny(v, "/?#\n\r ") {
				bad(k, "want an id (1..128 bytes, no / ? # or spaces)")
			}
			if k == OptAzureTenantID {
				c.tenantID = v
			} else {
				c.clientID = v
			}
		case OptAzureClientSecretEnv:
			c.secretEnv = v
		case OptAzureScope:
			if u, err := url.Parse(v); err != nil || u.Scheme != "https" || !strings.HasSuffix(v, "/.default") {
				bad(k, "%q is not an https://.../.default scope", v)
			}
			c.scope = v
		case OptAzureAPIVersion:
			if v == "" || len(v) > 32 || strings.Trim(v, "0123456789-abcdefghijklmnopqrstuvwxyz") != "" {
				bad(k, "%q is not an api-version such as 2024-10-21", v)
			}
			c.apiVersion = v
		case OptAzureAuthorityCAFile:
			c.caFile = v
		case OptAzureDisableInstanceDiscovery:
			if v != "true" && v != "false" {
				bad(k, "%q is not true or false", v)
			}
			c.noDiscovery = v == "true"
		case OptAzureTokenRefresh:
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				bad(k, "%q is not a positive duration", v)
			}
			c.refresh = d
		default:
			errs = append(errs, fmt.Errorf("unknown option %q (azure options: %s)", k, strings.Join(azureOptions, ", ")))
		}
	}
	if c.set && !c.entra && (c.credential != "default" || c.tenantID != "" || c.clientID != "" || c.caFile != "" || c.noDiscovery) {
		bad(OptAzureAuth, "entra is required with the credential options")
	}
	if c.entra {
		for _, k := range []string{OptAPIKeyEnv, OptAPIKeyFile, OptAuthHeader} {
			if _, set := rest.Options[k]; set {
				bad(k, "not with %s: entra (the pool's credential is its Entra ID token)", OptAzureAuth)
			}
		}
		if s, ok := rest.Options[OptServer]; ok && s != string(ServerOpenAI) {
			bad(OptServer, "%q: Azure endpoints are server openai", s)
		}
		if c.credential == "secret" && os.Getenv(c.secretEnv) == "" {
			bad(OptAzureClientSecretEnv, "environment variable %s is empty or unset", c.secretEnv)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, rest, err
	}
	return c, rest, nil
}

// tokenCredential builds the azidentity credential (no network).
func (c *azureConfig) tokenCredential() (azcore.TokenCredential, error) {
	co := azcore.ClientOptions{}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("option %s: %w", OptAzureAuthorityCAFile, err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("option %s: %s holds no PEM certificate", OptAzureAuthorityCAFile, c.caFile)
		}
		co.Transport = &http.Client{Timeout: managed.FetchTimeout, Transport: &http.Transport{
			Proxy:           http.ProxyFromEnvironment,
			DialContext:     (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}, TLSHandshakeTimeout: 10 * time.Second,
		}}
	}
	env := func(v, name string) string {
		if v != "" {
			return v
		}
		return os.Getenv(name)
	}
	var cred azcore.TokenCredential
	var err error
	switch c.credential {
	case "workload":
		cred, err = azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{ClientOptions: co,
			TenantID: c.tenantID, ClientID: c.clientID, DisableInstanceDiscovery: c.noDiscovery})
	case "managed":
		mo := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: co}
		if c.clientID != "" {
			mo.ID = azidentity.ClientID(c.clientID)
		}
		cred, err = azidentity.NewManagedIdentityCredential(mo)
	case "secret":
		cred, err = azidentity.NewClientSecretCredential(env(c.tenantID, "AZURE_TENANT_ID"), env(c.clientID, "AZURE_CLIENT_ID"), os.Getenv(c.secretEnv),
			&azidentity.ClientSecretCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: c.noDiscovery})
	default:
		cred, err = azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: co,
			TenantID: c.tenantID, DisableInstanceDiscovery: c.noDiscovery})
	}
	if err != nil {
		return nil, fmt.Errorf("option %s %s: %w", OptAzureCredential, c.credential, err)
	}
	return cred, nil
}

// deployments rewrites a request for the deployments URL form: a call to
// BASE/chat/completions (completions, embeddings) for model M goes to
// BASE/deployments/M/chat/completions, and every request carries
// api-version (the endpoint's base is https://NAME.openai.azure.com/openai).
func deployments(version string) func(*http.Request) error {
	return func(r *http.Request) error {
		if r.Method == http.MethodPost && r.GetBody != nil {
			body, err := r.GetBody()
			if err != nil {
				return err
			}
			b, err := io.ReadAll(io.LimitReader(body, maxResponseBody))
			_ = body.Close()
			if err != nil {
				return err
			}
			var v struct {
				Model string `json:"model"`
			}
			if err := json.NewDecoder(bytes.NewReader(b)).Decode(&v); err != nil || v.Model == "" {
				return fmt.Errorf("azure deployments form: request names no model")
			}
			for _, op := range []string{ChatCompletionsPath, CompletionsPath, "/embeddings"} {
				if base, ok := strings.CutSuffix(r.URL.Path, op); ok {
					r.URL.Path = base + "/deployments/" + v.Model + op
					r.URL.RawPath = ""
					break
				}
			}
		}
		q := r.URL.Query()
		q.Set("api-version", version)
		r.URL.RawQuery = q.Encode()
		return nil
	}
}

// rewriteOnly is a transport that only rewrites (API-key pools in the
// deployments form).
type rewriteOnly struct {
	next    http.RoundTripper
	rewrite func(*http.Request) error
}

func (t *rewriteOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	c := r.Clone(r.Context())
	if err := t.rewrite(c); err != nil {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, err
	}
	return t.next.RoundTrip(c)
}

func (t *rewriteOnly) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func chain(outer, inner func(http.RoundTripper) http.RoundTripper) func(http.RoundTripper) http.RoundTripper {
	if inner == nil {
		return outer
	}
	return func(rt http.RoundTripper) http.RoundTripper { return outer(inner(rt)) }
}

// newPool builds an `adapter: openai` pool (see Register): a plain pool, or
// with azure.* options an Azure OpenAI / AI Foundry pool — the deployments
// URL form (azure.api_version) and Entra ID tokens (azure.auth: entra).
func newPool(spec backends.Spec, o Options) (backends.Backend, error) {
	az, rest, err := parseAzure(spec)
	if err != nil {
		return nil, err
	}
	var rewrite func(*http.Request) error
	if az.apiVersion != "" {
		rewrite = deployments(az.apiVersion)
	}
	if !az.entra {
		if rewrite != nil {
			o.RoundTripper = chain(func(rt http.RoundTripper) http.RoundTripper { return &rewriteOnly{next: rt, rewrite: rewrite} }, o.RoundTripper)
		}
		b, err := New(rest, o)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	if _, ok := rest.Options[OptServer]; !ok {
		rest.Options[OptServer] = string(ServerOpenAI)
	}
	cred, err := az.tokenCredential()
	if err != nil {
		return nil, err
	}
	gate := &managed.Gate{Pool: spec.Pool, MaxConcurrent: az.maxConcurrent}
	ref := &managed.Refresher{Pool: spec.Pool, Every: az.refresh, Gate: gate, Log: o.Logger,
		Fetch: func(ctx context.Context) (managed.Token, error) {
			t, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{az.scope}})
			if err != nil {
				return managed.Token{}, fmt.Errorf("entra id token: %w", err)
			}
			return managed.Token{Value: t.Token, Expiry: t.ExpiresOn}, nil
		}}
	o.RoundTripper = chain(BearerTransport(ref, rewrite), o.RoundTripper)
	b, err := New(rest, o)
	if err != nil {
		return nil, err
	}
	p := &entraPool{Backend: b, ref: ref, gate: gate, pool: spec.Pool}
	ref.Start(context.Background())
	return p, nil
}

// entraPool is an openai pool whose credential is an Entra ID token kept
// fresh off the request path.
type entraPool struct {
	*Backend
	ref  *managed.Refresher
	gate *managed.Gate
	pool string
}

var (
	_ backends.Backend      = (*entraPool)(nil)
	_ backends.LoadReporter = (*entraPool)(nil)
)

// Generate implements backends.Backend; the first calls after start wait
// for the first token (within their deadline).
func (p *entraPool) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	p.ref.WaitFirst(ctx)
	return p.Backend.Generate(ctx, req)
}

// GenerateStream implements backends.Backend.
func (p *entraPool) GenerateStream(ctx context.Context, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error) error {
	p.ref.WaitFirst(ctx)
	return p.Backend.GenerateStream(ctx, req, send)
}

// Check implements backends.Backend: a token held and refreshing, then the
// adapter's own check (the endpoint's /models with the token).
func (p *entraPool) Check(ctx context.Context) error {
	if err := p.gate.Health(); err != nil {
		return status.Errorf(codes.Unavailable, "pool %s: %v", p.pool, err)
	}
	if _, err := p.ref.Bearer(); err != nil {
		return status.Errorf(codes.Unavailable, "pool %s: %v", p.pool, err)
	}
	return p.Backend.Check(ctx)
}

// Close stops the token refresh, then the pool.
func (p *entraPool) Close() error {
	p.ref.Close()
	return p.Backend.Close()
}
