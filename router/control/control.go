// Package control keeps operator changes (weights, drains, capacity
// overrides, the active policy) and their audit trail. With the Redis store
// every replica sees a change within a second: the writer publishes on a
// channel and every replica also re-reads the state periodically, so a missed
// message heals by itself. With the in-memory store changes apply to the one
// replica.
package control

import (
	"context"
	"errors"
	"maps"
	"time"
)

// Override replaces a pool's max concurrent requests until Expires (zero: none).
type Override struct {
	Limit   int       `json:"limit"`
	Expires time.Time `json:"expires,omitzero"`
}

// Active reports whether the override applies at now.
func (o Override) Active(now time.Time) bool { return o.Expires.IsZero() || now.Before(o.Expires) }

// State is every operator change in force. The zero value means "no changes".
type State struct {
	Weights   map[string]float64  `json:"weights,omitempty"`
	Drained   map[string]bool     `json:"drained,omitempty"`
	Overrides map[string]Override `json:"overrides,omitempty"`
	// Policy is the routing policy chosen at run time ("" = the config's).
	Policy string `json:"policy,omitempty"`
	// Version increases with every update.
	Version int64 `json:"version"`
	// Actor is who made the latest update (an admin token's name), so every
	// replica's watch events can say who changed a pool.
	Actor string `json:"actor,omitempty"`
}

// Clone returns a deep copy.
func (s State) Clone() State {
	c := s
	c.Weights = maps.Clone(s.Weights)
	c.Drained = maps.Clone(s.Drained)
	c.Overrides = maps.Clone(s.Overrides)
	if c.Weights == nil {
		c.Weights = map[string]float64{}
	}
	if c.Drained == nil {
		c.Drained = map[string]bool{}
	}
	if c.Overrides == nil {
		c.Overrides = map[string]Override{}
	}
	return c
}

// Entry is one audited change.
type Entry struct {
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Pool   string    `json:"pool,omitempty"`
	Before string    `json:"before"`
	After  string    `json:"after"`
}

// Store persists State and the audit trail. Implementations are safe for
// concurrent use; every method honours ctx.
type Store interface {
	// Get returns the current state.
	Get(ctx context.Context) (State, error)
	// Update applies fn to the current state atomically (fn may run more
	// than once under contention) and returns the new state. When fn
	// returns an error nothing changes.
	Update(ctx context.Context, fn func(*State) error) (State, error)
	// Watch calls onChange after every change by any replica (possibly late
	// or more than once) until ctx ends. It blocks; run it in a goroutine.
	Watch(ctx context.Context, onChange func())
	// AppendAudit records e.
	AppendAudit(ctx context.Context, e Entry) error
	// Audit returns up to limit entries, newest first.
	Audit(ctx context.Context, limit int) ([]Entry, error)
}

// ErrNoChange may be returned by an Update fn to leave the state untouched.
var ErrNoChange = errors.New("no change")
