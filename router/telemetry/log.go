package telemetry

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

type requestIDKey struct{}

// WithRequestID returns ctx carrying the call's request id for log lines.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// WithRequestIDValue returns ctx carrying the call's request id, as
// WithRequestID does, and val under key, in one context node: the request
// path pays one allocation for both instead of three (two nodes and the boxed
// id). key must be comparable, as for context.WithValue.
func WithRequestIDValue(ctx context.Context, id string, key, val any) context.Context {
	return &requestCtx{Context: ctx, id: id, key: key, val: val}
}

// requestCtx is WithRequestIDValue's context node.
type requestCtx struct {
	context.Context
	id       string
	key, val any
}

func (c *requestCtx) Value(k any) any {
	switch k {
	case requestIDKey{}:
		return c.id
	case c.key:
		return c.val
	}
	return c.Context.Value(k)
}

// RequestID returns the request id WithRequestID or WithRequestIDValue put
// in ctx, or "".
func RequestID(ctx context.Context) string {
	if c, ok := ctx.(*requestCtx); ok {
		return c.id
	}
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// LogAttrs returns request_id, trace_id and span_id from ctx (those present).
func LogAttrs(ctx context.Context) []slog.Attr {
	var out []slog.Attr
	if id := RequestID(ctx); id != "" {
		out = append(out, slog.String("request_id", id))
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		out = append(out, slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return out
}

// LogHandler wraps a slog.Handler so every record logged with a context
// (InfoContext, ...) carries request_id, trace_id and span_id from it.
type LogHandler struct{ next slog.Handler }

// NewLogHandler wraps next; wrapping a LogHandler again returns it as is.
func NewLogHandler(next slog.Handler) slog.Handler {
	if h, ok := next.(*LogHandler); ok {
		return h
	}
	return &LogHandler{next: next}
}

// Enabled implements slog.Handler.
func (h *LogHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle implements slog.Handler.
func (h *LogHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		if attrs := LogAttrs(ctx); len(attrs) > 0 {
			r = r.Clone()
			r.AddAttrs(attrs...)
		}
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h *LogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &LogHandler{next: h.next.WithAttrs(as)}
}

// WithGroup implements slog.Handler.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	return &LogHandler{next: h.next.WithGroup(name)}
}
