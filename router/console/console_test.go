package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testwait"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/console"
)

// Every JSON endpoint is the Admin API: the same roles, the same answers.
func TestAPIRolesAreTheAdminAPIs(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	cases := []struct {
		name, token, method, body string
		want                      int
		code                      string
	}{
		{"no token", "", "ListPools", `{}`, http.StatusUnauthorized, "UNAUTHENTICATED"},
		{"unknown token", "nope", "ListPools", `{}`, http.StatusUnauthorized, "UNAUTHENTICATED"},
		{"viewer reads", viewerToken, "ListPools", `{}`, http.StatusOK, ""},
		{"viewer dry run", viewerToken, "Drain", `{"pool":"aws-use1-trn2","dryRun":true}`, http.StatusOK, ""},
		{"viewer explains", viewerToken, "ExplainRoute", `{"request":{"model":"llama-3.3-70b","routing":{"callerRegion":"us-east-1"}}}`, http.StatusOK, ""},
		{"viewer reads audit", viewerToken, "ListAudit", `{}`, http.StatusOK, ""},
		{"viewer may not weigh", viewerToken, "SetWeight", `{"pool":"aws-use1-h100","weight":0.5}`, http.StatusForbidden, "PERMISSION_DENIED"},
		{"viewer may not drain", viewerToken, "Drain", `{"pool":"aws-use1-h100"}`, http.StatusForbidden, "PERMISSION_DENIED"},
		{"viewer may not switch policy", viewerToken, "SetPolicy", `{"policy":"random"}`, http.StatusForbidden, "PERMISSION_DENIED"},
		{"operator weighs", operatorToken, "SetWeight", `{"pool":"aws-use1-h100","weight":0.5}`, http.StatusOK, ""},
		{"bad weight", operatorToken, "SetWeight", `{"pool":"aws-use1-h100","weight":2000}`, http.StatusBadRequest, "INVALID_ARGUMENT"},
		{"unknown pool", operatorToken, "Resume", `{"pool":"nope"}`, http.StatusNotFound, "NOT_FOUND"},
		{"unknown model", operatorToken, "ExplainRoute", `{"request":{"model":"gpt-9"}}`, http.StatusNotFound, "NOT_FOUND"},
		{"unknown method", operatorToken, "WatchEvents", `{}`, http.StatusNotFound, "NOT_FOUND"},
		{"not JSON", operatorToken, "SetWeight", `weight=1`, http.StatusBadRequest, "INVALID_ARGUMENT"},
		{"unknown field", operatorToken, "SetWeight", `{"pool":"aws-use1-h100","wait":1}`, http.StatusBadRequest, "INVALID_ARGUMENT"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, body := f.post(t, c.token, c.method, c.body)
			if got != c.want {
				t.Fatalf("status %d, want %d: %v", got, c.want, body)
			}
			if c.code != "" && body["code"] != c.code {
				t.Fatalf("code %v, want %s: %v", body["code"], c.code, body)
			}
		})
	}
	// The operator's change went through the Admin API: audited under the token's name.
	_, audit := f.post(t, viewerToken, "ListAudit", `{"limit":5}`)
	entries, _ := audit["entries"].([]any)
	if len(entries) != 1 {
		t.Fatalf("audit: %v", audit)
	}
	if e := entries[0].(map[string]any); e["actor"] != "alice" || e["action"] != "set_weight" || e["after"] != "0.5" {
		t.Fatalf("audit entry %v", e)
	}

	for _, c := range []struct{ token, role string }{{viewerToken, "viewer"}, {operatorToken, "operator"}} {
		code, body := f.get(t, c.token, "/api/v1/whoami")
		if code != http.StatusOK || body["role"] != c.role {
			t.Fatalf("whoami with the %s token: %d %v", c.role, code, body)
		}
	}
	if code, _ := f.get(t, "", "/api/v1/whoami"); code != http.StatusUnauthorized {
		t.Fatalf("whoami without a token: %d", code)
	}
	// whoami changed nothing.
	_, audit = f.post(t, viewerToken, "ListAudit", `{}`)
	if n := len(audit["entries"].([]any)); n != 1 {
		t.Fatalf("whoami left %d audit entries, want 1", n)
	}
}

