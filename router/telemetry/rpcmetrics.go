package telemetry

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// RPCMetricsOptions configure NewRPCMetrics.
type RPCMetricsOptions struct {
	// MeterProvider records rpc.server.call.duration and
	// rpc.client.call.duration.
	MeterProvider metric.MeterProvider
	// PassTraceContext carries a caller's W3C trace context on to native
	// backends. Set it when the router exports no traces itself (otherwise
	// otelgrpc's handlers do it, with spans).
	PassTraceContext bool
	// Propagator for PassTraceContext (default: Propagator()).
	Propagator propagation.TextMapPropagator
	// Measured reports whether a method is measured, on the server and the
	// client side (health checks and reflection are not); nil measures every
	// method.
	Measured func(fullMethod string) bool
}

// RPCMetrics records the call-duration histograms of OpenTelemetry's RPC
// conventions — the names, unit, buckets and attributes otelgrpc records
// (rpc.method, rpc.system.name, rpc.response.status_code, error.type, and
// server.address/server.port on the client side) — from gRPC interceptors.
//
// It replaces otelgrpc's stats handlers on the request path when no traces
// are exported: a stats handler makes grpc-go build an event for every
// header and message of every call, and otelgrpc built and sorted the
// attribute set on each, together ~60 allocations per proxied call
// (docs/benchmarks.md). Here each (method, status, address) attribute set is
// built once and reused; a call costs a clock read and a histogram update.
//
// Method names are a label. On the server side only registered methods
// (SetServerMethods) are named; any other name a client sends is recorded
// as "_OTHER", as the conventions say, so clients cannot grow the series.
//
// Safe for concurrent use.
type RPCMetrics struct {
	server, client metric.Float64Histogram
	measured       func(string) bool
	prop           propagation.TextMapPropagator
	pass           bool
	known          atomic.Pointer[map[string]string] // server: full method -> label
	sets           sync.Map                          // setKey -> []metric.RecordOption
}

// durationBuckets are otelgrpc's boundaries for the call-duration histograms.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// otherMethod is the conventions' rpc.method for a method the
// instrumentation does not know.
const otherMethod = "_OTHER"

// NewRPCMetrics builds the instruments.
func NewRPCMetrics(o RPCMetricsOptions) (*RPCMetrics, error) {
	if o.Propagator == nil {
		o.Propagator = Propagator()
	}
	meter := o.MeterProvider.Meter(ScopeName + "/grpc")
	srv, err := meter.Float64Histogram("rpc.server.call.duration", metric.WithUnit("s"),
		metric.WithDescription("Measures the duration of inbound remote procedure calls."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		return nil, err
	}
	cli, err := meter.Float64Histogram("rpc.client.call.duration", metric.WithUnit("s"),
		metric.WithDescription("Measures the duration of outbound remote procedure calls."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		return nil, err
	}
	m := &RPCMetrics{server: srv, client: cli, measured: o.Measured, prop: o.Propagator, pass: o.PassTraceContext}
	m.known.Store(&map[string]string{})
	return m, nil
}

// SetServerMethods names the methods the server serves (grpc.Server's
// GetServiceInfo, once every service is registered).
func (m *RPCMetrics) SetServerMethods(services map[string]grpc.ServiceInfo) {
	known := map[string]string{}
	for svc, info := range services {
		for _, mi := range info.Methods {
			known["/"+svc+"/"+mi.Name] = svc + "/" + mi.Name
		}
	}
	m.known.Store(&known)
}

type setKey struct {
	client bool
	method string
	code   codes.Code
	target string
}

// UnaryServer is the client port's unary interceptor.
func (m *RPCMetrics) UnaryServer(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if m.measured != nil && !m.measured(info.FullMethod) {
		return handler(ctx, req)
	}
	begin := time.Now()
	resp, err := handler(m.incoming(ctx), req)
	m.record(ctx, m.server, m.serverKey(info.FullMethod, err), begin)
	return resp, err
}

// StreamServer is the client port's stream interceptor.
func (m *RPCMetrics) StreamServer(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if m.measured != nil && !m.measured(info.FullMethod) {
		return handler(srv, ss)
	}
	begin := time.Now()
	if ctx := m.incoming(ss.Context()); ctx != ss.Context() {
		ss = &ctxServerStream{ServerStream: ss, ctx: ctx}
	}
	err := handler(srv, ss)
	m.record(ss.Context(), m.server, m.serverKey(info.FullMethod, err), begin)
	return err
}

// UnaryClient is the backend links' unary interceptor.
func (m *RPCMetrics) UnaryClient(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if m.measured != nil && !m.measured(method) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	begin := time.Now()
	err := invoker(m.outgoing(ctx), method, req, reply, cc, opts...)
	m.record(ctx, m.client, m.clientKey(method, cc, err), begin)
	return err
}

// StreamClient is the backend links' stream interceptor. The call is
// measured until a receive ends it (io.EOF counts as OK) or its context
// ends, whichever comes first.
func (m *RPCMetrics) StreamClient(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if m.measured != nil && !m.measured(method) {
		return streamer(ctx, desc, cc, method, opts...)
	}
	begin := time.Now()
	cs, err := streamer(m.outgoing(ctx), desc, cc, method, opts...)
	if err != nil {
		m.record(ctx, m.client, m.clientKey(method, cc, err), begin)
		return nil, err
	}
	s := &measuredClientStream{ClientStream: cs, done: func(err error) { m.record(ctx, m.client, m.clientKey(method, cc, err), begin) }}
	// The callback only records; it may run before AfterFunc returns (a
	// context already done), so it must not touch s.stop.
	s.stop = context.AfterFunc(ctx, func() { s.finish(status.FromContextError(ctx.Err()).Err()) })
	return s, nil
}

func (m *RPCMetrics) serverKey(fullMethod string, err error) setKey {
	label, ok := (*m.known.Load())[fullMethod]
	if !ok {
		label = otherMethod
	}
	return setKey{method: label, code: status.Code(err)}
}

func (m *RPCMetrics) clientKey(fullMethod string, cc *grpc.ClientConn, err error) setKey {
	k := setKey{client: true, method: otherMethod, code: status.Code(err), target: cc.Target()}
	if len(fullMethod) > 1 {
		k.method = fullMethod[1:] // chosen by the router's own code, never by a client
	}
	return k
}

func (m *RPCMetrics) record(ctx context.Context, h metric.Float64Histogram, k setKey, begin time.Time) {
	h.Record(ctx, time.Since(begin).Seconds(), m.recordOptions(k)...)
}

// recordOptions returns the prebuilt attribute set of k.
func (m *RPCMetrics) recordOptions(k setKey) []metric.RecordOption {
	if o, ok := m.sets.Load(k); ok {
		return o.([]metric.RecordOption)
	}
	attrs := []attribute.KeyValue{
		attribute.String("rpc.method", k.method),
		attribute.String("rpc.system.name", "grpc"),
		attribute.String("rpc.response.status_code", CodeName(k.code)),
	}
	if isError(k.code, k.client) {
		attrs = append(attrs, attribute.String("error.type", CodeName(k.code)))
	}
	if k.target != "" {
		attrs = append(attrs, serverAddress(k.target)...)
	}
	o, _ := m.sets.LoadOrStore(k, []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))})
	return o.([]metric.RecordOption)
}

