package loadtest

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"
)

// Report is the JSON report: one entry in Runs per replay (one per policy with --compare).
type Report struct {
	Tool string `json:"tool"`
	// GeneratedAt is when the report was written (after the last run).
	GeneratedAt time.Time   `json:"generated_at"`
	Runs        []RunReport `json:"runs"`
}

// RunReport is what one replay measured.
type RunReport struct {
	// Label names the run: the policy under --compare, else "run".
	Label  string    `json:"label"`
	Policy string    `json:"policy,omitempty"`
	Config RunConfig `json:"config"`

	StartedAt time.Time `json:"started_at"`
	// WallSeconds is from the first send to the last response.
	WallSeconds float64 `json:"wall_seconds"`
	// TraceSeconds is the trace-clock span replayed.
	TraceSeconds float64 `json:"trace_seconds"`

	Requests     Counts  `json:"requests"`
	SuccessRatio float64 `json:"success_ratio"`
	Throughput   Rates   `json:"throughput"`
	// Tokens counts the tokens of successful calls and where the counts came from.
	Tokens TokenCounts `json:"tokens"`
	// CachedPromptRatio is cached ÷ prompt tokens over the successful calls
	// whose server reported usage (usage.prompt_tokens_details.cached_tokens
	// over HTTP, Usage.cached_input_tokens over gRPC).
	CachedPromptRatio float64 `json:"cached_prompt_ratio"`
	// Latency in milliseconds: ttft, itl (per token), e2e, scheduler_lag (how
	// late sends were) and, when measured, client_wait (how long calls waited
	// in the client before their request left: for a connection's stream)
	// and, from the command line, generator_sched (the load tester's own
	// goroutine scheduling latency over the run, as the Go runtime samples
	// it: how long its sends and reads waited for a CPU).
	Latency map[string]Dist `json:"latency_ms"`
	// OutputTokensPerSecond per request: decode rate after the first token (streaming) or over the call (unary).
	OutputTokensPerSecond Dist `json:"output_tokens_per_second"`
	// Statuses counts calls by gRPC status code name.
	Statuses map[string]int64 `json:"statuses"`
	// ErrorSamples holds up to three messages per failing code.
	ErrorSamples map[string][]string `json:"error_samples,omitempty"`
	Pools        []Group             `json:"pools"`
	Clouds       []Group             `json:"clouds"`
	Regions      []Group             `json:"regions"`
	Priorities   []Group             `json:"priorities"`
	Timeline     Timeline            `json:"timeline"`
	Scenario     []StepResult        `json:"scenario,omitempty"`
	SLOs         []SLOResult         `json:"slos,omitempty"`
}

// RunConfig echoes the settings of a run.
type RunConfig struct {
	Target string `json:"target"`
	// Protocol is how calls reached the router: "grpc" or "openai" (the HTTP front door); empty means grpc.
	Protocol       string  `json:"protocol,omitempty"`
	Trace          string  `json:"trace"`
	Format         string  `json:"format"`
	Model          string  `json:"model"`
	Streaming      bool    `json:"streaming"`
	Speedup        float64 `json:"speedup"`
	Scale          float64 `json:"scale"`
	DurationSec    float64 `json:"duration_seconds,omitempty"`
	MaxConcurrency int     `json:"max_concurrency"`
	// Connections is how many gRPC connections the calls were spread over
	// (0: one client, as over HTTP, whose transport pools its own).
	Connections int    `json:"connections,omitempty"`
	PriorityMix string `json:"priority_mix,omitempty"`
	Scenario    string `json:"scenario,omitempty"`
	// TimeoutSec is each call's deadline.
	TimeoutSec float64 `json:"timeout_seconds,omitempty"`
}

// Counts are request counts. Scheduled = Sent + DroppedClientCap.
type Counts struct {
	Scheduled        int64 `json:"scheduled"`
	Sent             int64 `json:"sent"`
	DroppedClientCap int64 `json:"dropped_client_cap"`
	OK               int64 `json:"ok"`
	Failed           int64 `json:"failed"`
	// Retried: calls whose route shows more than one attempt; FailedOver: more than one pool.
	Retried    int64 `json:"retried"`
	FailedOver int64 `json:"failed_over"`
	// Unrouted: calls that finished without a route (errors before any pool answered).
	Unrouted     int64 `json:"unrouted"`
	CappedInput  int64 `json:"capped_input"`
	CappedOutput int64 `json:"capped_output"`
}

