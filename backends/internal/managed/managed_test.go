package managed

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/internal/testwait"
)

// TestMain fails the package's tests when one of them leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// The throttle back-off doubles from BackoffMin to BackoffMax, refuses
// calls locally as a shortage while it runs, reports no capacity, and a
// success resets it.
func TestGateThrottleBackoff(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	g := &Gate{Pool: "p", MaxConcurrent: 4, BackoffMin: time.Second, BackoffMax: 3 * time.Second, Now: clk.Now}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second} {
		if got := g.Throttled(); got != want {
			t.Fatalf("throttle %d: back-off %s, want %s", i, got, want)
		}
	}
	if _, err := g.Admit(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("during the back-off: %v, want RESOURCE_EXHAUSTED", err)
	}
	if l, ok := g.Load(); !ok || l.Capacity != 0 {
		t.Fatalf("load during the back-off %+v", l)
	}
	clk.add(3 * time.Second)
	done, err := g.Admit()
	if err != nil {
		t.Fatalf("after the back-off: %v", err)
	}
	if l, _ := g.Load(); l.Capacity != 4 || l.Running != 1 {
		t.Fatalf("load with one call in flight %+v", l)
	}
	done()
	g.Succeeded()
	if got := g.Throttled(); got != time.Second {
		t.Fatalf("after a success the back-off restarts at %s, got %s", time.Second, got)
	}
}

// Refused credentials hold the pool (UNAVAILABLE, unhealthy) for
// DeniedHold, or until credentials change; the first refusal is reported
// once for the log.
func TestGateDeniedHold(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	g := &Gate{Pool: "p", MaxConcurrent: 1, BackoffMin: time.Second, BackoffMax: time.Second, Now: clk.Now}
	if !g.Denied() || g.Denied() {
		t.Fatal("want the first refusal reported once")
	}
	if _, err := g.Admit(); status.Code(err) != codes.Unavailable || g.Health() == nil {
		t.Fatalf("held: %v, health %v", err, g.Health())
	}
	g.CredentialsRefreshed(nil, false)
	if g.Health() == nil {
		t.Fatal("the same credentials lifted the refusal")
	}
	g.CredentialsRefreshed(nil, true)
	if _, err := g.Admit(); err != nil || g.Health() != nil {
		t.Fatalf("new credentials: %v, health %v", err, g.Health())
	}
	g.Denied()
	clk.add(DeniedHold)
	if done, err := g.Admit(); err != nil {
		t.Fatalf("after the hold: %v", err)
	} else {
		done()
	}
	if flipped := g.CredentialsRefreshed(errors.New("sts down"), false); !flipped || g.Health() == nil {
		t.Fatal("a failing refresh did not make the pool unhealthy")
	}
}

// The refresher fetches at start, keeps a token until it expires, keeps the
// last good one through a failing fetch, bounds its error to one line, and
// lets the first calls wait for the first fetch.
func TestRefresher(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	var mu sync.Mutex
	fail := false
	n := 0
	r := &Refresher{Pool: "p", Every: 10 * time.Millisecond, Now: clk.Now, Gate: &Gate{Pool: "p"},
		Fetch: func(ctx context.Context) (Token, error) {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				return Token{}, errors.New("refused:\nsecond line")
			}
			n++
			return Token{Value: "tok-" + strings.Repeat("x", n%2+1), Expiry: clk.Now().Add(time.Minute)}, nil
		}}
	if _, err := r.Bearer(); err == nil {
		t.Fatal("a token before start")
	}
	r.Start(context.Background())
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.WaitFirst(ctx)
	if tok, err := r.Bearer(); err != nil || !strings.HasPrefix(tok, "tok-") {
		t.Fatalf("after the first fetch: %q %v", tok, err)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	testwait.For(t, 5*time.Second, "the failing fetch seen by the gate", func() bool { return r.Gate.Health() != nil })
	if _, err := r.Bearer(); err != nil {
		t.Fatalf("a valid token dropped after a failed fetch: %v", err)
	}
	clk.add(time.Minute)
	_, err := r.Bearer()
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("expired token: %v, want a one-line error", err)
	}
	if r.Fetched() < 1 {
		t.Fatalf("fetched %d", r.Fetched())
	}
}
