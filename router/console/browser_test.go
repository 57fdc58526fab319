package console_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/console"
)

// chromiumPath finds Debian's chromium (scripts/test.sh installs it).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found: the browser tests need Debian's chromium (scripts/test.sh installs it: apt-get install chromium)")
	return ""
}

// browser is one headless chromium tab with a fresh profile.
type browser struct {
	t   *testing.T
	ctx context.Context
	dir string // screenshots go here
}

// newBrowser starts headless chromium for the test, with extra options
// (flags) when given.
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	// Bounded: the whole browser session of one test.
	ctx, cancelTime := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTime(); cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &browser{t: t, ctx: ctx, dir: shotDir(t)}
}

func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.shot("failed-" + what)
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript predicate until it is true (10 s at most).
func (b *browser) waitFor(what, expr string) {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		b.shot("failed-" + what)
		b.t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

// shot saves a screenshot of the viewport under the test's temp dir.
func (b *browser) shot(name string) {
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", p)
}

func (b *browser) signIn(url, token string) {
	b.t.Helper()
	b.do("open the console", chromedp.Navigate(url+"/"), chromedp.WaitVisible("#token"))
	b.checkContrast()
	if got := eval[string](b, `document.activeElement.id`); got != "token" {
		b.t.Fatalf("focus on %q after load, want the token field", got)
	}
	// Keyboard only: type the token, press Enter.
	b.do("sign in", chromedp.SendKeys("#token", token+"\r"))
	b.waitFor("the fleet", `document.querySelectorAll('#fleet-body tr[data-pool]').length === 8`)
}

const (
	rowOf   = `document.querySelector('#fleet-body tr[data-pool="%s"]')`
	stateOf = rowOf + `.querySelector('.state').textContent`
)

func TestBrowserOperatorSteersTheFleetLive(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	b := newBrowser(t)
	b.signIn(f.url, operatorToken)
	b.waitFor("live stream", `document.querySelector('#live').textContent === 'live'`)
	if role := eval[string](b, `document.querySelector('#role').textContent`); role != "operator" {
		t.Fatalf("role %q", role)
	}
	// Grouped by region with a total per region; the counting mode is shown.
	if n := eval[int](b, `document.querySelectorAll('#fleet-body tr.region-row').length`); n != 7 {
		t.Fatalf("%d region rows, want 7 (the demo fleet's regions)", n)
	}
	if txt := eval[string](b, `document.querySelector('tr.region-row[data-region="us-east-1"]').textContent`); txt != "us-east-1 (us)  ·  2 pools  ·  in flight 0 / 112  ·  headroom 112" {
		t.Fatalf("us-east-1 total: %q", txt)
	}
	if m := eval[string](b, `document.querySelector('#counting').textContent`); m != "local" {
		t.Fatalf("counting mode %q", m)
	}
	if n := eval[int](b, `document.querySelectorAll('#fleet-body button[data-action]').length`); n != 8*3 {
		t.Fatalf("%d action buttons, want weight, drain and override on each of 8 pools", n)
	}
	b.shot("1-operator-fleet")

	// Marks this page load: a reload would lose it.
	eval[bool](b, `window.__sameLoad = true`)

	// Keyboard: an action button opens its dialog with Enter, focus moves
	// into the dialog, Escape closes it and nothing changed.
	b.do("keyboard weight", chromedp.Focus(`#fleet-body tr[data-pool="aws-euw1-trn3"] button[data-action="weight"]`), chromedp.KeyEvent("\r"))
	b.waitFor("dialog open with focus inside", `document.querySelector('#dlg').open && document.activeElement.id === 'dlg-weight'`)
	b.do("escape", chromedp.KeyEvent("\x1b"))
	b.waitFor("dialog closed", `!document.querySelector('#dlg').open`)

	b.checkContrast()

	// Drain: the dry run comes first, then the drain; the state changes live.
	b.do("open drain", chromedp.Click(fmt.Sprintf(`#fleet-body tr[data-pool="%s"] button[data-action="drain"]`, "aws-use1-trn2")))
	b.waitFor("dry run", `document.querySelector('#dry-run-headroom') !== null`)
	if txt := eval[string](b, `document.querySelector('#dry-run-headroom').textContent`); txt != "Fleet has headroom: yes: 0 calls in flight would finish; new traffic moves to 7 other pools with headroom" {
		t.Fatalf("dry run: %q", txt)
	}
	if n := eval[int](b, `document.querySelectorAll('#dlg table.plan tbody tr').length`); n != 2 {
		t.Fatalf("dry run lists %d models, want 2", n)
	}
	if st := eval[string](b, fmt.Sprintf(stateOf, "aws-use1-trn2")); st != "ok" {
		t.Fatalf("the dry run changed the state: %q", st)
	}
	b.checkContrast()
	b.shot("2-drain-dry-run")
	b.do("confirm drain", chromedp.Click("#dlg-ok"))
	b.waitFor("drained state", fmt.Sprintf(stateOf, "aws-use1-trn2")+` === 'drained'`)
	b.waitFor("resume button", fmt.Sprintf(rowOf, "aws-use1-trn2")+`.querySelector('button[data-action="resume"]') !== null`)
	b.waitFor("drain event", `[...document.querySelectorAll('#events li[data-kind="drain"]')].some(li => li.textContent.includes('aws-use1-trn2'))`)

	// Weight.
	b.do("open weight", chromedp.Click(`#fleet-body tr[data-pool="aws-use1-h100"] button[data-action="weight"]`))
	b.do("set weight", chromedp.WaitVisible("#dlg-weight"), chromedp.SetValue("#dlg-weight", "0.5"), chromedp.Click("#dlg-ok"))
	b.waitFor("new weight", fmt.Sprintf(rowOf, "aws-use1-h100")+`.querySelector('.weight').textContent === '0.5'`)

	// Capacity override for 30 minutes: its countdown runs.
	b.do("open override", chromedp.Click(`#fleet-body tr[data-pool="gcp-usc1-tpu-v6e"] button[data-action="override"]`))
	b.do("set override", chromedp.WaitVisible("#dlg-limit"), chromedp.SetValue("#dlg-limit", "12"), chromedp.SetValue("#dlg-minutes", "30"), chromedp.Click("#dlg-ok"))
	b.waitFor("override badge", fmt.Sprintf(rowOf, "gcp-usc1-tpu-v6e")+`.querySelector('.st-override') !== null`)
	first := eval[string](b, fmt.Sprintf(rowOf, "gcp-usc1-tpu-v6e")+`.querySelector('.st-override').textContent`)
	if !matchCountdown(first) {
		t.Fatalf("override badge %q, want override 12 (29:5x left)", first)
	}
	b.waitFor("countdown tick", fmt.Sprintf(rowOf, "gcp-usc1-tpu-v6e")+`.querySelector('.st-override').textContent !== `+strconv.Quote(first))
	if lim := eval[string](b, fmt.Sprintf(rowOf, "gcp-usc1-tpu-v6e")+`.querySelector('.load .num').textContent`); lim != "0 / 12" {
		t.Fatalf("load cell %q, want 0 / 12", lim)
	}
	if over := eval[bool](b, `document.querySelector('#fleet').offsetWidth > document.querySelector('.fleet-card .table-wrap').clientWidth`); over {
		t.Error("the fleet table is wider than its card at 1280x800")
	}
	b.checkContrast() // drained, override badges, event kinds
	b.shot("3-override-countdown")

	// Audit: who did what.
	b.waitFor("audit", `document.querySelectorAll('#audit-body tr').length === 3`)
	if who := eval[string](b, `[...document.querySelectorAll('#audit-body tr')].map(tr => tr.children[1].textContent + ' ' + tr.children[2].textContent).join(',')`); who != "alice capacity_override,alice set_weight,alice drain" {
		t.Fatalf("audit actors %q", who)
	}

	// Explain: the drained pool is skipped, with the reason.
	b.do("explain", chromedp.SetValue("#ex-model", "llama-3.3-70b"), chromedp.SetValue("#ex-region", "us-east-1"), chromedp.Click(`#explain-form button[type="submit"]`))
	b.waitFor("explain table", `document.querySelector('#explain-table') !== null`)
	if first := eval[string](b, `document.querySelector('#explain-table tbody tr th').textContent`); first != "aws-use1-h100" {
		t.Fatalf("explain ranks %q first, want aws-use1-h100 (the caller's region)", first)
	}
	if skip := eval[string](b, `document.querySelector('#explain-table tbody tr.skipped').textContent`); skip != "skipaws-use1-trn2region641drained by an operator" {
		t.Fatalf("skipped row %q", skip)
	}

	// Charts: one per pool and the per-region series.
	if n := eval[int](b, `document.querySelectorAll('#chart-pools figure svg polyline').length`); n < 8 {
		t.Fatalf("%d pool chart lines", n)
	}
	if n := eval[int](b, `document.querySelectorAll('#chart-regions polyline').length`); n != 7 {
		t.Fatalf("%d region chart lines, want 7", n)
	}
	// Switch the policy: every replica switches; the header follows.
	b.do("open policy", chromedp.Click("#policy-btn"), chromedp.WaitVisible("#dlg-policy"), chromedp.SetValue("#dlg-policy", "least_request"), chromedp.Click("#dlg-ok"))
	b.waitFor("new policy", `document.querySelector('#policy').textContent === 'least_request'`)
	b.waitFor("policy event", `document.querySelector('#events li[data-kind="policy"]') !== null`)

	if !eval[bool](b, `window.__sameLoad === true`) {
		t.Fatal("the page reloaded")
	}
	b.checkContrast()
	b.shot("4-explain")

	// A narrow window: one column, nothing wider than the window.
	b.do("narrow", chromedp.EmulateViewport(420, 800))
	b.waitFor("one column", `document.querySelector('.charts-card').getBoundingClientRect().left < 40`)
	if over := eval[bool](b, `document.documentElement.scrollWidth > window.innerWidth + 1`); over {
		t.Fatalf("page is wider than a 420px window: %v", eval[int](b, `document.documentElement.scrollWidth`))
	}
	if over := eval[bool](b, `(w => w.scrollWidth > w.clientWidth + 1)(document.querySelector('.fleet-card .table-wrap'))`); over {
		t.Fatal("the fleet scrolls sideways in a 420px window")
	}
	b.checkContrast()
	b.shot("5-narrow")
}

// matchCountdown says whether s is a fresh 30-minute override's badge.
func matchCountdown(s string) bool {
	return regexp.MustCompile(`^override 12 \((30:00|29:[0-5]\d) left\)$`).MatchString(s)
}

// With Redis unreachable the header says DEGRADED, in red.
func TestBrowserShowsDegradedCounting(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close() // nothing listens there: Redis is down
	shared, err := capacity.NewRedis(capacity.RedisOptions{URL: "redis://" + dead + "/0", Replica: "console-test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	store, err := capacity.NewResilient(capacity.ResilientOptions{Shared: shared, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, fixtureOptions{Store: store})
	b := newBrowser(t)
	b.signIn(f.url, viewerToken)
	b.waitFor("degraded badge", `document.querySelector('#counting').textContent === 'DEGRADED'`)
	if bg := eval[string](b, `getComputedStyle(document.querySelector('#counting')).backgroundColor`); bg != "rgb(220, 38, 38)" {
		t.Fatalf("degraded badge background %s, want red", bg)
	}
	b.checkContrast()
	b.shot("degraded")
}

// When the rest of the fleet lacks headroom the dry run says so and the
// drain needs force, as switchyardctl drain --force.
func TestBrowserDrainWithoutHeadroomNeedsForce(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	for _, p := range []string{"aws-use1-h100", "gcp-usc1-tpu-v6e", "gcp-use4-h200", "azure-eastus-b200", "aws-euw1-trn3", "gcp-euw4-tpu-v5e", "azure-weu-h100"} {
		if code, body := f.post(t, operatorToken, "SetCapacityOverride", `{"pool":"`+p+`","limit":0}`); code != 200 {
			t.Fatalf("override %s: %d %v", p, code, body)
		}
	}
	b := newBrowser(t)
	b.signIn(f.url, operatorToken)
	b.do("open drain", chromedp.Click(`#fleet-body tr[data-pool="aws-use1-trn2"] button[data-action="drain"]`))
	b.waitFor("dry run", `document.querySelector('#dry-run-headroom') !== null`)
	if txt := eval[string](b, `document.querySelector('#dry-run-headroom').textContent`); !strings.HasPrefix(txt, "Fleet has headroom: NO: the rest of the fleet lacks headroom: model llama-3.3-70b: other pools have headroom 0") {
		t.Fatalf("dry run: %q", txt)
	}
	if ok := eval[string](b, `document.querySelector('#dlg-ok').textContent`); ok != "Drain anyway (force)" {
		t.Fatalf("confirm button %q", ok)
	}
	b.checkContrast()
	b.shot("drain-needs-force")
	b.do("force drain", chromedp.Click("#dlg-ok"))
	b.waitFor("drained state", fmt.Sprintf(stateOf, "aws-use1-trn2")+` === 'drained'`)
}

// A token taken out of the config signs its open pages out.
func TestBrowserRevokedTokenSignsOut(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	withToken := config.Demo()
	withToken.Admin.Tokens = []config.AdminToken{{Name: "temp", Role: "operator", SHA256: router.HashToken("temp-token")}}
	if err := f.rt.Reload(withToken); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t)
	b.signIn(f.url, "temp-token")
	b.waitFor("live stream", `document.querySelector('#live').textContent === 'live'`)
	if err := f.rt.Reload(config.Demo()); err != nil {
		t.Fatal(err)
	}
	b.waitFor("signed out", `!document.querySelector('#signin').hidden && document.querySelector('#app').hidden`)
	if msg := eval[string](b, `document.querySelector('#signin-error').textContent`); msg != "Signed out: unauthenticated: unknown token" {
		t.Fatalf("sign-out message %q", msg)
	}
	if tok := eval[string](b, `sessionStorage.getItem('switchyard.console.token') || ''`); tok != "" {
		t.Fatal("revoked token kept in the tab")
	}
}

func TestBrowserViewerSeesNoActions(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	b := newBrowser(t)
	// A wrong token is refused with the Admin API's reason.
	b.do("wrong token", chromedp.Navigate(f.url+"/"), chromedp.WaitVisible("#token"), chromedp.SendKeys("#token", "not-a-token\r"))
	b.waitFor("refusal", `document.querySelector('#signin-error').textContent === 'Sign-in failed: unauthenticated: unknown token'`)
	if !eval[bool](b, `document.querySelector('#app').hidden && sessionStorage.length === 0`) {
		t.Fatal("a refused token was kept or showed the console")
	}
	b.signIn(f.url, viewerToken)
	if role := eval[string](b, `document.querySelector('#role').textContent`); role != "viewer" {
		t.Fatalf("role %q", role)
	}
	if n := eval[int](b, `document.querySelectorAll('button[data-action]:not([hidden])').length`); n != 0 {
		t.Fatalf("a viewer sees %d action buttons", n)
	}
	if n := eval[int](b, `document.querySelectorAll('#fleet-head th').length`); n != 6 {
		t.Fatalf("%d fleet columns for a viewer, want 6 (no Actions)", n)
	}
	b.checkContrast()
	b.shot("viewer")
	// A direct POST from the page with the viewer's token is refused.
	code := eval[int](b, `(async () => (await fetch('/api/v1/Drain', {method: 'POST',
		headers: {'Content-Type': 'application/json', Authorization: 'Bearer `+viewerToken+`'},
		body: JSON.stringify({pool: 'aws-use1-trn2'})})).status)()`)
	if code != 403 {
		t.Fatalf("viewer's direct POST: %d, want 403", code)
	}
	if st := eval[string](b, fmt.Sprintf(stateOf, "aws-use1-trn2")); st != "ok" {
		t.Fatalf("state %q after a refused drain", st)
	}
	// Signing out forgets the token.
	b.do("sign out", chromedp.Click("#signout"))
	if tok := eval[string](b, `sessionStorage.getItem('switchyard.console.token') || ''`); tok != "" {
		t.Fatal("token kept after sign-out")
	}
	if !eval[bool](b, `!document.querySelector('#signin').hidden && document.querySelector('#app').hidden`) {
		t.Fatal("sign-out did not return to the sign-in form")
	}
}

// shotDir is where a test's screenshots go: its temp dir, or
// $CONSOLE_SCREENSHOTS when set (to look at them after the run).
func shotDir(t *testing.T) string {
	if d := os.Getenv("CONSOLE_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// checkContrast fails the test when visible text is below 4.5:1 contrast.
func (b *browser) checkContrast() {
	b.t.Helper()
	if low := eval[[]string](b, contrastCheck); len(low) > 0 {
		b.shot("failed-contrast")
		b.t.Fatalf("text below 4.5:1 contrast: %v", low)
	}
}

// contrastCheck lists the visible text elements of the page whose colour
// has less than 4.5:1 contrast (WCAG AA) with the background behind them.
const contrastCheck = `(() => {
  const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }; return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bg = (el) => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor); if (c.length === 3 || c[3] > 0) return c; } return [255, 255, 255]; };
  const low = [];
  for (const el of document.querySelectorAll('body *')) {
    if (!el.offsetParent || el.closest('svg') || ![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
    const a = lum(rgb(getComputedStyle(el).color)), b = lum(bg(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push(el.tagName + '.' + el.className + ' "' + el.textContent.trim().slice(0, 20) + '" ' + ratio.toFixed(2));
  }
  return low;
})()`

// TestBrowserChartsShedsPerCallerRegion: with every pool full, calls shed
// from callers in eu-west-1, in a region the fleet does not know and in the
// router's own region (callers that name none) appear live in the sheds
// chart, one series per caller region with its count, and by priority.
func TestBrowserChartsShedsPerCallerRegion(t *testing.T) {
	f := newFixture(t, fixtureOptions{QueueMaxWait: 50 * time.Millisecond})
	b := newBrowser(t)
	b.signIn(f.url, viewerToken)
	b.waitFor("live stream", `document.querySelector('#live').textContent === 'live'`)
	b.waitFor("no sheds yet", `document.querySelector('#legend-sheds-region').textContent === 'no calls shed'`)

	f.fillFleet(t)
	f.shed(t, 3, "eu-west-1")
	f.shed(t, 2, "mars-north-9")
	f.shed(t, 1, "")

	const legend = `[...document.querySelectorAll('#legend-sheds-region .item')]`
	b.waitFor("sheds per caller region", legend+`.map(e => e.dataset.series + ' ' + e.textContent.split(' · ')[1]).join(', ') === 'eu-west-1 3 in 15 min, us-east-1 1 in 15 min, other 2 in 15 min'`)
	if n := eval[int](b, `document.querySelectorAll('#chart-sheds-region polyline').length`); n != 3 {
		t.Fatalf("%d lines in the sheds-by-region chart, want 3", n)
	}
	if names := eval[string](b, `[...document.querySelectorAll('#legend-sheds .item')].map(e => e.dataset.series).join(',')`); names != "shed interactive,shed standard,shed batch,failed" {
		t.Fatalf("sheds-by-priority legend %q", names)
	}
	b.checkContrast()
	b.shot("sheds-per-region")
}

// TestBrowserDNSRebindingRefused: chromium resolves two names to the
// console's loopback address, as a DNS-rebinding attacker's domain would. The
// page under the attacker's name gets 421 and never the console (so its
// scripts never run there); the name an operator allowed with AllowedHosts
// serves the console, and signing in works through it.
func TestBrowserDNSRebindingRefused(t *testing.T) {
	f := newFixture(t, fixtureOptions{Options: console.Options{AllowedHosts: []string{"console.test"}}})
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(f.url, "http://"))
	b := newBrowser(t, chromedp.Flag("host-resolver-rules", "MAP rebind.test 127.0.0.1, MAP console.test 127.0.0.1"))

	b.do("open under the attacker's name", chromedp.Navigate("http://rebind.test:"+port+"/"))
	b.waitFor("the refusal", `document.body.textContent.includes('--console-allowed-hosts')`)
	if eval[bool](b, `document.querySelector('#token') !== null`) {
		t.Fatal("the console page was served under a name it does not answer to")
	}
	b.shot("rebinding-refused")

	b.signIn("http://console.test:"+port, viewerToken)
	if role := eval[string](b, `document.querySelector('#role').textContent`); role != "viewer" {
		t.Fatalf("role %q under the allowed name", role)
	}
}

// TestBrowserChartsCatchUpAfterAStreamGap: the live stream connects late
// (held back in the page until after calls were shed), so the samples taken
// meanwhile never come over it; the page notices the gap in the samples and
// reloads the history, and the sheds are all counted.
func TestBrowserChartsCatchUpAfterAStreamGap(t *testing.T) {
	f := newFixture(t, fixtureOptions{QueueMaxWait: 50 * time.Millisecond})
	b := newBrowser(t)
	b.do("open the console", chromedp.Navigate(f.url+"/"), chromedp.WaitVisible("#token"))
	// Hold the stream's request until released: a slow network.
	eval[bool](b, `(() => {
		const orig = window.fetch;
		let release;
		const gate = new Promise((r) => { release = r; });
		window.__releaseStream = () => { release(); return true; };
		window.fetch = (url, opts) => String(url).includes('/api/v1/stream') ? gate.then(() => orig(url, opts)) : orig(url, opts);
		return true;
	})()`)
	b.do("sign in", chromedp.SendKeys("#token", viewerToken+"\r"))
	b.waitFor("the fleet", `document.querySelectorAll('#fleet-body tr[data-pool]').length === 8`)

	f.fillFleet(t)
	f.shed(t, 2, "eu-west-1")
	f.shed(t, 1, "")
	// Wait until the samples with the sheds are history: the newest sample
	// (the one a stream sends first) counts none of them.
	want := map[string]float64{"eu-west-1": 2, "us-east-1": 1}
	testwait.For(t, 10*time.Second, "the sheds in older samples than the newest", func() bool {
		byRegion, _, latest := shedTotals(t, f)
		return maps.Equal(byRegion, want) && latest == 0
	})
	eval[bool](b, `window.__releaseStream()`)
	b.waitFor("live stream", `document.querySelector('#live').textContent === 'live'`)
	b.waitFor("every shed counted", `[...document.querySelectorAll('#legend-sheds-region .item')].map(e => e.dataset.series + ' ' + e.textContent.split(' · ')[1]).join(', ') === 'eu-west-1 2 in 15 min, us-east-1 1 in 15 min'`)
}

// Leased counting: each pool's row shows this replica's block and the
// header the store round trips per call. (A replica gives an idle block
// back within two refresh periods, so the pools are kept busy.)
func TestBrowserShowsLeasedBlocks(t *testing.T) {
	store, err := capacity.NewLeased(capacity.LeasedOptions{
		Homes: map[string]capacity.BlockStore{"us": capacity.NewMemoryBlocks(true)}, Replica: "console-test", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, fixtureOptions{Store: store})
	f.fillFleet(t) // every pool limited to 1, with one call held on it
	b := newBrowser(t)
	b.signIn(f.url, viewerToken)
	b.waitFor("the block of a busy pool", `(() => { const e = document.querySelector('[data-block="aws-use1-h100"]'); return !!e && e.textContent === 'block 1 (0 free)' && /from store "us"/.test(e.title); })()`)
	b.waitFor("round trips per call in the header", `!document.querySelector('#leased').hidden && /^leased blocks · [0-9.]+ store round trips per call$/.test(document.querySelector('#leased').textContent)`)
	b.checkContrast()
	b.shot("leased")
}

// TestBrowserShowsLostCapacity: a simulated pool at 10 % of its capacity
// (capacity_loss 0.9: the backend reports it can run a tenth of its
// limit) shows that limit and its free slots in the fleet table and its
// region's totals, with a state that says why; /metrics has the backend's
// reduced capacity and the reduced limit.
func TestBrowserShowsLostCapacity(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	const pool = "aws-use1-h100"
	if _, err := f.host.InjectFault(context.Background(), &pb.InjectFaultRequest{Fault: &pb.Fault{Pool: pool, CapacityLoss: 0.9}}); err != nil {
		t.Fatal(err)
	}
	configured := 0
	for _, p := range f.rt.Fleet().Pools {
		if p.Name == pool {
			configured = p.Limits.MaxConcurrent
		}
	}
	b := newBrowser(t)
	b.signIn(f.url, viewerToken)
	b.waitFor("the pool's state says it is short", `(() => { const r = document.querySelector('[data-pool="`+pool+`"]'); return !!r && /^short: backend reports \d+ of `+strconv.Itoa(configured)+`$/.test(r.querySelector('.badge.st-lost')?.textContent || ''); })()`)
	free := eval[int](b, `Number(document.querySelector('[data-pool="`+pool+`"] .headroom').textContent)`)
	if free*2 >= configured {
		t.Fatalf("the console shows %d free of %d configured at 10%% capacity; want below half", free, configured)
	}
	region := eval[string](b, `document.querySelector('[data-region="us-east-1"]').textContent`)
	if !strings.Contains(region, "headroom") {
		t.Fatalf("region row %q", region)
	}

	// /metrics: the backend's capacity and the limit operators see.
	mfs, err := f.tel.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "pool" && l.GetValue() == pool {
					got[mf.GetName()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	if c, ok := got["switchyard_pool_backend_capacity"]; !ok || c*2 >= float64(configured) {
		t.Fatalf("switchyard_pool_backend_capacity %v (present %v), want below half of %d; metrics for the pool: %v", c, ok, configured, got)
	}
	if l := got["switchyard_pool_limit"]; l != got["switchyard_pool_backend_capacity"] {
		t.Fatalf("switchyard_pool_limit %v, want the backend's capacity %v", l, got["switchyard_pool_backend_capacity"])
	}
	b.checkContrast()
	b.shot("lost-capacity")
}

// TestBrowserShowsRecentEventsOnConnect: changes made before the page
// connected are in its event list (the router keeps the last 100), under
// the hello and newest first; the spill-share chart starts on this
// replica's region; the failed-calls legend counts the window, not the
// last sample.
func TestBrowserShowsRecentEventsOnConnect(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	for _, w := range []string{"2", "3"} {
		if code, body := f.post(t, operatorToken, "SetWeight", `{"pool":"aws-use1-h100","weight":`+w+`}`); code != 200 {
			t.Fatalf("SetWeight: %d %v", code, body)
		}
	}
	b := newBrowser(t)
	b.signIn(f.url, viewerToken)
	b.waitFor("the earlier changes listed under hello", `(() => { const k = [...document.querySelectorAll('#events li')].map((li) => li.dataset.kind + ':' + li.querySelector('.detail').textContent); return k.length >= 3 && k[0].startsWith('hello:') && /^weight:weight 2 -> 3/.test(k[1]) && /^weight:weight .* -> 2/.test(k[2]); })()`)
	if home := eval[string](b, `document.querySelector('#home-region').value`); home != "us-east-1" {
		t.Fatalf("spill-share chart for callers in %q, want this replica's region us-east-1", home)
	}
	b.waitFor("the failed-calls legend counts the window", `/^failed 0 · 0 in 15 min$/.test([...document.querySelectorAll('#legend-sheds .item')].map((e) => e.textContent).find((x) => x.startsWith('failed')) || '')`)
}

// The console shows how many prompt tokens the pools' backends served from
// their prefix caches: per region (a chart whose legend gives the cached
// share over the window) and per pool (the caption of its chart). Real calls
// share a 2 KiB prefix (one block of the simulator's prefix cache); the
// default policy sends them to the pool that holds it, whose cache serves
// it, and the router counts the cached tokens from each call's usage. The
// page must show the share the router's own registry holds.
func TestBrowserShowsCachedPromptTokens(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	b := newBrowser(t)
	b.signIn(f.url, viewerToken)
	b.waitFor("live stream", `document.querySelector('#live').textContent === 'live'`)
	b.waitFor("no prompt tokens yet", `document.querySelector('#legend-cached').textContent === 'no prompt tokens yet'`)

	cl := pb.NewInferenceClient(f.grpc)
	shared := strings.Repeat("a shared system prompt block ", 80)[:2048]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 8 {
		if _, err := cl.Generate(ctx, &pb.GenerateRequest{Model: "llama-3.1-8b", Prompt: shared + strings.Repeat("tail ", 10+i), MaxTokens: 2,
			Routing: &pb.RoutingHints{CallerRegion: "us-east-1"}}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	// Prompt and cached tokens by pool, from the router's registry.
	prompt, cached := map[string]float64{}, map[string]float64{}
	mfs, err := f.tel.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var pool, typ string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "pool":
					pool = l.GetValue()
				case "gen_ai_token_type":
					typ = l.GetValue()
				}
			}
			switch {
			case mf.GetName() == "gen_ai_client_token_usage" && typ == "input":
				prompt[pool] += m.GetHistogram().GetSampleSum()
			case mf.GetName() == "switchyard_prompt_cached_tokens_total":
				cached[pool] += m.GetCounter().GetValue()
			}
		}
	}
	var total, totalCached float64
	for pool, v := range prompt {
		total += v
		totalCached += cached[pool]
	}
	if len(prompt) == 0 || totalCached < 512 {
		t.Fatalf("prompt tokens by pool %v, cached %v: want the shared block found cached", prompt, cached)
	}
	wantShare := strconv.Itoa(int(100*totalCached/total + 0.5))

	legend := regexp.MustCompile(`^us-east-1 [\d.]+ · (\d+)% of (\d+) prompt tokens cached in 15 min$`)
	var txt string
	testwait.For(t, 15*time.Second, "the cached share per region in the legend", func() bool {
		if now := eval[string](b, `document.querySelector('#legend-cached').textContent`); now != txt {
			txt = now
			t.Logf("cached legend: %q", txt)
		}
		m := legend.FindStringSubmatch(txt)
		return m != nil && m[1] == wantShare
	})
	m := legend.FindStringSubmatch(txt)
	if shown, _ := strconv.ParseFloat(m[2], 64); shown < total-1 || shown > total+1 {
		t.Fatalf("legend %q: want %s%% of %.0f prompt tokens", txt, wantShare, total)
	}
	if n := eval[int](b, `document.querySelectorAll('#legend-cached .item').length`); n != 1 {
		t.Fatalf("%d regions in the cached chart, want only us-east-1 (the only one that served)", n)
	}
	for pool, v := range prompt {
		want := int(100*cached[pool]/v + 0.5)
		b.waitFor(pool+"'s caption", fmt.Sprintf(`document.querySelector('#chart-pools figure[data-pool="%s"] figcaption').textContent.endsWith('· cached %d%%')`, pool, want))
	}
	if cap := eval[string](b, `document.querySelector('#chart-pools figure[data-pool="aws-euw1-trn3"] figcaption').textContent`); strings.Contains(cap, "cached") {
		t.Fatalf("a pool that served nothing shows a cached share: %q", cap)
	}
	b.checkContrast()
	b.shot("cached-prompt-tokens")
}
