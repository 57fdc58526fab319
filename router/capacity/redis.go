package capacity

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/switchyard-dev/switchyard/internal/clock"
)

// Redis is the shared Store: every router replica pointing at the same Redis
// (or Redis Cluster) sees the same in-flight count, requests-per-minute and
// tokens-per-minute windows for every pool and tenant.
//
// Cost: Acquire is one round trip (one EVALSHA, or two EVALSHAs in one
// pipeline when the reservation has a tenant). Release never blocks: it is
// queued and a background worker pipelines queued releases in batches.
// A background renewer refreshes every lease this replica holds in one
// pipeline per tick and writes this replica's heartbeat in the same pipeline.
// See docs/capacity.md.
//
// Time comes from the injected Clock and is passed to the scripts as an
// argument: replicas must be NTP-synced. Leases tolerate clock skew well below
// LeaseTTL; windows tolerate skew well below a minute.
//
// Safe for concurrent use.
type Redis struct {
	client   redis.UniversalClient
	clock    clock.Clock
	timeout  time.Duration
	ttl      time.Duration
	renew    time.Duration
	replica  string
	prefix   string
	log      *slog.Logger
	since    time.Time
	replicas atomic.Int64

	errMu   sync.Mutex
	lastErr string

	nonces atomic.Uint64

	// keys: pool name -> *minuteKeys of the current minute (the six key
	// names an acquire touches, built once per pool per minute, not per
	// call); tenantKeys the same for tenants' four.
	keys, tenantKeys sync.Map

	heldMu sync.Mutex
	held   map[string]map[string]string // pool -> lease member -> nonce, held by this replica
	// pending: releases queued but not landed yet (pool -> member -> nonce),
	// so that this replica taking the same member again right away replaces
	// its own lease instead of being refused as a duplicate.
	pending map[string]map[string]string

	qMu     sync.Mutex
	queue   []settleOp
	seqIn   uint64 // last sequence number queued
	seqDone uint64 // every op with seq <= seqDone has landed (or was dropped)
	waiters []flushWaiter
	wake    chan struct{}

	stopWorker chan struct{}
	workerDone chan struct{}
	bgCtx      context.Context // canceled at Close: aborts a renewal in progress
	bgCancel   context.CancelFunc
	closeOnce  sync.Once
	closed     atomic.Bool
}

var _ Store = (*Redis)(nil)

// RedisOptions configure a Redis store.
type RedisOptions struct {
	// URL selects the server:
	//   redis://[user:password@]host:port[/db]     one node
	//   rediss://...                                one node over TLS
	//   redis+cluster://[user:pass@]h1:p1,h2:p2     Redis Cluster from seeds
	//   rediss+cluster://...                        Redis Cluster over TLS
	// Several comma-separated redis:// URLs also mean Redis Cluster seeds.
	URL string
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Timeout bounds every call on the request path (Acquire, Usage, Ping)
	// whose context has no deadline of its own (default 150ms; Resilient
	// passes its own Timeout). A call that runs out
	// of time returns an error wrapping ErrUnavailable; a slot Redis grants
	// after that is released again by the release worker.
	Timeout time.Duration
	// LeaseTTL is how long a slot survives without renewal (default 15s):
	// a replica that dies gives its slots back within LeaseTTL.
	LeaseTTL time.Duration
	// RenewEvery is the renew and heartbeat period (default LeaseTTL/3).
	RenewEvery time.Duration
	// Replica identifies this replica in heartbeats (default host-pid-random).
	Replica string
	// KeyPrefix starts every key (default "sy"); it must not contain braces.
	KeyPrefix string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Hooks are added to the go-redis client (metrics, tracing, tests).
	Hooks []redis.Hook
}

const (
	defaultTimeout  = 150 * time.Millisecond
	defaultLeaseTTL = 15 * time.Second
	releaseBatch    = 512
	bucketTTL       = 180 // seconds a minute bucket is kept (it is read for two minutes)
	// settleMaxAge: a queued release older than this is dropped: its lease
	// has expired by itself and its minute bucket no longer counts.
	settleMaxAge = 2*Window + defaultLeaseTTL
)

// NewRedis builds a Redis store and starts its background loops. It does not
// wait for Redis to answer (a replica must start while Redis is down; wrap it
// in Resilient): only bad options are errors.
func NewRedis(o RedisOptions) (*Redis, error) {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("redis capacity store: timeout %s is negative", o.Timeout)
	}
	if o.Timeout == 0 {
		o.Timeout = defaultTimeout
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = defaultLeaseTTL
	}
	if o.LeaseTTL < 10*time.Millisecond {
		return nil, fmt.Errorf("redis capacity store: lease ttl %s is too short", o.LeaseTTL)
	}
	if o.RenewEvery <= 0 {
		o.RenewEvery = o.LeaseTTL / 3
	}
	if o.RenewEvery >= o.LeaseTTL {
		return nil, fmt.Errorf("redis capacity store: renew period %s must be shorter than the lease ttl %s", o.RenewEvery, o.LeaseTTL)
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = "sy"
	}
	if strings.ContainsAny(o.KeyPrefix, "{}") {
		return nil, fmt.Errorf("redis capacity store: key prefix %q must not contain braces", o.KeyPrefix)
	}
	if o.Replica == "" {
		o.Replica = defaultReplicaID()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	client, err := newUniversalClient(o.URL)
	if err != nil {
		return nil, err
	}
	for _, h := range o.Hooks {
		client.AddHook(h)
	}
	r := &Redis{
		client:     client,
		clock:      o.Clock,
		timeout:    o.Timeout,
		ttl:        o.LeaseTTL,
		renew:      o.RenewEvery,
		replica:    o.Replica,
		prefix:     o.KeyPrefix,
		log:        o.Logger.With("component", "capacity", "store", "redis", "replica", o.Replica),
		since:      o.Clock.Now(),
		held:       map[string]map[string]string{},
		pending:    map[string]map[string]string{},
		wake:       make(chan struct{}, 1),
		stopWorker: make(chan struct{}),
		workerDone: make(chan struct{}),
	}
	r.bgCtx, r.bgCancel = context.WithCancel(context.Background())
	r.replicas.Store(1)
	go r.loop()
	return r, nil
}

