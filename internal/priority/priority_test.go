package priority

import (
	"testing"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

func TestNamesRoundTrip(t *testing.T) {
	for c, n := range Names {
		p, ok := Parse(n)
		if !ok || Class(p) != c || Name(p) != n {
			t.Fatalf("%s: parsed %v %v, class %d", n, p, ok, Class(p))
		}
	}
	if Name(pb.Priority_PRIORITY_UNSPECIFIED) != "standard" || Name(pb.Priority(99)) != "standard" {
		t.Fatal("unspecified and unknown priorities are standard")
	}
	if _, ok := Parse("urgent"); ok {
		t.Fatal("parsed an unknown name")
	}
	if p, ok := Parse("BATCH"); !ok || p != pb.Priority_PRIORITY_BATCH {
		t.Fatal("names are case-insensitive")
	}
}
