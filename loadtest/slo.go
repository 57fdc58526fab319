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
	// Timeout is the per-call timeout of the run: when set, the load
	// generator's own scheduling lag p99, the p99 of the time calls waited
	// in the client before their request left, and the p99 of its
	// goroutines' wait for a CPU (the last two when measured) must each stay
	// within MaxLagShare of it, or the run measured the load
	// tester rather than the router.
	Timeout time.Duration
}

// MaxLagShare is the largest generator lag p99, and the largest client
// wait p99, as a share of the call timeout, a run may show and still count.
const MaxLagShare = 0.10

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
	if s.Timeout > 0 {
		target := MaxLagShare * float64(s.Timeout) / float64(time.Millisecond)
		lag := r.Latency["scheduler_lag"].P99
		r.SLOs = append(r.SLOs, SLOResult{Name: "scheduler_lag_p99_ms", Target: target, Actual: lag, Met: lag <= target})
		if d, ok := r.Latency["client_wait"]; ok {
			r.SLOs = append(r.SLOs, SLOResult{Name: "client_wait_p99_ms", Target: target, Actual: d.P99, Met: d.P99 <= target})
		}
		if d, ok := r.Latency["generator_sched"]; ok {
			r.SLOs = append(r.SLOs, SLOResult{Name: "generator_sched_p99_ms", Target: target, Actual: d.P99, Met: d.P99 <= target})
		}
	}
	var missed []string
	for _, res := range r.SLOs {
		if res.Met {
			continue
		}
		switch res.Name {
		case "success_ratio":
			missed = append(missed, fmt.Sprintf("success ratio %.4f < %.4f", res.Actual, res.Target))
		case "scheduler_lag_p99_ms":
			missed = append(missed, fmt.Sprintf("load generator lag: its own scheduling lag p99 %.1fms > %.0f%% of the %v call timeout (%.1fms): "+
				"calls left late, so latencies and timeouts measure the generator, not the router (slow the replay or give it more CPU)",
				res.Actual, 100*MaxLagShare, s.Timeout, res.Target))
		case "generator_sched_p99_ms":
			missed = append(missed, fmt.Sprintf("load generator starved: its goroutines waited p99 %.1fms for a CPU, more than %.0f%% of the %v call timeout (%.1fms): "+
				"it sent and read late, so latencies and timeouts measure the generator, not the router (give it more CPU)",
				res.Actual, 100*MaxLagShare, s.Timeout, res.Target))
		case "client_wait_p99_ms":
			missed = append(missed, fmt.Sprintf("client wait: calls waited in the load tester before their request left, p99 %.1fms > %.0f%% of the %v call timeout (%.1fms): "+
				"the router saw them late, so latencies and timeouts measure the client, not the router (use more --connections)",
				res.Actual, 100*MaxLagShare, s.Timeout, res.Target))
		default:
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