func defaultReplicaID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "replica"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// newUniversalClient parses the URL forms documented on RedisOptions.URL.
func newUniversalClient(raw string) (redis.UniversalClient, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, errors.New("redis capacity store: empty url")
	}
	noMaint := func() *maintnotifications.Config {
		return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, fmt.Errorf("redis capacity store: url %q has no scheme", redactURL(raw))
	}
	var seeds []string
	switch scheme {
	case "redis+cluster", "rediss+cluster":
		scheme = strings.TrimSuffix(scheme, "+cluster")
		seeds = []string{scheme + "://" + rest}
	case "redis", "rediss":
		if strings.Contains(rest, ",") {
			seeds = strings.Split(raw, ",")
			if !strings.Contains(seeds[1], "://") {
				seeds = []string{raw} // host list after one scheme
			}
		}
	default:
		return nil, fmt.Errorf("redis capacity store: unsupported url scheme %q (want redis, rediss, redis+cluster or rediss+cluster)", scheme)
	}
	if seeds == nil {
		opt, err := redis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("redis capacity store: parse url %q: %w", redactURL(raw), err)
		}
		opt.DisableIdentity = true
		opt.MaintNotificationsConfig = noMaint()
		opt.ContextTimeoutEnabled = true // a context deadline bounds every call (a stalled server cannot hold one longer)
		if opt.DialerRetries == 0 {
			opt.DialerRetries = 1 // a refused dial means down: let the breaker decide, fast
		}
		return redis.NewClient(opt), nil
	}
	copt, err := parseClusterSeeds(seeds)
	if err != nil {
		return nil, err
	}
	copt.DisableIdentity = true
	copt.MaintNotificationsConfig = noMaint()
	copt.ContextTimeoutEnabled = true
	if copt.DialerRetries == 0 {
		copt.DialerRetries = 1
	}
	return redis.NewClusterClient(copt), nil
}

// parseClusterSeeds turns either one URL with a comma-separated host list or
// several full URLs into ClusterOptions (credentials and TLS from the first).
func parseClusterSeeds(seeds []string) (*redis.ClusterOptions, error) {
	first := strings.TrimSpace(seeds[0])
	scheme, rest, _ := strings.Cut(first, "://")
	auth, hostsAndPath := "", rest
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		if end := strings.IndexAny(rest, "/?"); end < 0 || at < end {
			auth, hostsAndPath = rest[:at+1], rest[at+1:]
		}
	}
	hosts, tail := hostsAndPath, ""
	if i := strings.IndexAny(hostsAndPath, "/?"); i >= 0 {
		hosts, tail = hostsAndPath[:i], hostsAndPath[i:]
	}
	addrs := strings.Split(hosts, ",")
	for _, s := range seeds[1:] {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("redis capacity store: parse cluster seed %q: %w", redactURL(s), err)
		}
		addrs = append(addrs, u.Host)
	}
	path, query, _ := strings.Cut(tail, "?")
	_ = path // a cluster has no databases
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("redis capacity store: parse cluster url query: %w", err)
	}
	for _, a := range addrs[1:] {
		if a = strings.TrimSpace(a); a != "" {
			q.Add("addr", a)
		}
	}
	u := scheme + "://" + auth + strings.TrimSpace(addrs[0])
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	opt, err := redis.ParseClusterURL(u)
	if err != nil {
		return nil, fmt.Errorf("redis capacity store: parse cluster url %q: %w", redactURL(u), err)
	}
	return opt, nil
}

// redactURL hides a password for error messages.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	if i := strings.LastIndex(s, "@"); i >= 0 {
		if j := strings.Index(s, "://"); j >= 0 && j < i {
			return s[:j+3] + "xxxxx" + s[i:]
		}
	}
	return s
}

// Keys. Everything about one pool lives in the slot of {pool:NAME}, everything
// about one tenant in the slot of {tenant:NAME}: each script touches one slot.

func (r *Redis) poolKey(pool, suffix string) string {
	return r.prefix + ":{pool:" + pool + "}:" + suffix
}

func (r *Redis) tenantKey(tenant, suffix string) string {
	return r.prefix + ":{tenant:" + tenant + "}:" + suffix
}

