package openaihttp

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/sim"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
)

func TestParseAllowedOrigins(t *testing.T) {
	cases := []struct {
		in   string
		want []string
		err  string // substring of the error; "" for none
	}{
		{"", nil, ""},
		{" , ", nil, ""},
		{"*", []string{"*"}, ""},
		{"https://app.example.com", []string{"https://app.example.com"}, ""},
		{"HTTPS://App.Example.COM:443, http://localhost:3000", []string{"https://app.example.com", "http://localhost:3000"}, ""},
		{"http://example.com:80", []string{"http://example.com"}, ""},
		{"https://example.com:80", []string{"https://example.com:80"}, ""},
		{"http://[::1]:3000", []string{"http://[::1]:3000"}, ""},
		{"http://[0:0:0:0:0:0:0:1]:3000", []string{"http://[::1]:3000"}, ""},
		{"http://10.0.0.5:0008", []string{"http://10.0.0.5:8"}, ""},
		{"app.example.com", nil, "scheme must be http or https"},
		{"ftp://app.example.com", nil, "scheme must be http or https"},
		{"https://app.example.com/", nil, "no user, path, query or fragment"},
		{"https://app.example.com/v1", nil, "no user, path, query or fragment"},
		{"https://user@app.example.com", nil, "no user, path, query or fragment"},
		{"https://app.example.com?x=1", nil, "no user, path, query or fragment"},
		{"https://app.example.com#x", nil, "no user, path, query or fragment"},
		{"https://app.example.com:0", nil, "port must be 1..65535"},
		{"https://app.example.com:70000", nil, "port"},
		{"https://*.example.com", nil, "wildcards in an origin are not supported"},
		{"https://", nil, "host is missing"},
		{"https://bad host", nil, "origin"},
		{"https://exa$mple.com", nil, "host is missing or malformed"},
		{"null", nil, "opaque origin"},
		{"https://ok.example, nope", nil, `"nope"`},
		{"https://" + strings.Repeat("a", 400) + ".com", nil, "longer than 300 bytes"},
	}
	for _, c := range cases {
		got, err := ParseAllowedOrigins(c.in)
		if c.err == "" {
			if err != nil || strings.Join(got, " ") != strings.Join(c.want, " ") {
				t.Errorf("ParseAllowedOrigins(%q) = %q, %v; want %q", c.in, got, err, c.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("ParseAllowedOrigins(%q) error %v; want one containing %q", c.in, err, c.err)
		}
		if err != nil && len(err.Error()) > 300 {
			t.Errorf("error of %d bytes echoes too much: %.80s", len(err.Error()), err)
		}
	}
}

// request builds a request as the server hands it over: arrived on local
// (the listener's address), with Host and optional Origin headers.
func request(method, host, origin, local string) *http.Request {
	r := httptest.NewRequest(method, "http://placeholder/v1/chat/completions", nil)
	r.Host = host
	if origin != "" {
		r.Header.Set("Origin", origin)
	}
	if method == http.MethodOptions {
		r.Header.Set("Access-Control-Request-Method", "POST")
	}
	la, err := net.ResolveTCPAddr("tcp", local)
	if err != nil {
		panic(err)
	}
	return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, la))
}

