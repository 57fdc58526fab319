package capacity

import (
	"math"
	"time"
)

// windowCount is a sliding one-minute window approximated by two fixed
// buckets (the current minute and the one before), weighting the previous
// bucket by how much of it still overlaps the window. Not safe for concurrent
// use; callers lock.
type windowCount struct {
	bucket int64 // start of the current bucket, unix minutes
	cur    int64
	prev   int64
}

func minuteOf(t time.Time) int64 { return t.Unix() / 60 }

func (w *windowCount) roll(now time.Time) {
	m := minuteOf(now)
	switch {
	case m == w.bucket:
	case m == w.bucket+1:
		w.prev, w.cur, w.bucket = w.cur, 0, m
	default:
		w.prev, w.cur, w.bucket = 0, 0, m
	}
}

// estimate returns the sliding-window count at now.
func (w *windowCount) estimate(now time.Time) int64 {
	w.roll(now)
	elapsed := float64(now.Sub(time.Unix(w.bucket*60, 0))) / float64(Window)
	// Round the previous bucket's share up: a sliding window must never
	// admit more than its limit because of truncation (1 × 0.99 is still 1).
	return w.cur + int64(math.Ceil(float64(w.prev)*(1-elapsed)))
}

// admit adds n when the window stays within limit (0 = unlimited) and
// reports whether it did, with how long until the next bucket otherwise.
func (w *windowCount) admit(now time.Time, n, limit int64) (bool, time.Duration) {
	if limit <= 0 {
		w.roll(now)
		w.cur += n
		return true, 0
	}
	if w.estimate(now)+n > limit {
		next := time.Unix((w.bucket+1)*60, 0)
		return false, next.Sub(now)
	}
	w.cur += n
	return true, 0
}

// adjust corrects a charge made at 'at' by delta (settlement), if its bucket
// is still counted.
func (w *windowCount) adjust(now, at time.Time, delta int64) {
	w.roll(now)
	switch minuteOf(at) {
	case w.bucket:
		w.cur = max(0, w.cur+delta)
	case w.bucket - 1:
		w.prev = max(0, w.prev+delta)
	}
}
