// Package config reads and validates the fleet configuration (YAML): models,
// pools, tenants, admin tokens and routing settings. Validation errors name
// the file, the pool and the field, and the line when it is known.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/switchyard-dev/switchyard/internal/geo"
)

// Fleet is the whole configuration file.
type Fleet struct {
	Models  []Model  `yaml:"models"`
	Pools   []Pool   `yaml:"pools"`
	Tenants []Tenant `yaml:"tenants,omitempty"`
	Admin   Admin    `yaml:"admin,omitempty"`
	Routing Routing  `yaml:"routing,omitempty"`
	// Regions adds regions the built-in table does not know.
	Regions []RegionSpec `yaml:"regions,omitempty"`
	// Sim holds settings for the simulated accelerator pools.
	Sim Sim `yaml:"sim,omitempty"`
	// Capacity says how the replicas share capacity counters and where each
	// pool's budget lives (docs/capacity.md).
	Capacity Capacity `yaml:"capacity,omitempty"`

	// lines maps "pools[3]" style paths to their line in the source file.
	lines  map[string]int
	source string
}

// Bounds on config sizes, checked against what they multiply into: a
// model's max_input_tokens becomes the gRPC receive limit (4 bytes a token)
// and the HTTP body limit (4 times that), and max_tokens is a 32-bit count;
// a pool's max_concurrent sizes connection pools and per-replica shares.
const (
	MaxModelTokens    = 1 << 24 // 16,777,216 tokens: a 64 MiB prompt, a 256 MiB JSON body
	MaxPoolConcurrent = 1 << 20
	MaxQueueLength    = 1 << 20
)

// Model is a served model and its request limits.
type Model struct {
	Name            string `yaml:"name"`
	MaxInputTokens  int    `yaml:"max_input_tokens"`  // at most MaxModelTokens
	MaxOutputTokens int    `yaml:"max_output_tokens"` // not used by (and optional for) an embedding model
	// Kind is what the model serves: KindChat (the default: Generate,
	// chat and text completions) or KindEmbedding (Embed, /v1/embeddings).
	Kind string `yaml:"kind,omitempty"`
}

// Model kinds.
const (
	KindChat      = "chat"
	KindEmbedding = "embedding"
)

// KindOrDefault is the model's kind, KindChat when unset.
func (m Model) KindOrDefault() string {
	if m.Kind == "" {
		return KindChat
	}
	return m.Kind
}

// Pool is one accelerator pool.
type Pool struct {
	Name        string   `yaml:"name"`
	Cloud       string   `yaml:"cloud"`
	Region      string   `yaml:"region"`
	Geography   string   `yaml:"geography,omitempty"` // derived from region when empty
	Accelerator string   `yaml:"accelerator"`
	Models      []string `yaml:"models"`
	// Adapter is the backend adapter name; empty means "sim" when Endpoints is
	// ["sim"] and "grpc" otherwise.
	Adapter   string   `yaml:"adapter,omitempty"`
	Endpoints []string `yaml:"endpoints"`
	// Options are the adapter's own settings, passed through untouched to
	// backends.Spec.Options: the adapter validates them (config does not
	// know any adapter's keys). Nested mappings are flattened to dotted keys.
	Options Options `yaml:"options,omitempty"`
	Limits  Limits  `yaml:"limits"`
	// CostPerMillionTokens in USD.
	CostPerMillionTokens float64 `yaml:"cost_per_million_tokens"`
	// Weight shifts traffic among equally close pools; default 1; 0 sends
	// traffic only when nothing else can take it.
	Weight *float64 `yaml:"weight,omitempty"`
	// CapacityStore names the capacity store that homes this pool's budget
	// (one of capacity.stores); empty: its region's store, else the default.
	CapacityStore string `yaml:"capacity_store,omitempty"`
}

// Capacity is the fleet's capacity section: the counting mode and the
// stores that home the pools' budgets, one per region (or group of
// regions). Pools in a region no store names are homed in the default store
// (the router's --redis).
type Capacity struct {
	// Mode is CountingLeased (the default with a shared store: blocks of
	// slots leased from the home, no round trip per call) or CountingStrict
	// (one reservation per call in the one --redis store).
	Mode   string          `yaml:"mode,omitempty"`
	Stores []CapacityStore `yaml:"stores,omitempty"`
}

