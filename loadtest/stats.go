package loadtest

import (
	"sort"
	"sync"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Histogram ranges: latencies in microseconds from 1µs to 1h; tokens/s in
// hundredths from 0.01 to 10M tokens/s.
const (
	maxLatencyMicros = int64(time.Hour / time.Microsecond)
	maxRateCenti     = int64(1e9)
	maxWindows       = 240
)

func newLatencyHist(sigfigs int) *hdr.Histogram { return hdr.New(1, maxLatencyMicros, sigfigs) }

func micros(d time.Duration) int64 { return min(max(int64(d/time.Microsecond), 1), maxLatencyMicros) }

// Outcome is what one call came to.
type Outcome struct {
	// Arrival is the request's trace-clock offset.
	Arrival time.Duration
	// Lag is how late the request was sent against its schedule (wall clock).
	Lag      time.Duration
	Priority pb.Priority
	Code     codes.Code
	// Message is the status message (kept for the first few of each code).
	Message string
	Route   *pb.Route
	// Streaming metrics; TTFT is zero for unary calls.
	TTFT         time.Duration
	E2E          time.Duration
	ITL          []ITLSample
	OutputTokens int
	// PromptTokens and CachedTokens are the server's usage (cached: prompt
	// tokens served from its prefix cache); UsageReported says it sent one.
	PromptTokens, CachedTokens int
	UsageReported              bool
	// TokensEstimated: the server reported no usage and OutputTokens is an
	// estimate from the text (4 bytes a token).
	TokensEstimated bool
	// ClientWait is how long the call waited in the client before its
	// request left (for a stream of the connection, or a connection);
	// ClientWaitKnown says it was measured (ReplayOptions.ClientMarksSend).
	ClientWait      time.Duration
	ClientWaitKnown bool
}

// ITLSample is one gap between token-bearing chunks, divided over the chunk's tokens.
type ITLSample struct {
	PerToken time.Duration
	Tokens   int
}

// Stats records outcomes. It is safe for concurrent use.
type Stats struct {
	mu        sync.Mutex
	streaming bool
	window    time.Duration

	scheduled, sent, dropped     int64
	cappedInput, cappedOutput    int64
	ok, outputTokens, retried    int64
	promptTokens, cachedTokens   int64 // OK calls with usage
	usageCalls, estimatedCalls   int64
	failedOver, unrouted         int64
	codes                        map[codes.Code]int64
	messages                     map[codes.Code][]string
	ttft, itl, e2e, tps, lag     *hdr.Histogram
	clientWait                   *hdr.Histogram // calls whose client wait was measured
	pools, clouds, regions, prio map[string]*group
	windows                      []*window
	firstSend, lastDone          time.Time
}

type group struct {
	pool, cloud, region, accelerator string
	requests, ok                     int64
	prompt, cached                   int64
	codes                            map[codes.Code]int64
	ttft, e2e                        *hdr.Histogram
}

type window struct {
	sent, ok  int64
	prompt    int64 // prompt tokens of OK calls with usage
	cached    int64 // of them, served from the prefix cache
	dropped   int64
	codes     map[codes.Code]int64
	ttft, e2e *hdr.Histogram
	places    map[string]int64 // "cloud/region" -> OK calls
}

// NewStats returns an empty recorder. window is the timeline resolution in
// trace time (at most 240 windows are kept: later arrivals fold into the last).
func NewStats(streaming bool, window time.Duration) *Stats {
	if window <= 0 {
		window = time.Second
	}
	return &Stats{
		streaming: streaming, window: window,
		codes: map[codes.Code]int64{}, messages: map[codes.Code][]string{},
		ttft: newLatencyHist(3), itl: newLatencyHist(3), e2e: newLatencyHist(3), lag: newLatencyHist(3), clientWait: newLatencyHist(3),
		tps:   hdr.New(1, maxRateCenti, 3),
		pools: map[string]*group{}, clouds: map[string]*group{}, regions: map[string]*group{}, prio: map[string]*group{},
	}
}

// Scheduled counts an arrival taken from the trace.
func (s *Stats) Scheduled() {
	s.mu.Lock()
	s.scheduled++
	s.mu.Unlock()
}

// Dropped counts an arrival not sent because the client concurrency cap was reached.
func (s *Stats) Dropped(arrival time.Duration) {
	s.mu.Lock()
	s.dropped++
	s.windowAt(arrival).dropped++
	s.mu.Unlock()
}

// Capped counts prompts or max_tokens cut to the model's limits.
func (s *Stats) Capped(input, output bool) {
	s.mu.Lock()
	if input {
		s.cappedInput++
	}
	if output {
		s.cappedOutput++
	}
	s.mu.Unlock()
}

// Sent marks the wall time of a send.
func (s *Stats) Sent(at time.Time) {
	s.mu.Lock()
	s.sent++
	if s.firstSend.IsZero() || at.Before(s.firstSend) {
		s.firstSend = at
	}
	s.mu.Unlock()
}

// Record adds a finished call; done is its wall-clock end.
func (s *Stats) Record(o Outcome, done time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if done.After(s.lastDone) {
		s.lastDone = done
	}
	s.codes[o.Code]++
	if o.Code != codes.OK && len(s.messages[o.Code]) < 3 && o.Message != "" {
		s.messages[o.Code] = append(s.messages[o.Code], o.Message)
	}
	_ = s.lag.RecordValue(micros(o.Lag))
	if o.ClientWaitKnown {
		_ = s.clientWait.RecordValue(micros(o.ClientWait))
	}
	w := s.windowAt(o.Arrival)
	w.sent++
	w.codes[o.Code]++
	pg := groupIn(s.prio, PriorityName(o.Priority), nil)
	pg.add(o, s.streaming)

	if o.Route != nil && o.Route.GetPool() != "" {
		r := o.Route
		groupIn(s.pools, r.GetPool(), r).add(o, s.streaming)
		groupIn(s.clouds, r.GetCloud(), &pb.Route{Cloud: r.GetCloud()}).add(o, s.streaming)
		groupIn(s.regions, r.GetRegion(), &pb.Route{Cloud: r.GetCloud(), Region: r.GetRegion()}).add(o, s.streaming)
		if r.GetAttempts() > 1 {
			s.retried++
		}
		if len(r.GetPoolsTried()) > 1 {
			s.failedOver++
		}
	} else {
		s.unrouted++
	}
	if o.Code != codes.OK {
		return
	}
	s.ok++
	w.ok++
	s.outputTokens += int64(o.OutputTokens)
	if o.UsageReported {
		s.usageCalls++
		s.promptTokens += int64(o.PromptTokens)
		s.cachedTokens += int64(o.CachedTokens)
		w.prompt += int64(o.PromptTokens)
		w.cached += int64(o.CachedTokens)
	}
	if o.TokensEstimated {
		s.estimatedCalls++
	}
	if o.Route != nil {
		w.places[placeKey(o.Route)]++
	}
	_ = s.e2e.RecordValue(micros(o.E2E))
	_ = w.e2e.RecordValue(micros(o.E2E))
	if s.streaming && o.OutputTokens > 0 {
		_ = s.ttft.RecordValue(micros(o.TTFT))
		_ = w.ttft.RecordValue(micros(o.TTFT))
		for _, g := range o.ITL {
			_ = s.itl.RecordValues(micros(g.PerToken), int64(max(g.Tokens, 1)))
		}
	}
	// Tokens/s: decode rate after the first token when streaming, over the whole call when unary.
	span := o.E2E
	toks := o.OutputTokens
	if s.streaming {
		span -= o.TTFT
		toks--
	}
	if toks > 0 && span > 0 {
		rate := float64(toks) / span.Seconds()
		_ = s.tps.RecordValue(min(max(int64(rate*100), 1), maxRateCenti))
	}
}

func placeKey(r *pb.Route) string {
	if r.GetCloud() == "" && r.GetRegion() == "" {
		return "unknown"
	}
	return r.GetCloud() + "/" + r.GetRegion()
}

func (s *Stats) windowAt(arrival time.Duration) *window {
	i := min(max(int(arrival/s.window), 0), maxWindows-1)
	for len(s.windows) <= i {
		s.windows = append(s.windows, &window{
			codes: map[codes.Code]int64{}, places: map[string]int64{},
			ttft: newLatencyHist(2), e2e: newLatencyHist(2),
		})
	}
	return s.windows[i]
}

func groupIn(m map[string]*group, key string, r *pb.Route) *group {
	g, ok := m[key]
	if !ok {
		g = &group{codes: map[codes.Code]int64{}, ttft: newLatencyHist(2), e2e: newLatencyHist(2)}
		if r != nil {
			g.pool, g.cloud, g.region, g.accelerator = r.GetPool(), r.GetCloud(), r.GetRegion(), r.GetAccelerator()
		}
		m[key] = g
	}
	return g
}

func (g *group) add(o Outcome, streaming bool) {
	g.requests++
	g.codes[o.Code]++
	if o.Code != codes.OK {
		return
	}
	g.ok++
	if o.UsageReported {
		g.prompt += int64(o.PromptTokens)
		g.cached += int64(o.CachedTokens)
	}
	_ = g.e2e.RecordValue(micros(o.E2E))
	if streaming && o.OutputTokens > 0 {
		_ = g.ttft.RecordValue(micros(o.TTFT))
	}
}

// Live is a snapshot for the progress bar.
type Live struct {
	Done, OK, Dropped int64
	// P99 is the p99 of TTFT (streaming) or end-to-end latency (unary) so far.
	P99 time.Duration
}

// Live returns counts so far.
func (s *Stats) Live() Live {
	s.mu.Lock()
	defer s.mu.Unlock()
	var done int64
	for _, n := range s.codes {
		done += n
	}
	h := s.e2e
	if s.streaming {
		h = s.ttft
	}
	return Live{Done: done, OK: s.ok, Dropped: s.dropped, P99: time.Duration(h.ValueAtQuantile(99)) * time.Microsecond}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
