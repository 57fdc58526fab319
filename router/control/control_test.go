package control_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/redis/go-redis/v9"

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