// incoming reads a caller's trace context when the router passes it on;
// calls without a traceparent cost one metadata lookup.
func (m *RPCMetrics) incoming(ctx context.Context) context.Context {
	if !m.pass || len(metadata.ValueFromIncomingContext(ctx, "traceparent")) == 0 {
		return ctx
	}
	md, _ := metadata.FromIncomingContext(ctx)
	return m.prop.Extract(ctx, mdCarrier(md))
}

// outgoing writes the trace context, if the call has one, for the backend.
func (m *RPCMetrics) outgoing(ctx context.Context) context.Context {
	if !m.pass || !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	md := metadata.MD{}
	m.prop.Inject(ctx, mdCarrier(md))
	kv := make([]string, 0, 2*len(md))
	for k, vs := range md {
		for _, v := range vs {
			kv = append(kv, k, v)
		}
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

type ctxServerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxServerStream) Context() context.Context { return s.ctx }

type measuredClientStream struct {
	grpc.ClientStream
	once sync.Once
	done func(error)
	stop func() bool
}

func (s *measuredClientStream) RecvMsg(msg any) error {
	err := s.ClientStream.RecvMsg(msg)
	if err != nil {
		s.stop()
		if errors.Is(err, io.EOF) {
			s.finish(nil)
		} else {
			s.finish(err)
		}
	}
	return err
}

// finish records the call once: at its end or when its context ends.
func (s *measuredClientStream) finish(err error) { s.once.Do(func() { s.done(err) }) }

// isError follows the conventions: a client counts every status but OK as
// an error, a server only the ones that are its own fault.
func isError(c codes.Code, client bool) bool {
	if client {
		return c != codes.OK
	}
	switch c {
	case codes.Unknown, codes.DeadlineExceeded, codes.Unimplemented, codes.Internal, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}

// serverAddress splits a dial target (host:port, possibly after a scheme
// such as dns:///) into server.address and server.port.
func serverAddress(target string) []attribute.KeyValue {
	for _, scheme := range []string{"dns:///", "passthrough:///", "dns:"} {
		if rest, ok := strings.CutPrefix(target, scheme); ok {
			target = rest
			break
		}
	}
	if host, port, err := net.SplitHostPort(target); err == nil {
		if p, err := strconv.Atoi(port); err == nil {
			return []attribute.KeyValue{attribute.String("server.address", host), attribute.Int("server.port", p)}
		}
	}
	return []attribute.KeyValue{attribute.String("server.address", target)}
}

// CodeName is a gRPC status code's canonical upper-case name, as
// OpenTelemetry's conventions, the metrics' status labels and gRPC's own
// documentation spell it (OK, CANCELLED, RESOURCE_EXHAUSTED, ...).
func CodeName(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return c.String()
}

var codeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
	"PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

// mdCarrier adapts grpc metadata to the propagators' TextMapCarrier.
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
