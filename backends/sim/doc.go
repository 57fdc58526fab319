// Package sim is the simulated accelerator backend: a model of one
// accelerator pool serving a ~70B model with continuous batching, used by
// load testers and operators to rehearse shortages (docs/simulator.md).
//
// # Model
//
// A Pool admits at most EffectiveBatch sequences at once; further calls wait
// in a bounded FIFO queue and are refused with RESOURCE_EXHAUSTED when it is
// full. An admitted call spends prefill time (input tokens / the profile's
// prefill rate) and then emits its output tokens, each taking the profile's
// decode time for the current batch size: DecodeBase × (1 + k·(batch−1)).
// Every duration is multiplied by the model size factor and the slowdown
// fault, and divided by the time scale. Output is deterministic synthetic
// text of exactly the produced token count (backends.EstimateTokens).
//
// # Faults
//
// SetFault (or SimControl InjectFault) sets, at run time: outage (calls and
// health checks fail UNAVAILABLE, running streams break), capacity_loss (the
// batch shrinks to ceil(MaxBatch × (1−loss)); running calls finish),
// slowdown (time multiplier) and error_rate (chance of UNAVAILABLE at call
// start).
//
// # Wiring
//
// The router registers the adapter and serves SimControl for embedded pools:
//
//	host := sim.NewHost()
//	sim.Register(registry, sim.RegistryOptions{Host: host, TimeScale: fleet.Sim.TimeScale, QueueLength: fleet.Sim.QueueLength})
//	pb.RegisterSimControlServer(grpcServer, host)
//	b, err := registry.New("sim", backends.Spec{Pool: "aws-use1-h100", Accelerator: "h100", MaxConcurrent: 48})
//
// switchyard-sim builds pools with NewPool, hosts them in a Host, and serves
// each as switchyard.v1.Inference through NewInferenceServer.
//
// Concurrency: Pool, Host and InferenceServer are safe for concurrent use.
package sim
