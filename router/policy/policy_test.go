package policy

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/geo"
	"github.com/switchyard-dev/switchyard/internal/priority"
)

func env(t testing.TB) *Env {
	lat, err := geo.NewTable(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	return &Env{
		Latency:             lat,
		Reserve:             map[priority.Class]float64{priority.Interactive: 0.05, priority.Standard: 0.10, priority.Batch: 0.25},
		LatencyBudgetMillis: 60,
		Rand:                r.Float64,
	}
}

func pv(name, region, geo string, limit, inflight int) PoolView {
	return PoolView{Name: name, Cloud: strings.SplitN(name, "-", 2)[0], Region: region, Geography: geo, Accelerator: "h100", Models: []string{"m"}, Limit: limit, InFlight: inflight, Weight: 1, CostPerMillion: 1}
}

func fleet() []PoolView {
	return []PoolView{
		pv("aws-use1", "us-east-1", "us", 10, 0),
		pv("gcp-use4", "us-east4", "us", 10, 0),
		pv("gcp-usw1", "us-west1", "us", 10, 0),
		pv("azure-weu", "westeurope", "eu", 10, 0),
		pv("aws-euw1", "eu-west-1", "eu", 10, 0),
	}
}

func names(cs []Candidate) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Pool
	}
	return out
}

func TestFilterHardRules(t *testing.T) {
	pools := fleet()
	pools[1].Drained = true
	pools[2].Ejected = true
	pools[3].Models = []string{"other"}
	pools[4].Unhealthy = true
	want := map[string]string{"gcp-use4": "drained", "gcp-usw1": "ejected", "azure-weu": "does not serve", "aws-euw1": "health"}
	for _, explain := range []bool{false, true} {
		req := &Request{Model: "m", Explain: explain}
		el, sk := Filter(req, pools, env(t))
		if got := names(el); len(got) != 1 || got[0] != "aws-use1" {
			t.Fatalf("eligible %v, want [aws-use1]", got)
		}
		for _, c := range sk {
			if explain != (c.Reason != "") {
				t.Errorf("explain=%v: reason %q", explain, c.Reason)
			}
			if got := c.Describe(req); !strings.Contains(got, want[c.Pool]) {
				t.Errorf("%s skipped for %q, want reason with %q", c.Pool, got, want[c.Pool])
			}
		}
	}
}

func TestResidencyNeverLeavesTheGeography(t *testing.T) {
	for _, pol := range []Policy{&Switchyard{}, &RoundRobin{}, Random{}, LeastRequest{}} {
		t.Run(pol.Name(), func(t *testing.T) {
			e := env(t)
			for i := 0; i < 200; i++ {
				d := Decide(pol, &Request{Model: "m", Residency: "eu", CallerRegion: "us-east-1"}, fleet(), e)
				for _, c := range d.Ranked {
					if c.Pool != "azure-weu" && c.Pool != "aws-euw1" {
						t.Fatalf("EU request ranked %s", c.Pool)
					}
				}
				if len(d.Ranked) != 2 {
					t.Fatalf("ranked %v", names(d.Ranked))
				}
			}
		})
	}
}

func TestAffinityTiers(t *testing.T) {
	e := env(t)
	for i := 0; i < 100; i++ {
		d := Decide(&Switchyard{}, &Request{Model: "m", CallerRegion: "us-east-1"}, fleet(), e)
		got := names(d.Ranked)
		if got[0] != "aws-use1" {
			t.Fatalf("first %s, want the caller's region", got[0])
		}
		us := map[string]bool{got[1]: true, got[2]: true}
		if !us["gcp-use4"] || !us["gcp-usw1"] {
			t.Fatalf("ranking %v: same geography must come before other geographies", got)
		}
	}
	// Nearer pools in the same geography win more often (us-east4 is ~5ms from us-east-1, us-west1 ~60ms).
	near := 0
	for i := 0; i < 1000; i++ {
		if names(Decide(&Switchyard{}, &Request{Model: "m", CallerRegion: "us-east-1"}, fleet(), e).Ranked)[1] == "gcp-use4" {
			near++
		}
	}
	if near < 550 {
		t.Fatalf("nearer pool second in %d/1000 decisions, want a clear majority", near)
	}
}

