package loadtest

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	"github.com/switchyard-dev/switchyard/loadtest/testfake"
	"github.com/switchyard-dev/switchyard/loadtest/trace"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// slice is a trace.Reader over fixed requests.
type slice struct {
	reqs []trace.Request
	i    int
}

func (s *slice) Next() (trace.Request, error) {
	if s.i >= len(s.reqs) {
		return trace.Request{}, io.EOF
	}
	s.i++
	return s.reqs[s.i-1], nil
}

func client(t *testing.T, addr string) pb.InferenceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewInferenceClient(conn)
}

func everySecond(n, tokens int) *slice {
	s := &slice{}
	for i := 0; i < n; i++ {
		s.reqs = append(s.reqs, trace.Request{Offset: time.Duration(i) * time.Second, InputTokens: tokens, OutputTokens: 4})
	}
	return s
}

// TestReplayIsOpenLoop: every call blocks in the server until the end, yet
// each arrival goes out exactly when the (fake) trace clock reaches it.
func TestReplayIsOpenLoop(t *testing.T) {
	release := make(chan struct{})
	srv := testfake.Start(t, testfake.Options{Block: release})
	fake := clock.NewFake(time.Unix(1_700_000_000, 0))
	stats := NewStats(true, time.Second)
	const n = 5
	done := make(chan error, 1)
	go func() {
		done <- Replay(context.Background(), ReplayOptions{
			Client: client(t, srv.Addr), Source: everySecond(n, 100), Stats: stats, Clock: fake,
			Speedup: 2, Model: "fake-model", MaxConcurrency: 100, Timeout: 20 * time.Second,
		})
	}()
	start := fake.Now()
	for i := 1; i <= n; i++ {
		if !srv.WaitCalls(i, 10*time.Second) {
			t.Fatalf("arrival %d not sent while %d earlier calls were blocked", i, i-1)
		}
		if got := len(srv.Calls()); got != i {
			t.Fatalf("after %v of fake time: %d calls, want %d (an arrival went out early)", fake.Now().Sub(start), got, i)
		}
		if srv.Completed() != 0 {
			t.Fatal("a blocked call completed")
		}
		if i < n {
			if !fake.WaitForWaiters(1, 10*time.Second) {
				t.Fatal("replayer is not waiting on the clock")
			}
			fake.Advance(500 * time.Millisecond) // 1s of trace at speedup 2
		}
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Replay did not return after the calls were released")
	}
	live := stats.Live()
	if live.Done != n || live.OK != n {
		t.Errorf("done/ok = %d/%d, want %d", live.Done, live.OK, n)
	}
	rep := stats.Report("t", RunConfig{Streaming: true}, start, 4*time.Second)
	if rep.Latency["scheduler_lag"].Max != 0.001 { // 1µs is the histogram's floor: no lag on a fake clock
		t.Errorf("scheduler lag = %+v, want none", rep.Latency["scheduler_lag"])
	}
	for _, c := range srv.Calls() {
		if c.PromptTokens != 100 || c.MaxTokens != 4 {
			t.Errorf("call %+v: want 100 prompt tokens and max_tokens 4", c)
		}
	}
}

// TestReplayDropsOverCap: with two calls held and a cap of two, the next
// arrivals are dropped and counted, never queued.
func TestReplayDropsOverCap(t *testing.T) {
	release := make(chan struct{})
	srv := testfake.Start(t, testfake.Options{Block: release})
	stats := NewStats(true, time.Second)
	done := make(chan error, 1)
	go func() {
		done <- Replay(context.Background(), ReplayOptions{
			Client: client(t, srv.Addr), Source: everySecond(5, 10), Stats: stats,
			Speedup: 1000, Model: "fake-model", MaxConcurrency: 2, Timeout: 20 * time.Second,
		})
	}()
	if !srv.WaitCalls(2, 10*time.Second) {
		t.Fatal("first calls not sent")
	}
	// The remaining arrivals are due within 4ms of real time; wait for them to be dropped.
	testwait.For(t, 5*time.Second, "the three arrivals over the cap to be dropped", func() bool { return stats.Live().Dropped >= 3 })
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rep := stats.Report("t", RunConfig{Streaming: true}, time.Now(), 4*time.Second)
	if rep.Requests.Scheduled != 5 || rep.Requests.Sent != 2 || rep.Requests.DroppedClientCap != 3 || rep.Requests.OK != 2 {
		t.Errorf("counts = %+v", rep.Requests)
	}
	if rep.SuccessRatio != 0.4 {
		t.Errorf("success ratio = %v, want 0.4", rep.SuccessRatio)
	}
}

