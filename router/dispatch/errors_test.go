package dispatch

import (
	"errors"
	"fmt"
	"testing"
)

// The operator API's refusals have their own codes, also when wrapped.
func TestOperatorErrorCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		code Code
		text string
	}{
		{&DeniedError{Reason: "token \"v\" has role viewer"}, CodePermissionDenied, "permission denied: token \"v\" has role viewer"},
		{&UnknownPoolError{Pool: Echo("p1")}, CodeNotFound, "unknown pool \"p1\" (see ListPools)"},
		{&RefusedError{Reason: "draining p1: no headroom"}, CodeFailedPrecondition, "refused: draining p1: no headroom"},
		{fmt.Errorf("revoked: %w", &DeniedError{Reason: "r"}), CodePermissionDenied, "revoked: permission denied: r"},
		{fmt.Errorf("revoked: %w", &UnauthenticatedError{Reason: "unknown token"}), CodeUnauthenticated, "revoked: unauthenticated: unknown token"},
		{errors.New("plain"), CodeInternal, "plain"},
	} {
		if got := CodeOf(c.err); got != c.code {
			t.Errorf("CodeOf(%v) = %v, want %v", c.err, got, c.code)
		}
		if got := PublicText(c.err); got != c.text {
			t.Errorf("PublicText(%v) = %q, want %q", c.err, got, c.text)
		}
	}
}
