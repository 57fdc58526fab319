package capacity

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Leased counting (leased.go) keeps each pool's budget in the pool's home
// store and lets every replica hold a block of slots, refreshed in the
// background. A BlockStore is that home store: it hands out blocks so that
// the blocks of all replicas never add up to more than a pool's limit, and
// charges per-minute allowances so that the windows never count more than
// their budget. Two implementations: MemoryBlocks (one process; the model the
// tests check the Redis one against) and RedisBlocks (a Redis or a Redis
// Cluster, one per region). The design follows Doorman's (github.com/youtube/doorman,
// doc/design.md and doc/algorithms.md): clients state what they want and what
// they have, the server answers what they get under a lease, shares follow
// the proportional-share algorithm, and a restarted server runs in learning
// mode for one lease length. docs/capacity.md has the whole argument.

// BlockRequest is one replica's refresh of its block of one pool.
type BlockRequest struct {
	Pool string
	// Capacity is the pool's concurrency limit (max concurrent, overrides
	// applied); 0 means unlimited: no block is kept, only usage and windows.
	Capacity int64
	// Keep is what the replica may use until it hears back: it has already
	// lowered its own ceiling to Keep before sending, so the store may
	// record more than Keep (the answer can be lost) but never less.
	Keep int64
	// Want is what the replica would like to hold (>= Keep).
	Want int64
	// Seq orders this replica's requests for the pool: the store ignores one
	// older than the last it applied (two requests may race on two
	// connections), and so does the replica with their answers.
	Seq int64
	// Usage snapshot of this replica, for the other replicas' Usage.
	InUse, Requests, Tokens int64
	// Window allowances charged in advance, see Allowance.
	Window Allowance
}

// TenantRequest refreshes a tenant's allowances (tenants have budgets per
// minute, never a concurrency limit).
type TenantRequest struct {
	Tenant string
	Window Allowance
}

// Allowance asks for a share of a requests- and tokens-per-minute budget in
// advance: the store charges it to the current minute's buckets at once, so
// the shared windows never count more than the budget whatever the replicas
// do with it; what a replica does not spend it gives back (Refund*).
type Allowance struct {
	RPM, TPM int64 // the budgets; 0 = unlimited (nothing is charged)
	// Need is the least that is useful now (a call waiting for it): the
	// store grants nothing unless it can grant at least this much.
	NeedRequests, NeedTokens int64
	// Want is what the replica would like (>= Need).
	WantRequests, WantTokens int64
	// Refund gives back unspent allowance charged in minute RefundMinute
	// (applied only while that minute still counts; negative values charge
	// a debt: tokens used beyond what was charged).
	RefundRequests, RefundTokens int64
	RefundMinute                 int64
}

// AllowanceGrant answers an Allowance.
type AllowanceGrant struct {
	Requests, Tokens int64
	// Minute the grant was charged to (unix minutes).
	Minute int64
	// RetryAfter is set when nothing could be granted: when the window
	// will have room again at the earliest (the next minute bucket).
	RetryAfter time.Duration
	// Refused names the budget that refused: "requests_per_minute" or
	// "tokens_per_minute".
	Refused string
}

// BlockGrant answers a BlockRequest.
type BlockGrant struct {
	// Granted is the replica's block: it may use up to Granted slots until
	// its lease ends (the send time + LeaseTTL, less a margin). Stale is set
	// when the store had already applied a newer request of this replica
	// for the pool; the answer then means nothing.
	Granted int64
	Stale   bool
	// Share is this replica's proportional share of the pool given every
	// holder's wants: a replica holding more gives the excess back at its
	// next refresh, so that demand that moved to another replica is
	// followed.
	Share int64
	// Learning: the store lost its state (restarted empty) less than one
	// lease ago, and grants nothing beyond what replicas re-assert.
	Learning bool
	// Holders is how many replicas hold or want slots in the pool, this one
	// included; GrantedAll is the sum of their blocks.
	Holders    int
	GrantedAll int64
	// The other replicas' last reported usage.
	OthersInUse, OthersRequests, OthersTokens int64
	Window                                    AllowanceGrant
}

// BlockStore is a pool's home: it grants blocks and allowances. Refresh
// sends everything in one round trip (one pipeline) and is bounded by ctx.
// The time is the replica's clock when the request left (the caller's
// now): grants expire at now + ttl in that clock, which the replica ends
// earlier by its margin. Safe for concurrent use.
type BlockStore interface {
	Refresh(ctx context.Context, r BlockRefresh) (BlockAnswer, error)
	// Close releases the store's connections.
	Close() error
}

// BlockRefresh is one round trip's worth of requests from one replica.
type BlockRefresh struct {
	Replica string
	Now     time.Time
	TTL     time.Duration
	Pools   []BlockRequest
	Tenants []TenantRequest
}

// BlockAnswer holds the answers, in request order, and the number of live
// replicas of the store (heartbeats), at least 1.
type BlockAnswer struct {
	Pools    []BlockGrant
	Tenants  []AllowanceGrant
	Replicas int
}

