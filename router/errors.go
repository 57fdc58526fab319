package router

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchyard-dev/switchyard/router/dispatch"
)

// grpcCodes is the gRPC edge's one table from the core's codes to its wire.
var grpcCodes = map[dispatch.Code]codes.Code{
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

// coreCodes is grpcCodes read backwards: a backend's status as a core code.
var coreCodes = func() map[codes.Code]dispatch.Code {
	m := map[codes.Code]dispatch.Code{}
	for k, v := range grpcCodes {
		m[v] = k
	}
	return m
}()

// backendErr is a backend's error as the core reads it: a gRPC status
// becomes a *dispatch.BackendError with its code (a code the core has no
// name for, such as UNKNOWN or ABORTED, counts as internal: a failure);
// anything else (a context error, a plain error) passes as it is.
func backendErr(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	c, known := coreCodes[st.Code()]
	if !known {
		c = dispatch.CodeInternal
	}
	be := &dispatch.BackendError{Code: c, Status: st.Code().String(), Err: err}
	if dispatch.ClientVisible(c) {
		be.Message = st.Message()
	}
	return be
}

// toStatus turns an error from any layer into the gRPC status the client sees.
// Backends' own texts (which may name internal addresses: "dial tcp
// 10.0.3.7:8000: connection refused") never reach the client: see
// dispatch.PublicText.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if be, ok := dispatch.BackendVerdict(err); ok {
		// A backend's status: one about the request (INVALID_ARGUMENT...) or
		// a shortage passes through as the backend worded it; anything else
		// keeps its code only.
		st, _ := status.FromError(be.Err)
		if dispatch.ClientVisible(be.Code) {
			return be.Err
		}
		return status.Error(st.Code(), "backend answered "+st.Code().String()+" (details are in the router's log)")
	}
	code := dispatch.CodeOf(err)
	msg := dispatch.PublicText(err)
	var inv *dispatch.InvalidError
	switch {
	case errors.As(err, &inv):
		return badRequest(msg, inv)
	case code == dispatch.CodeExhausted:
		return withRetryInfo(codes.ResourceExhausted, msg, dispatch.RetryAfter(err))
	case code == dispatch.CodeInternal:
		if s, ok := status.FromError(err); ok {
			// A status the router's own layers made (the Admin API's).
			return status.Error(s.Code(), msg)
		}
	}
	return status.Error(grpcCodes[code], msg)
}

// badRequest is the INVALID_ARGUMENT status of an InvalidError: msg as its
// message, the fields in an errdetails.BadRequest, so clients (the HTTP
// front door among them) learn the field without reading the text.
func badRequest(msg string, inv *dispatch.InvalidError) error {
	st := status.New(codes.InvalidArgument, msg)
	br := &errdetails.BadRequest{}
	for _, f := range inv.Fields {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f, Description: inv.Reason})
	}
	if d, err := st.WithDetails(br); err == nil {
		return d.Err()
	}
	return st.Err()
}

func withRetryInfo(code codes.Code, msg string, after time.Duration) error {
	st := status.New(code, msg)
	if after <= 0 {
		after = time.Second
	}
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(after)}); err == nil {
		return d.Err()
	}
	return st.Err()
}

// unauthenticated is an UNAUTHENTICATED error with a reason.
func unauthenticated(format string, args ...any) error {
	return &dispatch.UnauthenticatedError{Reason: fmt.Sprintf(format, args...)}
}
