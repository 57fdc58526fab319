package loadtest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/loadtest/trace"
)

// sseServer answers every call with a stream of text chunks, then the usage
// chunk when usage is not empty, then [DONE].
func sseServer(t *testing.T, usage string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		// 40 bytes of text in two chunks: 10 tokens by the bytes/4 estimate.
		for _, txt := range []string{"twenty bytes of txt ", "twenty more bytes!!!"} {
			_, _ = io.WriteString(w, `data: {"choices":[{"delta":{"content":"`+txt+`"}}]}`+"\n\n")
		}
		_, _ = io.WriteString(w, `data: {"choices":[{"delta":{},"finish_reason":"stop"}],"switchyard":{"pool":"p1","cloud":"aws","region":"us-east-1","attempts":1}}`+"\n\n")
		if usage != "" {
			_, _ = io.WriteString(w, `data: {"choices":[],"usage":`+usage+`}`+"\n\n")
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv
}

func replayOne(t *testing.T, base string) RunReport {
	t.Helper()
	c, err := NewOpenAIClient(OpenAIOptions{BaseURL: base})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stats := NewStats(true, time.Second)
	src := &slice{reqs: []trace.Request{{InputTokens: 30, OutputTokens: 16}}}
	if err := Replay(context.Background(), ReplayOptions{Client: c, Source: src, Stats: stats, Model: "m"}); err != nil {
		t.Fatal(err)
	}
	return stats.Report("run", RunConfig{Streaming: true}, time.Now(), time.Second)
}

// Over HTTP the chunks carry no token counts: the server's usage is the
// count (not the larger of it and the bytes/4 estimate), with the cached
// prompt tokens it reports; without usage the output is estimated and the
// report says so.
func TestOpenAITokensComeFromTheServersUsage(t *testing.T) {
	r := replayOne(t, sseServer(t, `{"prompt_tokens":30,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":12}}`).URL)
	if r.Requests.OK != 1 || r.Tokens.Output != 4 || r.Tokens.Prompt != 30 || r.Tokens.CachedPrompt != 12 ||
		r.Tokens.OutputEstimatedCalls != 0 || r.Tokens.UsageCalls != 1 {
		t.Fatalf("tokens %+v, ok %d: want output 4, prompt 30, cached 12 from the usage", r.Tokens, r.Requests.OK)
	}
	if r.CachedPromptRatio != 0.4 || r.Pools[0].CachedPromptRatio != 0.4 {
		t.Errorf("cached prompt ratio %v (pool %v), want 0.4", r.CachedPromptRatio, r.Pools[0].CachedPromptRatio)
	}

	r = replayOne(t, sseServer(t, "").URL)
	if r.Requests.OK != 1 || r.Tokens.Output != 10 || r.Tokens.OutputEstimatedCalls != 1 || r.Tokens.UsageCalls != 0 || r.CachedPromptRatio != 0 {
		t.Fatalf("without usage: tokens %+v: want the estimate 10, marked estimated", r.Tokens)
	}
	var buf bytes.Buffer
	if err := WriteSummary(&buf, []RunReport{r}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "estimate on 1 call(s)") {
		t.Errorf("the summary does not say the count is an estimate:\n%s", buf.String())
	}
}

// The generator's own lag p99 over 10 % of the timeout fails the run's SLO
// verdict with a message that names it; within it, the check is met.
func TestSchedulerLagOverTenPercentOfTheTimeoutFails(t *testing.T) {
	r := RunReport{Label: "x", Latency: map[string]Dist{"scheduler_lag": {Count: 10, P99: 1500}}}
	err := SLO{Timeout: 10 * time.Second}.Check(&r)
	if err == nil || !strings.Contains(err.Error(), "load generator lag") || len(r.SLOs) != 1 || r.SLOs[0].Met {
		t.Fatalf("lag 1.5s of a 10s timeout: err %v, slos %+v", err, r.SLOs)
	}
	r.Latency["scheduler_lag"] = Dist{Count: 10, P99: 900}
	if err := (SLO{Timeout: 10 * time.Second}).Check(&r); err != nil || !r.SLOs[0].Met {
		t.Fatalf("lag 0.9s of a 10s timeout: err %v, slos %+v", err, r.SLOs)
	}
}

// A compare report overlays the runs on shared charts, and a region keeps
// one colour in every run even when another run's traffic ranks regions
// differently.
func TestCompareReportOverlaysAndKeepsColours(t *testing.T) {
	mk := func(label string, places map[string]int64) RunReport {
		return RunReport{Label: label, Config: RunConfig{Streaming: true}, Timeline: Timeline{WindowSeconds: 1, Windows: []Window{
			{Sent: 10, OK: 9, TTFT: Dist{Count: 9, P99: 50}, Places: places, CachedPromptRatio: 0.3},
			{Sent: 10, OK: 10, TTFT: Dist{Count: 10, P99: 70}, Places: places},
		}}}
	}
	a := mk("switchyard", map[string]int64{"aws/us-east-1": 8, "gcp/europe-west4": 1})
	b := mk("gie", map[string]int64{"aws/us-east-1": 1, "gcp/europe-west4": 8})
	var buf bytes.Buffer
	if err := renderHTML(&buf, Report{GeneratedAt: time.Date(2026, 12, 2, 4, 5, 6, 0, time.UTC), Runs: []RunReport{a, b}}); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, want := range []string{"Comparison: the runs on one chart", "p99 over time, per run", "Success ratio over time", "Cached prompt ratio over time", "run gie", "Generated 2026-12-02 04:05:06 UTC"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	pal := placePalette([]RunReport{a, b})
	east, eu := pal.of("aws/us-east-1"), pal.of("gcp/europe-west4")
	if east == eu {
		t.Fatalf("two regions share colour %s", east)
	}
	// In each run's share chart the region's bars carry its one colour.
	for _, r := range []RunReport{a, b} {
		chart := string(shareChart(r, pal))
		if !strings.Contains(chart, `fill="`+east+`"><title>aws/us-east-1`) || !strings.Contains(chart, `fill="`+eu+`"><title>gcp/europe-west4`) {
			t.Errorf("run %s: a region's colour changed:\n%s", r.Label, chart)
		}
	}
	// A single run has no comparison section.
	buf.Reset()
	if err := renderHTML(&buf, Report{Runs: []RunReport{a}}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "Comparison: the runs") {
		t.Error("a one-run report has a comparison section")
	}
}
