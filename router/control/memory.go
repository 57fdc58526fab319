package control

import (
	"context"
	"errors"
	"sync"
)

// Memory is the single-replica Store. Safe for concurrent use.
type Memory struct {
	mu      sync.Mutex
	state   State
	audit   []Entry
	max     int
	changed chan struct{} // closed and replaced on every change
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty store keeping at most maxAudit entries (0 = 10000).
func NewMemory(maxAudit int) *Memory {
	if maxAudit <= 0 {
		maxAudit = 10000
	}
	return &Memory{state: State{}.Clone(), max: maxAudit, changed: make(chan struct{})}
}

func (m *Memory) Get(context.Context) (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Clone(), nil
}

func (m *Memory) Update(_ context.Context, fn func(*State) error) (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := m.state.Clone()
	if err := fn(&next); err != nil {
		if errors.Is(err, ErrNoChange) {
			return m.state.Clone(), nil
		}
		return m.state.Clone(), err
	}
	next.Version = m.state.Version + 1
	m.state = next
	close(m.changed)
	m.changed = make(chan struct{})
	return next.Clone(), nil
}

func (m *Memory) Watch(ctx context.Context, onChange func()) {
	for {
		m.mu.Lock()
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-ch:
			onChange()
		}
	}
}

func (m *Memory) AppendAudit(_ context.Context, e Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.audit = append(m.audit, e)
	if len(m.audit) > m.max {
		m.audit = m.audit[len(m.audit)-m.max:]
	}
	return nil
}

func (m *Memory) Audit(_ context.Context, limit int) ([]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.audit)
	if limit <= 0 || limit > n {
		limit = n
	}
	out := make([]Entry, 0, limit)
	for i := n - 1; i >= n-limit; i-- {
		out = append(out, m.audit[i])
	}
	return out, nil
}
