package grpcedge

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/dispatch"
)

// MaxRequestBytes bounds one gRPC message on servers built with
// ServerOptions alone. The router's client port (ClientPortOptions) derives
// a tighter bound from the fleet's models instead.
const MaxRequestBytes = 4 << 20

// Transport limits of the client port; docs/security.md explains each.
const (
	// DefaultRecvMargin is added to the largest prompt a model accepts
	// (max_input_tokens × 4 bytes) for the rest of a request: chat roles,
	// sampling, routing hints, the request id, protobuf framing
	// (router.RecvLimit's default).
	DefaultRecvMargin = router.DefaultRecvMargin
	// DefaultMaxStreams is how many calls one connection may run at once;
	// more wait on the client side until one ends.
	DefaultMaxStreams = 256
	// DefaultStreamWorkers is how many goroutines wait to run calls on the
	// client port. A call handed to an idle worker runs on a stack that has
	// already grown to the request path's depth; without one, grpc-go starts
	// a goroutine whose stack grows (and is copied) several times per call.
	// Calls beyond the idle workers still get a goroutine of their own.
	DefaultStreamWorkers = 128
	// DefaultMaxConnections is how many client connections are served at
	// once; connections past it are closed as soon as they are accepted.
	DefaultMaxConnections = 1024
	// maxHeaderBytes bounds a call's metadata (grpc-go's default is 16 MiB).
	maxHeaderBytes = 64 << 10
)

// Keepalive and connection-lifetime settings of every router gRPC server.
var (
	// keepaliveEnforcement: clients may ping at most every 10 s (grpc-go
	// answers faster pings with GOAWAY "too_many_pings"), also between calls.
	keepaliveEnforcement = keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}
	// keepaliveServer: a connection with no call for 5 minutes is closed; the
	// server pings an idle transport every minute and drops a peer that does
	// not answer within 20 s.
	keepaliveServer = keepalive.ServerParameters{MaxConnectionIdle: 5 * time.Minute, Time: time.Minute, Timeout: 20 * time.Second}
	// handshakeTimeout: a connection must finish TLS and the HTTP/2 preface
	// within this (grpc-go's default is 120 s).
	handshakeTimeout = 10 * time.Second
)

// ServerOptions are the gRPC server options any router gRPC server needs: a
// panic in a handler fails that call with INTERNAL instead of the process;
// keepalive enforcement, streams per connection, header size and handshake
// time are bounded; messages are bounded by MaxRequestBytes. The client port
// uses ClientPortOptions, which adds authentication before decoding and a
// receive bound derived from the fleet.
func ServerOptions(extra ...grpc.ServerOption) []grpc.ServerOption {
	return append(baseOptions(MaxRequestBytes, DefaultMaxStreams), extra...)
}

func baseOptions(recv int, streams uint32) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(recv),
		grpc.MaxConcurrentStreams(streams),
		grpc.MaxHeaderListSize(maxHeaderBytes),
		grpc.KeepaliveEnforcementPolicy(keepaliveEnforcement),
		grpc.KeepaliveParams(keepaliveServer),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.ChainUnaryInterceptor(recoverUnary),
		grpc.ChainStreamInterceptor(recoverStream),
	}
}

// PortOptions tune the client port (zero values take the defaults above).
type PortOptions struct {
	// RecvMargin is added to the largest model's max_input_tokens × 4 bytes
	// to bound one request message (default DefaultRecvMargin).
	RecvMargin int
	// MaxStreams per connection (default DefaultMaxStreams).
	MaxStreams uint32
	// HandshakeTimeout bounds TLS and the HTTP/2 preface of a new
	// connection (default 10s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection that has had no call for this long
	// (default 5 minutes).
	IdleTimeout time.Duration
	// StreamWorkers is how many goroutines wait to run calls
	// (DefaultStreamWorkers when 0; negative: none, a goroutine per call).
	StreamWorkers int
}

