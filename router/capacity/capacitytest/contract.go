// Package capacitytest is the contract every capacity.Store implementation
// must pass. Each implementation's tests call Run with a constructor; the
// same assertions then hold for the in-memory and the Redis store alike.
package capacitytest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/router/capacity"
)

// Flusher is implemented by stores whose Release is asynchronous: Flush
// returns once every queued release has landed.
type Flusher interface {
	Flush(ctx context.Context) error
}

// NewStore builds a fresh, empty store that reads time from clk. Pool and
// tenant names passed to it are unique per call, so stores sharing a backend
// do not see each other's counters.
type NewStore func(t *testing.T, clk clock.Clock) capacity.Store

// Start is a fixed instant a few seconds into a minute.
var Start = time.Date(2026, 11, 26, 12, 0, 5, 0, time.UTC)

var seq atomic.Int64

func unique(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1e6, seq.Add(1))
}

func flush(t *testing.T, s capacity.Store) {
	t.Helper()
	if f, ok := s.(Flusher); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := f.Flush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
	}
}

func inFlight(t *testing.T, s capacity.Store, pool string) int {
	t.Helper()
	flush(t, s)
	u, err := s.Usage(context.Background(), []string{pool})
	if err != nil {
		t.Fatalf("usage: %v", err)
	}
	return u[pool].InFlight
}

