package bedrock

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/backends"
)

// Spec options the adapter understands (the pool's `options:`; nested YAML
// arrives as dotted keys).
const (
	OptRegion            = "region"              // AWS region of the Bedrock endpoint (required)
	OptModelNames        = "model_names"         // model_names.<fleet model>: model id, inference profile id or ARN
	OptProfile           = "profile"             // shared-config profile to take credentials from; default the SDK's chain
	OptRoleARN           = "role_arn"            // role to assume (STS AssumeRole) with the chain's credentials
	OptRoleSessionName   = "role_session_name"   // default switchyard-<pool>
	OptExternalID        = "external_id"         // AssumeRole external id
	OptRequestTimeout    = "request_timeout"     // bound on one call when the caller set none sooner; default 10m
	OptStreamIdleTimeout = "stream_idle_timeout" // a stream silent this long is a failure; default 60s
	OptCredentialRefresh = "credential_refresh"  // how often credentials are checked off the request path; default 1m
	OptThrottleBackoff   = "throttle_backoff"    // first local back-off after a throttle; default 1s (doubles)
	OptMaxThrottleBack   = "max_throttle_backoff"
	OptContinuation      = "continuation" // on (Anthropic models: a trailing assistant turn is continued) or off
	OptTopK              = "top_k"        // on: send top_k in additionalModelRequestFields (Anthropic models); default on for anthropic.* ids
)

var knownOptions = []string{
	OptContinuation, OptCredentialRefresh, OptExternalID, OptMaxThrottleBack, OptModelNames + ".<model>", OptProfile,
	OptRegion, OptRequestTimeout, OptRoleARN, OptRoleSessionName, OptStreamIdleTimeout, OptThrottleBackoff, OptTopK,
}

// poolConfig is a pool's validated settings.
type poolConfig struct {
	pool          string
	region        string
	endpoint      string // "" : the SDK's endpoint for the region
	modelIDs      map[string]string
	profile       string
	roleARN       string
	roleSession   string
	externalID    string
	requestMax    time.Duration
	idleMax       time.Duration
	refreshEvery  time.Duration
	backoffMin    time.Duration
	backoffMax    time.Duration
	continuation  bool
	topK          string // "on", "off" or "" (by model id)
	maxConcurrent int
}

// parseSpec validates the pool's options and endpoint (Provision's
// validation half): every problem is reported, naming the option.
func parseSpec(spec backends.Spec) (*poolConfig, error) {
	c := &poolConfig{
		pool: spec.Pool, modelIDs: map[string]string{}, requestMax: 10 * time.Minute, idleMax: 60 * time.Second,
		refreshEvery: time.Minute, backoffMin: time.Second, backoffMax: 30 * time.Second, continuation: true,
		roleSession: "switchyard-" + spec.Pool, maxConcurrent: max(spec.MaxConcurrent, 1),
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
	oneLine := func(key, v string, most int) {
		if v == "" || len(v) > most || strings.ContainsAny(v, "\n\r") {
			bad(key, "want 1..%d bytes on one line", most)
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
			oneLine(k, v, 2048)
			c.modelIDs[m] = v
			continue
		}
		switch k {
		case OptRegion:
			if !validRegion(v) {
				bad(k, "%q is not an AWS region name", v)
			}
			c.region = v
		case OptProfile:
			oneLine(k, v, 256)
			c.profile = v
		case OptRoleARN:
			if !strings.HasPrefix(v, "arn:") || !strings.Contains(v, ":role/") {
				bad(k, "%q is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)", v)
			}
			c.roleARN = v
		case OptRoleSessionName:
			oneLine(k, v, 64)
			c.roleSession = v
		case OptExternalID:
			oneLine(k, v, 1224)
			c.externalID = v
		case OptRequestTimeout:
			dur(k, v, &c.requestMax)
		case OptStreamIdleTimeout:
			dur(k, v, &c.idleMax)
		case OptCredentialRefresh:
			dur(k, v, &c.refreshEvery)
		case OptThrottleBackoff:
			dur(k, v, &c.backoffMin)
		case OptMaxThrottleBack:
			dur(k, v, &c.backoffMax)
		case OptContinuation, OptTopK:
			if v != "on" && v != "off" {
				bad(k, "%q is not on or off", v)
			}
			if k == OptContinuation {
				c.continuation = v == "on"
			} else {
				c.topK = v
			}
		default:
			errs = append(errs, fmt.Errorf("unknown option %q (known: %s)", k, strings.Join(knownOptions, ", ")))
		}
	}
	if c.region == "" {
		errs = append(errs, fmt.Errorf("option %s: required (the AWS region of the Bedrock endpoint)", OptRegion))
	}
	if (c.externalID != "" || spec.Options[OptRoleSessionName] != "") && c.roleARN == "" {
		bad(OptRoleARN, "required with %s or %s", OptExternalID, OptRoleSessionName)
	}
	if c.backoffMax < c.backoffMin {
		bad(OptMaxThrottleBack, "%s is below %s %s", c.backoffMax, OptThrottleBackoff, c.backoffMin)
	}
	switch len(spec.Endpoints) {
	case 0:
		errs = append(errs, errors.New("endpoints: want one: \"default\" (the region's bedrock-runtime endpoint) or an https:// URL (a VPC endpoint)"))
	case 1:
		if e := spec.Endpoints[0]; e != "default" {
			u, err := url.Parse(e)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
				errs = append(errs, fmt.Errorf("endpoint %q: want \"default\" or https://host[:port]", e))
			}
			c.endpoint = strings.TrimSuffix(e, "/")
		}
	default:
		errs = append(errs, fmt.Errorf("endpoints: %d given, want one (a pool is one region's endpoint)", len(spec.Endpoints)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// validRegion accepts names like us-east-1, eu-central-2, us-gov-west-1.
func validRegion(r string) bool {
	parts := strings.Split(r, "-")
	if len(r) > 32 || len(parts) < 3 {
		return false
	}
	for _, p := range parts[:len(parts)-1] {
		if p == "" || strings.Trim(p, "abcdefghijklmnopqrstuvwxyz") != "" {
			return false
		}
	}
	_, err := strconv.Atoi(parts[len(parts)-1])
	return err == nil
}

// modelID is the Bedrock model id (or inference profile) for a fleet model.
func (c *poolConfig) modelID(fleet string) string {
	if m, ok := c.modelIDs[fleet]; ok {
		return m
	}
	return fleet
}

// sendTopK says whether top_k goes in additionalModelRequestFields for a model id.
func (c *poolConfig) sendTopK(id string) bool {
	switch c.topK {
	case "on":
		return true
	case "off":
		return false
	}
	return strings.Contains(id, "anthropic.")
}

// anyTopK says whether any model of the pool may take top_k: the option is
// on, or it is unset and a model is mapped to an Anthropic id, or no model
// is mapped (the fleet names are the ids, checked per call). The router
// sends calls with top_k elsewhere when it is false.
func (c *poolConfig) anyTopK() bool {
	switch c.topK {
	case "on":
		return true
	case "off":
		return false
	}
	if len(c.modelIDs) == 0 {
		return true
	}
	for _, id := range c.modelIDs {
		if c.sendTopK(id) {
			return true
		}
	}
	return false
}

// probeURL is what Check reaches to see the endpoint answer.
func (c *poolConfig) probeURL() string {
	if c.endpoint != "" {
		return c.endpoint + "/"
	}
	return "https://bedrock-runtime." + c.region + ".amazonaws.com/"
}