// Counting modes.
const (
	CountingLeased = "leased"
	CountingStrict = "strict"
)

// CapacityStore is one home store: a Redis or a Redis Cluster (the URL forms
// of --redis), given in the file or, to keep a password out of it, in an
// environment variable.
type CapacityStore struct {
	Name    string   `yaml:"name"`
	URL     string   `yaml:"url,omitempty"`
	URLEnv  string   `yaml:"url_env,omitempty"`
	Regions []string `yaml:"regions,omitempty"`
}

// PoolHomes maps every pool to the name of the store that homes it: its
// capacity_store, else the store naming its region; pools with neither are
// left out (they live in the default store).
func (f *Fleet) PoolHomes() map[string]string {
	byRegion := map[string]string{}
	for _, s := range f.Capacity.Stores {
		for _, r := range s.Regions {
			byRegion[r] = s.Name
		}
	}
	out := map[string]string{}
	for _, p := range f.Pools {
		switch {
		case p.CapacityStore != "":
			out[p.Name] = p.CapacityStore
		case byRegion[p.Region] != "":
			out[p.Name] = byRegion[p.Region]
		}
	}
	return out
}

// Options is a pool's adapter section. In YAML it is a mapping of scalars
// that may nest: `model_names: {llama-3.3-70b: meta-llama/Llama-3.3-70B}`
// becomes the key "model_names.llama-3.3-70b". Sequences of scalars become
// one comma-separated value. Values stay strings; the adapter parses them.
type Options map[string]string

// maxOptionDepth bounds how deep an options mapping may nest.
const maxOptionDepth = 4

// UnmarshalYAML flattens nested mappings into dotted keys.
func (o *Options) UnmarshalYAML(n *yaml.Node) error {
	out := Options{}
	if err := flattenOptions(out, "", n, 0); err != nil {
		return err
	}
	*o = out
	return nil
}

func flattenOptions(out Options, prefix string, n *yaml.Node, depth int) error {
	if n.Kind == yaml.AliasNode {
		return fmt.Errorf("line %d: options: aliases are not allowed", n.Line)
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: options: want a mapping", n.Line)
	}
	if depth >= maxOptionDepth {
		return fmt.Errorf("line %d: options: nested deeper than %d levels", n.Line, maxOptionDepth)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value == "" || strings.ContainsAny(k.Value, "\n") {
			return fmt.Errorf("line %d: options: keys must be non-empty single-line strings", k.Line)
		}
		key := k.Value
		if prefix != "" {
			key = prefix + "." + key
		}
		if _, dup := out[key]; dup {
			return fmt.Errorf("line %d: options: duplicate key %q", k.Line, key)
		}
		switch v.Kind {
		case yaml.ScalarNode:
			out[key] = v.Value
		case yaml.MappingNode:
			if err := flattenOptions(out, key, v, depth+1); err != nil {
				return err
			}
		case yaml.SequenceNode:
			vals := make([]string, 0, len(v.Content))
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode || strings.Contains(item.Value, ",") {
					return fmt.Errorf("line %d: options: %s: list items must be scalars without commas", item.Line, key)
				}
				vals = append(vals, item.Value)
			}
			out[key] = strings.Join(vals, ",")
		default:
			return fmt.Errorf("line %d: options: %s: aliases are not allowed", v.Line, key)
		}
	}
	return nil
}

// Limits are a pool's capacity limits, as cloud quotas state them.
type Limits struct {
	MaxConcurrent     int   `yaml:"max_concurrent"`
	RequestsPerMinute int64 `yaml:"requests_per_minute,omitempty"`
	TokensPerMinute   int64 `yaml:"tokens_per_minute,omitempty"`
}

