package openaihttp

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"

	"github.com/switchyard-dev/switchyard/router"
)

// ServerOptions configure NewServer.
type ServerOptions struct {
	// Handler serves the requests (normally a *Handler). Required.
	Handler http.Handler
	// TLS, when set, serves HTTPS (HTTP/1.1 and HTTP/2 by ALPN); the caller
	// serves with ServeTLS(lis, "", ""). Without it the server speaks
	// HTTP/1.1 and unencrypted HTTP/2 with prior knowledge (h2c).
	TLS *tls.Config
	// ReadHeaderTimeout bounds reading a request's headers (default 10s).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long (default 120s).
	IdleTimeout time.Duration
	// Logger receives the server's own errors (bad TLS handshakes...) at debug.
	Logger *slog.Logger
}

// MaxHeaderBytes bounds a request's headers.
const MaxHeaderBytes = 64 << 10

// DefaultMaxConnections is how many client connections the front door serves
// at once (router.LimitListener closes those past it as they are accepted).
// HTTP/1.1 needs one connection per call in flight, so it is four times the
// gRPC port's router.DefaultMaxConnections; HTTP/2 clients multiplex.
const DefaultMaxConnections = 4 * router.DefaultMaxConnections

// NewServer returns the HTTP server for the front door: slow-client and idle
// timeouts, bounded headers, HTTP/1.1 keep-alive and HTTP/2 (h2c without
// TLS). There is no whole-response WriteTimeout, since streams run as long as
// the completion; the Handler bounds each write instead, and each body read.
func NewServer(o ServerOptions) *http.Server {
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = 10 * time.Second
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
	return &http.Server{
		Handler:           o.Handler,
		TLSConfig:         o.TLS,
		Protocols:         &p,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
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
}