func (r *Redis) replicasKey() string { return r.prefix + ":replicas" }

// minuteKeys are the keys one acquire script touches for one pool or
// tenant in one minute. Never modified once stored, so readers share them
// without a lock.
type minuteKeys struct {
	minute int64
	keys   []string
}

// cachedKeys returns name's keys for minute cur from cache, building them
// with build when the minute changed. The router reserves only pools and
// tenants named in its fleet file, so a cache holds one entry per
// configured pool or tenant (and one per pool a reload removed).
func cachedKeys(cache *sync.Map, name string, cur int64, build func() []string) []string {
	if v, ok := cache.Load(name); ok {
		if mk := v.(*minuteKeys); mk.minute == cur {
			return mk.keys
		}
	}
	mk := &minuteKeys{minute: cur, keys: build()}
	cache.Store(name, mk)
	return mk.keys
}

// Positions in acquireKeys' answer (acquirePool's KEYS, 1-based there).
const (
	keyLeases = iota
	keyOwners
	keyRPMCur
	keyRPMPrev
	keyTPMCur
	keyTPMPrev
)

// acquireKeys: leases, owners, rpm cur, rpm prev, tpm cur, tpm prev.
func (r *Redis) acquireKeys(pool string, cur int64) []string {
	return cachedKeys(&r.keys, pool, cur, func() []string {
		return []string{
			r.poolKey(pool, "leases"), r.poolKey(pool, "owners"),
			r.poolKey(pool, minuteSuffix("rpm", cur)), r.poolKey(pool, minuteSuffix("rpm", cur-1)),
			r.poolKey(pool, minuteSuffix("tpm", cur)), r.poolKey(pool, minuteSuffix("tpm", cur-1)),
		}
	})
}

// tenantWindowKeys: rpm cur, rpm prev, tpm cur, tpm prev.
func (r *Redis) tenantWindowKeys(tenant string, cur int64) []string {
	return cachedKeys(&r.tenantKeys, tenant, cur, func() []string {
		return []string{
			r.tenantKey(tenant, minuteSuffix("rpm", cur)), r.tenantKey(tenant, minuteSuffix("rpm", cur-1)),
			r.tenantKey(tenant, minuteSuffix("tpm", cur)), r.tenantKey(tenant, minuteSuffix("tpm", cur-1)),
		}
	})
}

func minuteSuffix(kind string, minute int64) string {
	return kind + ":" + strconv.FormatInt(minute, 10)
}

// windowLua is the sliding-window arithmetic both acquire scripts share (the
// two-bucket estimate of window.go, the previous minute's share rounded up):
// window_check returns 0, -1 (requests/min spent) or -2 (tokens/min spent);
// window_charge counts one request and its tokens.
const windowLua = `
local function window_estimate(cur, prev, rem)
  return tonumber(redis.call('GET', cur) or '0') + math.ceil(tonumber(redis.call('GET', prev) or '0') * rem / 60000)
end
local function window_check(rpm_cur, rpm_prev, tpm_cur, tpm_prev, rpm, tpm, tokens, rem)
  if rpm > 0 and window_estimate(rpm_cur, rpm_prev, rem) + 1 > rpm then return -1 end
  if tpm > 0 and window_estimate(tpm_cur, tpm_prev, rem) + tokens > tpm then return -2 end
  return 0
end
local function window_charge(rpm_cur, tpm_cur, tokens, ttl)
  redis.call('INCR', rpm_cur)
  redis.call('EXPIRE', rpm_cur, ttl)
  if tokens ~= 0 then
    redis.call('INCRBY', tpm_cur, tokens)
    redis.call('EXPIRE', tpm_cur, ttl)
  end
end
`

// acquirePool: purge expired leases, refuse a member (tenant + request id)
// that already holds a slot, concurrency, requests/min and tokens/min checks,
// then charge. Returns 1 (taken), 3 (member already holds a slot: refused,
// nothing charged), 0 (pool full), -1 (requests/min spent), -2 (tokens/min
// spent). The owners hash maps each member to the nonce of the acquisition
// holding it, so a release (or the undo of an acquire whose caller left)
// removes only its own lease.
var acquirePool = redis.NewScript(windowLua + `
-- KEYS: 1 leases zset, 2 owners hash, 3 rpm cur, 4 rpm prev, 5 tpm cur, 6 tpm prev
-- ARGV: 1 member, 2 now ms, 3 lease expiry ms, 4 max concurrent, 5 rpm limit,
--       6 tpm limit, 7 tokens, 8 ms left of the previous bucket's weight, 9 key ttl ms, 10 bucket ttl s,
--       11 nonce, 12 nonce of this replica's own lease of member whose release is still queued ('' if none)
local now = tonumber(ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 1, #gone do redis.call('HDEL', KEYS[2], gone[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if ARGV[12] ~= '' and redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[12] then
    redis.call('ZREM', KEYS[1], ARGV[1])
  else
    return 3
  end
end
local maxc = tonumber(ARGV[4])
if maxc > 0 and redis.call('ZCARD', KEYS[1]) >= maxc then return 0 end
local refused = window_check(KEYS[3], KEYS[4], KEYS[5], KEYS[6], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]))
if refused ~= 0 then return refused end
window_charge(KEYS[3], KEYS[5], tonumber(ARGV[7]), ARGV[10])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[11])
redis.call('PEXPIRE', KEYS[1], ARGV[9])
redis.call('PEXPIRE', KEYS[2], ARGV[9])
return 1
`)

