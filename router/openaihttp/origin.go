package openaihttp

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/switchyard-dev/switchyard/internal/hostname"
)

// Browser-origin protection. SDKs (openai-go, openai-python, curl) send no
// Origin header; browsers send one on every cross-origin request and on every
// POST. A web page the user visits could otherwise spend the operator's
// capacity through the front door on 127.0.0.1, by a plain cross-origin fetch
// or by DNS rebinding (the page's own name made to resolve to 127.0.0.1). So:
//
//   - A request with an Origin is refused with 403 unless the origin is the
//     request's own host (same host and port as its Host header), localhost,
//     127.0.0.1 or [::1] on the port the connection arrived on, or listed in
//     Options.AllowedOrigins ("*" allows every origin). Allowed origins get
//     CORS answers: preflights (OPTIONS) and Access-Control-Allow-Origin.
//   - When the fleet has no tenants (no API keys: the demo mode) and the
//     front door listens on loopback only (the default; Options.AnyHost
//     off), a Host header that is not an IP address, localhost, an Options.AllowedHosts
//     name or the host of an allowed origin is refused with 421 (with "*"
//     allowed, any Host is: every page may call anyway). A rebinding
//     page's requests carry its own name as Host, and it sends its own origin,
//     which matches that Host: the Host check is what stops it. With tenants
//     the page has no key, and production clients reach the router under any
//     name (service DNS names, load balancers), so the Host is not checked.

// maxOriginEntry bounds one allowed origin ("https://" + a DNS name of at most
// 253 bytes + ":port").
const maxOriginEntry = 300

// corsMaxAge is how long (seconds) a browser may cache a preflight answer.
const corsMaxAge = "600"

// corsAllowHeaders are the request headers a browser app may send: the ones
// the front door reads, then "*" for the rest (an SDK's own headers);
// Authorization must be named, the wildcard does not cover it.
var corsAllowHeaders = strings.Join([]string{
	"Authorization", "Content-Type", "X-Api-Key", HeaderCallerRegion, HeaderResidency, HeaderPriority,
	HeaderPreferredCloud, HeaderPreferredAccelerator, HeaderPrefixKey, HeaderTimeout, HeaderRequestID, "Traceparent", "Tracestate", "*",
}, ", ")

// corsExposeHeaders are the response headers a browser app may read.
var corsExposeHeaders = strings.Join([]string{
	HeaderPool, HeaderCloud, HeaderRegion, HeaderAccelerator, HeaderAttempts, HeaderPoolsTried, HeaderRequestID,
	"Retry-After", "Retry-After-Ms",
}, ", ")

// ParseAllowedOrigins splits a comma-separated list of origins
// ("https://app.example.com", "http://localhost:3000", or "*") and returns
// them in canonical form (lower case, no default port). An entry that is not
// scheme://host[:port] with scheme http or https is an error naming it.
func ParseAllowedOrigins(list string) ([]string, error) {
	var out []string
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if e == "*" {
			out = append(out, e)
			continue
		}
		o, err := parseOriginEntry(e)
		if err != nil {
			return nil, err
		}
		out = append(out, o.String())
	}
	return out, nil
}

// origin is a parsed web origin: scheme, canonical host (lower case, an IP
// address in its canonical form, no brackets) and port (never empty: the
// scheme's default when the origin names none).
type origin struct {
	scheme, host, port string
}

// String is the origin as browsers serialize it.
func (o origin) String() string {
	h := o.host
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if o.port == defaultPort(o.scheme) {
		return o.scheme + "://" + h
	}
	return o.scheme + "://" + h + ":" + o.port
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// parseOriginEntry parses an operator's allowed origin, saying what is wrong.
func parseOriginEntry(e string) (origin, error) {
	if len(e) > maxOriginEntry {
		return origin{}, fmt.Errorf("origin %s: longer than %d bytes", quote(e), maxOriginEntry)
	}
	if e == "null" {
		return origin{}, fmt.Errorf("origin %q: the opaque origin of sandboxed and file: pages cannot be allowed (only with *)", e)
	}
	if strings.Contains(e, "*") {
		return origin{}, fmt.Errorf("origin %s: wildcards in an origin are not supported; list each origin, or use * alone to allow all", quote(e))
	}
	o, err := parseOrigin(e)
	if err != nil {
		return origin{}, fmt.Errorf("origin %s: %w (want scheme://host[:port], e.g. https://app.example.com)", quote(e), err)
	}
	return o, nil
}

var (
	errOriginScheme = errors.New("the scheme must be http or https")
	errOriginForm   = errors.New("an origin has no user, path, query or fragment")
	errOriginHost   = errors.New("the host is missing or malformed")
	errOriginPort   = errors.New("the port must be 1..65535")
)

// parseOrigin parses an origin as a browser sends it (also an operator's,
// which may use upper case and default ports).
func parseOrigin(s string) (origin, error) {
	if len(s) > maxOriginEntry {
		return origin{}, errOriginHost
	}
	u, err := url.Parse(s)
	if err != nil {
		return origin{}, errOriginForm
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return origin{}, errOriginScheme
	}
	if u.Opaque != "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		return origin{}, errOriginForm
	}
	host, port, ok := splitHostPort(u.Host)
	if !ok || !validHost(host) {
		return origin{}, errOriginHost
	}
	if port == "" {
		port = defaultPort(scheme)
	} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return origin{}, errOriginPort
	} else {
		port = strconv.FormatUint(n, 10)
	}
	return origin{scheme: scheme, host: hostname.Normal(host), port: port}, nil
}

