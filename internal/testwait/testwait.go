// Package testwait waits in tests for a condition to hold: it polls on a
// ticker for at most a bounded time and, when the time is up, fails the
// test naming what it waited for. Tests use it instead of sleeping in a
// loop (the charter: no time.Sleep to wait for a condition), so a wait ends
// as soon as the condition holds, however fast or slow the machine is.
//
// It imports nothing of the project, so every package's tests may use it.
package testwait

import (
	"testing"
	"time"
)

// Interval is how often a condition is checked.
const Interval = 10 * time.Millisecond

// For checks cond at once and then every Interval until it holds, and
// returns how long that took. If it still does not hold after timeout, For
// fails the test with t.Fatalf("... waiting for <what>"). Call it from the
// test's goroutine (t.Fatalf's rule); cond runs on that goroutine too.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	took, ok := poll(timeout, cond)
	if !ok {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
	return took
}

// Until is For for callers that report a timeout themselves (with the
// state they saw): it reports whether cond held within timeout.
func Until(timeout time.Duration, cond func() bool) bool {
	_, ok := poll(timeout, cond)
	return ok
}

func poll(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	if cond() {
		return 0, true
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if cond() {
				return time.Since(start), true
			}
		case <-deadline.C:
			// One last look: the condition may have come true just now.
			return time.Since(start), cond()
		}
	}
}
