package grpccode

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/router/dispatch"
)

// Every core code has its own gRPC code, and a backend's status reads back
// as the core code it came from.
func TestTableRoundTrips(t *testing.T) {
	seen := map[codes.Code]dispatch.Code{}
	for c := dispatch.CodeOK; c <= dispatch.CodeInternal; c++ {
		g := GRPC(c)
		if prev, dup := seen[g]; dup {
			t.Errorf("%v and %v both map to %v", prev, c, g)
		}
		seen[g] = c
		if c == dispatch.CodeOK {
			continue
		}
		var be *dispatch.BackendError
		if err := Backend(status.Error(g, "x")); !errors.As(err, &be) || be.Code != c || be.Status != g.String() {
			t.Errorf("Backend(%v) = %#v, want code %v", g, err, c)
		}
	}
	if GRPC(dispatch.Code(99)) != codes.Internal {
		t.Error("an unknown core code is not Internal")
	}
}

func TestBackend(t *testing.T) {
	var be *dispatch.BackendError
	// A code the core has no name for is a failure, its name kept.
	if err := Backend(status.Error(codes.Aborted, "x")); !errors.As(err, &be) || be.Code != dispatch.CodeInternal || be.Status != "Aborted" || be.Message != "" {
		t.Fatalf("ABORTED: %#v", err)
	}
	// A refusal of the request keeps the words a client may read.
	if err := Backend(status.Error(codes.InvalidArgument, "messages[0].content: empty")); !errors.As(err, &be) || be.Message != "messages[0].content: empty" {
		t.Fatalf("INVALID_ARGUMENT: %#v", err)
	}
	// A failure's words (which may name addresses) are not kept for clients.
	if err := Backend(status.Error(codes.Unavailable, "dial tcp 10.0.0.1:80")); !errors.As(err, &be) || be.Message != "" {
		t.Fatalf("UNAVAILABLE: %#v", err)
	}
	// Anything but a status passes as it is.
	for _, err := range []error{nil, context.Canceled, errors.New("plain")} {
		if got := Backend(err); got != err {
			t.Errorf("Backend(%v) = %v", err, got)
		}
	}
}

func TestOf(t *testing.T) {
	for _, c := range []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{&dispatch.ExhaustedError{Err: errors.New("full")}, codes.ResourceExhausted},
		{fmt.Errorf("x: %w", &dispatch.DeniedError{Reason: "r"}), codes.PermissionDenied},
		{&dispatch.UnknownPoolError{Pool: `"p"`}, codes.NotFound},
		{&dispatch.RefusedError{Reason: "r"}, codes.FailedPrecondition},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		// A backend's own code, also one the core has no name for.
		{&dispatch.UnavailableError{Err: fmt.Errorf("every pool failed: %w", Backend(status.Error(codes.Aborted, "x")))}, codes.Unavailable},
		{Backend(status.Error(codes.Aborted, "x")), codes.Aborted},
		// A backend error that is not a status: the table's code.
		{&dispatch.BackendError{Code: dispatch.CodeUnavailable, Err: errors.New("3 embeddings for 2 inputs")}, codes.Unavailable},
		// A status the core has no code for keeps its own.
		{status.Error(codes.DataLoss, "x"), codes.DataLoss},
		{errors.New("plain"), codes.Internal},
	} {
		if got := Of(c.err); got != c.want {
			t.Errorf("Of(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if Name(&dispatch.ExhaustedError{Err: errors.New("full")}) != "RESOURCE_EXHAUSTED" || Name(nil) != "OK" {
		t.Error("Name")
	}
}