func TestSpillWhenTierIsUnderItsReserve(t *testing.T) {
	e := env(t)
	pools := fleet()
	pools[0].InFlight = 9 // us-east-1 has 1 of 10 free: 10% <= standard reserve 10%, > interactive 5%
	inter := Decide(&Switchyard{}, &Request{Model: "m", CallerRegion: "us-east-1", Priority: priority.Interactive}, pools, e)
	if inter.Ranked[0].Pool != "aws-use1" {
		t.Fatalf("interactive: first %s, want aws-use1 (its reserve is smaller)", inter.Ranked[0].Pool)
	}
	batch := Decide(&Switchyard{}, &Request{Model: "m", CallerRegion: "us-east-1", Priority: priority.Batch, Explain: true}, pools, e)
	got := names(batch.Ranked)
	if got[len(got)-1] != "aws-use1" || !strings.Contains(batch.Ranked[len(got)-1].Reason, "spilled") {
		t.Fatalf("batch ranking %v: the nearly full region must be spilled last", got)
	}
}

func TestWeightsShiftTraffic(t *testing.T) {
	e := env(t)
	pools := []PoolView{pv("aws-a", "us-east-1", "us", 10, 0), pv("aws-b", "us-east-1", "us", 10, 0)}
	pools[1].Weight = 3
	firstB := 0
	const n = 4000
	for i := 0; i < n; i++ {
		if Decide(&Switchyard{}, &Request{Model: "m", CallerRegion: "us-east-1"}, pools, e).Ranked[0].Pool == "aws-b" {
			firstB++
		}
	}
	// Weight 3 vs 1: b first about 75% of the time.
	if share := float64(firstB) / n; share < 0.70 || share > 0.80 {
		t.Fatalf("weight-3 pool first in %.2f of decisions, want ~0.75", share)
	}
	pools[1].Weight = 0
	for i := 0; i < 100; i++ {
		if Decide(&Switchyard{}, &Request{Model: "m", CallerRegion: "us-east-1"}, pools, e).Ranked[0].Pool != "aws-a" {
			t.Fatal("weight-0 pool ranked first while another has headroom")
		}
	}
}

func TestHeadroomDecides(t *testing.T) {
	e := env(t)
	pools := []PoolView{pv("aws-a", "us-east-1", "us", 10, 10), pv("aws-b", "us-east-1", "us", 10, 2)}
	for i := 0; i < 100; i++ {
		if got := names(Decide(&Switchyard{}, &Request{Model: "m"}, pools, e).Ranked); got[0] != "aws-b" || got[1] != "aws-a" {
			t.Fatalf("ranking %v: a full pool must come after one with headroom", got)
		}
	}
}

func TestCostObjective(t *testing.T) {
	e := env(t)
	e.CostWeight = 1
	pools := []PoolView{pv("aws-a", "us-east-1", "us", 10, 0), pv("aws-b", "us-east-1", "us", 10, 0)}
	pools[0].CostPerMillion, pools[1].CostPerMillion = 2.0, 0.5
	cheap := 0
	for i := 0; i < 1000; i++ {
		if Decide(&Switchyard{}, &Request{Model: "m", CallerRegion: "us-east-1"}, pools, e).Ranked[0].Pool == "aws-b" {
			cheap++
		}
	}
	if cheap < 900 {
		t.Fatalf("cheaper pool first %d/1000 with cost_weight 1", cheap)
	}
}

