package vertex

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/backends"
)

// Spec options the adapter understands (the pool's `options:`; nested YAML
// arrives as dotted keys).
const (
	OptProject            = "project"              // Google Cloud project id (required)
	OptLocation           = "location"             // Vertex AI location, e.g. us-east5, europe-west1, global (required)
	OptAPI                = "api"                  // anthropic (rawPredict, default), gemini (generateContent) or openai (a self-deployed endpoint's chat completions)
	OptEndpointID         = "endpoint_id"          // the Vertex endpoint of a self-deployed model (api: openai)
	OptModelNames         = "model_names"          // model_names.<fleet model>: the publisher model id (claude-sonnet-4@20250514) or served name
	OptCredentialsFile    = "credentials_file"     // a service-account key file; default Application Default Credentials
	OptTokenRefresh       = "token_refresh"        // how often the token is checked off the request path; default 30s
	OptTokenRefreshBefore = "token_refresh_before" // renew a token this long before it expires; default 5m
	OptRequestTimeout     = "request_timeout"      // default 10m
	OptStreamIdleTimeout  = "stream_idle_timeout"  // default 60s
	OptThrottleBackoff    = "throttle_backoff"     // first local back-off after a 429; default 1s (doubles)
	OptMaxThrottleBack    = "max_throttle_backoff" // default 30s
	OptContinuation       = "continuation"         // on (a trailing assistant turn is continued) or off
	OptAnthropicVersion   = "anthropic_version"    // default vertex-2023-10-16
)

var knownOptions = []string{
	OptAPI, OptAnthropicVersion, OptContinuation, OptCredentialsFile, OptEndpointID, OptLocation, OptMaxThrottleBack,
	OptModelNames + ".<model>", OptProject, OptRequestTimeout, OptStreamIdleTimeout, OptThrottleBackoff,
	OptTokenRefresh, OptTokenRefreshBefore,
}

type poolConfig struct {
	pool          string
	project       string
	location      string
	api           string
	endpointID    string
	base          string // https://{location}-aiplatform.googleapis.com or the endpoint given
	modelNames    map[string]string
	credsFile     string
	refreshEvery  time.Duration
	refreshBefore time.Duration
	requestMax    time.Duration
	idleMax       time.Duration
	backoffMin    time.Duration
	backoffMax    time.Duration
	continuation  bool
	version       string
	maxConcurrent int
	// openaiOptions are the options passed on to the openai adapter (api: openai).
	openaiOptions map[string]string
}

// openaiPassed are the openai adapter's options a Vertex pool with api:
// openai may set; they go to it unchanged.
var openaiPassed = map[string]bool{"tls.ca_file": true, "tls.server_name": true}

