// Package registry is the one table of parts registered by name that the
// pluggable layers share: backends.Registry keeps its adapter factories in
// one, policy.Registry its policies. Parts are registered explicitly by the
// program that wires them, never from init().
//
// A Registry is safe for concurrent use: Register, Get and Names may run from
// any goroutine at once. It imports nothing of the project.
package registry

import (
	"fmt"
	"sort"
	"sync"
)

// Registry maps names to values of type T. The zero value is an empty
// registry ready to use; New gives one whose duplicate-name panic says what
// kind of part it holds.
type Registry[T any] struct {
	kind  string
	mu    sync.RWMutex
	items map[string]T
}

// New returns an empty registry. kind names what it holds in the panic for a
// name registered twice ("backends: adapter", "policy").
func New[T any](kind string) *Registry[T] {
	return &Registry[T]{kind: kind, items: map[string]T{}}
}

// Register adds v under name. Registering a name twice is a wiring bug and
// panics with "<kind> "<name>" registered twice".
func (r *Registry[T]) Register(name string, v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.items[name]; dup {
		kind := r.kind
		if kind == "" {
			kind = "registry:"
		}
		panic(fmt.Sprintf("%s %q registered twice", kind, name))
	}
	if r.items == nil {
		r.items = map[string]T{}
	}
	r.items[name] = v
}

// Get returns the value registered under name and whether there is one.
func (r *Registry[T]) Get(name string) (T, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok := r.items[name]
	return v, ok
}

// Names lists the registered names, sorted. The slice is the caller's.
func (r *Registry[T]) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.items))
	for n := range r.items {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
