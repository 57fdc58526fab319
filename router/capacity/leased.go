package capacity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
)

// Leased is the shared Store without a round trip on the request path.
//
// Each pool's budget lives in its home BlockStore (a Redis per region, say).
// This replica holds, per pool, a block of slots granted by the home under a
// lease; Acquire takes a slot from the block and Release gives it back, both
// in memory. One background loop refreshes every block each RefreshEvery,
// one round trip per home for all of its pools: it renews the lease, asks
// for more where this replica's demand grew (its arrival rate × the store's
// round trip, plus its recent peak concurrency) and gives back the surplus.
// The home splits each limit among the replicas that want slots by Doorman's
// proportional share (blocks.go). Requests- and tokens-per-minute budgets,
// of pools and of tenants, work the same way with allowances charged in
// advance.
//
// When the block is empty, Acquire makes a synchronous refresh of that pool
// (strict counting's cost, now the worst case); concurrent calls share it,
// and a burst follows the block while it doubles (maxRefreshRounds).
//
// Never over a limit, by construction: the blocks of all replicas never add
// up to more than the pool's limit (the home grants from what is free), a
// replica lowers its own ceiling before it asks to give slots back, and it
// stops using a block LeaseMargin before the home could hand it to anyone
// else (the lease is timed from when the request left). A home restarted
// empty, or not refreshed by anyone for half a lease (an outage), runs in
// learning mode for one lease: it grants only what replicas re-assert. When a
// home stays unreachable longer than a block lives (degraded), this replica
// serves from the smaller of its last block and the conservative share (the
// limit divided by the replicas last seen). The one case this cannot cover is
// a partition of one replica from a home the others still reach: the pool
// may then exceed its limit by at most that replica's block.
// docs/capacity.md has the argument and the bounds.
//
// Duplicate request ids are refused per replica (strict counting refuses
// them across replicas); every limit still holds either way.
//
// Safe for concurrent use.
type Leased struct {
	clock    clock.Clock
	replica  string
	ttl      time.Duration
	refresh  time.Duration
	margin   time.Duration
	timeout  time.Duration
	log      *slog.Logger
	onChange func(from, to Mode)

	homes       map[string]*home
	defaultHome *home

	mu       sync.Mutex
	poolHome map[string]string
	pools    map[string]*leasedPool
	tenants  map[string]*leasedTenant
	nonce    uint64
	replicas int
	mode     Mode
	since    time.Time
	lastErr  string

	acquires  atomic.Int64
	trips     atomic.Int64 // store round trips, background and synchronous
	syncTrips atomic.Int64

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closed    atomic.Bool
}

var _ Store = (*Leased)(nil)

// LeasedOptions configure a Leased store.
type LeasedOptions struct {
	// Homes are the block stores by name (one per region, say); at least one.
	Homes map[string]BlockStore
	// Default names the home of pools PoolHomes does not name, and of every
	// tenant's budgets. It may be empty when there is exactly one home.
	Default string
	// PoolHomes maps a pool to its home (SetPoolHomes replaces it on reload).
	PoolHomes map[string]string
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Replica identifies this replica to the homes (default host-pid-random).
	Replica string
	// LeaseTTL is how long a block lives without refresh (default 10s): a dead
	// replica's blocks come back within it, and a home restarted empty grants
	// nothing new for that long (learning mode).
	LeaseTTL time.Duration
	// RefreshEvery is the background refresh period (default 500ms).
	RefreshEvery time.Duration
	// LeaseMargin: a block is used until its lease's end less this margin
	// (default max(LeaseTTL/10, 500ms)); it must cover the replicas' clock
	// skew. LeaseTTL must exceed RefreshEvery + LeaseMargin.
	LeaseMargin time.Duration
	// Timeout bounds a synchronous refresh on the request path (default 150ms)
	// and, with RefreshEvery, a background one.
	Timeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// OnModeChange is called after every mode change (shared <-> degraded),
	// outside any lock; it must not block.
	OnModeChange func(from, to Mode)
	// NoLoop: no background loop; the owner calls RefreshNow (tests that
	// step the fake clock and the refreshes one by one).
	NoLoop bool
}

// home is one block store and what this replica knows of it.
type home struct {
	name   string
	store  BlockStore
	lastOK atomic.Int64 // unix ns of the send time of the last answered refresh
	rtt    atomic.Int64 // ns, smoothed
}

func (h *home) observeRTT(d time.Duration) {
	old := h.rtt.Load()
	if old == 0 {
		h.rtt.Store(int64(d))
		return
	}
	h.rtt.Store(old + (int64(d)-old)/8)
}

const (
	defaultBlockTTL     = 10 * time.Second
	defaultBlockRefresh = 500 * time.Millisecond
	// demandBuckets buckets of a quarter refresh period each: a pool's
	// arrival rate and peak concurrency are measured over the last two
	// refresh periods.
	demandBuckets = 8
	// maxRefreshRounds bounds the synchronous refreshes one Acquire makes or
	// waits for while its block and allowances grow (a burst of calls on an
	// empty block); a refresh the home grants nothing more in ends them at
	// once (fullBackoff, or the window's refusal).
	maxRefreshRounds = 16
	// fullBackoff: after a synchronous refresh found the pool full, calls are
	// refused without another round trip for this long (until a slot of this
	// replica's block frees, or the next background refresh).
	fullBackoff = 25 * time.Millisecond
)

