package capacity_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/capacity/capacitytest"
	"github.com/switchyard-dev/switchyard/router/capacity/redistest"
)

// newLeased builds a Leased store over one home, closed by t.Cleanup.
func newLeased(t testing.TB, home capacity.BlockStore, clk clock.Clock, mod func(*capacity.LeasedOptions)) *capacity.Leased {
	t.Helper()
	o := capacity.LeasedOptions{Homes: map[string]capacity.BlockStore{"home": home}, Clock: clk}
	if home == nil {
		o.Homes = nil // mod sets them
	}
	if mod != nil {
		mod(&o)
	}
	l, err := capacity.NewLeased(o)
	if err != nil {
		t.Fatalf("new leased store: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// newRedisBlocks builds a RedisBlocks store with its own key prefix on url,
// established (no learning mode at first use) unless fresh.
func newRedisBlocks(t testing.TB, srv *redistest.Server, url string, fresh bool) (*capacity.RedisBlocks, string) {
	t.Helper()
	prefix := fmt.Sprintf("b%d", prefixSeq.Add(1))
	if !fresh {
		if err := redistest.Establish(srv.Addr(), prefix); err != nil {
			t.Fatal(err)
		}
	}
	s, err := capacity.NewRedisBlocks(capacity.RedisBlocksOptions{URL: url, KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s, prefix
}

// passTime advances the fake clock by d in steps of step, refreshing every
// replica after each step as their background loops would.
func passTime(clk *clock.Fake, d, step time.Duration, reps ...*capacity.Leased) {
	for d > 0 {
		s := min(step, d)
		clk.Advance(s)
		d -= s
		for _, r := range reps {
			r.RefreshNow(context.Background())
		}
	}
}

func TestLeasedContractOnMemoryBlocks(t *testing.T) {
	capacitytest.Run(t, func(t *testing.T, clk clock.Clock) capacity.Store {
		return newLeased(t, capacity.NewMemoryBlocks(true), clk, nil)
	})
}

func TestLeasedContractOnRedis(t *testing.T) {
	srv := redistest.StartServer(t)
	capacitytest.Run(t, func(t *testing.T, clk clock.Clock) capacity.Store {
		home, _ := newRedisBlocks(t, srv, srv.URL(), false)
		return newLeased(t, home, clk, nil)
	})
}

// On a Redis Cluster each pool has its own epoch in its own slot: a pool's
// first use on a new cluster runs one lease of learning mode, then blocks
// are granted as on one node, and two replicas never exceed the limit.
func TestLeasedOnRedisClusterLearnsThenGrants(t *testing.T) {
	cl := redistest.StartCluster(t)
	clk := clock.NewFake(capacitytest.Start)
	ttl := 2 * time.Second
	mk := func() *capacity.Leased {
		home, err := capacity.NewRedisBlocks(capacity.RedisBlocksOptions{URL: cl.URL(), KeyPrefix: fmt.Sprintf("c%d", prefixSeq.Add(1))})
		if err != nil {
			t.Fatal(err)
		}
		return newLeased(t, home, clk, func(o *capacity.LeasedOptions) {
			o.LeaseTTL, o.LeaseMargin, o.Timeout, o.NoLoop = ttl, 200*time.Millisecond, time.Second, true
		})
	}
	a := mk()
	lim := capacity.Limits{MaxConcurrent: 3}
	ctx := context.Background()
	if _, err := a.Acquire(ctx, capacity.Reservation{ID: "r0", Pool: "cl-pool", Limits: lim}); !errors.Is(err, capacity.ErrPoolFull) {
		t.Fatalf("first use of a pool on a new cluster: %v, want ErrPoolFull (learning mode)", err)
	}
	for i := 0; i < 5; i++ { // time passes, refreshed as the loop would
		clk.Advance(ttl / 4)
		a.RefreshNow(ctx)
	}
	held := 0
	for i := 0; i < 5; i++ {
		if _, err := a.Acquire(ctx, capacity.Reservation{ID: fmt.Sprintf("a%d", i), Pool: "cl-pool", Limits: lim}); err == nil {
			held++
		}
	}
	if held != 3 {
		t.Fatalf("after learning: %d of 5 admitted with a limit of 3, want 3", held)
	}
}

// The scripts and MemoryBlocks apply the same rules: random refreshes from
// several replicas, sent to both, get the same answers.
func TestBlockScriptsAgreeWithMemoryBlocks(t *testing.T) {
	srv := redistest.StartServer(t)
	for _, fresh := range []bool{false, true} {
		t.Run(fmt.Sprintf("fresh=%v", fresh), func(t *testing.T) {
			redisHome, _ := newRedisBlocks(t, srv, srv.URL(), fresh)
			defer redisHome.Close()
			mem := capacity.NewMemoryBlocks(!fresh)
			rng := rand.New(rand.NewSource(7))
			now := capacitytest.Start
			replicas := []string{"r0", "r1", "r2", "r3"}
			seq := map[string]int64{}
			granted := map[string]int64{} // replica+pool -> its last grant: Keep never exceeds it while the lease lasts
			grantedAt := map[string]time.Time{}
			ctx := context.Background()
			for step := 0; step < 400; step++ {
				now = now.Add(time.Duration(rng.Intn(900)) * time.Millisecond)
				rep := replicas[rng.Intn(len(replicas))]
				req := capacity.BlockRefresh{Replica: rep, Now: now, TTL: 3 * time.Second}
				for _, pool := range []string{"p1", "p2"} {
					if rng.Intn(3) == 0 {
						continue
					}
					seq[rep+pool]++
					var keep int64
					if now.Before(grantedAt[rep+pool].Add(3*time.Second - 300*time.Millisecond)) {
						keep = rng.Int63n(granted[rep+pool] + 1)
					}
					q := capacity.BlockRequest{Pool: pool, Capacity: 10, Keep: keep, Want: keep + int64(rng.Intn(8)), Seq: seq[rep+pool], InUse: keep, Requests: int64(rng.Intn(5))}
					if pool == "p2" {
						q.Window = capacity.Allowance{RPM: 50, TPM: 2000, NeedRequests: int64(rng.Intn(2)), WantRequests: int64(rng.Intn(6)), NeedTokens: int64(rng.Intn(100)), WantTokens: int64(rng.Intn(400))}
						q.Window.WantRequests = max(q.Window.WantRequests, q.Window.NeedRequests)
						q.Window.WantTokens = max(q.Window.WantTokens, q.Window.NeedTokens)
					}
					req.Pools = append(req.Pools, q)
				}
				if rng.Intn(2) == 0 {
					req.Tenants = []capacity.TenantRequest{{Tenant: "t1", Window: capacity.Allowance{RPM: 20, NeedRequests: 1, WantRequests: 1 + int64(rng.Intn(3))}}}
				}
				got, err := redisHome.Refresh(ctx, req)
				if err != nil {
					t.Fatalf("step %d: redis: %v", step, err)
				}
				want, err := mem.Refresh(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got.Pools, got.Tenants) != fmt.Sprint(want.Pools, want.Tenants) {
					t.Fatalf("step %d (%s at %s): redis answered\n  %+v %+v\nmemory answered\n  %+v %+v", step, rep, now.Format(time.StampMilli), got.Pools, got.Tenants, want.Pools, want.Tenants)
				}
				for i, q := range req.Pools {
					granted[rep+q.Pool], grantedAt[rep+q.Pool] = got.Pools[i].Granted, now
				}
				for _, pool := range []string{"p1", "p2"} {
					if sum := mem.GrantedSum(pool, now); sum > 10 {
						t.Fatalf("step %d: blocks of %s add up to %d > 10", step, pool, sum)
					}
				}
			}
		})
	}
}

func TestProportionalShare(t *testing.T) {
	for _, c := range []struct {
		capacity int64
		wants    []int64
		want     int64
	}{
		{10, []int64{4, 3}, 4},            // fits: wants
		{10, []int64{8, 8}, 5},            // equal split
		{10, []int64{2, 20}, 2},           // under the equal share: wants
		{10, []int64{20, 2}, 8},           // the rest of the capacity
		{12, []int64{10, 10, 1}, 6},       // 1 takes 1; 11 split 5.5 each, rounded up
		{10, []int64{9, 3, 3}, 4},         // equal 3.33: 3 and 3 take theirs, 9 gets the 4 left
		{10, []int64{0, 5}, 0},            // wants nothing
		{4, []int64{1, 1, 1, 1, 1, 1}, 1}, // more holders than slots: each rounded up, free capacity caps
		{100, []int64{90, 10, 30, 0}, 60}, // equal 33.3: 10 and 30 take theirs, 90 gets the 60 left
		{100, []int64{90, 90, 10}, 45},    // equal 33.3: 10 takes its; 90 and 90 split 90 over their extra
	} {
		if got := capacity.ProportionalShare(c.capacity, c.wants, 0); got != c.want {
			t.Errorf("ProportionalShare(%d, %v) = %d, want %d", c.capacity, c.wants, got, c.want)
		}
	}
	// The shares never add up to more than the capacity by more than the
	// rounding (one slot per holder).
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 2000; i++ {
		n := 1 + rng.Intn(6)
		wants := make([]int64, n)
		for j := range wants {
			wants[j] = int64(rng.Intn(30))
		}
		c := int64(1 + rng.Intn(40))
		var sum int64
		for j := range wants {
			w := wants
			w[0], w[j] = w[j], w[0]
			sum += capacity.ProportionalShare(c, w, 0)
			w[0], w[j] = w[j], w[0]
		}
		if sum > c+int64(n) {
			t.Fatalf("shares of %v in %d add up to %d", wants, c, sum)
		}
	}
}

// The model test: random sequences of acquire, release, background refresh,
// clock advance, replica death, store restart and outage, over several
// replicas on the fake clock, never put more calls in a pool than its
// limit, and every slot comes back in the end.
func TestLeasedModelNeverOverALimit(t *testing.T) {
	for seed := int64(1); seed <= 40; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runModel(t, seed) })
	}
}

type modelReplica struct {
	l     *capacity.Leased
	held  []capacity.Lease
	alive bool
}

func runModel(t *testing.T, seed int64) {
	const limit = 6
	ttl, margin, refresh := 3*time.Second, 300*time.Millisecond, 250*time.Millisecond
	rng := rand.New(rand.NewSource(seed))
	clk := clock.NewFake(capacitytest.Start)
	store := capacity.NewMemoryBlocks(true)
	ctx := context.Background()
	lim := capacity.Limits{MaxConcurrent: limit}
	mk := func() *modelReplica {
		l, err := capacity.NewLeased(capacity.LeasedOptions{Homes: map[string]capacity.BlockStore{"h": store}, Clock: clk,
			LeaseTTL: ttl, LeaseMargin: margin, RefreshEvery: refresh, Timeout: time.Second, NoLoop: true})
		if err != nil {
			t.Fatal(err)
		}
		return &modelReplica{l: l, alive: true}
	}
	reps := []*modelReplica{mk(), mk(), mk()}
	t.Cleanup(func() {
		for _, r := range reps {
			if r.alive {
				_ = r.l.Close()
			} else {
				r.l.Abandon()
			}
		}
	})
	inUse := func() int {
		n := 0
		for _, r := range reps {
			if r.alive {
				n += len(r.held)
			}
		}
		return n
	}
	id := 0
	admitted := 0
	var trace []string
	for step := 0; step < 1500; step++ {
		ri := rng.Intn(len(reps))
		r := reps[ri]
		op := rng.Intn(100)
		trace = append(trace, fmt.Sprintf("step %d: replica %d (alive %v, held %d) op %d at %s", step, ri, r.alive, len(r.held), op, clk.Now().Format("04:05.000")))
		if len(trace) > 40 {
			trace = trace[1:]
		}
		switch {
		case op < 45 && r.alive:
			id++
			l, err := r.l.Acquire(ctx, capacity.Reservation{ID: fmt.Sprint(id), Pool: "p", Limits: lim})

			if err == nil {
				r.held = append(r.held, l)
				admitted++
			} else if !errors.Is(err, capacity.ErrPoolFull) {
				t.Fatalf("step %d: acquire: %v", step, err)
			}
		case op < 75 && r.alive && len(r.held) > 0:
			i := rng.Intn(len(r.held))
			r.l.Release(r.held[i], 0)
			r.held = append(r.held[:i], r.held[i+1:]...)
		case op < 88 && r.alive:
			r.l.RefreshNow(ctx)
		case op < 95:
			// Time passes; every live replica's loop refreshes each period.
			for n := rng.Intn(5); n > 0; n-- {
				clk.Advance(refresh)
				for _, r := range reps {
					if r.alive {
						r.l.RefreshNow(ctx)
					}
				}
			}
		case op < 96 && r.alive:
			// kill -9: its calls die with it, its blocks are left to expire.
			r.l.Abandon()
			r.alive, r.held = false, nil
			reps = append(reps, mk())
		case op < 97:
			store.Restart()
		case op < 99:
			store.SetDown(true)
		default:
			store.SetDown(false)
		}
		var usable int64
		for _, r := range reps {
			if r.alive {
				for _, b := range r.l.Blocks().Pools {
					usable += b.Granted
				}
			}
		}
		if usable > limit {
			for _, line := range trace {
				t.Log(line)
			}
			t.Fatalf("step %d: blocks of live replicas add up to %d", step, usable)
		}
		if n := inUse(); n > limit {
			t.Fatalf("step %d: %d calls in flight in a pool limited to %d", step, n, limit)
		}
		if n := store.GrantedSum("p", clk.Now()); n > limit {
			for _, line := range trace {
				t.Log(line)
			}
			for i, r := range reps {
				t.Logf("replica %d alive %v held %d blocks %+v", i, r.alive, len(r.held), r.l.Blocks().Pools)
			}
			// After a restart the store only holds what replicas re-assert,
			// which never exceeds what they held.
			t.Fatalf("step %d: the store granted %d slots of %d", step, n, limit)
		}
	}
	if admitted == 0 {
		t.Fatal("no call was ever admitted")
	}
	// Every slot comes back: release everything, let the leases and demand
	// windows pass, and one replica can take the whole limit.
	store.SetDown(false)
	for _, r := range reps {
		if r.alive {
			for _, l := range r.held {
				r.l.Release(l, 0)
			}
			r.held = nil
		}
	}
	var alive []*capacity.Leased
	for _, r := range reps {
		if r.alive {
			alive = append(alive, r.l)
		}
	}
	passTime(clk, 3*ttl, refresh, alive...)
	var last *modelReplica
	for _, r := range reps {
		if r.alive {
			last = r
		}
	}
	got := 0
	for i := 0; i < limit+2; i++ {
		if _, err := last.l.Acquire(ctx, capacity.Reservation{ID: fmt.Sprint("end", i), Pool: "p", Limits: lim}); err == nil {
			got++
		}
	}
	if got != limit {
		t.Fatalf("after everything was released, one replica got %d slots of %d", got, limit)
	}
}

// A store restarted empty grants nothing new for one lease (learning mode):
// the replica holding the whole limit re-asserts it and another replica
// gets nothing until that holder gives slots back.
func TestLeasedLearningModeAfterAnEmptyRestart(t *testing.T) {
	clk := clock.NewFake(capacitytest.Start)
	store := capacity.NewMemoryBlocks(true)
	opts := func(o *capacity.LeasedOptions) {
		o.LeaseTTL, o.LeaseMargin, o.NoLoop = 4*time.Second, 500*time.Millisecond, true
	}
	a, b := newLeased(t, store, clk, opts), newLeased(t, store, clk, opts)
	ctx := context.Background()
	lim := capacity.Limits{MaxConcurrent: 3}
	var held []capacity.Lease
	for i := 0; i < 3; i++ {
		l, err := a.Acquire(ctx, capacity.Reservation{ID: fmt.Sprint(i), Pool: "p", Limits: lim})
		if err != nil {
			t.Fatalf("a acquire %d: %v", i, err)
		}
		held = append(held, l)
	}
	store.Restart()
	// b asks first: the store knows nothing of a's block but is learning.
	if _, err := b.Acquire(ctx, capacity.Reservation{ID: "b", Pool: "p", Limits: lim}); !errors.Is(err, capacity.ErrPoolFull) {
		t.Fatalf("b right after the restart: %v, want ErrPoolFull (learning mode)", err)
	}
	a.RefreshNow(ctx)                                                // a re-asserts its 3
	passTime(clk, 4*time.Second+time.Millisecond, time.Second, a, b) // learning is over
	if _, err := b.Acquire(ctx, capacity.Reservation{ID: "b2", Pool: "p", Limits: lim}); !errors.Is(err, capacity.ErrPoolFull) {
		t.Fatalf("b after learning while a still holds the limit: %v, want ErrPoolFull", err)
	}
	a.Release(held[0], 0)
	passTime(clk, 3*time.Second, time.Second, a, b) // a's demand window passes: it wants less
	if _, err := b.Acquire(ctx, capacity.Reservation{ID: "b3", Pool: "p", Limits: lim}); err != nil {
		t.Fatalf("b after a gave a slot back: %v", err)
	}
}

// A dead replica's blocks come back at the lease's end, and no sooner.
func TestLeasedDeadReplicaBlocksComeBackAtTTL(t *testing.T) {
	clk := clock.NewFake(capacitytest.Start)
	store := capacity.NewMemoryBlocks(true)
	opts := func(o *capacity.LeasedOptions) {
		o.LeaseTTL, o.LeaseMargin, o.NoLoop = 5*time.Second, 500*time.Millisecond, true
	}
	a, b := newLeased(t, store, clk, opts), newLeased(t, store, clk, opts)
	ctx := context.Background()
	lim := capacity.Limits{MaxConcurrent: 4}
	if _, err := b.Usage(ctx, []string{"p"}); err != nil { // b follows the pool, as every router replica does
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if _, err := a.Acquire(ctx, capacity.Reservation{ID: fmt.Sprint(i), Pool: "p", Limits: lim}); err != nil {
			t.Fatal(err)
		}
	}
	a.Abandon()
	passTime(clk, 4*time.Second, time.Second, b)
	if _, err := b.Acquire(ctx, capacity.Reservation{ID: "early", Pool: "p", Limits: lim}); !errors.Is(err, capacity.ErrPoolFull) {
		t.Fatalf("4s after the holder died (lease 5s): %v, want ErrPoolFull", err)
	}
	passTime(clk, time.Second+time.Millisecond, time.Second, b)
	for i := 0; i < 4; i++ {
		if _, err := b.Acquire(ctx, capacity.Reservation{ID: fmt.Sprint("late", i), Pool: "p", Limits: lim}); err != nil {
			t.Fatalf("after the lease ended, slot %d: %v", i, err)
		}
	}
}

// A store unreachable for longer than a block lives: the replica counts on
// a conservative local share (degraded), and says so; when the store
// answers again it is back to shared.
func TestLeasedDegradedWhenTheStoreStaysAway(t *testing.T) {
	clk := clock.NewFake(capacitytest.Start)
	store := capacity.NewMemoryBlocks(true)
	var modes []string
	var mu sync.Mutex
	l := newLeased(t, store, clk, func(o *capacity.LeasedOptions) {
		o.LeaseTTL, o.LeaseMargin, o.NoLoop = 3*time.Second, 500*time.Millisecond, true
		o.OnModeChange = func(from, to capacity.Mode) { mu.Lock(); modes = append(modes, to.String()); mu.Unlock() }
	})
	other := newLeased(t, store, clk, func(o *capacity.LeasedOptions) {
		o.LeaseTTL, o.LeaseMargin, o.NoLoop = 3*time.Second, 500*time.Millisecond, true
	})
	ctx := context.Background()
	lim := capacity.Limits{MaxConcurrent: 8}
	other.RefreshNow(ctx)
	var held []capacity.Lease
	for i := 0; i < 5; i++ { // l's block grows 1, 3, 7
		lease, err := l.Acquire(ctx, capacity.Reservation{ID: fmt.Sprint("h", i), Pool: "p", Limits: lim})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, lease)
	}
	l.RefreshNow(ctx) // sees 2 replicas
	other.RefreshNow(ctx)
	store.SetDown(true)
	clk.Advance(3 * time.Second)
	l.RefreshNow(ctx)
	other.RefreshNow(ctx)
	if st := l.Status(); st.Mode != capacity.ModeDegraded || st.LastError == "" {
		t.Fatalf("status after the store stayed away for a lease: %+v, want degraded with an error", st)
	}
	admit := func(s *capacity.Leased, tag string) int {
		got := 0
		for i := 0; i < 8; i++ {
			if _, err := s.Acquire(ctx, capacity.Reservation{ID: fmt.Sprint(tag, i), Pool: "p", Limits: lim}); err == nil {
				got++
			}
		}
		return got
	}
	// The smaller of its last block (7) and the conservative share (8/2):
	// with 5 held, nothing more; with 3 held, one more.
	if got := admit(l, "a"); got != 0 {
		t.Fatalf("degraded holding 5 of a share of 4: %d admitted, want 0", got)
	}
	l.Release(held[0], 0)
	l.Release(held[1], 0)
	if got := admit(l, "b"); got != 1 {
		t.Fatalf("degraded holding 3 of a share of 4: %d admitted, want 1", got)
	}
	// A replica that held no block takes nothing while the store is away.
	if got := admit(other, "c"); got != 0 {
		t.Fatalf("degraded replica without a block admitted %d, want 0", got)
	}
	store.SetDown(false)
	l.RefreshNow(ctx)
	if st := l.Status(); st.Mode != capacity.ModeShared {
		t.Fatalf("after the store answered: %v, want shared", st.Mode)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(modes) != "[degraded shared]" {
		t.Fatalf("mode changes %v, want [degraded shared]", modes)
	}
}

// Stranding: with four replicas and demand on one, that one gets at least
// 90 % of the limit within a second; when the demand moves to another
// replica, the blocks follow within two refresh periods. Real Redis, real
// clock.
func TestLeasedBlocksFollowDemand(t *testing.T) {
	srv := redistest.StartServer(t)
	const limit = 40
	refresh := 200 * time.Millisecond
	_, prefix := newRedisBlocks(t, srv, srv.URL(), false)
	var reps []*capacity.Leased
	for i := 0; i < 4; i++ {
		home, err := capacity.NewRedisBlocks(capacity.RedisBlocksOptions{URL: srv.URL(), KeyPrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, newLeased(t, home, clock.Real{}, func(o *capacity.LeasedOptions) {
			o.RefreshEvery, o.LeaseTTL, o.Timeout = refresh, 3*time.Second, time.Second
		}))
	}
	lim := capacity.Limits{MaxConcurrent: limit}
	for _, r := range reps {
		if _, err := r.Usage(context.Background(), []string{"hot"}); err != nil { // every replica follows the pool
			t.Fatal(err)
		}
	}
	start := time.Now()
	held := holdUpTo(reps[0], "hot", lim, limit, start.Add(time.Second), "a")
	took := time.Since(start)
	if len(held) < limit*9/10 {
		t.Fatalf("one replica with all the demand held %d of %d within 1s", len(held), limit)
	}
	t.Logf("replica 0 reached %d of %d slots in %s", len(held), limit, took.Round(time.Millisecond))
	// The demand moves to replica 2.
	for _, l := range held {
		reps[0].Release(l, 0)
	}
	start = time.Now()
	moved := holdUpTo(reps[2], "hot", lim, limit*9/10, start.Add(2*refresh+time.Second), "b")
	took = time.Since(start)
	if len(moved) < limit*9/10 {
		t.Fatalf("after the demand moved, replica 2 held %d of %d", len(moved), limit)
	}
	// Two refresh periods, plus a scheduling allowance for a loaded
	// 2-core machine.
	if took > 2*refresh+300*time.Millisecond {
		t.Fatalf("the blocks followed the demand in %s, want within two refresh periods (%s)", took, 2*refresh)
	}
	t.Logf("replica 2 reached %d slots %s after the demand moved (refresh %s)", len(moved), took.Round(time.Millisecond), refresh)
	for _, l := range moved {
		reps[2].Release(l, 0)
	}
}

// holdUpTo keeps acquiring (releasing nothing) until n slots are held or
// the deadline passes; it returns the leases.
func holdUpTo(l *capacity.Leased, pool string, lim capacity.Limits, n int, deadline time.Time, tag string) []capacity.Lease {
	var held []capacity.Lease
	var seq atomic.Int64
	for len(held) < n && time.Now().Before(deadline) {
		lease, err := l.Acquire(context.Background(), capacity.Reservation{ID: fmt.Sprint(tag, seq.Add(1)), Pool: pool, Limits: lim})
		if err == nil {
			held = append(held, lease)
			continue
		}
		time.Sleep(5 * time.Millisecond) // a client backing off before it asks again
	}
	return held
}

// Per-minute budgets under leased counting: four replicas take allowances
// in advance from a pool's requests- and tokens-per-minute budgets while
// calls arrive faster than the budgets allow, some calls using up to 5 %
// more tokens than they were charged (the router's input estimate is only
// an estimate). Per minute, the admitted requests never exceed the budget
// and the tokens used stay within 1 % of it; and the binding budget is
// used (at least 85 %), not stranded in the replicas' allowances.
func TestLeasedMinuteBudgetsOvershootBound(t *testing.T) {
	for _, c := range []struct {
		name     string
		rpm, tpm int64
	}{{"requests bind", 600, 1_000_000}, {"tokens bind", 100_000, 150_000}} {
		t.Run(c.name, func(t *testing.T) { minuteBudgets(t, c.rpm, c.tpm) })
	}
}

func minuteBudgets(t *testing.T, rpm, tpm int64) {
	clk := clock.NewFake(capacitytest.Start.Truncate(time.Minute))
	store := capacity.NewMemoryBlocks(true)
	refresh := 300 * time.Millisecond
	var reps []*capacity.Leased
	for i := 0; i < 4; i++ {
		reps = append(reps, newLeased(t, store, clk, func(o *capacity.LeasedOptions) { o.RefreshEvery, o.NoLoop = refresh, true }))
	}
	lim := capacity.Limits{MaxConcurrent: 1000, RequestsPerMinute: rpm, TokensPerMinute: tpm}
	rng := rand.New(rand.NewSource(3))
	type held struct {
		l    capacity.Lease
		rep  int
		ends time.Time
		used int64
	}
	var inFlight []held
	admitted := map[int64]int64{} // minute -> requests admitted
	charged := map[int64]int64{}  // minute of admission -> tokens charged
	used := map[int64]int64{}     // minute of admission -> tokens used
	ctx := context.Background()
	id := 0
	end := clk.Now().Add(4 * time.Minute)
	for step := 0; clk.Now().Before(end); step++ {
		// 100ms steps: every replica sees ~2 calls a step (80 calls/s, far
		// above what either budget allows).
		for k := 0; k < 8; k++ {
			r := k % len(reps)
			l := reps[r]
			if rng.Intn(5) == 0 {
				continue
			}
			id++
			charge := int64(200 + rng.Intn(400))
			lease, err := l.Acquire(ctx, capacity.Reservation{ID: fmt.Sprint(id), Pool: "p", Limits: lim, Tokens: charge})
			var q *capacity.QuotaError
			switch {
			case err == nil:
				m := clk.Now().Unix() / 60
				admitted[m]++
				charged[m] += charge
				u := charge * int64(50+rng.Intn(56)) / 100 // 50 %..105 % of the charge
				used[m] += u
				inFlight = append(inFlight, held{lease, r, clk.Now().Add(time.Duration(100+rng.Intn(2000)) * time.Millisecond), u})
			case errors.As(err, &q):
			default:
				for i, x := range reps {
					t.Logf("replica %d: %+v", i, x.Blocks())
				}
				t.Fatalf("step %d replica %d: acquire: %v", step, r, err)
			}
		}
		clk.Advance(100 * time.Millisecond)
		kept := inFlight[:0]
		for _, h := range inFlight {
			if !clk.Now().Before(h.ends) {
				reps[h.rep].Release(h.l, h.used)
				continue
			}
			kept = append(kept, h)
		}
		inFlight = kept
		if step%3 == 2 {
			for _, l := range reps {
				l.RefreshNow(ctx)
			}
		}
	}
	first := capacitytest.Start.Truncate(time.Minute).Unix() / 60
	for m := first; m < first+4; m++ {
		t.Logf("minute %d: %d requests (budget %d), tokens %d charged, %d used (budget %d: %.2f %%)", m-first, admitted[m], rpm, charged[m], used[m], tpm, 100*float64(used[m])/float64(tpm))
		if admitted[m] > rpm {
			t.Errorf("minute %d: %d requests admitted, budget %d", m-first, admitted[m], rpm)
		}
		if used[m] > tpm*101/100 {
			t.Errorf("minute %d: %d tokens used, more than 1 %% over the budget of %d", m-first, used[m], tpm)
		}
		if admitted[m] < rpm*85/100 && charged[m] < tpm*85/100 {
			t.Errorf("minute %d: only %d requests and %d tokens charged: the budgets were stranded, not used", m-first, admitted[m], charged[m])
		}
	}
}

// Pools are homed by region: each pool's blocks live in its home store only,
// tenants' budgets in the default home, and a reload can move a pool.
func TestLeasedHomesByRegion(t *testing.T) {
	clk := clock.NewFake(capacitytest.Start)
	us, eu := capacity.NewMemoryBlocks(true), capacity.NewMemoryBlocks(true)
	l := newLeased(t, nil, clk, func(o *capacity.LeasedOptions) {
		o.Homes = map[string]capacity.BlockStore{"us": us, "eu": eu}
		o.Default, o.PoolHomes, o.NoLoop = "us", map[string]string{"eu-pool": "eu"}, true
	})
	ctx := context.Background()
	lim := capacity.Limits{MaxConcurrent: 4}
	for _, pool := range []string{"eu-pool", "us-pool"} {
		if _, err := l.Acquire(ctx, capacity.Reservation{ID: "a", Pool: pool, Limits: lim}); err != nil {
			t.Fatal(err)
		}
	}
	if eu.GrantedSum("eu-pool", clk.Now()) == 0 || us.GrantedSum("eu-pool", clk.Now()) != 0 {
		t.Fatalf("eu-pool's block: %d in eu, %d in us; want it in eu only", eu.GrantedSum("eu-pool", clk.Now()), us.GrantedSum("eu-pool", clk.Now()))
	}
	if us.GrantedSum("us-pool", clk.Now()) == 0 || eu.GrantedSum("us-pool", clk.Now()) != 0 {
		t.Fatal("us-pool (no home named) is not in the default home only")
	}
	if err := l.SetPoolHomes(map[string]string{"eu-pool": "asia"}); err == nil {
		t.Fatal("a pool homed to an unknown store was accepted")
	}
	for _, b := range l.Blocks().Pools {
		want := map[string]string{"eu-pool": "eu", "us-pool": "us"}[b.Pool]
		if b.Home != want {
			t.Errorf("pool %s reported at home %q, want %q", b.Pool, b.Home, want)
		}
	}
	if _, err := capacity.NewLeased(capacity.LeasedOptions{Homes: map[string]capacity.BlockStore{"us": us, "eu": eu}}); err == nil {
		t.Fatal("two homes and no default accepted")
	}
}