// ProportionalShare is Doorman's PROPORTIONAL_SHARE algorithm: when the
// wants fit, everyone gets what they want; otherwise every holder gets an
// equal share of the capacity or its wants if less, and what those leave is
// split among the others in proportion to how much more they want. It
// returns the share of wants[self], rounded up (the grant is capped by the
// capacity still free in any case). Wants of 0 take no part.
func ProportionalShare(capacity int64, wants []int64, self int) int64 {
	var sum, n int64
	for _, w := range wants {
		if w > 0 {
			sum += w
			n++
		}
	}
	mine := wants[self]
	if mine <= 0 {
		return 0
	}
	if sum <= capacity {
		return mine
	}
	equal := float64(capacity) / float64(n)
	var given, extra float64
	for _, w := range wants {
		if w <= 0 {
			continue
		}
		f := float64(w)
		if f <= equal {
			given += f
		} else {
			given += equal
			extra += f - equal
		}
	}
	if float64(mine) <= equal {
		return mine
	}
	share := equal + (float64(capacity)-given)*(float64(mine)-equal)/extra
	return min(mine, int64(ceilEps(share)))
}

// ceilEps rounds up, ignoring float noise below 1e-9.
func ceilEps(f float64) float64 {
	i := float64(int64(f))
	if f-i > 1e-9 {
		return i + 1
	}
	return i
}

// MemoryBlocks is a BlockStore in this process: the exact rules of the Redis
// scripts, for tests (the model test runs many replicas against it; a test
// checks the scripts give the same answers) and for replicas sharing one
// process. Restart drops its state as a restarted Redis would. Safe for
// concurrent use.
type MemoryBlocks struct {
	mu       sync.Mutex
	born     int64 // ms; -1: no epoch yet (empty store)
	pools    map[string]map[string]*blockEntry
	seen     map[string][2]int64     // pool -> last refresh, learning-mode end (ms)
	windows  map[string]*windowCount // "pool:" or "tenant:" + name + ":rpm"/":tpm"
	replicas map[string]int64        // replica -> heartbeat expiry ms
	down     bool
}

type blockEntry struct {
	granted, expires, want, seq, inUse, requests, tokens int64
}

var _ BlockStore = (*MemoryBlocks)(nil)

// NewMemoryBlocks returns an empty store. With established set it behaves
// as a store that has been up for longer than any lease (no learning mode
// at first use); otherwise its first refresh starts learning mode.
func NewMemoryBlocks(established bool) *MemoryBlocks {
	m := &MemoryBlocks{born: -1}
	m.reset()
	if established {
		m.born = 0
	}
	return m
}

func (m *MemoryBlocks) reset() {
	m.born = -1
	m.pools = map[string]map[string]*blockEntry{}
	m.seen = map[string][2]int64{}
	m.windows = map[string]*windowCount{}
	m.replicas = map[string]int64{}
}

// Restart drops every grant, window and heartbeat, as a Redis restarted
// without persistence does.
func (m *MemoryBlocks) Restart() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reset()
}

// SetDown makes Refresh fail (an unreachable store) until SetDown(false).
func (m *MemoryBlocks) SetDown(down bool) {
	m.mu.Lock()
	m.down = down
	m.mu.Unlock()
}

// GrantedSum is the sum of unexpired blocks of pool at now: the invariant
// is GrantedSum <= the pool's capacity (tests).
func (m *MemoryBlocks) GrantedSum(pool string, now time.Time) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var sum int64
	for _, e := range m.pools[pool] {
		if e.expires > now.UnixMilli() {
			sum += e.granted
		}
	}
	return sum
}