// ClientPortOptions are ServerOptions for the client port of rt:
//
//   - with tenants configured, every switchyard.v1.Inference method
//     (ListModels included) and server reflection need a known API key, and
//     every switchyard.v1.Admin method a known admin token, checked from the
//     call's headers before any message is read (grpc.InTapHandle): a caller
//     without one gets UNAUTHENTICATED and its body is never received or
//     decoded; health checks stay open for probes;
//   - one message may hold at most rt.RecvLimit(o.RecvMargin) bytes: the
//     largest model's max_input_tokens × 4 bytes plus RecvMargin.
//
// The receive bound is fixed when the server is built (rt.FixRecvLimit): a
// reload that raises max_input_tokens past it takes effect for the larger
// prompts after a restart, and the reload says so.
func ClientPortOptions(rt *router.Server, o PortOptions, extra ...grpc.ServerOption) []grpc.ServerOption {
	if o.MaxStreams == 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	opts := baseOptions(rt.FixRecvLimit(o.RecvMargin), o.MaxStreams)
	if o.HandshakeTimeout > 0 {
		opts = append(opts, grpc.ConnectionTimeout(o.HandshakeTimeout))
	}
	if o.IdleTimeout > 0 {
		ka := keepaliveServer
		ka.MaxConnectionIdle = o.IdleTimeout
		opts = append(opts, grpc.KeepaliveParams(ka))
	}
	switch {
	case o.StreamWorkers == 0:
		opts = append(opts, grpc.NumStreamWorkers(DefaultStreamWorkers))
	case o.StreamWorkers > 0:
		opts = append(opts, grpc.NumStreamWorkers(uint32(o.StreamWorkers)))
	}
	opts = append(opts, grpc.InTapHandle(tapAuth(rt)))
	return append(opts, extra...)
}

var (
	inferencePrefix  = "/" + pb.Inference_ServiceDesc.ServiceName + "/"
	adminPrefix      = "/" + pb.Admin_ServiceDesc.ServiceName + "/"
	reflectionPrefix = "/grpc.reflection."
)

// tapAuth runs when a call's headers arrive, before its first message is
// read. Only a status error leaves it; the call is then answered with that
// status and its body discarded by the transport.
func tapAuth(rt *router.Server) tap.ServerInHandle {
	op := rt.Operator()
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		method := info.FullMethodName
		mctx := metadata.NewIncomingContext(ctx, info.Header)
		switch {
		case strings.HasPrefix(method, inferencePrefix):
			if _, err := rt.AuthenticateCaller(callerOf(mctx)); err != nil {
				return ctx, status.Error(codes.Unauthenticated, err.Error())
			}
		case strings.HasPrefix(method, adminPrefix):
			if err := adminCaller(mctx, op); err != nil {
				return ctx, status.Error(codes.Unauthenticated, err.Error())
			}
		case strings.HasPrefix(method, reflectionPrefix):
			if !rt.KeysRequired() {
				return ctx, nil
			}
			if _, err := rt.AuthenticateCaller(callerOf(mctx)); err == nil {
				return ctx, nil
			}
			if err := adminCaller(mctx, op); err == nil {
				return ctx, nil
			}
			return ctx, status.Error(codes.Unauthenticated, "unauthenticated: server reflection needs an API key or an admin token")
		}
		return ctx, nil
	}
}

// adminCaller checks that a call carries a known admin token, of any role.
func adminCaller(ctx context.Context, op router.Operator) error {
	tok, err := adminToken(ctx)
	if err != nil {
		return err
	}
	if _, err := op.Authorize(tok, router.RoleViewer); err != nil && dispatch.CodeOf(err) != dispatch.CodePermissionDenied {
		return err
	}
	return nil
}

// OperatorInterceptors return interceptors that let a call through only with
// an admin token of the operator role (op's tokens, the Admin API's): for
// services served off the client port that change the fleet, such as
// SimControl. Each call let through is logged to log with the token's name.
func OperatorInterceptors(op router.Operator, log *slog.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	authorize := func(ctx context.Context) (string, error) {
		tok, err := adminToken(ctx)
		if err != nil {
			return "", err
		}
		return op.Authorize(tok, router.RoleOperator)
	}
	unary := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		actor, err := authorize(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		log.InfoContext(ctx, "operator call", "actor", actor)
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if _, err := authorize(ss.Context()); err != nil {
			return toStatus(err)
		}
		return handler(srv, ss)
	}
	return unary, stream
}

// LimitListener serves at most n connections at once (DefaultMaxConnections
// when n <= 0): a connection accepted past the limit is closed at once, so a
// flood of idle connections costs a file descriptor for a moment, not a
// transport's goroutines and buffers.
func LimitListener(l net.Listener, n int) net.Listener {
	if n <= 0 {
		n = DefaultMaxConnections
	}
	return &limitListener{Listener: l, sem: make(chan struct{}, n)}
}

type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			_ = c.Close()
		}
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
