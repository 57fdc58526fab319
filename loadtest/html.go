package loadtest

import (
	"bytes"
	"fmt"
	"html"
	"html/template"
	"math"
	"os"
	"sort"
	"strings"
)

// WriteHTML writes a self-contained HTML report (inline SVG charts, no scripts).
func WriteHTML(path string, rep Report) error {
	var buf bytes.Buffer
	if err := renderHTML(&buf, rep); err != nil {
		return fmt.Errorf("render html report: %w", err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write html report: %w", err)
	}
	return nil
}

type htmlRun struct {
	RunReport
	Primary string
	Latency template.HTML
	Share   template.HTML
	Errors  template.HTML
}

func renderHTML(buf *bytes.Buffer, rep Report) error {
	var runs []htmlRun
	pal := placePalette(rep.Runs)
	for _, r := range rep.Runs {
		primary := "TTFT"
		if !r.Config.Streaming {
			primary = "end-to-end latency"
		}
		runs = append(runs, htmlRun{
			RunReport: r, Primary: primary,
			Latency: latencyChart(r), Share: shareChart(r, pal), Errors: errorChart(r),
		})
	}
	var summary bytes.Buffer
	if err := WriteSummary(&summary, rep.Runs); err != nil {
		return err
	}
	data := map[string]any{"Report": rep, "Runs": runs, "Summary": summary.String()}
	if len(rep.Runs) > 1 {
		data["Compare"] = compareCharts(rep.Runs, pal)
	}
	return pageTmpl.Execute(buf, data)
}

var pageTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct": func(f float64) string { return fmt.Sprintf("%.2f%%", 100*f) },
	"ms":  func(f float64) string { return fmt.Sprintf("%.1f", f) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>switchyard-load report</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;max-width:1100px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #dde}h3{font-size:15px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #dde;padding:3px 8px;text-align:right}
th{background:#f3f5f9}td:first-child,th:first-child{text-align:left}
pre{background:#f6f7fa;padding:10px;font-size:12px;overflow-x:auto}.err{color:#b3261e}.ok{color:#1b7f3b}
svg{background:#fff;border:1px solid #e3e6ee;margin:6px 0}
</style></head><body>
<h1>switchyard-load report</h1>
<p>Generated {{.Report.GeneratedAt.Format "2006-01-02 15:04:05 MST"}} (when the report was written, after the last run). Times on chart axes are trace time (the trace's own clock); requests are placed by arrival.</p>
<pre>{{.Summary}}</pre>
{{with .Compare}}<h2>Comparison: the runs on one chart</h2>
<p>One colour per run in the first charts; in the share chart one colour per cloud/region (the same in every chart of this report) and one dash pattern per run.</p>
<h3>{{.Primary}} p99 over time, per run</h3>{{.Latency}}
<h3>Success ratio over time (OK ÷ arrivals per window), per run</h3>{{.Success}}
<h3>Share of OK calls by cloud/region over time, per run</h3>{{.Share}}
<h3>Cached prompt ratio over time (cached ÷ prompt tokens), per run</h3>{{.Cached}}
{{end}}
{{range .Runs}}
<h2>Run: {{.Label}}</h2>
<p>Target {{.Config.Target}} · trace {{.Config.Trace}} ({{.Config.Format}}) · model {{.Config.Model}} ·
{{if .Config.Streaming}}streaming{{else}}unary{{end}} · speedup {{.Config.Speedup}} · scale {{.Config.Scale}} ·
max concurrency {{.Config.MaxConcurrency}}{{if .Config.PriorityMix}} · priorities {{.Config.PriorityMix}}{{end}}{{if .Config.Scenario}} · scenario {{.Config.Scenario}}{{end}}</p>
<p>{{.Requests.Scheduled}} scheduled, {{.Requests.OK}} OK, {{.Requests.Failed}} failed, {{.Requests.DroppedClientCap}} dropped by the client cap —
success ratio <b>{{pct .SuccessRatio}}</b>; {{.Requests.Retried}} retried, {{.Requests.FailedOver}} failed over;
{{.Requests.CappedInput}} prompts capped to the model's input limit.</p>
<p>Tokens of OK calls: {{.Tokens.Output}} output, {{.Tokens.Prompt}} prompt of which {{.Tokens.CachedPrompt}} served from the servers' prefix caches (cached prompt ratio <b>{{printf "%.3f" .CachedPromptRatio}}</b>).
{{if .Tokens.OutputEstimatedCalls}}<span class="err">{{.Tokens.OutputEstimatedCalls}} call(s) came without the server's usage: their output tokens are estimated from the text (4 bytes a token).</span>{{else}}Output counts are the servers' usage.{{end}}</p>
{{range .SLOs}}<p class="{{if .Met}}ok{{else}}err{{end}}">SLO {{.Name}}: target {{.Target}}, actual {{.Actual}} — {{if .Met}}met{{else}}MISSED{{end}}</p>{{end}}
<h3>{{.Primary}} percentiles over time</h3>{{.Latency}}
<h3>Traffic share by cloud/region over time (successful calls)</h3>{{.Share}}
<h3>Errors over time</h3>{{.Errors}}
<h3>Latency (ms)</h3>
<table><tr><th>metric</th><th>count</th><th>mean</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th></tr>
{{range $n, $d := .RunReport.Latency}}<tr><td>{{$n}}</td><td>{{$d.Count}}</td><td>{{ms $d.Mean}}</td><td>{{ms $d.P50}}</td><td>{{ms $d.P90}}</td><td>{{ms $d.P95}}</td><td>{{ms $d.P99}}</td><td>{{ms $d.P999}}</td><td>{{ms $d.Max}}</td></tr>
{{end}}</table>
<h3>Statuses</h3>
<table><tr><th>code</th><th>calls</th></tr>{{range $c, $n := .Statuses}}<tr><td>{{$c}}</td><td>{{$n}}</td></tr>{{end}}</table>
{{range $c, $m := .ErrorSamples}}<p class="err">{{$c}}: {{range $m}}“{{.}}” {{end}}</p>{{end}}
<h3>Pools</h3>
<table><tr><th>pool</th><th>cloud</th><th>region</th><th>accelerator</th><th>calls</th><th>share</th><th>ok</th><th>cached prompt</th><th>TTFT p50</th><th>TTFT p99</th><th>e2e p50</th><th>e2e p99</th></tr>
{{range .Pools}}<tr><td>{{.Pool}}</td><td>{{.Cloud}}</td><td>{{.Region}}</td><td>{{.Accelerator}}</td><td>{{.Requests}}</td><td>{{pct .Share}}</td><td>{{.OK}}</td><td>{{printf "%.3f" .CachedPromptRatio}}</td><td>{{ms .TTFT.P50}}</td><td>{{ms .TTFT.P99}}</td><td>{{ms .E2E.P50}}</td><td>{{ms .E2E.P99}}</td></tr>{{end}}
</table>
<h3>Priorities</h3>
<table><tr><th>priority</th><th>calls</th><th>ok</th><th>TTFT p99</th><th>e2e p99</th></tr>
{{range .Priorities}}<tr><td>{{.Key}}</td><td>{{.Requests}}</td><td>{{.OK}}</td><td>{{ms .TTFT.P99}}</td><td>{{ms .E2E.P99}}</td></tr>{{end}}
</table>
{{if .Scenario}}<h3>Scenario</h3>
<table><tr><th>line</th><th>at (trace s)</th><th>sent (wall s)</th><th>action</th><th>pool</th><th>detail</th><th>result</th></tr>
{{range .Scenario}}<tr><td>{{.Line}}</td><td>{{.At}}</td><td>{{printf "%.2f" .WallOffset}}</td><td>{{.Action}}</td><td>{{.Pool}}</td><td>{{.Detail}}</td><td>{{if .Error}}<span class="err">{{.Error}}</span>{{else}}<span class="ok">ok</span>{{end}}</td></tr>{{end}}
</table>{{end}}
{{end}}
<p style="font-size:12px;color:#667">Trace credit: the Azure LLM inference traces are from the Azure Public Dataset (CC-BY-4.0).</p>
</body></html>
`))

// Chart geometry.
const (
	chartW, chartH                     = 1000, 260
	padL, padR, padT, padB             = 60, 170, 12, 34
	plotW, plotH                       = chartW - padL - padR, chartH - padT - padB
	maxLegend                          = 10
	colorPalette                       = "#4e79a7,#f28e2b,#e15759,#76b7b2,#59a14f,#edc948,#b07aa1,#ff9da7,#9c755f,#bab0ac"
	svgHead                            = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="100%%" font-family="sans-serif" font-size="11">`
	noData                             = `<p>No data.</p>`
	markerColor, gridColor, axisColour = "#888", "#eceef3", "#556"
)

var colors = strings.Split(colorPalette, ",")

type series struct {
	name string
	ys   []float64 // NaN: no point
}

// frame draws axes, grid, x labels and scenario markers; returns the builder and y scaling.
type frame struct {
	b          strings.Builder
	xMax, yMax float64
}

func newFrame(r RunReport, yMax float64, yUnit string) *frame {
	f := &frame{xMax: float64(len(r.Timeline.Windows)) * r.Timeline.WindowSeconds, yMax: niceCeil(yMax)}
	if f.xMax <= 0 {
		f.xMax = 1
	}
	fmt.Fprintf(&f.b, svgHead, chartW, chartH)
	for i := 0; i <= 4; i++ {
		v := f.yMax * float64(i) / 4
		y := f.y(v)
		fmt.Fprintf(&f.b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s"/>`, padL, padL+plotW, y, y, gridColor)
		fmt.Fprintf(&f.b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, padL-4, y+4, fmtNum(v))
	}
	for i := 0; i <= 5; i++ {
		v := f.xMax * float64(i) / 5
		fmt.Fprintf(&f.b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, f.x(v), padT+plotH+14, fmtDur(v))
	}
	fmt.Fprintf(&f.b, `<text x="%d" y="%d" text-anchor="middle">trace time</text>`, padL+plotW/2, chartH-4)
	fmt.Fprintf(&f.b, `<text x="12" y="%d" transform="rotate(-90 12 %d)" text-anchor="middle">%s</text>`, padT+plotH/2, padT+plotH/2, html.EscapeString(yUnit))
	fmt.Fprintf(&f.b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s"/>`, padL, padL+plotW, padT+plotH, padT+plotH, axisColour)
	for k, s := range r.Scenario {
		if s.At > f.xMax {
			continue
		}
		x := f.x(s.At)
		label := s.Action
		if s.Pool != "" {
			label += " " + s.Pool
		}
		fmt.Fprintf(&f.b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s" stroke-dasharray="4 3"><title>%s</title></line>`,
			x, x, padT, padT+plotH, markerColor, html.EscapeString(label+" "+s.Detail))
		// Stagger labels so that steps at the same time stay readable.
		fmt.Fprintf(&f.b, `<text x="%.1f" y="%d" fill="%s" font-size="10">%s</text>`, x+3, padT+10+(k%5)*12, markerColor, html.EscapeString(label))
	}
	return f
}

func (f *frame) x(v float64) float64 { return padL + v/f.xMax*plotW }
func (f *frame) y(v float64) float64 { return padT + plotH - v/f.yMax*plotH }

func (f *frame) legend(names []string) {
	for i, n := range names {
		if i >= maxLegend {
			break
		}
		y := padT + 12 + i*16
		fmt.Fprintf(&f.b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>`,
			padL+plotW+12, y-9, colors[i%len(colors)], padL+plotW+26, y, html.EscapeString(n))
	}
}

func (f *frame) done() template.HTML {
	f.b.WriteString(`</svg>`)
	return template.HTML(f.b.String()) //nolint:gosec // every text in it is escaped above
}

func latencyChart(r RunReport) template.HTML {
	w := r.Timeline.Windows
	if len(w) == 0 {
		return noData
	}
	pick := func(win Window) Dist {
		if r.Config.Streaming {
			return win.TTFT
		}
		return win.E2E
	}
	ss := []series{{name: "p50"}, {name: "p90"}, {name: "p99"}}
	var yMax float64
	for _, win := range w {
		d := pick(win)
		for i, v := range []float64{d.P50, d.P90, d.P99} {
			if d.Count == 0 {
				v = math.NaN()
			} else {
				yMax = math.Max(yMax, v)
			}
			ss[i].ys = append(ss[i].ys, v)
		}
	}
	f := newFrame(r, yMax, "ms")
	for i, s := range ss {
		f.line(s.ys, r.Timeline.WindowSeconds, colors[i], "")
	}
	f.legend([]string{"p50", "p90", "p99"})
	return f.done()
}

// line draws one series (NaN: a gap) at window centres, in colour, dashed
// with the SVG dash pattern when one is given.
func (f *frame) line(ys []float64, winSec float64, colour, dash string) {
	var pts [][2]float64
	flush := func() {
		if len(pts) == 1 { // an isolated window: a dot
			fmt.Fprintf(&f.b, `<circle cx="%.1f" cy="%.1f" r="2" fill="%s"/>`, pts[0][0], pts[0][1], colour)
		} else if len(pts) > 1 {
			var sb strings.Builder
			for k, p := range pts {
				if k > 0 {
					sb.WriteByte(' ')
				}
				fmt.Fprintf(&sb, "%.1f,%.1f", p[0], p[1])
			}
			da := ""
			if dash != "" {
				da = fmt.Sprintf(` stroke-dasharray="%s"`, dash)
			}
			fmt.Fprintf(&f.b, `<polyline fill="none" stroke="%s" stroke-width="1.6"%s points="%s"/>`, colour, da, sb.String())
		}
		pts = pts[:0]
	}
	for j, v := range ys {
		if math.IsNaN(v) {
			flush()
			continue
		}
		pts = append(pts, [2]float64{f.x((float64(j) + 0.5) * winSec), f.y(v)})
	}
	flush()
}

// palette gives every name one colour for the whole report, so a region
// (or pool) keeps its colour in every run's chart and in the comparison: the
// names of all runs, sorted, take the palette in turn.
type palette map[string]string

func newPalette(names []string) palette {
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	p := palette{}
	for _, n := range sorted {
		if _, ok := p[n]; !ok {
			p[n] = colors[len(p)%len(colors)]
		}
	}
	return p
}

func (p palette) of(name string) string {
	if c, ok := p[name]; ok {
		return c
	}
	return colors[len(colors)-1]
}

// placePalette colours every cloud/region any run served from.
func placePalette(runs []RunReport) palette {
	var names []string
	for _, r := range runs {
		for _, w := range r.Timeline.Windows {
			for k := range w.Places {
				names = append(names, k)
			}
		}
	}
	return newPalette(names)
}

// legendColours draws a legend of names in the given colours, with an
// optional dash sample per entry.
func (f *frame) legendColours(names, cols, dashes []string) {
	for i, n := range names {
		if i >= 16 { // what fits the chart's height
			break
		}
		y := padT + 12 + i*14
		if dashes != nil {
			da := ""
			if dashes[i] != "" {
				da = fmt.Sprintf(` stroke-dasharray="%s"`, dashes[i])
			}
			fmt.Fprintf(&f.b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`, padL+plotW+8, padL+plotW+24, y-4, y-4, cols[i], da)
		} else {
			fmt.Fprintf(&f.b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/>`, padL+plotW+12, y-9, cols[i])
		}
		fmt.Fprintf(&f.b, `<text x="%d" y="%d">%s</text>`, padL+plotW+28, y, html.EscapeString(n))
	}
}

// shareChart stacks each place's fraction of successful calls per window.
func shareChart(r RunReport, pal palette) template.HTML {
	w := r.Timeline.Windows
	totals := map[string]int64{}
	for _, win := range w {
		for k, n := range win.Places {
			totals[k] += n
		}
	}
	if len(totals) == 0 {
		return noData
	}
	places := sortedKeys(totals)
	sort.SliceStable(places, func(i, j int) bool { return totals[places[i]] > totals[places[j]] })
	if len(places) > maxLegend {
		places = places[:maxLegend] // the rest stays blank at the top
	}
	f := newFrame(r, 1, "share of OK calls")
	bw := float64(plotW) / float64(len(w))
	for j, win := range w {
		var sum int64
		for _, n := range win.Places {
			sum += n
		}
		if sum == 0 {
			continue
		}
		base := 0.0
		for _, p := range places {
			frac := float64(win.Places[p]) / float64(sum)
			if frac == 0 {
				continue
			}
			y0, y1 := f.y(base), f.y(base+frac)
			fmt.Fprintf(&f.b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %.0f%%</title></rect>`,
				padL+float64(j)*bw, y1, math.Max(bw-0.3, 0.5), y0-y1, pal.of(p), html.EscapeString(p), 100*frac)
			base += frac
		}
	}
	cols := make([]string, len(places))
	for i, p := range places {
		cols[i] = pal.of(p)
	}
	f.legendColours(places, cols, nil)
	return f.done()
}

// errorChart stacks failed calls per window by status code, with client-cap drops.
func errorChart(r RunReport) template.HTML {
	w := r.Timeline.Windows
	totals := map[string]int64{}
	var yMax float64
	for _, win := range w {
		var sum int64
		for c, n := range win.Errors {
			totals[c] += n
			sum += n
		}
		if win.Dropped > 0 {
			totals["dropped (client cap)"] += win.Dropped
			sum += win.Dropped
		}
		yMax = math.Max(yMax, float64(sum))
	}
	if len(totals) == 0 {
		return template.HTML(`<p class="ok">No errors.</p>`)
	}
	names := sortedKeys(totals)
	f := newFrame(r, yMax, "failed calls")
	bw := float64(plotW) / float64(len(w))
	for j, win := range w {
		base := 0.0
		for i, c := range names {
			n := win.Errors[c]
			if c == "dropped (client cap)" {
				n = win.Dropped
			}
			if n == 0 {
				continue
			}
			y0, y1 := f.y(base), f.y(base+float64(n))
			fmt.Fprintf(&f.b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %d</title></rect>`,
				padL+float64(j)*bw, y1, math.Max(bw-0.3, 0.5), y0-y1, colors[(i+2)%len(colors)], html.EscapeString(c), n)
			base += float64(n)
		}
	}
	// Legend colours follow the bars' offset of 2.
	for i, n := range names {
		if i >= maxLegend {
			break
		}
		y := padT + 12 + i*16
		fmt.Fprintf(&f.b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>`,
			padL+plotW+12, y-9, colors[(i+2)%len(colors)], padL+plotW+26, y, html.EscapeString(n))
	}
	return f.done()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if !(v > 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2g", v)
}

func fmtDur(sec float64) string {
	switch {
	case sec >= 3600:
		return fmt.Sprintf("%.1fh", sec/3600)
	case sec >= 120:
		return fmt.Sprintf("%.0fm", sec/60)
	default:
		return fmt.Sprintf("%.0fs", sec)
	}
}

// comparison holds the overlay charts of a report with several runs.
type comparison struct {
	Primary                         string
	Latency, Success, Share, Cached template.HTML
}

// runDashes tells runs apart in the share overlay, where colour is the place's.
var runDashes = []string{"", "7 4", "2 3", "10 3 2 3", "4 4", "1 2"}

func compareCharts(runs []RunReport, pal palette) comparison {
	base := runs[0]
	for _, r := range runs[1:] { // the longest timeline sets the axis
		if float64(len(r.Timeline.Windows))*r.Timeline.WindowSeconds > float64(len(base.Timeline.Windows))*base.Timeline.WindowSeconds {
			base = r
		}
	}
	c := comparison{Primary: "TTFT"}
	if !base.Config.Streaming {
		c.Primary = "end-to-end latency"
	}
	labels := make([]string, len(runs))
	runCols := make([]string, len(runs))
	for i, r := range runs {
		labels[i], runCols[i] = r.Label, colors[i%len(colors)]
	}
	perWindow := func(r RunReport, f func(w Window) float64) []float64 {
		ys := make([]float64, len(r.Timeline.Windows))
		for j, w := range r.Timeline.Windows {
			ys[j] = f(w)
		}
		return ys
	}
	overlay := func(yUnit string, yMax float64, f func(w Window) float64) template.HTML {
		fr := newFrame(base, yMax, yUnit)
		for i, r := range runs {
			fr.line(perWindow(r, f), r.Timeline.WindowSeconds, runCols[i], "")
		}
		fr.legendColours(labels, runCols, make([]string, len(runs)))
		return fr.done()
	}
	p99 := func(w Window) float64 {
		d := w.TTFT
		if !base.Config.Streaming {
			d = w.E2E
		}
		if d.Count == 0 {
			return math.NaN()
		}
		return d.P99
	}
	yMax := 0.0
	for _, r := range runs {
		for _, w := range r.Timeline.Windows {
			if v := p99(w); !math.IsNaN(v) {
				yMax = math.Max(yMax, v)
			}
		}
	}
	c.Latency = overlay("ms", yMax, p99)
	c.Success = overlay("OK ÷ arrivals", 1, func(w Window) float64 {
		if n := w.Sent + w.Dropped; n > 0 {
			return float64(w.OK) / float64(n)
		}
		return math.NaN()
	})
	c.Cached = overlay("cached ÷ prompt tokens", 1, func(w Window) float64 {
		if w.OK == 0 {
			return math.NaN()
		}
		return w.CachedPromptRatio
	})

	// Share: colour by place (the palette), dash by run.
	totals := map[string]int64{}
	for _, r := range runs {
		for _, w := range r.Timeline.Windows {
			for k, n := range w.Places {
				totals[k] += n
			}
		}
	}
	if len(totals) == 0 {
		c.Share = noData
		return c
	}
	places := sortedKeys(totals)
	sort.SliceStable(places, func(i, j int) bool { return totals[places[i]] > totals[places[j]] })
	if len(places) > maxLegend {
		places = places[:maxLegend]
	}
	fr := newFrame(base, 1, "share of OK calls")
	var names, cols, dashes []string
	for _, p := range places {
		names, cols, dashes = append(names, p), append(cols, pal.of(p)), append(dashes, "")
	}
	for i, r := range runs {
		dash := runDashes[i%len(runDashes)]
		for _, p := range places {
			fr.line(perWindow(r, func(w Window) float64 {
				var sum int64
				for _, n := range w.Places {
					sum += n
				}
				if sum == 0 {
					return math.NaN()
				}
				return float64(w.Places[p]) / float64(sum)
			}), r.Timeline.WindowSeconds, pal.of(p), dash)
		}
		names, cols, dashes = append(names, "run "+r.Label), append(cols, axisColour), append(dashes, dash)
	}
	fr.legendColours(names, cols, dashes)
	c.Share = fr.done()
	return c
}