// NewLeased builds a Leased store and starts its background loop. It never
// waits for a home to answer.
func NewLeased(o LeasedOptions) (*Leased, error) {
	if len(o.Homes) == 0 {
		return nil, errors.New("leased capacity store: no home store")
	}
	if o.Default == "" {
		if len(o.Homes) != 1 {
			return nil, errors.New("leased capacity store: several homes and no default")
		}
		for name := range o.Homes {
			o.Default = name
		}
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = defaultBlockTTL
	}
	if o.RefreshEvery <= 0 {
		o.RefreshEvery = defaultBlockRefresh
	}
	if o.LeaseMargin <= 0 {
		o.LeaseMargin = max(o.LeaseTTL/10, 500*time.Millisecond)
	}
	if o.LeaseTTL <= 2*o.RefreshEvery+o.LeaseMargin {
		return nil, fmt.Errorf("leased capacity store: lease ttl %s must exceed twice the refresh period %s plus the margin %s", o.LeaseTTL, o.RefreshEvery, o.LeaseMargin)
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.Replica == "" {
		o.Replica = defaultReplicaID()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	l := &Leased{
		clock: o.Clock, replica: o.Replica, ttl: o.LeaseTTL, refresh: o.RefreshEvery, margin: o.LeaseMargin, timeout: o.Timeout,
		log: o.Logger.With("component", "capacity", "store", "leased", "replica", o.Replica), onChange: o.OnModeChange,
		homes: map[string]*home{}, pools: map[string]*leasedPool{}, tenants: map[string]*leasedTenant{},
		replicas: 1, mode: ModeShared, since: o.Clock.Now(),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	for name, s := range o.Homes {
		if s == nil {
			return nil, fmt.Errorf("leased capacity store: home %q has no store", name)
		}
		h := &home{name: name, store: s}
		h.lastOK.Store(l.since.UnixNano())
		l.homes[name] = h
	}
	l.defaultHome = l.homes[o.Default]
	if l.defaultHome == nil {
		return nil, fmt.Errorf("leased capacity store: default home %q is not among the homes", o.Default)
	}
	if err := l.SetPoolHomes(o.PoolHomes); err != nil {
		return nil, err
	}
	if o.NoLoop {
		close(l.done)
	} else {
		go l.loop()
	}
	return l, nil
}

// SetPoolHomes replaces the pool -> home map (a reload). A pool that moves
// keeps its block at the old home until its leases end.
func (l *Leased) SetPoolHomes(m map[string]string) error {
	cp := make(map[string]string, len(m))
	for pool, h := range m {
		if _, ok := l.homes[h]; !ok {
			return fmt.Errorf("leased capacity store: pool %q is homed to %q, which is not a configured store", pool, h)
		}
		cp[pool] = h
	}
	l.mu.Lock()
	l.poolHome = cp
	l.mu.Unlock()
	return nil
}

// leasedPool is this replica's state of one pool. Guarded by Leased.mu.
type leasedPool struct {
	name   string
	home   *home
	limits Limits
	// ceiling is what may be used now: the block of the last answer, lowered
	// to Keep while a request that gives slots back is out; expires is when
	// this replica stops using it (the lease's end less the margin, timed
	// from when the request left).
	ceiling          int64
	share            int64 // the last answer's proportional share
	expires          time.Time
	seq, answeredSeq int64
	leases           map[string]string // member -> nonce
	demand           demand
	misses           int64     // refusals for want of a slot since the last refresh
	allowMisses      int64     // and for want of allowance
	fullUntil        time.Time // a synchronous refresh found the pool full
	refilling        chan struct{}
	waiting          int64
	learning         bool
	holders          int
	grantedAll       int64
	others           PoolUsage // the other replicas' last reported usage
	othersAt         time.Time
	requests, tokens windowCount // this replica's own use
	allow            allowance
}

type leasedTenant struct {
	name             string
	limits           Limits
	allow            allowance
	requests, tokens windowCount // this replica's own use, for chunk sizes
	demand           demand      // arrivals, for chunk sizes
}

// demand measures a pool's arrivals and peak concurrency over the last
// demandBuckets buckets of width each.
type demand struct {
	width    time.Duration
	bucket   int64 // index of the newest bucket (time / width)
	arrivals [demandBuckets]int64
	peak     [demandBuckets]int64
}

func (d *demand) roll(now time.Time) int {
	b := now.UnixNano() / int64(d.width)
	if b-d.bucket >= demandBuckets {
		d.arrivals, d.peak = [demandBuckets]int64{}, [demandBuckets]int64{}
	} else {
		for i := d.bucket + 1; i <= b; i++ {
			d.arrivals[i%demandBuckets], d.peak[i%demandBuckets] = 0, 0
		}
	}
	if b > d.bucket {
		d.bucket = b
	}
	return int(d.bucket % demandBuckets)
}

func (d *demand) arrive(now time.Time) { d.arrivals[d.roll(now)]++ }

func (d *demand) inUse(now time.Time, n int64) {
	i := d.roll(now)
	d.peak[i] = max(d.peak[i], n)
}

// rate is arrivals per second over the window.
func (d *demand) rate(now time.Time) float64 {
	d.roll(now)
	var n int64
	for _, a := range d.arrivals {
		n += a
	}
	return float64(n) / (demandBuckets * d.width).Seconds()
}

// peakOver is the peak concurrency over the last k buckets.
func (d *demand) peakOver(now time.Time, k int) int64 {
	d.roll(now)
	var p int64
	for j := 0; j < k && j < demandBuckets; j++ {
		p = max(p, d.peak[(int(d.bucket)-j+demandBuckets*2)%demandBuckets])
	}
	return p
}

// allowance is this replica's unspent share of a requests- and
// tokens-per-minute budget, charged to the shared window in advance.
type allowance struct {
	minute           int64 // the minute reqLeft/tokLeft were charged to
	reqLeft, tokLeft int64
	// refund: unspent allowance of an earlier minute, to give back.
	refundMinute         int64
	refundReq, refundTok int64
}

// roll moves what is left of an earlier minute to the refund.
func (a *allowance) roll(cur int64) {
	if a.minute == cur {
		return
	}
	if a.minute == cur-1 && (a.reqLeft != 0 || a.tokLeft != 0) {
		a.refundMinute, a.refundReq, a.refundTok = a.minute, a.reqLeft, a.tokLeft
	}
	a.minute, a.reqLeft, a.tokLeft = cur, 0, 0
}

func (a *allowance) has(l Limits, tokens int64) bool {
	return (l.RequestsPerMinute <= 0 || a.reqLeft >= 1) && (l.TokensPerMinute <= 0 || a.tokLeft >= tokens)
}

func (a *allowance) spend(l Limits, tokens int64) {
	if l.RequestsPerMinute > 0 {
		a.reqLeft--
	}
	if l.TokensPerMinute > 0 {
		a.tokLeft -= tokens
	}
}

// settle gives back (or charges) a finished call's token difference: to the
// allowance when it was charged this minute, else to the refund of the
// previous minute; older charges no longer count.
func (a *allowance) settle(l Limits, cur, charged int64, unused int64) {
	if l.TokensPerMinute <= 0 || unused == 0 {
		return
	}
	a.roll(cur)
	switch {
	case charged == cur || unused < 0:
		a.tokLeft += unused // a debt (unused < 0) is charged to the current minute
	case charged == cur-1 && a.refundMinute == charged:
		a.refundTok += unused
	case charged == cur-1 && a.refundReq == 0 && a.refundTok == 0:
		a.refundMinute, a.refundTok = charged, unused
	}
}

// request builds the allowance part of a refresh: it gives back the refund
// and asks for need (the least useful) and want (a chunk for the next two
// refreshes at the recent rate). It moves what it gives back out of the
// allowance before sending: a lost answer strands it, never spends it twice.
func (a *allowance) request(l Limits, cur, needReq, needTok, wantReq, wantTok int64) Allowance {
	a.roll(cur)
	out := Allowance{RPM: l.RequestsPerMinute, TPM: l.TokensPerMinute}
	if out.RPM <= 0 && out.TPM <= 0 {
		return Allowance{}
	}
	if a.refundReq != 0 || a.refundTok != 0 {
		out.RefundMinute, out.RefundRequests, out.RefundTokens = a.refundMinute, a.refundReq, a.refundTok
		a.refundReq, a.refundTok = 0, 0
	} else if surplusReq, surplusTok := a.reqLeft-2*wantReq, a.tokLeft-2*wantTok; surplusReq > 0 || surplusTok > 0 {
		// More than two chunks left: give the surplus back to the others.
		out.RefundMinute = cur
		if surplusReq > 0 && out.RPM > 0 {
			out.RefundRequests, a.reqLeft = surplusReq, a.reqLeft-surplusReq
		}
		if surplusTok > 0 && out.TPM > 0 {
			out.RefundTokens, a.tokLeft = surplusTok, a.tokLeft-surplusTok
		}
	}
	if out.RPM > 0 {
		out.NeedRequests = max(needReq-a.reqLeft, 0)
		out.WantRequests = max(wantReq-a.reqLeft, out.NeedRequests)
	}
	if out.TPM > 0 {
		out.NeedTokens = max(needTok-a.tokLeft, 0)
		out.WantTokens = max(wantTok-a.tokLeft, out.NeedTokens)
	}
	return out
}

func (a *allowance) granted(g AllowanceGrant) {
	if g.Requests == 0 && g.Tokens == 0 {
		return
	}
	a.roll(g.Minute)
	if a.minute == g.Minute {
		a.reqLeft += g.Requests
		a.tokLeft += g.Tokens
	}
}

// chunks sizes an allowance: what the recent request rate uses in two
// refresh periods, each request with the recent tokens per request (or
// this call's, if more), at least one call's worth, at most a tenth of the
// budget (what a replica holds unspent is what the others cannot use).
func chunks(l Limits, reqRate float64, req, tok windowCount, now time.Time, every time.Duration, callTokens int64) (int64, int64) {
	perCall := max(callTokens, tok.estimate(now)/max(req.estimate(now), 1))
	wantReq := int64(math.Ceil(reqRate*2*every.Seconds())) + 1
	wantTok := wantReq * perCall
	if l.RequestsPerMinute > 0 {
		wantReq = min(wantReq, max(l.RequestsPerMinute/10, 1))
	}
	if l.TokensPerMinute > 0 {
		wantTok = min(wantTok, max(l.TokensPerMinute/10, callTokens))
	}
	return wantReq, wantTok
}

func (l *Leased) homeOf(pool string) *home {
	if h, ok := l.poolHome[pool]; ok {
		return l.homes[h]
	}
	return l.defaultHome
}

// pool returns the state of name, creating it; mu held.
func (l *Leased) pool(name string) *leasedPool {
	p := l.pools[name]
	if p == nil {
		p = &leasedPool{name: name, leases: map[string]string{}, demand: demand{width: l.bucketWidth()}}
		l.pools[name] = p
	}
	p.home = l.homeOf(name)
	return p
}

// bucketWidth is a quarter of the refresh period (at least 10ms).
func (l *Leased) bucketWidth() time.Duration { return max(l.refresh/4, 10*time.Millisecond) }

func (l *Leased) tenant(name string) *leasedTenant {
	t := l.tenants[name]
	if t == nil {
		t = &leasedTenant{name: name, demand: demand{width: l.bucketWidth()}}
		l.tenants[name] = t
	}
	return t
}

// degraded: the home has not answered for longer than a block lives.
func (l *Leased) degraded(h *home, now time.Time) bool {
	return now.UnixNano()-h.lastOK.Load() > int64(l.ttl-l.margin)
}

// usable is how many slots this replica may hold in p now; mu held. While
// the home is unreachable for longer than a block lives (degraded), that is
// the smaller of its last block and the conservative share (the limit
// divided by the replicas last seen): the last blocks of all replicas add
// up to no more than the limit, so a store down for everyone never lets
// the pool exceed it; the home, when it answers again, runs learning mode
// (a gap) while the replicas re-assert what they hold.
func (l *Leased) usable(p *leasedPool, now time.Time) int64 {
	if now.Before(p.expires) {
		return p.ceiling
	}
	if l.degraded(p.home, now) {
		share := (int64(p.limits.MaxConcurrent) + int64(l.replicas) - 1) / int64(max(l.replicas, 1))
		return min(p.ceiling, share)
	}
	// The lease ended while the home answered: the home may have handed the
	// block to others, it is gone.
	p.ceiling = 0
	return 0
}

// errNeedSlot and errNeedAllowance: admit found no slot in the block, or
// not enough of a per-minute allowance; a synchronous refresh may find it.
var (
	errNeedSlot      = errors.New("need a slot")
	errNeedAllowance = errors.New("need an allowance")
)

// admit takes a slot and the allowances for r if this replica has them;
// mu held.
func (l *Leased) admit(p *leasedPool, t *leasedTenant, r Reservation, member string, now time.Time) (Lease, error) {
	if r.Limits.MaxConcurrent > 0 && int64(len(p.leases)) >= l.usable(p, now) {
		return Lease{}, errNeedSlot
	}
	cur := minuteOf(now)
	p.allow.roll(cur)
	degraded := l.degraded(p.home, now)
	if !degraded && !p.allow.has(r.Limits, r.Tokens) {
		return Lease{}, errNeedAllowance
	}
	if t != nil {
		t.allow.roll(cur)
		if !l.degraded(l.defaultHome, now) && !t.allow.has(r.TenantLimits, r.Tokens) {
			return Lease{}, errNeedAllowance
		}
	}
	if degraded {
		// The home is unreachable: this replica's conservative share of the
		// per-minute budgets, counted on its own windows.
		if err := localWindows(now, "pool", r.Pool, &p.requests, &p.tokens, r.Limits, r.Tokens, l.replicas); err != nil {
			return Lease{}, err
		}
	} else {
		p.allow.spend(r.Limits, r.Tokens)
	}
	if t != nil {
		if l.degraded(l.defaultHome, now) {
			if err := localWindows(now, "tenant", r.Tenant, &t.requests, &t.tokens, r.TenantLimits, r.Tokens, l.replicas); err != nil {
				return Lease{}, err
			}
		} else {
			t.allow.spend(r.TenantLimits, r.Tokens)
		}
		t.requests.admit(now, 1, 0)
		t.tokens.admit(now, r.Tokens, 0)
	}
	p.requests.admit(now, 1, 0)
	p.tokens.admit(now, r.Tokens, 0)
	l.nonce++
	lease := Lease{ID: r.ID, Pool: r.Pool, Tenant: r.Tenant, Tokens: r.Tokens, Acquired: now, Nonce: l.replica + "#" + strconv.FormatUint(l.nonce, 10)}
	p.leases[member] = lease.Nonce
	p.demand.inUse(now, int64(len(p.leases)))
	p.fullUntil = time.Time{}
	return lease, nil
}

// localWindows checks a per-minute budget divided among the replicas on
// this replica's own window (degraded mode).
func localWindows(now time.Time, scope, name string, req, tok *windowCount, lim Limits, tokens int64, replicas int) error {
	share := func(v int64) int64 { return (v + int64(replicas) - 1) / int64(max(replicas, 1)) }
	if lim.RequestsPerMinute > 0 && req.estimate(now)+1 > share(lim.RequestsPerMinute) {
		_, after := req.admit(now, 1, share(lim.RequestsPerMinute))
		return &QuotaError{Scope: scope, Name: name, Kind: "requests_per_minute", RetryAfter: after}
	}
	if lim.TokensPerMinute > 0 && tok.estimate(now)+tokens > share(lim.TokensPerMinute) {
		_, after := tok.admit(now, tokens, share(lim.TokensPerMinute))
		return &QuotaError{Scope: scope, Name: name, Kind: "tokens_per_minute", RetryAfter: after}
	}
	return nil
}

// Acquire implements Store. With a slot in this replica's block (and the
// allowances, for per-minute budgets) it does no I/O; otherwise it makes a
// synchronous refresh of this pool (calls arriving meanwhile wait for it and
// are counted in what it asks for), and refuses with ErrPoolFull or a
// *QuotaError once a refresh brings nothing. A burst on an empty block may
// take a few refreshes while the block doubles (at most maxRefreshRounds).
func (l *Leased) Acquire(ctx context.Context, r Reservation) (Lease, error) {
	if err := ctx.Err(); err != nil {
		return Lease{}, fmt.Errorf("leased acquire: %w", err)
	}
	if l.closed.Load() {
		return Lease{}, fmt.Errorf("leased acquire: %w: store closed", ErrUnavailable)
	}
	if r.ID == "" || r.Pool == "" {
		return Lease{}, errors.New("leased acquire: reservation needs an id and a pool")
	}
	l.acquires.Add(1)
	member := leaseMember(r.Tenant, r.ID)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	p := l.pool(r.Pool)
	p.limits = r.Limits
	var t *leasedTenant
	if r.Tenant != "" && (r.TenantLimits.RequestsPerMinute > 0 || r.TenantLimits.TokensPerMinute > 0) {
		t = l.tenant(r.Tenant)
		t.limits = r.TenantLimits
		t.demand.arrive(now)
	}
	if _, dup := p.leases[member]; dup {
		return Lease{}, ErrDuplicate
	}
	p.demand.arrive(now)
	var refusal error // set when a refresh's answer refused a window
	for round := 0; ; round++ {
		lease, err := l.admit(p, t, r, member, now)
		needSlot := errors.Is(err, errNeedSlot)
		if !needSlot && !errors.Is(err, errNeedAllowance) {
			return lease, err
		}
		if needSlot {
			p.misses++ // the block is too small: the next refresh grows it
		} else {
			p.allowMisses++ // so is the allowance
		}
		if refusal != nil {
			return Lease{}, refusal // the home refused a window: no refresh helps
		}
		if round == maxRefreshRounds || (needSlot && now.Before(p.fullUntil)) {
			return Lease{}, ErrPoolFull
		}
		if refusal, err = l.refreshFor(ctx, p, t, r, needSlot); err != nil {
			return Lease{}, err
		}
		now = l.clock.Now()
	}
}

// refreshFor makes the synchronous refresh an Acquire needs (mu held; it is
// released while waiting). Calls that need the same pool while a refresh
// is out wait for it instead of sending another. It returns the refusal to
// give if admit still fails (a *QuotaError from a window, or nil for a full
// pool), or an error when the caller's context ended.
func (l *Leased) refreshFor(ctx context.Context, p *leasedPool, t *leasedTenant, r Reservation, needSlot bool) (refusal, err error) {
	if p.refilling != nil {
		wait := p.refilling
		p.waiting++
		l.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
		}
		l.mu.Lock()
		p.waiting--
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("leased acquire: %w", err)
		}
		return nil, nil
	}
	now := l.clock.Now()
	done := make(chan struct{})
	p.refilling = done
	defer func() { p.refilling = nil; close(done) }()

	cur := minuteOf(now)
	req := BlockRefresh{Replica: l.replica, Now: now, TTL: l.ttl}
	pq := l.poolRequest(p, now, &r, needSlot)
	req.Pools = []BlockRequest{pq}
	var tq *TenantRequest
	if t != nil {
		wantReq, wantTok := chunks(t.limits, t.demand.rate(now), t.requests, t.tokens, now, l.refresh, r.Tokens)
		n := 1 + p.waiting + p.allowMisses
		wantReq, wantTok = max(wantReq, n), max(wantTok, r.Tokens*n)
		tr := TenantRequest{Tenant: t.name, Window: t.allow.request(t.limits, cur, 1, r.Tokens, wantReq, wantTok)}
		tq = &tr
	}
	h := p.home
	before := l.usable(p, now)
	l.mu.Unlock()
	ans, tenantAns, err := l.send(ctx, h, req, tq)
	l.mu.Lock()
	l.syncTrips.Add(1)
	if err != nil {
		l.setErr(err)
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("leased acquire: %w", cerr)
		}
		p.fullUntil = l.clock.Now().Add(fullBackoff)
		return ErrPoolFull, nil // the store did not answer: refused as full (the router tries elsewhere or waits)
	}
	if len(ans.Pools) == 1 {
		l.applyPool(p, pq, ans.Pools[0], now, ans.Replicas)
		if w := ans.Pools[0].Window; w.Refused != "" {
			refusal = &QuotaError{Scope: "pool", Name: p.name, Kind: w.Refused, RetryAfter: w.RetryAfter}
		}
	}
	if tq != nil && tenantAns != nil {
		t.allow.granted(*tenantAns)
		if tenantAns.Refused != "" && refusal == nil {
			refusal = &QuotaError{Scope: "tenant", Name: t.name, Kind: tenantAns.Refused, RetryAfter: tenantAns.RetryAfter}
		}
	}
	if after := l.usable(p, l.clock.Now()); needSlot && refusal == nil && after <= before && int64(len(p.leases)) >= after {
		// The home had nothing more: the pool is full everywhere.
		p.fullUntil = l.clock.Now().Add(fullBackoff)
	}
	return refusal, nil
}

