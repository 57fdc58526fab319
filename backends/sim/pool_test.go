package sim

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// fast is a time scale at which a 100-token completion takes well under a millisecond.
const fast = 1e6

func newPool(t *testing.T, o Options) *Pool {
	t.Helper()
	if o.Name == "" {
		o.Name = "p"
	}
	if o.Accelerator == "" {
		o.Accelerator = "h100"
	}
	p, err := NewPool(o)
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func req(prompt string, maxTokens int) *pb.GenerateRequest {
	return &pb.GenerateRequest{Model: "llama-3.3-70b", Prompt: prompt, MaxTokens: int32(maxTokens), RequestId: "r-1"}
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("error %v: code %v, want %v", err, got, want)
	}
}

// waitFor polls cond for up to 5 s (testwait.For).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, 5*time.Second, what, cond)
}

// holder runs streams that block in send after their first chunk until released.
type holder struct {
	release chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	errs    []error
}

func newHolder() *holder { return &holder{release: make(chan struct{})} }

func (h *holder) start(p *Pool, maxTokens int) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		first := true
		err := p.GenerateStream(context.Background(), req("hold", maxTokens), func(*pb.GenerateChunk) error {
			if first {
				first = false
				<-h.release
			}
			return nil
		})
		h.mu.Lock()
		h.errs = append(h.errs, err)
		h.mu.Unlock()
	}()
}

func (h *holder) finish() []error {
	close(h.release)
	h.wg.Wait()
	return h.errs
}

func TestGenerateOutputMatchesTokenAccounting(t *testing.T) {
	p := newPool(t, Options{Name: "aws-h100", Accelerator: "h100", MaxBatch: 4, TimeScale: fast, Cloud: "aws", Region: "us-east-1"})
	resp, err := p.Generate(context.Background(), req("hello world, twelve.", 37))
	if err != nil {
		t.Fatal(err)
	}
	if got := backends.EstimateTokens(resp.Text); got != 37 {
		t.Errorf("text is %d tokens, want 37: %q", got, resp.Text)
	}
	if resp.Usage.GetOutputTokens() != 37 || resp.Usage.GetInputTokens() != 5 {
		t.Errorf("usage %v, want in 5 out 37", resp.Usage)
	}
	if resp.FinishReason != pb.FinishReason_FINISH_REASON_LENGTH {
		t.Errorf("finish %v", resp.FinishReason)
	}
	r := resp.Route
	if r.GetPool() != "aws-h100" || r.GetAccelerator() != "h100" || r.GetAttempts() != 1 || r.GetCloud() != "aws" || r.GetRegion() != "us-east-1" {
		t.Errorf("route %v", r)
	}
	if resp.RequestId != "r-1" {
		t.Errorf("request id %q", resp.RequestId)
	}
	again, err := p.Generate(context.Background(), req("hello world, twelve.", 37))
	if err != nil || again.Text != resp.Text {
		t.Errorf("same prompt gave different text (err %v)", err)
	}
}

