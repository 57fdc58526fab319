package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/switchyard-dev/switchyard/internal/hostname"
	"github.com/switchyard-dev/switchyard/router/anthropichttp"
	"github.com/switchyard-dev/switchyard/router/openaihttp"
)

// serveHTTP starts the OpenAI-compatible front door on --http-listen (unless
// "off"). The returned stop lets in-flight calls finish for up to the given
// time, then closes every connection.
func (p *process) serveHTTP() (stop func(time.Duration), err error) {
	f, rt, tel, log, stdout, serveErr := p.f, p.rt, p.tel, p.log, p.stdout, p.serveErr
	if f.httpListen == "" || f.httpListen == "off" {
		return func(time.Duration) {}, nil
	}
	cfg, err := tlsConfig(f) // the gRPC listener's TLS settings
	if err != nil {
		return nil, err
	}
	origins, err := openaihttp.ParseAllowedOrigins(f.httpOrigins)
	if err != nil {
		return nil, fmt.Errorf("--http-allowed-origins: %w", err)
	}
	var hosts []string // --http-listen's host, when a name, answers without tenants too
	if host, _, err := net.SplitHostPort(f.httpListen); err == nil && host != "" {
		hosts = append(hosts, host)
	}
	messages, err := anthropichttp.New(anthropichttp.Options{Router: rt, Logger: log, TracerProvider: tel.TracerProvider, Propagator: tel.Propagator})
	if err != nil {
		return nil, err
	}
	h, err := openaihttp.New(openaihttp.Options{Router: rt, Logger: log, TracerProvider: tel.TracerProvider, MeterProvider: tel.MeterProvider, Propagator: tel.Propagator,
		AllowedOrigins: origins, AllowedHosts: hosts, AnyHost: !loopbackOnly(f.httpListen),
		Mount: map[string]http.Handler{anthropichttp.Path: messages}})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", f.httpListen)
	if err != nil {
		return nil, fmt.Errorf("--http-listen %s: %w", f.httpListen, err)
	}
	elis := openaihttp.NewListener(lis, 0, 0)
	lis = elis
	srv := openaihttp.NewServer(openaihttp.ServerOptions{Handler: h, TLS: cfg, Logger: log, Listener: elis})
	scheme := "http"
	go func() {
		var err error
		if cfg != nil {
			err = srv.ServeTLS(lis, "", "")
		} else {
			err = srv.Serve(lis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case serveErr <- fmt.Errorf("http: %w", err):
			default: // Run is already returning
			}
		}
	}()
	if cfg != nil {
		scheme = "https"
	}
	log.Info("openai-compatible http serving", "url", scheme+"://"+lis.Addr().String()+"/v1")
	fmt.Fprintf(stdout, "switchyard http (OpenAI-compatible) on %s://%s/v1\n", scheme, lis.Addr())
	return func(timeout time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	}, nil
}

// loopbackOnly says whether a listen address accepts connections from this
// machine only (hostname.ThisMachineOnly: 127.0.0.0/8, ::1, localhost);
// 0.0.0.0, :: and an empty host accept from everywhere. --debug-listen must
// be one; on one, the HTTP front door checks the Host of keyless calls.
func loopbackOnly(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	return err == nil && hostname.ThisMachineOnly(host)
}
