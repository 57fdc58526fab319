package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"

	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/control"
)

// defaultHome is the name of the --redis store among the capacity homes.
const defaultHome = "default"

// newStores builds the capacity store and the control store.
//
//   - No shared store (no --redis, no capacity.stores in the fleet file):
//     in-memory counters and control.
//   - Leased counting (the default with a shared store): a capacity.Leased
//     whose homes are --redis ("default") and every capacity.stores entry;
//     each pool's budget lives in its home (fleet.PoolHomes), tenants' in the
//     default home (--redis, else the first store).
//   - Strict counting: one Redis reservation per call in --redis, behind a
//     circuit breaker that falls back to conservative local counting.
//
// Operator changes (control) go to the default home's Redis.
func newStores(f *flags, fleet *config.Fleet, log *slog.Logger, onMode func(from, to capacity.Mode)) (capacity.Store, control.Store, func(), error) {
	mode := f.capacityMode
	if mode == "" {
		mode = fleet.Capacity.Mode
	}
	if mode == "" {
		mode = config.CountingLeased
	}
	if mode != config.CountingLeased && mode != config.CountingStrict {
		return nil, nil, nil, fmt.Errorf("--capacity-mode: want %s or %s, got %q", config.CountingLeased, config.CountingStrict, mode)
	}
	homes, err := storeURLs(f, fleet)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(homes) == 0 {
		return capacity.NewMemory(capacity.MemoryOptions{}), control.NewMemory(0), func() {}, nil
	}
	if f.redisTimeout <= 0 {
		return nil, nil, nil, fmt.Errorf("--redis-timeout must be positive, got %s", f.redisTimeout)
	}
	def := defaultHome
	if f.redis == "" {
		def = fleet.Capacity.Stores[0].Name
	}
	var store capacity.Store
	switch mode {
	case config.CountingStrict:
		if f.redis == "" || len(fleet.Capacity.Stores) > 0 {
			return nil, nil, nil, errors.New("--capacity-mode strict: counts in the one --redis store; capacity.stores need leased counting")
		}
		shared, err := capacity.NewRedis(capacity.RedisOptions{URL: f.redis, Timeout: f.redisTimeout, LeaseTTL: f.leaseTTL, Replica: f.replica, Logger: log})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--redis: %w", err)
		}
		if store, err = capacity.NewResilient(capacity.ResilientOptions{Shared: shared, Timeout: f.redisTimeout, Logger: log, OnModeChange: onMode}); err != nil {
			_ = shared.Close()
			return nil, nil, nil, fmt.Errorf("--redis: %w", err)
		}
	default:
		blocks := map[string]capacity.BlockStore{}
		closeAll := func() {
			for _, b := range blocks {
				_ = b.Close()
			}
		}
		for name, url := range homes {
			b, err := capacity.NewRedisBlocks(capacity.RedisBlocksOptions{URL: url})
			if err != nil {
				closeAll()
				return nil, nil, nil, fmt.Errorf("capacity store %q: %w", name, err)
			}
			blocks[name] = b
		}
		leased, err := capacity.NewLeased(capacity.LeasedOptions{
			Homes: blocks, Default: def, PoolHomes: fleet.PoolHomes(), Replica: f.replica,
			LeaseTTL: f.blockTTL, RefreshEvery: f.blockRefresh, Timeout: f.redisTimeout, Logger: log, OnModeChange: onMode,
		})
		if err != nil {
			closeAll()
			return nil, nil, nil, fmt.Errorf("leased capacity: %w", err)
		}
		store = leased
	}
	client, err := capacity.NewRedisClient(homes[def])
	if err != nil {
		_ = store.Close()
		return nil, nil, nil, fmt.Errorf("capacity store %q: %w", def, err)
	}
	return store, control.NewRedis(control.RedisOptions{Client: client, Logger: log}), func() { _ = client.Close() }, nil
}

// storeURLs returns the shared stores by home name: --redis as "default" and
// every capacity.stores entry (its url, or the environment variable url_env
// names).
func storeURLs(f *flags, fleet *config.Fleet) (map[string]string, error) {
	out := map[string]string{}
	if f.redis != "" {
		out[defaultHome] = f.redis
	}
	for _, s := range fleet.Capacity.Stores {
		url := s.URL
		if s.URLEnv != "" {
			if url = os.Getenv(s.URLEnv); url == "" {
				return nil, fmt.Errorf("capacity store %q: environment variable %s (url_env) is empty", s.Name, s.URLEnv)
			}
		}
		out[s.Name] = url
	}
	return out, nil
}

// checkHomes refuses a reload whose capacity stores differ from the running
// ones (stores are connected at start: that change needs a restart).
func checkHomes(store capacity.Store, fleet *config.Fleet, log *slog.Logger) error {
	leased, ok := store.(*capacity.Leased)
	if !ok {
		if len(fleet.Capacity.Stores) > 0 {
			return errors.New("capacity.stores: this router counts without per-region stores; restart it to use them")
		}
		return nil
	}
	want := leased.HomeNames()
	var got []string
	for _, s := range fleet.Capacity.Stores {
		got = append(got, s.Name)
	}
	for _, h := range want {
		if h == defaultHome {
			got = append(got, defaultHome)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		return fmt.Errorf("capacity.stores: the stores changed (%v, running %v); restart the router to connect to them", got, want)
	}
	log.Debug("capacity stores unchanged", "stores", want)
	return nil
}

// rehome moves pools to the homes a reloaded fleet names.
func rehome(store capacity.Store, fleet *config.Fleet) error {
	if leased, ok := store.(*capacity.Leased); ok {
		return leased.SetPoolHomes(fleet.PoolHomes())
	}
	return nil
}
