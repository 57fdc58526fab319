package openai

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/internal/tlsclient"
)

// Server is the kind of OpenAI-compatible server behind a pool (the pool's
// `server:` option). It decides which metrics feed the load signal, how a
// chat is continued and which request fields are sent.
type Server string

// Servers the adapter knows.
const (
	ServerOpenAI   Server = "openai"   // any OpenAI-compatible endpoint, Azure OpenAI included: no load signal, no continuation
	ServerVLLM     Server = "vllm"     // vLLM (GPU, Neuron on Trainium/Inferentia, TPU)
	ServerSGLang   Server = "sglang"   // SGLang
	ServerTGI      Server = "tgi"      // Hugging Face text-generation-inference
	ServerLlamaCpp Server = "llamacpp" // llama.cpp llama-server
	ServerTRTLLM   Server = "trtllm"   // TensorRT-LLM trtllm-serve
	ServerOllama   Server = "ollama"   // Ollama
)

var servers = []Server{ServerLlamaCpp, ServerOllama, ServerOpenAI, ServerSGLang, ServerTGI, ServerTRTLLM, ServerVLLM}

// traits are what the adapter knows about a server kind.
type traits struct {
	// metrics: the server serves Prometheus text at /metrics with running and
	// queued gauges the adapter reads (see metrics.go).
	metrics bool
	// health: the server answers GET /health at its root.
	health bool
	// chatContinue: how a chat is continued.
	chatContinue chatContinue
	// topK: the server accepts top_k (OpenAI itself rejects unknown fields).
	topK bool
	// maxCompletionTokens: send max_completion_tokens instead of max_tokens.
	maxCompletionTokens bool
	// checkModels: /v1/models lists the served model names (Azure lists base
	// models, not deployments).
	checkModels bool
	// echoesPrefill: a unary chat answer starts with the continued assistant
	// text (llama.cpp does); it is cut off.
	echoesPrefill bool
	// tools, responseFormat, logprobs, embeddings: the server takes OpenAI's
	// tools/tool_choice, response_format, logprobs/top_logprobs and serves
	// /v1/embeddings (backends.Capabilities; docs/backends.md).
	tools, responseFormat, logprobs, embeddings bool
}

type chatContinue int

const (
	continueNone       chatContinue = iota // no continuation of chats (Capabilities().Continuation false)
	continueFlag                           // trailing assistant message + continue_final_message, add_generation_prompt false (vLLM, SGLang)
	continuePrefill                        // a trailing assistant message is continued as is (llama.cpp, TGI, Ollama)
	continueCompletion                     // no chat continue option: the completions endpoint with the flattened chat (trtllm-serve)
)

var serverTraits = map[Server]traits{
	ServerOpenAI: {chatContinue: continueNone, maxCompletionTokens: true,
		tools: true, responseFormat: true, logprobs: true, embeddings: true},
	ServerVLLM: {metrics: true, health: true, chatContinue: continueFlag, topK: true, checkModels: true,
		tools: true, responseFormat: true, logprobs: true, embeddings: true},
	ServerSGLang: {metrics: true, health: true, chatContinue: continueFlag, topK: true, checkModels: true,
		tools: true, responseFormat: true, logprobs: true, embeddings: true},
	ServerTGI: {metrics: true, health: true, chatContinue: continuePrefill, checkModels: true,
		tools: true, logprobs: true},
	ServerLlamaCpp: {metrics: true, health: true, chatContinue: continuePrefill, topK: true, checkModels: true, echoesPrefill: true,
		tools: true, responseFormat: true, logprobs: true, embeddings: true},
	ServerTRTLLM: {health: true, chatContinue: continueCompletion, topK: true, checkModels: true,
		logprobs: true},
	ServerOllama: {chatContinue: continuePrefill, checkModels: true,
		tools: true, responseFormat: true, embeddings: true},
}

// Spec options the adapter understands (backends.Spec.Options, the pool's
// `options:` in the fleet file; nested YAML arrives as dotted keys).
const (
	OptServer            = "server"              // one of the Server constants; default openai
	OptModelNames        = "model_names"         // model_names.<fleet model>: the name the server uses
	OptAPIKeyEnv         = "api_key_env"         // environment variable holding the API key
	OptAPIKeyFile        = "api_key_file"        // file holding the API key (re-read every 30 s)
	OptAuthHeader        = "auth_header"         // "authorization" (Bearer, default) or "api-key" (Azure OpenAI)
	OptTLSCAFile         = "tls.ca_file"         // PEM CA bundle instead of the system roots
	OptTLSCertFile       = "tls.cert_file"       // client certificate (PEM), with tls.key_file
	OptTLSKeyFile        = "tls.key_file"        // client key (PEM)
	OptTLSServerName     = "tls.server_name"     // name to verify instead of the URL's host
	OptScheme            = "scheme"              // http or https for dns:/// endpoints; default http
	OptBasePath          = "base_path"           // API path prefix for dns:/// endpoints and URLs without a path; default /v1
	OptMetrics           = "metrics"             // on or off; default on where the server kind has a load signal
	OptMetricsPath       = "metrics_path"        // default /metrics
	OptMetricsPort       = "metrics_port"        // scrape this port instead of the API's (TGI 3's --prometheus-port)
	OptMetricsInterval   = "metrics_interval"    // scrape period; default 500ms
	OptMetricsTimeout    = "metrics_timeout"     // one scrape's bound; default 400ms
	OptResolveInterval   = "resolve_interval"    // dns:/// re-resolution period; default 5s
	OptRequestTimeout    = "request_timeout"     // bound on one call when the caller set none sooner; default 10m
	OptStreamIdleTimeout = "stream_idle_timeout" // a stream silent this long is a failure; default 60s
	OptSlotsPerEndpoint  = "slots_per_endpoint"  // sequences one server runs at once; default: llama.cpp's /props, else max_concurrent / endpoints
	OptMaxRetryAfter     = "max_retry_after"     // cap on a server's Retry-After; default 60s
)

