package capacity_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/capacity/redistest"
)

// A stalled Redis (DEBUG SLEEP) holds an Acquire no longer than the store's
// timeout, and the slot the script grants once Redis wakes up, after the
// caller left, is released again (and its charge refunded): nothing stays
// orphaned until the lease TTL.
func TestRedisStallBoundedAndLateGrantReleased(t *testing.T) {
	srv := redistest.StartServerWith(t, "--enable-debug-command", "yes")
	clk := clock.NewFake(capacitytestStart)
	prefix := fmt.Sprintf("stall%d", prefixSeq.Add(1))
	const timeout = 100 * time.Millisecond
	s := newRedis(t, srv.URL(), clk, func(o *capacity.RedisOptions) {
		o.KeyPrefix, o.Timeout, o.LeaseTTL = prefix, timeout, time.Minute
	})
	ctx := context.Background()
	pool := "stalled"
	lim := capacity.Limits{MaxConcurrent: 4}
	// Warm up: scripts loaded, a connection open.
	l, err := s.Acquire(ctx, capacity.Reservation{ID: "warm", Pool: pool, Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	s.Release(l, 0)
	flushWithin(t, s, 5*time.Second)

	done, err := srv.Stall(2 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Acquire(ctx, capacity.Reservation{ID: "late", Pool: pool, Limits: lim, Tokens: 7})
	took := time.Since(start)
	if !errors.Is(err, capacity.ErrUnavailable) {
		t.Fatalf("acquire during a stall: %v, want ErrUnavailable", err)
	}
	if took > timeout+400*time.Millisecond {
		t.Fatalf("acquire during a 2s stall took %s, want about the %s timeout", took, timeout)
	}
	// The caller's own deadline is honoured too, when it is shorter.
	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	start = time.Now()
	_, err = s.Usage(cctx, []string{pool})
	cancel()
	if err == nil || time.Since(start) > 400*time.Millisecond {
		t.Fatalf("usage during a stall: %v after %s, want an error within the caller's 30ms", err, time.Since(start))
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("DEBUG SLEEP: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stall did not end")
	}
	flushWithin(t, s, 10*time.Second)
	// The late script ran (its minute bucket exists) and was undone.
	key := fmt.Sprintf("%s:{pool:%s}:rpm:%d", prefix, pool, capacitytestStart.Unix()/60)
	if v, err := redistest.Do(srv.Addr(), "GET", key); err != nil || v != "1" {
		// 1: the warm-up's request; the late one was counted and refunded.
		t.Fatalf("GET %s = %q, %v; want 1 (warm-up only)", key, v, err)
	}
	// Only the late call charged tokens (7): the bucket exists and is back to 0.
	tkey := fmt.Sprintf("%s:{pool:%s}:tpm:%d", prefix, pool, capacitytestStart.Unix()/60)
	if v, err := redistest.Do(srv.Addr(), "GET", tkey); err != nil || v != "0" {
		t.Fatalf("GET %s = %q, %v; want 0 (the late grant charged 7 tokens, then refunded)", tkey, v, err)
	}
	if n, err := redistest.Do(srv.Addr(), "ZCARD", prefix+":{pool:"+pool+"}:leases"); err != nil || n != "0" {
		t.Fatalf("leases left in Redis after the stall: %q %v, want 0", n, err)
	}
	u, err := s.Usage(ctx, []string{pool})
	if err != nil || u[pool].InFlight != 0 {
		t.Fatalf("usage after the stall: %+v %v, want nothing in flight", u, err)
	}
	// The same request id is free again.
	l, err = s.Acquire(ctx, capacity.Reservation{ID: "late", Pool: pool, Limits: lim})
	if err != nil {
		t.Fatalf("the id of the abandoned acquire: %v", err)
	}
	s.Release(l, 0)
}

var capacitytestStart = time.Date(2026, 11, 26, 12, 0, 5, 0, time.UTC)

func flushWithin(t *testing.T, s *capacity.Redis, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
}
