package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDemoFleetIsValid(t *testing.T) {
	f := Demo()
	if len(f.Pools) < 6 {
		t.Fatalf("demo fleet has %d pools, want >= 6", len(f.Pools))
	}
	clouds, geos := map[string]bool{}, map[string]bool{}
	for _, p := range f.Pools {
		clouds[p.Cloud] = true
		geos[p.Geography] = true
		if p.Adapter != "sim" {
			t.Errorf("pool %s: adapter %q, want sim", p.Name, p.Adapter)
		}
	}
	if len(clouds) != 3 || !geos["us"] || !geos["eu"] {
		t.Fatalf("demo fleet spans clouds %v geographies %v", clouds, geos)
	}
}

func TestValidationNamesPoolFieldAndLine(t *testing.T) {
	src := `models:
  - name: m
    max_input_tokens: 100
    max_output_tokens: 10
pools:
  - name: good
    cloud: aws
    region: us-east-1
    accelerator: h100
    models: [m]
    endpoints: [sim]
    limits: {max_concurrent: 4}
  - name: broken
    cloud: oracle
    region: us-east-1
    accelerator: h100
    models: [m, nope]
    endpoints: ["10.0.0.1"]
    limits: {max_concurrent: 0}
    weight: -1
`
	_, err := Parse([]byte(src), "fleet.yaml")
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		`fleet.yaml:13: pool "broken": cloud: "oracle" is not one of`,
		`pool "broken": models: model "nope" is not declared`,
		`pool "broken": endpoints: "10.0.0.1" is not host:port`,
		`pool "broken": limits.max_concurrent: must be > 0`,
		`pool "broken": weight: must be >= 0`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, `"good"`) {
		t.Errorf("error blames the valid pool:\n%s", msg)
	}
}

func TestUnknownFieldRejected(t *testing.T) {
	_, err := Parse([]byte("pools:\n  - name: a\n    colud: aws\n"), "x.yaml")
	if err == nil || !strings.Contains(err.Error(), "colud") || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("want error naming the unknown field and its line, got %v", err)
	}
}

