package console

import "time"

// SampleOnce takes one chart sample now (for benchmarks).
func (c *Console) SampleOnce(now time.Time) { c.sampleOnce(now) }
