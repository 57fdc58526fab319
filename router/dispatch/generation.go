package dispatch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/switchyard-dev/switchyard/internal/priority"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// Generation is everything one fleet config makes of the core: the fleet,
// its pools with their live state, the policy environment, the tenants, the
// ejection tuning, and the routing settings the dispatcher applies when it
// takes the generation (wait-queue length, retry budget). A reload builds a
// new Generation and Dispatcher.Swap installs it atomically; a call keeps the
// generation it was admitted under to its end. Read-only once built.
type Generation struct {
	Fleet *config.Fleet
	// Pools in config order; Pools[i].Index() == i.
	Pools []*Pool
	// Env is what the policies consult besides the pools.
	Env *policy.Env
	// Tenants authenticates callers and holds their limits.
	Tenants *Tenants
	// Eject tunes outlier ejection.
	Eject Ejection

	byName map[string]*Pool
	// byModel lists, per model, the pools serving it (in config order): a
	// decision looks at these only.
	byModel map[string][]*Pool
}

// NewEnv is the policy environment of fleet f: its latency table, the
// routing section's spill reserves and band, cost weight, latency budget and
// priority targets, and rnd for the policies' random draws.
func NewEnv(f *config.Fleet, rnd func() float64) (*policy.Env, error) {
	lat, err := f.LatencyTable()
	if err != nil {
		return nil, fmt.Errorf("latency table: %w", err)
	}
	r := f.Routing
	target := func(l config.LatencyTarget) policy.Target {
		return policy.Target{TTFT: l.TTFT.Std(), TPOT: l.TPOT.Std()}
	}
	return &policy.Env{
		Latency: lat,
		Reserve: map[priority.Class]float64{
			priority.Interactive: r.SpillReserve.Interactive,
			priority.Standard:    r.SpillReserve.Standard,
			priority.Batch:       r.SpillReserve.Batch,
		},
		SpillBand:           max(0, r.SpillBand),
		CostWeight:          r.CostWeight,
		LatencyBudgetMillis: r.LatencyBudgetMillis,
		Rand:                rnd,
		Targets: map[priority.Class]policy.Target{
			priority.Interactive: target(r.PriorityTargets.Interactive),
			priority.Standard:    target(r.PriorityTargets.Standard),
			priority.Batch:       target(r.PriorityTargets.Batch),
		},
	}, nil
}

// GenerationOptions build a Generation.
type GenerationOptions struct {
	Fleet *config.Fleet
	// Pools in config order (NewGeneration numbers them).
	Pools []*Pool
	Env   *policy.Env
}

// NewGeneration builds a Generation: it numbers the pools, indexes them by
// name and model, and reads the tenants and the ejection tuning from the fleet.
func NewGeneration(o GenerationOptions) *Generation {
	r := o.Fleet.Routing
	g := &Generation{
		Fleet:   o.Fleet,
		Pools:   o.Pools,
		Env:     o.Env,
		Tenants: NewTenants(o.Fleet.Tenants),
		Eject:   Ejection{AfterFailures: r.EjectAfterFailures, Base: r.EjectBase.Std(), Max: r.EjectMax.Std()},
		byName:  make(map[string]*Pool, len(o.Pools)),
		byModel: map[string][]*Pool{},
	}
	for i, p := range o.Pools {
		p.index = i
		g.byName[p.cfg.Name] = p
		for _, m := range p.cfg.Models {
			g.byModel[m] = append(g.byModel[m], p)
		}
	}
	return g
}

// Pool returns the pool named name.
func (g *Generation) Pool(name string) (*Pool, bool) {
	p, ok := g.byName[name]
	return p, ok
}

// ForModel returns the pools serving model, in config order.
func (g *Generation) ForModel(model string) []*Pool { return g.byModel[model] }

// Authenticator maps a caller's credential to its tenant. Implementations
// must be safe for concurrent use and must not block.
type Authenticator interface {
	// Authenticate returns the tenant of apiKey ("" for an anonymous call,
	// when no credentials are configured), or an *UnauthenticatedError.
	Authenticate(apiKey string) (tenant string, err error)
}

var _ Authenticator = (*Tenants)(nil)

// Tenants are the fleet's tenants: API keys by their SHA-256 (hex, as the
// fleet file holds them) and each tenant's limits. Read-only once built.
type Tenants struct {
	byKey  map[string]string // sha256(api key), lower-case hex -> tenant
	limits map[string]capacity.Limits
}

// NewTenants indexes the fleet's tenants.
func NewTenants(ts []config.Tenant) *Tenants {
	t := &Tenants{byKey: map[string]string{}, limits: map[string]capacity.Limits{}}
	for _, tc := range ts {
		for _, k := range tc.APIKeySHA256 {
			t.byKey[strings.ToLower(k)] = tc.Name
		}
		t.limits[tc.Name] = capacity.Limits{RequestsPerMinute: tc.RequestsPerMinute, TokensPerMinute: tc.TokensPerMinute}
	}
	return t
}

// Required says whether calls must present an API key.
func (t *Tenants) Required() bool { return len(t.byKey) > 0 }

// Authenticate implements Authenticator. With no tenants configured every
// call is anonymous.
func (t *Tenants) Authenticate(apiKey string) (string, error) {
	if len(t.byKey) == 0 {
		return "", nil
	}
	if apiKey == "" {
		return "", &UnauthenticatedError{Reason: "missing API key (x-api-key or authorization: Bearer)"}
	}
	sum := sha256.Sum256([]byte(apiKey))
	tenant, ok := t.byKey[hex.EncodeToString(sum[:])]
	if !ok {
		return "", &UnauthenticatedError{Reason: "unknown API key"}
	}
	return tenant, nil
}

// Limits are tenant's request and token budgets (zero: none).
func (t *Tenants) Limits(tenant string) capacity.Limits { return t.limits[tenant] }
