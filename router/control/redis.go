package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchyard-dev/switchyard/internal/clock"
)

// Redis keeps the state as one JSON document updated with optimistic
// transactions (WATCH/MULTI/EXEC), publishes every change on a channel, and
// keeps the audit trail in a capped list. All keys share the {control} hash
// tag, so it works unchanged on Redis Cluster. Safe for concurrent use.
type Redis struct {
	client   redis.UniversalClient
	prefix   string
	maxAudit int64
	reread   time.Duration
	clock    clock.Clock
	log      *slog.Logger
}

var _ Store = (*Redis)(nil)

// RedisOptions configure the Redis control store.
type RedisOptions struct {
	Client redis.UniversalClient
	// KeyPrefix defaults to "sy".
	KeyPrefix string
	// MaxAudit entries kept (default 10000).
	MaxAudit int64
	// Reread is the period of the healing re-read in Watch (default 1s).
	Reread time.Duration
	// Clock times the re-read; defaults to the wall clock.
	Clock  clock.Clock
	Logger *slog.Logger
}

// NewRedis returns a control store on an existing client.
func NewRedis(o RedisOptions) *Redis {
	if o.KeyPrefix == "" {
		o.KeyPrefix = "sy"
	}
	if o.MaxAudit <= 0 {
		o.MaxAudit = 10000
	}
	if o.Reread <= 0 {
		o.Reread = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	return &Redis{client: o.Client, prefix: o.KeyPrefix, maxAudit: o.MaxAudit, reread: o.Reread, clock: o.Clock, log: o.Logger}
}

func (r *Redis) stateKey() string { return r.prefix + ":{control}:state" }
func (r *Redis) auditKey() string { return r.prefix + ":{control}:audit" }
func (r *Redis) channel() string  { return r.prefix + ":{control}:changed" }

func (r *Redis) Get(ctx context.Context) (State, error) {
	return r.get(ctx, r.client)
}

func (r *Redis) get(ctx context.Context, c redis.Cmdable) (State, error) {
	b, err := c.Get(ctx, r.stateKey()).Bytes()
	if errors.Is(err, redis.Nil) {
		return State{}.Clone(), nil
	}
	if err != nil {
		return State{}, fmt.Errorf("read control state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("decode control state: %w", err)
	}
	return s.Clone(), nil
}

func (r *Redis) Update(ctx context.Context, fn func(*State) error) (State, error) {
	var out State
	for attempt := 0; attempt < 20; attempt++ {
		var fnErr error
		err := r.client.Watch(ctx, func(tx *redis.Tx) error {
			cur, err := r.get(ctx, tx)
			if err != nil {
				return err
			}
			next := cur.Clone()
			if fnErr = fn(&next); fnErr != nil {
				out = cur
				return nil
			}
			next.Version = cur.Version + 1
			b, err := json.Marshal(next)
			if err != nil {
				return fmt.Errorf("encode control state: %w", err)
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, r.stateKey(), b, 0)
				return nil
			})
			out = next
			return err
		}, r.stateKey())
		if errors.Is(err, redis.TxFailedErr) {
			continue // another replica changed it first: read again
		}
		if err != nil {
			return State{}, fmt.Errorf("update control state: %w", err)
		}
		if fnErr != nil {
			if errors.Is(fnErr, ErrNoChange) {
				return out, nil
			}
			return out, fnErr
		}
		if err := r.client.Publish(ctx, r.channel(), out.Version).Err(); err != nil {
			r.log.Warn("publish control change (replicas will see it on their next re-read)", "err", err)
		}
		return out, nil
	}
	return State{}, errors.New("update control state: too much contention, try again")
}

// Watch subscribes to change notifications and re-reads every Reread
// period; it calls onChange for both (the caller compares versions).
func (r *Redis) Watch(ctx context.Context, onChange func()) {
	sub := r.client.Subscribe(ctx, r.channel())
	defer sub.Close()
	msgs := sub.Channel()
	t := r.clock.NewTicker(r.reread)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-msgs:
			onChange()
		case <-t.C():
			onChange()
		}
	}
}

func (r *Redis) AppendAudit(ctx context.Context, e Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode audit entry: %w", err)
	}
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, r.auditKey(), b)
		p.LTrim(ctx, r.auditKey(), 0, r.maxAudit-1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("append audit entry: %w", err)
	}
	return nil
}

func (r *Redis) Audit(ctx context.Context, limit int) ([]Entry, error) {
	if limit <= 0 || int64(limit) > r.maxAudit {
		limit = int(r.maxAudit)
	}
	raw, err := r.client.LRange(ctx, r.auditKey(), 0, int64(limit)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("read audit trail: %w", err)
	}
	out := make([]Entry, 0, len(raw))
	for _, s := range raw {
		var e Entry
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			return nil, fmt.Errorf("decode audit entry: %w", err)
		}
		out = append(out, e)
	}
	return out, nil
}
