// Package grpccode is the one table between the core's error codes
// (dispatch.Code) and gRPC status codes, read both ways. The router reads
// its backends' answers through it (a backend is a gRPC edge to the router:
// its errors are statuses, Backend turns them into the core's), and labels
// its metrics with the code the gRPC edge answers a call with (Of, Name);
// the gRPC edge (router/grpcedge) builds its statuses from it.
//
// It is internal to the router and its edges; package router imports gRPC
// only through it.
package grpccode

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// toGRPC is the table: the core's codes to gRPC's.
var toGRPC = [...]codes.Code{
	dispatch.CodeOK:                 codes.OK,
	dispatch.CodeInvalid:            codes.InvalidArgument,
	dispatch.CodeNotFound:           codes.NotFound,
	dispatch.CodeUnauthenticated:    codes.Unauthenticated,
	dispatch.CodePermissionDenied:   codes.PermissionDenied,
	dispatch.CodeFailedPrecondition: codes.FailedPrecondition,
	dispatch.CodeOutOfRange:         codes.OutOfRange,
	dispatch.CodeAlreadyExists:      codes.AlreadyExists,
	dispatch.CodeExhausted:          codes.ResourceExhausted,
	dispatch.CodeUnavailable:        codes.Unavailable,
	dispatch.CodeDeadlineExceeded:   codes.DeadlineExceeded,
	dispatch.CodeCanceled:           codes.Canceled,
	dispatch.CodeUnimplemented:      codes.Unimplemented,
	dispatch.CodeInternal:           codes.Internal,
}

// fromGRPC is toGRPC read backwards.
var fromGRPC = func() map[codes.Code]dispatch.Code {
	m := make(map[codes.Code]dispatch.Code, len(toGRPC))
	for c, g := range toGRPC {
		m[g] = dispatch.Code(c)
	}
	return m
}()

// GRPC is c's gRPC code (Internal for a code the table lacks).
func GRPC(c dispatch.Code) codes.Code {
	if c >= 0 && int(c) < len(toGRPC) {
		return toGRPC[c]
	}
	return codes.Internal
}

// Backend is a backend's error as the core reads it: a gRPC status becomes
// a *dispatch.BackendError with its code (a code the core has no name for,
// such as UNKNOWN or ABORTED, counts as internal: a failure) and, for a
// refusal a client may read (dispatch.ClientVisible), its message; anything
// else (a context error, a plain error) passes as it is.
func Backend(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	c, known := fromGRPC[st.Code()]
	if !known {
		c = dispatch.CodeInternal
	}
	be := &dispatch.BackendError{Code: c, Status: st.Code().String(), Err: err}
	if dispatch.ClientVisible(c) {
		be.Message = st.Message()
	}
	return be
}

// Of is the gRPC code the gRPC edge answers err with: a backend's own code
// where a backend's answer decides err (dispatch.BackendVerdict), else the
// table's code for dispatch.CodeOf(err) — or, for an error the core has no
// code for that is itself a status, that status's code.
func Of(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if be, ok := dispatch.BackendVerdict(err); ok {
		if st, ok := status.FromError(be.Err); ok {
			return st.Code()
		}
		return GRPC(be.Code)
	}
	c := dispatch.CodeOf(err)
	if c == dispatch.CodeInternal {
		if st, ok := status.FromError(err); ok {
			return st.Code()
		}
	}
	return GRPC(c)
}

// Name is Of's canonical upper-case name (OK, RESOURCE_EXHAUSTED, ...), the
// status label of the router's metrics and the error.type of its spans.
func Name(err error) string { return telemetry.CodeName(Of(err)) }