// acquireTenant: requests/min and tokens/min check-and-charge for a tenant.
// Returns 1 (charged), -1 (requests/min spent), -2 (tokens/min spent).
var acquireTenant = redis.NewScript(windowLua + `
-- KEYS: 1 rpm cur, 2 rpm prev, 3 tpm cur, 4 tpm prev
-- ARGV: 1 rpm limit, 2 tpm limit, 3 tokens, 4 ms left of the previous bucket's weight, 5 bucket ttl s
local refused = window_check(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
if refused ~= 0 then return refused end
window_charge(KEYS[1], KEYS[3], tonumber(ARGV[3]), ARGV[5])
return 1
`)

// settle: release a lease (when KEYS[3], KEYS[4] are given; only the
// acquisition named by the nonce) and add deltas to one minute's requests and
// tokens buckets, never below zero and never re-creating an expired bucket.
// With ARGV[5] = '1' the deltas apply only if that lease was held (the undo of
// an acquire whose answer never reached the caller).
var settle = redis.NewScript(`
-- KEYS: 1 rpm bucket, 2 tpm bucket, [3 leases zset, 4 owners hash]
-- ARGV: 1 rpm delta, 2 tpm delta, [3 member, 4 nonce, 5 only-if-held]
if #KEYS >= 4 then
  if redis.call('HGET', KEYS[4], ARGV[3]) == ARGV[4] then
    redis.call('ZREM', KEYS[3], ARGV[3])
    redis.call('HDEL', KEYS[4], ARGV[3])
  elseif ARGV[5] == '1' then
    return 0
  end
end
local function adjust(k, d)
  if d ~= 0 and redis.call('EXISTS', k) == 1 then
    if redis.call('INCRBY', k, d) < 0 then redis.call('SET', k, 0, 'KEEPTTL') end
  end
end
adjust(KEYS[1], tonumber(ARGV[1]))
adjust(KEYS[2], tonumber(ARGV[2]))
return 1
`)

type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
}

// evalAll runs the calls by SHA, several in one pipeline. Calls the server does not
// know yet (NOSCRIPT: first use, restarted or flushed server) are sent again
// with their source in a second pipeline; the source loads them for later.
// A NOSCRIPT call did not run, so resending it cannot apply anything twice.
func (r *Redis) evalAll(ctx context.Context, calls []scriptCall) ([]*redis.Cmd, error) {
	if len(calls) == 1 {
		// One script (no tenant): a plain command, without a pipeline's
		// bookkeeping; still one round trip (two on a NOSCRIPT answer).
		c := calls[0]
		cmd := c.script.EvalSha(ctx, r.client, c.keys, c.args...)
		if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			cmd = c.script.Eval(ctx, r.client, c.keys, c.args...)
		}
		if err := cmd.Err(); err != nil && !isRedisReply(err) {
			return []*redis.Cmd{cmd}, err // transport failure: in doubt
		}
		return []*redis.Cmd{cmd}, nil
	}
	return pipelineScripts(ctx, r.client, calls, nil)
}

// pipelineScripts runs the calls by SHA in one pipeline, after whatever
// first adds to it (nil: nothing). Calls the server does not know yet
// (NOSCRIPT) are sent again with their source in a second pipeline. It
// returns an error only for a transport failure (the whole pipeline is in
// doubt); a script's error reply is left on its command.
func pipelineScripts(ctx context.Context, client redis.UniversalClient, calls []scriptCall, first func(redis.Pipeliner)) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(calls))
	pipe := client.Pipeline()
	if first != nil {
		first(pipe)
	}
	for i, c := range calls {
		cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, err := pipe.Exec(ctx)
	if err == nil {
		return cmds, nil
	}
	var redo []int
	for i, cmd := range cmds {
		if e := cmd.Err(); e != nil {
			if !redis.HasErrorPrefix(e, "NOSCRIPT") {
				if isRedisReply(e) {
					continue // a script error: reported per command
				}
				return cmds, e // transport failure: the whole pipeline is in doubt
			}
			redo = append(redo, i)
		}
	}
	if len(redo) == 0 {
		return cmds, nil
	}
	pipe = client.Pipeline()
	for _, i := range redo {
		cmds[i] = calls[i].script.Eval(ctx, pipe, calls[i].keys, calls[i].args...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		for _, i := range redo {
			if e := cmds[i].Err(); e != nil && !isRedisReply(e) {
				return cmds, e
			}
		}
	}
	return cmds, nil
}

// isRedisReply: the server answered with an error reply (as opposed to a
// network failure, a timeout or a canceled context).
func isRedisReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.ErrClosed)
}

// windowArgs returns the current and previous minute and the ms left of the
// previous bucket's weight, as window.go computes it.
func windowArgs(now time.Time) (cur, prev int64, remMs int64) {
	cur = minuteOf(now)
	elapsed := now.Sub(time.Unix(cur*60, 0)).Milliseconds()
	return cur, cur - 1, 60000 - elapsed
}

