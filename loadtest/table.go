package loadtest

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// WriteSummary writes the end-of-run text summary: for one run, its numbers,
// statuses and pools; for several (--compare), the runs side by side.
func WriteSummary(w io.Writer, runs []RunReport) error {
	if len(runs) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := []string{"metric"}
	for _, r := range runs {
		head = append(head, r.Label)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	row := func(name string, f func(r RunReport) string) {
		cells := []string{name}
		for _, r := range runs {
			cells = append(cells, f(r))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	row("scheduled", func(r RunReport) string { return fmt.Sprint(r.Requests.Scheduled) })
	row("ok", func(r RunReport) string { return fmt.Sprint(r.Requests.OK) })
	row("failed", func(r RunReport) string { return fmt.Sprint(r.Requests.Failed) })
	row("dropped (client cap)", func(r RunReport) string { return fmt.Sprint(r.Requests.DroppedClientCap) })
	row("success ratio", func(r RunReport) string { return fmt.Sprintf("%.2f%%", 100*r.SuccessRatio) })
	row("retried / failed over", func(r RunReport) string {
		return fmt.Sprintf("%d / %d", r.Requests.Retried, r.Requests.FailedOver)
	})
	row("wall time", func(r RunReport) string { return fmt.Sprintf("%.1fs", r.WallSeconds) })
	row("throughput", func(r RunReport) string {
		return fmt.Sprintf("%.1f req/s, %.0f tok/s", r.Throughput.RequestsPerSecond, r.Throughput.OutputTokensPerSecond)
	})
	for _, m := range []string{"ttft", "itl", "e2e"} {
		if _, ok := runs[0].Latency[m]; !ok {
			continue
		}
		row(m+" p50/p90/p99 ms", func(r RunReport) string {
			d := r.Latency[m]
			return fmt.Sprintf("%.1f / %.1f / %.1f", d.P50, d.P90, d.P99)
		})
	}
	row("tokens (output / prompt / cached)", func(r RunReport) string {
		return fmt.Sprintf("%d / %d / %d", r.Tokens.Output, r.Tokens.Prompt, r.Tokens.CachedPrompt)
	})
	row("cached prompt ratio", func(r RunReport) string { return fmt.Sprintf("%.3f", r.CachedPromptRatio) })
	row("output tokens from", func(r RunReport) string {
		if r.Tokens.OutputEstimatedCalls == 0 {
			return "server usage"
		}
		return fmt.Sprintf("estimate on %d call(s)", r.Tokens.OutputEstimatedCalls)
	})
	row("tokens/s per call p50", func(r RunReport) string { return fmt.Sprintf("%.1f", r.OutputTokensPerSecond.P50) })
	row("scheduler lag p99 ms", func(r RunReport) string { return fmt.Sprintf("%.2f", r.Latency["scheduler_lag"].P99) })
	row("generator sched p99 ms", func(r RunReport) string {
		if d, ok := r.Latency["generator_sched"]; ok {
			return fmt.Sprintf("%.2f", d.P99)
		}
		return "-"
	})
	row("client wait p99 ms", func(r RunReport) string {
		if d, ok := r.Latency["client_wait"]; ok {
			return fmt.Sprintf("%.2f", d.P99)
		}
		return "-"
	})
	for _, code := range statusNames(runs) {
		row("status "+code, func(r RunReport) string { return fmt.Sprint(r.Statuses[code]) })
	}
	for _, pool := range poolNames(runs) {
		row("pool "+pool, func(r RunReport) string {
			for _, g := range r.Pools {
				if g.Key == pool {
					return fmt.Sprintf("%d (%.1f%%)", g.Requests, 100*g.Share)
				}
			}
			return "0"
		})
	}
	for _, prio := range priorityKeys(runs) {
		row("priority "+prio+" ok", func(r RunReport) string {
			for _, g := range r.Priorities {
				if g.Key == prio && g.Requests > 0 {
					return fmt.Sprintf("%d/%d", g.OK, g.Requests)
				}
			}
			return "-"
		})
	}
	row("SLOs", func(r RunReport) string {
		if len(r.SLOs) == 0 {
			return "-"
		}
		var s []string
		for _, x := range r.SLOs {
			mark := "met"
			if !x.Met {
				mark = "MISSED"
			}
			s = append(s, x.Name+" "+mark)
		}
		return strings.Join(s, ", ")
	})
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range runs {
		for _, s := range r.Scenario {
			if s.Error != "" {
				fmt.Fprintf(w, "%s: scenario line %d (%s at %gs): %s\n", r.Label, s.Line, s.Action, s.At, s.Error)
			}
		}
	}
	return nil
}

func statusNames(runs []RunReport) []string {
	set := map[string]bool{}
	for _, r := range runs {
		for c := range r.Statuses {
			set[c] = true
		}
	}
	return sortedKeys(set)
}

func poolNames(runs []RunReport) []string {
	set := map[string]bool{}
	for _, r := range runs {
		for _, g := range r.Pools {
			set[g.Key] = true
		}
	}
	return sortedKeys(set)
}

func priorityKeys(runs []RunReport) []string {
	set := map[string]bool{}
	for _, r := range runs {
		for _, g := range r.Priorities {
			set[g.Key] = true
		}
	}
	keys := sortedKeys(set)
	sort.SliceStable(keys, func(i, j int) bool { return keys[i] == "interactive" })
	return keys
}
