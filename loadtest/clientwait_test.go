package loadtest

import (
	"testing"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// TestConnPickerFewestInFlight: calls go to the connection with the fewest
// calls in flight, the first of equals first, and a finished call frees its
// connection's share.
func TestConnPickerFewestInFlight(t *testing.T) {
	p := newConnPicker(nil, make([]pb.InferenceClient, 3))
	var got []int
	for range 7 {
		got = append(got, p.pick())
	}
	want := []int{0, 1, 2, 0, 1, 2, 0}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("picks %v, want %v", got, want)
		}
	}
	p.done(2)
	p.done(2)
	if c := p.pick(); c != 2 {
		t.Errorf("after two calls on connection 2 ended, picked %d", c)
	}
	if one := newConnPicker(nil, nil); len(one.clients) != 1 || one.pick() != 0 {
		t.Error("no Clients: the one Client")
	}
}

// TestSchedWatchCountsGoroutineWakeups: goroutines woken during a watch are
// in its distribution (the runtime samples them), its quantiles in order.
func TestSchedWatchCountsGoroutineWakeups(t *testing.T) {
	w := WatchSched()
	done := make(chan struct{})
	for range 100 {
		go func() { done <- struct{}{} }()
		<-done
	}
	d := w.Stop()
	if d.Count == 0 || d.P50 > d.P99 || d.P99 > d.Max {
		t.Errorf("sched latencies %+v", d)
	}
}