var knownOptions = []string{
	OptAPIKeyEnv, OptAPIKeyFile, OptAuthHeader, OptBasePath, OptMaxRetryAfter, OptMetrics, OptMetricsInterval,
	OptMetricsPath, OptMetricsPort, OptMetricsTimeout, OptModelNames + ".<model>", OptRequestTimeout, OptResolveInterval, OptScheme,
	OptServer, OptSlotsPerEndpoint, OptStreamIdleTimeout, OptTLSCAFile, OptTLSCertFile, OptTLSKeyFile, OptTLSServerName,
}

// poolConfig is a pool's validated adapter settings.
type poolConfig struct {
	pool          string
	server        Server
	traits        traits
	modelNames    map[string]string
	keyEnv        string
	keyFile       string
	authHeader    string
	tls           *tls.Config // nil: plain HTTP only (https URLs use system roots)
	scheme        string
	basePath      string
	metrics       bool
	metricsPath   string
	metricsPort   string
	metricsEvery  time.Duration
	metricsWithin time.Duration
	resolveEvery  time.Duration
	requestMax    time.Duration
	idleMax       time.Duration
	slots         int
	maxRetryAfter time.Duration
	maxConcurrent int
	targets       []target
}

// target is one configured endpoint: a URL, or a DNS name re-resolved.
type target struct {
	raw string
	// static URL endpoints
	base, root string
	// dns:/// endpoints
	host, port string
}

func (t target) dynamic() bool { return t.host != "" }