func TestBrowserGuardDecides(t *testing.T) {
	const local = "127.0.0.1:8080"
	type want struct {
		status    int // 0: served
		preflight bool
	}
	served, preflight := want{}, want{preflight: true}
	forbidden, misdirected := want{status: 403}, want{status: 421}
	cases := []struct {
		name          string
		origins       []string
		hosts         []string
		anyHost       bool // the listener is beyond loopback (Options.AnyHost)
		keys          bool
		method        string
		host, origin  string
		local         string // default local
		want          want
		askedForKeys  bool // the tenants check ran
		corsHeaderSet bool
	}{
		// SDKs: no Origin.
		{name: "sdk on loopback", host: "127.0.0.1:8080", want: served},
		{name: "sdk on localhost", host: "localhost:8080", want: served},
		{name: "sdk on localhost other port (port forward)", host: "localhost:9000", want: served},
		{name: "sdk on [::1]", host: "[::1]:8080", local: "[::1]:8080", want: served},
		{name: "sdk on a LAN address", host: "192.168.1.5:8080", local: "0.0.0.0:8080", want: served},
		{name: "sdk by DNS name without keys", host: "router.internal:8080", want: misdirected, askedForKeys: true},
		{name: "sdk by DNS name with keys", host: "router.internal:8080", keys: true, want: served, askedForKeys: true},
		{name: "sdk by listen host name", hosts: []string{"router.internal"}, host: "router.internal:8080", want: served},
		{name: "sdk by allowed origin's host", origins: []string{"https://app.example.com"}, host: "app.example.com", want: served},
		{name: "no Host at all", host: "", want: misdirected, askedForKeys: true},
		{name: "sdk by service DNS name, listener beyond loopback", anyHost: true, host: "switchyard.inference.svc:8080", want: served},
		{name: "malformed Host", host: "[nope:8080", want: misdirected, askedForKeys: true},

		// Cross-origin fetch from a page on another site to 127.0.0.1.
		{name: "foreign page", host: "127.0.0.1:8080", origin: "https://evil.example", want: forbidden},
		{name: "foreign page with keys", host: "127.0.0.1:8080", origin: "https://evil.example", keys: true, want: forbidden},
		{name: "foreign preflight", method: http.MethodOptions, host: "127.0.0.1:8080", origin: "https://evil.example", want: forbidden},
		{name: "opaque origin", host: "127.0.0.1:8080", origin: "null", want: forbidden},
		{name: "garbage origin", host: "127.0.0.1:8080", origin: "\x00%%", want: forbidden},
		{name: "other local port", host: "127.0.0.1:8080", origin: "http://localhost:3000", want: forbidden},
		// DNS rebinding: the page's own name resolves to 127.0.0.1; its
		// origin matches the Host, so only the Host check stops it.
		{name: "rebinding without keys", host: "evil.example:8080", origin: "http://evil.example:8080", want: misdirected, askedForKeys: true},
		// Beyond loopback a keyless front door is open to whatever reaches
		// it; the Host is not checked, a page's own origin passes.
		{name: "rebinding, listener beyond loopback", anyHost: true, host: "evil.example:8080", origin: "http://evil.example:8080", want: served, corsHeaderSet: true},
		{name: "foreign page, listener beyond loopback", anyHost: true, host: "10.0.0.7:8080", origin: "https://evil.example", want: forbidden},
		{name: "rebinding with keys passes to the key check", host: "evil.example:8080", origin: "http://evil.example:8080", keys: true, want: served, askedForKeys: true, corsHeaderSet: true},

		// Same host, loopback on the listener's port.
		{name: "same host", host: "127.0.0.1:8080", origin: "http://127.0.0.1:8080", want: served, corsHeaderSet: true},
		{name: "same host default port behind a TLS proxy", hosts: []string{"router.example"}, host: "router.example", origin: "https://router.example", want: served, corsHeaderSet: true},
		{name: "same host other port", host: "127.0.0.1:8080", origin: "http://127.0.0.1:8081", want: forbidden},
		{name: "localhost on listener port", host: "127.0.0.1:8080", origin: "http://localhost:8080", want: served, corsHeaderSet: true},
		{name: "[::1] on listener port", host: "127.0.0.1:8080", origin: "http://[::1]:8080", want: served, corsHeaderSet: true},
		{name: "https localhost on listener port", host: "localhost:8080", origin: "https://localhost:8080", want: served, corsHeaderSet: true},

		// Allowed origins.
		{name: "listed origin", origins: []string{"https://app.example.com"}, host: "127.0.0.1:8080", origin: "https://app.example.com", want: served, corsHeaderSet: true},
		{name: "listed origin, browser sends default port form", origins: []string{"https://app.example.com:443"}, host: "127.0.0.1:8080", origin: "https://app.example.com", want: served, corsHeaderSet: true},
		{name: "listed origin preflight", origins: []string{"https://app.example.com"}, method: http.MethodOptions, host: "127.0.0.1:8080", origin: "https://app.example.com", want: preflight, corsHeaderSet: true},
		{name: "listed origin, other scheme", origins: []string{"https://app.example.com"}, host: "127.0.0.1:8080", origin: "http://app.example.com", want: forbidden},
		{name: "listed origin, subdomain", origins: []string{"https://app.example.com"}, host: "127.0.0.1:8080", origin: "https://x.app.example.com", want: forbidden},
		{name: "listed dev server", origins: []string{"http://localhost:3000"}, host: "127.0.0.1:8080", origin: "http://localhost:3000", want: served, corsHeaderSet: true},
		{name: "star allows any origin", origins: []string{"*"}, host: "127.0.0.1:8080", origin: "https://anything.example", want: served, corsHeaderSet: true},
		{name: "star allows any host", origins: []string{"*"}, host: "anything.example", want: served},
		{name: "star allows null", origins: []string{"*"}, host: "127.0.0.1:8080", origin: "null", want: served, corsHeaderSet: true},
		{name: "OPTIONS without preflight header is no preflight", origins: []string{"https://app.example.com"}, method: "OPTIONS-plain", host: "127.0.0.1:8080", origin: "https://app.example.com", want: served, corsHeaderSet: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, err := newBrowserGuard(c.origins, c.hosts)
			if err != nil {
				t.Fatal(err)
			}
			g.anyHost = c.anyHost
			method := c.method
			if method == "" {
				method = http.MethodPost
			}
			loc := c.local
			if loc == "" {
				loc = local
			}
			var r *http.Request
			if method == "OPTIONS-plain" {
				r = request(http.MethodGet, c.host, c.origin, loc)
				r.Method = http.MethodOptions
			} else {
				r = request(method, c.host, c.origin, loc)
			}
			asked := false
			v := g.check(r, func() bool { asked = true; return c.keys })
			status := 0
			if v.refuse != nil {
				status = v.refuse.status
				if v.refuse.body.Type != typeInvalidRequest || v.refuse.body.Code == nil || v.refuse.body.Message == "" {
					t.Errorf("refusal body %+v", v.refuse.body)
				}
			}
			if status != c.want.status || v.preflight != c.want.preflight {
				t.Errorf("status %d preflight %v (%+v); want %+v", status, v.preflight, v.refuse, c.want)
			}
			if asked != c.askedForKeys {
				t.Errorf("tenants asked: %v, want %v", asked, c.askedForKeys)
			}
			if (v.cors != "") != c.corsHeaderSet || (v.cors != "" && v.cors != c.origin) {
				t.Errorf("cors origin %q, want set=%v", v.cors, c.corsHeaderSet)
			}
		})
	}
}