func parseSpec(spec backends.Spec) (*poolConfig, error) {
	c := &poolConfig{
		pool: spec.Pool, api: "anthropic", modelNames: map[string]string{}, refreshEvery: 30 * time.Second,
		refreshBefore: 5 * time.Minute, requestMax: 10 * time.Minute, idleMax: 60 * time.Second,
		backoffMin: time.Second, backoffMax: 30 * time.Second, continuation: true, version: "vertex-2023-10-16",
		maxConcurrent: max(spec.MaxConcurrent, 1), openaiOptions: map[string]string{},
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
	name := func(key, v string, most int) {
		if v == "" || len(v) > most || strings.ContainsAny(v, "/?#%\n\r ") {
			bad(key, "want 1..%d bytes without / ? # %% or spaces", most)
		}
	}
	keys := make([]string, 0, len(spec.Options))
	for k := range spec.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := spec.Options[k]
		if m, ok := strings.CutPrefix(k, OptModelNames+"."); ok {
			name(k, v, 256)
			c.modelNames[m] = v
			continue
		}
		if openaiPassed[k] {
			c.openaiOptions[k] = v
			continue
		}
		switch k {
		case OptProject:
			name(k, v, 64)
			c.project = v
		case OptLocation:
			name(k, v, 64)
			c.location = v
		case OptAPI:
			if v != "anthropic" && v != "gemini" && v != "openai" {
				bad(k, "%q is not anthropic, gemini or openai", v)
			}
			c.api = v
		case OptEndpointID:
			name(k, v, 128)
			c.endpointID = v
		case OptCredentialsFile:
			if _, err := os.Stat(v); err != nil {
				bad(k, "%v", err)
			}
			c.credsFile = v
		case OptTokenRefresh:
			dur(k, v, &c.refreshEvery)
		case OptTokenRefreshBefore:
			dur(k, v, &c.refreshBefore)
		case OptRequestTimeout:
			dur(k, v, &c.requestMax)
		case OptStreamIdleTimeout:
			dur(k, v, &c.idleMax)
		case OptThrottleBackoff:
			dur(k, v, &c.backoffMin)
		case OptMaxThrottleBack:
			dur(k, v, &c.backoffMax)
		case OptContinuation:
			if v != "on" && v != "off" {
				bad(k, "%q is not on or off", v)
			}
			c.continuation = v == "on"
		case OptAnthropicVersion:
			name(k, v, 64)
			c.version = v
		default:
			errs = append(errs, fmt.Errorf("unknown option %q (known: %s, and for api openai %s)", k, strings.Join(knownOptions, ", "), "tls.ca_file, tls.server_name"))
		}
	}
	if c.project == "" {
		bad(OptProject, "required (the Google Cloud project id)")
	}
	if c.location == "" {
		bad(OptLocation, "required (the Vertex AI location, e.g. us-east5)")
	}
	if c.api == "openai" && c.endpointID == "" {
		bad(OptEndpointID, "required with api: openai (the Vertex endpoint serving the model)")
	}
	if c.api != "openai" && c.endpointID != "" {
		bad(OptEndpointID, "only with api: openai")
	}
	if c.api != "openai" && len(c.openaiOptions) > 0 {
		bad(OptAPI, "tls options only with api: openai")
	}
	if c.api == "gemini" {
		// Gemini does not continue a trailing model turn.
		if spec.Options[OptContinuation] == "on" {
			bad(OptContinuation, "gemini models do not continue a trailing model turn")
		}
		c.continuation = false
		if _, set := spec.Options[OptAnthropicVersion]; set {
			bad(OptAnthropicVersion, "only with api: anthropic")
		}
	}
	if c.backoffMax < c.backoffMin {
		bad(OptMaxThrottleBack, "%s is below %s %s", c.backoffMax, OptThrottleBackoff, c.backoffMin)
	}
	switch len(spec.Endpoints) {
	case 0:
		errs = append(errs, errors.New("endpoints: want one: \"default\" (https://LOCATION-aiplatform.googleapis.com) or an https:// URL (Private Service Connect)"))
	case 1:
		if e := spec.Endpoints[0]; e == "default" {
			c.base = "https://" + c.location + "-aiplatform.googleapis.com"
			if c.location == "global" {
				c.base = "https://aiplatform.googleapis.com"
			}
		} else {
			u, err := url.Parse(e)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
				errs = append(errs, fmt.Errorf("endpoint %q: want \"default\" or https://host[:port]", e))
			}
			c.base = strings.TrimSuffix(e, "/")
		}
	default:
		errs = append(errs, fmt.Errorf("endpoints: %d given, want one (a pool is one location's endpoint)", len(spec.Endpoints)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *poolConfig) model(fleet string) string {
	if m, ok := c.modelNames[fleet]; ok {
		return m
	}
	return fleet
}

// predictURL is the URL of a publisher model's method: Anthropic's
// rawPredict / streamRawPredict, Gemini's generateContent /
// streamGenerateContent (as server-sent events).
func (c *poolConfig) predictURL(model string, stream bool) string {
	publisher, verb := "anthropic", "rawPredict"
	switch {
	case c.api == "gemini" && stream:
		publisher, verb = "google", "streamGenerateContent?alt=sse"
	case c.api == "gemini":
		publisher, verb = "google", "generateContent"
	case stream:
		verb = "streamRawPredict"
	}
	return fmt.Sprintf("%s/v1/projects/%s/locations/%s/publishers/%s/models/%s:%s", c.base, c.project, c.location, publisher, url.PathEscape(model), verb)
}

// openaiBase is the OpenAI-compatible API base of a self-deployed endpoint.
func (c *poolConfig) openaiBase() string {
	return fmt.Sprintf("%s/v1beta1/projects/%s/locations/%s/endpoints/%s", c.base, c.project, c.location, c.endpointID)
}
