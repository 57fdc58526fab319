package registry

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

func TestRegisterGetNames(t *testing.T) {
	r := New[int]("test: part")
	if got := r.Names(); len(got) != 0 {
		t.Fatalf("empty registry Names = %v, want none", got)
	}
	r.Register("zeta", 3)
	r.Register("alpha", 1)
	r.Register("mid", 2)
	if got, want := r.Names(), []string{"alpha", "mid", "zeta"}; !slices.Equal(got, want) {
		t.Fatalf("Names = %v, want %v (sorted)", got, want)
	}
	if v, ok := r.Get("mid"); !ok || v != 2 {
		t.Fatalf("Get(mid) = %d, %v; want 2, true", v, ok)
	}
	if v, ok := r.Get("missing"); ok || v != 0 {
		t.Fatalf("Get(missing) = %d, %v; want zero, false", v, ok)
	}
	// The slice is the caller's: changing it does not change the registry.
	names := r.Names()
	names[0] = "changed"
	if got := r.Names()[0]; got != "alpha" {
		t.Fatalf("Names()[0] after the caller changed its copy = %q, want alpha", got)
	}
}

func TestDuplicatePanicsNamingKindAndName(t *testing.T) {
	for _, tc := range []struct {
		r    *Registry[string]
		want string
	}{
		{New[string]("backends: adapter"), `backends: adapter "x" registered twice`},
		{&Registry[string]{}, `registry: "x" registered twice`},
	} {
		tc.r.Register("x", "first")
		func() {
			defer func() {
				got := recover()
				if got != tc.want {
					t.Errorf("panic = %v, want %q", got, tc.want)
				}
			}()
			tc.r.Register("x", "second")
		}()
		if v, _ := tc.r.Get("x"); v != "first" {
			t.Errorf("after the refused duplicate Get(x) = %q, want the first value", v)
		}
	}
}

func TestZeroValueIsUsable(t *testing.T) {
	var r Registry[int]
	if _, ok := r.Get("a"); ok {
		t.Fatal("zero registry has a value")
	}
	r.Register("a", 1)
	if v, ok := r.Get("a"); !ok || v != 1 {
		t.Fatalf("Get(a) = %d, %v; want 1, true", v, ok)
	}
}

// Run under -race: concurrent Register, Get and Names neither race nor lose
// a registration.
func TestConcurrentUse(t *testing.T) {
	r := New[int]("test")
	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			r.Register(fmt.Sprintf("p%02d", i), i)
		}()
		go func() {
			defer wg.Done()
			r.Get(fmt.Sprintf("p%02d", i))
			_ = r.Names()
		}()
	}
	wg.Wait()
	names := r.Names()
	if len(names) != n {
		t.Fatalf("%d names after %d concurrent registrations", len(names), n)
	}
	for i := range n {
		if v, ok := r.Get(fmt.Sprintf("p%02d", i)); !ok || v != i {
			t.Fatalf("Get(p%02d) = %d, %v", i, v, ok)
		}
	}
}
