package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/loadtest/trace"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// ReplayOptions configures Replay.
type ReplayOptions struct {
	Client pb.InferenceClient // required unless Clients is set
	// Clients, when set, are several connections to the same target (Client
	// is then ignored): each call goes to the one with the fewest calls in
	// flight, so no connection carries more than its share of the streams.
	Clients []pb.InferenceClient
	// ClientMarksSend: the clients call MarkSent when a request leaves (gRPC
	// connections dialled with SendTimer, OpenAIClient), so each call's
	// client wait — from its start until its request left — is measured. A
	// call that ends without a mark spent all its time in the client.
	ClientMarksSend bool
	Source          trace.Reader // required; already scaled and limited
	Stats           *Stats       // required
	Clock           clock.Clock  // default clock.Real{}
	// Start is the wall time that trace offset 0 maps to; default Clock.Now() when Replay starts.
	Start time.Time
	// Speedup divides the trace clock: 60 replays an hour in a minute. Default 1.
	Speedup float64
	// MaxConcurrency caps calls in flight; arrivals over it are dropped, never delayed. Default 1000.
	MaxConcurrency int
	// MaxRequests bounds how many arrivals are taken from Source. Default 10,000,000.
	MaxRequests int
	// Model is sent in every request (required).
	Model string
	// MaxInputTokens and MaxOutputTokens cap prompts and max_tokens (0: no cap).
	MaxInputTokens, MaxOutputTokens int
	// Unary uses Generate instead of GenerateStream.
	Unary      bool
	Priorities PriorityMix
	Routing    *pb.RoutingHints
	// Timeout bounds each call. Default 2 minutes.
	Timeout time.Duration
	// Seed makes priority assignment reproducible. Default 1.
	Seed uint64
	// PromptSalt, when set, goes into every prompt (at most 32 bytes), so
	// runs with different salts share no prompt prefixes: a run never finds
	// the previous run's prompts in the servers' prefix caches. Prompts that
	// share Mooncake hash_ids still share their blocks within the run.
	PromptSalt string
	// OnBadLine is called for every bad trace line (default: ignored; they are reported by the pre-pass).
	OnBadLine func(error)
	// OnDone is called after every finished or dropped arrival (progress display).
	OnDone func()
}

// Defaults for ReplayOptions.
const (
	DefaultMaxConcurrency = 1000
	DefaultTimeout        = 2 * time.Minute
	DefaultMaxRequests    = 10_000_000
	// DefaultMaxPromptTokens caps prompt synthesis when the model states no limit.
	DefaultMaxPromptTokens = 128 * 1024
)

