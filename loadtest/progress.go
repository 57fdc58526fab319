package loadtest

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress shows a progress bar with live rate, success ratio and p99 latency.
// It is safe for concurrent use.
type Progress struct {
	mu        sync.Mutex
	bar       *progressbar.ProgressBar
	stats     *Stats
	label     string
	metric    string
	start     time.Time
	lastDescr time.Time
}

// NewProgress draws a bar of total arrivals on w; stats feeds the live numbers.
func NewProgress(w io.Writer, total int64, label string, streaming bool, stats *Stats) *Progress {
	metric := "p99 TTFT"
	if !streaming {
		metric = "p99 e2e"
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(label),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(24),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
	return &Progress{bar: bar, stats: stats, label: label, metric: metric, start: time.Now()}
}

// Done counts one finished (or dropped) arrival.
func (p *Progress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.bar.Add(1)
	if now := time.Now(); now.Sub(p.lastDescr) >= 250*time.Millisecond {
		p.lastDescr = now
		p.bar.Describe(p.describe(now))
	}
}

func (p *Progress) describe(now time.Time) string {
	l := p.stats.Live()
	rate, ok := 0.0, 1.0
	if el := now.Sub(p.start).Seconds(); el > 0 {
		rate = float64(l.Done) / el
	}
	if all := l.Done + l.Dropped; all > 0 {
		ok = float64(l.OK) / float64(all)
	}
	return fmt.Sprintf("%s %6.1f req/s  ok %5.1f%%  %s %v", p.label, rate, 100*ok, p.metric, l.P99.Round(time.Millisecond))
}

// Finish completes the bar.
func (p *Progress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar.Describe(p.describe(time.Now()))
	_ = p.bar.Finish()
}
