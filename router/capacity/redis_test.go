package capacity_test

import (
	"go.uber.org/goleak"

	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/capacity/capacitytest"
	"github.com/switchyard-dev/switchyard/router/capacity/redistest"
)

var prefixSeq atomic.Int64

// newRedis builds a Redis store on url with its own key prefix, closed by
// t.Cleanup.
func newRedis(t testing.TB, url string, clk clock.Clock, mod func(*capacity.RedisOptions)) *capacity.Redis {
	t.Helper()
	o := capacity.RedisOptions{URL: url, Clock: clk, KeyPrefix: fmt.Sprintf("t%d", prefixSeq.Add(1))}
	if mod != nil {
		mod(&o)
	}
	s, err := capacity.NewRedis(o)
	if err != nil {
		t.Fatalf("new redis store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the outage tests cause many on purpose.
	redis.SetLogger(quietLogger{})
	// And no test leaves a goroutine behind.
	goleak.VerifyTestMain(m)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// contractTimeout replaces the 150ms request-path timeout in the contract
// runs: the contract is about counting, and on a loaded 2-core machine a
// cluster round trip under 16 concurrent acquirers can pass 150ms (an
// Acquire then fails with ErrUnavailable, the degraded path's business,
// tested on its own).
func contractTimeout(o *capacity.RedisOptions) { o.Timeout = 2 * time.Second }

func TestRedisContract(t *testing.T) {
	srv := redistest.StartServer(t)
	capacitytest.Run(t, func(t *testing.T, clk clock.Clock) capacity.Store {
		return newRedis(t, srv.URL(), clk, contractTimeout)
	})
}

func TestRedisClusterContract(t *testing.T) {
	cl := redistest.StartCluster(t)
	capacitytest.Run(t, func(t *testing.T, clk clock.Clock) capacity.Store {
		return newRedis(t, cl.URL(), clk, contractTimeout)
	})
}

func TestRedisResilientContract(t *testing.T) {
	srv := redistest.StartServer(t)
	capacitytest.Run(t, func(t *testing.T, clk clock.Clock) capacity.Store {
		s, err := capacity.NewResilient(capacity.ResilientOptions{Shared: newRedis(t, srv.URL(), clk, nil), Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestRedisURLForms(t *testing.T) {
	for _, bad := range []string{"", "http://127.0.0.1:1", "localhost:6379"} {
		if _, err := capacity.NewRedis(capacity.RedisOptions{URL: bad}); err == nil {
			t.Errorf("url %q accepted", bad)
		}
	}
	if _, err := capacity.NewRedis(capacity.RedisOptions{URL: "redis://127.0.0.1:1", KeyPrefix: "a{b"}); err == nil {
		t.Error("prefix with a brace accepted")
	}
	for _, good := range []string{
		"redis://:secret@127.0.0.1:1/2", "rediss://user:secret@127.0.0.1:1",
		"redis+cluster://127.0.0.1:1,127.0.0.1:2", "rediss+cluster://u:p@127.0.0.1:1,127.0.0.1:2?dial_timeout=1s",
		"redis://127.0.0.1:1,redis://127.0.0.1:2",
	} {
		s, err := capacity.NewRedis(capacity.RedisOptions{URL: good})
		if err != nil {
			t.Errorf("url %q: %v", good, err)
			continue
		}
		_ = s.Close()
	}
}

// Two replicas sharing one Redis, hammered past the limit from many
// goroutines: the holders seen at any instant never exceed the limit.
func TestRedisTwoReplicasNeverExceedLimit(t *testing.T) {
	srv := redistest.StartServer(t)
	prefix := fmt.Sprintf("two%d", prefixSeq.Add(1))
	mk := func(id string) *capacity.Redis {
		return newRedis(t, srv.URL(), clock.Real{}, func(o *capacity.RedisOptions) { o.KeyPrefix, o.Replica = prefix, id })
	}
	stores := []*capacity.Redis{mk("a"), mk("b")}
	const limit, workers, rounds = 4, 12, 40
	lim := capacity.Limits{MaxConcurrent: limit}
	tl := capacity.Limits{RequestsPerMinute: 100000}
	var held, peak, admitted atomic.Int64
	var failures atomic.Int64
	var wg sync.WaitGroup
	ctx := context.Background()
	for w := 0; w < workers; w++ {
		s := stores[w%2]
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				r := capacity.Reservation{ID: fmt.Sprintf("w%d-%d", w, i), Pool: "hot", Limits: lim, Tokens: 3}
				if i%2 == 0 {
					r.Tenant, r.TenantLimits = "acme", tl
				}
				l, err := s.Acquire(ctx, r)
				if errors.Is(err, capacity.ErrPoolFull) {
					continue
				}
				if err != nil {
					failures.Add(1)
					t.Errorf("acquire: %v", err)
					return
				}
				admitted.Add(1)
				n := held.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				time.Sleep(time.Millisecond)
				held.Add(-1)
				s.Release(l, 3)
				// Wait for the release to land before counting the slot free:
				// "held" must be an upper bound of what Redis counts.
				if err := s.Flush(ctx); err != nil {
					t.Errorf("flush: %v", err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if p := peak.Load(); p > limit {
		t.Fatalf("peak holders %d exceeded the limit %d", p, limit)
	}
	if admitted.Load() < limit {
		t.Fatalf("only %d admitted", admitted.Load())
	}
	for _, s := range stores {
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	u, err := stores[0].Usage(ctx, []string{"hot"})
	if err != nil {
		t.Fatal(err)
	}
	if u["hot"].InFlight != 0 {
		t.Fatalf("leaked %d slots", u["hot"].InFlight)
	}
	if got, want := u["hot"].RequestsLastMinute, admitted.Load(); got != want {
		t.Fatalf("requests last minute %d, want %d (refusals charge nothing)", got, want)
	}
	if got, want := u["hot"].TokensLastMinute, 3*admitted.Load(); got != want {
		t.Fatalf("tokens last minute %d, want %d", got, want)
	}
}

// A replica that dies holding slots (no release, no more renewals): its slots
// come back within the lease TTL, with nobody cleaning up.
func TestRedisDeadReplicaSlotsComeBack(t *testing.T) {
	srv := redistest.StartServer(t)
	prefix := fmt.Sprintf("dead%d", prefixSeq.Add(1))
	const ttl = time.Second
	mk := func(id string) *capacity.Redis {
		return newRedis(t, srv.URL(), clock.Real{}, func(o *capacity.RedisOptions) {
			o.KeyPrefix, o.Replica, o.LeaseTTL, o.RenewEvery = prefix, id, ttl, 100*time.Millisecond
		})
	}
	dying, alive := mk("dying"), mk("alive")
	ctx := context.Background()
	lim := capacity.Limits{MaxConcurrent: 3}
	for i := 0; i < 3; i++ {
		if _, err := dying.Acquire(ctx, capacity.Reservation{ID: fmt.Sprintf("d%d", i), Pool: "p", Limits: lim}); err != nil {
			t.Fatal(err)
		}
	}
	// Renewals keep the slots alive well past the TTL.
	waitFor(t, 3*time.Second, "two replicas in heartbeats", func() bool { return alive.Status().Replicas == 2 })
	time.Sleep(ttl + 300*time.Millisecond)
	if _, err := alive.Acquire(ctx, capacity.Reservation{ID: "a0", Pool: "p", Limits: lim}); !errors.Is(err, capacity.ErrPoolFull) {
		t.Fatalf("while the holder renews: got %v, want ErrPoolFull", err)
	}
	dying.Abandon()
	died := time.Now()
	var l capacity.Lease
	waitFor(t, ttl+time.Second, "slots back after the holder died", func() bool {
		var err error
		l, err = alive.Acquire(ctx, capacity.Reservation{ID: "a1", Pool: "p", Limits: lim})
		return err == nil
	})
	if back := time.Since(died); back > ttl+400*time.Millisecond { // slack: polling and a loaded machine
		t.Fatalf("slots came back after %s, want within the lease ttl %s", back, ttl)
	}
	u, err := alive.Usage(ctx, []string{"p"})
	if err != nil {
		t.Fatal(err)
	}
	if u["p"].InFlight != 1 {
		t.Fatalf("in flight %d, want 1 (the dead replica's 3 are gone)", u["p"].InFlight)
	}
	alive.Release(l, 0)
	waitFor(t, 3*time.Second, "dead replica's heartbeat expired", func() bool { return alive.Status().Replicas == 1 })
	if n := inFlight(t, alive, "p"); n != 0 {
		t.Fatalf("leaked %d", n)
	}
}

// A running request keeps its slot past the TTL because the renewer extends
// it; renewals cost one pipeline per tick whatever the number of leases.
func TestRedisRenewalKeepsLeases(t *testing.T) {
	srv := redistest.StartServer(t)
	s := newRedis(t, srv.URL(), clock.Real{}, func(o *capacity.RedisOptions) {
		o.LeaseTTL, o.RenewEvery = 600*time.Millisecond, 100*time.Millisecond
	})
	ctx := context.Background()
	var leases []capacity.Lease
	for i := 0; i < 20; i++ {
		l, err := s.Acquire(ctx, capacity.Reservation{ID: fmt.Sprintf("r%d", i), Pool: fmt.Sprintf("p%d", i%3), Limits: capacity.Limits{MaxConcurrent: 10}})
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	time.Sleep(1500 * time.Millisecond)
	u, err := s.Usage(ctx, []string{"p0", "p1", "p2"})
	if err != nil {
		t.Fatal(err)
	}
	if got := u["p0"].InFlight + u["p1"].InFlight + u["p2"].InFlight; got != 20 {
		t.Fatalf("in flight %d after 2.5 TTLs, want 20 (renewed)", got)
	}
	for _, l := range leases {
		s.Release(l, 0)
	}
	for _, p := range []string{"p0", "p1", "p2"} {
		if n := inFlight(t, s, p); n != 0 {
			t.Fatalf("pool %s leaked %d", p, n)
		}
	}
}

// Releases queued while Redis is down are retried until they land or grow
// older than two minute windows and the lease TTL by the store's clock:
// then they are dropped (their leases have expired by themselves) and
// Flush returns. The fake clock proves the age without waiting minutes.
func TestRedisDropsReleasesTooOldToMatter(t *testing.T) {
	srv := redistest.StartServer(t)
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	s := newRedis(t, srv.URL(), clk, nil)
	ctx := context.Background()
	l, err := s.Acquire(ctx, capacity.Reservation{ID: "r", Pool: "p", Limits: capacity.Limits{MaxConcurrent: 1}})
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	s.Release(l, 10)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = s.Flush(short)
	cancel()
	if err == nil {
		t.Fatal("a release landed with redis down")
	}
	clk.Advance(2*capacity.Window + 16*time.Second) // past the default lease TTL of 15s
	within, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.Flush(within); err != nil {
		t.Fatalf("the stale release was neither landed nor dropped: %v", err)
	}
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func inFlight(t *testing.T, s capacity.Store, pool string) int {
	t.Helper()
	if f, ok := s.(capacitytest.Flusher); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := f.Flush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
	}
	u, err := s.Usage(context.Background(), []string{pool})
	if err != nil {
		t.Fatal(err)
	}
	return u[pool].InFlight
}
