package capacity

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisBlocks is the BlockStore on a Redis or a Redis Cluster: the home
// store of the pools of one region. One Refresh is one pipeline: the
// replica's heartbeat, then one script per pool and one per tenant, each
// atomic in its own cluster slot.
//
// Keys (every pool's in the slot of {pool:NAME}, every tenant's in
// {tenant:NAME}):
//
//	sy:{pool:P}:blocks      HASH replica -> "granted:expiry_ms:want:seq:in_use:requests:tokens"
//	sy:{pool:P}:rpm:<min>   the pool's per-minute windows (the same keys strict counting uses)
//	sy:{tenant:T}:rpm:<min> a tenant's, likewise (and :tpm:)
//	sy:{pool:P}:seen        HASH seen -> the last refresh, learn -> end of learning mode (ms; no expiry)
//	sy:epoch                when this store's state began, unix ms (no expiry); on a
//	                        Cluster one per pool, sy:{pool:P}:epoch, in the pool's slot
//	sy:replicas             ZSET replica -> heartbeat expiry (shared with strict counting)
//
// A missing epoch means the store is new or restarted empty: the scripts
// set it and grant nothing beyond what replicas re-assert for one lease
// (learning mode). So does a gap: no replica refreshed the pool for longer
// than half a lease (the store was down or cut off for everyone while
// replicas kept using their blocks; see MemoryBlocks.gap). Safe for
// concurrent use.
type RedisBlocks struct {
	client  redis.UniversalClient
	prefix  string
	cluster bool
}

var _ BlockStore = (*RedisBlocks)(nil)

// RedisBlocksOptions configure a RedisBlocks store.
type RedisBlocksOptions struct {
	// URL: the forms RedisOptions.URL takes.
	URL string
	// KeyPrefix starts every key (default "sy"); it must not contain braces.
	KeyPrefix string
	// Hooks are added to the go-redis client (metrics, tests).
	Hooks []redis.Hook
}

// NewRedisBlocks builds a RedisBlocks store. It does not dial.
func NewRedisBlocks(o RedisBlocksOptions) (*RedisBlocks, error) {
	if o.KeyPrefix == "" {
		o.KeyPrefix = "sy"
	}
	if strings.ContainsAny(o.KeyPrefix, "{}") {
		return nil, fmt.Errorf("redis block store: key prefix %q must not contain braces", o.KeyPrefix)
	}
	client, err := newUniversalClient(o.URL)
	if err != nil {
		return nil, err
	}
	for _, h := range o.Hooks {
		client.AddHook(h)
	}
	_, cluster := client.(*redis.ClusterClient)
	return &RedisBlocks{client: client, prefix: o.KeyPrefix, cluster: cluster}, nil
}

// EpochKey is the key whose absence starts learning mode (single node).
func (s *RedisBlocks) EpochKey() string { return s.prefix + ":epoch" }

func (s *RedisBlocks) poolKey(pool, suffix string) string {
	return s.prefix + ":{pool:" + pool + "}:" + suffix
}

func (s *RedisBlocks) tenantKey(tenant, suffix string) string {
	return s.prefix + ":{tenant:" + tenant + "}:" + suffix
}

// allowanceLua grants a per-minute allowance: it applies the refund to its
// bucket (when that minute still counts), then charges all of need or
// nothing, up to want, to the current minute.
const allowanceLua = windowLua + `
local function adjust(k, d, ttl)
  if d == 0 then return end
  if d < 0 and redis.call('EXISTS', k) == 0 then return end
  if redis.call('INCRBY', k, d) < 0 then redis.call('SET', k, 0, 'KEEPTTL') end
  if d > 0 then redis.call('EXPIRE', k, ttl) end
end
local function grant_window(cur, prev, limit, need, want, rem)
  if limit <= 0 then return want, 0 end
  local room = limit - window_estimate(cur, prev, rem)
  if room < need or (need == 0 and want > 0 and room <= 0) then
    if need > 0 then return 0, 1 end
    return 0, 0
  end
  return math.max(math.min(want, room), need, 0), 0
end
-- K: rpm cur, rpm prev, tpm cur, tpm prev, rpm refund bucket, tpm refund bucket
-- A: rpm, tpm, need req, need tok, want req, want tok, refund req, refund tok, refund valid, rem ms, bucket ttl
local function allowance(K, A)
  local rpm, tpm = tonumber(A[1]), tonumber(A[2])
  if rpm <= 0 and tpm <= 0 then return 0, 0, 0 end
  local ttl = tonumber(A[11])
  if A[9] == '1' then
    adjust(K[5], -tonumber(A[7]), ttl)
    adjust(K[6], -tonumber(A[8]), ttl)
  end
  local rem = tonumber(A[10])
  local req, rr = grant_window(K[1], K[2], rpm, tonumber(A[3]), tonumber(A[5]), rem)
  local tok, tr = grant_window(K[3], K[4], tpm, tonumber(A[4]), tonumber(A[6]), rem)
  if rr == 1 then return 0, 0, -1 end
  if tr == 1 then return 0, 0, -2 end
  if rpm > 0 and req > 0 then redis.call('INCRBY', K[1], req); redis.call('EXPIRE', K[1], ttl) end
  if tpm > 0 and tok > 0 then redis.call('INCRBY', K[3], tok); redis.call('EXPIRE', K[3], ttl) end
  return req, tok, 0
end
`

