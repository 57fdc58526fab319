package openaihttp_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/openaihttp"
)

// browserCall is one request as a browser (or a DNS-rebinding page) would
// send it: a method, Host and Origin headers, and extra headers.
type browserCall struct {
	method, path, host, origin string
	header                     map[string]string
}

// answer is what came back: status, headers, and the error code if any.
type answer struct {
	status int
	header http.Header
	code   string
	body   string
}

func (fd *frontDoor) browser(t *testing.T, c browserCall) answer {
	t.Helper()
	if c.method == "" {
		c.method = http.MethodPost
	}
	if c.path == "" {
		c.path = "/v1/chat/completions"
	}
	var body io.Reader
	if c.method == http.MethodPost {
		body = strings.NewReader(`{"model":"llama-3.1-8b","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`)
	}
	req, err := http.NewRequestWithContext(ctxT(t, 10*time.Second), c.method, fd.url+c.path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.host != "" {
		req.Host = c.host
	}
	if c.origin != "" {
		req.Header.Set("Origin", c.origin)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := fd.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if resp.StatusCode >= 400 {
		var eb struct {
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Code    *string `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Code == nil || eb.Error.Type != "invalid_request_error" || eb.Error.Message == "" {
			t.Fatalf("%d body %s is not OpenAI's error shape (%v)", resp.StatusCode, b, err)
		}
		a.code = *eb.Error.Code
	}
	return a
}

func (fd *frontDoor) port(t *testing.T) string {
	u, err := url.Parse(fd.url)
	if err != nil {
		t.Fatal(err)
	}
	return u.Port()
}

// TestBrowserPagesCannotSpendKeylessCapacity drives the keyless demo front
// door as a foreign web page would: a cross-origin fetch to 127.0.0.1 and a
// DNS-rebinding page (its own name resolving to 127.0.0.1, so its origin
// matches its Host). Both are refused before any slot is taken; same-host and
// loopback pages and SDK-style requests are served.
func TestBrowserPagesCannotSpendKeylessCapacity(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{})
	port := fd.port(t)
	cases := []struct {
		name   string
		call   browserCall
		status int
		code   string
	}{
		{"cross-origin fetch", browserCall{origin: "https://evil.example"}, 403, "origin_not_allowed"},
		{"cross-origin preflight", browserCall{method: http.MethodOptions, origin: "https://evil.example", header: map[string]string{"Access-Control-Request-Method": "POST"}}, 403, "origin_not_allowed"},
		{"cross-origin models", browserCall{method: http.MethodGet, path: "/v1/models", origin: "https://evil.example"}, 403, "origin_not_allowed"},
		{"sandboxed page", browserCall{origin: "null"}, 403, "origin_not_allowed"},
		{"another local port", browserCall{origin: "http://localhost:3000"}, 403, "origin_not_allowed"},
		{"dns rebinding", browserCall{host: "rebind.evil.example:" + port, origin: "http://rebind.evil.example:" + port}, 421, "host_not_allowed"},
		{"dns rebinding, simple GET", browserCall{method: http.MethodGet, path: "/v1/models", host: "rebind.evil.example:" + port}, 421, "host_not_allowed"},
		{"same host", browserCall{origin: "http://127.0.0.1:" + port}, 200, ""},
		{"localhost page on this port", browserCall{host: "localhost:" + port, origin: "http://localhost:" + port}, 200, ""},
		{"sdk by localhost", browserCall{host: "localhost:" + port}, 200, ""},
		{"sdk", browserCall{}, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := fd.browser(t, c.call)
			if a.status != c.status || a.code != c.code {
				t.Fatalf("status %d code %q body %s; want %d %q", a.status, a.code, a.body, c.status, c.code)
			}
			if a.status >= 400 && a.header.Get("Access-Control-Allow-Origin") != "" {
				t.Fatalf("a refusal carries Access-Control-Allow-Origin %q", a.header.Get("Access-Control-Allow-Origin"))
			}
		})
	}
	// Nothing refused reached a pool; the served calls are done.
	fd.waitInFlight(t, 0, 10*time.Second)
}

// TestAllowedOriginGetsCORS is a browser app on an allowed origin: its
// preflight is answered, its calls (unary and streamed) carry
// Access-Control-Allow-Origin and expose the route headers, and the origin's
// host may be the Host (a reverse proxy under the app's name).
func TestAllowedOriginGetsCORS(t *testing.T) {
	const app = "https://app.example.com"
	fd := startFrontDoor(t, doorOpts{handler: openaihttp.Options{AllowedOrigins: []string{app, "http://localhost:3000"}}})

	pre := fd.browser(t, browserCall{method: http.MethodOptions, origin: app, header: map[string]string{
		"Access-Control-Request-Method":  "POST",
		"Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
	}})
	if pre.status != http.StatusNoContent || pre.header.Get("Access-Control-Allow-Origin") != app ||
		!strings.Contains(pre.header.Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.HasPrefix(pre.header.Get("Access-Control-Allow-Headers"), "Authorization, Content-Type") ||
		pre.header.Get("Access-Control-Max-Age") == "" {
		t.Fatalf("preflight: %d %v", pre.status, pre.header)
	}

	for _, origin := range []string{app, "http://localhost:3000"} {
		a := fd.browser(t, browserCall{origin: origin, header: map[string]string{"Authorization": "Bearer anything"}})
		if a.status != 200 || a.header.Get("Access-Control-Allow-Origin") != origin || a.header.Get("X-Switchyard-Pool") == "" ||
			!strings.Contains(a.header.Get("Access-Control-Expose-Headers"), "X-Switchyard-Pool") || !strings.Contains(a.header.Get("Vary"), "Origin") {
			t.Fatalf("call from %s: %d %v %s", origin, a.status, a.header, a.body)
		}
	}

	// Streamed: the CORS headers come with the event stream's headers.
	req, _ := http.NewRequestWithContext(ctxT(t, 10*time.Second), http.MethodPost, fd.url+"/v1/chat/completions",
		strings.NewReader(`{"model":"llama-3.1-8b","stream":true,"max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Origin", app)
	resp, err := fd.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != app || !strings.Contains(string(b), "data: [DONE]") {
		t.Fatalf("stream from %s: %d %v %s", app, resp.StatusCode, resp.Header, b)
	}

	// The app's own name as Host (a proxy in front), without tenants.
	if a := fd.browser(t, browserCall{host: "app.example.com", origin: app}); a.status != 200 {
		t.Fatalf("Host of the allowed origin: %d %s", a.status, a.body)
	}
	// Other origins and names are still refused.
	if a := fd.browser(t, browserCall{origin: "https://evil.example"}); a.status != 403 {
		t.Fatalf("foreign origin: %d %s", a.status, a.body)
	}
	if a := fd.browser(t, browserCall{host: "evil.example"}); a.status != 421 {
		t.Fatalf("foreign host: %d %s", a.status, a.body)
	}
}

// TestHostIsNotCheckedWithTenants: with API keys, production clients reach
// the router under any name (service DNS, load balancers) and are served; a
// rebinding page gets past the Host but has no key (401). A foreign origin
// is still refused. A reload that drops the tenants turns the Host check on.
func TestHostIsNotCheckedWithTenants(t *testing.T) {
	const key = "sk-tenant-acme"
	fd := startFrontDoor(t, doorOpts{extraYAML: "\ntenants:\n  - name: acme\n    api_key_sha256: [" + router.HashToken(key) + "]\n"})
	port := fd.port(t)
	withKey := map[string]string{"Authorization": "Bearer " + key}
	if a := fd.browser(t, browserCall{host: "switchyard.inference.svc.cluster.local:" + port, header: withKey}); a.status != 200 {
		t.Fatalf("client under a service name: %d %s", a.status, a.body)
	}
	if a := fd.browser(t, browserCall{host: "rebind.evil.example:" + port, origin: "http://rebind.evil.example:" + port}); a.status != 401 || a.code != "invalid_api_key" {
		t.Fatalf("rebinding page without a key: %d %s", a.status, a.body)
	}
	if a := fd.browser(t, browserCall{origin: "https://evil.example", header: withKey}); a.status != 403 || a.code != "origin_not_allowed" {
		t.Fatalf("foreign origin with a key: %d %s", a.status, a.body)
	}

	fleet, err := config.Parse(config.DemoYAML(), "demo fleet without tenants")
	if err != nil {
		t.Fatal(err)
	}
	if err := fd.rt.Reload(fleet); err != nil {
		t.Fatal(err)
	}
	if a := fd.browser(t, browserCall{host: "switchyard.inference.svc.cluster.local:" + port}); a.status != 421 || a.code != "host_not_allowed" {
		t.Fatalf("after the tenants are gone: %d %s", a.status, a.body)
	}
}

// A front door the command binds beyond loopback (AnyHost) answers clients
// under any name even without tenants: in-cluster clients call it by its
// Service name. Origins are still checked.
func TestAnyHostServesServiceNamesWithoutTenants(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{handler: openaihttp.Options{AnyHost: true}})
	port := fd.port(t)
	if a := fd.browser(t, browserCall{host: "switchyard.inference.svc.cluster.local:" + port}); a.status != 200 {
		t.Fatalf("client under a service name: %d %s", a.status, a.body)
	}
	if a := fd.browser(t, browserCall{origin: "https://evil.example"}); a.status != 403 || a.code != "origin_not_allowed" {
		t.Fatalf("foreign origin: %d %s", a.status, a.body)
	}
}

func TestNewRefusesMalformedOrigins(t *testing.T) {
	_, err := openaihttp.New(openaihttp.Options{Router: &router.Server{}, AllowedOrigins: []string{"https://ok.example", "app.example.com"}})
	if err == nil || !strings.Contains(err.Error(), `"app.example.com"`) || !strings.Contains(err.Error(), "scheme") {
		t.Fatalf("New with a malformed origin: %v", err)
	}
}

// TestRefusalsDoNotWaitForTheBody: a refused request whose body never
// arrives is answered at once and its connection closed (net/http would
// otherwise wait to drain the body before answering).
func TestRefusalsDoNotWaitForTheBody(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{})
	addr := strings.TrimPrefix(fd.url, "http://")
	for _, c := range []struct {
		headers string
		status  int
	}{
		{"Host: rebind.evil.example\r\nOrigin: http://rebind.evil.example\r\n", 421},
		{"Host: " + addr + "\r\nOrigin: https://evil.example\r\n", 403},
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\n"+c.headers+"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"model\":") // the body never ends
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			conn.Close()
			t.Fatalf("%d: no answer while the body is pending: %v", c.status, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != c.status || !resp.Close {
			t.Fatalf("status %d (close %v) %s; want %d and the connection closed", resp.StatusCode, resp.Close, b, c.status)
		}
	}
}