func TestAPIRefusesCrossOriginOversizedAndWrongTypes(t *testing.T) {
	f := newFixture(t, fixtureOptions{Options: console.Options{MaxBodyBytes: 1024}})
	post := func(mod func(*http.Request), body string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, f.url+"/api/v1/ListPools", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+operatorToken)
		mod(req)
		return do(t, req)
	}
	cases := []struct {
		name string
		mod  func(*http.Request)
		body string
		want int
	}{
		{"same origin", func(r *http.Request) { r.Header.Set("Origin", f.url) }, `{}`, http.StatusOK},
		{"other origin", func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }, `{}`, http.StatusForbidden},
		{"cross-site fetch", func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }, `{}`, http.StatusForbidden},
		{"same-site other port", func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-site") }, `{}`, http.StatusForbidden},
		{"form post", func(r *http.Request) { r.Header.Set("Content-Type", "application/x-www-form-urlencoded") }, `{}`, http.StatusUnsupportedMediaType},
		{"text/plain", func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }, `{}`, http.StatusUnsupportedMediaType},
		{"oversized body", func(*http.Request) {}, `{"x":"` + strings.Repeat("a", 2048) + `"}`, http.StatusRequestEntityTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got, body := post(c.mod, c.body); got != c.want {
				t.Fatalf("status %d, want %d: %v", got, c.want, body)
			}
		})
	}
	// Only POST reaches a method.
	if code, _ := f.get(t, operatorToken, "/api/v1/ListPools"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET of a method: %d", code)
	}
}

