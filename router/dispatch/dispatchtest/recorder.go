package dispatchtest

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/internal/priority"
	"github.com/switchyard-dev/switchyard/router/dispatch"
)

// Recorder is an Observer that remembers what the dispatcher told it.
// Safe for concurrent use; its methods return copies.
type Recorder struct {
	dispatch.NopObserver
	mu       sync.Mutex
	acquires []string // pool names, "!" prefixed when Acquire failed
	attempts []string // "pool:outcome"
	retries  int64
	sheds    []string
	waits    []dispatch.WaitResult
	ejected  []string
}

var _ dispatch.Observer = (*Recorder)(nil)

// Acquired implements dispatch.Observer.
func (r *Recorder) Acquired(_ context.Context, p *dispatch.Pool, _ time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	name := p.Name()
	if err != nil {
		name = "!" + name
	}
	r.acquires = append(r.acquires, name)
}

// AttemptDone implements dispatch.Observer.
func (r *Recorder) AttemptDone(_ context.Context, a *dispatch.Attempt, oc dispatch.Outcome, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, a.Pool.Name()+":"+oc.String())
	if a.N > 1 {
		r.retries++
	}
}

// Ejected implements dispatch.Observer.
func (r *Recorder) Ejected(_ context.Context, p *dispatch.Pool, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ejected = append(r.ejected, p.Name())
}

// Shed implements dispatch.Observer.
func (r *Recorder) Shed(_ context.Context, why dispatch.ShedReason, _ priority.Class) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sheds = append(r.sheds, why.String())
}

// QueueWaited implements dispatch.Observer.
func (r *Recorder) QueueWaited(_ context.Context, _ priority.Class, _ time.Duration, res dispatch.WaitResult, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waits = append(r.waits, res)
}

// Acquires are the pools a slot was asked of, in order, "!" prefixed
// where Acquire failed.
func (r *Recorder) Acquires() []string { return get(r, &r.acquires) }

// Attempts are the attempts' "pool:outcome", in order.
func (r *Recorder) Attempts() []string { return get(r, &r.attempts) }

// Pools are the pools attempts ran on, in order.
func (r *Recorder) Pools() []string {
	var out []string
	for _, a := range r.Attempts() {
		for i := len(a) - 1; i >= 0; i-- {
			if a[i] == ':' {
				out = append(out, a[:i])
				break
			}
		}
	}
	return out
}

// Retries is how many retries the retry budget was charged: one per
// attempt after a call's first (a retry is charged once it holds a slot).
func (r *Recorder) Retries() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.retries
}

// Sheds are the shed reasons, in order.
func (r *Recorder) Sheds() []string { return get(r, &r.sheds) }

// Ejections are the pools ejected, in order.
func (r *Recorder) Ejections() []string { return get(r, &r.ejected) }

// Waits are how the calls' waits in the queue ended, in order.
func (r *Recorder) Waits() []dispatch.WaitResult { return get(r, &r.waits) }

func get[T any](r *Recorder, s *[]T) []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(*s)
}