// Tenant is an API customer. Keys are stored as hex SHA-256 digests.
type Tenant struct {
	Name              string   `yaml:"name"`
	APIKeySHA256      []string `yaml:"api_key_sha256"`
	RequestsPerMinute int64    `yaml:"requests_per_minute,omitempty"`
	TokensPerMinute   int64    `yaml:"tokens_per_minute,omitempty"`
}

// Admin holds control-plane tokens.
type Admin struct {
	Tokens []AdminToken `yaml:"tokens,omitempty"`
}

// AdminToken is a named bearer token with a role; the token is stored as its hex SHA-256.
type AdminToken struct {
	Name   string `yaml:"name"`
	Role   string `yaml:"role"` // viewer | operator
	SHA256 string `yaml:"sha256"`
}

// Routing tunes the routing policy.
type Routing struct {
	// Policy: switchyard (default), round_robin, random, least_request, gie, envoy_locality.
	Policy string `yaml:"policy,omitempty"`
	// MaxAttempts per call, first included (default 3).
	MaxAttempts int `yaml:"max_attempts,omitempty"`
	// RetryBudget: extra attempts may be at most this fraction of calls (default 0.2).
	RetryBudget float64 `yaml:"retry_budget,omitempty"`
	// QueueMaxWait: how long a call waits for headroom before RESOURCE_EXHAUSTED (default 2s).
	QueueMaxWait Duration `yaml:"queue_max_wait,omitempty"`
	// QueueMaxLength: calls waiting at once, beyond that calls are shed at once (default 1024).
	QueueMaxLength int `yaml:"queue_max_length,omitempty"`
	// SpillReserve: fraction of a tier's capacity kept back; when a tier's
	// headroom falls under it, traffic of that priority spills to the next tier.
	SpillReserve SpillReserve `yaml:"spill_reserve,omitempty"`
	// SpillBand: above the reserve, a tier sheds a growing share of calls to
	// farther tiers over this much free share (default 0.3; negative: none,
	// the whole tier spills at once at the reserve).
	SpillBand float64 `yaml:"spill_band,omitempty"`
	// PriorityTargets: per priority class, the time to first token and time
	// per output token a call should see (0: none). The default policy treats
	// a pool predicted to miss them as it treats one predicted to miss the
	// call's deadline.
	PriorityTargets PriorityTargets `yaml:"priority_targets,omitempty"`
	// CostWeight in [0,1]: 0 ignores cost, 1 ranks pools inside the latency budget by cost first.
	CostWeight float64 `yaml:"cost_weight,omitempty"`
	// LatencyBudgetMillis: pools farther than this RTT from the caller are not preferred for cost.
	LatencyBudgetMillis float64 `yaml:"latency_budget_ms,omitempty"`
	// RegionLatencyMillis overrides estimated RTTs: "us-east-1|eu-west-1": 70.
	RegionLatencyMillis map[string]float64 `yaml:"region_latency_ms,omitempty"`
	// Ejection: consecutive real failures that eject a pool, and the base ejection time.
	EjectAfterFailures int      `yaml:"eject_after_failures,omitempty"`
	EjectBase          Duration `yaml:"eject_base,omitempty"`
	EjectMax           Duration `yaml:"eject_max,omitempty"`
	// HealthCheckInterval for active health checks (default 5s; 0 keeps the
	// default). Two failed checks in a row take a pool out of rotation.
	HealthCheckInterval Duration `yaml:"health_check_interval,omitempty"`
	// AttemptTimeout bounds one attempt on one pool (Envoy's per_try_timeout):
	// the whole answer of a unary call, the first chunk of a stream. When it
	// passes the call moves to the next pool, inside the client's deadline.
	// 0 (the default): no bound but the client's deadline.
	AttemptTimeout Duration `yaml:"attempt_timeout,omitempty"`
}

// SpillReserve per priority class.
type SpillReserve struct {
	Interactive float64 `yaml:"interactive,omitempty"`
	Standard    float64 `yaml:"standard,omitempty"`
	Batch       float64 `yaml:"batch,omitempty"`
}

