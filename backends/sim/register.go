package sim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/clock"
)

// AdapterName is the name Register uses in a backends.Registry; fleet pools
// with endpoints: [sim] (adapter "sim") are built by it.
const AdapterName = "sim"

// RegistryOptions are the process-wide settings for pools the "sim" adapter
// builds. Per-pool spec options override them.
type RegistryOptions struct {
	// Host, when set, hosts every pool the adapter builds, so the program
	// can serve SimControl for embedded pools (pb.RegisterSimControlServer(s, host)).
	Host *Host
	// TimeScale for every pool (the fleet config's sim.time_scale); 0 = 1.
	TimeScale float64
	// QueueLength per pool (the fleet config's sim.queue_length); 0 = 4 × max batch.
	QueueLength int
	// Seed for every pool (each pool mixes in its own name).
	Seed int64
	// Clock for every pool (Options.Clock); default the wall clock.
	Clock clock.Clock
}

// Spec options the "sim" adapter understands (backends.Spec.Options).
const (
	OptTimeScale     = "time_scale"      // float > 0
	OptQueueLength   = "queue_length"    // int >= 0
	OptSeed          = "seed"            // int
	OptEarlyStopRate = "early_stop_rate" // float in [0,1]
	OptModels        = "models"          // comma-separated model names; empty = any
	OptCloud         = "cloud"           // copied into routes
	OptRegion        = "region"          // copied into routes
	// OptPrefixCacheBlocks sizes the prefix cache in 512-token blocks (int;
	// 0 = the default, negative = no prefix cache).
	OptPrefixCacheBlocks = "prefix_cache_blocks"
)

var knownOptions = []string{OptCloud, OptEarlyStopRate, OptModels, OptPrefixCacheBlocks, OptQueueLength, OptRegion, OptSeed, OptTimeScale}

// Register adds the "sim" adapter to r. Its factory builds a Pool from a
// backends.Spec (Pool → Name, Accelerator, MaxConcurrent → MaxBatch, Options
// as listed in the Opt* constants) and adds it to opts.Host when one is set.
// Like every registration it panics if "sim" is already registered.
func Register(r *backends.Registry, opts RegistryOptions) {
	r.Register(AdapterName, func(spec backends.Spec) (backends.Backend, error) {
		p, err := NewFromSpec(spec, opts)
		if err != nil {
			return nil, err
		}
		if opts.Host != nil {
			opts.Host.Add(p)
		}
		return p, nil
	})
}

// NewFromSpec builds (but does not host) a Pool from a backend spec.
// Unknown option keys are an error, so a typo in the fleet file is reported.
func NewFromSpec(spec backends.Spec, opts RegistryOptions) (*Pool, error) {
	o := Options{
		Name:        spec.Pool,
		Accelerator: spec.Accelerator,
		MaxBatch:    spec.MaxConcurrent,
		QueueLength: opts.QueueLength,
		TimeScale:   opts.TimeScale,
		Seed:        opts.Seed ^ int64(hash64(0, spec.Pool)),
		Clock:       opts.Clock,
	}
	for k, v := range spec.Options {
		var err error
		switch k {
		case OptTimeScale:
			o.TimeScale, err = strconv.ParseFloat(v, 64)
		case OptQueueLength:
			o.QueueLength, err = strconv.Atoi(v)
		case OptSeed:
			o.Seed, err = strconv.ParseInt(v, 10, 64)
		case OptEarlyStopRate:
			o.EarlyStopRate, err = strconv.ParseFloat(v, 64)
		case OptModels:
			for _, m := range strings.Split(v, ",") {
				if m = strings.TrimSpace(m); m != "" {
					o.Models = append(o.Models, Model{Name: m})
				}
			}
		case OptPrefixCacheBlocks:
			o.PrefixCacheBlocks, err = strconv.Atoi(v)
		case OptCloud:
			o.Cloud = v
		case OptRegion:
			o.Region = v
		default:
			return nil, fmt.Errorf("unknown sim option %q (known: %s)", k, strings.Join(knownOptions, ", "))
		}
		if err != nil {
			return nil, fmt.Errorf("sim option %s=%q: %w", k, v, err)
		}
	}
	if o.TimeScale < 0 {
		return nil, fmt.Errorf("sim option %s: must be > 0, got %v", OptTimeScale, o.TimeScale)
	}
	slices.SortFunc(o.Models, func(a, b Model) int { return strings.Compare(a.Name, b.Name) })
	return NewPool(o)
}
