package router

import (
	"strings"
	"testing"
)

func TestCallerRegionLabelsAreBounded(t *testing.T) {
	cr := newCallerRegions([]string{"us-east-1", "eu-west-1", "us-east-1", "", "moon-base-1"})
	cases := []struct {
		caller, want string
	}{
		{"us-east-1", "us-east-1"},
		{"eu-west-1", "eu-west-1"},
		{"moon-base-1", "moon-base-1"}, // a declared extra region
		{"", regionUnknown},
		{"ap-south-2", regionOther}, // a real region the fleet does not know
		{"US-EAST-1", regionOther},  // names are exact
		{strings.Repeat("x", 10000), regionOther},
		{"unknown", regionOther}, // a caller cannot pick the special values
		{"other", regionOther},
	}
	for _, c := range cases {
		if got := cr.of(c.caller).name; got != c.want {
			t.Errorf("caller region %.20q: label %q, want %q", c.caller, got, c.want)
		}
	}
	if len(cr.known) != 3 {
		t.Errorf("%d known regions, want 3 (duplicates and empty names dropped)", len(cr.known))
	}
}