func (o *ReplayOptions) validate() error {
	if (o.Client == nil && len(o.Clients) == 0) || o.Source == nil || o.Stats == nil {
		return errors.New("replay: Client (or Clients), Source and Stats are required")
	}
	for i, c := range o.Clients {
		if c == nil {
			return fmt.Errorf("replay: Clients[%d] is nil", i)
		}
	}
	if o.Model == "" {
		return errors.New("replay: no model")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Speedup == 0 {
		o.Speedup = 1
	}
	if !(o.Speedup > 0) || math.IsInf(o.Speedup, 0) {
		return fmt.Errorf("replay: speedup must be > 0, got %v", o.Speedup)
	}
	if o.MaxConcurrency <= 0 {
		o.MaxConcurrency = DefaultMaxConcurrency
	}
	if o.MaxRequests <= 0 {
		o.MaxRequests = DefaultMaxRequests
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	return nil
}

// Replay sends Source's arrivals open-loop: each at Start + Offset/Speedup on
// Clock, in its own goroutine, whatever earlier calls are doing. It returns
// once Source is exhausted (or MaxRequests taken, or ctx is done) and every
// call has finished. Cancelling ctx stops arrivals and cancels calls in flight.
func Replay(ctx context.Context, o ReplayOptions) error {
	if err := o.validate(); err != nil {
		return err
	}
	if o.Start.IsZero() {
		o.Start = o.Clock.Now()
	}
	maxIn := o.MaxInputTokens
	if maxIn <= 0 {
		maxIn = DefaultMaxPromptTokens
	}
	prompts := NewPrompts(maxIn)
	if o.PromptSalt != "" {
		prompts = prompts.Salted(o.PromptSalt + " ")
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x9e3779b97f4a7c15))
	slots := make(chan struct{}, o.MaxConcurrency)
	conns := newConnPicker(o.Client, o.Clients)
	var wg sync.WaitGroup
	defer wg.Wait()

	for i := 0; i < o.MaxRequests; i++ {
		req, err := o.Source.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if trace.IsLineError(err) {
				if o.OnBadLine != nil {
					o.OnBadLine(err)
				}
				i-- // a bad line is not an arrival
				continue
			}
			return err
		}
		due := o.Start.Add(time.Duration(float64(req.Offset) / o.Speedup))
		if wait := due.Sub(o.Clock.Now()); wait > 0 {
			select {
			case <-o.Clock.After(wait):
			case <-ctx.Done():
				return nil
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		o.Stats.Scheduled()
		prio := o.Priorities.pick(rng)
		select {
		case slots <- struct{}{}:
		default:
			o.Stats.Dropped(req.Offset)
			if o.OnDone != nil {
				o.OnDone()
			}
			continue
		}
		call := o.build(prompts, i, req, prio)
		conn := conns.pick()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			out := o.call(ctx, conns.clients[conn], call, due)
			conns.done(conn)
			o.Stats.Record(out, o.Clock.Now())
			if o.OnDone != nil {
				o.OnDone()
			}
		}()
	}
	return nil
}

// callSpec is one prepared request.
type callSpec struct {
	req     *pb.GenerateRequest
	arrival time.Duration
}

func (o *ReplayOptions) build(prompts *Prompts, i int, r trace.Request, prio pb.Priority) callSpec {
	in, out := max(r.InputTokens, 1), max(r.OutputTokens, 1)
	cappedIn := o.MaxInputTokens > 0 && in > o.MaxInputTokens
	if cappedIn {
		in = o.MaxInputTokens
	}
	in = min(in, DefaultMaxPromptTokens)
	cappedOut := o.MaxOutputTokens > 0 && out > o.MaxOutputTokens
	if cappedOut {
		out = o.MaxOutputTokens
	}
	if cappedIn || cappedOut {
		o.Stats.Capped(cappedIn, cappedOut)
	}
	return callSpec{
		arrival: r.Offset,
		req: &pb.GenerateRequest{
			Model:     o.Model,
			Prompt:    prompts.Build(i, in, r.HashIDs),
			MaxTokens: int32(out),
			Priority:  prio,
			Routing:   o.Routing,
			RequestId: "load-" + strconv.Itoa(i),
		},
	}
}

// connPicker spreads calls over connections, fewest in flight first. pick
// runs on Replay's arrival loop only; done from any call's goroutine.
type connPicker struct {
	clients  []pb.InferenceClient
	inFlight []atomic.Int64
}

func newConnPicker(one pb.InferenceClient, many []pb.InferenceClient) *connPicker {
	if len(many) == 0 {
		many = []pb.InferenceClient{one}
	}
	return &connPicker{clients: many, inFlight: make([]atomic.Int64, len(many))}
}

func (p *connPicker) pick() int {
	best := 0
	for i := 1; i < len(p.inFlight); i++ {
		if p.inFlight[i].Load() < p.inFlight[best].Load() {
			best = i
		}
	}
	p.inFlight[best].Add(1)
	return best
}

func (p *connPicker) done(i int) { p.inFlight[i].Add(-1) }

// call runs one request on client and measures it.
func (o *ReplayOptions) call(parent context.Context, client pb.InferenceClient, c callSpec, due time.Time) Outcome {
	ctx, cancel := context.WithTimeout(parent, o.Timeout)
	defer cancel()
	start := o.Clock.Now()
	o.Stats.Sent(start)
	out := Outcome{Arrival: c.arrival, Lag: start.Sub(due), Priority: c.req.Priority}
	var mark *sendMark
	if o.ClientMarksSend {
		mark = &sendMark{clk: o.Clock}
		ctx = withSendMark(ctx, mark)
	}
	// clientWait records how long the call waited before its request left:
	// until the mark, or all of its time so far when none came.
	clientWait := func() {
		if mark == nil {
			return
		}
		out.ClientWaitKnown = true
		if at, ok := mark.get(); ok {
			out.ClientWait = at.Sub(start)
		} else {
			out.ClientWait = o.Clock.Now().Sub(start)
		}
	}
	if o.Unary {
		resp, err := client.Generate(ctx, c.req)
		out.E2E = o.Clock.Now().Sub(start)
		clientWait()
		if err != nil {
			return withError(out, err)
		}
		out.Route = resp.GetRoute()
		if u := resp.GetUsage(); u != nil && (u.GetOutputTokens() > 0 || u.GetInputTokens() > 0) {
			out.useUsage(u)
		} else {
			// No usage from the server: estimate from the text, and say so.
			out.OutputTokens, out.TokensEstimated = backends.EstimateTokens(resp.GetText()), true
		}
		return out
	}
	stream, err := client.GenerateStream(ctx, c.req)
	clientWait()
	if err != nil {
		out.E2E = o.Clock.Now().Sub(start)
		return withError(out, err)
	}
	var last time.Time
	var usage *pb.Usage
	tokens := 0
	for chunks := 0; chunks <= int(c.req.MaxTokens)+maxExtraChunks; chunks++ {
		chunk, err := stream.Recv()
		now := o.Clock.Now()
		out.E2E = now.Sub(start)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			out.OutputTokens = tokens
			return withError(out, err)
		}
		n := int(chunk.GetTokens())
		if n == 0 && chunk.GetText() != "" {
			n = 1
		}
		if n > 0 {
			if tokens == 0 {
				out.TTFT = now.Sub(start)
			} else {
				out.ITL = append(out.ITL, ITLSample{PerToken: now.Sub(last) / time.Duration(n), Tokens: n})
			}
			last = now
			tokens += n
		}
		if r := chunk.GetRoute(); r != nil {
			out.Route = r
		}
		if u := chunk.GetUsage(); u != nil {
			usage = u
		}
	}
	out.OutputTokens = tokens
	if usage != nil && (usage.GetOutputTokens() > 0 || usage.GetInputTokens() > 0) {
		// The server's count wins over the chunks' (over HTTP those are
		// estimates from the text, 4 bytes a token).
		out.useUsage(usage)
	} else if est, ok := client.(chunkTokenEstimator); ok && est.EstimatesChunkTokens() {
		out.TokensEstimated = true
	}
	return out
}

// chunkTokenEstimator is a client whose stream chunks carry estimated token
// counts (the OpenAI front door's chunks carry none): without the server's
// usage, a call's output count is an estimate.
type chunkTokenEstimator interface{ EstimatesChunkTokens() bool }

// useUsage takes the server's token counts.
func (o *Outcome) useUsage(u *pb.Usage) {
	o.OutputTokens = int(u.GetOutputTokens())
	o.PromptTokens = int(u.GetInputTokens())
	o.CachedTokens = min(int(u.GetCachedInputTokens()), o.PromptTokens)
	o.UsageReported = true
}

// maxExtraChunks bounds chunks beyond one per token (a final usage chunk, empty keep-alives).
const maxExtraChunks = 64

func withError(o Outcome, err error) Outcome {
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err)
	}
	o.Code = st.Code()
	if o.Code == codes.OK { // a non-status error that is not a context error
		o.Code = codes.Unknown
	}
	o.Message = st.Message()
	return o
}
