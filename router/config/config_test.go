package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