// send makes one synchronous refresh: the pool part to its home and the
// tenant part to the default home, in parallel when they differ.
func (l *Leased) send(ctx context.Context, h *home, req BlockRefresh, tq *TenantRequest) (BlockAnswer, *AllowanceGrant, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if tq != nil && h == l.defaultHome {
		req.Tenants = []TenantRequest{*tq}
		tq = nil
	}
	var tenantAns *AllowanceGrant
	var tenantErr error
	var wg sync.WaitGroup
	if tq != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := l.roundTrip(ctx, l.defaultHome, BlockRefresh{Replica: req.Replica, Now: req.Now, TTL: req.TTL, Tenants: []TenantRequest{*tq}})
			if err == nil && len(a.Tenants) == 1 {
				tenantAns = &a.Tenants[0]
			}
			tenantErr = err
		}()
	}
	ans, err := l.roundTrip(ctx, h, req)
	wg.Wait()
	if err == nil && len(ans.Tenants) == 1 {
		tenantAns = &ans.Tenants[0]
	}
	if err == nil {
		err = tenantErr
	}
	return ans, tenantAns, err
}

func (l *Leased) roundTrip(ctx context.Context, h *home, req BlockRefresh) (BlockAnswer, error) {
	start := time.Now() // the network's round-trip time, a real duration whatever the injected clock says
	ans, err := h.store.Refresh(ctx, req)
	l.trips.Add(1)
	if err != nil {
		return ans, fmt.Errorf("home %q: %w", h.name, err)
	}
	h.observeRTT(time.Since(start))
	if sent := req.Now.UnixNano(); sent > h.lastOK.Load() {
		h.lastOK.Store(sent)
	}
	return ans, nil
}

