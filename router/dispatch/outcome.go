package dispatch

import (
	"context"
	"errors"
	"time"

	"github.com/switchyard-dev/switchyard/router/policy"
)

// Outcome classifies an attempt's end for retries and outlier detection.
type Outcome int

// The outcomes.
const (
	OutcomeOK          Outcome = iota
	OutcomeClientFault         // the request is at fault: never retried, never counted against the pool
	OutcomeShortage            // the pool is full or over quota: shift traffic, never eject
	OutcomeFailure             // a real failure: retry elsewhere, feeds outlier ejection
	OutcomeCallerGone          // the client's deadline passed or it cancelled
	Outcomes                   // the number of outcomes
)

var outcomeNames = [Outcomes]string{"ok", "client_fault", "shortage", "failure", "caller_gone"}

func (o Outcome) String() string {
	if o >= 0 && o < Outcomes {
		return outcomeNames[o]
	}
	return "unknown"
}

func (o Outcome) policy() policy.Outcome {
	switch o {
	case OutcomeOK:
		return policy.OutcomeOK
	case OutcomeShortage:
		return policy.OutcomeShortage
	case OutcomeFailure:
		return policy.OutcomeFailure
	default:
		return policy.OutcomeNeutral
	}
}

// classify is the outcome of an attempt that returned err.
func classify(ctx context.Context, err error) Outcome {
	if err == nil {
		return OutcomeOK
	}
	if ctx.Err() != nil || deadlinePassed(ctx) {
		return OutcomeCallerGone
	}
	switch CodeOf(err) {
	case CodeInvalid, CodeNotFound, CodeUnauthenticated, CodePermissionDenied, CodeFailedPrecondition, CodeOutOfRange, CodeAlreadyExists:
		return OutcomeClientFault
	case CodeExhausted:
		return OutcomeShortage
	case CodeCanceled:
		var be *BackendError
		if errors.Is(err, context.Canceled) && !errors.As(err, &be) {
			return OutcomeCallerGone
		}
		return OutcomeFailure
	default: // Unavailable, DeadlineExceeded of an attempt, Internal, Unknown, Aborted, DataLoss...
		return OutcomeFailure
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
