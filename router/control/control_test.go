package control_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchyard-dev/switchyard/router/capacity/redistest"
	"github.com/switchyard-dev/switchyard/router/control"
)

// contract runs the same assertions against every Store. newPair returns two
// stores sharing one backend (two replicas); for Memory both are the same.
func contract(t *testing.T, newPair func(t *testing.T) (control.Store, control.Store)) {
	ctx := context.Background()
	t.Run("UpdateGetVersion", func(t *testing.T) {
		a, b := newPair(t)
		s, err := a.Update(ctx, func(s *control.State) error { s.Weights["p"] = 2.5; s.Drained["q"] = true; return nil })
		if err != nil || s.Version != 1 {
			t.Fatalf("update: %v %v", s, err)
		}
		got, err := b.Get(ctx)
		if err != nil || got.Weights["p"] != 2.5 || !got.Drained["q"] || got.Version != 1 {
			t.Fatalf("other replica reads %+v %v", got, err)
		}
		boom := errors.New("refused")
		if _, err := b.Update(ctx, func(s *control.State) error { s.Weights["p"] = 9; return boom }); !errors.Is(err, boom) {
			t.Fatalf("fn error not returned: %v", err)
		}
		if got, _ := a.Get(ctx); got.Weights["p"] != 2.5 || got.Version != 1 {
			t.Fatalf("a refused update changed state: %+v", got)
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
		var seen atomic.Int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			b.Watch(wctx, func() {
				if s, err := b.Get(ctx); err == nil && s.Weights["w"] == 7 {
					seen.Store(1)
				}
			})
		}()
		time.Sleep(50 * time.Millisecond) // let the subscription start
		start := time.Now()
		if _, err := a.Update(ctx, func(s *control.State) error { s.Weights["w"] = 7; return nil }); err != nil {
			t.Fatal(err)
		}
		for seen.Load() == 0 && time.Since(start) < 3*time.Second {
			time.Sleep(5 * time.Millisecond)
		}
		if seen.Load() == 0 || time.Since(start) > time.Second {
			t.Fatalf("change seen by the other replica: %v after %v (want within 1s)", seen.Load() == 1, time.Since(start))
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
}

func TestMemoryContract(t *testing.T) {
	contract(t, func(t *testing.T) (control.Store, control.Store) {
		m := control.NewMemory(0)
		return m, m
	})
}

func TestRedisContract(t *testing.T) {
	srv := redistest.StartServer(t)
	n := 0
	contract(t, func(t *testing.T) (control.Store, control.Store) {
		n++
		prefix := "t" + string(rune('a'+n))
		mk := func() control.Store {
			c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			t.Cleanup(func() { _ = c.Close() })
			return control.NewRedis(control.RedisOptions{Client: c, KeyPrefix: prefix, Reread: 200 * time.Millisecond})
		}
		return mk(), mk()
	})
}

func TestRedisClusterContract(t *testing.T) {
	cl := redistest.StartCluster(t)
	n := 0
	contract(t, func(t *testing.T) (control.Store, control.Store) {
		n++
		prefix := "c" + string(rune('a'+n))
		mk := func() control.Store {
			c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
			t.Cleanup(func() { _ = c.Close() })
			return control.NewRedis(control.RedisOptions{Client: c, KeyPrefix: prefix, Reread: 200 * time.Millisecond})
		}
		return mk(), mk()
	})
}
