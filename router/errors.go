package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchyard-dev/switchyard/router/capacity"
)

// Errors the router's layers return. They become gRPC statuses only in
// toStatus, at the RPC edge.
var (
	errInvalidArgument = errors.New("invalid argument")
	errUnknownModel    = errors.New("unknown model")
	errUnauthenticated = errors.New("unauthenticated")
	errNoEligiblePool  = errors.New("no eligible pool")
	errNoCapacity      = errors.New("no capacity")
	errShed            = errors.New("shed")
	errPoolFailed      = errors.New("pool failed")
)

// invalid builds an INVALID_ARGUMENT error naming the field.
func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", errInvalidArgument, field, fmt.Sprintf(format, args...))
}

// exhaustedError carries the retry delay for RESOURCE_EXHAUSTED answers.
type exhaustedError struct {
	err        error
	retryAfter time.Duration
}

func (e *exhaustedError) Error() string { return e.err.Error() }
func (e *exhaustedError) Unwrap() error { return e.err }

// toStatus turns an error from any layer into the gRPC status the client sees.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isRouterError(err) {
		// A backend's status (client faults such as INVALID_ARGUMENT pass through).
		return err
	}
	var ex *exhaustedError
	var quota *capacity.QuotaError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, errInvalidArgument):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errUnknownModel):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errUnauthenticated):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, capacity.ErrDuplicate):
		return status.Error(codes.AlreadyExists, "request_id is already in flight for this tenant; use a new request_id per call")
	case errors.As(err, &ex):
		return withRetryInfo(codes.ResourceExhausted, err.Error(), ex.retryAfter)
	case errors.As(err, &quota):
		return withRetryInfo(codes.ResourceExhausted, err.Error(), quota.RetryAfter)
	case errors.Is(err, errNoEligiblePool), errors.Is(err, errPoolFailed):
		return status.Error(codes.Unavailable, err.Error())
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	return status.Error(codes.Internal, err.Error())
}

func isRouterError(err error) bool {
	for _, e := range []error{errInvalidArgument, errUnknownModel, errUnauthenticated, errNoEligiblePool, errNoCapacity, errShed, errPoolFailed, context.DeadlineExceeded, context.Canceled} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ex *exhaustedError
	var quota *capacity.QuotaError
	return errors.As(err, &ex) || errors.As(err, &quota) || errors.Is(err, capacity.ErrDuplicate)
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

// outcome classifies a backend error for retries and outlier detection.
type outcome int

const (
	outcomeOK          outcome = iota
	outcomeClientFault         // the request is at fault: never retried, never counted against the pool
	outcomeShortage            // the pool is full or over quota: shift traffic, never eject
	outcomeFailure             // a real failure: retry elsewhere, feeds outlier ejection
	outcomeCallerGone          // the client's deadline passed or it cancelled
)

func classify(ctx context.Context, err error) outcome {
	if err == nil {
		return outcomeOK
	}
	if ctx.Err() != nil {
		return outcomeCallerGone
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.Unauthenticated, codes.PermissionDenied, codes.FailedPrecondition, codes.OutOfRange, codes.AlreadyExists:
		return outcomeClientFault
	case codes.ResourceExhausted:
		return outcomeShortage
	case codes.Canceled:
		if errors.Is(err, context.Canceled) {
			return outcomeCallerGone
		}
		return outcomeFailure
	default: // Unavailable, DeadlineExceeded of an attempt, Internal, Unknown, Aborted, DataLoss...
		return outcomeFailure
	}
}