func (r *Redis) poolCall(res Reservation, member, nonce, superseded string, now time.Time) scriptCall {
	cur, _, rem := windowArgs(now)
	nowMs := now.UnixMilli()
	return scriptCall{
		script: acquirePool,
		keys:   r.acquireKeys(res.Pool, cur),
		args: []any{
			member, nowMs, nowMs + r.ttl.Milliseconds(), res.Limits.MaxConcurrent,
			res.Limits.RequestsPerMinute, res.Limits.TokensPerMinute, res.Tokens, rem,
			r.keyTTL().Milliseconds(), bucketTTL, nonce, superseded,
		},
	}
}

func (r *Redis) tenantCall(res Reservation, now time.Time) scriptCall {
	cur, _, rem := windowArgs(now)
	return scriptCall{
		script: acquireTenant,
		keys:   r.tenantWindowKeys(res.Tenant, cur),
		args:   []any{res.TenantLimits.RequestsPerMinute, res.TenantLimits.TokensPerMinute, res.Tokens, rem, bucketTTL},
	}
}

// keyTTL: a pool's lease keys outlive their last lease by this much (in
// Redis time) so idle pools leave nothing behind.
func (r *Redis) keyTTL() time.Duration { return 2*r.ttl + Window }

// Acquire implements Store: one round trip, bounded by Timeout.
//
// Without a tenant: one EVALSHA in the pool's slot. With a tenant: the
// tenant's check-and-charge and the pool's script go in one pipeline (two
// slots, possibly two cluster nodes, still one round trip); each runs
// atomically on its own. When one refuses and the other charged, the other's
// charge is undone off the critical path by the release worker: until it
// lands (well under a millisecond plus one batch) the pool or tenant counts
// one reservation too many, which can only refuse, never over-admit.
//
// When no answer arrives in time (or the caller leaves), the pool script may
// still run after the caller stopped waiting: an undo is queued that releases
// the slot and refunds the pool's charge if, and only if, that acquisition was
// granted. (A tenant charge of such a call is not refunded: it can only make
// the tenant's window refuse early, for at most a minute.)
func (r *Redis) Acquire(ctx context.Context, res Reservation) (Lease, error) {
	if err := ctx.Err(); err != nil {
		return Lease{}, fmt.Errorf("redis acquire: %w", err)
	}
	if r.closed.Load() {
		return Lease{}, fmt.Errorf("redis acquire: %w: store closed", ErrUnavailable)
	}
	if res.ID == "" || res.Pool == "" {
		return Lease{}, errors.New("redis acquire: reservation needs an id and a pool")
	}
	now := r.clock.Now()
	member := leaseMember(res.Tenant, res.ID)
	nonce := r.replica + "#" + strconv.FormatUint(r.nonces.Add(1), 10)
	calls := []scriptCall{r.poolCall(res, member, nonce, r.pendingNonce(res.Pool, member), now)}
	if res.Tenant != "" {
		calls = append(calls, r.tenantCall(res, now))
	}
	cctx, cancel := r.bounded(ctx)
	defer cancel()
	cmds, err := r.evalAll(cctx, calls)
	if err != nil {
		r.setErr(err)
		r.undo(settleOp{pool: res.Pool, member: member, nonce: nonce, ifHeld: true, minute: minuteOf(now), rpmDelta: -1, tpmDelta: -res.Tokens})
		if cerr := ctx.Err(); cerr != nil {
			return Lease{}, fmt.Errorf("redis acquire: %w", cerr)
		}
		return Lease{}, fmt.Errorf("redis acquire: %w: %w", ErrUnavailable, err)
	}
	poolCode, err := cmds[0].Int64()
	if err != nil {
		r.setErr(err)
		return Lease{}, fmt.Errorf("redis acquire: %w: pool script: %w", ErrUnavailable, err)
	}
	undoPool := settleOp{pool: res.Pool, member: member, nonce: nonce, ifHeld: true, minute: minuteOf(now), rpmDelta: -1, tpmDelta: -res.Tokens}
	tenantCode := int64(1)
	tenantOK := res.Tenant == ""
	if res.Tenant != "" {
		if tenantCode, err = cmds[1].Int64(); err != nil {
			r.setErr(err)
			if poolCode == 1 {
				r.undo(undoPool)
			}
			return Lease{}, fmt.Errorf("redis acquire: %w: tenant script: %w", ErrUnavailable, err)
		}
		tenantOK = tenantCode == 1
	}
	switch {
	case poolCode == 1 && tenantOK:
		r.hold(res.Pool, member, nonce)
		return Lease{ID: res.ID, Pool: res.Pool, Tenant: res.Tenant, Tokens: res.Tokens, Acquired: now, Nonce: nonce}, nil
	case poolCode == 1:
		r.undo(undoPool)
		return Lease{}, quotaError("tenant", res.Tenant, tenantCode, now)
	default:
		if res.Tenant != "" && tenantOK {
			r.enqueue(r.refundTenant(res, now))
		}
		switch poolCode {
		case 0:
			return Lease{}, ErrPoolFull
		case 3:
			return Lease{}, ErrDuplicate
		}
		return Lease{}, quotaError("pool", res.Pool, poolCode, now)
	}
}