// Run runs the whole contract.
func Run(t *testing.T, newStore NewStore) {
	ctx := context.Background()

	t.Run("LimitIsHardAndReleaseFrees", func(t *testing.T) {
		clk := clock.NewFake(Start)
		s := newStore(t, clk)
		pool := unique("pool")
		lim := capacity.Limits{MaxConcurrent: 3}
		var leases []capacity.Lease
		for i := 0; i < 3; i++ {
			l, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim, Tokens: 10})
			if err != nil {
				t.Fatalf("acquire %d: %v", i, err)
			}
			leases = append(leases, l)
		}
		if _, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim}); !errors.Is(err, capacity.ErrPoolFull) {
			t.Fatalf("4th acquire: got %v, want ErrPoolFull", err)
		}
		if n := inFlight(t, s, pool); n != 3 {
			t.Fatalf("in flight %d, want 3", n)
		}
		s.Release(leases[0], 10)
		flush(t, s)
		if _, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim}); err != nil {
			t.Fatalf("acquire after release: %v", err)
		}
		if n := inFlight(t, s, pool); n != 3 {
			t.Fatalf("in flight %d, want 3", n)
		}
	})

	t.Run("SameTenantAndRequestIDInFlightIsRefused", func(t *testing.T) {
		// A reused request id never skips a limit: while it holds a slot, the
		// same tenant + id in that pool gets ErrDuplicate and is charged nothing.
		clk := clock.NewFake(Start)
		s := newStore(t, clk)
		pool, tenant := unique("pool"), unique("tenant")
		lim := capacity.Limits{MaxConcurrent: 2}
		id := unique("req")
		a, err := s.Acquire(ctx, capacity.Reservation{ID: id, Pool: pool, Limits: lim, Tenant: tenant, Tokens: 5})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var ok, dup atomic.Int64
		var other atomic.Value
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := s.Acquire(ctx, capacity.Reservation{ID: id, Pool: pool, Limits: lim, Tenant: tenant, Tokens: 5})
				switch {
				case err == nil:
					ok.Add(1)
					s.Release(l, 5)
				case errors.Is(err, capacity.ErrDuplicate):
					dup.Add(1)
				default:
					other.Store(err)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != 0 || dup.Load() != 10 {
			t.Fatalf("10 acquires of an id in flight: %d admitted, %d duplicates (other error %v); want 0 and 10", ok.Load(), dup.Load(), other.Load())
		}
		if n := inFlight(t, s, pool); n != 1 {
			t.Fatalf("in flight %d, want 1", n)
		}
		u, err := s.Usage(ctx, []string{pool})
		if err != nil {
			t.Fatal(err)
		}
		if u[pool].RequestsLastMinute != 1 || u[pool].TokensLastMinute != 5 {
			t.Fatalf("duplicates were charged: %d requests, %d tokens in the window, want 1 and 5", u[pool].RequestsLastMinute, u[pool].TokensLastMinute)
		}
		// The same id under another tenant is another reservation, held to the limit.
		b, err := s.Acquire(ctx, capacity.Reservation{ID: id, Pool: pool, Limits: lim, Tenant: unique("tenant")})
		if err != nil {
			t.Fatalf("same id, other tenant: %v", err)
		}
		if _, err := s.Acquire(ctx, capacity.Reservation{ID: id, Pool: pool, Limits: lim, Tenant: unique("tenant")}); !errors.Is(err, capacity.ErrPoolFull) {
			t.Fatalf("same id, third tenant, pool at its limit: %v, want ErrPoolFull", err)
		}
		// The same id in another pool is held to that pool's limits.
		c, err := s.Acquire(ctx, capacity.Reservation{ID: id, Pool: unique("pool"), Limits: lim, Tenant: tenant})
		if err != nil {
			t.Fatalf("same id, other pool: %v", err)
		}
		s.Release(c, 0)
		s.Release(b, 0)
		s.Release(a, 5)
		s.Release(a, 5) // a second release of one lease is a no-op
		if n := inFlight(t, s, pool); n != 0 {
			t.Fatalf("in flight %d after releases, want 0", n)
		}
	})

	t.Run("ReusedIDNeverSkipsATenantBudget", func(t *testing.T) {
		// A tenant whose budget is spent gets nothing by reusing another
		// tenant's in-flight request id.
		clk := clock.NewFake(Start)
		s := newStore(t, clk)
		pool, rich, broke := unique("pool"), unique("tenant"), unique("tenant")
		lim := capacity.Limits{MaxConcurrent: 100}
		tl := capacity.Limits{RequestsPerMinute: 1}
		id := unique("req")
		held, err := s.Acquire(ctx, capacity.Reservation{ID: id, Pool: pool, Limits: lim, Tenant: rich})
		if err != nil {
			t.Fatal(err)
		}
		l, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim, Tenant: broke, TenantLimits: tl})
		if err != nil {
			t.Fatal(err)
		}
		s.Release(l, 0)
		flush(t, s)
		for i := 0; i < 4; i++ {
			_, err := s.Acquire(ctx, capacity.Reservation{ID: id, Pool: pool, Limits: lim, Tenant: broke, TenantLimits: tl})
			var q *capacity.QuotaError
			if !errors.As(err, &q) || q.Scope != "tenant" || q.Name != broke {
				t.Fatalf("spent tenant reusing another tenant's in-flight id (try %d): %v, want its tenant QuotaError", i, err)
			}
		}
		s.Release(held, 0)
		if n := inFlight(t, s, pool); n != 0 {
			t.Fatalf("in flight %d, want 0", n)
		}
	})

	t.Run("SameIDAgainRightAfterRelease", func(t *testing.T) {
		// The router's own retry of a call reuses its request id as soon as
		// the previous attempt released (before an asynchronous release lands).
		clk := clock.NewFake(Start)
		s := newStore(t, clk)
		pool, tenant := unique("pool"), unique("tenant")
		lim := capacity.Limits{MaxConcurrent: 1}
		id := unique("req")
		for i := 0; i < 20; i++ {
			l, err := s.Acquire(ctx, capacity.Reservation{ID: id, Pool: pool, Limits: lim, Tenant: tenant, Tokens: 3})
			if err != nil {
				t.Fatalf("attempt %d with the same id right after the previous release: %v", i, err)
			}
			s.Release(l, 3)
		}
		if n := inFlight(t, s, pool); n != 0 {
			t.Fatalf("in flight %d after 20 acquire/release pairs, want 0", n)
		}
		// Nothing stale blocks the id either.
		l, err := s.Acquire(ctx, capacity.Reservation{ID: id, Pool: pool, Limits: lim, Tenant: tenant})
		if err != nil {
			t.Fatalf("after flush: %v", err)
		}
		s.Release(l, 0)
		if n := inFlight(t, s, pool); n != 0 {
			t.Fatalf("in flight %d, want 0", n)
		}
	})

	t.Run("ConcurrentAcquireNeverExceedsLimit", func(t *testing.T) {
		clk := clock.NewFake(Start)
		s := newStore(t, clk)
		pool := unique("pool")
		const limit, workers, rounds = 5, 16, 20
		lim := capacity.Limits{MaxConcurrent: limit}
		var held, peak atomic.Int64
		var wg sync.WaitGroup
		var failures atomic.Int64
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < rounds; i++ {
					l, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim})
					if errors.Is(err, capacity.ErrPoolFull) {
						continue
					}
					if err != nil {
						failures.Add(1)
						return
					}
					n := held.Add(1)
					for {
						p := peak.Load()
						if n <= p || peak.CompareAndSwap(p, n) {
							break
						}
					}
					held.Add(-1)
					s.Release(l, 0)
					if f, ok := s.(Flusher); ok {
						_ = f.Flush(ctx)
					}
				}
			}()
		}
		wg.Wait()
		if failures.Load() > 0 {
			t.Fatalf("%d acquires failed with unexpected errors", failures.Load())
		}
		if p := peak.Load(); p > limit {
			t.Fatalf("peak holders %d exceeded limit %d", p, limit)
		}
		if n := inFlight(t, s, pool); n != 0 {
			t.Fatalf("leaked %d slots", n)
		}
	})

	t.Run("RequestsPerMinute", func(t *testing.T) {
		clk := clock.NewFake(Start)
		s := newStore(t, clk)
		pool := unique("pool")
		lim := capacity.Limits{MaxConcurrent: 100, RequestsPerMinute: 4}
		for i := 0; i < 4; i++ {
			l, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim})
			if err != nil {
				t.Fatalf("acquire %d: %v", i, err)
			}
			s.Release(l, 0)
		}
		_, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim})
		var q *capacity.QuotaError
		if !errors.As(err, &q) || q.Kind != "requests_per_minute" || q.Scope != "pool" || q.RetryAfter <= 0 || q.RetryAfter > time.Minute {
			t.Fatalf("5th request in a minute: got %v, want pool requests_per_minute QuotaError with retry-after in (0,1m]", err)
		}
		clk.Advance(2 * time.Minute)
		l, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim})
		if err != nil {
			t.Fatalf("after the window passed: %v", err)
		}
		s.Release(l, 0)
		if n := inFlight(t, s, pool); n != 0 {
			t.Fatalf("leaked %d", n)
		}
	})

	t.Run("RequestsPerMinuteAcrossAMinuteBoundary", func(t *testing.T) {
		// Start just before a minute ends: the request still counts right after
		// the boundary, so the sliding window admits no second one yet.
		clk := clock.NewFake(Start.Truncate(time.Minute).Add(59 * time.Second))
		s := newStore(t, clk)
		pool := unique("pool")
		lim := capacity.Limits{MaxConcurrent: 10, RequestsPerMinute: 1}
		l, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim})
		if err != nil {
			t.Fatal(err)
		}
		s.Release(l, 0)
		clk.Advance(2 * time.Second) // 1s into the next minute
		var q *capacity.QuotaError
		if _, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim}); !errors.As(err, &q) {
			t.Fatalf("2nd request 2s after the 1st with a limit of 1/min: %v, want a QuotaError", err)
		}
		flush(t, s)
	})

	t.Run("TokensPerMinuteSettledOnRelease", func(t *testing.T) {
		clk := clock.NewFake(Start)
		s := newStore(t, clk)
		pool := unique("pool")
		lim := capacity.Limits{MaxConcurrent: 100, TokensPerMinute: 1000}
		l, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim, Tokens: 900})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim, Tokens: 200})
		var q *capacity.QuotaError
		if !errors.As(err, &q) || q.Kind != "tokens_per_minute" {
			t.Fatalf("over the token budget: got %v, want tokens_per_minute QuotaError", err)
		}
		// The call used only 100 of the 900 charged: the rest comes back.
		s.Release(l, 100)
		flush(t, s)
		l2, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim, Tokens: 800})
		if err != nil {
			t.Fatalf("after settlement refunded 800 tokens: %v", err)
		}
		s.Release(l2, 800)
		flush(t, s)
		u, err := s.Usage(ctx, []string{pool})
		if err != nil {
			t.Fatal(err)
		}
		if got := u[pool].TokensLastMinute; got != 900 {
			t.Fatalf("tokens last minute %d, want 900 (100 + 800)", got)
		}
	})

	t.Run("TenantBudgetIsSeparateAndRefusalChargesNothing", func(t *testing.T) {
		clk := clock.NewFake(Start)
		s := newStore(t, clk)
		poolA, poolB, tenant := unique("pool"), unique("pool"), unique("tenant")
		lim := capacity.Limits{MaxConcurrent: 10}
		tl := capacity.Limits{RequestsPerMinute: 2}
		for i, pool := range []string{poolA, poolB} {
			l, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: lim, Tenant: tenant, TenantLimits: tl})
			if err != nil {
				t.Fatalf("acquire %d: %v", i, err)
			}
			s.Release(l, 0)
		}
		_, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: poolA, Limits: lim, Tenant: tenant, TenantLimits: tl})
		var q *capacity.QuotaError
		if !errors.As(err, &q) || q.Scope != "tenant" || q.Name != tenant {
			t.Fatalf("3rd request of the tenant: got %v, want tenant QuotaError", err)
		}
		if n := inFlight(t, s, poolA); n != 0 {
			t.Fatalf("a refused reservation holds %d slots", n)
		}
		// Another tenant is unaffected.
		l, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: poolA, Limits: lim, Tenant: unique("tenant"), TenantLimits: tl})
		if err != nil {
			t.Fatalf("other tenant: %v", err)
		}
		s.Release(l, 0)
		flush(t, s)
		u, err := s.Usage(ctx, []string{poolA})
		if err != nil {
			t.Fatal(err)
		}
		if u[poolA].RequestsLastMinute != 2 {
			t.Fatalf("pool A counted %d requests, want 2 (the refused one is not charged)", u[poolA].RequestsLastMinute)
		}
	})

	t.Run("PoolRefusalChargesTenantNothing", func(t *testing.T) {
		clk := clock.NewFake(Start)
		s := newStore(t, clk)
		full, other, tenant := unique("pool"), unique("pool"), unique("tenant")
		lim := capacity.Limits{MaxConcurrent: 1}
		tl := capacity.Limits{RequestsPerMinute: 2, TokensPerMinute: 100}
		held, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: full, Limits: lim})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			_, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: full, Limits: lim, Tenant: tenant, TenantLimits: tl, Tokens: 50})
			if !errors.Is(err, capacity.ErrPoolFull) {
				t.Fatalf("acquire on a full pool: got %v, want ErrPoolFull", err)
			}
		}
		flush(t, s)
		// The tenant's whole budget is still there.
		for i := 0; i < 2; i++ {
			l, err := s.Acquire(ctx, capacity.Reservation{ID: unique("req"), Pool: other, Limits: lim, Tenant: tenant, TenantLimits: tl, Tokens: 50})
			if err != nil {
				t.Fatalf("tenant request %d after pool refusals: %v", i, err)
			}
			s.Release(l, 50)
			flush(t, s)
		}
		s.Release(held, 0)
		if n := inFlight(t, s, full); n != 0 {
			t.Fatalf("leaked %d", n)
		}
	})

	t.Run("CanceledContext", func(t *testing.T) {
		s := newStore(t, clock.NewFake(Start))
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		pool := unique("pool")
		if _, err := s.Acquire(cctx, capacity.Reservation{ID: unique("req"), Pool: pool, Limits: capacity.Limits{MaxConcurrent: 1}}); err == nil {
			t.Fatal("acquire with a canceled context succeeded")
		}
		if n := inFlight(t, s, pool); n != 0 {
			t.Fatalf("canceled acquire holds %d slots", n)
		}
	})

	t.Run("StatusHasMode", func(t *testing.T) {
		s := newStore(t, clock.NewFake(Start))
		st := s.Status()
		if st.Mode != capacity.ModeLocal && st.Mode != capacity.ModeShared {
			t.Fatalf("fresh store in mode %v", st.Mode)
		}
		if st.Replicas < 1 {
			t.Fatalf("replicas %d", st.Replicas)
		}
	})
}
