package openaihttp

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/switchyard-dev/switchyard/internal/httpedge"
)

// ServerOptions configure NewServer.
type ServerOptions struct {
	// Handler serves the requests (normally a *Handler). Required.
	Handler http.Handler
	// TLS, when set, serves HTTPS (HTTP/1.1 and HTTP/2 by ALPN); the caller
	// serves with ServeTLS(lis, "", ""). Without it the server speaks
	// HTTP/1.1 and unencrypted HTTP/2 with prior knowledge (h2c).
	TLS *tls.Config
	// Listener, when set, is the listener the server serves (NewListener):
	// its ConnContext lets the Handler mark a connection authenticated.
	Listener *httpedge.Listener
	// ReadHeaderTimeout bounds reading a request's headers (default 10s).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a request's headers and body from its first
	// byte (default 30s); it is lifted once the body is in, so streams run.
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long (default 120s).
	IdleTimeout time.Duration
	// Logger receives the server's own errors (bad TLS handshakes...) at debug.
	Logger *slog.Logger
}

// MaxHeaderBytes bounds a request's headers.
const MaxHeaderBytes = 64 << 10

// DefaultMaxConnections is how many client connections the front door serves
// at once (NewListener). HTTP/1.1 needs one connection per call in flight, so
// it is four times the gRPC port's (grpcedge.DefaultMaxConnections, 1024);
// HTTP/2 clients multiplex.
const DefaultMaxConnections = 4096

// DefaultMaxUnauthenticated is how many of them may be connections on which
// no call has authenticated yet (with tenants: presented a known key; without:
// sent a whole request). A connection past it takes the place of the oldest
// such connection, so clients without a key never hold the places of clients
// with one.
const DefaultMaxUnauthenticated = DefaultMaxConnections / 4

// NewListener caps the front door's connections: at most maxConns (default
// DefaultMaxConnections), of which at most maxUnauthenticated (default
// DefaultMaxUnauthenticated) not yet authenticated.
func NewListener(l net.Listener, maxConns, maxUnauthenticated int) *httpedge.Listener {
	if maxConns <= 0 {
		maxConns = DefaultMaxConnections
	}
	if maxUnauthenticated <= 0 {
		maxUnauthenticated = min(DefaultMaxUnauthenticated, max(maxConns/4, 1))
	}
	return httpedge.NewListener(l, httpedge.ListenerOptions{MaxConns: maxConns, MaxUntrusted: maxUnauthenticated})
}

// NewServer returns the HTTP server for the front door: header, body (from
// the request's first byte) and idle timeouts, bounded headers, HTTP/1.1
// keep-alive and HTTP/2 (h2c without TLS), and httpedge.Handler around the
// Handler: a refusal (401, 403, 404, 405, 421...) is answered at once with
// "Connection: close", never waiting for a body it did not read. There is no
// whole-response WriteTimeout, since streams run as long as the completion;
// the Handler bounds each write instead.
func NewServer(o ServerOptions) *http.Server {
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 30 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 120 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	var p http.Protocols
	p.SetHTTP1(true)
	if o.TLS != nil {
		p.SetHTTP2(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	srv := &http.Server{
		Handler:           httpedge.Handler(o.Handler),
		TLSConfig:         o.TLS,
		Protocols:         &p,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: 250,
			MaxReadFrameSize:     1 << 20,
			SendPingTimeout:      15 * time.Second,
			PingTimeout:          15 * time.Second,
		},
		ErrorLog: slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
	}
	if o.Listener != nil {
		srv.ConnContext = o.Listener.ConnContext
	}
	return srv
}
