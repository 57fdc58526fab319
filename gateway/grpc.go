package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/stats"

	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// HTTP/2 flow-control windows of the client port and of the links to native
// backends. Fixed windows turn off grpc-go's bandwidth-delay estimation,
// which sends a PING on received data and reads its ack: frames and
// syscalls on every call of a proxy that only forwards small messages
// (docs/benchmarks.md, "Proxy overhead"). 1 MiB per call and 4 MiB per
// connection are far above any prompt or chunk the router forwards.
const (
	streamWindow = 1 << 20
	connWindow   = 4 << 20
)

var (
	transportServerOptions = []grpc.ServerOption{grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow)}
	transportDialOptions   = []grpc.DialOption{grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow)}
)

// rpcInstrumentation returns what the client port (server options) and the
// native backend links (dial options) carry for telemetry: the call-duration
// metrics from interceptors always, and otelgrpc's stats handlers (spans, W3C
// context) only when traces are exported — a stats handler costs grpc-go an
// event per header and message of every call. Health checks and reflection
// are neither measured nor traced.
func rpcInstrumentation(tel *telemetry.Telemetry) (*telemetry.RPCMetrics, []grpc.ServerOption, []grpc.DialOption, error) {
	tracing := tel.TracesExporter != "none"
	m, err := telemetry.NewRPCMetrics(telemetry.RPCMetricsOptions{
		MeterProvider: tel.MeterProvider, Propagator: tel.Propagator, PassTraceContext: !tracing,
		Measured: instrumented,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	srv := []grpc.ServerOption{grpc.ChainUnaryInterceptor(m.UnaryServer), grpc.ChainStreamInterceptor(m.StreamServer)}
	dial := []grpc.DialOption{grpc.WithChainUnaryInterceptor(m.UnaryClient), grpc.WithChainStreamInterceptor(m.StreamClient)}
	if tracing {
		otelOpts := []otelgrpc.Option{
			otelgrpc.WithTracerProvider(tel.TracerProvider), otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
			otelgrpc.WithPropagators(tel.Propagator), otelgrpc.WithFilter(traced),
		}
		srv = append(srv, grpc.StatsHandler(otelgrpc.NewServerHandler(otelOpts...)))
		dial = append(dial, grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelOpts...)))
	}
	return m, srv, dial, nil
}

// instrumented says which RPCs are measured and traced: not health checks
// nor reflection.
func instrumented(fullMethod string) bool {
	return !strings.HasPrefix(fullMethod, "/grpc.health.") && !strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

// traced is instrumented in the form otelgrpc's filter takes.
func traced(info *stats.RPCTagInfo) bool { return instrumented(info.FullMethodName) }

// serverTLS returns the TLS server option when --tls-cert is set.
func serverTLS(f *flags) ([]grpc.ServerOption, error) {
	cfg, err := tlsConfig(f)
	if cfg == nil || err != nil {
		return nil, err
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(cfg))}, nil
}

// tlsConfig is the servers' TLS configuration from --tls-cert, --tls-key and
// --tls-client-ca; nil without them.
func tlsConfig(f *flags) (*tls.Config, error) {
	if f.tlsCert == "" && f.tlsKey == "" && f.tlsClientCA == "" {
		return nil, nil
	}
	if f.tlsCert == "" || f.tlsKey == "" {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.tlsClientCA != "" {
		pem, err := os.ReadFile(f.tlsClientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-client-ca %s: no PEM certificate found", f.tlsClientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
