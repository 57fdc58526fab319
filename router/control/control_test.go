package control_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/redis/go-redis/v9"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/router/capacity/redistest"
	"github.com/switchyard-dev/switchyard/router/control"
	"github.com/switchyard-dev/switchyard/router/control/controltest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemoryContract(t *testing.T) {
	controltest.Run(t, func(t *testing.T) (control.Store, control.Store) {
		m := control.NewMemory(0)
		return m, m
	})
}

func TestRedisContract(t *testing.T) {
	srv := redistest.StartServer(t)
	n := 0
	controltest.Run(t, func(t *testing.T) (control.Store, control.Store) {
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
	controltest.Run(t, func(t *testing.T) (control.Store, control.Store) {
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

// A change whose notification was lost (written without a publish) reaches
// watchers at the next re-read, timed by the store's clock: the fake clock
// moves a minute and the watcher hears of it, no waiting.
func TestRedisRereadHealsALostNotification(t *testing.T) {
	srv := redistest.StartServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	st := control.NewRedis(control.RedisOptions{Client: c, KeyPrefix: "heal", Reread: time.Minute, Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	heard := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.Watch(ctx, func() {
			select {
			case heard <- struct{}{}:
			default:
			}
		})
	}()
	defer func() { cancel(); <-done }()
	if !clk.WaitForWaiters(1, 5*time.Second) {
		t.Fatal("Watch set no re-read ticker on the clock")
	}
	if err := c.Set(ctx, "heal:{control}:state", `{"policy":"random","version":7}`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	select {
	case <-heard:
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher did not re-read after the re-read period passed on the clock")
	}
	got, err := st.Get(ctx)
	if err != nil || got.Version != 7 || got.Policy != "random" {
		t.Fatalf("state %+v %v, want version 7 with policy random", got, err)
	}
}
