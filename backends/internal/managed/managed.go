// Package managed holds what the adapters of managed cloud endpoints
// (Bedrock, Vertex AI) share: a pool's throttle back-off, its
// refused-credentials latch, its credential-refresh state and its load
// report, and a bounded quoting of the provider's messages for errors.
package managed

import (
	"context"
	"fmt"
	"log/slog"
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

// Token is a bearer token and when it stops being valid.
type Token struct {
	Value  string
	Expiry time.Time // zero: unknown (valid until a refresh replaces it)
}

// Refresher keeps one pool's bearer token fresh off the request path: it
// fetches at Start, then every Every, and the fetch function decides
// whether a new token is due (the cloud SDKs' caches renew ahead of
// expiry). Bearer never blocks. A failed fetch keeps the previous token
// while it is valid and fails the pool's health (Gate) until one succeeds.
type Refresher struct {
	Pool  string
	Every time.Duration
	// Fetch returns the current token, renewing it when due. It must honour ctx.
	Fetch func(ctx context.Context) (Token, error)
	// Gate receives the refresh results (health); may be nil.
	Gate *Gate
	Log  *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time

	mu      sync.Mutex
	tok     Token
	err     error
	fetched int
	stop    context.CancelFunc
	done    chan struct{}
	first   chan struct{} // closed after the first fetch ends
}

// FetchTimeout bounds one token fetch.
const FetchTimeout = 30 * time.Second

func (r *Refresher) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Start runs the refresh loop until Close. ctx carries values the fetch
// needs (not its end: Close ends the loop).
func (r *Refresher) Start(ctx context.Context) {
	ctx, r.stop = context.WithCancel(context.WithoutCancel(ctx))
	r.done, r.first = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.Every)
		defer t.Stop()
		r.refresh(ctx)
		close(r.first)
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			r.refresh(ctx)
		}
	}()
}

// WaitFirst waits (within ctx) for the first fetch after Start to end, so
// the calls of a pool that has just started do not fail for want of a
// token; later calls never wait.
func (r *Refresher) WaitFirst(ctx context.Context) {
	if r.first == nil {
		return
	}
	select {
	case <-r.first:
	case <-ctx.Done():
	}
}

func (r *Refresher) refresh(ctx context.Context) {
	fctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	tok, err := r.Fetch(fctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	if err == nil && tok.Value == "" {
		err = fmt.Errorf("empty token")
	}
	r.mu.Lock()
	changed := err == nil && tok.Value != r.tok.Value
	if err == nil {
		r.tok = tok
		if changed {
			r.fetched++
		}
	}
	r.err = err
	r.mu.Unlock()
	if r.Gate != nil && r.Gate.CredentialsRefreshed(err, changed) && r.Log != nil {
		if err != nil {
			r.Log.Error("token refresh failed: the pool fails its health checks until it works", "pool", r.Pool, "err", Quote(err.Error()))
		} else {
			r.Log.Info("token refreshed", "pool", r.Pool)
		}
	}
}

// Bearer is the current token, or why there is none (never blocks).
func (r *Refresher) Bearer() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tok.Value == "" || (!r.tok.Expiry.IsZero() && !r.now().Before(r.tok.Expiry)) {
		if r.err != nil {
			// One bounded line: the SDKs' messages span lines and quote responses.
			return "", fmt.Errorf("no valid token: %s", Quote(r.err.Error()))
		}
		return "", fmt.Errorf("no valid token yet")
	}
	return r.tok.Value, nil
}

// Fetched counts the distinct tokens obtained so far.
func (r *Refresher) Fetched() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetched
}

// Close stops the loop and waits for it.
func (r *Refresher) Close() {
	if r.stop != nil {
		r.stop()
		<-r.done
	}
}