// PriorityTargets are latency targets per priority class.
type PriorityTargets struct {
	Interactive LatencyTarget `yaml:"interactive,omitempty"`
	Standard    LatencyTarget `yaml:"standard,omitempty"`
	Batch       LatencyTarget `yaml:"batch,omitempty"`
}

// LatencyTarget is a time to first token and a time per output token (0: none).
type LatencyTarget struct {
	TTFT Duration `yaml:"ttft,omitempty"`
	TPOT Duration `yaml:"tpot,omitempty"`
}

// RegionSpec declares a region unknown to the built-in table.
type RegionSpec struct {
	Name      string  `yaml:"name"`
	Cloud     string  `yaml:"cloud"`
	Geography string  `yaml:"geography"`
	Lat       float64 `yaml:"lat"`
	Lon       float64 `yaml:"lon"`
}

// Sim configures simulated pools.
type Sim struct {
	// TimeScale > 1 runs simulated time faster (10 = ten times faster).
	TimeScale float64 `yaml:"time_scale,omitempty"`
	// QueueLength per simulated pool (default 4 × max_concurrent).
	QueueLength int `yaml:"queue_length,omitempty"`
}

// Duration is a time.Duration written as "2s", "150ms".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration: %w", n.Line, err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: duration %q: %w", n.Line, s, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std returns the standard library duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

//go:embed demo.yaml
var demoYAML []byte

// DemoYAML returns the embedded demo fleet's source.
func DemoYAML() []byte { return bytes.Clone(demoYAML) }

// Demo returns the embedded demo fleet: simulated pools across aws, gcp and
// azure in the US and the EU.
func Demo() *Fleet {
	f, err := Parse(demoYAML, "embedded demo fleet")
	if err != nil {
		panic(fmt.Sprintf("embedded demo fleet is invalid: %v", err)) // caught by tests
	}
	return f
}

// Load reads and validates a fleet file.
func Load(path string) (*Fleet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read fleet config: %w", err)
	}
	return Parse(b, path)
}

// Parse decodes and validates a fleet config; source names it in errors.
func Parse(b []byte, source string) (*Fleet, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty fleet config", source)
		}
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	f := &Fleet{source: source, lines: map[string]int{}}
	strict := yaml.NewDecoder(bytes.NewReader(b))
	strict.KnownFields(true)
	if err := strict.Decode(f); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	f.indexLines(&root)
	f.applyDefaults()
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// Normalize fills the defaults Parse fills and validates f, for a fleet built
// in Go (tests build fleets so, router/dispatch/dispatchtest): f is then what
// a file with the same settings parses to. source names it in errors.
func (f *Fleet) Normalize(source string) error {
	f.source = source
	if f.lines == nil {
		f.lines = map[string]int{}
	}
	f.applyDefaults()
	return f.Validate()
}

func (f *Fleet) indexLines(root *yaml.Node) {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return
	}
	m := root.Content[0]
	if m.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		key, val := m.Content[i].Value, m.Content[i+1]
		if val.Kind != yaml.SequenceNode {
			continue
		}
		for j, item := range val.Content {
			f.lines[fmt.Sprintf("%s[%d]", key, j)] = item.Line
		}
	}
}

