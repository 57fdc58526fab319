// Package grpcnative is the backend adapter for endpoints that speak
// switchyard.v1.Inference natively (switchyard-sim, or a model server with a
// thin switchyard shim). It keeps one client connection per endpoint and
// spreads calls over them round-robin; active health checks use
// grpc.health.v1.
package grpcnative

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/internal/tlsclient"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// AdapterName is the name the adapter registers under.
const AdapterName = "grpc"

// PoolHeader carries the pool name to the backend, so one process can serve
// several pools (switchyard-sim does) and logs on both sides agree.
const PoolHeader = "x-switchyard-pool"

// Spec options a pool may set (its `options:` in the fleet file; nested YAML
// arrives as dotted keys, so `tls: {ca_file: ...}` is tls.ca_file). Without
// any tls.* option the link is plaintext; any of them turns TLS on.
const (
	OptTLS           = "tls.enabled"     // "true": TLS, verified against the system roots unless tls.ca_file is set
	OptTLSCAFile     = "tls.ca_file"     // PEM CA bundle the backend's certificate must chain to
	OptTLSCertFile   = "tls.cert_file"   // client certificate (PEM) for mutual TLS, with tls.key_file
	OptTLSKeyFile    = "tls.key_file"    // client key (PEM)
	OptTLSServerName = "tls.server_name" // name to verify instead of the endpoint's host
)

var knownOptions = []string{OptTLS, OptTLSCAFile, OptTLSCertFile, OptTLSKeyFile, OptTLSServerName}

// Validate checks a pool's spec for this adapter: endpoints, known options,
// readable TLS files. New calls it; errors name the option.
func Validate(spec backends.Spec) error {
	_, err := transportCreds(spec)
	return err
}

// transportCreds builds the link's credentials from the spec's options.
func transportCreds(spec backends.Spec) (credentials.TransportCredentials, error) {
	var errs []error
	if len(spec.Endpoints) == 0 {
		errs = append(errs, errors.New("no endpoints"))
	}
	for _, ep := range spec.Endpoints {
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(ep, "dns:///")); err != nil {
			errs = append(errs, fmt.Errorf("endpoint %q: want host:port", ep))
		}
	}
	on := false
	for k, v := range spec.Options {
		switch k {
		case OptTLS:
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("option %s: %q is not true or false", k, v))
			}
			on = on || b
		case OptTLSCAFile, OptTLSCertFile, OptTLSKeyFile, OptTLSServerName:
			on = on || v != ""
		default:
			errs = append(errs, fmt.Errorf("unknown option %q (known: %s)", k, strings.Join(knownOptions, ", ")))
		}
	}
	if v, set := spec.Options[OptTLS]; set && v != "" {
		if b, err := strconv.ParseBool(v); err == nil && !b && on {
			errs = append(errs, fmt.Errorf("option %s is false but other tls.* options are set", OptTLS))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if !on {
		return insecure.NewCredentials(), nil
	}
	cfg, err := tlsclient.Config(tlsclient.FromOptions(spec.Options))
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}

// Options tune the adapter.
type Options struct {
	// DialOptions are appended to the defaults (transport credentials from
	// the pool's tls.* options, keepalive).
	DialOptions []grpc.DialOption
	// HealthService is the service name asked in health checks ("" = server).
	HealthService string
}

// Backend is a native gRPC backend. Safe for concurrent use.
type Backend struct {
	pool  string
	conns []*grpc.ClientConn
	next  atomic.Uint64
	opts  Options
	load  atomic.Pointer[backends.Load]
}

var (
	_ backends.Backend      = (*Backend)(nil)
	_ backends.LoadReporter = (*Backend)(nil)
	_ backends.Embedder     = (*Backend)(nil)
)

// Load implements backends.LoadReporter with the latest report the backend
// sent in a call's header or trailer (backends.LoadHeader).
func (b *Backend) Load() (backends.Load, bool) {
	if l := b.load.Load(); l != nil {
		return *l, true
	}
	return backends.Load{}, false
}

// noteLoad records a load report from call metadata, if there is one.
func (b *Backend) noteLoad(md metadata.MD) {
	v := md.Get(backends.LoadHeader)
	if len(v) == 0 {
		return
	}
	l, err := backends.ParseLoad(v[len(v)-1])
	if err != nil {
		return // a malformed report is ignored, never fatal to the call
	}
	l.At = time.Now()
	b.load.Store(&l)
}

// Register adds the adapter to r under AdapterName.
func Register(r *backends.Registry, o Options) {
	r.Register(AdapterName, func(s backends.Spec) (backends.Backend, error) { return New(s, o) })
}

// New connects lazily to every endpoint of spec.
func New(spec backends.Spec, o Options) (*Backend, error) {
	creds, err := transportCreds(spec)
	if err != nil {
		return nil, err
	}
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16 << 20)),
	}, o.DialOptions...)
	b := &Backend{pool: spec.Pool, opts: o}
	for _, ep := range spec.Endpoints {
		cc, err := grpc.NewClient(ep, dial...)
		if err != nil {
			_ = b.Close()
			return nil, fmt.Errorf("endpoint %q: %w", ep, err)
		}
		b.conns = append(b.conns, cc)
	}
	return b, nil
}

