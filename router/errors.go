package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
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
	return &fieldError{fields: []string{field}, reason: fmt.Sprintf(format, args...)}
}

// fieldError is a request refused for the value of its fields: it is
// errInvalidArgument, and toStatus turns it into INVALID_ARGUMENT with an
// errdetails.BadRequest holding one FieldViolation per field, so clients
// (the HTTP front door among them) learn the field without reading the text.
type fieldError struct {
	// fields are the request's field paths, the one at fault first:
	// "max_tokens", "messages[2].role", "sampling.stop[1]"; a limit two fields
	// share names both ("prompt", "continuation.generated_text").
	fields []string
	// reason says what is wrong, client input in it cut by echo.
	reason string
}

func (e *fieldError) Error() string {
	return errInvalidArgument.Error() + ": " + strings.Join(e.fields, " + ") + ": " + e.reason
}

func (e *fieldError) Unwrap() error { return errInvalidArgument }

// badRequest is the INVALID_ARGUMENT status of a fieldError: msg as its
// message, the fields in an errdetails.BadRequest.
func badRequest(msg string, fe *fieldError) error {
	st := status.New(codes.InvalidArgument, msg)
	br := &errdetails.BadRequest{}
	for _, f := range fe.fields {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f, Description: fe.reason})
	}
	if d, err := st.WithDetails(br); err == nil {
		return d.Err()
	}
	return st.Err()
}

// exhaustedError carries the retry delay for RESOURCE_EXHAUSTED answers.
type exhaustedError struct {
	err        error
	retryAfter time.Duration
}

func (e *exhaustedError) Error() string { return e.err.Error() }
func (e *exhaustedError) Unwrap() error { return e.err }

// toStatus turns an error from any layer into the gRPC status the client sees.
// Backends' own texts (which may name internal addresses: "dial tcp
// 10.0.3.7:8000: connection refused") never reach the client: see publicText.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok && !isRouterError(err) {
		// A backend's status: one about the request (INVALID_ARGUMENT...) or
		// a shortage passes through as the backend worded it; anything else
		// keeps its code only.
		switch st.Code() {
		case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.OutOfRange, codes.AlreadyExists, codes.ResourceExhausted:
			return err
		}
		return status.Error(st.Code(), "backend answered "+st.Code().String()+" (details are in the router's log)")
	}
	var ex *exhaustedError
	var quota *capacity.QuotaError
	msg := publicText(err)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, msg)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, msg)
	case errors.Is(err, errInvalidArgument):
		var fe *fieldError
		if errors.As(err, &fe) {
			return badRequest(msg, fe)
		}
		return status.Error(codes.InvalidArgument, msg)
	case errors.Is(err, errUnknownModel):
		return status.Error(codes.NotFound, msg)
	case errors.Is(err, errUnauthenticated):
		return status.Error(codes.Unauthenticated, msg)
	case errors.Is(err, capacity.ErrDuplicate):
		return status.Error(codes.AlreadyExists, "request_id is already in flight for this tenant; use a new request_id per call")
	case errors.As(err, &ex):
		return withRetryInfo(codes.ResourceExhausted, msg, ex.retryAfter)
	case errors.As(err, &quota):
		return withRetryInfo(codes.ResourceExhausted, msg, quota.RetryAfter)
	case errors.Is(err, errNoEligiblePool), errors.Is(err, errPoolFailed):
		return status.Error(codes.Unavailable, msg)
	}
	if s, ok := status.FromError(err); ok {
		return status.Error(s.Code(), msg)
	}
	return status.Error(codes.Internal, msg)
}

// publicText is err's text with every backend's own wording replaced: a
// backend status becomes "backend answered CODE", a network or URL error
// "network error". The router's words around them (pool names, attempts,
// what it waited for) stay. The full error goes to the router's log.
func publicText(err error) string {
	msg := err.Error()
	var walk func(e error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if se, ok := e.(interface{ GRPCStatus() *status.Status }); ok {
			if t := e.Error(); t != "" {
				msg = strings.ReplaceAll(msg, t, "backend answered "+se.GRPCStatus().Code().String())
			}
			return
		}
		switch e.(type) {
		case *net.OpError, *net.DNSError, *net.AddrError, *url.Error:
			if t := e.Error(); t != "" {
				msg = strings.ReplaceAll(msg, t, "network error")
			}
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return msg
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
	if ctx.Err() != nil || deadlinePassed(ctx) {
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

// deadlinePassed reports whether ctx's deadline is behind us even though ctx
// has not noticed yet: a backend's DEADLINE_EXCEEDED (its copy of the same
// deadline) can arrive before the caller's own timer has fired on a busy
// host, and it is then the caller's deadline, not a pool failure.
func deadlinePassed(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}