func (f *Fleet) applyDefaults() {
	for i := range f.Pools {
		p := &f.Pools[i]
		if p.Weight == nil {
			w := 1.0
			p.Weight = &w
		}
		if p.Geography == "" {
			p.Geography = geo.GeographyOf(p.Region)
			for _, r := range f.Regions {
				if r.Name == p.Region {
					p.Geography = r.Geography
				}
			}
		}
		if p.Adapter == "" {
			if len(p.Endpoints) == 1 && p.Endpoints[0] == "sim" {
				p.Adapter = "sim"
			} else {
				p.Adapter = "grpc"
			}
		}
		if p.Adapter == "sim" {
			// Simulated pools know where they are: routes name it and the
			// simulator models the network distance to the caller.
			if p.Options == nil {
				p.Options = map[string]string{}
			}
			for k, v := range map[string]string{"cloud": p.Cloud, "region": p.Region} {
				if _, set := p.Options[k]; !set && v != "" {
					p.Options[k] = v
				}
			}
		}
	}
	r := &f.Routing
	if r.Policy == "" {
		r.Policy = "switchyard"
	}
	if r.MaxAttempts == 0 {
		r.MaxAttempts = 3
	}
	if r.RetryBudget == 0 {
		r.RetryBudget = 0.2
	}
	if r.QueueMaxWait == 0 {
		r.QueueMaxWait = Duration(2 * time.Second)
	}
	if r.QueueMaxLength == 0 {
		r.QueueMaxLength = 1024
	}
	if r.SpillReserve == (SpillReserve{}) {
		r.SpillReserve = SpillReserve{Interactive: 0.05, Standard: 0.10, Batch: 0.25}
	}
	if r.SpillBand == 0 {
		r.SpillBand = 0.3
	}
	if r.LatencyBudgetMillis == 0 {
		r.LatencyBudgetMillis = 60
	}
	if r.EjectAfterFailures == 0 {
		r.EjectAfterFailures = 3
	}
	if r.EjectBase == 0 {
		r.EjectBase = Duration(5 * time.Second)
	}
	if r.EjectMax == 0 {
		r.EjectMax = Duration(2 * time.Minute)
	}
	if r.HealthCheckInterval == 0 {
		r.HealthCheckInterval = Duration(5 * time.Second)
	}
	if f.Sim.TimeScale == 0 {
		f.Sim.TimeScale = 1
	}
}

// Clouds and roles accepted in the config.
var (
	Clouds = []string{"aws", "gcp", "azure"}
	Roles  = []string{"viewer", "operator"}
)

// validateCapacity checks the capacity section and the pools' stores.
func (f *Fleet) validateCapacity(bad func(where, field, format string, args ...any)) {
	switch f.Capacity.Mode {
	case "", CountingLeased, CountingStrict:
	default:
		bad("capacity", "mode", "must be %s or %s, got %q", CountingLeased, CountingStrict, f.Capacity.Mode)
	}
	if f.Capacity.Mode == CountingStrict && len(f.Capacity.Stores) > 0 {
		bad("capacity", "stores", "strict counting uses the one --redis store; per-region stores need mode %s", CountingLeased)
	}
	stores := map[string]bool{}
	regions := map[string]string{}
	for i, s := range f.Capacity.Stores {
		where := fmt.Sprintf("capacity.stores[%d]", i)
		switch {
		case s.Name == "":
			bad(where, "name", "required")
		case s.Name == "default":
			bad(where, "name", "%q is the --redis store's name", s.Name)
		case stores[s.Name]:
			bad(where, "name", "duplicate store")
		}
		stores[s.Name] = true
		if (s.URL == "") == (s.URLEnv == "") {
			bad(where, "url", "exactly one of url and url_env is required")
		}
		for _, r := range s.Regions {
			if other, dup := regions[r]; dup {
				bad(where, "regions", "region %q is already homed in store %q", r, other)
			}
			regions[r] = s.Name
		}
	}
	for i, p := range f.Pools {
		if p.CapacityStore != "" && !stores[p.CapacityStore] {
			where := fmt.Sprintf("pools[%d]", i)
			if p.Name != "" {
				where = fmt.Sprintf("pool %q", p.Name)
			}
			bad(where, "capacity_store", "%q is not one of capacity.stores", p.CapacityStore)
		}
	}
}

