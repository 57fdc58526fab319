package capacity_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/capacity/capacitytest"
	"github.com/switchyard-dev/switchyard/router/capacity/redistest"
	"github.com/switchyard-dev/switchyard/router/clock"
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

func TestRedisContract(t *testing.T) {
	srv := redistest.StartServer(t)
	capacitytest.Run(t, func(t *testing.T, clk clock.Clock) capacity.Store {
		return newRedis(t, srv.URL(), clk, nil)
	})
}

func TestRedisClusterContract(t *testing.T) {
	cl := redistest.StartCluster(t)
	capacitytest.Run(t, func(t *testing.T, clk clock.Clock) capacity.Store {
		return newRedis(t, cl.URL(), clk, nil)
	})
}

var _ = time.Second