// Refresh implements BlockStore.
func (m *MemoryBlocks) Refresh(ctx context.Context, r BlockRefresh) (BlockAnswer, error) {
	if err := ctx.Err(); err != nil {
		return BlockAnswer{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return BlockAnswer{}, ErrUnavailable
	}
	now := r.Now.UnixMilli()
	ttl := r.TTL.Milliseconds()
	m.replicas[r.Replica] = now + ttl
	live := 0
	for id, exp := range m.replicas {
		if exp <= now {
			delete(m.replicas, id)
			continue
		}
		live++
	}
	out := BlockAnswer{Replicas: max(live, 1)}
	for _, q := range r.Pools {
		if m.born < 0 {
			m.born = now // the first pool refresh of an empty store starts its epoch
		}
		gap := m.gap(q.Pool, now, ttl) // records the refresh: always, learning or not
		out.Pools = append(out.Pools, m.refreshPool(r.Replica, now, ttl, gap || now < m.born+ttl, q))
	}
	for _, q := range r.Tenants {
		out.Tenants = append(out.Tenants, m.allow("tenant:"+q.Tenant, r.Now, q.Window))
	}
	return out, nil
}

// gap records a refresh of pool and reports whether the pool is in learning
// mode after a gap: no replica refreshed it for longer than half a lease.
// Every live replica refreshes every pool each RefreshEvery (< half a
// lease), so such a gap means the store was down or cut off for everyone,
// long enough that grants may have expired while their replicas kept
// using them (degraded); learning mode for one lease lets them re-assert
// what they hold before anything new is granted.
func (m *MemoryBlocks) gap(pool string, now, ttl int64) bool {
	st, ok := m.seen[pool]
	if ok && now-st[0] > ttl/2 {
		st[1] = now + ttl
	}
	st[0] = max(st[0], now)
	m.seen[pool] = st
	return now < st[1]
}

func (m *MemoryBlocks) refreshPool(replica string, now, ttl int64, learning bool, q BlockRequest) BlockGrant {
	entries := m.pools[q.Pool]
	if entries == nil {
		entries = map[string]*blockEntry{}
		m.pools[q.Pool] = entries
	}
	if e := entries[replica]; e != nil && e.expires > now && q.Seq < e.seq {
		return BlockGrant{Stale: true}
	}
	var g BlockGrant
	var othersGranted int64
	ids := make([]string, 0, len(entries))
	for id := range entries {
		ids = append(ids, id)
	}
	sort.Strings(ids) // the scripts' order does not matter to the result; sorted for determinism
	wants := []int64{q.Want}
	for _, id := range ids {
		e := entries[id]
		if e.expires <= now {
			delete(entries, id)
			continue
		}
		if id == replica {
			continue
		}
		othersGranted += e.granted
		g.OthersInUse += e.inUse
		g.OthersRequests += e.requests
		g.OthersTokens += e.tokens
		if e.granted > 0 || e.want > 0 {
			g.Holders++
		}
		wants = append(wants, max(e.want, e.granted))
	}
	granted, share := grantFor(q, othersGranted, learning, wants)
	if granted > 0 || q.Want > 0 || q.InUse > 0 || q.Requests > 0 || q.Tokens > 0 {
		entries[replica] = &blockEntry{granted: granted, expires: now + ttl, want: q.Want, seq: q.Seq, inUse: q.InUse, requests: q.Requests, tokens: q.Tokens}
	} else {
		delete(entries, replica)
	}
	if granted > 0 || q.Want > 0 {
		g.Holders++
	}
	g.Granted, g.Share, g.Learning, g.GrantedAll = granted, share, learning, othersGranted+granted
	g.Window = m.allow("pool:"+q.Pool, time.UnixMilli(now), q.Window)
	return g
}

// grantFor is the grant rule both stores apply: the proportional share of
// the capacity, no more than is free (the capacity less the others'
// unexpired blocks), nothing new in learning mode, and never less than
// Keep (the replica may be using that much). It returns the grant and the
// share.
func grantFor(q BlockRequest, othersGranted int64, learning bool, wants []int64) (int64, int64) {
	if q.Capacity <= 0 {
		return 0, 0
	}
	share := ProportionalShare(q.Capacity, wants, 0)
	g := min(q.Want, share, q.Capacity-othersGranted)
	if learning {
		g = min(g, q.Keep)
	}
	return max(g, q.Keep, 0), share
}

func (m *MemoryBlocks) window(key string) *windowCount {
	w := m.windows[key]
	if w == nil {
		w = &windowCount{}
		m.windows[key] = w
	}
	return w
}

// allow applies an allowance's refund, then charges what it can (all of
// Need or nothing, up to Want) to the current minute.
func (m *MemoryBlocks) allow(key string, now time.Time, a Allowance) AllowanceGrant {
	cur := minuteOf(now)
	out := AllowanceGrant{Minute: cur}
	rw, tw := m.window(key+":rpm"), m.window(key+":tpm")
	if a.RefundMinute >= cur-1 {
		at := time.Unix(a.RefundMinute*60, 0)
		rw.adjust(now, at, -a.RefundRequests)
		tw.adjust(now, at, -a.RefundTokens)
	}
	req, refusedReq := grantWindow(rw, now, a.RPM, a.NeedRequests, a.WantRequests)
	tok, refusedTok := grantWindow(tw, now, a.TPM, a.NeedTokens, a.WantTokens)
	if refusedReq || refusedTok {
		out.RetryAfter = time.Unix((cur+1)*60, 0).Sub(now)
		out.Refused = "requests_per_minute"
		if !refusedReq {
			out.Refused = "tokens_per_minute"
		}
		return out
	}
	if a.RPM > 0 {
		rw.cur += req
	}
	if a.TPM > 0 {
		tw.cur += tok
	}
	out.Requests, out.Tokens = req, tok
	return out
}

// grantWindow says how much of [need, want] fits in w under limit (0 =
// unlimited: want, nothing charged) and whether even need does not fit.
func grantWindow(w *windowCount, now time.Time, limit, need, want int64) (int64, bool) {
	if limit <= 0 {
		return want, false
	}
	room := limit - w.estimate(now)
	if room < need || (need == 0 && want > 0 && room <= 0) {
		return 0, need > 0
	}
	return max(min(want, room), need, 0), false
}

// Close implements BlockStore.
func (m *MemoryBlocks) Close() error { return nil }
