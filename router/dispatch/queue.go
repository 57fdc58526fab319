package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/priority"
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
	why   WaitResult    // WaitEvicted or WaitFull; set before shed is closed
	class int
}

func newWaitQueue(c clock.Clock, maxLen int) *waitQueue { return &waitQueue{clock: c, maxLen: maxLen} }

// WaitResult says how a wait ended.
type WaitResult int

const (
	WaitRetry   WaitResult = iota // capacity may be free: try again
	WaitFull                      // the queue was full (or a reload shortened it): shed now
	WaitEvicted                   // a higher-priority call took the place
)

// wait parks the caller until capacity may have freed up (wake: a local
// release, the server's poll tick for capacity freed by other replicas, or a
// waiter ahead that got a slot passing the baton), the queue evicts it, maxWait
// passes, or ctx ends. A caller that tried again after a wake and still found
// nothing waits again with front set, keeping its place ahead of newer calls.
func (q *waitQueue) wait(ctx context.Context, prio priority.Class, maxWait time.Duration, front bool) (WaitResult, error) {
	w := &waiter{ready: make(chan struct{}), shed: make(chan struct{}), class: prio.Index()}
	if !q.enqueue(w, front) {
		return WaitFull, nil
	}
	t := q.clock.NewTimer(maxWait)
	defer t.Stop()
	select {
	case <-w.ready:
		return WaitRetry, nil
	case <-w.shed:
		return w.why, nil
	case <-t.C():
		q.remove(w)
		return WaitRetry, nil
	case <-ctx.Done():
		q.remove(w)
		return WaitRetry, ctx.Err()
	}
}

func (q *waitQueue) enqueue(w *waiter, front bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n >= q.maxLen {
		// Evict the newest waiter of the lowest class below w's.
		q.shedLocked(w.class+1, WaitEvicted)
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
func (q *waitQueue) shedLocked(from int, why WaitResult) bool {
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
// reload). Waiters beyond it are shed at once with WaitFull, lowest priority
// and newest first, as if they had arrived at a queue of that length; it
// returns how many.
func (q *waitQueue) setMaxLen(n int) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.maxLen = n
	shed := 0
	for q.n > n && q.shedLocked(0, WaitFull) {
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