func quotaError(scope, name string, code int64, now time.Time) error {
	kind := "requests_per_minute"
	if code == -2 {
		kind = "tokens_per_minute"
	}
	next := time.Unix((minuteOf(now)+1)*60, 0)
	return &QuotaError{Scope: scope, Name: name, Kind: kind, RetryAfter: next.Sub(now)}
}

func (r *Redis) hold(pool, member, nonce string) {
	r.heldMu.Lock()
	m := r.held[pool]
	if m == nil {
		m = map[string]string{}
		r.held[pool] = m
	}
	m[member] = nonce
	r.heldMu.Unlock()
}

// unhold forgets a held lease; it reports false when this replica does not
// hold that acquisition (released twice, or never acquired here).
func (r *Redis) unhold(pool, member, nonce string) bool {
	r.heldMu.Lock()
	defer r.heldMu.Unlock()
	m := r.held[pool]
	if nonce == "" || m[member] != nonce {
		return false
	}
	delete(m, member)
	if len(m) == 0 {
		delete(r.held, pool)
	}
	return true
}

// undo queues the release of an acquisition the caller will not use; until
// it lands, this replica may take the same member again (it supersedes it).
func (r *Redis) undo(op settleOp) {
	r.setPending(op.pool, op.member, op.nonce)
	r.enqueue(op)
}

// pendingNonce returns the nonce of this replica's lease of member in pool
// whose release is queued but has not landed, or "".
func (r *Redis) pendingNonce(pool, member string) string {
	r.heldMu.Lock()
	defer r.heldMu.Unlock()
	return r.pending[pool][member]
}

func (r *Redis) setPending(pool, member, nonce string) {
	r.heldMu.Lock()
	m := r.pending[pool]
	if m == nil {
		m = map[string]string{}
		r.pending[pool] = m
	}
	m[member] = nonce
	r.heldMu.Unlock()
}

// landed forgets pending releases among ops (they reached Redis or were dropped).
func (r *Redis) landed(ops []settleOp) {
	r.heldMu.Lock()
	defer r.heldMu.Unlock()
	for _, op := range ops {
		if op.member == "" {
			continue
		}
		if m := r.pending[op.pool]; m[op.member] == op.nonce {
			delete(m, op.member)
			if len(m) == 0 {
				delete(r.pending, op.pool)
			}
		}
	}
}

// settleOp is one queued write for the release worker.
type settleOp struct {
	pool, tenant  string
	member, nonce string // member set: release that acquisition's lease
	ifHeld        bool   // apply the deltas only if the lease was held (undo of an acquire)
	minute        int64  // bucket the charge went to
	rpmDelta      int64
	tpmDelta      int64
	queued        time.Time // by the store's clock
	seq           uint64
}

func (r *Redis) refundTenant(res Reservation, now time.Time) settleOp {
	return settleOp{tenant: res.Tenant, minute: minuteOf(now), rpmDelta: -1, tpmDelta: -res.Tokens}
}

// Release implements Store: it never blocks on the network. The slot is
// freed and the tokens settled by the release worker's next pipeline.
func (r *Redis) Release(l Lease, usedTokens int64) {
	member := leaseMember(l.Tenant, l.ID)
	if !r.unhold(l.Pool, member, l.Nonce) {
		return // not held here (released twice, or never acquired)
	}
	delta := usedTokens - l.Tokens
	m := minuteOf(l.Acquired)
	r.setPending(l.Pool, member, l.Nonce)
	r.enqueue(settleOp{pool: l.Pool, member: member, nonce: l.Nonce, minute: m, tpmDelta: delta})
	if l.Tenant != "" && delta != 0 {
		r.enqueue(settleOp{tenant: l.Tenant, minute: m, tpmDelta: delta})
	}
}

func (r *Redis) enqueue(op settleOp) {
	op.queued = r.clock.Now()
	r.qMu.Lock()
	r.seqIn++
	op.seq = r.seqIn
	r.queue = append(r.queue, op)
	r.qMu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

type flushWaiter struct {
	seq  uint64
	done chan struct{}
}

// Flush returns once every release queued before the call has landed in
// Redis (or was dropped as too old), or when ctx ends.
func (r *Redis) Flush(ctx context.Context) error {
	r.qMu.Lock()
	if r.seqDone >= r.seqIn {
		r.qMu.Unlock()
		return nil
	}
	w := flushWaiter{seq: r.seqIn, done: make(chan struct{})}
	r.waiters = append(r.waiters, w)
	r.qMu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("redis flush: %w", ctx.Err())
	case <-r.workerDone:
		return errors.New("redis flush: store closed with releases pending")
	}
}

