package router

import (
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/policy"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// poolExt is what the router attaches to each dispatch.Pool: the pool's
// backend (the core never calls it; the router's AttemptFuncs do) and its
// precomputed telemetry attributes.
type poolExt struct {
	backend backends.Backend
	obs     poolObs
}

// ext is what the router attached to p.
func ext(p *dispatch.Pool) *poolExt { return p.Attached().(*poolExt) }

// backendOf is p's backend.
func backendOf(p *dispatch.Pool) backends.Backend { return ext(p).backend }

// newPool builds the run-time pool for cfg served by b, taking over carry's
// counters and health when it is the previous generation's pool with the
// same backend.
func newPool(cfg config.Pool, b backends.Backend, carry *dispatch.Pool) *dispatch.Pool {
	caps := b.Capabilities()
	o := dispatch.PoolOptions{
		Config: cfg, Continues: caps.Continuation, Offers: capsFeatures(caps),
		Attached: &poolExt{backend: b, obs: newPoolObs(cfg)}, Carry: carry,
	}
	if lr, ok := b.(backends.LoadReporter); ok {
		o.Load = func() (policy.Reported, time.Time, bool) {
			l, ok := lr.Load()
			return policy.Reported{Running: l.Running, Queued: l.Queued, Capacity: l.Capacity}, l.At, ok
		}
	}
	return dispatch.NewPool(o)
}

// poolObs holds the pool's precomputed telemetry attributes, so the hot path
// records metrics without building attribute sets per call.
type poolObs struct {
	// pool is {pool, cloud, region, accelerator}.
	pool mopts
	// outcome[o] is pool plus outcome=o.
	outcome [dispatch.Outcomes]mopts
	// acquire[r] is {pool, result=r}.
	acquire [acquireResults]mopts
	// span are the attempt span's pool attributes.
	span []attribute.KeyValue
	// provider is the pool's gen_ai.provider.name.
	provider string
}

func newPoolObs(cfg config.Pool) poolObs {
	var o poolObs
	base := []attribute.KeyValue{
		attribute.String(telemetry.KeyPool, cfg.Name), attribute.String(telemetry.KeyCloud, cfg.Cloud),
		attribute.String(telemetry.KeyRegion, cfg.Region), attribute.String(telemetry.KeyAccelerator, cfg.Accelerator),
	}
	o.pool = newMopts(attribute.NewSet(base...))
	for oc := range dispatch.Outcomes {
		o.outcome[oc] = newMopts(attribute.NewSet(append(base[:len(base):len(base)], attribute.String(telemetry.KeyOutcome, oc.String()))...))
	}
	for r, name := range acquireResultNames {
		o.acquire[r] = newMopts(attribute.NewSet(attribute.String(telemetry.KeyPool, cfg.Name), attribute.String(telemetry.KeyResult, name)))
	}
	o.provider = genAIProvider(cfg.Adapter)
	o.span = []attribute.KeyValue{
		attribute.String("switchyard.pool", cfg.Name), attribute.String("cloud.provider", cfg.Cloud),
		attribute.String("cloud.region", cfg.Region), attribute.String("switchyard.accelerator", cfg.Accelerator),
		attribute.String(telemetry.KeyProvider, o.provider),
	}
	return o
}

// genAIProvider is a pool's gen_ai.provider.name (OpenTelemetry GenAI
// semantic conventions) from its adapter: the convention's names for the
// cloud APIs, "openai" for OpenAI-compatible servers, switchyard's own for
// native backends and the simulator.
func genAIProvider(adapter string) string {
	switch adapter {
	case "openai":
		return "openai"
	case "bedrock":
		return "aws.bedrock"
	case "vertex":
		return "gcp.vertex_ai"
	case "sim":
		return "switchyard.sim"
	case "grpc", "":
		return "switchyard"
	}
	return adapter
}

// Results of a capacity-store Acquire, for switchyard.capacity.acquire.duration.
const (
	acquireOK = iota
	acquireFull
	acquireQuota
	acquireError
	acquireResults
)

var acquireResultNames = [acquireResults]string{"ok", "full", "quota", "error"}
