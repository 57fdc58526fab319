// Package cli is switchyard-load's command line: its flags, the trace and
// scenario it opens, the replays it runs (once, once per --compare policy, once
// per --protocol) and the reports and SLO verdict it writes. It replays real
// peak traffic (Azure LLM inference, Mooncake, BurstGPT or synthetic
// arrivals) open-loop against a switchyard router with package loadtest;
// see docs/loadtest.md. cmd/switchyard-load's main only calls Run and
// ExitCode; tests call Run in-process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/loadtest"
	"github.com/switchyard-dev/switchyard/loadtest/scenario"
	"github.com/switchyard-dev/switchyard/loadtest/trace"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// config is the parsed command line.
type config struct {
	target, simControl      string
	tracePath, format       string
	synthetic               string
	speedup, scale          float64
	duration                time.Duration
	maxRequests             int
	maxConcurrency          int
	connections             int
	warmup                  time.Duration
	timeout                 time.Duration
	unary                   bool
	model                   string
	priorityMix             string
	residency, callerRegion string
	scenarioPath            string
	adminTokenFile          string
	reportJSON, reportHTML  string
	sloTTFT                 time.Duration
	sloSuccess              float64
	compare                 string
	window                  time.Duration
	maxBadLines             int
	seed                    uint64
	noProgress              bool
	protocol, httpTarget    string
	http2                   bool
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("switchyard-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.target, "target", "127.0.0.1:50051", "router address (switchyard.v1.Inference, and Admin)")
	fs.StringVar(&c.simControl, "sim-control", "", "switchyard.v1.SimControl address for a scenario's faults: the router's --sim-control-listen (127.0.0.1:50061 under make run; its client port never serves SimControl) or switchyard-sim's --control-listen (default: --target)")
	fs.StringVar(&c.tracePath, "trace", "", "trace file (not needed for --format synthetic)")
	fs.StringVar(&c.format, "format", "azure", "trace format: "+strings.Join(trace.Formats(), ", "))
	fs.StringVar(&c.synthetic, "synthetic", "rate=5", "synthetic arrivals: rate=REQ/S,cv=BURSTINESS,seed=N,input=MEAN/SD,output=MEAN/SD[,duration=D]")
	fs.Float64Var(&c.speedup, "speedup", 1, "divide the trace clock by this (60 replays an hour in a minute)")
	fs.Float64Var(&c.scale, "scale", 1, "requests per trace request, keeping the shape (2 doubles, 0.5 halves)")
	fs.DurationVar(&c.duration, "duration", 0, "replay only this much of the trace, in trace time (0: all; synthetic default 1m)")
	fs.IntVar(&c.maxRequests, "max-requests", 0, "stop after this many arrivals (0: no limit beyond the trace)")
	fs.IntVar(&c.maxConcurrency, "max-concurrency", loadtest.DefaultMaxConcurrency, "client safety cap on calls in flight; arrivals over it are dropped and counted")
	fs.IntVar(&c.connections, "connections", 0, fmt.Sprintf("gRPC connections to spread calls over, fewest calls in flight first (0: enough that --max-concurrency needs at most %d streams on each; the router runs %d at a time per connection and the rest wait in the client)", streamsPerConn, routerStreamsPerConn))
	fs.DurationVar(&c.warmup, "warmup", time.Minute, "with more than one run (--compare, two protocols): first replay this much of the trace, in trace time and unreported, through the first run's policy and protocol, so the first measured run does not pay the router's and the generator's warm-up (0: none)")
	fs.DurationVar(&c.timeout, "timeout", loadtest.DefaultTimeout, "deadline of each call")
	fs.BoolVar(&c.unary, "unary", false, "call Generate instead of GenerateStream")
	fs.StringVar(&c.model, "model", "", "model to call (default: the first one ListModels returns)")
	fs.StringVar(&c.priorityMix, "priority-mix", "", "priorities in proportion, e.g. interactive=0.7,batch=0.3 (default: all standard)")
	fs.StringVar(&c.residency, "residency", "", "routing hint: data residency (eu, us)")
	fs.StringVar(&c.callerRegion, "caller-region", "", "routing hint: the caller's region, e.g. us-east-1")
	fs.StringVar(&c.scenarioPath, "scenario", "", "scenario file (YAML): faults and admin actions at trace-time offsets")
	fs.StringVar(&c.adminTokenFile, "admin-token-file", "", "file holding the Admin bearer token (needed for admin scenario steps and --compare)")
	fs.StringVar(&c.reportJSON, "report-json", "", "write the JSON report here")
	fs.StringVar(&c.reportHTML, "report-html", "", "write the HTML report here")
	fs.DurationVar(&c.sloTTFT, "slo-ttft-p99", 0, "fail when p99 time to first token (e2e latency with --unary) exceeds this")
	fs.Float64Var(&c.sloSuccess, "slo-success", 0, "fail when the ratio of OK calls to arrivals is below this (0..1)")
	fs.StringVar(&c.compare, "compare", "", "comma-separated router policies: replay once per policy and compare")
	fs.DurationVar(&c.window, "window", 0, "timeline resolution in trace time (default: the replayed span / 120, at least 1s)")
	fs.IntVar(&c.maxBadLines, "max-bad-lines", 0, "bad trace lines tolerated (each is reported and skipped)")
	fs.Uint64Var(&c.seed, "seed", 1, "seed for priority assignment")
	fs.BoolVar(&c.noProgress, "no-progress", false, "no progress bar")
	fs.StringVar(&c.protocol, "protocol", protoGRPC, "how calls reach the router: grpc (--target), openai (the HTTP front door at --http-target), or grpc,openai to replay through each and compare")
	fs.StringVar(&c.httpTarget, "http-target", "http://127.0.0.1:8080", "the router's OpenAI-compatible HTTP front door, for --protocol openai")
	fs.BoolVar(&c.http2, "http2", false, "with --protocol openai: HTTP/2 without TLS (h2c) instead of HTTP/1.1")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return c, c.validate()
}

func (c *config) validate() error {
	var errs []error
	known := false
	for _, f := range trace.Formats() {
		known = known || f == c.format
	}
	if !known {
		errs = append(errs, fmt.Errorf("--format %q: want one of %s", c.format, strings.Join(trace.Formats(), ", ")))
	}
	if c.format != string(trace.FormatSynthetic) && c.tracePath == "" {
		errs = append(errs, errors.New("--trace FILE is required (or --format synthetic)"))
	}
	if !(c.speedup > 0) || math.IsInf(c.speedup, 0) || c.speedup > 1e6 {
		errs = append(errs, fmt.Errorf("--speedup must be in (0, 1e6], got %v", c.speedup))
	}
	if !(c.scale > 0) || c.scale > 100 {
		errs = append(errs, fmt.Errorf("--scale must be in (0, 100], got %v", c.scale))
	}
	if c.duration < 0 || c.maxRequests < 0 || c.maxBadLines < 0 || c.window < 0 {
		errs = append(errs, errors.New("--duration, --max-requests, --max-bad-lines and --window must not be negative"))
	}
	if c.maxConcurrency < 1 || c.maxConcurrency > 1_000_000 {
		errs = append(errs, fmt.Errorf("--max-concurrency must be in [1, 1000000], got %d", c.maxConcurrency))
	}
	if c.connections < 0 || c.connections > maxConnections {
		errs = append(errs, fmt.Errorf("--connections must be in [0, %d], got %d", maxConnections, c.connections))
	}
	if c.warmup < 0 {
		errs = append(errs, errors.New("--warmup must not be negative"))
	}
	if c.timeout <= 0 {
		errs = append(errs, errors.New("--timeout must be > 0"))
	}
	if c.sloSuccess < 0 || c.sloSuccess > 1 || math.IsNaN(c.sloSuccess) {
		errs = append(errs, fmt.Errorf("--slo-success must be in [0, 1], got %v", c.sloSuccess))
	}
	if c.sloTTFT < 0 {
		errs = append(errs, errors.New("--slo-ttft-p99 must not be negative"))
	}
	if c.simControl == "" {
		c.simControl = c.target
	}
	if _, err := c.protocols(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *config) policies() []string {
	var out []string
	for _, p := range strings.Split(c.compare, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// openTrace returns a fresh reader of the configured trace, scaled and
// limited, and a closer.
func (c *config) openTrace() (trace.Reader, func(), error) {
	r, _, closer, err := c.openTraceBase()
	return r, closer, err
}

// openTraceBase is openTrace that also returns the format's own reader.
func (c *config) openTraceBase() (trace.Reader, trace.Reader, func(), error) {
	var src trace.Reader
	closer := func() {}
	if c.format == string(trace.FormatSynthetic) {
		d := c.duration
		if d == 0 {
			d = time.Minute
		}
		opts, err := trace.ParseSynthetic(c.synthetic, d)
		if err != nil {
			return nil, nil, nil, err
		}
		s, err := trace.NewSynthetic(opts)
		if err != nil {
			return nil, nil, nil, err
		}
		src = s
	} else {
		f, err := trace.Open(trace.Format(c.format), c.tracePath)
		if err != nil {
			return nil, nil, nil, err
		}
		src, closer = f.Reader, func() { f.Close() }
	}
	scaled, err := trace.NewScaled(src, c.scale)
	if err != nil {
		closer()
		return nil, nil, nil, err
	}
	return trace.NewLimited(scaled, c.duration), src, closer, nil
}

// survey is what a pre-pass over the trace found.
type survey struct {
	requests int
	span     time.Duration
	bad      int
	skipped  int // BurstGPT rows failed in the original trace
}

// maxBadShown bounds the bad lines printed.
const maxBadShown = 50

// surveyTrace reads the whole trace once (streaming), reporting bad lines.
func (c *config) surveyTrace(stderr io.Writer) (survey, error) {
	var s survey
	src, base, closer, err := c.openTraceBase()
	if err != nil {
		return s, err
	}
	defer closer()
	limit := c.maxRequests
	if limit == 0 {
		limit = loadtest.DefaultMaxRequests
	}
	for s.requests < limit {
		r, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if !trace.IsLineError(err) {
				return s, err
			}
			s.bad++
			if s.bad <= maxBadShown {
				fmt.Fprintln(stderr, err)
			}
			continue
		}
		s.requests++
		s.span = r.Offset
	}
	if s.bad > maxBadShown {
		fmt.Fprintf(stderr, "... and %d more bad lines\n", s.bad-maxBadShown)
	}
	if sk, ok := base.(interface{ Skipped() int }); ok {
		s.skipped = sk.Skipped()
	}
	return s, nil
}

// ExitCode reports err (Run's result) on w and returns the process exit
// status: 0 for nil and for --help (the flag package printed the usage), 1
// for any failure, a missed SLO included.
func ExitCode(err error, w io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(w, "switchyard-load:", err)
	return 1
}

// Run executes one switchyard-load command line (without the program name):
// it replays the trace until it ends or ctx is done, prints the report on
// stdout and progress and bad trace lines on stderr, and returns an error
// naming the SLO a run missed.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	mix, err := loadtest.ParsePriorityMix(c.priorityMix)
	if err != nil {
		return err
	}
	var sc *scenario.Scenario
	if c.scenarioPath != "" {
		if sc, err = scenario.Load(c.scenarioPath); err != nil {
			return err
		}
	}
	policies := c.policies()
	token := ""
	if c.adminTokenFile != "" {
		b, err := os.ReadFile(c.adminTokenFile)
		if err != nil {
			return fmt.Errorf("admin token: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return fmt.Errorf("admin token file %s is empty", c.adminTokenFile)
		}
	}
	if token == "" && (len(policies) > 0 || (sc != nil && sc.UsesAdmin())) {
		return errors.New("--admin-token-file is required for --compare and for admin scenario steps")
	}

	sv, err := c.surveyTrace(stderr)
	if err != nil {
		return err
	}
	if sv.bad > c.maxBadLines {
		return fmt.Errorf("%d bad trace line(s), more than --max-bad-lines %d", sv.bad, c.maxBadLines)
	}
	if sv.requests == 0 {
		return errors.New("the trace has no requests to replay")
	}
	if sc != nil {
		for _, s := range sc.Steps {
			if s.At > sv.span {
				fmt.Fprintf(stderr, "warning: %s:%d: step at %v is after the last arrival (%v): it will not run\n", sc.File, s.Line, s.At, sv.span)
			}
		}
	}

	conns, grpcClients, closeConns, err := dialInference(c.target, c.connCount())
	if err != nil {
		return err
	}
	defer closeConns()
	conn := conns[0]
	simConn := conn
	if c.simControl != c.target {
		if simConn, err = grpc.NewClient(c.simControl, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			return fmt.Errorf("dial %s: %w", c.simControl, err)
		}
		defer simConn.Close()
	}
	if err := waitReady(ctx, c.target, conns); err != nil {
		return err
	}
	client := grpcClients[0]
	control := scenario.Control{Sim: pb.NewSimControlClient(simConn), Admin: pb.NewAdminClient(conn), AdminToken: token}

	model, err := pickModel(ctx, client, c.model)
	if err != nil {
		return err
	}

	window := c.window
	if window == 0 {
		window = max(time.Second, (sv.span / 120).Round(time.Second))
	}
	var routing *pb.RoutingHints
	if c.residency != "" || c.callerRegion != "" {
		routing = &pb.RoutingHints{Residency: c.residency, CallerRegion: c.callerRegion}
	}
	base := loadtest.RunConfig{
		Target: c.target, Trace: c.tracePath, Format: c.format, Model: model.GetName(), Streaming: !c.unary,
		Speedup: c.speedup, Scale: c.scale, DurationSec: c.duration.Seconds(), MaxConcurrency: c.maxConcurrency,
		Connections: len(conns), PriorityMix: mix.String(), Scenario: c.scenarioPath, TimeoutSec: c.timeout.Seconds(),
	}
	if c.format == string(trace.FormatSynthetic) {
		base.Trace = "synthetic: " + c.synthetic
	}
	if sv.skipped > 0 {
		fmt.Fprintf(stderr, "%d rows skipped: failed in the original trace\n", sv.skipped)
	}
	fmt.Fprintf(stderr, "replaying %d requests over %v of trace time (%v at speedup %g) to %s, model %s\n",
		sv.requests, sv.span.Round(time.Millisecond), (time.Duration(float64(sv.span) / c.speedup)).Round(time.Millisecond), c.speedup, c.target, model.GetName())

	labels := policies
	if len(labels) == 0 {
		labels = []string{""}
	}
	protocols, _ := c.protocols() // validated
	clients := map[string][]pb.InferenceClient{}
	for _, p := range protocols {
		cl, closeClient, err := c.inferenceClient(p, grpcClients)
		if err != nil {
			return err
		}
		defer closeClient()
		clients[p] = cl
	}
	rep := loadtest.Report{Tool: "switchyard-load"}
	var problems []error
	originalPolicy := ""
	for i, policy := range labels {
		if ctx.Err() != nil {
			break
		}
		if policy != "" {
			// Faults come from scenarios: without one there is nothing to
			// clear (and the target may serve no SimControl: real servers).
			if sc != nil {
				if err := control.ClearFaults(ctx); err != nil {
					return err
				}
			}
			prev, err := control.SetPolicy(ctx, policy)
			if err != nil {
				return err
			}
			if i == 0 {
				originalPolicy = prev
			}
		}
		for j, proto := range protocols {
			if ctx.Err() != nil {
				break
			}
			label := runLabel(policy, proto, len(protocols))
			if j > 0 && sc != nil {
				if err := control.ClearFaults(ctx); err != nil {
					return err
				}
			}
			snap, err := control.Take(ctx, sc)
			if err != nil && (len(policies) > 0 || len(protocols) > 1) {
				return err
			}
			cfg := base
			cfg.Protocol = proto
			if proto == protoOpenAI {
				cfg.Target = c.httpTarget
				cfg.Connections = 0
			}
			if i == 0 && j == 0 && c.warmup > 0 && len(labels)*len(protocols) > 1 {
				if err := c.warmUp(ctx, runParams{
					label: "warm-up", policy: policy, cfg: cfg, model: model, mix: mix, routing: routing,
					window: window, client: clients[proto],
				}, stderr); err != nil {
					return err
				}
			}
			r, err := c.runOnce(ctx, runParams{
				label: label, policy: policy, cfg: cfg, model: model, mix: mix, routing: routing,
				window: window, total: sv.requests, span: sv.span, sc: sc, control: control, client: clients[proto],
			}, stderr)
			if err != nil {
				return err
			}
			if err := (loadtest.SLO{TTFTP99: c.sloTTFT, Success: c.sloSuccess, Timeout: c.timeout}).Check(&r); err != nil {
				problems = append(problems, err)
			}
			if lag := r.Latency["scheduler_lag"].P99; lag > loadtest.MaxLagShare*float64(c.timeout/time.Millisecond) {
				fmt.Fprintf(stderr, "\n!!! WARNING: run %q: the load generator's own scheduling lag p99 is %.1fms, more than %.0f%% of the %v call timeout.\n"+
					"!!! Calls left late: this run measured the generator, not the router. Its SLO verdict is failed.\n\n",
					label, lag, 100*loadtest.MaxLagShare, c.timeout)
			}
			if d, ok := r.Latency["generator_sched"]; ok && d.P99 > loadtest.MaxLagShare*float64(c.timeout/time.Millisecond) {
				fmt.Fprintf(stderr, "\n!!! WARNING: run %q: the load generator's goroutines waited p99 %.1fms for a CPU, more than %.0f%% of the %v call timeout.\n"+
					"!!! It sent and read late: this run measured the generator, not the router. Its SLO verdict is failed.\n\n",
					label, d.P99, 100*loadtest.MaxLagShare, c.timeout)
			}
			if d, ok := r.Latency["client_wait"]; ok && d.P99 > loadtest.MaxLagShare*float64(c.timeout/time.Millisecond) {
				fmt.Fprintf(stderr, "\n!!! WARNING: run %q: calls waited in the load tester before their request left, p99 %.1fms, more than %.0f%% of the %v call timeout.\n"+
					"!!! The router saw them late: this run measured the client, not the router (use more --connections). Its SLO verdict is failed.\n\n",
					label, d.P99, 100*loadtest.MaxLagShare, c.timeout)
			}
			if n := r.Tokens.OutputEstimatedCalls; n > 0 {
				fmt.Fprintf(stderr, "note: run %q: %d successful call(s) came without the server's usage; their output tokens are estimated from the text (4 bytes a token)\n", label, n)
			}
			for _, s := range r.Scenario {
				if s.Error != "" {
					problems = append(problems, fmt.Errorf("run %q: scenario %s:%d (%s): %s", label, sc.File, s.Line, s.Action, s.Error))
				}
			}
			rep.Runs = append(rep.Runs, r)
			if len(policies) > 0 || len(protocols) > 1 {
				if err := control.Restore(ctx, snap); err != nil {
					problems = append(problems, err)
				}
				if sc != nil {
					if err := control.ClearFaults(ctx); err != nil {
						problems = append(problems, err)
					}
				}
			}
		}
	}
	if originalPolicy != "" {
		if _, err := control.SetPolicy(context.WithoutCancel(ctx), originalPolicy); err != nil {
			problems = append(problems, fmt.Errorf("put back policy %q: %w", originalPolicy, err))
		}
	}
	rep.GeneratedAt = time.Now().UTC()
	if err := loadtest.WriteSummary(stdout, rep.Runs); err != nil {
		return err
	}
	if c.reportJSON != "" {
		if err := loadtest.WriteJSON(c.reportJSON, rep); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "wrote", c.reportJSON)
	}
	if c.reportHTML != "" {
		if err := loadtest.WriteHTML(c.reportHTML, rep); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "wrote", c.reportHTML)
	}
	if ctx.Err() != nil {
		problems = append(problems, fmt.Errorf("interrupted: %w", ctx.Err()))
	}
	return errors.Join(problems...)
}

// pickModel finds the model to call and its limits.
func pickModel(ctx context.Context, client pb.InferenceClient, name string) (*pb.Model, error) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := client.ListModels(lctx, &pb.ListModelsRequest{})
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	var names []string
	for _, m := range resp.GetModels() {
		if name == "" || m.GetName() == name {
			return m, nil
		}
		names = append(names, m.GetName())
	}
	if name == "" {
		return nil, errors.New("the target serves no models")
	}
	return nil, fmt.Errorf("model %q is not served (have: %s)", name, strings.Join(names, ", "))
}

