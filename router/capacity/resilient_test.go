package capacity_test

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
	"github.com/switchyard-dev/switchyard/router/capacity/redistest"
)

type modeLog struct {
	mu      sync.Mutex
	changes []string
}

func (m *modeLog) record(from, to capacity.Mode) {
	m.mu.Lock()
	m.changes = append(m.changes, from.String()+"->"+to.String())
	m.mu.Unlock()
}

func (m *modeLog) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fmt.Sprint(m.changes)
}

// load runs workers acquiring and releasing on pool through s until stop is
// closed; any error other than ErrPoolFull / *QuotaError is reported.
func load(t *testing.T, s capacity.Store, pool string, lim capacity.Limits, workers int, stop <-chan struct{}, admitted *atomic.Int64) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				l, err := s.Acquire(context.Background(), capacity.Reservation{
					ID: fmt.Sprintf("%p-%d-%d", s, w, i), Pool: pool, Limits: lim, Tokens: 10,
					Tenant: "acme", TenantLimits: capacity.Limits{TokensPerMinute: 1 << 40},
				})
				var q *capacity.QuotaError
				switch {
				case err == nil:
					admitted.Add(1)
					time.Sleep(2 * time.Millisecond)
					s.Release(l, 10)
				case errors.Is(err, capacity.ErrPoolFull), errors.As(err, &q):
					time.Sleep(time.Millisecond)
				default:
					t.Errorf("client-visible failure: %v", err)
					return
				}
			}
		}(w)
	}
	return &wg
}

