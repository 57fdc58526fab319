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
// shed itself. A reload that shortens the queue (setMaxLen) sheds the
// waiters beyond the new length at once, lowest priority and newest first.
// Safe for concurrent use.
type waitQueue struct {
	clock   clock.Clock
	mu      sync.Mutex
	maxLen  int
	n       int
	classes [3][]*waiter // interactive, standard, batch
}

type waiter struct {
	ready chan struct{} // closed when the waiter should try again
	shed  chan struct{} // closed when the queue dropped it; why says how
	why   waitResult    // waitEvicted or waitFull; set before shed is closed
	class int
}

func classOf(p pb.Priority) int { return priority.FromWire(p).Index() }

func newWaitQueue(c clock.Clock, maxLen int) *waitQueue { return &waitQueue{clock: c, maxLen: maxLen} }

// waitResult says how a wait ended.
type waitResult int

const (
	waitRetry   waitResult = iota // capacity may be free: try again
	waitFull                      // the queue was full (or a reload shortened it): shed now
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
		return w.why, nil
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
		q.shedLocked(w.class+1, waitEvicted)
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

// shedLocked drops the newest waiter of the lowest class at or below
// class index from (a larger index is a lower priority) and tells it why;
// it reports whether there was one.
func (q *waitQueue) shedLocked(from int, why waitResult) bool {
	for c := len(q.classes) - 1; c >= from; c-- {
		if l := len(q.classes[c]); l > 0 {
			victim := q.classes[c][l-1]
			q.classes[c] = q.classes[c][:l-1]
			victim.why = why
			close(victim.shed)
			q.n--
			return true
		}
	}
	return false
}

// setMaxLen makes n the queue's length (routing.queue_max_length, on
// reload). Waiters beyond it are shed at once with waitFull, lowest priority
// and newest first, as if they had arrived at a queue of that length; it
// returns how many.
func (q *waitQueue) setMaxLen(n int) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.maxLen = n
	shed := 0
	for q.n > n && q.shedLocked(0, waitFull) {
		shed++
	}
	return shed
}

// maxLength is the queue's current length limit.
func (q *waitQueue) maxLength() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.maxLen
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
