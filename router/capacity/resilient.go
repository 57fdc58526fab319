package capacity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
)

// Resilient wraps a shared Store (Redis) with a circuit breaker and a local
// fallback, so that capacity accounting never makes a client call fail
// because Redis blinked.
//
// Closed breaker (ModeShared): every Acquire goes to the shared store under a
// short timeout (Timeout, 150 ms by default). A call that runs out of time
// while no other shared call was answered either (the store is stalled, not
// one call slow) opens the breaker at once and is answered by the local
// fallback (the client
// waits at most Timeout: a stalled shared store never holds calls longer, and
// the shared store releases whatever it grants after the caller left). A call
// that fails fast (connection refused, an error reply) is refused as pool full
// while the breaker stays closed, since the other replicas may still count in
// the shared store with the full limit; FailureThreshold consecutive failures
// open the breaker.
//
// Open breaker (ModeDegraded): Acquire never touches the network. It is
// answered by a Memory store in which every limit (max concurrent, requests
// and tokens per minute, pool and tenant) is divided by the last replica count
// seen in Redis heartbeats, rounded up, at least 1: each replica takes a
// conservative share. A background probe pings the shared store every
// ProbeEvery (half-open); the first success closes the breaker and Acquire
// goes back to shared counting.
//
// Leases remember where they came from: a lease taken locally is released to
// the local store, a lease taken from Redis to Redis — even while Redis is
// down: the Redis store queues the release and retries it until it lands
// (and stops renewing the lease at once, so its TTL reclaims the slot in any
// case). Across a transition each replica counts the leases it still holds
// from the other side: leases taken from Redis before it went away are
// subtracted from the local share, and leases taken in degraded mode that are
// still running when the breaker closes are subtracted from each pool's
// concurrency limit before asking Redis. So one replica never holds more than
// its share plus what it already held; the pool-wide limit is exact again once
// the transition's leases have ended (see docs/capacity.md).
//
// Safe for concurrent use.
type Resilient struct {
	shared    Store
	local     *Memory
	clock     clock.Clock
	timeout   time.Duration
	threshold int
	probe     time.Duration
	log       *slog.Logger
	onChange  func(from, to Mode)

	mu         sync.Mutex
	mode       Mode
	since      time.Time
	failures   int
	answered   time.Time // wall clock of the last shared answer (monotonic; see ResilientOptions.Clock)
	lastErr    string
	replicas   int                 // frozen share divisor while degraded
	owners     map[leaseKey]*owner // who issued each held lease
	localHeld  map[string]int      // pool -> leases held in the local store
	sharedHeld map[string]int      // pool -> leases held in the shared store

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

var _ Store = (*Resilient)(nil)

// ResilientOptions configure a Resilient store.
type ResilientOptions struct {
	// Shared is the store every replica shares (required), usually *Redis.
	// If it has a Ping(ctx) error method the probe uses it, else Usage.
	Shared Store
	// Clock for the local fallback and the probe period; defaults to the
	// wall clock. Telling a stalled store from one slow call (was any shared
	// call answered after this one was asked?) compares real network answer
	// times, bounded by the real Timeout: it reads the wall clock.
	Clock clock.Clock
	// Timeout bounds every shared call on the request path (default 150ms).
	Timeout time.Duration
	// FailureThreshold consecutive failures open the breaker (default 3).
	FailureThreshold int
	// ProbeEvery is the half-open probe period while degraded (default 500ms).
	ProbeEvery time.Duration
	// Logger defaults to slog.Default(). Mode changes are logged at Warn/Info.
	Logger *slog.Logger
	// OnModeChange is called after every mode change (shared <-> degraded),
	// outside any lock, from the goroutine that caused it; it must not block.
	OnModeChange func(from, to Mode)
}

type leaseKey struct{ pool, member string }

type owner struct{ shared, local int }

// NewResilient wraps o.Shared and starts the background probe.
func NewResilient(o ResilientOptions) (*Resilient, error) {
	if o.Shared == nil {
		return nil, errors.New("resilient capacity store: no shared store")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Timeout <= 0 {
		o.Timeout = 150 * time.Millisecond
	}
	if o.FailureThreshold <= 0 {
		o.FailureThreshold = 3
	}
	if o.ProbeEvery <= 0 {
		o.ProbeEvery = 500 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	r := &Resilient{
		shared:     o.Shared,
		local:      NewMemory(MemoryOptions{Clock: o.Clock, Mode: ModeDegraded}),
		clock:      o.Clock,
		timeout:    o.Timeout,
		threshold:  o.FailureThreshold,
		probe:      o.ProbeEvery,
		log:        o.Logger.With("component", "capacity", "store", "resilient"),
		onChange:   o.OnModeChange,
		mode:       ModeShared,
		since:      o.Clock.Now(),
		replicas:   1,
		owners:     map[leaseKey]*owner{},
		localHeld:  map[string]int{},
		sharedHeld: map[string]int{},
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	go r.probeLoop()
	return r, nil
}

// Acquire implements Store. It returns ErrPoolFull, a *QuotaError, the
// caller's context error, or a lease; never ErrUnavailable.
func (r *Resilient) Acquire(ctx context.Context, res Reservation) (Lease, error) {
	if err := ctx.Err(); err != nil {
		return Lease{}, fmt.Errorf("acquire: %w", err)
	}
	r.mu.Lock()
	mode, localHeld := r.mode, r.localHeld[res.Pool]
	r.mu.Unlock()
	if mode == ModeShared {
		sres := res
		if localHeld > 0 && sres.Limits.MaxConcurrent > 0 {
			// Leases taken while degraded still run and Redis does not see them.
			if sres.Limits.MaxConcurrent -= localHeld; sres.Limits.MaxConcurrent <= 0 {
				return Lease{}, ErrPoolFull
			}
		}
		cctx, cancel := context.WithTimeout(ctx, r.timeout)
		asked := time.Now()
		l, err := r.shared.Acquire(cctx, sres)
		timedOut := cctx.Err() != nil
		cancel()
		if err == nil || !errors.Is(err, ErrUnavailable) && !timedOut && ctx.Err() == nil {
			// An answer: a lease, pool full, a spent budget or a bad request.
			r.succeeded()
			if err == nil {
				r.track(l, true)
			}
			return l, err
		}
		if cerr := ctx.Err(); cerr != nil {
			return Lease{}, fmt.Errorf("acquire: %w", cerr) // the caller gave up; not Redis's fault
		}
		if r.failed(err, timedOut && !r.answeredSince(asked)) == ModeShared {
			// The breaker is not open yet: the other replicas still count in
			// Redis with the full limit, so a slot counted only here could push
			// the pool past it. Refuse this one (the router tries another pool
			// or waits); once the breaker opens every replica counts its share.
			return Lease{}, fmt.Errorf("%w: shared counter did not answer (%v); not admitting on local counts until the breaker opens", ErrPoolFull, err)
		}
	}
	r.mu.Lock()
	n, sharedHeld, degraded := r.replicas, r.sharedHeld[res.Pool], r.mode == ModeDegraded
	r.mu.Unlock()
	if !degraded {
		n = r.shared.Status().Replicas // last known, the breaker is not open yet
	}
	lres := res
	lres.Limits = share(res.Limits, n)
	lres.TenantLimits = share(res.TenantLimits, n)
	if sharedHeld > 0 && lres.Limits.MaxConcurrent > 0 {
		// Leases taken from Redis before it went away still run: they count
		// against this replica's share.
		if lres.Limits.MaxConcurrent -= sharedHeld; lres.Limits.MaxConcurrent <= 0 {
			return Lease{}, ErrPoolFull
		}
	}
	l, err := r.local.Acquire(ctx, lres)
	if err != nil {
		return Lease{}, err
	}
	r.track(l, false)
	return l, nil
}

// share divides every limit by n, rounding up, at least 1 (0 stays unlimited).
func share(l Limits, n int) Limits {
	if n <= 1 {
		return l
	}
	div := func(v int64) int64 {
		if v <= 0 {
			return v
		}
		return max(1, (v+int64(n)-1)/int64(n))
	}
	return Limits{
		MaxConcurrent:     int(div(int64(l.MaxConcurrent))),
		RequestsPerMinute: div(l.RequestsPerMinute),
		TokensPerMinute:   div(l.TokensPerMinute),
	}
}

func (r *Resilient) track(l Lease, shared bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := leaseKey{l.Pool, leaseMember(l.Tenant, l.ID)}
	o := r.owners[k]
	if o == nil {
		o = &owner{}
		r.owners[k] = o
	}
	if shared {
		o.shared++
		r.sharedHeld[l.Pool]++
	} else {
		o.local++
		r.localHeld[l.Pool]++
	}
}

// Release implements Store: to the store that issued the lease.
func (r *Resilient) Release(l Lease, usedTokens int64) {
	k := leaseKey{l.Pool, leaseMember(l.Tenant, l.ID)}
	r.mu.Lock()
	o := r.owners[k]
	if o == nil {
		r.mu.Unlock()
		return
	}
	local := o.local > 0
	if local {
		o.local--
		if r.localHeld[l.Pool]--; r.localHeld[l.Pool] <= 0 {
			delete(r.localHeld, l.Pool)
		}
	} else {
		o.shared--
		if r.sharedHeld[l.Pool]--; r.sharedHeld[l.Pool] <= 0 {
			delete(r.sharedHeld, l.Pool)
		}
	}
	if o.local == 0 && o.shared == 0 {
		delete(r.owners, k)
	}
	r.mu.Unlock()
	if local {
		r.local.Release(l, usedTokens)
	} else {
		r.shared.Release(l, usedTokens)
	}
}

func (r *Resilient) succeeded() {
	r.mu.Lock()
	r.failures = 0
	r.answered = time.Now()
	r.mu.Unlock()
}

// answeredSince reports whether any shared call got an answer after t: a
// timeout while others were answered is one slow call, not a stalled store.
func (r *Resilient) answeredSince(t time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.answered.After(t)
}

// failed counts a shared-store failure, opens the breaker at the threshold
// (at once when open is true: the call ran out of time), and returns the mode
// it leaves the store in.
func (r *Resilient) failed(err error, open bool) Mode {
	r.mu.Lock()
	r.failures++
	if err != nil {
		r.lastErr = err.Error()
	}
	if r.mode != ModeShared || r.failures < r.threshold && !open {
		mode := r.mode
		r.mu.Unlock()
		return mode
	}
	r.replicas = max(1, r.shared.Status().Replicas)
	from := r.setModeLocked(ModeDegraded)
	n := r.replicas
	r.mu.Unlock()
	r.log.Warn("capacity store degraded: shared store unreachable, counting locally on a conservative share",
		"replicas", n, "err", err)
	r.notify(from, ModeDegraded)
	return ModeDegraded
}

func (r *Resilient) setModeLocked(to Mode) Mode {
	from := r.mode
	r.mode = to
	r.since = r.clock.Now()
	r.failures = 0
	return from
}

func (r *Resilient) notify(from, to Mode) {
	if r.onChange != nil && from != to {
		r.onChange(from, to)
	}
}

type pinger interface {
	Ping(ctx context.Context) error
}

func (r *Resilient) ping(ctx context.Context) error {
	if p, ok := r.shared.(pinger); ok {
		return p.Ping(ctx)
	}
	_, err := r.shared.Usage(ctx, []string{"_probe"})
	return err
}

// probeLoop is the half-open state: while degraded it pings the shared store
// every ProbeEvery and closes the breaker on the first answer.
func (r *Resilient) probeLoop() {
	defer close(r.done)
	t := r.clock.NewTicker(r.probe)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C():
		}
		r.mu.Lock()
		degraded := r.mode == ModeDegraded
		r.mu.Unlock()
		if !degraded {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(r.timeout, r.probe))
		err := r.ping(ctx)
		cancel()
		r.mu.Lock()
		if err != nil {
			r.lastErr = err.Error()
			r.mu.Unlock()
			continue
		}
		from := r.setModeLocked(ModeShared)
		r.lastErr = ""
		r.mu.Unlock()
		r.log.Info("capacity store back to shared counting")
		r.notify(from, ModeShared)
	}
}

// Usage implements Store. In shared mode it is the shared view plus any
// leases this replica still holds from degraded mode; in degraded mode (or
// when the shared store does not answer) it is this replica's local view.
func (r *Resilient) Usage(ctx context.Context, pools []string) (map[string]PoolUsage, error) {
	r.mu.Lock()
	mode := r.mode
	r.mu.Unlock()
	local, err := r.local.Usage(ctx, pools)
	if err != nil {
		return nil, err
	}
	if mode != ModeShared {
		return local, nil
	}
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	shared, err := r.shared.Usage(cctx, pools)
	if err != nil {
		if ctx.Err() == nil {
			r.failed(err, false)
		}
		return local, nil
	}
	for p, u := range shared {
		u.InFlight += local[p].InFlight
		shared[p] = u
	}
	return shared, nil
}

// Status implements Store.
func (r *Resilient) Status() Status {
	r.mu.Lock()
	mode, since, lastErr, n := r.mode, r.since, r.lastErr, r.replicas
	r.mu.Unlock()
	st := Status{Mode: mode, Since: since, LastError: lastErr, Replicas: n}
	if mode == ModeShared {
		s := r.shared.Status()
		st.Replicas = max(1, s.Replicas)
		if st.LastError == "" {
			st.LastError = s.LastError
		}
	}
	return st
}

// Flush waits for the shared store's queued releases while it is reachable
// (local releases are synchronous). Implements capacitytest.Flusher.
func (r *Resilient) Flush(ctx context.Context) error {
	r.mu.Lock()
	mode := r.mode
	r.mu.Unlock()
	f, ok := r.shared.(interface{ Flush(context.Context) error })
	if mode != ModeShared || !ok {
		return nil
	}
	return f.Flush(ctx)
}

// Close implements Store: stops the probe and closes both stores.
func (r *Resilient) Close() error {
	r.once.Do(func() {
		close(r.stop)
		<-r.done
	})
	lerr := r.local.Close()
	if err := r.shared.Close(); err != nil {
		return fmt.Errorf("resilient close: %w", err)
	}
	return lerr
}