type runParams struct {
	label, policy string
	cfg           loadtest.RunConfig
	model         *pb.Model
	mix           loadtest.PriorityMix
	routing       *pb.RoutingHints
	window        time.Duration
	total         int
	span          time.Duration
	sc            *scenario.Scenario
	control       scenario.Control
	client        []pb.InferenceClient
}

// runOnce replays the trace once, with the scenario alongside.
func (c *config) runOnce(ctx context.Context, p runParams, stderr io.Writer) (loadtest.RunReport, error) {
	src, closer, err := c.openTrace()
	if err != nil {
		return loadtest.RunReport{}, err
	}
	defer closer()
	stats := loadtest.NewStats(!c.unary, p.window)
	var onDone func()
	var prog *loadtest.Progress
	if !c.noProgress {
		prog = loadtest.NewProgress(stderr, int64(p.total), p.label, !c.unary, stats)
		onDone = prog.Done
	}
	clk := clock.Real{}
	start := clk.Now()
	scCtx, stopScenario := context.WithCancel(ctx)
	defer stopScenario()
	steps := make(chan []loadtest.StepResult, 1)
	if p.sc != nil {
		go func() {
			steps <- scenario.Run(scCtx, p.sc, p.control, scenario.RunOptions{Clock: clk, Start: start, Speedup: c.speedup})
		}()
	} else {
		steps <- nil
	}
	sched := loadtest.WatchSched()
	err = loadtest.Replay(ctx, loadtest.ReplayOptions{
		Clients: p.client, ClientMarksSend: true, Source: src, Stats: stats, Clock: clk, Start: start,
		Speedup: c.speedup, MaxConcurrency: c.maxConcurrency, MaxRequests: c.maxRequests,
		Model: p.model.GetName(), MaxInputTokens: int(p.model.GetMaxInputTokens()), MaxOutputTokens: int(p.model.GetMaxOutputTokens()),
		Unary: c.unary, Priorities: p.mix, Routing: p.routing, Timeout: c.timeout, Seed: c.seed, OnDone: onDone,
		// Each run its own prompt text: no run finds another's prompts in
		// the servers' prefix caches.
		PromptSalt: fmt.Sprintf("%x", start.UnixNano()),
	})
	schedDist := sched.Stop()
	stopScenario()
	results := <-steps
	if prog != nil {
		prog.Finish()
	}
	if err != nil {
		return loadtest.RunReport{}, err
	}
	r := stats.Report(p.label, p.cfg, start, p.span)
	if schedDist.Count > 0 {
		r.Latency["generator_sched"] = schedDist
	}
	r.Policy = p.policy
	r.Scenario = results
	return r, nil
}

// warmUp replays the first --warmup of the trace (trace time) through
// p's client and policy, without the scenario, and reports nothing but one
// line on stderr: the first measured run then finds the router's and the
// generator's caches, pools and goroutine stacks as later runs do.
func (c *config) warmUp(ctx context.Context, p runParams, stderr io.Writer) error {
	w := *c
	w.duration = c.warmup
	if c.duration > 0 && c.duration < c.warmup {
		w.duration = c.duration
	}
	w.noProgress = true
	p.sc = nil
	r, err := w.runOnce(ctx, p, stderr)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	fmt.Fprintf(stderr, "warm-up (unreported): %v of the trace, %d calls, %d ok, generator lag p99 %.1fms, client wait p99 %.1fms\n",
		w.duration, r.Requests.Scheduled, r.Requests.OK, r.Latency["scheduler_lag"].P99, r.Latency["client_wait"].P99)
	return nil
}
