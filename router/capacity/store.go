// Package capacity counts what every pool is doing: in-flight requests
// (leases), requests per minute and tokens per minute, per pool and per
// tenant. The Store interface has two implementations: Memory (the embedded
// default, one replica) and Redis (shared by every router replica; see
// redis.go). Resilient wraps a shared store and falls back to conservative
// local counting when it is unreachable.
package capacity

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Mode says how a replica counts.
type Mode int

const (
	// ModeLocal: in-memory counters, this replica alone.
	ModeLocal Mode = iota + 1
	// ModeShared: counters shared by every replica (Redis).
	ModeShared
	// ModeDegraded: the shared store is unreachable; each replica counts
	// locally against a conservative share of every limit.
	ModeDegraded
)

func (m Mode) String() string {
	switch m {
	case ModeLocal:
		return "local"
	case ModeShared:
		return "shared"
	case ModeDegraded:
		return "degraded"
	}
	return "unknown"
}

// Limits bound a pool or a tenant. Zero means unlimited.
type Limits struct {
	MaxConcurrent     int
	RequestsPerMinute int64
	TokensPerMinute   int64
}

// Reservation asks for one slot in a pool for one request.
type Reservation struct {
	// ID is the request id. A reservation is keyed by Tenant and ID: while
	// one holds a slot in a pool, another with the same Tenant and ID in that
	// pool gets ErrDuplicate (a reused request id never skips a limit). The
	// same ID under another tenant is another reservation.
	ID string
	// Pool and its effective limits (capacity overrides already applied).
	Pool   string
	Limits Limits
	// Tenant and its limits (RequestsPerMinute, TokensPerMinute); empty
	// Tenant means no tenant accounting.
	Tenant       string
	TenantLimits Limits
	// Tokens charged against tokens-per-minute budgets up front: input tokens
	// plus max_tokens. Settled to the real count on Release.
	Tokens int64
}

// Lease is a held slot. Pass it back to Release exactly once.
type Lease struct {
	ID     string
	Pool   string
	Tenant string
	// Tokens charged at Acquire.
	Tokens int64
	// Acquired is when the slot was taken (by the store's clock).
	Acquired time.Time
	// Nonce tells this acquisition apart from an earlier or later one of the
	// same Tenant and ID (set by the store; opaque).
	Nonce string
}

// leaseMember is the key a reservation is held under in a pool: tenant and
// request id, unambiguous whatever characters either holds.
func leaseMember(tenant, id string) string {
	return strconv.Itoa(len(tenant)) + ":" + tenant + ":" + id
}

// ErrPoolFull: the pool is at its max concurrent requests.
var ErrPoolFull = errors.New("pool at its concurrency limit")

// ErrDuplicate: a reservation with the same tenant and request id already
// holds a slot in the pool (a client reused a request id that is still in
// flight). Nothing was taken or charged.
var ErrDuplicate = errors.New("request id already in flight")

// ErrUnavailable: the store could not answer (shared store down and no
// fallback). Callers treat it as "no capacity known", never as a client fault.
var ErrUnavailable = errors.New("capacity store unavailable")

// QuotaError: a requests- or tokens-per-minute budget is spent.
type QuotaError struct {
	Scope      string // "pool" or "tenant"
	Name       string // pool or tenant name
	Kind       string // "requests_per_minute" or "tokens_per_minute"
	RetryAfter time.Duration
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("%s %q: %s budget spent, retry after %s", e.Scope, e.Name, e.Kind, e.RetryAfter.Round(time.Millisecond))
}

// PoolUsage is a pool's live counters.
type PoolUsage struct {
	InFlight int
	// RequestsLastMinute and TokensLastMinute as counted by the window.
	RequestsLastMinute int64
	TokensLastMinute   int64
}

// Status describes the store for the admin view and metrics.
type Status struct {
	Mode Mode
	// Replicas counted by heartbeats (1 for the memory store).
	Replicas int
	// LastError is the most recent store error, empty when healthy.
	LastError string
	// Since is when the current mode began.
	Since time.Time
}

// Store counts capacity. Implementations are safe for concurrent use.
//
// Acquire is on the request's critical path: it must cost at most one round
// trip to a shared backend and must honour ctx. Release must not block the
// caller on the network: implementations may queue and pipeline it. Every
// successful Acquire must be paired with exactly one Release, on every path.
type Store interface {
	// Acquire takes a slot for r, or returns ErrPoolFull, a *QuotaError,
	// ErrDuplicate (r's tenant and ID already hold a slot in the pool) or an
	// error wrapping ErrUnavailable.
	Acquire(ctx context.Context, r Reservation) (Lease, error)
	// Release returns the lease's slot and settles its tokens-per-minute
	// charge to usedTokens (input + output actually processed).
	Release(l Lease, usedTokens int64)
	// Usage returns live counters for the named pools.
	Usage(ctx context.Context, pools []string) (map[string]PoolUsage, error)
	// Status reports the counting mode.
	Status() Status
	// Close stops background work and releases resources. Leases still held are
	// released (best effort).
	Close() error
}

// Window is the length of the requests/tokens-per-minute windows.
const Window = time.Minute
