package backends

import "testing"

func TestLoadRoundTrip(t *testing.T) {
	l := Load{Running: 6, Queued: 40, Capacity: 6}
	got, err := ParseLoad(FormatLoad(l))
	if err != nil || got.Running != 6 || got.Queued != 40 || got.Capacity != 6 {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if got, err := ParseLoad("running=1;future=9;capacity=4"); err != nil || got.Capacity != 4 {
		t.Fatalf("unknown keys must be ignored: %+v %v", got, err)
	}
	for _, bad := range []string{"", "running", "running=x", "running=-1", "other=3"} {
		if _, err := ParseLoad(bad); err == nil {
			t.Errorf("ParseLoad(%q) accepted", bad)
		}
	}
}

func TestDeltaTokens(t *testing.T) {
	for n, want := range map[int]int32{0: 1, 1: 1, 64: 1, 65: 2, 128: 2, 129: 3, 1 << 20: 16384} {
		if got := DeltaTokens(n); got != want {
			t.Errorf("DeltaTokens(%d) = %d, want %d", n, got, want)
		}
	}
}
