// Package managed holds what the adapters of managed cloud endpoints
// (Bedrock, Vertex AI) share: a pool's throttle back-off, its
// refused-credentials latch, its credential-refresh state and its load
// report, and a bounded quoting of the provider's messages for errors.
package managed

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
)

// DeniedHold is how long refused credentials keep a pool failing before
// one call may try again (unless the credentials change sooner).
const DeniedHold = 30 * time.Second

// Gate is one pool's state between calls. Safe for concurrent use.
type Gate struct {
	Pool          string
	MaxConcurrent int
	// BackoffMin is the first back-off after a throttle; it doubles on each
	// throttle that follows, up to BackoffMax, and resets on a success.
	BackoffMin, BackoffMax time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time

	inflight atomic.Int64

	mu             sync.Mutex
	throttledUntil time.Time
	backoff        time.Duration
	deniedUntil    time.Time
	credErr        error
	credOK         time.Time
}

func (g *Gate) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// Admit says whether a call may go to the provider now: RESOURCE_EXHAUSTED
// while the pool backs off after a throttle (a shortage: the router moves
// on and never holds it against the pool), UNAVAILABLE while refused
// credentials hold it. done must be called when the call ends.
func (g *Gate) Admit() (done func(), err error) {
	now := g.now()
	g.mu.Lock()
	until, denied := g.throttledUntil, g.deniedUntil
	g.mu.Unlock()
	if now.Before(denied) {
		return nil, status.Errorf(codes.Unavailable, "pool %s: the provider refused the pool's credentials; next try in %s", g.Pool, denied.Sub(now).Round(time.Second))
	}
	if now.Before(until) {
		return nil, status.Errorf(codes.ResourceExhausted, "pool %s: throttled by the provider, backing off for %s", g.Pool, until.Sub(now).Round(time.Millisecond))
	}
	g.inflight.Add(1)
	return func() { g.inflight.Add(-1) }, nil
}

// Throttled records a throttle and returns the back-off it starts.
func (g *Gate) Throttled() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.backoff == 0:
		g.backoff = g.BackoffMin
	default:
		g.backoff = min(2*g.backoff, g.BackoffMax)
	}
	g.throttledUntil = g.now().Add(g.backoff)
	return g.backoff
}

// Succeeded ends the back-off series and any credential refusal.
func (g *Gate) Succeeded() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.backoff = 0
	g.deniedUntil = time.Time{}
}

// Denied records refused credentials; it reports whether this starts a
// refusal (log it then, once).
func (g *Gate) Denied() (first bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	first = g.deniedUntil.IsZero()
	g.deniedUntil = g.now().Add(DeniedHold)
	return first
}

// CredentialsRefreshed records a background refresh: err nil clears a
// failure; changed (new credentials) lifts a credential refusal. It
// reports whether the failure state changed (log it then).
func (g *Gate) CredentialsRefreshed(err error, changed bool) (flipped bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	flipped = (g.credErr == nil) != (err == nil)
	g.credErr = err
	if err == nil {
		g.credOK = g.now()
		if changed {
			g.deniedUntil = time.Time{}
		}
	}
	return flipped
}

// LastRefresh is when credentials were last refreshed successfully.
func (g *Gate) LastRefresh() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.credOK
}

// Health is nil unless the last credential refresh failed or the provider
// refused the credentials (then the pool is unhealthy: the router's checks
// keep it out until it recovers).
func (g *Gate) Health() error {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.credErr != nil {
		return fmt.Errorf("credentials: %w", g.credErr)
	}
	if now.Before(g.deniedUntil) {
		return fmt.Errorf("the provider refused the pool's credentials")
	}
	return nil
}

// Load reports the calls in flight against the pool's concurrency, with no
// capacity while it backs off after a throttle: the policy shifts traffic
// the way it does from a pool that lost chips, and back when it recovers.
func (g *Gate) Load() (backends.Load, bool) {
	now := g.now()
	g.mu.Lock()
	throttled := now.Before(g.throttledUntil)
	g.mu.Unlock()
	l := backends.Load{Running: int(g.inflight.Load()), Capacity: g.MaxConcurrent, At: now}
	if throttled {
		l.Capacity = 0
	}
	return l, true
}

// maxQuoted bounds a provider's message quoted in an error.
const maxQuoted = 200

// Quote makes provider text safe to put in an error: one line, printable, bounded.
func Quote(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
	if len(s) > maxQuoted {
		cut := maxQuoted
		for cut > 0 && s[cut]&0xC0 == 0x80 {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