func TestBaselinesArePermutations(t *testing.T) {
	e := env(t)
	for _, pol := range []Policy{&Switchyard{}, &RoundRobin{}, Random{}, LeastRequest{}} {
		pools := fleet()
		pools[2].InFlight = 7
		d := Decide(pol, &Request{Model: "m"}, pools, e)
		seen := map[string]bool{}
		for _, c := range d.Ranked {
			seen[c.Pool] = true
		}
		if len(d.Ranked) != 5 || len(seen) != 5 {
			t.Fatalf("%s ranked %v", pol.Name(), names(d.Ranked))
		}
	}
	rr := &RoundRobin{}
	firsts := map[string]int{}
	for i := 0; i < 50; i++ {
		firsts[Decide(rr, &Request{Model: "m"}, fleet(), e).Ranked[0].Pool]++
	}
	for _, n := range firsts {
		if n != 10 {
			t.Fatalf("round robin firsts %v, want 10 each", firsts)
		}
	}
	pools := fleet()
	for i := range pools {
		pools[i].InFlight = 5
	}
	pools[3].InFlight = 0
	lr := 0
	for i := 0; i < 1000; i++ {
		if Decide(LeastRequest{}, &Request{Model: "m"}, pools, e).Ranked[0].Pool == "azure-weu" {
			lr++
		}
	}
	// P2C picks the idle pool whenever it is one of the two choices: 2/5 of the time.
	if lr < 330 || lr > 470 {
		t.Fatalf("least_request chose the idle pool %d/1000, want ~400", lr)
	}
}

