package dispatch

import (
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
)

// retryBudget caps extra attempts at a fraction of calls over a sliding
// window (with a small floor so a quiet router can still retry), the way
// Envoy's retry budgets and gRPC's retry throttling do. A reload changes the
// fraction (setRatio) and keeps the window's counts. Safe for concurrent use.
type retryBudget struct {
	clock  clock.Clock
	ratio  float64
	floor  int64 // retries always allowed per window
	window time.Duration

	mu       sync.Mutex
	start    time.Time
	calls    int64
	retries  int64
	pCalls   int64
	pRetries int64
}

func newRetryBudget(c clock.Clock, ratio float64) *retryBudget {
	return &retryBudget{clock: c, ratio: ratio, floor: 3, window: 10 * time.Second, start: c.Now()}
}

// setRatio makes r the fraction of calls that may be retried
// (routing.retry_budget, on reload); the counts so far stay.
func (b *retryBudget) setRatio(r float64) {
	b.mu.Lock()
	b.ratio = r
	b.mu.Unlock()
}

func (b *retryBudget) rollLocked(now time.Time) {
	for now.Sub(b.start) >= b.window {
		b.pCalls, b.pRetries = b.calls, b.retries
		b.calls, b.retries = 0, 0
		b.start = b.start.Add(b.window)
		if now.Sub(b.start) >= b.window {
			b.pCalls, b.pRetries = 0, 0
			b.start = now
		}
	}
}

// call counts one client call.
func (b *retryBudget) call() {
	b.mu.Lock()
	b.rollLocked(b.clock.Now())
	b.calls++
	b.mu.Unlock()
}

// allowRetry takes one retry from the budget when there is one.
func (b *retryBudget) allowRetry() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.canRetryLocked() {
		return false
	}
	b.retries++
	return true
}

// canRetry reports whether the budget has a retry left, taking none.
func (b *retryBudget) canRetry() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.canRetryLocked()
}

func (b *retryBudget) canRetryLocked() bool {
	b.rollLocked(b.clock.Now())
	calls, retries := b.calls+b.pCalls, b.retries+b.pRetries
	return retries < b.floor || float64(retries+1) <= b.ratio*float64(calls)
}