// refreshBlock: one replica's refresh of its block of one pool and of its
// allowance of the pool's windows. The grant rule is grantFor's (blocks.go),
// the share ProportionalShare's; MemoryBlocks applies the same rules and a
// test checks the two agree.
var refreshBlock = redis.NewScript(allowanceLua + `
-- KEYS: 1 blocks hash, 2 epoch, 3..8 allowance keys, 9 seen hash
-- ARGV: 1 replica, 2 now ms, 3 ttl ms, 4 capacity, 5 keep, 6 want, 7 seq, 8 in use, 9 requests, 10 tokens,
--       11 key ttl ms, 12..22 allowance args
local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local cap, keep, want, seq = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local born = tonumber(redis.call('GET', KEYS[2]) or '-1')
if born < 0 then
  redis.call('SET', KEYS[2], ARGV[2])
  born = now
end
local seen = tonumber(redis.call('HGET', KEYS[9], 'seen') or '-1')
local learn = tonumber(redis.call('HGET', KEYS[9], 'learn') or '0')
if seen >= 0 and now - seen > ttl / 2 then
  learn = now + ttl
  redis.call('HSET', KEYS[9], 'learn', learn)
end
if now > seen then redis.call('HSET', KEYS[9], 'seen', ARGV[2]) end
local learning = now < born + ttl or now < learn
local function parse(v)
  local f = {}
  for x in string.gmatch(v, '[^:]+') do f[#f + 1] = tonumber(x) end
  return f
end
local mine = redis.call('HGET', KEYS[1], ARGV[1])
if mine then
  local e = parse(mine)
  if e[2] > now and seq < e[4] then return {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} end
end
local all = redis.call('HGETALL', KEYS[1])
local others, holders, oin, oreq, otok = 0, 0, 0, 0, 0
local wants = {want}
for i = 1, #all, 2 do
  local id, e = all[i], parse(all[i + 1])
  if e[2] <= now then
    redis.call('HDEL', KEYS[1], id)
  elseif id ~= ARGV[1] then
    others = others + e[1]
    oin, oreq, otok = oin + e[5], oreq + e[6], otok + e[7]
    if e[1] > 0 or e[3] > 0 then holders = holders + 1 end
    wants[#wants + 1] = math.max(e[3], e[1])
  end
end
local function share()
  local sum, n = 0, 0
  for i = 1, #wants do if wants[i] > 0 then sum = sum + wants[i]; n = n + 1 end end
  local m = wants[1]
  if m <= 0 then return 0 end
  if sum <= cap then return m end
  local equal = cap / n
  local given, extra = 0, 0
  for i = 1, #wants do
    local w = wants[i]
    if w > 0 then
      if w <= equal then given = given + w else given = given + equal; extra = extra + (w - equal) end
    end
  end
  if m <= equal then return m end
  local s = equal + (cap - given) * (m - equal) / extra
  local c = math.floor(s)
  if s - c > 1e-9 then c = c + 1 end
  return math.min(m, c)
end
local g, sh = 0, 0
if cap > 0 then
  sh = share()
  g = math.min(want, sh, cap - others)
  if learning then g = math.min(g, keep) end
  g = math.max(g, keep, 0)
end
local inuse, req, tok = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
if g > 0 or want > 0 or inuse > 0 or req > 0 or tok > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], g .. ':' .. (now + ttl) .. ':' .. want .. ':' .. seq .. ':' .. inuse .. ':' .. req .. ':' .. tok)
  redis.call('PEXPIRE', KEYS[1], ARGV[11])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
if g > 0 or want > 0 then holders = holders + 1 end
local K = {KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]}
local A = {}
for i = 12, 22 do A[#A + 1] = ARGV[i] end
local areq, atok, refused = allowance(K, A)
local l = 0
if learning then l = 1 end
return {g, 0, l, holders, others + g, oin, oreq, otok, areq, atok, refused, sh}
`)

// refreshTenant: a tenant's allowance of its windows.
var refreshTenant = redis.NewScript(allowanceLua + `
local req, tok, refused = allowance(KEYS, ARGV)
return {req, tok, refused}
`)