// parseSpec validates the pool's options and endpoints: every problem is
// reported, with the option named; secrets are never part of a message.
func parseSpec(spec backends.Spec) (*poolConfig, error) {
	c := &poolConfig{
		pool: spec.Pool, server: ServerOpenAI, modelNames: map[string]string{}, authHeader: "authorization",
		scheme: "http", basePath: "/v1", metricsPath: "/metrics", metricsEvery: 500 * time.Millisecond,
		metricsWithin: 400 * time.Millisecond, resolveEvery: 5 * time.Second, requestMax: 10 * time.Minute,
		idleMax: 60 * time.Second, maxRetryAfter: 60 * time.Second, maxConcurrent: max(spec.MaxConcurrent, 1),
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("option %s: %s", key, fmt.Sprintf(format, args...)))
	}
	dur := func(key, v string, dst *time.Duration) {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			bad(key, "%q is not a positive duration", v)
			return
		}
		*dst = d
	}
	metricsSet := ""
	var caFile, certFile, keyFile, serverName string
	keys := make([]string, 0, len(spec.Options))
	for k := range spec.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := spec.Options[k]
		if m, ok := strings.CutPrefix(k, OptModelNames+"."); ok {
			if v == "" || len(v) > 256 || strings.ContainsAny(v, "\n\r") {
				bad(k, "want the server's model name (1..256 bytes, one line)")
			}
			c.modelNames[m] = v
			continue
		}
		switch k {
		case OptServer:
			c.server = Server(v)
			if _, ok := serverTraits[c.server]; !ok {
				bad(k, "%q is not one of %v", v, servers)
			}
		case OptAPIKeyEnv:
			c.keyEnv = v
		case OptAPIKeyFile:
			c.keyFile = v
		case OptAuthHeader:
			switch strings.ToLower(v) {
			case "authorization", "bearer":
				c.authHeader = "authorization"
			case "api-key":
				c.authHeader = "api-key"
			default:
				bad(k, "%q is not authorization (Bearer) or api-key", v)
			}
		case OptTLSCAFile:
			caFile = v
		case OptTLSCertFile:
			certFile = v
		case OptTLSKeyFile:
			keyFile = v
		case OptTLSServerName:
			serverName = v
		case OptScheme:
			if v != "http" && v != "https" {
				bad(k, "%q is not http or https", v)
			}
			c.scheme = v
		case OptBasePath:
			if !strings.HasPrefix(v, "/") {
				bad(k, "%q must start with /", v)
			}
			c.basePath = strings.TrimSuffix(v, "/")
		case OptMetrics:
			if v != "on" && v != "off" {
				bad(k, "%q is not on or off", v)
			}
			metricsSet = v
		case OptMetricsPath:
			if !strings.HasPrefix(v, "/") {
				bad(k, "%q must start with /", v)
			}
			c.metricsPath = v
		case OptMetricsPort:
			if n, err := strconv.ParseUint(v, 10, 16); err != nil || n == 0 {
				bad(k, "%q is not a port number", v)
			}
			c.metricsPort = v
		case OptMetricsInterval:
			dur(k, v, &c.metricsEvery)
		case OptMetricsTimeout:
			dur(k, v, &c.metricsWithin)
		case OptResolveInterval:
			dur(k, v, &c.resolveEvery)
		case OptRequestTimeout:
			dur(k, v, &c.requestMax)
		case OptStreamIdleTimeout:
			dur(k, v, &c.idleMax)
		case OptMaxRetryAfter:
			dur(k, v, &c.maxRetryAfter)
		case OptSlotsPerEndpoint:
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				bad(k, "%q is not a count >= 1", v)
			}
			c.slots = n
		default:
			errs = append(errs, fmt.Errorf("unknown option %q (known: %s)", k, strings.Join(knownOptions, ", ")))
		}
	}
	c.traits = serverTraits[c.server]
	c.metrics = c.traits.metrics
	if metricsSet != "" {
		c.metrics = metricsSet == "on"
	}
	if _, known := metricNames[c.server]; c.metrics && !known {
		bad(OptMetrics, "server %s has no load metrics the adapter reads", c.server)
	}
	if c.keyEnv != "" && c.keyFile != "" {
		bad(OptAPIKeyEnv, "give %s or %s, not both", OptAPIKeyEnv, OptAPIKeyFile)
	}
	if c.keyEnv != "" && os.Getenv(c.keyEnv) == "" {
		bad(OptAPIKeyEnv, "environment variable %s is empty or unset", c.keyEnv)
	}
	if c.keyFile != "" {
		if _, err := readKeyFile(c.keyFile); err != nil {
			bad(OptAPIKeyFile, "%v", err)
		}
	}
	if tc, err := tlsConfig(caFile, certFile, keyFile, serverName); err != nil {
		errs = append(errs, err)
	} else {
		c.tls = tc
	}
	if len(spec.Endpoints) == 0 {
		errs = append(errs, errors.New("no endpoints"))
	}
	for _, e := range spec.Endpoints {
		t, err := parseTarget(e, c.scheme, c.basePath)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.targets = append(c.targets, t)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// parseTarget reads one endpoint: http(s)://host:port[/base] or dns:///host:port.
func parseTarget(e, scheme, basePath string) (target, error) {
	if rest, ok := strings.CutPrefix(e, "dns:///"); ok {
		host, port, err := net.SplitHostPort(rest)
		if err != nil || host == "" || port == "" {
			return target{}, fmt.Errorf("endpoint %q: want dns:///host:port", e)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return target{}, fmt.Errorf("endpoint %q: port %q is not a number", e, port)
		}
		return target{raw: e, host: host, port: port}, nil
	}
	u, err := url.Parse(e)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return target{}, fmt.Errorf("endpoint %q: want http(s)://host:port[/path] or dns:///host:port", e)
	}
	path := strings.TrimSuffix(u.Path, "/")
	if path == "" {
		path = basePath
	}
	root := u.Scheme + "://" + u.Host
	return target{raw: e, base: root + path, root: root}, nil
}

// tlsConfig is the pool's TLS client configuration (tlsclient.Config), nil
// when no tls.* option is set (the transport's defaults).
func tlsConfig(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	f := tlsclient.Files{CAFile: caFile, CertFile: certFile, KeyFile: keyFile, ServerName: serverName}
	if !f.Set() {
		return nil, nil
	}
	return tlsclient.Config(f)
}

// maxKeyBytes bounds an API key file.
const maxKeyBytes = 16 << 10

// readKeyFile reads an API key; errors name the file, never its content.
func readKeyFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("api key file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyBytes+1))
	if err != nil {
		return "", fmt.Errorf("api key file %s: %w", path, err)
	}
	if len(b) > maxKeyBytes {
		return "", fmt.Errorf("api key file %s: larger than %d bytes", path, maxKeyBytes)
	}
	key := strings.TrimSpace(string(b))
	if key == "" || strings.ContainsAny(key, "\r\n") {
		return "", fmt.Errorf("api key file %s: want one non-empty line", path)
	}
	return key, nil
}

// serverModel is the name the pool's server uses for a fleet model.
func (c *poolConfig) serverModel(fleet string) string {
	if m, ok := c.modelNames[fleet]; ok {
		return m
	}
	return fleet
}