// poolRequest builds p's refresh and lowers p's ceiling to what it keeps;
// mu held. call: a synchronous refresh for a waiting call, which needs a
// request and its tokens of the allowance; urgent: it also needs a slot.
func (l *Leased) poolRequest(p *leasedPool, now time.Time, call *Reservation, urgent bool) BlockRequest {
	inUse := int64(len(p.leases))
	p.demand.inUse(now, inUse)
	rate := p.demand.rate(now)
	rtt := time.Duration(p.home.rtt.Load())
	// The peak of the last refresh period: demand that ended is given back
	// within two periods.
	want := p.demand.peakOver(now, demandBuckets/2) + int64(math.Ceil(rate*rtt.Seconds()))
	valid := l.usable(p, now)
	share := valid
	if p.answeredSeq > 0 {
		share = p.share
	}
	if urgent || (call == nil && p.misses > 0) {
		// Calls found the block empty (a call waits now, or some did since
		// the last background refresh): grow it quickly, doubling as TCP's
		// slow start does; what turns out surplus goes back next refresh.
		// A synchronous refresh for an allowance alone does not grow it.
		want = max(want, 2*valid+1, inUse+p.misses+p.waiting+1)
		share = max(share, want) // the home caps it at the real share
	}
	want = max(want, inUse)
	if c := int64(p.limits.MaxConcurrent); c > 0 {
		want = min(want, c)
	} else {
		want = 0
	}
	keep := max(inUse, min(valid, want, share))
	if l.degraded(p.home, now) {
		// Back from an outage: re-assert all of what it may be using (the
		// home is in learning mode after such a gap).
		keep = max(inUse, valid)
	}
	if keep < p.ceiling {
		p.ceiling = keep // give back first, then tell the home
	}
	p.seq++
	cur := minuteOf(now)
	needReq, needTok, callTokens := int64(0), int64(0), int64(0)
	if call != nil {
		needReq, needTok, callTokens = 1, call.Tokens, call.Tokens
	}
	wantReq, wantTok := chunks(p.limits, rate, p.requests, p.tokens, now, l.refresh, callTokens)
	if call != nil {
		// The calls that found the allowance short since the last refresh
		// (some waiting for this one) need theirs too.
		n := 1 + p.waiting + p.allowMisses
		wantReq, wantTok = max(wantReq, n), max(wantTok, callTokens*n)
	}
	return BlockRequest{
		Pool: p.name, Capacity: int64(p.limits.MaxConcurrent), Keep: keep, Want: want, Seq: p.seq,
		InUse: inUse, Requests: p.requests.estimate(now), Tokens: p.tokens.estimate(now),
		Window: p.allow.request(p.limits, cur, needReq, needTok, wantReq, wantTok),
	}
}

