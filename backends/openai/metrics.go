package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// maxMetricsBody bounds a /metrics response (vLLM's is ~100 KB with histograms).
const maxMetricsBody = 4 << 20

// maxPropsBody bounds llama.cpp's /props response.
const maxPropsBody = 1 << 20

// kvFull is the KV-cache use from which a vLLM or SGLang server is taken to
// have no room for another sequence until some finish.
const kvFull = 0.95

// loadMetrics names the gauges of one server kind.
type loadMetrics struct {
	running, queued []string // summed over all series (and all names listed)
	kvUsage         []string // fraction 0..1, the largest series counts
}

var metricNames = map[Server]loadMetrics{
	ServerVLLM:     {running: []string{"vllm:num_requests_running"}, queued: []string{"vllm:num_requests_waiting"}, kvUsage: []string{"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"}},
	ServerSGLang:   {running: []string{"sglang:num_running_reqs"}, queued: []string{"sglang:num_queue_reqs"}, kvUsage: []string{"sglang:token_usage"}},
	ServerTGI:      {running: []string{"tgi_batch_current_size"}, queued: []string{"tgi_queue_size"}},
	ServerLlamaCpp: {running: []string{"llamacpp:requests_processing"}, queued: []string{"llamacpp:requests_deferred"}},
}

// serverLoad is what one scrape says.
type serverLoad struct {
	running, queued int
	saturated       bool
}

// parseLoad reads Prometheus text exposition for the kind's gauges. A
// server that exposes none of the running/queued gauges is an error (wrong
// `server:` kind, or metrics switched off on the server).
func parseLoad(kind Server, body []byte) (serverLoad, error) {
	names, ok := metricNames[kind]
	if !ok {
		return serverLoad{}, fmt.Errorf("server %s has no load metrics", kind)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return serverLoad{}, fmt.Errorf("parse metrics: %w", err)
	}
	sum := func(list []string) (float64, bool) {
		total, found := 0.0, false
		for _, n := range list {
			if mf, ok := fams[n]; ok {
				found = true
				for _, m := range mf.GetMetric() {
					total += value(m)
				}
			}
		}
		return total, found
	}
	running, okR := sum(names.running)
	queued, okQ := sum(names.queued)
	if !okR && !okQ {
		return serverLoad{}, fmt.Errorf("metrics have neither %v nor %v (is server: %s right?)", names.running, names.queued, kind)
	}
	l := serverLoad{running: count(running), queued: count(queued)}
	for _, n := range names.kvUsage {
		if mf, ok := fams[n]; ok {
			for _, m := range mf.GetMetric() {
				if value(m) >= kvFull {
					l.saturated = true
				}
			}
		}
	}
	return l, nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}

// count turns a gauge into a count: NaN, negatives and absurd values are 0
// or capped, never trusted blindly.
func count(v float64) int {
	if math.IsNaN(v) || v < 0 {
		return 0
	}
	return int(math.Min(math.Round(v), 1<<20))
}

// scrape reads every endpoint's /metrics once, concurrently, each bounded
// by the metrics timeout. Errors leave the endpoint's last report to age out.
func (b *Backend) scrape(ctx context.Context) {
	var wg sync.WaitGroup
	for _, e := range b.eps.list() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.scrapeOne(ctx, e)
		}()
	}
	wg.Wait()
}

func (b *Backend) scrapeOne(ctx context.Context, e *endpoint) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.metricsWithin)
	defer cancel()
	body, err := b.get(ctx, b.metricsURL(e), maxMetricsBody)
	if err != nil {
		b.noteScrapeError(e, err)
		return
	}
	l, err := parseLoad(b.cfg.server, body)
	if err != nil {
		b.noteScrapeError(e, err)
		return
	}
	e.mu.Lock()
	needSlots := !e.slotsKnown && b.cfg.server == ServerLlamaCpp
	e.mu.Unlock()
	if needSlots {
		if n, err := b.llamaSlots(ctx, e); err == nil {
			e.mu.Lock()
			e.slots, e.slotsKnown = n, true
			e.mu.Unlock()
		}
	}
	e.mu.Lock()
	e.running, e.queued, e.saturated, e.scrapedAt = l.running, l.queued, l.saturated, b.now()
	e.mu.Unlock()
}

// metricsURL is where an endpoint's metrics are: its root, or the same
// host on metrics_port.
func (b *Backend) metricsURL(e *endpoint) string {
	if b.cfg.metricsPort == "" {
		return e.root + b.cfg.metricsPath
	}
	scheme, _, _ := strings.Cut(e.root, "://")
	host, _, err := net.SplitHostPort(e.name)
	if err != nil {
		host = e.name
	}
	return scheme + "://" + net.JoinHostPort(host, b.cfg.metricsPort) + b.cfg.metricsPath
}

// noteScrapeError logs a failing scrape at most once a minute per backend.
func (b *Backend) noteScrapeError(e *endpoint, err error) {
	if b.closed.Load() {
		return
	}
	b.logMu.Lock()
	defer b.logMu.Unlock()
	if now := b.now(); now.Sub(b.lastScrapeLog) >= time.Minute {
		b.lastScrapeLog = now
		b.log.Warn("load metrics scrape failed; the pool is routed without its load signal until it works", "pool", b.cfg.pool, "endpoint", e.name, "err", err)
	}
}

// llamaSlots asks llama-server how many parallel slots it runs (-np).
func (b *Backend) llamaSlots(ctx context.Context, e *endpoint) (int, error) {
	body, err := b.get(ctx, e.root+"/props", maxPropsBody)
	if err != nil {
		return 0, err
	}
	var v struct {
		TotalSlots int `json:"total_slots"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.TotalSlots < 1 || v.TotalSlots > 1<<16 {
		return 0, fmt.Errorf("/props: no total_slots")
	}
	return v.TotalSlots, nil
}

// get fetches a small document: 200 only, at most limit bytes.
func (b *Backend) get(ctx context.Context, url string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	b.authorize(req)
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("GET %s: body larger than %d bytes", url, limit)
	}
	return body, nil
}
