package dispatch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/router/capacity"
)

// Code is what kind of failure an error is, in the terms every edge maps to
// its own wire: the gRPC edge to a status code, the HTTP edges to a status
// and an error type. One table per wire (router/grpcedge, openaihttp,
// anthropichttp, console) reads it; the core never builds a wire status.
type Code int

// The codes. They follow the canonical codes gRPC and Google APIs use, so the
// gRPC edge's table is one to one; an HTTP edge picks the nearest status.
const (
	CodeOK Code = iota
	CodeInvalid
	CodeNotFound
	CodeUnauthenticated
	CodePermissionDenied
	CodeFailedPrecondition
	CodeOutOfRange
	CodeAlreadyExists
	CodeExhausted
	CodeUnavailable
	CodeDeadlineExceeded
	CodeCanceled
	CodeUnimplemented
	CodeInternal
	codeCount
)

var codeNames = [codeCount]string{"ok", "invalid_argument", "not_found", "unauthenticated", "permission_denied",
	"failed_precondition", "out_of_range", "already_exists", "resource_exhausted", "unavailable",
	"deadline_exceeded", "canceled", "unimplemented", "internal"}

func (c Code) String() string {
	if c >= 0 && c < codeCount {
		return codeNames[c]
	}
	return "internal"
}

// InvalidError is a request refused for the value of its fields.
type InvalidError struct {
	// Fields are the request's field paths, the one at fault first:
	// "max_tokens", "messages[2].role", "sampling.stop[1]"; a limit two
	// fields share names both ("prompt", "continuation.generated_text").
	// Each edge renames them to its own wire's names.
	Fields []string
	// Reason says what is wrong; client input in it is cut (Echo).
	Reason string
}

func (e *InvalidError) Error() string {
	return "invalid argument: " + strings.Join(e.Fields, " + ") + ": " + e.Reason
}

// Invalid builds an InvalidError naming field.
func Invalid(field, format string, args ...any) error {
	return &InvalidError{Fields: []string{field}, Reason: fmt.Sprintf(format, args...)}
}

// UnknownModelError is a call for a model the fleet does not serve.
type UnknownModelError struct {
	// Model is the name asked for, cut by Echo.
	Model string
}

func (e *UnknownModelError) Error() string { return "unknown model " + e.Model + ": see ListModels" }

// UnauthenticatedError is a caller without a known credential, or one whose
// credential a reload removed while its stream ran.
type UnauthenticatedError struct{ Reason string }

func (e *UnauthenticatedError) Error() string { return "unauthenticated: " + e.Reason }

// DeniedError is a known credential whose role does not allow the call (an
// operator change made with a viewer's admin token).
type DeniedError struct{ Reason string }

func (e *DeniedError) Error() string { return "permission denied: " + e.Reason }

// UnknownPoolError is an operator call naming a pool the fleet does not have.
type UnknownPoolError struct {
	// Pool is the name asked for, cut by Echo.
	Pool string
}

func (e *UnknownPoolError) Error() string { return "unknown pool " + e.Pool + " (see ListPools)" }

// RefusedError is an operator change refused in the fleet's present state
// (a drain the rest of the fleet lacks the headroom to absorb); the caller
// may force it or try again later.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "refused: " + e.Reason }

// ExhaustedError is a call refused for want of capacity, queue room, retry
// budget or quota; the client may retry after RetryAfter.
type ExhaustedError struct {
	Err        error
	RetryAfter time.Duration
}

func (e *ExhaustedError) Error() string { return e.Err.Error() }
func (e *ExhaustedError) Unwrap() error { return e.Err }

// UnavailableError is a call no pool could serve: none was eligible, or
// every one tried failed.
type UnavailableError struct {
	// Tried are the pools attempts ran on, in order (empty: none was eligible).
	Tried []string
	Err   error
}

