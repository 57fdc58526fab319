package loadtest

import (
	"fmt"
	"strings"
	"time"
)

// SLO holds the objectives a run must meet; zero fields are not checked.
type SLO struct {
	// TTFTP99 bounds the p99 time to first token (end-to-end latency for unary runs).
	TTFTP99 time.Duration
	// Success is the least ratio of OK calls to scheduled arrivals (client-cap drops count as failures).
	Success float64
}

// Check evaluates r against s, records the results in r.SLOs and returns an
// error naming every missed objective (nil when all are met).
func (s SLO) Check(r *RunReport) error {
	r.SLOs = nil
	if s.TTFTP99 > 0 {
		name, d := "ttft_p99_ms", r.Latency["ttft"]
		if !r.Config.Streaming {
			name, d = "e2e_p99_ms", r.Latency["e2e"]
		}
		target := float64(s.TTFTP99) / float64(time.Millisecond)
		// A run with no successful call has no latency to show: that is a miss.
		r.SLOs = append(r.SLOs, SLOResult{Name: name, Target: target, Actual: d.P99, Met: d.Count > 0 && d.P99 <= target})
	}
	if s.Success > 0 {
		r.SLOs = append(r.SLOs, SLOResult{Name: "success_ratio", Target: s.Success, Actual: r.SuccessRatio, Met: r.SuccessRatio >= s.Success})
	}
	var missed []string
	for _, res := range r.SLOs {
		if res.Met {
			continue
		}
		if res.Name == "success_ratio" {
			missed = append(missed, fmt.Sprintf("success ratio %.4f < %.4f", res.Actual, res.Target))
		} else {
			what := "p99 TTFT"
			if res.Name == "e2e_p99_ms" {
				what = "p99 end-to-end latency"
			}
			missed = append(missed, fmt.Sprintf("%s %.1fms > %.1fms", what, res.Actual, res.Target))
		}
	}
	if len(missed) > 0 {
		return fmt.Errorf("run %q missed SLO: %s", r.Label, strings.Join(missed, "; "))
	}
	return nil
}
