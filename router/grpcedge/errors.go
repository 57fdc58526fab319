package grpcedge

import (
	"errors"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/internal/grpccode"
)

// toStatus is the gRPC edge's one error table: an error from the router
// (the core's, dispatch.CodeOf) as the status the client sees, its code from
// grpccode's table. Backends' own texts (which may name internal addresses:
// "dial tcp 10.0.3.7:8000: connection refused") never reach the client: see
// dispatch.PublicText.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	code := grpccode.Of(err)
	if be, ok := dispatch.BackendVerdict(err); ok {
		// A backend's status: one about the request (INVALID_ARGUMENT...) or
		// a shortage passes through as the backend worded it; anything else
		// keeps its code only.
		if _, isStatus := status.FromError(be.Err); isStatus && dispatch.ClientVisible(be.Code) {
			return be.Err
		}
		return status.Error(code, dispatch.PublicText(err))
	}
	msg := dispatch.PublicText(err)
	var inv *dispatch.InvalidError
	switch {
	case errors.As(err, &inv):
		return badRequest(msg, inv)
	case dispatch.CodeOf(err) == dispatch.CodeExhausted:
		return withRetryInfo(code, msg, dispatch.RetryAfter(err))
	}
	return status.Error(code, msg)
}

// badRequest is the INVALID_ARGUMENT status of an InvalidError: msg as its
// message, the fields in an errdetails.BadRequest, so clients learn the
// field without reading the text.
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