func (e *UnavailableError) Error() string { return e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// BackendError is a backend's own error with its Code (the wiring maps the
// adapter's status to one). Its text never reaches a client: PublicText says
// "backend answered <Status>" instead, or, when the backend's refusal is
// about the request or a shortage and decides the call, its Message.
type BackendError struct {
	Code Code
	// Status is the backend's answer as its wire names it ("Unavailable",
	// "ResourceExhausted"); empty: Code's name.
	Status string
	// Message is what a client may read of the backend's refusal: the
	// adapter's words for a refusal of the request ("messages[0].content:
	// empty") or a shortage, which the adapters word for clients; empty for
	// anything else (a failure's text may name internal addresses).
	Message string
	Err     error
}

// ClientVisible says whether a backend's words for a refusal with code c
// may reach the client: a refusal of the request itself or a shortage.
func ClientVisible(c Code) bool {
	switch c {
	case CodeInvalid, CodeNotFound, CodeFailedPrecondition, CodeOutOfRange, CodeAlreadyExists, CodeExhausted:
		return true
	}
	return false
}

func (e *BackendError) Error() string { return e.Err.Error() }
func (e *BackendError) Unwrap() error { return e.Err }

// CodeOf is the Code of an error from any layer of the core: a typed error
// above, a capacity refusal, a context error, a backend's error, or
// CodeInternal.
func CodeOf(err error) Code {
	c, _ := verdict(err)
	return c
}

// BackendVerdict returns the backend error that decides err's code: one no
// verdict of the router's own (a typed error of this package, a capacity
// refusal, a context error) wraps.
func BackendVerdict(err error) (*BackendError, bool) {
	_, be := verdict(err)
	return be, be != nil
}

// verdict is err's code and, when a backend's error decides it, that error.
func verdict(err error) (Code, *BackendError) {
	if err == nil {
		return CodeOK, nil
	}
	var (
		inv   *InvalidError
		unk   *UnknownModelError
		auth  *UnauthenticatedError
		deny  *DeniedError
		pool  *UnknownPoolError
		ref   *RefusedError
		ex    *ExhaustedError
		quota *capacity.QuotaError
		un    *UnavailableError
		be    *BackendError
	)
	switch {
	// The router's own verdicts first: a backend error wrapped inside one
	// (the last pool's failure inside "every eligible pool failed") does not
	// decide the code.
	case errors.As(err, &inv):
		return CodeInvalid, nil
	case errors.As(err, &unk):
		return CodeNotFound, nil
	case errors.As(err, &auth):
		return CodeUnauthenticated, nil
	case errors.As(err, &deny):
		return CodePermissionDenied, nil
	case errors.As(err, &pool):
		return CodeNotFound, nil
	case errors.As(err, &ref):
		return CodeFailedPrecondition, nil
	case errors.Is(err, capacity.ErrDuplicate):
		return CodeAlreadyExists, nil
	case errors.As(err, &ex), errors.As(err, &quota):
		return CodeExhausted, nil
	case errors.As(err, &un):
		return CodeUnavailable, nil
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadlineExceeded, nil
	case errors.Is(err, context.Canceled):
		return CodeCanceled, nil
	case errors.As(err, &be):
		return be.Code, be
	}
	return CodeInternal, nil
}

// RetryAfter is how long a client refused for want of capacity or quota
// should wait (0 for other errors).
func RetryAfter(err error) time.Duration {
	var ex *ExhaustedError
	if errors.As(err, &ex) {
		return max(ex.RetryAfter, time.Second)
	}
	var quota *capacity.QuotaError
	if errors.As(err, &quota) {
		return max(quota.RetryAfter, time.Second)
	}
	return 0
}

// PublicText is err's text as a client may read it. A backend's answer
// that decides the call is its Message, or "backend answered CODE (details
// are in the router's log)"; inside the router's own verdicts every
// backend's wording is replaced (a BackendError by "backend answered CODE",
// a network or URL error by "network error") and the router's words around
// them (pool names, attempts, what it waited for) kept. A duplicate request
// id gets a fixed sentence. The full error belongs in the router's log.
func PublicText(err error) string {
	if err == nil {
		return ""
	}
	if errors.Is(err, capacity.ErrDuplicate) && CodeOf(err) == CodeAlreadyExists {
		return "request_id is already in flight for this tenant; use a new request_id per call"
	}
	if be, ok := BackendVerdict(err); ok {
		// The backend's answer decides the call: its words for the client
		// when they are about the request or a shortage, else what it answered.
		if be.Message != "" {
			return be.Message
		}
		return "backend answered " + cmp.Or(be.Status, be.Code.String()) + " (details are in the router's log)"
	}
	msg := err.Error()
	var walk func(e error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if be, ok := e.(*BackendError); ok {
			if t := be.Error(); t != "" {
				msg = strings.ReplaceAll(msg, t, "backend answered "+cmp.Or(be.Status, be.Code.String()))
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

// maxEchoBytes bounds client input quoted back in an error.
const maxEchoBytes = 64

// Echo quotes client input for an error, cut to maxEchoBytes with its
// length said, so an error never echoes unbounded input.
func Echo(s string) string {
	if len(s) <= maxEchoBytes {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:maxEchoBytes], len(s))
}