func TestLoadFromFileAndEmpty(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "fleet.yaml")
	if err := os.WriteFile(p, DemoYAML(), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if f.Source() != p || f.Routing.QueueMaxWait.Std().Seconds() != 2 {
		t.Fatalf("unexpected fleet: source %q wait %v", f.Source(), f.Routing.QueueMaxWait.Std())
	}
	if _, err := Parse(nil, "empty.yaml"); err == nil || !strings.Contains(err.Error(), "empty.yaml") {
		t.Fatalf("empty file: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

// An adapter's options section may nest; it reaches the adapter as flat
// dotted keys, and model_names keys must be the pool's models.
func TestOptionsFlattenForTheAdapter(t *testing.T) {
	base := `models:
  - name: llama-3.3-70b
    max_input_tokens: 100
    max_output_tokens: 10
pools:
  - name: p
    cloud: aws
    region: us-east-1
    accelerator: h100
    models: [llama-3.3-70b]
    adapter: openai
    endpoints: ["http://127.0.0.1:8000"]
    limits: {max_concurrent: 4}
    options:
`
	f, err := Parse([]byte(base+`      server: vllm
      model_names: {llama-3.3-70b: meta-llama/Llama-3.3-70B-Instruct}
      tls: {ca_file: /etc/ca.pem}
      tags: [a, b]
`), "fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := f.Pools[0].Options
	want := map[string]string{"server": "vllm", "model_names.llama-3.3-70b": "meta-llama/Llama-3.3-70B-Instruct", "tls.ca_file": "/etc/ca.pem", "tags": "a,b"}
	if len(got) != len(want) {
		t.Fatalf("options %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("options[%q] = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	for _, tc := range []struct{ yaml, want string }{
		{"      model_names: {llama-2: x}\n", `options.model_names.llama-2: model "llama-2" is not one of this pool's models`},
		{"      a: {b: {c: {d: {e: 1}}}}\n", "nested deeper than 4 levels"},
		{"      a: [[1]]\n", "list items must be scalars"},
		{"      a.b: 1\n      a: {b: 2}\n", `duplicate key "a.b"`},
	} {
		_, err := Parse([]byte(base+tc.yaml), "fleet.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
}

// Durations and counts that would panic or misbehave at start are refused
// with the field named (routing.health_check_interval: -1s used to pass and
// panic in time.NewTicker).
// TestSizesBoundedByWhatTheyMultiplyInto is the outside probe's overflow
// (2026-12-02): max_input_tokens of 2^61 and more passed validation, its
// 4-bytes-a-token receive limit overflowed, and every call was refused. Sizes
// are now bounded, the field named.
func TestSizesBoundedByWhatTheyMultiplyInto(t *testing.T) {
	fleet := func(model, limits string) string {
		return "models:\n  - {name: m, " + model + "}\npools:\n  - {name: p, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: [sim], limits: {" + limits + "}}\n"
	}
	for _, tc := range []struct{ yaml, want string }{
		{fleet("max_input_tokens: 4611686018427387904, max_output_tokens: 10", "max_concurrent: 4"), `model "m": max_input_tokens: must be at most 16777216`},
		{fleet("max_input_tokens: 2305843009213693952, max_output_tokens: 10", "max_concurrent: 4"), `model "m": max_input_tokens: must be at most 16777216`},
		{fleet("max_input_tokens: 16777217, max_output_tokens: 10", "max_concurrent: 4"), `max_input_tokens: must be at most 16777216`},
		{fleet("max_input_tokens: 100, max_output_tokens: 4294967296", "max_concurrent: 4"), `model "m": max_output_tokens: must be at most 16777216`},
		{fleet("max_input_tokens: 100, max_output_tokens: 10", "max_concurrent: 9223372036854775807"), `limits.max_concurrent: must be at most 1048576`},
	} {
		_, err := Parse([]byte(tc.yaml), "fleet.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
	if _, err := Parse([]byte(fleet("max_input_tokens: 16777216, max_output_tokens: 16777216", "max_concurrent: 1048576")), "fleet.yaml"); err != nil {
		t.Fatalf("the largest sizes: %v", err)
	}
}

func TestNonPositiveDurationsRejected(t *testing.T) {
	base := `models:
  - name: m
    max_input_tokens: 100
    max_output_tokens: 10
pools:
  - name: p
    cloud: aws
    region: us-east-1
    accelerator: h100
    models: [m]
    endpoints: [sim]
    limits: {max_concurrent: 4}
`
	for _, tc := range []struct{ yaml, want string }{
		{"routing:\n  health_check_interval: -1s\n", "routing.health_check_interval: must be a positive duration, got -1s"},
		{"routing:\n  queue_max_wait: -5ms\n", "routing.queue_max_wait: must be a positive duration"},
		{"routing:\n  eject_base: -1s\n", "routing.eject_base: must be a positive duration"},
		{"routing:\n  eject_max: -2m\n", "routing.eject_max: must be a positive duration"},
		{"routing:\n  eject_base: 10s\n  eject_max: 1s\n", "routing.eject_max: 1s is shorter than routing.eject_base 10s"},
		{"routing:\n  queue_max_length: -1\n", "routing.queue_max_length: must be >= 0"},
		{"routing:\n  queue_max_length: 9223372036854775807\n", "routing.queue_max_length: must be at most 1048576"},
		{"routing:\n  eject_after_failures: -3\n", "routing.eject_after_failures: must be >= 0"},
		{"routing:\n  latency_budget_ms: -1\n", "routing.latency_budget_ms: must be >= 0"},
		{"routing:\n  priority_targets:\n    interactive: {ttft: -1s}\n", "routing.priority_targets.interactive: ttft and tpot must not be negative"},
		{"sim:\n  time_scale: -2\n", "sim.time_scale: must be > 0"},
		{"sim:\n  queue_length: -1\n", "sim.queue_length: must be >= 0"},
		{"tenants:\n  - name: t\n    api_key_sha256: [\"" + strings.Repeat("a", 64) + "\"]\n    requests_per_minute: -1\n", `tenants[0]: requests_per_minute: must be >= 0`},
	} {
		_, err := Parse([]byte(base+tc.yaml), "fleet.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
	f, err := Parse([]byte(base+"routing:\n  priority_targets:\n    interactive: {ttft: 800ms, tpot: 40ms}\n"), "fleet.yaml")
	if err != nil || f.Routing.PriorityTargets.Interactive.TTFT.Std() != 800*time.Millisecond || f.Routing.PriorityTargets.Interactive.TPOT.Std() != 40*time.Millisecond {
		t.Fatalf("priority targets: %v %+v", err, f.Routing.PriorityTargets)
	}
	// Zero keeps the default and is valid.
	f, err = Parse([]byte(base+"routing:\n  health_check_interval: 0s\n"), "fleet.yaml")
	if err != nil {
		t.Fatalf("zero interval (default): %v", err)
	}
	if f.Routing.HealthCheckInterval.Std() <= 0 {
		t.Fatalf("default health check interval %s", f.Routing.HealthCheckInterval.Std())
	}
}

func TestCapacityStoresHomePoolsByRegion(t *testing.T) {
	base := `models:
  - {name: m, max_input_tokens: 100, max_output_tokens: 10}
pools:
  - {name: use1, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: [sim], limits: {max_concurrent: 4}}
  - {name: euw1, cloud: aws, region: eu-west-1, accelerator: h100, models: [m], endpoints: [sim], limits: {max_concurrent: 4}}
  - {name: apne1, cloud: aws, region: ap-northeast-1, accelerator: h100, models: [m], endpoints: [sim], limits: {max_concurrent: 4}}
  - {name: pinned, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: [sim], limits: {max_concurrent: 4}, capacity_store: eu}
`
	f, err := Parse([]byte(base+`capacity:
  stores:
    - {name: us, url: "redis://10.0.0.1:6379", regions: [us-east-1, us-east4]}
    - {name: eu, url_env: EU_REDIS_URL, regions: [eu-west-1]}
`), "fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := f.PoolHomes()
	want := map[string]string{"use1": "us", "euw1": "eu", "pinned": "eu"} // apne1: the default store
	if len(got) != len(want) {
		t.Fatalf("homes %v, want %v", got, want)
	}
	for p, h := range want {
		if got[p] != h {
			t.Errorf("pool %s homed in %q, want %q", p, got[p], h)
		}
	}
	for _, c := range []struct{ section, wantErr string }{
		{"capacity:\n  mode: eventual\n", `capacity: mode: must be leased or strict, got "eventual"`},
		{"capacity:\n  mode: strict\n  stores: [{name: us, url: \"redis://h:1\"}]\n", "capacity: stores: strict counting uses the one --redis store"},
		{"capacity:\n  stores: [{name: us}]\n", "capacity.stores[0]: url: exactly one of url and url_env is required"},
		{"capacity:\n  stores: [{name: us, url: \"redis://h:1\", url_env: X}]\n", "capacity.stores[0]: url: exactly one of url and url_env"},
		{"capacity:\n  stores: [{name: default, url: \"redis://h:1\"}]\n", `capacity.stores[0]: name: "default" is the --redis store's name`},
		{"capacity:\n  stores: [{name: a, url: \"redis://h:1\", regions: [us-east-1]}, {name: a, url: \"redis://h:2\", regions: [us-east-1]}]\n", "capacity.stores[1]: name: duplicate store"},
		{"capacity:\n  stores: [{name: a, url: \"redis://h:1\", regions: [us-east-1]}, {name: b, url: \"redis://h:2\", regions: [us-east-1]}]\n", `region "us-east-1" is already homed in store "a"`},
		{"capacity:\n  stores: [{name: us, url: \"redis://h:1\"}]\n", `pool "pinned": capacity_store: "eu" is not one of capacity.stores`},
	} {
		_, err := Parse([]byte(base+c.section), "fleet.yaml")
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%q: got %v, want an error containing %q", c.section, err, c.wantErr)
		}
	}
}

// A fleet built in Go and normalized is what the same settings parse to
// from a file (defaults filled), and an invalid one is refused naming the
// field as Parse would.
func TestNormalizeIsWhatParseMakes(t *testing.T) {
	parsed, err := Parse([]byte("models:\n  - {name: m, max_input_tokens: 100, max_output_tokens: 10}\npools:\n"+
		"  - {name: a, cloud: aws, region: eu-west-1, accelerator: h100, models: [m], endpoints: [x], adapter: fake, limits: {max_concurrent: 2}}\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	built := &Fleet{
		Models: []Model{{Name: "m", MaxInputTokens: 100, MaxOutputTokens: 10}},
		Pools:  []Pool{{Name: "a", Cloud: "aws", Region: "eu-west-1", Accelerator: "h100", Models: []string{"m"}, Endpoints: []string{"x"}, Adapter: "fake", Limits: Limits{MaxConcurrent: 2}}},
	}
	if err := built.Normalize("built"); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(built.Routing, parsed.Routing) || !reflect.DeepEqual(built.Pools, parsed.Pools) || built.Sim != parsed.Sim {
		t.Fatalf("normalized %+v\nparsed %+v", built, parsed)
	}
	bad := &Fleet{Models: built.Models, Pools: []Pool{{Name: "b", Cloud: "aws", Region: "eu-west-1", Models: []string{"m"}, Endpoints: []string{"x"}, Adapter: "fake"}}}
	if err := bad.Normalize("built"); err == nil || !strings.Contains(err.Error(), `built: pool "b": accelerator: required`) {
		t.Fatalf("a pool without accelerator: %v", err)
	}
}