// TokenCounts are token totals over the successful calls. Output counts are
// the server's usage where it reported one; for the calls in
// OutputEstimatedCalls it did not, and their output is estimated from the
// text (4 bytes a token).
type TokenCounts struct {
	Output               int64 `json:"output"`
	Prompt               int64 `json:"prompt"`
	CachedPrompt         int64 `json:"cached_prompt"`
	UsageCalls           int64 `json:"usage_calls"`
	OutputEstimatedCalls int64 `json:"output_estimated_calls"`
}

// Rates are whole-run throughputs over WallSeconds.
type Rates struct {
	RequestsPerSecond     float64 `json:"requests_per_second"`
	OutputTokensPerSecond float64 `json:"output_tokens_per_second"`
}

// Dist summarises a histogram.
type Dist struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

// Group is the result for one pool, cloud, region or priority.
type Group struct {
	Key         string  `json:"key"`
	Pool        string  `json:"pool,omitempty"`
	Cloud       string  `json:"cloud,omitempty"`
	Region      string  `json:"region,omitempty"`
	Accelerator string  `json:"accelerator,omitempty"`
	Requests    int64   `json:"requests"`
	OK          int64   `json:"ok"`
	Share       float64 `json:"share"` // of all finished calls
	// CachedPromptRatio is cached ÷ prompt tokens of the group's successful calls with usage.
	CachedPromptRatio float64          `json:"cached_prompt_ratio"`
	Statuses          map[string]int64 `json:"statuses"`
	TTFT              Dist             `json:"ttft_ms"`
	E2E               Dist             `json:"e2e_ms"`
}

// Timeline is the run cut into windows of trace time by arrival.
type Timeline struct {
	WindowSeconds float64  `json:"window_seconds"`
	Windows       []Window `json:"windows"`
}

// Window is what requests that arrived in one window of trace time felt.
type Window struct {
	StartSeconds float64          `json:"start_seconds"`
	Sent         int64            `json:"sent"`
	OK           int64            `json:"ok"`
	Dropped      int64            `json:"dropped_client_cap,omitempty"`
	Errors       map[string]int64 `json:"errors,omitempty"`
	TTFT         Dist             `json:"ttft_ms"`
	E2E          Dist             `json:"e2e_ms"`
	// Places counts successful calls by "cloud/region".
	Places map[string]int64 `json:"places,omitempty"`
	// CachedPromptRatio is cached ÷ prompt tokens of the window's successful calls with usage.
	CachedPromptRatio float64 `json:"cached_prompt_ratio,omitempty"`
}

// StepResult is one scenario action as carried out.
type StepResult struct {
	Line   int     `json:"line"`
	At     float64 `json:"at_seconds"` // trace time
	Action string  `json:"action"`
	Pool   string  `json:"pool,omitempty"`
	Detail string  `json:"detail,omitempty"`
	// WallOffset is when it was sent, from the run's start (wall clock).
	WallOffset float64 `json:"wall_offset_seconds"`
	Error      string  `json:"error,omitempty"`
}

// SLOResult is one SLO check.
type SLOResult struct {
	Name   string  `json:"name"`
	Target float64 `json:"target"`
	Actual float64 `json:"actual"`
	Met    bool    `json:"met"`
}