// applyPool takes a home's answer for p; mu held. sent is when the
// request left: the lease is timed from then.
func (l *Leased) applyPool(p *leasedPool, q BlockRequest, g BlockGrant, sent time.Time, replicas int) {
	if replicas > 0 {
		l.replicas = replicas
	}
	p.allow.granted(g.Window)
	if g.Stale || q.Seq < p.seq && q.Seq <= p.answeredSeq {
		return
	}
	if q.Seq < p.seq {
		// A newer request is out: it may have lowered the ceiling; take
		// this answer's lease only up to that.
		p.answeredSeq = q.Seq
		p.ceiling = min(p.ceiling, g.Granted)
		p.expires = sent.Add(l.ttl - l.margin)
		return
	}
	p.answeredSeq = q.Seq
	p.ceiling, p.share = g.Granted, g.Share
	p.expires = sent.Add(l.ttl - l.margin)
	p.learning, p.holders, p.grantedAll = g.Learning, g.Holders, g.GrantedAll
	p.others = PoolUsage{InFlight: int(g.OthersInUse), RequestsLastMinute: g.OthersRequests, TokensLastMinute: g.OthersTokens}
	p.othersAt = sent
}

// Release implements Store: in memory, no I/O. Surplus slots go back to the
// home at the next refresh.
func (l *Leased) Release(lease Lease, usedTokens int64) {
	member := leaseMember(lease.Tenant, lease.ID)
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pools[lease.Pool]
	if p == nil || lease.Nonce == "" || p.leases[member] != lease.Nonce {
		return // released twice, or never acquired here
	}
	delete(p.leases, member)
	now := l.clock.Now()
	unused := lease.Tokens - usedTokens
	p.tokens.adjust(now, lease.Acquired, -unused)
	cur, charged := minuteOf(now), minuteOf(lease.Acquired)
	p.allow.settle(p.limits, cur, charged, unused)
	if t := l.tenants[lease.Tenant]; t != nil {
		t.tokens.adjust(now, lease.Acquired, -unused)
		t.allow.settle(t.limits, cur, charged, unused)
	}
}