// Validate checks the whole fleet and returns every problem found, joined.
func (f *Fleet) Validate() error {
	var errs []error
	bad := func(where, field, format string, args ...any) {
		loc := f.source
		if line, ok := f.lines[where]; ok {
			loc = fmt.Sprintf("%s:%d", f.source, line)
		}
		errs = append(errs, fmt.Errorf("%s: %s: %s: %s", loc, where, field, fmt.Sprintf(format, args...)))
	}
	models := map[string]bool{}
	for i, m := range f.Models {
		where := fmt.Sprintf("models[%d]", i)
		if m.Name != "" {
			where = fmt.Sprintf("model %q", m.Name)
			if line, ok := f.lines[fmt.Sprintf("models[%d]", i)]; ok {
				f.lines[where] = line
			}
		}
		switch {
		case m.Name == "":
			bad(where, "name", "required")
		case models[m.Name]:
			bad(where, "name", "duplicate model")
		}
		models[m.Name] = true
		if m.MaxInputTokens <= 0 {
			bad(where, "max_input_tokens", "must be > 0, got %d", m.MaxInputTokens)
		} else if m.MaxInputTokens > MaxModelTokens {
			bad(where, "max_input_tokens", "must be at most %d (the receive limits are 4 bytes a token and 4 times that for JSON bodies), got %d", MaxModelTokens, m.MaxInputTokens)
		}
		if m.MaxOutputTokens > MaxModelTokens {
			bad(where, "max_output_tokens", "must be at most %d (max_tokens is a 32-bit count, answers are bounded per token), got %d", MaxModelTokens, m.MaxOutputTokens)
		}
		switch m.Kind {
		case "", KindChat:
			if m.MaxOutputTokens <= 0 {
				bad(where, "max_output_tokens", "must be > 0, got %d", m.MaxOutputTokens)
			}
		case KindEmbedding:
			if m.MaxOutputTokens < 0 {
				bad(where, "max_output_tokens", "must be >= 0, got %d", m.MaxOutputTokens)
			}
		default:
			bad(where, "kind", "must be %s or %s, got %q", KindChat, KindEmbedding, m.Kind)
		}
	}
	if len(f.Pools) == 0 {
		errs = append(errs, fmt.Errorf("%s: pools: at least one pool is required", f.source))
	}
	pools := map[string]bool{}
	served := map[string]bool{}
	for i, p := range f.Pools {
		where := fmt.Sprintf("pools[%d]", i)
		if p.Name != "" {
			where = fmt.Sprintf("pool %q", p.Name)
			if line, ok := f.lines[fmt.Sprintf("pools[%d]", i)]; ok {
				f.lines[where] = line
			}
		}
		switch {
		case p.Name == "":
			bad(where, "name", "required")
		case strings.ContainsAny(p.Name, "{}: \t"):
			bad(where, "name", "must not contain braces, colons or spaces")
		case pools[p.Name]:
			bad(where, "name", "duplicate pool")
		}
		pools[p.Name] = true
		if !contains(Clouds, p.Cloud) {
			bad(where, "cloud", "%q is not one of %v", p.Cloud, Clouds)
		}
		if p.Region == "" {
			bad(where, "region", "required")
		} else if p.Geography == "" {
			bad(where, "region", "unknown region %q: set geography on the pool or declare it under regions", p.Region)
		}
		if p.Accelerator == "" {
			bad(where, "accelerator", "required")
		}
		if len(p.Models) == 0 {
			bad(where, "models", "at least one model is required")
		}
		for _, m := range p.Models {
			if !models[m] {
				bad(where, "models", "model %q is not declared under models", m)
			}
			served[m] = true
		}
		for k := range p.Options {
			// model_names.<fleet model> (the openai adapter's name for a fleet
			// model on the pool's server) is the one option whose keys config
			// can check: they must be this pool's models.
			if m, ok := strings.CutPrefix(k, "model_names."); ok && !contains(p.Models, m) {
				bad(where, "options."+k, "model %q is not one of this pool's models %v", m, p.Models)
			}
		}
		if len(p.Endpoints) == 0 {
			bad(where, "endpoints", "at least one endpoint (host:port) or \"sim\" is required")
		}
		if p.Adapter == "grpc" {
			for _, e := range p.Endpoints {
				if e == "sim" || !strings.Contains(e, ":") {
					bad(where, "endpoints", "%q is not host:port", e)
				}
			}
		}
		if p.Limits.MaxConcurrent <= 0 {
			bad(where, "limits.max_concurrent", "must be > 0, got %d", p.Limits.MaxConcurrent)
		} else if p.Limits.MaxConcurrent > MaxPoolConcurrent {
			bad(where, "limits.max_concurrent", "must be at most %d (connection pools and shares are sized from it), got %d", MaxPoolConcurrent, p.Limits.MaxConcurrent)
		}
		if p.Limits.RequestsPerMinute < 0 {
			bad(where, "limits.requests_per_minute", "must be >= 0")
		}
		if p.Limits.TokensPerMinute < 0 {
			bad(where, "limits.tokens_per_minute", "must be >= 0")
		}
		if p.CostPerMillionTokens < 0 {
			bad(where, "cost_per_million_tokens", "must be >= 0")
		}
		if p.Weight != nil && *p.Weight < 0 {
			bad(where, "weight", "must be >= 0, got %v", *p.Weight)
		}
	}
	f.validateCapacity(bad)
	for m := range models {
		if !served[m] {
			errs = append(errs, fmt.Errorf("%s: model %q: no pool serves it", f.source, m))
		}
	}
	keys := map[string]string{}
	for i, t := range f.Tenants {
		where := fmt.Sprintf("tenants[%d]", i)
		if t.Name == "" {
			bad(where, "name", "required")
		}
		if t.RequestsPerMinute < 0 {
			bad(where, "requests_per_minute", "must be >= 0, got %d", t.RequestsPerMinute)
		}
		if t.TokensPerMinute < 0 {
			bad(where, "tokens_per_minute", "must be >= 0, got %d", t.TokensPerMinute)
		}
		if len(t.APIKeySHA256) == 0 {
			bad(where, "api_key_sha256", "at least one key digest is required")
		}
		for _, k := range t.APIKeySHA256 {
			if !isHexSHA256(k) {
				bad(where, "api_key_sha256", "%q is not a hex SHA-256 digest (64 hex characters)", k)
			}
			if other, dup := keys[k]; dup {
				bad(where, "api_key_sha256", "key already belongs to tenant %q", other)
			}
			keys[k] = t.Name
		}
	}
	for i, t := range f.Admin.Tokens {
		where := fmt.Sprintf("admin.tokens[%d]", i)
		if t.Name == "" {
			bad(where, "name", "required")
		}
		if !contains(Roles, t.Role) {
			bad(where, "role", "%q is not one of %v", t.Role, Roles)
		}
		if !isHexSHA256(t.SHA256) {
			bad(where, "sha256", "not a hex SHA-256 digest (64 hex characters)")
		}
	}
	r := f.Routing
	// routing.policy names a policy of the router's registry (any policy
	// registered with it, not only the built-ins): router.New and Reload
	// check it against the registry they run with.
	if len(r.Policy) > 64 {
		errs = append(errs, fmt.Errorf("%s: routing.policy: a name of at most 64 bytes, got %d", f.source, len(r.Policy)))
	}
	if r.MaxAttempts < 1 || r.MaxAttempts > 10 {
		errs = append(errs, fmt.Errorf("%s: routing.max_attempts: must be 1..10, got %d", f.source, r.MaxAttempts))
	}
	if r.RetryBudget < 0 || r.RetryBudget > 1 {
		errs = append(errs, fmt.Errorf("%s: routing.retry_budget: must be in [0,1], got %v", f.source, r.RetryBudget))
	}
	if r.CostWeight < 0 || r.CostWeight > 1 {
		errs = append(errs, fmt.Errorf("%s: routing.cost_weight: must be in [0,1], got %v", f.source, r.CostWeight))
	}
	for _, v := range []float64{r.SpillReserve.Interactive, r.SpillReserve.Standard, r.SpillReserve.Batch} {
		if v < 0 || v >= 1 {
			errs = append(errs, fmt.Errorf("%s: routing.spill_reserve: each value must be in [0,1), got %v", f.source, v))
		}
	}
	for class, t := range map[string]LatencyTarget{"interactive": r.PriorityTargets.Interactive, "standard": r.PriorityTargets.Standard, "batch": r.PriorityTargets.Batch} {
		if t.TTFT < 0 || t.TPOT < 0 {
			errs = append(errs, fmt.Errorf("%s: routing.priority_targets.%s: ttft and tpot must not be negative", f.source, class))
		}
	}
	if r.SpillBand > 1 {
		errs = append(errs, fmt.Errorf("%s: routing.spill_band: must be at most 1, got %v", f.source, r.SpillBand))
	}
	if r.AttemptTimeout < 0 {
		errs = append(errs, fmt.Errorf("%s: routing.attempt_timeout: must not be negative, got %s", f.source, r.AttemptTimeout.Std()))
	}
	if r.QueueMaxLength < 0 {
		errs = append(errs, fmt.Errorf("%s: routing.queue_max_length: must be >= 0, got %d", f.source, r.QueueMaxLength))
	} else if r.QueueMaxLength > MaxQueueLength {
		errs = append(errs, fmt.Errorf("%s: routing.queue_max_length: must be at most %d, got %d", f.source, MaxQueueLength, r.QueueMaxLength))
	}
	if r.EjectAfterFailures < 0 {
		errs = append(errs, fmt.Errorf("%s: routing.eject_after_failures: must be >= 0, got %d", f.source, r.EjectAfterFailures))
	}
	if r.LatencyBudgetMillis < 0 {
		errs = append(errs, fmt.Errorf("%s: routing.latency_budget_ms: must be >= 0, got %v", f.source, r.LatencyBudgetMillis))
	}
	// Durations: zero in the file means the default (applied before
	// validation); what is left here must be a positive duration, or a ticker
	// or timer built from it would panic or spin.
	for _, d := range []struct {
		field string
		v     Duration
	}{
		{"routing.queue_max_wait", r.QueueMaxWait},
		{"routing.eject_base", r.EjectBase},
		{"routing.eject_max", r.EjectMax},
		{"routing.health_check_interval", r.HealthCheckInterval},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: %s: must be a positive duration, got %s", f.source, d.field, d.v.Std()))
		}
	}
	if r.EjectBase > 0 && r.EjectMax > 0 && r.EjectMax < r.EjectBase {
		errs = append(errs, fmt.Errorf("%s: routing.eject_max: %s is shorter than routing.eject_base %s", f.source, r.EjectMax.Std(), r.EjectBase.Std()))
	}
	if _, err := f.LatencyTable(); err != nil {
		errs = append(errs, fmt.Errorf("%s: routing.region_latency_ms: %w", f.source, err))
	}
	if f.Sim.TimeScale <= 0 {
		errs = append(errs, fmt.Errorf("%s: sim.time_scale: must be > 0, got %v", f.source, f.Sim.TimeScale))
	}
	if f.Sim.QueueLength < 0 {
		errs = append(errs, fmt.Errorf("%s: sim.queue_length: must be >= 0, got %d", f.source, f.Sim.QueueLength))
	}
	return errors.Join(errs...)
}