func (b *Backend) pick() *grpc.ClientConn {
	return b.conns[int(b.next.Add(1)%uint64(len(b.conns)))]
}

func (b *Backend) outgoing(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, PoolHeader, b.pool)
}

// Generate implements backends.Backend.
func (b *Backend) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	var header, trailer metadata.MD
	resp, err := pb.NewInferenceClient(b.pick()).Generate(b.outgoing(ctx), req, grpc.Header(&header), grpc.Trailer(&trailer))
	b.noteLoad(header)
	b.noteLoad(trailer)
	return resp, err
}

// GenerateStream implements backends.Backend.
func (b *Backend) GenerateStream(ctx context.Context, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error) error {
	ctx, cancel := context.WithCancel(b.outgoing(ctx))
	defer cancel()
	stream, err := pb.NewInferenceClient(b.pick()).GenerateStream(ctx, req)
	if err != nil {
		return err
	}
	defer func() { b.noteLoad(stream.Trailer()) }()
	for first := true; ; first = false {
		chunk, err := stream.Recv()
		if first {
			if md, herr := stream.Header(); herr == nil {
				b.noteLoad(md)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := send(chunk); err != nil {
			return err
		}
	}
}

// Check implements backends.Backend with grpc.health.v1 on every endpoint:
// healthy when at least one endpoint reports SERVING.
func (b *Backend) Check(ctx context.Context) error {
	var last error
	for _, cc := range b.conns {
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: b.opts.HealthService})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		if err == nil {
			err = status.Errorf(codes.Unavailable, "endpoint %s: %s", cc.Target(), resp.GetStatus())
		}
		last = err
	}
	return fmt.Errorf("pool %q: no serving endpoint: %w", b.pool, last)
}

// Capabilities implements backends.Backend: the native protocol carries
// continuation, tools, response_format, logprobs and Embed as they are (the
// server at the far end answers for what it supports).
func (b *Backend) Capabilities() backends.Capabilities {
	return backends.Capabilities{Continuation: true, Tools: true, ResponseFormat: true, Logprobs: true, Embeddings: true}
}

// Embed implements backends.Embedder over the native Inference/Embed.
func (b *Backend) Embed(ctx context.Context, req *pb.EmbedRequest) (*pb.EmbedResponse, error) {
	var header, trailer metadata.MD
	resp, err := pb.NewInferenceClient(b.pick()).Embed(b.outgoing(ctx), req, grpc.Header(&header), grpc.Trailer(&trailer))
	b.noteLoad(header)
	b.noteLoad(trailer)
	return resp, err
}

// Close implements backends.Backend.
func (b *Backend) Close() error {
	var errs []error
	for _, cc := range b.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}
