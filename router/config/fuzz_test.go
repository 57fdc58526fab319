package config

import (
	"strings"
	"testing"
)

// FuzzParseFleet: any bytes as a fleet file give a fleet or an error, never
// a panic; an accepted fleet validates again as it stands and has its
// defaults (positive durations: nothing that would panic a ticker at start).
// Seeds: testdata/fuzz/FuzzParseFleet (the demo fleet, the Compose and the
// Kubernetes fleets, broken ones).
func FuzzParseFleet(f *testing.F) {
	f.Add(DemoYAML())
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return // fleet files are small; the YAML decoder's own limits are not under test
		}
		fl, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if err := fl.Validate(); err != nil {
			t.Fatalf("accepted fleet fails validation again: %v", err)
		}
		r := fl.Routing
		for _, d := range []Duration{r.QueueMaxWait, r.EjectBase, r.EjectMax, r.HealthCheckInterval} {
			if d <= 0 {
				t.Fatalf("accepted fleet has a non-positive duration %s", d.Std())
			}
		}
		if len(fl.Pools) == 0 || len(fl.Models) == 0 {
			t.Fatalf("accepted fleet with %d pools and %d models", len(fl.Pools), len(fl.Models))
		}
		for _, p := range fl.Pools {
			if p.Limits.MaxConcurrent <= 0 {
				t.Fatalf("pool %q accepted with max_concurrent %d", p.Name, p.Limits.MaxConcurrent)
			}
		}
	})
}
