package dispatchtest_test

import (
	"context"
	"slices"
	"testing"

	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	dt "github.com/switchyard-dev/switchyard/router/dispatch/dispatchtest"
)

// The harness's own bookkeeping: the fleet gets the file's defaults, Full
// slots are expected and not leaks, a slot nobody gave back is, Reload swaps
// in a changed generation, Strata spreads its draws evenly.
func TestHarness(t *testing.T) {
	h := dt.New(t, dt.Options{Pools: []dt.Pool{{Name: "a", Full: true}, {Name: "b", Config: config.Pool{Region: "eu-west-1"}}}})
	g := h.D.Generation()
	if r := g.Fleet.Routing; r.MaxAttempts != 3 || r.QueueMaxLength != 1024 || r.QueueMaxWait.Std().Seconds() != 2 {
		t.Fatalf("routing %+v, want the fleet file's defaults", r)
	}
	if c := h.Pool("b").Config(); c.Geography != "eu" || c.Limits.MaxConcurrent != 8 || h.Pool("a").Config().Limits.MaxConcurrent != 1 {
		t.Fatalf("pool configs %+v, %+v", *h.Pool("a").Config(), *c)
	}
	if leaks := h.Leaks(); len(leaks) != 0 {
		t.Fatalf("a fresh harness leaks %v", leaks)
	}
	if res := h.Call(context.Background(), dt.Call{}); res.Err != nil || res.Route.Pool != "b" || res.Text != "b0 " {
		t.Fatalf("call: %+v, want b's one-token answer (a is full)", res)
	}
	if _, err := h.Memory.Acquire(context.Background(), capacity.Reservation{ID: "x", Pool: "b", Limits: capacity.Limits{MaxConcurrent: 8}}); err != nil {
		t.Fatal(err)
	}
	if leaks := h.Leaks(); !slices.Equal(leaks, []string{"b: store has 1 in flight, want 0"}) {
		t.Fatalf("leaks %v, want b's extra slot", leaks)
	}
	h.Reload(func(f *config.Fleet) { f.Routing.QueueMaxLength = 5 })
	if h.D.QueueLimit() != 5 || h.D.Generation() == g {
		t.Fatalf("after Reload: queue limit %d", h.D.QueueLimit())
	}
	var draws []float64
	r := dt.Strata(4)
	for range 5 {
		draws = append(draws, r())
	}
	if !slices.Equal(draws, []float64{0.125, 0.375, 0.625, 0.875, 0.125}) {
		t.Fatalf("Strata(4) drew %v", draws)
	}
}