// loop is the one background goroutine: on every tick it renews this
// replica's leases and heartbeat (one pipeline), and whenever releases are
// queued it pipelines them in batches, in order. Running both in one goroutine
// orders them: a renewal can never re-add a lease after its release landed.
// A release batch that fails on the network is retried with backoff until it
// lands or is older than settleMaxAge; meanwhile the released leases are no
// longer renewed, so their slots come back within LeaseTTL regardless.
func (r *Redis) loop() {
	defer close(r.workerDone)
	tick := time.NewTicker(r.renew)
	defer tick.Stop()
	renewDue := true
	backoff := time.Duration(0)
	var retry <-chan time.Time
	for {
		if renewDue {
			renewDue = false
			ctx, cancel := context.WithTimeout(r.bgCtx, min(r.renew, 2*time.Second))
			if err := r.renewOnce(ctx); err != nil {
				r.setErr(err)
				r.log.Debug("capacity renew failed", "err", err)
			}
			cancel()
		}
		if retry == nil {
			if err := r.drain(); err != nil {
				r.setErr(err)
				r.dropStale()
				backoff = min(max(2*backoff, 50*time.Millisecond), time.Second)
				retry = time.After(backoff)
				r.log.Debug("capacity release batch failed, will retry", "in", backoff, "err", err)
			} else {
				backoff = 0
			}
		}
		select {
		case <-r.stopWorker:
			return
		case <-tick.C:
			renewDue = true
		case <-r.wake:
		case <-retry:
			retry = nil
		}
	}
}

// drain lands every queued op, batch by batch.
func (r *Redis) drain() error {
	for {
		r.qMu.Lock()
		n := min(len(r.queue), releaseBatch)
		batch := append([]settleOp(nil), r.queue[:n]...)
		r.qMu.Unlock()
		if n == 0 {
			return nil
		}
		if err := r.settleBatch(batch); err != nil {
			return err
		}
		r.landed(batch)
		r.qMu.Lock()
		r.queue = r.queue[n:]
		r.markDone(batch[n-1].seq)
		r.qMu.Unlock()
	}
}

// markDone advances seqDone and wakes flushers; qMu held.
func (r *Redis) markDone(seq uint64) {
	if seq > r.seqDone {
		r.seqDone = seq
	}
	if len(r.queue) == 0 {
		r.seqDone = r.seqIn
	}
	kept := r.waiters[:0]
	for _, w := range r.waiters {
		if w.seq <= r.seqDone {
			close(w.done)
		} else {
			kept = append(kept, w)
		}
	}
	r.waiters = kept
}

// dropStale drops queued ops too old to matter any more (by the store's
// clock, the one lease expiries and minute buckets are computed on).
func (r *Redis) dropStale() {
	now := r.clock.Now()
	r.qMu.Lock()
	defer r.qMu.Unlock()
	i := 0
	for i < len(r.queue) && now.Sub(r.queue[i].queued) > settleMaxAge {
		i++
	}
	if i == 0 {
		return
	}
	r.log.Warn("capacity releases dropped after redis stayed unreachable; their leases expired by themselves", "ops", i)
	r.landed(r.queue[:i])
	last := r.queue[i-1].seq
	r.queue = r.queue[i:]
	r.markDone(last)
}

func (r *Redis) settleBatch(batch []settleOp) error {
	nowMinute := minuteOf(r.clock.Now())
	calls := make([]scriptCall, 0, len(batch))
	for _, op := range batch {
		rd, td := op.rpmDelta, op.tpmDelta
		if op.minute < nowMinute-1 {
			rd, td = 0, 0 // that minute no longer counts
		}
		bucket := strconv.FormatInt(op.minute, 10)
		if op.member != "" {
			ifHeld := "0"
			if op.ifHeld {
				ifHeld = "1"
			}
			calls = append(calls, scriptCall{script: settle,
				keys: []string{r.poolKey(op.pool, "rpm:"+bucket), r.poolKey(op.pool, "tpm:"+bucket), r.poolKey(op.pool, "leases"), r.poolKey(op.pool, "owners")},
				args: []any{rd, td, op.member, op.nonce, ifHeld}})
			continue
		}
		if rd == 0 && td == 0 {
			continue
		}
		calls = append(calls, scriptCall{script: settle,
			keys: []string{r.tenantKey(op.tenant, "rpm:"+bucket), r.tenantKey(op.tenant, "tpm:"+bucket)},
			args: []any{rd, td}})
	}
	if len(calls) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(r.bgCtx, 2*time.Second)
	defer cancel()
	cmds, err := r.evalAll(ctx, calls)
	if err != nil {
		return fmt.Errorf("redis release: %w", err)
	}
	for _, c := range cmds {
		if e := c.Err(); e != nil {
			// A script error is a bug, not an outage: retrying cannot help.
			r.log.Error("capacity release script failed", "err", e)
		}
	}
	return nil
}

