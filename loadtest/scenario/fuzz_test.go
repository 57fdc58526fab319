package scenario

import (
	"strings"
	"testing"
)

// FuzzParse: any bytes as a scenario file give a scenario or errors that
// name the file, never a panic; an accepted scenario's steps are in time
// order with values in their documented ranges. Seeds:
// testdata/fuzz/FuzzParse (the shipped scenarios, broken ones).
func FuzzParse(f *testing.F) {
	f.Add([]byte("name: x\nsteps:\n  - {at: 1s, action: outage, pool: p}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		sc, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for i, s := range sc.Steps {
			if i > 0 && s.At < sc.Steps[i-1].At {
				t.Fatalf("steps out of order: %+v before %+v", sc.Steps[i-1], s)
			}
			if s.At < 0 || s.Fraction < 0 || s.Fraction > 1 || s.Rate < 0 || s.Rate > 1 || (s.Factor != 0 && s.Factor < 1) {
				t.Fatalf("step out of range accepted: %+v", s)
			}
		}
	})
}
