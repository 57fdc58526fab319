package router_test

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/capacity/redistest"
)

// callTiming is one call of the stall test.
type callTiming struct {
	start, end time.Time
	replica    int
	err        error
}

// TestRedisStalledMidLoadNoCallWaits: two router replicas share one
// redis-server; mid-load Redis stalls for 2 s (DEBUG SLEEP 2). No call waits
// longer than the Redis timeout plus normal service time (the slowest call
// before the stall), none fails, both replicas serve on their local share
// while Redis sleeps and go back to shared counting after, and every counter
// is back to 0 at the end (a slot Redis granted to a caller that had already
// left is released). Before the timeout was enforced every call waited out
// the stall.
func TestRedisStalledMidLoadNoCallWaits(t *testing.T) {
	const limit, clients, stall, timeout = 8, 6, 2 * time.Second, 150 * time.Millisecond
	srv := redistest.StartServerWith(t, "--enable-debug-command", "yes")
	sp := &simPool{name: e2ePool, cloud: "aws", region: "us-east-1", accel: "h100", limit: limit, timeScale: 50}
	startSimPool(t, sp)
	fleet := parseFleet(t, oneHotPoolYAML(sp.addr, limit, "5s"))
	r1 := startRedisReplica(t, fleet, srv.URL(), "r1", capacity.RedisOptions{Timeout: timeout}, capacity.ResilientOptions{Timeout: timeout})
	r2 := startRedisReplica(t, fleet, srv.URL(), "r2", capacity.RedisOptions{Timeout: timeout}, capacity.ResilientOptions{Timeout: timeout})
	replicas := []*redisReplica{r1, r2}

	var mu sync.Mutex
	var calls []callTiming
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ { // bounded; stopped long before
				select {
				case <-stop:
					return
				default:
				}
				k := (c + i) % 2
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				start := time.Now()
				_, err := replicas[k].inf.Generate(ctx, req("us-east-1", 48)) // ~40ms each
				end := time.Now()
				cancel()
				mu.Lock()
				calls = append(calls, callTiming{start: start, end: end, replica: k + 1, err: err})
				mu.Unlock()
			}
		}(c)
	}
	stopLoad := func() {
		select {
		case <-stop:
			return
		default:
		}
		close(stop)
		wg.Wait()
	}
	defer stopLoad()

	loadStart := time.Now()
	eventually(t, 5*time.Second, "a second of calls before the stall", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) > 20 && time.Since(loadStart) > time.Second
	})
	done, err := srv.Stall(stall)
	if err != nil {
		t.Fatal(err)
	}
	stallStart := time.Now().Add(-50 * time.Millisecond) // Stall returns once a 50ms PING went unanswered
	for i, r := range replicas {
		eventually(t, 2*time.Second, "replica degraded during the stall", func() bool { return r.store.Status().Mode == capacity.ModeDegraded })
		t.Logf("replica %d degraded %s into the stall", i+1, time.Since(stallStart).Round(time.Millisecond))
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("DEBUG SLEEP: %v", err)
		}
	case <-time.After(stall + 10*time.Second):
		t.Fatal("the stall did not end")
	}
	stallEnd := time.Now()
	for i, r := range replicas {
		took := eventually(t, 5*time.Second, "replica back to shared counting", func() bool { return r.store.Status().Mode == capacity.ModeShared })
		t.Logf("replica %d shared again %s after the stall", i+1, took.Round(time.Millisecond))
	}
	after := time.Now()
	eventually(t, 5*time.Second, "calls after the stall", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range calls {
			if c.start.After(after) {
				n++
			}
		}
		return n > 20
	})
	stopLoad()

	var before, during, later []time.Duration
	servedInStall := 0
	for _, c := range calls {
		if c.err != nil {
			t.Errorf("call through replica %d at %s: %v", c.replica, c.start.Sub(loadStart).Round(time.Millisecond), c.err)
			continue
		}
		d := c.end.Sub(c.start)
		switch {
		case c.end.Before(stallStart):
			before = append(before, d)
		case c.start.Before(stallEnd):
			during = append(during, d)
			if c.start.After(stallStart.Add(timeout)) && c.end.Before(stallEnd) {
				servedInStall++
			}
		default:
			later = append(later, d)
		}
	}
	normal := maxDur(before)
	t.Logf("calls before the stall %d (p50 %s, max %s), overlapping it %d (p50 %s, max %s; %d started and ended inside it), after %d (p50 %s, max %s)",
		len(before), pct(before, 50), normal, len(during), pct(during, 50), maxDur(during), servedInStall, len(later), pct(later, 50), maxDur(later))
	if len(before) == 0 || len(during) == 0 {
		t.Fatalf("no calls to compare (%d before, %d during)", len(before), len(during))
	}
	// A call that waited for Redis would take about the whole 2s stall; one
	// that gave up after the timeout takes the timeout, a queue retry and its
	// normal service. The 1s slack covers scheduling on a loaded machine
	// (the race detector, other test binaries) and still tells the two apart.
	if bound := timeout + normal + time.Second; maxDur(during) > bound || bound >= stall {
		t.Errorf("a call overlapping the stall took %s, more than the Redis timeout %s + normal service %s (+1s slack, which must stay under the %s stall)", maxDur(during), timeout, normal, stall)
	}
	if servedInStall < 20 {
		t.Errorf("only %d calls were served while Redis slept; both replicas should serve on their local share", servedInStall)
	}
	assertNothingLeaked(t, r1, r2)
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)*p/100].Round(time.Millisecond)
}