func TestReplayCapsPromptsAndRecordsRoutes(t *testing.T) {
	srv := testfake.Start(t, testfake.Options{MaxInputTokens: 50})
	stats := NewStats(false, time.Second)
	src := &slice{reqs: []trace.Request{
		{Offset: 0, InputTokens: 10, OutputTokens: 0},
		{Offset: time.Millisecond, InputTokens: 500, OutputTokens: 3000},
		{Offset: 2 * time.Millisecond, InputTokens: 50, OutputTokens: 2},
	}}
	mix, _ := ParsePriorityMix("batch=1")
	err := Replay(context.Background(), ReplayOptions{
		Client: client(t, srv.Addr), Source: src, Stats: stats, Speedup: 1, Model: "fake-model",
		MaxInputTokens: 50, MaxOutputTokens: 2048, Unary: true, Priorities: mix,
	})
	if err != nil {
		t.Fatal(err)
	}
	calls := srv.Calls()
	want := map[string][2]int{"load-0": {10, 1}, "load-1": {50, 2048}, "load-2": {50, 2}}
	for _, c := range calls {
		w := want[c.RequestID]
		if c.PromptTokens != w[0] || int(c.MaxTokens) != w[1] || c.Priority != pb.Priority_PRIORITY_BATCH {
			t.Errorf("%s: prompt %d max %d prio %v, want %v batch", c.RequestID, c.PromptTokens, c.MaxTokens, c.Priority, w)
		}
	}
	rep := stats.Report("t", RunConfig{}, time.Now(), time.Second)
	if rep.Requests.CappedInput != 1 || rep.Requests.CappedOutput != 1 || rep.Requests.OK != 3 {
		t.Errorf("counts = %+v", rep.Requests)
	}
	if len(rep.Pools) != 3 || len(rep.Clouds) != 3 || rep.Pools[0].Requests != 1 || rep.Statuses["OK"] != 3 {
		t.Errorf("pools = %+v statuses = %v", rep.Pools, rep.Statuses)
	}
	if _, ok := rep.Latency["ttft"]; ok {
		t.Error("unary run reports TTFT")
	}
}

func TestReplayRecordsErrorsByCode(t *testing.T) {
	srv := testfake.Start(t, testfake.Options{})
	stats := NewStats(true, time.Second)
	err := Replay(context.Background(), ReplayOptions{
		Client: client(t, srv.Addr), Source: everySecond(3, 5), Stats: stats, Speedup: 1000, Model: "no-such-model",
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := stats.Report("t", RunConfig{Streaming: true}, time.Now(), time.Second)
	if rep.Statuses["NotFound"] != 3 || rep.Requests.Failed != 3 || rep.Requests.Unrouted != 3 || rep.ErrorSamples["NotFound"] == nil {
		t.Errorf("report = %+v %v", rep.Requests, rep.Statuses)
	}
	if len(rep.Timeline.Windows) == 0 || rep.Timeline.Windows[0].Errors["NotFound"] == 0 {
		t.Errorf("timeline = %+v", rep.Timeline)
	}
}

func TestPromptsExactTokens(t *testing.T) {
	p := NewPrompts(8192)
	for _, n := range []int{1, 2, 3, 7, 100, 4096, 8192} {
		if got := backends.EstimateTokens(p.Build(12345, n, nil)); got != n {
			t.Errorf("Build(%d) = %d tokens", n, got)
		}
		if got := backends.EstimateTokens(p.Build(1, n, []int64{3, 4, 5})); got != n {
			t.Errorf("Build(%d, hash ids) = %d tokens", n, got)
		}
	}
	a, b := p.Build(1, 1100, []int64{7, 8, 9}), p.Build(2, 1100, []int64{7, 8, 10})
	if a[:2*MooncakeBlockTokens*4] != b[:2*MooncakeBlockTokens*4] || a == b {
		t.Error("shared hash_ids do not give a shared prefix")
	}
	if p.Build(1, 50, nil) == p.Build(2, 50, nil) {
		t.Error("prompts of different requests are identical")
	}
	// A salted run shares blocks within itself, never with another run.
	s1, s2 := p.Salted("run1 "), p.Salted("run2 ")
	x, y := s1.Build(1, 1100, []int64{7, 8, 9}), s1.Build(2, 1100, []int64{7, 8, 10})
	if x[:2*MooncakeBlockTokens*4] != y[:2*MooncakeBlockTokens*4] || backends.EstimateTokens(x) != 1100 {
		t.Error("a salted run's shared hash_ids do not share a prefix")
	}
	if z := s2.Build(1, 1100, []int64{7, 8, 9}); z[:64] == x[:64] || z[:64] == a[:64] {
		t.Error("runs with different salts share a prompt head")
	}
	if s1.Build(5, 100, nil)[:20] == s2.Build(5, 100, nil)[:20] {
		t.Error("salted request heads are equal across runs")
	}
}

func TestParsePriorityMix(t *testing.T) {
	m, err := ParsePriorityMix("interactive=0.7, batch=0.3")
	if err != nil || m.String() != "batch=0.3,interactive=0.7" {
		t.Fatalf("%v %q", err, m.String())
	}
	for _, bad := range []string{"urgent=1", "interactive", "batch=-1", "batch=0", "batch=1,batch=2"} {
		if _, err := ParsePriorityMix(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSLOCheck(t *testing.T) {
	r := RunReport{Label: "x", Config: RunConfig{Streaming: true}, SuccessRatio: 0.98,
		Latency: map[string]Dist{"ttft": {Count: 10, P99: 250}}}
	if err := (SLO{TTFTP99: 300 * time.Millisecond, Success: 0.95}).Check(&r); err != nil || len(r.SLOs) != 2 {
		t.Errorf("met SLOs: %v %+v", err, r.SLOs)
	}
	err := (SLO{TTFTP99: 200 * time.Millisecond, Success: 0.99}).Check(&r)
	if err == nil || !strings.Contains(err.Error(), "p99 TTFT 250.0ms > 200.0ms") || !strings.Contains(err.Error(), "success ratio 0.9800 < 0.9900") {
		t.Errorf("missed SLOs: %v", err)
	}
}
