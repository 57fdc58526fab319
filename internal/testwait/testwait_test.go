package testwait

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records instead of stopping.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

// A condition true at once ends the wait at once, without a tick; one that
// comes true later ends it on the tick that sees it, and is not checked
// again.
func TestForReturnsWhenTheConditionHolds(t *testing.T) {
	calls := 0
	if took := For(t, time.Second, "nothing", func() bool { calls++; return true }); took != 0 || calls != 1 {
		t.Fatalf("a condition true at once: %d checks in %s", calls, took)
	}
	var n atomic.Int32
	For(t, 10*time.Second, "three checks", func() bool { return n.Add(1) >= 3 })
	if n.Load() != 3 {
		t.Fatalf("checked %d times, want exactly 3", n.Load())
	}
}

// A condition that never holds fails the test once, naming what was
// awaited, after the timeout and not before.
func TestForFailsNamingWhatItWaitedFor(t *testing.T) {
	rec := &fatalRecorder{TB: t}
	start := time.Now()
	For(rec, 30*time.Millisecond, "the moon to turn blue", func() bool { return false })
	if took := time.Since(start); took < 30*time.Millisecond {
		t.Fatalf("gave up after %s, before the 30ms timeout", took)
	}
	if !strings.Contains(rec.msg, "waiting for the moon to turn blue") || !strings.Contains(rec.msg, "30ms") {
		t.Fatalf("failure message %q does not say what it waited for and how long", rec.msg)
	}
	if Until(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("Until reported a condition that never held")
	}
	if !Until(time.Second, func() bool { return true }) {
		t.Fatal("Until missed a condition that held")
	}
}
