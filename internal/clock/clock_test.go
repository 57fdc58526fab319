package clock

import (
	"testing"
	"time"
)

func TestFakeFiresInOrderOnlyWhenDue(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	a, b := f.After(2*time.Second), f.After(time.Second)
	if now := <-f.After(0); !now.Equal(time.Unix(0, 0)) {
		t.Fatalf("After(0) = %v", now)
	}
	if !f.WaitForWaiters(2, time.Second) || f.Waiters() != 2 {
		t.Fatal("waiters not registered")
	}
	f.Advance(time.Second)
	select {
	case <-b:
	default:
		t.Fatal("1s waiter not fired")
	}
	select {
	case <-a:
		t.Fatal("2s waiter fired early")
	default:
	}
	f.Advance(time.Second)
	if got := <-a; !got.Equal(time.Unix(2, 0)) {
		t.Fatalf("fired at %v", got)
	}
	if f.WaitForWaiters(1, 10*time.Millisecond) {
		t.Fatal("phantom waiter")
	}
}