// Usage implements Store, without I/O: this replica's own counts, exact,
// plus the other replicas' as they reported them at the last refresh (at
// most RefreshEvery old). Pools asked about are refreshed from then on.
func (l *Leased) Usage(ctx context.Context, pools []string) (map[string]PoolUsage, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	out := make(map[string]PoolUsage, len(pools))
	for _, name := range pools {
		p := l.pool(name)
		u := PoolUsage{InFlight: len(p.leases), RequestsLastMinute: p.requests.estimate(now), TokensLastMinute: p.tokens.estimate(now)}
		if now.Sub(p.othersAt) < l.ttl {
			u.InFlight += p.others.InFlight
			u.RequestsLastMinute += p.others.RequestsLastMinute
			u.TokensLastMinute += p.others.TokensLastMinute
		}
		out[name] = u
	}
	return out, nil
}

// Status implements Store.
func (l *Leased) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Status{Mode: l.mode, Replicas: max(l.replicas, 1), LastError: l.lastErr, Since: l.since}
}

func (l *Leased) setErr(err error) {
	l.lastErr = err.Error()
}

// PoolBlock is one pool's block as this replica holds it.
type PoolBlock struct {
	Pool, Home string
	// Granted is the block; Free the slots of it not in use; InUse this
	// replica's calls in the pool.
	Granted, Free, InUse int64
	// Stranded: slots of the block no call of this replica used in the last
	// second (granted but idle).
	Stranded int64
	// Expires is when this replica stops using the block unless refreshed.
	Expires time.Time
	// Learning: the home restarted less than a lease ago.
	Learning bool
	// Holders: replicas holding or wanting slots; GrantedAll: their blocks.
	Holders    int
	GrantedAll int64
}