// redis-server killed in the middle of a load: no client call fails because
// of it, both replicas report degraded mode within a bounded time and count
// against half of each limit, and shared counting resumes after redis-server
// restarts on the same port. Nothing leaks.
func TestResilientRedisOutage(t *testing.T) {
	srv := redistest.StartServer(t)
	prefix := fmt.Sprintf("out%d", prefixSeq.Add(1))
	var logs []*modeLog
	mk := func(id string) *capacity.Resilient {
		shared := newRedis(t, srv.URL(), clock.Real{}, func(o *capacity.RedisOptions) {
			o.KeyPrefix, o.Replica, o.LeaseTTL, o.RenewEvery = prefix, id, 3*time.Second, 100*time.Millisecond
		})
		ml := &modeLog{}
		logs = append(logs, ml)
		s, err := capacity.NewResilient(capacity.ResilientOptions{
			Shared: shared, Timeout: 150 * time.Millisecond, ProbeEvery: 100 * time.Millisecond, OnModeChange: ml.record,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	a, b := mk("a"), mk("b")
	waitFor(t, 3*time.Second, "both replicas in heartbeats", func() bool {
		return a.Status().Replicas == 2 && b.Status().Replicas == 2
	})
	lim := capacity.Limits{MaxConcurrent: 8, RequestsPerMinute: 1 << 40}
	var admitted atomic.Int64
	stop := make(chan struct{})
	wa := load(t, a, "pool", lim, 6, stop, &admitted)
	wb := load(t, b, "pool", lim, 6, stop, &admitted)
	waitFor(t, 5*time.Second, "load admitted in shared mode", func() bool { return admitted.Load() > 50 })

	srv.Stop()
	killed := time.Now()
	waitFor(t, 3*time.Second, "both replicas degraded", func() bool {
		return a.Status().Mode == capacity.ModeDegraded && b.Status().Mode == capacity.ModeDegraded
	})
	t.Logf("degraded %s after the kill", time.Since(killed).Round(time.Millisecond))
	before := admitted.Load()
	waitFor(t, 5*time.Second, "load admitted in degraded mode", func() bool { return admitted.Load() > before+50 })
	close(stop)
	wa.Wait()
	wb.Wait()
	if t.Failed() {
		return
	}
	st := a.Status()
	if st.Replicas != 2 || st.LastError == "" {
		t.Fatalf("degraded status %+v: want 2 replicas (last known) and the error", st)
	}

	// Each replica counts locally against ceil(8/2) = 4.
	ctx := context.Background()
	var held []capacity.Lease
	for i := 0; i < 4; i++ {
		l, err := a.Acquire(ctx, capacity.Reservation{ID: fmt.Sprintf("share%d", i), Pool: "share", Limits: lim})
		if err != nil {
			t.Fatalf("degraded acquire %d of 4: %v", i, err)
		}
		held = append(held, l)
	}
	if _, err := a.Acquire(ctx, capacity.Reservation{ID: "share4", Pool: "share", Limits: lim}); !errors.Is(err, capacity.ErrPoolFull) {
		t.Fatalf("5th degraded acquire with limit 8 and 2 replicas: got %v, want ErrPoolFull", err)
	}
	// Degraded calls do not wait for Redis: the breaker is open.
	start := time.Now()
	for i := 0; i < 20; i++ {
		if _, err := a.Acquire(ctx, capacity.Reservation{ID: "share4", Pool: "share", Limits: lim}); !errors.Is(err, capacity.ErrPoolFull) {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("20 degraded acquires took %s: the breaker is not open", d)
	}

	srv.Restart()
	waitFor(t, 5*time.Second, "both replicas back to shared", func() bool {
		return a.Status().Mode == capacity.ModeShared && b.Status().Mode == capacity.ModeShared
	})
	for i, ml := range logs {
		if got := ml.String(); got != "[shared->degraded degraded->shared]" {
			t.Fatalf("replica %d mode changes %s", i, got)
		}
	}
	// Leases taken while degraded go back to the local store; while they run,
	// they count against the shared limit.
	for i := 0; i < 4; i++ {
		l, err := a.Acquire(ctx, capacity.Reservation{ID: fmt.Sprintf("after%d", i), Pool: "share", Limits: lim})
		if err != nil {
			t.Fatalf("shared acquire %d with 4 degraded leases running: %v", i, err)
		}
		held = append(held, l)
	}
	if _, err := a.Acquire(ctx, capacity.Reservation{ID: "after4", Pool: "share", Limits: lim}); !errors.Is(err, capacity.ErrPoolFull) {
		t.Fatalf("9th lease with limit 8: got %v, want ErrPoolFull", err)
	}
	for _, l := range held {
		a.Release(l, 0)
	}

	// Shared counting again, and nothing leaked anywhere.
	stop = make(chan struct{})
	before = admitted.Load()
	wa = load(t, a, "pool", lim, 4, stop, &admitted)
	waitFor(t, 5*time.Second, "load admitted after recovery", func() bool { return admitted.Load() > before+20 })
	close(stop)
	wa.Wait()
	for _, s := range []*capacity.Resilient{a, b} {
		for _, p := range []string{"pool", "share"} {
			if n := inFlight(t, s, p); n != 0 {
				t.Fatalf("pool %s: %d leases leaked", p, n)
			}
		}
	}
}

// A shared store that never answers in time: the first call waits at most
// the timeout, opens the breaker and is answered locally; the following ones
// never touch the shared store.
func TestResilientSlowStoreOpensBreaker(t *testing.T) {
	slow := &slowStore{delay: time.Second}
	var ml modeLog
	s, err := capacity.NewResilient(capacity.ResilientOptions{Shared: slow, Timeout: 50 * time.Millisecond, FailureThreshold: 2, ProbeEvery: time.Hour, OnModeChange: ml.record})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	lim := capacity.Limits{MaxConcurrent: 10}
	for i := 0; i < 5; i++ {
		start := time.Now()
		l, err := s.Acquire(ctx, capacity.Reservation{ID: fmt.Sprint(i), Pool: "p", Limits: lim})
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("acquire %d waited %s for a slow store", i, d)
		}
		if err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
		s.Release(l, 0)
	}
	if s.Status().Mode != capacity.ModeDegraded || ml.String() != "[shared->degraded]" {
		t.Fatalf("status %+v, changes %s", s.Status(), ml.String())
	}
	if n := slow.calls.Load(); n != 1 {
		t.Fatalf("shared store called %d times, want 1 (a timeout opens the breaker)", n)
	}
	if n := inFlight(t, s, "p"); n != 0 {
		t.Fatalf("leaked %d", n)
	}
}

type slowStore struct {
	delay time.Duration
	calls atomic.Int64
}

func (s *slowStore) Acquire(ctx context.Context, r capacity.Reservation) (capacity.Lease, error) {
	s.calls.Add(1)
	select {
	case <-time.After(s.delay):
		return capacity.Lease{ID: r.ID, Pool: r.Pool}, nil
	case <-ctx.Done():
		return capacity.Lease{}, ctx.Err()
	}
}
func (s *slowStore) Release(capacity.Lease, int64) {}
func (s *slowStore) Usage(ctx context.Context, pools []string) (map[string]capacity.PoolUsage, error) {
	<-ctx.Done()
	return nil, fmt.Errorf("%w: slow", capacity.ErrUnavailable)
}
func (s *slowStore) Status() capacity.Status {
	return capacity.Status{Mode: capacity.ModeShared, Replicas: 3}
}
func (s *slowStore) Close() error { return nil }

// The half-open probe runs on the store's clock: once the shared store
// answers again, the breaker closes at the next probe period the fake clock
// passes, with no waiting.
func TestResilientProbeRunsOnTheClock(t *testing.T) {
	sw := &switchStore{}
	sw.down.Store(true)
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	var ml modeLog
	s, err := capacity.NewResilient(capacity.ResilientOptions{Shared: sw, Clock: clk, FailureThreshold: 1, ProbeEvery: time.Minute, OnModeChange: ml.record})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := s.Acquire(context.Background(), capacity.Reservation{ID: "a", Pool: "p", Limits: capacity.Limits{MaxConcurrent: 2}})
	if err != nil {
		t.Fatalf("degraded acquire: %v", err)
	}
	s.Release(l, 0)
	if s.Status().Mode != capacity.ModeDegraded {
		t.Fatalf("status %+v after the shared store failed, want degraded", s.Status())
	}
	if !clk.WaitForWaiters(1, 5*time.Second) {
		t.Fatal("the probe set no ticker on the clock")
	}
	sw.down.Store(false)
	clk.Advance(time.Minute)
	waitFor(t, 5*time.Second, "shared mode after the probe period on the fake clock", func() bool { return s.Status().Mode == capacity.ModeShared })
	if got := ml.String(); got != "[shared->degraded degraded->shared]" {
		t.Fatalf("mode changes %s", got)
	}
}

// switchStore answers, or fails every call as unavailable while down is set.
type switchStore struct{ down atomic.Bool }

func (s *switchStore) Acquire(_ context.Context, r capacity.Reservation) (capacity.Lease, error) {
	if s.down.Load() {
		return capacity.Lease{}, fmt.Errorf("%w: down", capacity.ErrUnavailable)
	}
	return capacity.Lease{ID: r.ID, Pool: r.Pool}, nil
}
func (s *switchStore) Release(capacity.Lease, int64) {}
func (s *switchStore) Usage(context.Context, []string) (map[string]capacity.PoolUsage, error) {
	if s.down.Load() {
		return nil, fmt.Errorf("%w: down", capacity.ErrUnavailable)
	}
	return map[string]capacity.PoolUsage{}, nil
}
func (s *switchStore) Status() capacity.Status {
	return capacity.Status{Mode: capacity.ModeShared, Replicas: 1}
}
func (s *switchStore) Close() error { return nil }
