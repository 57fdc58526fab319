// Package controltest is the contract every control.Store passes: updates
// are atomic and versioned, an update whose function fails changes nothing,
// concurrent updates from two replicas are never lost, a change made on one
// replica reaches the other's Watch within a second, and the audit trail
// reads newest first. Run it from a test of the store's package with a
// function returning two stores that share one backend (two replicas; the
// same store twice for a single-replica implementation):
//
//	func TestContract(t *testing.T) {
//		controltest.Run(t, func(t *testing.T) (control.Store, control.Store) { ... })
//	}
package controltest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/router/control"
)

// Run runs the contract; newPair is called once per subtest.
func Run(t *testing.T, newPair func(t *testing.T) (control.Store, control.Store)) {
	ctx := context.Background()
	t.Run("UpdateGetVersion", func(t *testing.T) {
		a, b := newPair(t)
		s, err := a.Update(ctx, func(s *control.State) error {
			s.Weights["p"] = 2.5
			s.Drained["q"] = true
			s.Overrides["r"] = control.Override{Limit: 3, Expires: time.Unix(2_000_000_000, 0).UTC()}
			s.Policy = "least_request"
			s.Actor = "alice"
			return nil
		})
		if err != nil || s.Version != 1 {
			t.Fatalf("update: %v %v", s, err)
		}
		got, err := b.Get(ctx)
		if err != nil || got.Weights["p"] != 2.5 || !got.Drained["q"] || got.Version != 1 || got.Policy != "least_request" || got.Actor != "alice" ||
			got.Overrides["r"].Limit != 3 || !got.Overrides["r"].Expires.Equal(time.Unix(2_000_000_000, 0)) {
			t.Fatalf("other replica reads %+v %v", got, err)
		}
		boom := errors.New("refused")
		if _, err := b.Update(ctx, func(s *control.State) error { s.Weights["p"] = 9; return boom }); !errors.Is(err, boom) {
			t.Fatalf("fn error not returned: %v", err)
		}
		if got, _ := a.Get(ctx); got.Weights["p"] != 2.5 || got.Version != 1 {
			t.Fatalf("a refused update changed state: %+v", got)
		}
		// Get returns a copy: changing it changes nothing stored.
		got.Weights["p"] = 100
		if again, _ := a.Get(ctx); again.Weights["p"] != 2.5 {
			t.Fatalf("Get shares its maps with the store: %+v", again)
		}
	})
	t.Run("ConcurrentUpdatesAreNotLost", func(t *testing.T) {
		a, b := newPair(t)
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			s := a
			if i%2 == 1 {
				s = b
			}
			go func() {
				defer wg.Done()
				if _, err := s.Update(ctx, func(st *control.State) error { st.Weights["n"]++; return nil }); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		got, _ := a.Get(ctx)
		if got.Weights["n"] != 20 || got.Version != 20 {
			t.Fatalf("after 20 increments: %v (version %d)", got.Weights["n"], got.Version)
		}
	})
	t.Run("WatchSeesOtherReplicasChange", func(t *testing.T) {
		a, b := newPair(t)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var last atomic.Value // the weight "w" the watcher last read
		last.Store(0.0)
		done := make(chan struct{})
		go func() {
			defer close(done)
			b.Watch(wctx, func() {
				if s, err := b.Get(ctx); err == nil {
					last.Store(s.Weights["w"])
				}
			})
		}()
		// Watch has no "subscribed" signal: change w until the watcher
		// reports one (it is running), bounded by a deadline.
		deadline := time.Now().Add(5 * time.Second)
		for last.Load().(float64) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("Watch never reported a change")
			}
			if _, err := a.Update(ctx, func(s *control.State) error { s.Weights["w"]++; return nil }); err != nil {
				t.Fatal(err)
			}
			waitUntil(func() bool { return last.Load().(float64) != 0 }, 50*time.Millisecond)
		}
		// Now the promise: one change on a reaches b within a second.
		start := time.Now()
		if _, err := a.Update(ctx, func(s *control.State) error { s.Weights["w"] = 7; return nil }); err != nil {
			t.Fatal(err)
		}
		waitUntil(func() bool { return last.Load().(float64) == 7 }, 3*time.Second)
		if took := time.Since(start); last.Load().(float64) != 7 || took > time.Second {
			t.Fatalf("change seen by the other replica: %v after %v (want within 1s)", last.Load().(float64) == 7, took)
		}
		cancel()
		<-done
	})
	t.Run("Audit", func(t *testing.T) {
		a, b := newPair(t)
		for i, act := range []string{"weight", "drain", "resume"} {
			if err := a.AppendAudit(ctx, control.Entry{Time: time.Unix(int64(i), 0).UTC(), Actor: "alice", Action: act, Pool: "p", Before: "x", After: "y"}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := b.Audit(ctx, 2)
		if err != nil || len(got) != 2 || got[0].Action != "resume" || got[1].Action != "drain" || got[0].Actor != "alice" {
			t.Fatalf("audit newest first: %+v %v", got, err)
		}
	})
	t.Run("HonoursContext", func(t *testing.T) {
		a, _ := newPair(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		done := make(chan struct{})
		go func() { a.Watch(cctx, func() {}); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Watch kept running after its context ended")
		}
	})
}

// waitUntil polls cond every few milliseconds for at most d.
func waitUntil(cond func() bool, d time.Duration) {
	deadline := time.Now().Add(d)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
}