// The page is self-contained: a strict CSP, no inline script or style, no cookies.
func TestPageHeadersAndNoInlineCode(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	resp, err := http.Get(f.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		page.WriteString(sc.Text() + "\n")
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-") {
		t.Errorf("CSP allows unsafe code: %q", csp)
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Set-Cookie") != "" {
		t.Errorf("headers: %v", resp.Header)
	}
	html := page.String()
	if m := regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`).FindString(html); m != "" || !strings.Contains(html, `<script src="/static/console.js"`) {
		t.Errorf("page has inline script (%q) or lacks console.js", m)
	}
	if regexp.MustCompile(`\sstyle=|<style|\son[a-z]+=`).MatchString(html) {
		t.Error("page has inline style or event handler attributes")
	}
	for _, asset := range []struct{ path, ctype string }{{"/static/console.js", "javascript"}, {"/static/console.css", "text/css"}} {
		r, err := http.Get(f.url + asset.path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusOK || !strings.Contains(r.Header.Get("Content-Type"), asset.ctype) {
			t.Errorf("%s: %d %s", asset.path, r.StatusCode, r.Header.Get("Content-Type"))
		}
	}
	if r, err := http.Get(f.url + "/static/"); err == nil {
		r.Body.Close()
		if r.StatusCode == http.StatusOK {
			t.Error("asset directory listed")
		}
	}
	if r, err := http.Get(f.url + "/static/../console.go"); err == nil {
		r.Body.Close()
		if r.StatusCode == http.StatusOK {
			t.Error("source file served")
		}
	}
}

// sseEvent is one server-sent event.
type sseEvent struct {
	kind string
	data map[string]any
}

// openStream opens the live stream and returns its events on a channel
// closed when the stream ends.
func openStream(t *testing.T, ctx context.Context, url, token string) (int, <-chan sseEvent) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/api/v1/stream", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan sseEvent, 1024)
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		close(ch)
		return resp.StatusCode, ch
	}
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<22)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.kind = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.data)
			case line == "" && ev.kind != "":
				select {
				case ch <- ev:
				case <-ctx.Done():
					return
				}
				ev = sseEvent{}
			}
		}
	}()
	return resp.StatusCode, ch
}

// next waits (bounded) for the first event that matches.
func next(t *testing.T, ch <-chan sseEvent, what string, match func(sseEvent) bool) sseEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended waiting for %s", what)
			}
			if match(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s within 10s", what)
		}
	}
}

func TestStreamCarriesEventsFleetAndSamples(t *testing.T) {
	f := newFixture(t, fixtureOptions{Options: console.Options{MaxStreams: 2}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	if code, _ := openStream(t, ctx, f.url, "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("stream with an unknown token: %d", code)
	}
	code, ch := openStream(t, ctx, f.url, viewerToken)
	if code != http.StatusOK {
		t.Fatalf("viewer stream: %d", code)
	}
	next(t, ch, "hello", func(e sseEvent) bool { return e.kind == "event" && e.data["kind"] == "hello" })
	fl := next(t, ch, "fleet", func(e sseEvent) bool { return e.kind == "fleet" })
	pools := fl.data["list"].(map[string]any)["pools"].([]any)
	if len(pools) != 8 || fl.data["home"] != "us-east-1" || fl.data["geographies"].(map[string]any)["westeurope"] != "eu" {
		t.Fatalf("fleet: %d pools, %v", len(pools), fl.data)
	}

	// A second stream fits, a third is refused.
	if code, _ := openStream(t, ctx, f.url, operatorToken); code != http.StatusOK {
		t.Fatalf("second stream: %d", code)
	}
	if code, _ := openStream(t, ctx, f.url, operatorToken); code != http.StatusServiceUnavailable {
		t.Fatalf("third stream past MaxStreams 2: %d", code)
	}

	// An operator's drain shows up live: the event, then the pool's state.
	if code, body := f.post(t, operatorToken, "Drain", `{"pool":"aws-use1-trn2"}`); code != http.StatusOK {
		t.Fatalf("drain: %d %v", code, body)
	}
	next(t, ch, "drain event", func(e sseEvent) bool {
		return e.kind == "event" && e.data["kind"] == "drain" && e.data["pool"] == "aws-use1-trn2"
	})
	next(t, ch, "drained pool", func(e sseEvent) bool {
		if e.kind != "fleet" {
			return false
		}
		for _, p := range e.data["list"].(map[string]any)["pools"].([]any) {
			if p := p.(map[string]any); p["name"] == "aws-use1-h100" {
				return false
			} else if p["name"] == "aws-use1-trn2" {
				return p["drained"] == true
			}
		}
		return false
	})

	// Traffic from us-east-1 shows in the samples as calls/s on its pools.
	f.traffic(t, 30, "us-east-1")
	next(t, ch, "a sample with calls", func(e sseEvent) bool {
		if e.kind != "sample" {
			return false
		}
		h100, _ := e.data["pools"].(map[string]any)["aws-use1-h100"].(map[string]any)
		return h100 != nil && h100["ok"].(float64) > 0 && h100["limit"].(float64) == 48
	})
	code, hist := f.get(t, viewerToken, "/api/v1/history")
	if code != http.StatusOK || hist["enabled"] != true || len(hist["samples"].([]any)) < 2 {
		t.Fatalf("history: %d %v", code, hist["enabled"])
	}
	if code, _ := f.get(t, "", "/api/v1/history"); code != http.StatusUnauthorized {
		t.Fatalf("history without a token: %d", code)
	}

	// Closing the console ends its streams with an "end" event.
	f.console.Close()
	next(t, ch, "end", func(e sseEvent) bool { return e.kind == "end" })
}

// A token taken out of the config ends the streams opened with it.
func TestStreamEndsWhenItsTokenIsRemoved(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	withToken := config.Demo()
	withToken.Admin.Tokens = []config.AdminToken{{Name: "temp", Role: "viewer", SHA256: router.HashToken("temp-token")}}
	if err := f.rt.Reload(withToken); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code, ch := openStream(t, ctx, f.url, "temp-token")
	if code != http.StatusOK {
		t.Fatalf("stream: %d", code)
	}
	next(t, ch, "fleet", func(e sseEvent) bool { return e.kind == "fleet" })
	if err := f.rt.Reload(config.Demo()); err != nil {
		t.Fatal(err)
	}
	end := next(t, ch, "end", func(e sseEvent) bool { return e.kind == "end" })
	if msg, _ := end.data["message"].(string); !strings.Contains(msg, "unknown token") {
		t.Fatalf("end: %v", end.data)
	}
}

// A stream outlives the server's ReadTimeout (which bounds reading requests,
// not a response that streams).
func TestStreamOutlivesReadTimeout(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := console.NewHTTPServer(f.console.Handler(), slog.New(slog.DiscardHandler))
	srv.ReadTimeout = 300 * time.Millisecond
	go func() { _ = srv.Serve(lis) }()
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code, ch := openStream(t, ctx, "http://"+lis.Addr().String(), viewerToken)
	if code != http.StatusOK {
		t.Fatalf("stream: %d", code)
	}
	start := time.Now()
	for n := 0; time.Since(start) < time.Second; {
		ev := next(t, ch, "fleet", func(e sseEvent) bool { return e.kind == "fleet" || e.kind == "end" })
		if ev.kind == "end" {
			t.Fatalf("stream ended after %v: %v", time.Since(start), ev.data)
		}
		n++
	}
}

// TestHistoryChartsShedsPerCallerRegion: calls shed from callers in several
// regions reach the chart history by caller region — a fleet region, the
// router's own region for callers that name none, "other" for any name the
// fleet does not know (never the client's string) — and by priority.
func TestHistoryChartsShedsPerCallerRegion(t *testing.T) {
	f := newFixture(t, fixtureOptions{QueueMaxWait: 50 * time.Millisecond})
	f.fillFleet(t)
	f.shed(t, 3, "eu-west-1")
	f.shed(t, 2, "mars-north-9")
	f.shed(t, 1, strings.Repeat("z", 300))
	f.shed(t, 1, "") // the router's --region, us-east-1

	want := map[string]float64{"eu-west-1": 3, "other": 3, "us-east-1": 1}
	var byRegion, byPriority map[string]float64
	if !testwait.Until(10*time.Second, func() bool {
		byRegion, byPriority, _ = shedTotals(t, f)
		return maps.Equal(byRegion, want)
	}) {
		t.Fatalf("sheds by caller region in the chart history %v, want %v", byRegion, want)
	}
	if byPriority["standard"] != 7 || len(byPriority) != 1 {
		t.Fatalf("sheds by priority %v, want standard 7", byPriority)
	}
}

// shedTotals adds up the history's shed rates into counts per caller region
// and per priority (rate × the time since the previous sample, rounded), and
// returns the newest sample's shed rate over all regions.
func shedTotals(t *testing.T, f *fixture) (byRegion, byPriority map[string]float64, latest float64) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.url+"/api/v1/history", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+viewerToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h struct {
		Samples []struct {
			T               int64              `json:"t"`
			ShedsByRegion   map[string]float64 `json:"shedsByRegion"`
			ShedsByPriority map[string]float64 `json:"shedsByPriority"`
		} `json:"samples"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	byRegion, byPriority = map[string]float64{}, map[string]float64{}
	for i := 1; i < len(h.Samples); i++ {
		dt := float64(h.Samples[i].T-h.Samples[i-1].T) / 1000
		for k, v := range h.Samples[i].ShedsByRegion {
			byRegion[k] += v * dt
		}
		for k, v := range h.Samples[i].ShedsByPriority {
			byPriority[k] += v * dt
		}
	}
	for _, m := range []map[string]float64{byRegion, byPriority} {
		for k, v := range m {
			m[k] = math.Round(v)
		}
	}
	if n := len(h.Samples); n > 0 {
		for _, v := range h.Samples[n-1].ShedsByRegion {
			latest += v
		}
	}
	return byRegion, byPriority, latest
}