// BlockStats is what Leased reports for metrics and the admin view.
type BlockStats struct {
	// Acquires made and store round trips (background and synchronous):
	// round trips per call is (Trips) / Acquires.
	Acquires, Trips, SyncTrips int64
	Pools                      []PoolBlock
}

// BlockReporter is implemented by stores that lease blocks of slots
// (Leased): the router's metrics, Admin and console read it. Safe for
// concurrent use.
type BlockReporter interface {
	Blocks() BlockStats
}

var _ BlockReporter = (*Leased)(nil)

// Blocks reports this replica's blocks, sorted by pool.
func (l *Leased) Blocks() BlockStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	out := BlockStats{Acquires: l.acquires.Load(), Trips: l.trips.Load(), SyncTrips: l.syncTrips.Load()}
	for _, p := range l.pools {
		usable := l.usable(p, now)
		inUse := int64(len(p.leases))
		p.demand.inUse(now, inUse)
		out.Pools = append(out.Pools, PoolBlock{
			Pool: p.name, Home: p.home.name, Granted: usable, Free: max(usable-inUse, 0), InUse: inUse,
			Stranded: max(usable-p.demand.peakOver(now, int(time.Second/p.demand.width)), 0),
			Expires:  p.expires, Learning: p.learning, Holders: p.holders, GrantedAll: p.grantedAll,
		})
	}
	sort.Slice(out.Pools, func(i, j int) bool { return out.Pools[i].Pool < out.Pools[j].Pool })
	return out
}

