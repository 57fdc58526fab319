package grpcedge

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/internal/grpccode"
)

// The gRPC edge's table: each of the core's errors as the status a client
// sees, with the details clients read (the field of a refusal, when to
// retry), and never a backend's own words for a failure.
func TestToStatus(t *testing.T) {
	backendRefusal := status.Error(codes.InvalidArgument, "messages[0].content: empty")
	for _, c := range []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"invalid", &dispatch.InvalidError{Fields: []string{"max_tokens"}, Reason: "must be in 1..10"}, codes.InvalidArgument, "invalid argument: max_tokens: must be in 1..10"},
		{"unknown model", &dispatch.UnknownModelError{Model: `"x"`}, codes.NotFound, `unknown model "x": see ListModels`},
		{"unauthenticated", &dispatch.UnauthenticatedError{Reason: "unknown token"}, codes.Unauthenticated, "unauthenticated: unknown token"},
		{"denied", &dispatch.DeniedError{Reason: `token "v" has role viewer; this call needs operator`}, codes.PermissionDenied, `permission denied: token "v" has role viewer; this call needs operator`},
		{"unknown pool", &dispatch.UnknownPoolError{Pool: `"p"`}, codes.NotFound, `unknown pool "p" (see ListPools)`},
		{"refused", &dispatch.RefusedError{Reason: "draining p: no headroom; use force to drain anyway"}, codes.FailedPrecondition, "refused: draining p: no headroom; use force to drain anyway"},
		{"exhausted", &dispatch.ExhaustedError{Err: errors.New("wait queue full (1 calls)"), RetryAfter: 3 * time.Second}, codes.ResourceExhausted, "wait queue full (1 calls)"},
		{"unavailable", &dispatch.UnavailableError{Err: errors.New("router shutting down")}, codes.Unavailable, "router shutting down"},
		{"canceled", fmt.Errorf("send to client: %w", context.Canceled), codes.Canceled, "send to client: context canceled"},
		{"backend refusal passes", grpccode.Backend(backendRefusal), codes.InvalidArgument, "messages[0].content: empty"},
		{"backend failure hidden", grpccode.Backend(status.Error(codes.Unavailable, "dial tcp 10.0.3.7:8000: connection refused")), codes.Unavailable, "backend answered Unavailable (details are in the router's log)"},
		{"backend unknown code", grpccode.Backend(status.Error(codes.Aborted, "10.0.3.7")), codes.Aborted, "backend answered Aborted (details are in the router's log)"},
		{"backend error without a status", &dispatch.BackendError{Code: dispatch.CodeInternal, Status: "Internal", Err: errors.New("pool p: adapter claims embeddings")}, codes.Internal, "backend answered Internal (details are in the router's log)"},
		{"plain", errors.New("control store: boom"), codes.Internal, "control store: boom"},
	} {
		st := status.Convert(toStatus(c.err))
		if st.Code() != c.code || st.Message() != c.msg {
			t.Errorf("%s: %v %q, want %v %q", c.name, st.Code(), st.Message(), c.code, c.msg)
		}
	}
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) is not nil")
	}

	st := status.Convert(toStatus(&dispatch.InvalidError{Fields: []string{"prompt", "continuation.generated_text"}, Reason: "too long"}))
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField()+": "+v.GetDescription())
			}
		}
	}
	if fmt.Sprint(fields) != "[prompt: too long continuation.generated_text: too long]" {
		t.Errorf("BadRequest fields %q", fields)
	}
	for err, want := range map[error]time.Duration{
		&dispatch.ExhaustedError{Err: errors.New("full"), RetryAfter: 3 * time.Second}: 3 * time.Second,
		&dispatch.ExhaustedError{Err: errors.New("full")}:                              time.Second,
	} {
		var got time.Duration
		for _, d := range status.Convert(toStatus(err)).Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				got = ri.GetRetryDelay().AsDuration()
			}
		}
		if got != want {
			t.Errorf("%v: RetryInfo %v, want %v", err, got, want)
		}
	}
	if got := toStatus(grpccode.Backend(backendRefusal)); got != backendRefusal {
		t.Errorf("a backend's refusal is not passed as it is: %v", got)
	}
}
