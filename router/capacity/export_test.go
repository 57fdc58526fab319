package capacity

// Abandon makes r behave like a replica that died: background loops stop,
// nothing is released, the heartbeat is left to expire.
func (r *Redis) Abandon() { r.abandon() }

// Abandon makes l behave like a replica that died: its loop stops, nothing
// is given back, its blocks are left to expire.
func (l *Leased) Abandon() { l.abandon() }
