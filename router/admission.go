package router

import (
	"context"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/priority"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// waitQueue holds calls that found no headroom anywhere, for at most a short
// bounded wait, and lets them try again in priority order when capacity
// frees up. When the queue is full, a newcomer evicts the newest waiter of a
// lower priority (batch is shed before standard before interactive) or is
// shed itself. Safe for concurrent use.
type waitQueue struct {
	clock   clock.Clock
	mu      sync.Mutex
	maxLen  int
	n       int
	classes [3][]*waiter // interactive, standard, batch
}

type waiter struct {
	ready chan struct{} // closed when the waiter should try again
	shed  chan struct{} // closed when a higher-priority call evicted it
	class int
}

func classOf(p pb.Priority) int { return priority.Class(p) }

func newWaitQueue(c clock.Clock, maxLen int) *waitQueue { return &waitQueue{clock: c, maxLen: maxLen} }

// waitResult says how a wait ended.
type waitResult int

const (
	waitRetry   waitResult = iota // capacity may be free: try again
	waitFull                      // the queue was full: shed now
	waitEvicted                   // a higher-priority call took the place
)

// wait parks the caller until capacity may have freed up (wake: a local
// release, the server's poll tick for capacity freed by other replicas, or a
// waiter ahead that got a slot passing the baton), the queue evicts it, maxWait
// passes, or ctx ends. A caller that tried again after a wake and still found
// nothing waits again with front set, keeping its place ahead of newer calls.
func (q *waitQueue) wait(ctx context.Context, prio pb.Priority, maxWait time.Duration, front bool) (waitResult, error) {
	w := &waiter{ready: make(chan struct{}), shed: make(chan struct{}), class: classOf(prio)}
	if !q.enqueue(w, front) {
		return waitFull, nil
	}
	t := q.clock.NewTimer(maxWait)
	defer t.Stop()
	select {
	case <-w.ready:
		return waitRetry, nil
	case <-w.shed:
		return waitEvicted, nil
	case <-t.C():
		q.remove(w)
		return waitRetry, nil
	case <-ctx.Done():
		q.remove(w)
		return waitRetry, ctx.Err()
	}
}

func (q *waitQueue) enqueue(w *waiter, front bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n >= q.maxLen {
		// Evict the newest waiter of the lowest class below w's.
		for c := len(q.classes) - 1; c > w.class; c-- {
			if l := len(q.classes[c]); l > 0 {
				victim := q.classes[c][l-1]
				q.classes[c] = q.classes[c][:l-1]
				close(victim.shed)
				q.n--
				break
			}
		}
		if q.n >= q.maxLen {
			return false
		}
	}
	if front {
		q.classes[w.class] = append([]*waiter{w}, q.classes[w.class]...)
	} else {
		q.classes[w.class] = append(q.classes[w.class], w)
	}
	q.n++
	return true
}

func (q *waitQueue) remove(w *waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	list := q.classes[w.class]
	for i, x := range list {
		if x == w {
			q.classes[w.class] = append(list[:i], list[i+1:]...)
			q.n--
			return
		}
	}
}

// wake lets the first waiter of the highest class try again; called on every release.
func (q *waitQueue) wake() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for c := range q.classes {
		if len(q.classes[c]) > 0 {
			w := q.classes[c][0]
			q.classes[c] = q.classes[c][1:]
			q.n--
			close(w.ready)
			return
		}
	}
}

// length returns the number of waiting calls.
func (q *waitQueue) length() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// retryBudget caps extra attempts at a fraction of calls over a sliding
// window (with a small floor so a quiet router can still retry), the way
// Envoy's retry budgets and gRPC's retry throttling do. Safe for concurrent use.
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