// LatencyTable builds the region latency table from the built-in regions,
// the declared extra regions and the overrides.
func (f *Fleet) LatencyTable() (*geo.Table, error) {
	extra := make([]geo.Region, 0, len(f.Regions))
	for _, r := range f.Regions {
		extra = append(extra, geo.Region{Name: r.Name, Cloud: r.Cloud, Geography: r.Geography, Lat: r.Lat, Lon: r.Lon})
	}
	return geo.NewTable(extra, f.Routing.RegionLatencyMillis)
}

// Model returns a model by name.
func (f *Fleet) Model(name string) (Model, bool) {
	for _, m := range f.Models {
		if m.Name == name {
			return m, true
		}
	}
	return Model{}, false
}

// Pool returns a pool by name.
func (f *Fleet) Pool(name string) (Pool, bool) {
	for _, p := range f.Pools {
		if p.Name == name {
			return p, true
		}
	}
	return Pool{}, false
}

// PoolNames lists pool names sorted.
func (f *Fleet) PoolNames() []string {
	names := make([]string, 0, len(f.Pools))
	for _, p := range f.Pools {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return names
}

// Source names where the fleet was read from.
func (f *Fleet) Source() string { return f.source }

// WeightOf returns the pool's configured weight (1 when unset).
func (p Pool) WeightOf() float64 {
	if p.Weight == nil {
		return 1
	}
	return *p.Weight
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
