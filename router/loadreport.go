package router

// PoolLoad is what a pool's backend last reported about its own load: the
// sequences it runs, the calls queued inside it, and how many it can run at
// once right now (less than the pool's limit when it lost chips).
type PoolLoad struct {
	Running, Queued, Capacity int
}

// PoolLoads returns the fresh load report of every pool whose backend sends
// them (native backends, the simulator), keyed by pool name. Pools without a
// report younger than 2 s are absent. It checks no credential: callers
// authorize first (the operator console does, through Admin.ListPools).
func (s *Server) PoolLoads() map[string]PoolLoad {
	now := s.opts.Clock.Now()
	out := map[string]PoolLoad{}
	for _, p := range s.disp.Generation().Pools {
		if r := p.View(now).Reported; r != nil {
			out[p.Name()] = PoolLoad{Running: r.Running, Queued: r.Queued, Capacity: r.Capacity}
		}
	}
	return out
}

// Region is where this replica runs (Options.Region; empty when unset).
func (s *Server) Region() string { return s.opts.Region }