func dist(h *hdr.Histogram, unit float64) Dist {
	if h.TotalCount() == 0 {
		return Dist{}
	}
	q := func(p float64) float64 { return round3(float64(h.ValueAtQuantile(p)) / unit) }
	return Dist{
		Count: h.TotalCount(), Mean: round3(h.Mean() / unit),
		P50: q(50), P90: q(90), P95: q(95), P99: q(99), P999: q(99.9), Max: round3(float64(h.Max()) / unit),
	}
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// ratio is num ÷ den to four places (0 when den is 0).
func ratio(num, den int64) float64 {
	if den <= 0 {
		return 0
	}
	return math.Round(float64(num)/float64(den)*1e4) / 1e4
}

func codeMap(m map[codes.Code]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for c, n := range m {
		out[c.String()] += n
	}
	return out
}

// Report summarises what was recorded.
func (s *Stats) Report(label string, cfg RunConfig, started time.Time, traceSpan time.Duration) RunReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	const ms = 1000.0 // histograms are in microseconds
	r := RunReport{
		Label: label, Config: cfg, StartedAt: started, TraceSeconds: round3(traceSpan.Seconds()),
		Requests: Counts{
			Scheduled: s.scheduled, Sent: s.sent, DroppedClientCap: s.dropped, OK: s.ok,
			Retried: s.retried, FailedOver: s.failedOver, Unrouted: s.unrouted,
			CappedInput: s.cappedInput, CappedOutput: s.cappedOutput,
		},
		Latency: map[string]Dist{
			"e2e":           dist(s.e2e, ms),
			"scheduler_lag": dist(s.lag, ms),
		},
		OutputTokensPerSecond: dist(s.tps, 100),
		Tokens: TokenCounts{
			Output: s.outputTokens, Prompt: s.promptTokens, CachedPrompt: s.cachedTokens,
			UsageCalls: s.usageCalls, OutputEstimatedCalls: s.estimatedCalls,
		},
		CachedPromptRatio: ratio(s.cachedTokens, s.promptTokens),
		Statuses:          codeMap(s.codes),
		Timeline:          Timeline{WindowSeconds: s.window.Seconds()},
	}
	if s.streaming {
		r.Latency["ttft"] = dist(s.ttft, ms)
		r.Latency["itl"] = dist(s.itl, ms)
	}
	if s.clientWait.TotalCount() > 0 {
		r.Latency["client_wait"] = dist(s.clientWait, ms)
	}
	var done int64
	for _, n := range s.codes {
		done += n
	}
	r.Requests.Failed = done - s.ok
	if s.scheduled > 0 {
		// Calls dropped by the client cap count as failures: the client did not get an answer.
		r.SuccessRatio = math.Round(float64(s.ok)/float64(s.scheduled)*1e4) / 1e4
	}
	if !s.firstSend.IsZero() && s.lastDone.After(s.firstSend) {
		wall := s.lastDone.Sub(s.firstSend).Seconds()
		r.WallSeconds = round3(wall)
		r.Throughput = Rates{RequestsPerSecond: round3(float64(done) / wall), OutputTokensPerSecond: round3(float64(s.outputTokens) / wall)}
	}
	if len(s.messages) > 0 {
		r.ErrorSamples = map[string][]string{}
		for c, m := range s.messages {
			r.ErrorSamples[c.String()] = m
		}
	}
	groups := func(m map[string]*group) []Group {
		out := []Group{}
		for _, k := range sortedKeys(m) {
			g := m[k]
			share := 0.0
			if done > 0 {
				share = round3(float64(g.requests) / float64(done))
			}
			out = append(out, Group{
				Key: k, Pool: g.pool, Cloud: g.cloud, Region: g.region, Accelerator: g.accelerator,
				Requests: g.requests, OK: g.ok, Share: share, Statuses: codeMap(g.codes), CachedPromptRatio: ratio(g.cached, g.prompt),
				TTFT: dist(g.ttft, ms), E2E: dist(g.e2e, ms),
			})
		}
		return out
	}
	r.Pools, r.Clouds, r.Regions, r.Priorities = groups(s.pools), groups(s.clouds), groups(s.regions), groups(s.prio)
	for i, w := range s.windows {
		win := Window{StartSeconds: round3((time.Duration(i) * s.window).Seconds()), Sent: w.sent, OK: w.ok, Dropped: w.dropped, E2E: dist(w.e2e, ms),
			CachedPromptRatio: ratio(w.cached, w.prompt)}
		if s.streaming {
			win.TTFT = dist(w.ttft, ms)
		}
		for c, n := range w.codes {
			if c != codes.OK {
				if win.Errors == nil {
					win.Errors = map[string]int64{}
				}
				win.Errors[c.String()] += n
			}
		}
		if len(w.places) > 0 {
			win.Places = map[string]int64{}
			for k, n := range w.places {
				win.Places[k] = n
			}
		}
		r.Timeline.Windows = append(r.Timeline.Windows, win)
	}
	return r
}

// WriteJSON writes the report to path (indented).
func WriteJSON(path string, rep Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write json report: %w", err)
	}
	return nil
}