func TestStreamChunksAddUp(t *testing.T) {
	p := newPool(t, Options{MaxBatch: 2, TimeScale: fast})
	var chunks []*pb.GenerateChunk
	err := p.GenerateStream(context.Background(), req("stream me", 100), func(c *pb.GenerateChunk) error {
		chunks = append(chunks, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tokens, text := 0, ""
	for i, c := range chunks {
		tokens += int(c.Tokens)
		text += c.Text
		last := i == len(chunks)-1
		if (c.Usage != nil) != last || (c.Route != nil) != last {
			t.Fatalf("chunk %d/%d: usage/route only on the last chunk", i, len(chunks))
		}
		if c.Tokens < 1 || c.Tokens > maxChunkTokens {
			t.Fatalf("chunk %d has %d tokens", i, c.Tokens)
		}
	}
	last := chunks[len(chunks)-1]
	if tokens != 100 || backends.EstimateTokens(text) != 100 || last.Usage.OutputTokens != 100 {
		t.Fatalf("tokens %d, text tokens %d, usage %v", tokens, backends.EstimateTokens(text), last.Usage)
	}
	if last.FinishReason != pb.FinishReason_FINISH_REASON_LENGTH || last.Route.GetPool() != "p" {
		t.Fatalf("last chunk %v", last)
	}
	unary, err := p.Generate(context.Background(), req("stream me", 100))
	if err != nil || unary.Text != text {
		t.Fatalf("stream and unary text differ (err %v)", err)
	}
}

func TestSendErrorStopsStream(t *testing.T) {
	p := newPool(t, Options{MaxBatch: 1, TimeScale: fast})
	boom := errors.New("client went away")
	calls := 0
	err := p.GenerateStream(context.Background(), req("x", 500), func(*pb.GenerateChunk) error {
		calls++
		return boom
	})
	if !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("err %v after %d sends, want the send error after 1", err, calls)
	}
	if s := p.Stats(); s.Running != 0 {
		t.Fatalf("slot leaked: %+v", s)
	}
}

func TestQueueingAndQueueFull(t *testing.T) {
	p := newPool(t, Options{Name: "small", MaxBatch: 2, QueueLength: 2, TimeScale: fast})
	h := newHolder()
	h.start(p, 200)
	h.start(p, 200)
	waitFor(t, "two running", func() bool { return p.Stats().Running == 2 })

	var wg sync.WaitGroup
	queuedErrs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, queuedErrs[i] = p.Generate(context.Background(), req("queued", 10))
		}()
	}
	waitFor(t, "two queued", func() bool { return p.Stats().Queued == 2 })

	_, err := p.Generate(context.Background(), req("one too many", 10))
	wantCode(t, err, codes.ResourceExhausted)
	if !strings.Contains(err.Error(), "pool small: queue full") {
		t.Errorf("message %q", err)
	}
	if s := p.Stats(); s.Running != 2 || s.Rejected != 1 {
		t.Fatalf("stats %+v", s)
	}
	for _, err := range h.finish() {
		if err != nil {
			t.Errorf("held stream: %v", err)
		}
	}
	wg.Wait()
	for _, err := range queuedErrs {
		if err != nil {
			t.Errorf("queued call: %v", err)
		}
	}
	s := p.Stats()
	if s.Served != 4 || s.Rejected != 1 || s.Running != 0 || s.Queued != 0 || s.MaxRunningSeen != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestQueueIsFIFO(t *testing.T) {
	p := newPool(t, Options{MaxBatch: 1, QueueLength: 10, TimeScale: fast})
	h := newHolder()
	h.start(p, 100)
	waitFor(t, "running", func() bool { return p.Stats().Running == 1 })
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Record the order at the first chunk: with a batch of one, call
			// i+1 cannot start before call i has finished, whereas recording
			// after the call returns races with the next call's return.
			first := true
			err := p.GenerateStream(context.Background(), req("q", 1), func(*pb.GenerateChunk) error {
				if first {
					first = false
					mu.Lock()
					order = append(order, i)
					mu.Unlock()
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
		waitFor(t, "queued", func() bool { return p.Stats().Queued == i+1 })
	}
	h.finish()
	wg.Wait()
	for i, v := range order {
		if v != i {
			t.Fatalf("start order %v, want FIFO", order)
		}
	}
}

func TestHighWaterNeverExceedsBatch(t *testing.T) {
	p := newPool(t, Options{MaxBatch: 4, QueueLength: 100, TimeScale: 1e4})
	var wg sync.WaitGroup
	for range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Generate(context.Background(), req("load", 40)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s := p.Stats()
	if s.MaxRunningSeen > 4 || s.MaxRunningSeen < 1 || s.Served != 60 {
		t.Fatalf("stats %+v", s)
	}
	p.ResetHighWater()
	if got := p.Stats().MaxRunningSeen; got != 0 {
		t.Fatalf("after reset high water %d", got)
	}
}

func TestDeadlineAndCancel(t *testing.T) {
	p := newPool(t, Options{MaxBatch: 1, QueueLength: 4, TimeScale: 1})
	// Running: 1000 tokens at ~10 ms each in real time cannot finish in 20 ms.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := p.Generate(ctx, req("slow", 1000))
	wantCode(t, err, codes.DeadlineExceeded)

	// Queued: the only slot is held, so the call waits and then times out.
	h := newHolder()
	h.start(p, 2)
	waitFor(t, "running", func() bool { return p.Stats().Running == 1 })
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	_, err = p.Generate(ctx2, req("waits", 1))
	wantCode(t, err, codes.DeadlineExceeded)
	if s := p.Stats(); s.Queued != 0 {
		t.Fatalf("timed-out call still queued: %+v", s)
	}

	ctx3, cancel3 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := p.Generate(ctx3, req("cancelled", 1)); done <- err }()
	waitFor(t, "queued", func() bool { return p.Stats().Queued == 1 })
	cancel3()
	wantCode(t, <-done, codes.Canceled)
	h.finish()
	if s := p.Stats(); s.Running != 0 || s.Queued != 0 {
		t.Fatalf("slots leaked: %+v", s)
	}
}

func TestDecodeSlowsWithBatch(t *testing.T) {
	for _, prof := range Profiles() {
		prev := prof.DecodeTokenTime(1)
		if prev != prof.DecodeBase || prof.DecodeTokenTime(0) != prev {
			t.Errorf("%s: decode(1) %v, base %v", prof.Name, prev, prof.DecodeBase)
		}
		for _, b := range []int{2, 8, 32, 64, 128, 256} {
			d := prof.DecodeTokenTime(b)
			if d <= prev {
				t.Errorf("%s: decode(%d)=%v not slower than the smaller batch (%v)", prof.Name, b, d, prev)
			}
			want := float64(prof.DecodeBase) * (1 + prof.DecodeSlope*float64(b-1))
			if diff := float64(d) - want; diff > 1 || diff < -1 {
				t.Errorf("%s: decode(%d)=%v, model says %v", prof.Name, b, d, time.Duration(want))
			}
			prev = d
		}
		// Per-sequence throughput still rises with batch (memory-bound decode).
		if tput := func(b int) float64 { return float64(b) / float64(prof.DecodeTokenTime(b)) }; tput(64) <= tput(1) {
			t.Errorf("%s: batching does not raise throughput", prof.Name)
		}
	}
}

func TestContinuationProducesRemainingTokens(t *testing.T) {
	p := newPool(t, Options{TimeScale: fast})
	full, err := p.Generate(context.Background(), req("continue me", 10))
	if err != nil {
		t.Fatal(err)
	}
	sent := full.Text[:4*backends.BytesPerToken]
	r := req("continue me", 10)
	r.Continuation = &pb.Continuation{GeneratedText: sent, GeneratedTokens: 4}
	rest, err := p.Generate(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if rest.Usage.OutputTokens != 6 || backends.EstimateTokens(rest.Text) != 6 {
		t.Fatalf("continuation produced %v (%q), want 6 tokens", rest.Usage, rest.Text)
	}
	if sent+rest.Text != full.Text {
		t.Fatalf("continuation text %q does not extend %q to %q", rest.Text, sent, full.Text)
	}
	if want := int32(backends.EstimateTokens("continue me") + 4); rest.Usage.InputTokens != want {
		t.Fatalf("input tokens %d, want %d (prompt + generated)", rest.Usage.InputTokens, want)
	}
	// Nothing left to generate: an empty, finished completion.
	r.Continuation = &pb.Continuation{GeneratedText: full.Text, GeneratedTokens: 10}
	var chunks []*pb.GenerateChunk
	if err := p.GenerateStream(context.Background(), r, func(c *pb.GenerateChunk) error { chunks = append(chunks, c); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(chunks) != 1 || chunks[0].Tokens != 0 || chunks[0].Usage.GetOutputTokens() != 0 || chunks[0].FinishReason != pb.FinishReason_FINISH_REASON_LENGTH {
		t.Fatalf("chunks %v", chunks)
	}
}

func TestEarlyStopIsDeterministic(t *testing.T) {
	p := newPool(t, Options{TimeScale: fast, EarlyStopRate: 1, Seed: 7})
	a, err := p.Generate(context.Background(), req("stop early", 50))
	if err != nil {
		t.Fatal(err)
	}
	if a.FinishReason != pb.FinishReason_FINISH_REASON_STOP || a.Usage.OutputTokens >= 50 || a.Usage.OutputTokens < 1 {
		t.Fatalf("got %v %v, want STOP before 50", a.FinishReason, a.Usage)
	}
	b, _ := p.Generate(context.Background(), req("stop early", 50))
	if b.Text != a.Text {
		t.Fatal("early stop not deterministic")
	}
	never := newPool(t, Options{TimeScale: fast})
	for i := range 50 {
		r, err := never.Generate(context.Background(), req(strings.Repeat("x", i), 20))
		if err != nil || r.FinishReason != pb.FinishReason_FINISH_REASON_LENGTH {
			t.Fatalf("default pool stopped early: %v %v", r, err)
		}
	}
}

func TestBadRequests(t *testing.T) {
	p := newPool(t, Options{TimeScale: fast, Models: []Model{{Name: "llama-3.3-70b", MaxInputTokens: 4, MaxOutputTokens: 100}}})
	ctx := context.Background()
	_, err := p.Generate(ctx, nil)
	wantCode(t, err, codes.InvalidArgument)
	_, err = p.Generate(ctx, req("x", 0))
	wantCode(t, err, codes.InvalidArgument)
	_, err = p.Generate(ctx, req("x", 101))
	wantCode(t, err, codes.InvalidArgument)
	_, err = p.Generate(ctx, req("a prompt longer than sixteen bytes", 1))
	wantCode(t, err, codes.InvalidArgument)
	r := req("x", 5)
	r.Model = "gpt-unknown"
	_, err = p.Generate(ctx, r)
	wantCode(t, err, codes.NotFound)
	r = req("x", 5)
	r.Continuation = &pb.Continuation{GeneratedTokens: -1}
	_, err = p.Generate(ctx, r)
	wantCode(t, err, codes.InvalidArgument)

	free := newPool(t, Options{TimeScale: fast})
	_, err = free.Generate(ctx, req("x", MaxOutputTokens+1))
	wantCode(t, err, codes.InvalidArgument)
}

func TestNewPoolValidates(t *testing.T) {
	for _, o := range []Options{
		{Accelerator: "h100"},
		{Name: "p", Accelerator: "tpu-v9"},
		{Name: "p", Accelerator: "h100", MaxBatch: -1},
		{Name: "p", Accelerator: "h100", QueueLength: -1},
		{Name: "p", Accelerator: "h100", TimeScale: -2},
		{Name: "p", Accelerator: "h100", EarlyStopRate: 1.5},
		{Name: "p", Accelerator: "h100", Models: []Model{{}}},
	} {
		if _, err := NewPool(o); err == nil {
			t.Errorf("NewPool(%+v) accepted", o)
		}
	}
	p := newPool(t, Options{Accelerator: "tpu-v5e"})
	o := p.Options()
	prof, _ := LookupProfile("tpu-v5e")
	if o.MaxBatch != prof.DefaultMaxBatch || o.QueueLength != 4*prof.DefaultMaxBatch || o.TimeScale != 1 {
		t.Fatalf("defaults not applied: %+v", o)
	}
}

func TestOutageFault(t *testing.T) {
	var mu sync.Mutex
	var seen []*pb.Fault
	p := newPool(t, Options{MaxBatch: 1, QueueLength: 4, TimeScale: fast, OnFaultChange: func(f *pb.Fault) {
		mu.Lock()
		seen = append(seen, f)
		mu.Unlock()
	}})
	h := newHolder()
	h.start(p, 1000) // running, blocked after its first chunk
	waitFor(t, "running", func() bool { return p.Stats().Running == 1 })
	queued := make(chan error, 1)
	go func() { _, err := p.Generate(context.Background(), req("queued", 5)); queued <- err }()
	waitFor(t, "queued", func() bool { return p.Stats().Queued == 1 })

	if err := p.SetFault(&pb.Fault{Outage: true}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, <-queued, codes.Unavailable)
	_, err := p.Generate(context.Background(), req("new", 5))
	wantCode(t, err, codes.Unavailable)
	wantCode(t, p.Check(context.Background()), codes.Unavailable)
	errs := h.finish()
	wantCode(t, errs[0], codes.Unavailable) // broken mid-stream
	if s := p.Stats(); s.Failed != 3 || s.Running != 0 || !s.Fault.Outage {
		t.Fatalf("stats %+v", s)
	}

	p.ClearFault()
	if err := p.Check(context.Background()); err != nil {
		t.Fatalf("check after clear: %v", err)
	}
	if _, err := p.Generate(context.Background(), req("after", 5)); err != nil {
		t.Fatalf("after clear: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || !seen[0].Outage || seen[1].Outage || seen[0].Pool != "p" {
		t.Fatalf("fault callbacks %v", seen)
	}
}

func TestCapacityLossFault(t *testing.T) {
	if got := effectiveBatch(10, 0.7); got != 3 {
		t.Fatalf("ceil(10×0.3) = %d, want 3", got)
	}
	if got := effectiveBatch(10, 1); got != 0 {
		t.Fatalf("full loss gives %d", got)
	}
	p := newPool(t, Options{MaxBatch: 4, QueueLength: 32, TimeScale: fast})
	h := newHolder()
	for range 4 {
		h.start(p, 100)
	}
	waitFor(t, "four running", func() bool { return p.Stats().Running == 4 })
	if err := p.SetFault(&pb.Fault{CapacityLoss: 0.75}); err != nil {
		t.Fatal(err)
	}
	// Running calls keep going; a new one waits until running drops below 1.
	queued := make(chan error, 1)
	go func() { _, err := p.Generate(context.Background(), req("waits", 5)); queued <- err }()
	waitFor(t, "queued", func() bool { return p.Stats().Queued == 1 })
	if s := p.Stats(); s.EffectiveBatch != 1 || s.Running != 4 || s.Fault.CapacityLoss != 0.75 {
		t.Fatalf("stats %+v", s)
	}
	for _, err := range h.finish() {
		if err != nil {
			t.Errorf("running call broken by capacity loss: %v", err)
		}
	}
	if err := <-queued; err != nil {
		t.Fatal(err)
	}
	p.ResetHighWater()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Generate(context.Background(), req("x", 30)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if s := p.Stats(); s.MaxRunningSeen != 1 {
		t.Fatalf("high water %d under 75%% loss of 4, want 1", s.MaxRunningSeen)
	}
}

func TestSlowdownFault(t *testing.T) {
	// 100 tokens on h100 take about 1.05 s of simulated time: ~1 ms at scale 1000.
	p := newPool(t, Options{MaxBatch: 4, TimeScale: 1000})
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := p.Generate(ctx, req("slow me", 100))
		return err
	}
	if err := call(); err != nil {
		t.Fatalf("healthy pool: %v", err)
	}
	if err := p.SetFault(&pb.Fault{Slowdown: 1000}); err != nil { // now ~1 s
		t.Fatal(err)
	}
	wantCode(t, call(), codes.DeadlineExceeded)
}

func TestErrorRateFault(t *testing.T) {
	p := newPool(t, Options{TimeScale: fast, Seed: 1})
	if err := p.SetFault(&pb.Fault{ErrorRate: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := p.Generate(context.Background(), req("x", 1))
	wantCode(t, err, codes.Unavailable)
	if err := p.SetFault(&pb.Fault{ErrorRate: 0.5}); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for range 200 {
		if _, err := p.Generate(context.Background(), req("x", 1)); err != nil {
			wantCode(t, err, codes.Unavailable)
			failed++
		}
	}
	if failed < 60 || failed > 140 {
		t.Fatalf("%d of 200 failed at error_rate 0.5", failed)
	}
	if s := p.Stats(); s.Failed != int64(failed+1) || s.Served != int64(200-failed) {
		t.Fatalf("stats %+v", s)
	}
}

func TestFaultValidation(t *testing.T) {
	p := newPool(t, Options{})
	for _, f := range []*pb.Fault{nil, {CapacityLoss: 1.5}, {CapacityLoss: -0.1}, {ErrorRate: 2}, {Slowdown: -1}} {
		if err := p.SetFault(f); err == nil {
			t.Errorf("fault %v accepted", f)
		}
	}
}

func TestClosedPoolRefuses(t *testing.T) {
	p := newPool(t, Options{TimeScale: fast})
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := p.Generate(context.Background(), req("x", 1))
	wantCode(t, err, codes.Unavailable)
	wantCode(t, p.Check(context.Background()), codes.Unavailable)
	if err := p.Close(); err != nil {
		t.Fatal("second close:", err)
	}
}

func BenchmarkGenerate(b *testing.B) {
	p, err := NewPool(Options{Name: "bench", Accelerator: "h100", MaxBatch: 64, TimeScale: 1e9})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	r := req("benchmark prompt", 256)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Generate(context.Background(), r); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// The simulation runs on its clock: on a clock.Fake a call takes exactly
// its prefill plus its decode time, and no time passes unless the test moves
// the clock. Load reports carry the clock's time.
func TestSimulationRunsOnItsClock(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	p := newPool(t, Options{Clock: clk, PrefixCacheBlocks: -1})
	req := &pb.GenerateRequest{Model: "m", Prompt: strings.Repeat("tokens ", 200), MaxTokens: 8}
	pl, err := p.plan(req)
	if err != nil {
		t.Fatal(err)
	}
	want := p.scaled(p.prof.PrefillTime(pl.inTokens), pl.factor) + 8*p.scaled(p.prof.DecodeTokenTime(1), pl.factor)
	if l, _ := p.Load(); !l.At.Equal(clk.Now()) {
		t.Fatalf("load report at %v, want the clock's %v", l.At, clk.Now())
	}
	type result struct {
		resp *pb.GenerateResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := p.Generate(context.Background(), req)
		done <- result{resp, err}
	}()
	// The call waits on the clock; just short of its time it waits still.
	if !clk.WaitForWaiters(1, 5*time.Second) {
		t.Fatal("the call set no timer on the clock")
	}
	clk.Advance(want - time.Nanosecond)
	if !clk.WaitForWaiters(1, 5*time.Second) {
		t.Fatal("the call finished before its prefill and decode time")
	}
	select {
	case r := <-done:
		t.Fatalf("the call finished %s early: %v", time.Nanosecond, r.err)
	default:
	}
	clk.Advance(time.Nanosecond)
	select {
	case r := <-done:
		if r.err != nil || r.resp.GetUsage().GetOutputTokens() != 8 {
			t.Fatalf("got %v, %v: want 8 tokens", r.resp.GetUsage(), r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not finish at its prefill and decode time")
	}
}