// allowanceArgs: the allowance keys (window buckets of the current and
// previous minute and of the refund's minute) and arguments.
func allowanceArgs(key func(string) string, now time.Time, a Allowance) ([]string, []any) {
	cur, prev, rem := windowArgs(now)
	refundValid := "0"
	if (a.RefundRequests != 0 || a.RefundTokens != 0) && a.RefundMinute >= prev && a.RefundMinute <= cur {
		refundValid = "1"
	}
	rm := a.RefundMinute
	if refundValid == "0" {
		rm = cur
	}
	keys := []string{
		key(minuteSuffix("rpm", cur)), key(minuteSuffix("rpm", prev)), key(minuteSuffix("tpm", cur)), key(minuteSuffix("tpm", prev)),
		key(minuteSuffix("rpm", rm)), key(minuteSuffix("tpm", rm)),
	}
	args := []any{a.RPM, a.TPM, a.NeedRequests, a.NeedTokens, a.WantRequests, a.WantTokens, a.RefundRequests, a.RefundTokens, refundValid, rem, bucketTTL}
	return keys, args
}

// Refresh implements BlockStore: one pipeline.
func (s *RedisBlocks) Refresh(ctx context.Context, r BlockRefresh) (BlockAnswer, error) {
	now := r.Now
	nowMs := now.UnixMilli()
	ttlMs := r.TTL.Milliseconds()
	keyTTL := (2*r.TTL + Window).Milliseconds()
	calls := make([]scriptCall, 0, len(r.Pools)+len(r.Tenants))
	for _, q := range r.Pools {
		pk := func(suffix string) string { return s.poolKey(q.Pool, suffix) }
		epoch := s.EpochKey()
		if s.cluster {
			epoch = pk("epoch")
		}
		wk, wa := allowanceArgs(pk, now, q.Window)
		args := append([]any{r.Replica, nowMs, ttlMs, q.Capacity, q.Keep, q.Want, q.Seq, q.InUse, q.Requests, q.Tokens, keyTTL}, wa...)
		calls = append(calls, scriptCall{script: refreshBlock, keys: append(append([]string{pk("blocks"), epoch}, wk...), pk("seen")), args: args})
	}
	for _, q := range r.Tenants {
		tk := func(suffix string) string { return s.tenantKey(q.Tenant, suffix) }
		wk, wa := allowanceArgs(tk, now, q.Window)
		calls = append(calls, scriptCall{script: refreshTenant, keys: wk, args: wa})
	}
	replicas := s.prefix + ":replicas"
	var count *redis.IntCmd
	cmds, err := pipelineScripts(ctx, s.client, calls, func(pipe redis.Pipeliner) {
		pipe.ZAdd(ctx, replicas, redis.Z{Score: float64(nowMs + ttlMs), Member: r.Replica})
		pipe.ZRemRangeByScore(ctx, replicas, "-inf", strconv.FormatInt(nowMs, 10))
		count = pipe.ZCard(ctx, replicas)
	})
	if err != nil {
		return BlockAnswer{}, fmt.Errorf("redis block refresh: %w: %w", ErrUnavailable, err)
	}
	if e := count.Err(); e != nil && !isRedisReply(e) {
		return BlockAnswer{}, fmt.Errorf("redis block refresh: %w: %w", ErrUnavailable, e)
	}
	for _, c := range cmds {
		if e := c.Err(); e != nil {
			return BlockAnswer{}, fmt.Errorf("redis block refresh: script: %w", e)
		}
	}
	out := BlockAnswer{Replicas: max(int(count.Val()), 1)}
	for i, c := range cmds {
		vals, err := c.Int64Slice()
		if err != nil {
			return BlockAnswer{}, fmt.Errorf("redis block refresh: answer: %w", err)
		}
		if i < len(r.Pools) {
			if len(vals) != 12 {
				return BlockAnswer{}, errors.New("redis block refresh: malformed pool answer")
			}
			out.Pools = append(out.Pools, BlockGrant{
				Granted: vals[0], Stale: vals[1] == 1, Share: vals[11], Learning: vals[2] == 1, Holders: int(vals[3]), GrantedAll: vals[4],
				OthersInUse: vals[5], OthersRequests: vals[6], OthersTokens: vals[7],
				Window: allowanceGrant(now, vals[8], vals[9], vals[10]),
			})
			continue
		}
		if len(vals) != 3 {
			return BlockAnswer{}, errors.New("redis block refresh: malformed tenant answer")
		}
		out.Tenants = append(out.Tenants, allowanceGrant(now, vals[0], vals[1], vals[2]))
	}
	return out, nil
}

func allowanceGrant(now time.Time, req, tok, refused int64) AllowanceGrant {
	g := AllowanceGrant{Requests: req, Tokens: tok, Minute: minuteOf(now)}
	if refused != 0 {
		g.Refused = "requests_per_minute"
		if refused == -2 {
			g.Refused = "tokens_per_minute"
		}
		g.RetryAfter = time.Unix((minuteOf(now)+1)*60, 0).Sub(now)
	}
	return g
}

// Close implements BlockStore.
func (s *RedisBlocks) Close() error {
	if err := s.client.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("redis block store close: %w", err)
	}
	return nil
}
