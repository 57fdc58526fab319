package priority

import (
	"testing"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

func TestNamesRoundTrip(t *testing.T) {
	var zero Class
	if zero != Standard {
		t.Fatal("the zero class is not standard")
	}
	for i, n := range Names {
		got, ok := Parse(n)
		if !ok || got != All[i] || got.Index() != i || got.String() != n {
			t.Fatalf("%s: parsed %v %v", n, got, ok)
		}
	}
	if _, ok := Parse("urgent"); ok {
		t.Fatal("parsed an unknown name")
	}
	if c, ok := Parse("BATCH"); !ok || c != Batch {
		t.Fatal("names are case-insensitive")
	}
	if Class(7).String() != "standard" || Class(-5).String() != "standard" {
		t.Fatal("out-of-range classes are standard")
	}
}

// TestWireMatchesTheProtoEnum holds FromWire and Wire to the generated enum:
// a renumbered switchyard.v1.Priority fails here.
func TestWireMatchesTheProtoEnum(t *testing.T) {
	for _, tc := range []struct {
		wire pb.Priority
		want Class
	}{
		{pb.Priority_PRIORITY_UNSPECIFIED, Standard},
		{pb.Priority_PRIORITY_INTERACTIVE, Interactive},
		{pb.Priority_PRIORITY_STANDARD, Standard},
		{pb.Priority_PRIORITY_BATCH, Batch},
		{pb.Priority(99), Standard},
	} {
		if got := FromWire(tc.wire); got != tc.want {
			t.Errorf("FromWire(%v) = %v, want %v", tc.wire, got, tc.want)
		}
	}
	for _, c := range All {
		if back := FromWire(pb.Priority(c.Wire())); back != c {
			t.Errorf("%v: Wire %d reads back as %v", c, c.Wire(), back)
		}
		if name := pb.Priority(c.Wire()).String(); name != "PRIORITY_"+map[Class]string{Interactive: "INTERACTIVE", Standard: "STANDARD", Batch: "BATCH"}[c] {
			t.Errorf("%v: Wire is %s", c, name)
		}
	}
}