// TestHostAllowList sends real requests over loopback with the Host header a
// browser would send for each address: the console's own address and the
// loopback names on its port, and the configured names, are served; any
// other name — what a DNS-rebinding page sends — gets 421 before anything
// runs, the JSON API included.
func TestHostAllowList(t *testing.T) {
	f := newFixture(t, fixtureOptions{Options: console.Options{AllowedHosts: []string{"Console.Example.com", "ops.internal:8443", " ", "10.9.8.7"}}})
	addr := strings.TrimPrefix(f.url, "http://")
	_, port, _ := net.SplitHostPort(addr)
	cases := []struct {
		host string
		want int
	}{
		{addr, http.StatusOK},
		{"localhost:" + port, http.StatusOK},
		{"LOCALHOST.:" + port, http.StatusOK},
		{"[::1]:" + port, http.StatusOK},
		{"console.example.com", http.StatusOK},
		{"console.example.com:" + port, http.StatusOK},
		{"ops.internal:8443", http.StatusOK},
		{"10.9.8.7:" + port, http.StatusOK},
		{"localhost", http.StatusMisdirectedRequest}, // port 80
		{"localhost:1" + port, http.StatusMisdirectedRequest},
		{"127.0.0.1", http.StatusMisdirectedRequest},
		{"ops.internal:" + port, http.StatusMisdirectedRequest},
		{"evil.example:" + port, http.StatusMisdirectedRequest},
		{"127.0.0.1.nip.io:" + port, http.StatusMisdirectedRequest},
		{"console.example.com.evil.example:" + port, http.StatusMisdirectedRequest},
		{"sub.console.example.com", http.StatusMisdirectedRequest},
		{strings.Repeat("a", 5000) + ":" + port, http.StatusMisdirectedRequest},
	}
	for _, c := range cases {
		for _, path := range []string{"/", "/api/v1/whoami"} {
			req, err := http.NewRequest(http.MethodGet, f.url+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = c.host
			req.Header.Set("Authorization", "Bearer "+viewerToken)
			code, body := do(t, req)
			if code != c.want {
				t.Errorf("Host %.40q %s: %d, want %d (%v)", c.host, path, code, c.want, body)
				continue
			}
			if code == http.StatusMisdirectedRequest {
				msg, _ := body["message"].(string)
				if body["code"] != "PERMISSION_DENIED" || !strings.Contains(msg, "--console-allowed-hosts") || len(msg) > 400 {
					t.Errorf("Host %.40q: refusal %v", c.host, body)
				}
			}
		}
	}
}

func TestAllowedHostsValidated(t *testing.T) {
	rt := newFixture(t, fixtureOptions{}).rt
	for _, bad := range []string{"http://console.example.com", "console.example.com/path", "*.example.com", "host:0", "host:99999", "host:x", ":8080", "user@host"} {
		_, err := console.New(console.Options{Operator: rt.Operator(), AllowedHosts: []string{bad}})
		if err == nil {
			t.Errorf("allowed host %q accepted", bad)
		}
	}
}
