package capacity

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
)

// Memory is the in-process Store: exact counters for one replica. It is the
// embedded default and the fallback Resilient uses while Redis is down.
// Safe for concurrent use; no method blocks on anything but a mutex.
type Memory struct {
	clock clock.Clock
	mode  Mode
	since time.Time

	mu      sync.Mutex
	nonce   uint64
	pools   map[string]*memCounters
	tenants map[string]*memCounters
}

type memCounters struct {
	leases   map[string]string // lease member (tenant + request id) -> nonce
	requests windowCount
	tokens   windowCount
}

var _ Store = (*Memory)(nil)

// MemoryOptions configure a Memory store.
type MemoryOptions struct {
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Mode reported by Status; ModeLocal by default (Resilient sets ModeDegraded on its fallback).
	Mode Mode
}

// NewMemory returns an empty in-memory store.
func NewMemory(o MemoryOptions) *Memory {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Mode == 0 {
		o.Mode = ModeLocal
	}
	return &Memory{clock: o.Clock, mode: o.Mode, since: o.Clock.Now(), pools: map[string]*memCounters{}, tenants: map[string]*memCounters{}}
}

func counters(m map[string]*memCounters, name string) *memCounters {
	c, ok := m[name]
	if !ok {
		c = &memCounters{leases: map[string]string{}}
		m[name] = c
	}
	return c
}

// Acquire implements Store.
func (m *Memory) Acquire(ctx context.Context, r Reservation) (Lease, error) {
	if err := ctx.Err(); err != nil {
		return Lease{}, err
	}
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	p := counters(m.pools, r.Pool)
	member := leaseMember(r.Tenant, r.ID)
	if _, dup := p.leases[member]; dup {
		return Lease{}, ErrDuplicate
	}
	if r.Limits.MaxConcurrent > 0 && len(p.leases) >= r.Limits.MaxConcurrent {
		return Lease{}, ErrPoolFull
	}
	// Check every budget before charging any, so a refusal charges nothing.
	if err := checkWindows(now, "pool", r.Pool, p, r.Limits, r.Tokens); err != nil {
		return Lease{}, err
	}
	var t *memCounters
	if r.Tenant != "" {
		t = counters(m.tenants, r.Tenant)
		if err := checkWindows(now, "tenant", r.Tenant, t, r.TenantLimits, r.Tokens); err != nil {
			return Lease{}, err
		}
		t.requests.admit(now, 1, 0)
		t.tokens.admit(now, r.Tokens, 0)
	}
	p.requests.admit(now, 1, 0)
	p.tokens.admit(now, r.Tokens, 0)
	m.nonce++
	lease := Lease{ID: r.ID, Pool: r.Pool, Tenant: r.Tenant, Tokens: r.Tokens, Acquired: now, Nonce: strconv.FormatUint(m.nonce, 10)}
	p.leases[member] = lease.Nonce
	return lease, nil
}

func checkWindows(now time.Time, scope, name string, c *memCounters, l Limits, tokens int64) error {
	if l.RequestsPerMinute > 0 && c.requests.estimate(now)+1 > l.RequestsPerMinute {
		_, after := c.requests.admit(now, 1, l.RequestsPerMinute)
		return &QuotaError{Scope: scope, Name: name, Kind: "requests_per_minute", RetryAfter: after}
	}
	if l.TokensPerMinute > 0 && c.tokens.estimate(now)+tokens > l.TokensPerMinute {
		_, after := c.tokens.admit(now, tokens, l.TokensPerMinute)
		return &QuotaError{Scope: scope, Name: name, Kind: "tokens_per_minute", RetryAfter: after}
	}
	return nil
}

// Release implements Store.
func (m *Memory) Release(l Lease, usedTokens int64) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pools[l.Pool]
	member := leaseMember(l.Tenant, l.ID)
	if !ok || l.Nonce == "" || p.leases[member] != l.Nonce {
		return // released twice, or never acquired here
	}
	delete(p.leases, member)
	delta := usedTokens - l.Tokens
	p.tokens.adjust(now, l.Acquired, delta)
	if l.Tenant != "" {
		counters(m.tenants, l.Tenant).tokens.adjust(now, l.Acquired, delta)
	}
}

// Usage implements Store.
func (m *Memory) Usage(ctx context.Context, pools []string) (map[string]PoolUsage, error) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]PoolUsage, len(pools))
	for _, name := range pools {
		p, ok := m.pools[name]
		if !ok {
			out[name] = PoolUsage{}
			continue
		}
		out[name] = PoolUsage{InFlight: len(p.leases), RequestsLastMinute: p.requests.estimate(now), TokensLastMinute: p.tokens.estimate(now)}
	}
	return out, nil
}

// Status implements Store.
func (m *Memory) Status() Status { return Status{Mode: m.mode, Replicas: 1, Since: m.since} }

// Close implements Store.
func (m *Memory) Close() error { return nil }