// renewOnce refreshes every lease this replica holds and its heartbeat, in
// one pipeline. A held lease missing from Redis (expired during an outage,
// or a restarted server) is added back: the request is still running, so
// counting it is the truth, and at worst refuses, never over-admits.
func (r *Redis) renewOnce(ctx context.Context) error {
	now := r.clock.Now()
	nowMs := now.UnixMilli()
	expiry := float64(nowMs + r.ttl.Milliseconds())
	pipe := r.client.Pipeline()
	pipe.ZAdd(ctx, r.replicasKey(), redis.Z{Score: expiry, Member: r.replica})
	pipe.ZRemRangeByScore(ctx, r.replicasKey(), "-inf", strconv.FormatInt(nowMs, 10))
	count := pipe.ZCard(ctx, r.replicasKey())
	r.heldMu.Lock()
	for pool, held := range r.held {
		members := make([]redis.Z, 0, len(held))
		for member, nonce := range held {
			members = append(members, redis.Z{Score: expiry, Member: member})
			// A lease that expired (or a restarted server) gets its owner back,
			// unless another acquisition of the same member took it meanwhile.
			pipe.HSetNX(ctx, r.poolKey(pool, "owners"), member, nonce)
		}
		pipe.ZAddArgs(ctx, r.poolKey(pool, "leases"), redis.ZAddArgs{GT: true, Members: members})
		pipe.PExpire(ctx, r.poolKey(pool, "leases"), r.keyTTL())
		pipe.PExpire(ctx, r.poolKey(pool, "owners"), r.keyTTL())
	}
	r.heldMu.Unlock()
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("redis renew: %w", err)
	}
	if n := count.Val(); n > 0 {
		r.replicas.Store(n)
	}
	r.clearErr()
	return nil
}

// Usage implements Store: one pipeline (ZCOUNT of unexpired leases plus the
// four window buckets per pool).
func (r *Redis) Usage(ctx context.Context, pools []string) (map[string]PoolUsage, error) {
	now := r.clock.Now()
	cur, _, rem := windowArgs(now)
	type cmds struct {
		inflight                     *redis.IntCmd
		rpmCur, rpmPrev, tpmCur, tpm *redis.StringCmd
	}
	out := make(map[string]PoolUsage, len(pools))
	if len(pools) == 0 {
		return out, nil
	}
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	pipe := r.client.Pipeline()
	cs := make([]cmds, len(pools))
	from := "(" + strconv.FormatInt(now.UnixMilli(), 10)
	for i, p := range pools {
		k := r.acquireKeys(p, cur)
		cs[i] = cmds{
			inflight: pipe.ZCount(ctx, k[keyLeases], from, "+inf"),
			rpmCur:   pipe.Get(ctx, k[keyRPMCur]),
			rpmPrev:  pipe.Get(ctx, k[keyRPMPrev]),
			tpmCur:   pipe.Get(ctx, k[keyTPMCur]),
			tpm:      pipe.Get(ctx, k[keyTPMPrev]),
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		r.setErr(err)
		return nil, fmt.Errorf("redis usage: %w: %w", ErrUnavailable, err)
	}
	num := func(c *redis.StringCmd) int64 { v, _ := c.Int64(); return v }
	est := func(c, p *redis.StringCmd) int64 { return num(c) + num(p)*rem/60000 }
	for i, p := range pools {
		out[p] = PoolUsage{
			InFlight:           int(cs[i].inflight.Val()),
			RequestsLastMinute: est(cs[i].rpmCur, cs[i].rpmPrev),
			TokensLastMinute:   est(cs[i].tpmCur, cs[i].tpm),
		}
	}
	return out, nil
}

// bounded gives ctx the store's Timeout unless it already has a deadline
// (Resilient passes its own).
func (r *Redis) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, r.timeout)
}

// Ping checks that Redis answers (Resilient's half-open probe).
func (r *Redis) Ping(ctx context.Context) error {
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	if err := r.client.Ping(ctx).Err(); err != nil {
		r.setErr(err)
		return fmt.Errorf("redis ping: %w: %w", ErrUnavailable, err)
	}
	return nil
}

// Status implements Store. Replicas counts live heartbeats as of the last
// renew tick (at least 1).
func (r *Redis) Status() Status {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return Status{Mode: ModeShared, Replicas: int(r.replicas.Load()), LastError: r.lastErr, Since: r.since}
}

func (r *Redis) setErr(err error) {
	r.errMu.Lock()
	r.lastErr = err.Error()
	r.errMu.Unlock()
}

func (r *Redis) clearErr() {
	r.errMu.Lock()
	r.lastErr = ""
	r.errMu.Unlock()
}

// Close implements Store: stops renewing, releases every lease still held
// (best effort, bounded to a few seconds), removes the heartbeat and closes
// the client.
func (r *Redis) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		r.heldMu.Lock()
		held := r.held
		r.held = map[string]map[string]string{}
		r.heldMu.Unlock()
		for pool, members := range held {
			for member, nonce := range members {
				r.enqueue(settleOp{pool: pool, member: member, nonce: nonce, minute: minuteOf(r.clock.Now())})
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := r.Flush(ctx); err != nil {
			r.log.Warn("capacity releases not flushed at close; their leases expire within the ttl", "err", err)
		}
		r.bgCancel()
		close(r.stopWorker)
		<-r.workerDone
		zctx, zcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer zcancel()
		if err := r.client.ZRem(zctx, r.replicasKey(), r.replica).Err(); err != nil {
			r.log.Debug("capacity heartbeat not removed at close", "err", err)
		}
	})
	if err := r.client.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("redis close: %w", err)
	}
	return nil
}

// abandon simulates a replica that dies: loops stop, nothing is released,
// the heartbeat stays until it expires. For tests.
func (r *Redis) abandon() {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		r.bgCancel()
		close(r.stopWorker)
		<-r.workerDone
		_ = r.client.Close()
	})
}
