package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/priority"
	"github.com/switchyard-dev/switchyard/internal/testwait"
)

func TestWaitQueueWakesInPriorityOrder(t *testing.T) {
	q := newWaitQueue(clock.Real{}, 10)
	order := make(chan string, 3)
	start := func(name string, p priority.Class) {
		go func() {
			res, err := q.wait(context.Background(), p, time.Hour, false)
			if err == nil && res == WaitRetry {
				order <- name
			}
		}()
	}
	start("batch", priority.Batch)
	waitLen(t, q, 1)
	start("standard", priority.Standard)
	waitLen(t, q, 2)
	start("interactive", priority.Interactive)
	waitLen(t, q, 3)
	for _, want := range []string{"interactive", "standard", "batch"} {
		q.wake()
		if got := <-order; got != want {
			t.Fatalf("woke %s, want %s", got, want)
		}
	}
}

func TestFullQueueShedsBatchBeforeInteractive(t *testing.T) {
	q := newWaitQueue(clock.Real{}, 2)
	// The waiters left at the end give up when the test ends.
	wctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	results := make(chan WaitResult, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, _ := q.wait(wctx, priority.Batch, time.Hour, false)
			results <- res
		}()
	}
	waitLen(t, q, 2)
	// A standard call evicts the newest batch waiter.
	wg.Add(1)
	go func() { defer wg.Done(); _, _ = q.wait(wctx, priority.Standard, time.Hour, false) }()
	if res := <-results; res != WaitEvicted {
		t.Fatalf("batch waiter got %v, want evicted", res)
	}
	waitLen(t, q, 2)
	// Another batch call finds no lower class to evict: it is shed at once.
	res, err := q.wait(context.Background(), priority.Batch, time.Hour, false)
	if err != nil || res != WaitFull {
		t.Fatalf("batch into a full queue: %v %v, want WaitFull", res, err)
	}
	// The caller's deadline ends a wait.
	q2 := newWaitQueue(clock.Real{}, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := q2.wait(ctx, priority.Interactive, time.Hour, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past the deadline: %v", err)
	}
	if q2.length() != 0 {
		t.Fatal("a waiter that gave up stays queued")
	}
}

func waitLen(t *testing.T, q *waitQueue, n int) {
	t.Helper()
	testwait.For(t, 2*time.Second, fmt.Sprintf("a wait queue of %d calls", n), func() bool { return q.length() == n })
}

func TestRetryBudget(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	b := newRetryBudget(clk, 0.2)
	for i := 0; i < 10; i++ {
		if !b.canRetry() {
			t.Fatal("canRetry refused under the floor")
		}
	}
	// The floor lets a quiet router retry a few times.
	for i := 0; i < 3; i++ {
		if !b.allowRetry() {
			t.Fatalf("retry %d refused under the floor", i)
		}
	}
	if b.allowRetry() {
		t.Fatal("4th retry with no calls allowed")
	}
	for i := 0; i < 100; i++ {
		b.call()
	}
	allowed := 0
	for i := 0; i < 100; i++ {
		if b.allowRetry() {
			allowed++
		}
	}
	// 20% of 100 calls = 20 retries in the window, 3 already taken.
	if allowed != 17 {
		t.Fatalf("allowed %d retries after 100 calls, want 17", allowed)
	}
	clk.Advance(25 * time.Second) // both windows pass
	if !b.allowRetry() {
		t.Fatal("budget did not refill after the window")
	}
}

func TestEjectionBacksOffAndHealthIsSeparate(t *testing.T) {
	now := time.Unix(1000, 0)
	p := Ejection{AfterFailures: 3, Base: 5 * time.Second, Max: 40 * time.Second}
	h := &health{}
	boom := errors.New("unavailable")
	for i := 0; i < 2; i++ {
		if h.failure(now, p, boom) {
			t.Fatal("ejected before 3 consecutive failures")
		}
	}
	h.success() // a success resets the streak
	h.failure(now, p, boom)
	h.failure(now, p, boom)
	if !h.failure(now, p, boom) || !h.ejected(now) {
		t.Fatal("3 consecutive failures must eject")
	}
	if h.ejected(now.Add(5 * time.Second)) {
		t.Fatal("first ejection must last the base time")
	}
	now = now.Add(6 * time.Second)
	for i := 0; i < 3; i++ {
		h.failure(now, p, boom)
	}
	if !h.ejected(now.Add(9*time.Second)) || h.ejected(now.Add(10*time.Second)) {
		t.Fatal("second ejection must last twice the base time")
	}
	if h.isUnhealthy() {
		t.Fatal("passive ejection must not mark the active health check failed")
	}
	for i := 1; i <= unhealthyAfterChecks; i++ {
		changed := h.setActive(false, boom)
		if want := i == unhealthyAfterChecks; h.isUnhealthy() != want || changed != want {
			t.Fatalf("after %d failed active checks: unhealthy %v (changed %v), want %v", i, h.isUnhealthy(), changed, want)
		}
	}
	if !h.setActive(true, nil) || h.isUnhealthy() {
		t.Fatal("one passing check must bring the pool back")
	}
	h.setActive(false, boom)
	if h.isUnhealthy() {
		t.Fatal("one failed check after a pass must not take the pool out")
	}
}

func TestRetryingWaiterKeepsItsPlace(t *testing.T) {
	q := newWaitQueue(clock.Real{}, 10)
	order := make(chan string, 2)
	go func() {
		if res, _ := q.wait(context.Background(), priority.Standard, time.Hour, false); res == WaitRetry {
			order <- "newer"
		}
	}()
	waitLen(t, q, 1)
	go func() {
		if res, _ := q.wait(context.Background(), priority.Standard, time.Hour, true); res == WaitRetry {
			order <- "retrying"
		}
	}()
	waitLen(t, q, 2)
	q.wake()
	if got := <-order; got != "retrying" {
		t.Fatalf("woke %s first, want the waiter that was already queued before", got)
	}
	q.wake()
	<-order
	// maxWait bounds a wait with nobody waking it.
	start := time.Now()
	if res, err := q.wait(context.Background(), priority.Batch, 20*time.Millisecond, false); res != WaitRetry || err != nil || q.length() != 0 {
		t.Fatalf("timed-out wait: %v %v, queue length %d", res, err, q.length())
	}
	if time.Since(start) > time.Second {
		t.Fatal("maxWait not honoured")
	}
}