func TestRegistry(t *testing.T) {
	r := Builtins()
	for _, n := range []string{"switchyard", "round_robin", "random", "least_request"} {
		if _, err := r.Get(n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Get("nope"); err == nil || !strings.Contains(err.Error(), "round_robin") {
		t.Fatalf("unknown policy error %v should list the known ones", err)
	}
}

// BenchmarkDecide measures one routing decision (filter + rank) over fleets of
// 10, 100 and 1000 pools, with the baselines alongside for comparison.
func BenchmarkDecide(b *testing.B) {
	regions := []struct{ name, geo string }{{"us-east-1", "us"}, {"us-west-2", "us"}, {"us-central1", "us"}, {"eastus", "us"}, {"westeurope", "eu"}, {"europe-west4", "eu"}, {"eu-west-1", "eu"}}
	for _, n := range []int{10, 100, 1000} {
		pools := make([]PoolView, n)
		for i := range pools {
			r := regions[i%len(regions)]
			pools[i] = pv(fmt.Sprintf("aws-p%d", i), r.name, r.geo, 64, i%64)
		}
		// trained: the default policy once every pool has taught it its
		// speed, for a call with a deadline: every candidate costs a
		// completion prediction.
		trained := &Switchyard{}
		for i := range pools {
			teachAt(trained, pools[i].Name, simPrefill(20_000), simDecode(10*time.Millisecond, 64), 100, 0.3, 0.6)
		}
		for _, pol := range []Policy{&Switchyard{}, trained, LeastRequest{}, &RoundRobin{}} {
			name := pol.Name()
			if pol == trained {
				name += "-trained"
			}
			b.Run(fmt.Sprintf("%s/pools=%d", name, n), func(b *testing.B) {
				e := env(b)
				req := &Request{Model: "m", CallerRegion: "us-east-1", Priority: priority.Interactive}
				if pol == trained { // a call with a deadline, as the load tester sends
					req.InputTokens, req.MaxTokens, req.Deadline = 1500, 200, 10*time.Second
				}
				// The router's hot path: one Decision reused across calls,
				// the first candidate taken.
				var d Decision
				b.ReportAllocs()
				for b.Loop() {
					DecideInto(&d, pol, req, pools, e)
					if d.Next() == nil {
						b.Fatal("no candidates")
					}
				}
			})
		}
	}
}

func TestLoadReportSteersAwayFromAPoolThatLostChips(t *testing.T) {
	e := env(t)
	pools := []PoolView{pv("aws-a", "us-east-1", "us", 64, 6), pv("aws-b", "us-east-1", "us", 64, 6)}
	// a lost 90% of its chips: it can run 6 and has 30 queued.
	pools[0].Reported = &Reported{Running: 6, Queued: 30, Capacity: 6}
	pools[1].Reported = &Reported{Running: 6, Queued: 0, Capacity: 64}
	if f := pools[0].EffectiveFree(); f != 0 {
		t.Fatalf("free fraction of the shrunk pool %v, want 0", f)
	}
	for i := 0; i < 100; i++ {
		d := Decide(&Switchyard{}, &Request{Model: "m", CallerRegion: "us-east-1", Explain: true}, pools, e)
		if d.Ranked[0].Pool != "aws-b" {
			t.Fatalf("ranked %v first: the pool that reports a queue must come last", d.Ranked[0].Pool)
		}
		if !strings.Contains(d.Ranked[1].Reason, "capacity 6") {
			t.Fatalf("reason %q does not mention the load report", d.Ranked[1].Reason)
		}
	}
}

func TestRegionThatLostChipsSpills(t *testing.T) {
	e := env(t)
	pools := fleet()
	// us-east-1 can run 6 of its 10 and has 6 running plus a queue.
	pools[0].InFlight = 6
	pools[0].Reported = &Reported{Running: 6, Queued: 3, Capacity: 6}
	for i := 0; i < 50; i++ {
		got := names(Decide(&Switchyard{}, &Request{Model: "m", CallerRegion: "us-east-1", Priority: priority.Interactive}, pools, e).Ranked)
		if got[0] == "aws-use1" || got[len(got)-1] != "aws-use1" {
			t.Fatalf("ranking %v: the region that reports no room must spill behind every other tier", got)
		}
	}
}

func TestAdvisedLimitFollowsReportedCapacity(t *testing.T) {
	p := pv("aws-a", "us-east-1", "us", 64, 0)
	sy := &Switchyard{}
	if got := sy.AdvisedLimit(&p); got != 64 {
		t.Fatalf("no report: %d, want the configured 64", got)
	}
	p.Reported = &Reported{Capacity: 8}
	if got := sy.AdvisedLimit(&p); got != 10 {
		t.Fatalf("reported capacity 8: advised %d, want 8 plus a quarter = 10", got)
	}
	p.Reported = &Reported{Capacity: 0}
	if got := sy.AdvisedLimit(&p); got != 0 {
		t.Fatalf("reported capacity 0: advised %d", got)
	}
	p.Reported = &Reported{Capacity: 128}
	if got := sy.AdvisedLimit(&p); got != 64 {
		t.Fatalf("reported capacity above the limit: advised %d, want 64", got)
	}
	var _ LimitAdvisor = sy
	if _, ok := Policy(LeastRequest{}).(LimitAdvisor); ok {
		t.Fatal("baselines must not advise limits: they model gateways that ignore load reports")
	}
}

func TestProgressiveSpill(t *testing.T) {
	e := env(t)
	e.SpillBand = 0.3
	pools := fleet()
	// us-east-1 is 75% busy: free 25%, standard reserve 10%, band 30%:
	// the region keeps (0.25-0.10)/0.30 = half of the calls.
	pools[0].InFlight = 75
	pools[0].Limit = 100
	first := 0
	const n = 4000
	for i := 0; i < n; i++ {
		if Decide(&Switchyard{}, &Request{Model: "m", CallerRegion: "us-east-1"}, pools, e).Ranked[0].Pool == "aws-use1" {
			first++
		}
	}
	if share := float64(first) / n; share < 0.45 || share > 0.55 {
		t.Fatalf("region first in %.2f of calls, want ~0.50", share)
	}
	// An idle region keeps every call; batch with its 25% reserve keeps none at 25% free.
	pools[0].InFlight = 0
	for i := 0; i < 200; i++ {
		if Decide(&Switchyard{}, &Request{Model: "m", CallerRegion: "us-east-1"}, pools, e).Ranked[0].Pool != "aws-use1" {
			t.Fatal("an idle region spilled")
		}
	}
	pools[0].InFlight = 75
	for i := 0; i < 200; i++ {
		if Decide(&Switchyard{}, &Request{Model: "m", CallerRegion: "us-east-1", Priority: priority.Batch}, pools, e).Ranked[0].Pool == "aws-use1" {
			t.Fatal("batch kept a region at its reserve")
		}
	}
}