func TestBrowserGuardRefusalsQuoteBoundedInput(t *testing.T) {
	g, err := newBrowserGuard(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 10000)
	for _, r := range []*http.Request{
		request(http.MethodPost, long+".example", "", "127.0.0.1:8080"),
		request(http.MethodPost, "127.0.0.1:8080", "https://"+long, "127.0.0.1:8080"),
	} {
		v := g.check(r, func() bool { return false })
		if v.refuse == nil || len(v.refuse.body.Message) > 400 {
			t.Fatalf("refusal %+v", v.refuse)
		}
	}
}

func TestNewBrowserGuardRejectsBadHosts(t *testing.T) {
	for _, h := range []string{"a b", "[x]", "exa/mple"} {
		if _, err := newBrowserGuard(nil, []string{h}); err == nil {
			t.Errorf("allowed host %q accepted", h)
		}
	}
	if _, err := newBrowserGuard([]string{"https://ok.example", "nope"}, nil); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("bad origin: %v", err)
	}
}

// TestKeysRequired: the front door asks the router whether keys are
// required (the browser checks depend on it), and the answer follows reloads.
func TestKeysRequired(t *testing.T) {
	fleet := func(extra string) *config.Fleet {
		f, err := config.Parse(append(config.DemoYAML(), extra...), "test fleet")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	reg := backends.NewRegistry()
	sim.Register(reg, sim.RegistryOptions{Host: sim.NewHost(), TimeScale: 50})
	rt, err := router.New(router.Options{Fleet: fleet(""), Backends: reg, Replica: "keys-test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	h, err := New(Options{Router: rt, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	withKey := "\ntenants:\n  - name: a\n    api_key_sha256: [" + router.HashToken("sk-a") + "]\n"
	cases := []struct {
		extra string
		want  bool
	}{
		{"", false},
		{withKey, true},
		{"", false},
	}
	for i, c := range cases {
		if i > 0 {
			if err := rt.Reload(fleet(c.extra)); err != nil {
				t.Fatal(err)
			}
		}
		if got := h.keysRequired(); got != c.want {
			t.Errorf("case %d: %v, want %v", i, got, c.want)
		}
	}
}

func TestSetCORS(t *testing.T) {
	r := request(http.MethodOptions, "127.0.0.1:8080", "https://app.example.com", "127.0.0.1:8080")
	r.Header.Set("Access-Control-Request-Private-Network", "true")
	h := http.Header{}
	setCORS(h, "https://app.example.com", true, r)
	for k, want := range map[string]string{
		"Access-Control-Allow-Origin":          "https://app.example.com",
		"Access-Control-Allow-Methods":         "GET, POST, OPTIONS",
		"Access-Control-Max-Age":               "600",
		"Access-Control-Allow-Private-Network": "true",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if ah := h.Get("Access-Control-Allow-Headers"); !strings.HasPrefix(ah, "Authorization, ") || !strings.HasSuffix(ah, ", *") {
		t.Errorf("Access-Control-Allow-Headers %q must name Authorization (the wildcard does not cover it)", ah)
	}
	if h.Get("Access-Control-Expose-Headers") != "" {
		t.Errorf("a preflight exposes no headers")
	}
	h = http.Header{}
	setCORS(h, "https://app.example.com", false, request(http.MethodPost, "127.0.0.1:8080", "https://app.example.com", "127.0.0.1:8080"))
	if e := h.Get("Access-Control-Expose-Headers"); !strings.Contains(e, HeaderPool) || !strings.Contains(e, "Retry-After") || h.Get("Access-Control-Allow-Methods") != "" || h.Get("Vary") != "Origin" {
		t.Errorf("response CORS headers %v", h)
	}
}
