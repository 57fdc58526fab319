package router

import (
	"context"
	"errors"
	"fmt"
	"github.com/switchyard-dev/switchyard/router/dispatch"
	"sync"
)

// errRevoked wraps the credential error of a stream a reload ended.
var errRevoked = errors.New("credential revoked by a config reload")

func isRevoked(err error) bool { return errors.Is(err, errRevoked) }

// Streams outlive the check of their credentials: an event watch
// (Operator.Watch: gRPC WatchEvents, the console's live stream), a streamed
// completion (gRPC or HTTP). Each registers how to check its credential again; a
// reload re-checks every open stream against the new config and ends those
// whose token or key it removed, with UNAUTHENTICATED (or PERMISSION_DENIED
// for a token whose role no longer allows the stream).

// credWatch is one open stream's credential check.
type credWatch struct {
	check  func(*dispatch.Generation) error
	cancel context.CancelCauseFunc
}

// credWatches are the open streams' credential checks. Safe for concurrent use.
type credWatches struct {
	mu sync.Mutex
	m  map[*credWatch]struct{}
}

// watchCredential returns ctx, ended with check's error (wrapped with
// errRevoked) when a reload's config fails check, and the function that
// ends the watch (call it when the stream ends). check is called on the
// reloading goroutine; it must not block.
func (s *Server) watchCredential(ctx context.Context, check func(*dispatch.Generation) error) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &credWatch{check: check, cancel: cancel}
	s.creds.mu.Lock()
	if s.creds.m == nil {
		s.creds.m = map[*credWatch]struct{}{}
	}
	s.creds.m[w] = struct{}{}
	s.creds.mu.Unlock()
	// A reload between the caller's own check and the registration above
	// is caught here.
	if err := check(s.disp.Generation()); err != nil {
		cancel(fmt.Errorf("%w: %w", errRevoked, err))
	}
	return ctx, func() {
		s.creds.mu.Lock()
		delete(s.creds.m, w)
		s.creds.mu.Unlock()
		cancel(nil)
	}
}

// revokeStale ends the open streams whose credential st no longer accepts.
func (s *Server) revokeStale(st *dispatch.Generation) int {
	s.creds.mu.Lock()
	ws := make([]*credWatch, 0, len(s.creds.m))
	for w := range s.creds.m {
		ws = append(ws, w)
	}
	s.creds.mu.Unlock()
	n := 0
	for _, w := range ws {
		if err := w.check(st); err != nil {
			w.cancel(fmt.Errorf("%w: %w", errRevoked, err))
			n++
		}
	}
	return n
}

// revokedCause is the error a stream ended by revokeStale reports (nil when
// ctx did not end that way).
func revokedCause(ctx context.Context) error {
	if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil && isRevoked(cause) {
		return cause
	}
	return nil
}