// splitHostPort splits "host", "host:port", "[v6]" or "[v6]:port"; port is ""
// when absent. ok is false for an empty host or stray brackets.
func splitHostPort(hp string) (host, port string, ok bool) {
	if h, p, err := net.SplitHostPort(hp); err == nil {
		host, port = h, p
	} else {
		host = hp
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		}
	}
	if host == "" || strings.ContainsAny(host, "[]") {
		return "", "", false
	}
	if strings.Contains(host, ":") || strings.HasPrefix(hp, "[") { // only an IPv6 address holds colons, in brackets
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return "", "", false
		}
	}
	return host, port, true
}

// validHost accepts a DNS name or an IP address: letters, digits, '-', '.',
// '_' (and ':' / '%' inside an IPv6 address, checked by splitHostPort).
func validHost(h string) bool {
	if len(h) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	for _, c := range []byte(h) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return true
}

// browserGuard decides which browser requests the front door answers. Built
// once by New; read-only after, safe for concurrent use.
type browserGuard struct {
	anyOrigin bool
	anyHost   bool            // the Host is not checked (Options.AnyHost)
	origins   map[string]bool // canonical origins
	hosts     map[string]bool // names a Host may carry without tenants (any port)
}

// newBrowserGuard builds the guard from canonical allowed origins (as
// ParseAllowedOrigins returns them, or raw: they are parsed again) and the
// extra Host names.
func newBrowserGuard(origins, hosts []string) (*browserGuard, error) {
	g := &browserGuard{origins: map[string]bool{}, hosts: map[string]bool{}}
	for _, e := range origins {
		e = strings.TrimSpace(e)
		switch e {
		case "":
			continue
		case "*":
			g.anyOrigin = true
			continue
		}
		o, err := parseOriginEntry(e)
		if err != nil {
			return nil, err
		}
		g.origins[o.String()] = true
		g.hosts[o.host] = true
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		name, _, ok := splitHostPort(h)
		if !ok || !validHost(name) {
			return nil, fmt.Errorf("allowed host %s: want a host name, optionally with :port", quote(h))
		}
		g.hosts[hostname.Normal(name)] = true
	}
	return g, nil
}

// verdict is the guard's answer to one request.
type verdict struct {
	// refuse, when set, is the error answered instead of serving.
	refuse *httpError
	// cors is the origin to name in Access-Control-Allow-Origin ("" for a
	// request without one).
	cors string
	// preflight is a CORS preflight of an allowed origin, answered 204.
	preflight bool
}

// check decides about r. keysRequired says whether the fleet has tenants
// (asked only when the Host alone would be refused).
func (g *browserGuard) check(r *http.Request, keysRequired func() bool) verdict {
	if !g.anyOrigin && !g.anyHost && !g.hostAllowed(r.Host) && !keysRequired() {
		return verdict{refuse: newHTTPError(http.StatusMisdirectedRequest, typeInvalidRequest, "host_not_allowed", "",
			fmt.Sprintf("host %s is not allowed: without API keys (tenants) the front door answers only to IP addresses, localhost, the --http-listen host and the hosts of --http-allowed-origins (DNS-rebinding defence)", quote(r.Host)))}
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return verdict{}
	}
	if !g.originAllowed(o, r) {
		return verdict{refuse: newHTTPError(http.StatusForbidden, typeInvalidRequest, "origin_not_allowed", "",
			fmt.Sprintf("origin %s is not allowed: web pages may call the front door only from origins listed in --http-allowed-origins", quote(o)))}
	}
	return verdict{cors: o, preflight: r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""}
}

// hostAllowed says whether a Host header may reach the front door when calls
// need no key: a DNS-rebinding page's requests carry the page's own name, so
// IP addresses and localhost are safe, and so are the names the operator
// listed.
func (g *browserGuard) hostAllowed(hostHeader string) bool {
	host, _, ok := splitHostPort(hostHeader)
	if !ok {
		return false
	}
	host = hostname.Normal(host)
	if host == "localhost" || g.hosts[host] {
		return true
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}

// originAllowed says whether a request's Origin may call: listed (or "*"),
// the request's own host and port, or a loopback name on the port the
// connection arrived on.
func (g *browserGuard) originAllowed(raw string, r *http.Request) bool {
	if g.anyOrigin {
		return true
	}
	o, err := parseOrigin(raw)
	if err != nil {
		return false // "null", or not an origin at all
	}
	if g.origins[o.String()] {
		return true
	}
	// Same host: the page was served from this host and port. A Host without
	// a port means the default port of the scheme the page used (a TLS proxy
	// in front of plain HTTP keeps the page's view).
	if host, port, ok := splitHostPort(r.Host); ok {
		if port == "" {
			port = defaultPort(o.scheme)
		}
		if hostname.Normal(host) == o.host && port == o.port {
			return true
		}
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil && o.port == strconv.Itoa(int(ap.Port())) {
			if hostname.IsLoopback(o.host) {
				return true
			}
		}
	}
	return false
}

// setCORS adds the CORS response headers for an allowed origin.
func setCORS(h http.Header, origin string, preflight bool, r *http.Request) {
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	if !preflight {
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		return
	}
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
	h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
	h.Set("Access-Control-Max-Age", corsMaxAge)
	// Chrome's Private Network Access: a public page calling a router on a
	// private address asks first.
	if r.Header.Get("Access-Control-Request-Private-Network") == "true" {
		h.Set("Access-Control-Allow-Private-Network", "true")
	}
}
