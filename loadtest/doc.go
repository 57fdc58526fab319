// Package loadtest is the engine behind switchyard-load: an open-loop
// replayer that sends a trace's arrivals to switchyard.v1.Inference on the
// trace's own clock (never waiting for responses), a recorder of what clients
// felt (HDR histograms of time to first token, inter-token latency,
// end-to-end latency and tokens/s, per status, pool, cloud, region, priority
// and time window), SLO checks, and the JSON, HTML and text reports.
//
// Trace readers live in loadtest/trace, scenario files in loadtest/scenario,
// the injectable clock in internal/clock.
package loadtest