// loop refreshes every block each RefreshEvery.
func (l *Leased) loop() {
	defer close(l.done)
	tick := l.clock.NewTicker(l.refresh)
	defer tick.Stop()
	l.RefreshNow(context.Background())
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C():
			l.RefreshNow(context.Background())
		}
	}
}

// RefreshNow runs one background refresh: for each home, one round trip
// with every pool and tenant it holds, and waits for the answers.
func (l *Leased) RefreshNow(ctx context.Context) {
	type batch struct {
		home  *home
		req   BlockRefresh
		pools []*leasedPool
		tens  []*leasedTenant
	}
	l.mu.Lock()
	now := l.clock.Now()
	cur := minuteOf(now)
	batches := map[*home]*batch{}
	get := func(h *home) *batch {
		b := batches[h]
		if b == nil {
			b = &batch{home: h, req: BlockRefresh{Replica: l.replica, Now: now, TTL: l.ttl}}
			batches[h] = b
		}
		return b
	}
	for _, h := range l.homes {
		get(h) // every home gets the heartbeat, pools or not
	}
	for _, p := range l.pools {
		p.home = l.homeOf(p.name)
		if p.refilling != nil {
			continue // a synchronous refresh is out; it does this one's work
		}
		b := get(p.home)
		b.req.Pools = append(b.req.Pools, l.poolRequest(p, now, nil, false))
		b.pools = append(b.pools, p)
		p.misses, p.allowMisses = 0, 0
	}
	for _, t := range l.tenants {
		if t.limits.RequestsPerMinute <= 0 && t.limits.TokensPerMinute <= 0 {
			continue
		}
		wantReq, wantTok := chunks(t.limits, t.demand.rate(now), t.requests, t.tokens, now, l.refresh, 0)
		b := get(l.defaultHome)
		b.req.Tenants = append(b.req.Tenants, TenantRequest{Tenant: t.name, Window: t.allow.request(t.limits, cur, 0, 0, wantReq, wantTok)})
		b.tens = append(b.tens, t)
	}
	l.mu.Unlock()

	timeout := max(l.refresh, l.timeout)
	type result struct {
		b   *batch
		ans BlockAnswer
		err error
	}
	results := make(chan result, len(batches))
	for _, b := range batches {
		go func() {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			ans, err := l.roundTrip(cctx, b.home, b.req)
			results <- result{b, ans, err}
		}()
	}
	var errs []error
	l.mu.Lock()
	for range batches {
		l.mu.Unlock()
		res := <-results
		l.mu.Lock()
		if res.err != nil {
			errs = append(errs, res.err)
			continue
		}
		for i, p := range res.b.pools {
			if i < len(res.ans.Pools) {
				l.applyPool(p, res.b.req.Pools[i], res.ans.Pools[i], now, res.ans.Replicas)
			}
		}
		for i, t := range res.b.tens {
			if i < len(res.ans.Tenants) {
				t.allow.granted(res.ans.Tenants[i])
			}
		}
		if res.ans.Replicas > 0 {
			l.replicas = res.ans.Replicas
		}
	}
	if len(errs) > 0 {
		l.setErr(errors.Join(errs...))
		l.log.Debug("capacity block refresh failed", "err", l.lastErr)
	} else {
		l.lastErr = ""
	}
	from, to := l.mode, ModeShared
	for _, h := range l.homes {
		if l.degraded(h, l.clock.Now()) {
			to = ModeDegraded
		}
	}
	if from != to {
		l.mode, l.since = to, l.clock.Now()
	}
	l.mu.Unlock()
	if from != to {
		if to == ModeDegraded {
			l.log.Warn("capacity homes unreachable for longer than a block lives: counting on a conservative local share", "err", errors.Join(errs...))
		} else {
			l.log.Info("capacity homes answering again: back to leased blocks")
		}
		if l.onChange != nil {
			l.onChange(from, to)
		}
	}
}

// Close implements Store: stops the loop and gives every block back (one
// refresh asking for nothing, best effort, bounded), then closes the homes.
func (l *Leased) Close() error {
	var errs []error
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		close(l.stop)
		<-l.done
		l.mu.Lock()
		for _, p := range l.pools {
			p.limits.MaxConcurrent = 0 // want nothing
			p.misses = 0
		}
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		l.RefreshNow(ctx)
		cancel()
		for _, h := range l.homes {
			if err := h.store.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}

// abandon simulates a replica that dies: the loop stops, nothing is given
// back. For tests.
func (l *Leased) abandon() {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		close(l.stop)
		<-l.done
	})
}

// HomeNames lists the homes' names, sorted.
func (l *Leased) HomeNames() []string {
	out := make([]string, 0, len(l.homes))
	for name := range l.homes {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}
