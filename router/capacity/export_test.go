package capacity

// Abandon makes r behave like a replica that died: background loops stop,
// nothing is released, the heartbeat is left to expire.
func (r *Redis) Abandon() { r.abandon() }
