// Package console is the operator web console: a page served by the router
// on its own listener that shows the fleet live and steers it.
//
// There is no second authorization path. Every JSON endpoint calls the
// router's Operator interface (router/operator.go), the one the Admin API
// serves switchyardctl from, with the token of the browser's
// "Authorization: Bearer <token>" header, so the viewer and operator roles
// are checked exactly as for switchyardctl; the console maps the router's
// errors to HTTP with its own table (api.go). The live stream is fed by
// Operator.Watch and periodic Operator.Snapshot; charts come from a bounded
// in-memory history sampled from the router's Prometheus registry.
//
// The browser keeps the token in the tab's sessionStorage and sends it as a
// header: no cookies, so no cross-site request can carry it. Pages carry a
// strict Content-Security-Policy (scripts and styles from the console itself
// only, no inline code). Requests whose Host header names neither the
// console's own address, nor localhost, nor a configured name are refused
// before anything runs (a DNS-rebinding defence: see Options.AllowedHosts).
//
// Import direction: console imports router; router never imports console.
package console

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-dev/switchyard/internal/httpedge"
	"github.com/switchyard-dev/switchyard/router"
)

//go:embed static
var staticFS embed.FS

// Options configure a Console.
type Options struct {
	// Operator is the router's operator interface (router.Server.Operator),
	// which the console serves. Required.
	Operator router.Operator
	// Gatherer is the router's Prometheus registry (telemetry.Telemetry's
	// Registry). The charts are sampled from it; without one the console
	// shows the fleet, events and audit but no charts.
	Gatherer prometheus.Gatherer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// SampleEvery is the chart resolution (default 2s).
	SampleEvery time.Duration
	// History is how far back the charts go (default 15m).
	History time.Duration
	// FleetEvery is how often a live stream sends the pools (default 1s).
	FleetEvery time.Duration
	// MaxStreams bounds concurrent live streams (default 32); past it a new
	// stream is refused with 503.
	MaxStreams int
	// MaxBodyBytes bounds a JSON request body (default 64 KiB).
	MaxBodyBytes int64
	// CallTimeout bounds one operator call made for a JSON request (an
	// operator change or the audit log, which may reach the control store;
	// default 10s).
	CallTimeout time.Duration
	// AllowedHosts are names the console answers to in a request's Host
	// header besides those always allowed: the address the connection
	// arrived on, and localhost, 127.0.0.1 and [::1] with the port it arrived
	// on. Each entry is "name" (any port), "name:port", an IP address or
	// "[IPv6]:port". A request for any other Host is refused with 421 before
	// anything is served or authenticated (a DNS-rebinding defence).
	AllowedHosts []string
}

// Console serves the operator web console. Safe for concurrent use.
type Console struct {
	opts    Options
	log     *slog.Logger
	op      router.Operator
	hist    *history
	streams atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
	closed  atomic.Bool
	mux     *http.ServeMux
	hosts   *hostAllowList
}

// New builds a Console and starts its chart sampler (when Options.Gatherer
// is set). Call Close when done.
func New(o Options) (*Console, error) {
	if o.Operator == nil {
		return nil, errors.New("console: the router's operator interface is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.SampleEvery <= 0 {
		o.SampleEvery = 2 * time.Second
	}
	if o.History <= 0 {
		o.History = 15 * time.Minute
	}
	if o.FleetEvery <= 0 {
		o.FleetEvery = time.Second
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = 32
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 64 << 10
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 10 * time.Second
	}
	hosts, err := newHostAllowList(o.AllowedHosts)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	c := &Console{
		hosts: hosts,
		opts:  o,
		log:   o.Logger,
		op:    o.Operator,
		hist:  newHistory(int(o.History/o.SampleEvery) + 1),
		stop:  make(chan struct{}),
	}
	if o.Gatherer != nil {
		c.wg.Add(1)
		go c.sampleLoop()
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	files := http.FileServerFS(static)
	mux.Handle("GET /static/{file}", http.StripPrefix("/static/", files))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, "index.html")
	})
	mux.HandleFunc("POST /api/v1/{method}", c.call)
	mux.HandleFunc("GET /api/v1/whoami", c.whoami)
	mux.HandleFunc("GET /api/v1/fleet", c.fleet)
	mux.HandleFunc("GET /api/v1/history", c.history)
	mux.HandleFunc("GET /api/v1/stream", c.stream)
	c.mux = mux
	return c, nil
}

// Close stops the sampler and ends live streams. Idempotent.
func (c *Console) Close() {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	close(c.stop)
	c.wg.Wait()
}

// Handler returns the console's HTTP handler: the page, its assets and the
// JSON API under /api/v1/.
func (c *Console) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
		if err := c.hosts.check(r); err != nil {
			writeError(w, http.StatusMisdirectedRequest, "PERMISSION_DENIED", err.Error()+
				": this console answers to its listen address and to localhost; to reach it by another name, add the name to --console-allowed-hosts")
			return
		}
		if !sameOrigin(r) {
			writeError(w, http.StatusForbidden, "PERMISSION_DENIED", "cross-origin request refused")
			return
		}
		c.mux.ServeHTTP(w, r)
	})
}

// csp allows the console's own scripts, styles and API only: no inline code,
// no other origin, no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// MaxConnections is how many connections the console serves at once
// (NewListener), of which MaxUnauthenticated may be connections on which no
// request has shown an admin token yet: past either, a new connection takes
// the place of the oldest unauthenticated one.
const (
	MaxConnections     = 256
	MaxUnauthenticated = 64
)

// NewListener caps the console's connections (MaxConnections,
// MaxUnauthenticated). The server's ConnContext must be the listener's.
func NewListener(l net.Listener) *httpedge.Listener {
	return httpedge.NewListener(l, httpedge.ListenerOptions{MaxConns: MaxConnections, MaxUntrusted: MaxUnauthenticated})
}

// NewHTTPServer returns an http.Server for h with the console's bounds:
// header and body read deadlines (the body's from the request's first byte,
// lifted once it is in, so live streams run), small headers, idle
// connections closed, and refusals answered at once with "Connection: close"
// (httpedge.Handler). Writes have no server-wide deadline because live
// streams are long; each stream write sets its own.
func NewHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           httpedge.Handler(h),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// sampleLoop records one chart sample every SampleEvery until Close.
func (c *Console) sampleLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.opts.SampleEvery)
	defer t.Stop()
	c.sampleOnce(time.Now())
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			c.sampleOnce(now)
		}
	}
}

func (c *Console) sampleOnce(now time.Time) {
	mfs, err := c.opts.Gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		c.log.Warn("console: metrics gather failed; chart sample skipped", "err", err)
		return
	}
	c.hist.add(now, mfs)
}
