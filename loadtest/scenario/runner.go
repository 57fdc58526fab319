package scenario

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/loadtest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Control is how scenario steps reach the fleet. Sim and Admin may be nil
// when no step needs them (Run reports such steps as failed).
type Control struct {
	Sim   pb.SimControlClient
	Admin pb.AdminClient
	// AdminToken is sent as "authorization: Bearer <token>" on Admin calls.
	AdminToken string
	// Timeout bounds each call. Default 10s.
	Timeout time.Duration
}

func (c Control) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 10 * time.Second
}

// adminCtx adds the bearer token.
func (c Control) adminCtx(ctx context.Context) context.Context {
	if c.AdminToken == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.AdminToken)
}

// RunOptions says when a scenario runs.
type RunOptions struct {
	Clock clock.Clock // default clock.Real{}
	// Start is the wall time trace offset 0 maps to (the replay's start); default now.
	Start time.Time
	// Speedup divides step offsets like arrivals. Default 1.
	Speedup float64
}

// Run carries out every step at Start + At/Speedup, in order, one at a time,
// and returns what happened to each. A failing step is reported and the
// following steps still run. When ctx ends first (the replay finished), the
// steps not reached are reported with an error saying so.
func Run(ctx context.Context, sc *Scenario, c Control, o RunOptions) []loadtest.StepResult {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if !(o.Speedup > 0) {
		o.Speedup = 1
	}
	if o.Start.IsZero() {
		o.Start = o.Clock.Now()
	}
	results := make([]loadtest.StepResult, 0, len(sc.Steps))
	for _, s := range sc.Steps {
		r := loadtest.StepResult{Line: s.Line, At: s.At.Seconds(), Action: s.Action, Pool: s.Pool, Detail: s.Detail()}
		due := o.Start.Add(time.Duration(float64(s.At) / o.Speedup))
		if wait := due.Sub(o.Clock.Now()); wait > 0 {
			select {
			case <-o.Clock.After(wait):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			r.Error = "not reached: the replay ended first"
			results = append(results, r)
			continue
		}
		r.WallOffset = o.Clock.Now().Sub(o.Start).Seconds()
		if err := c.Apply(ctx, s, o.Speedup); err != nil {
			r.Error = err.Error()
		}
		results = append(results, r)
	}
	return results
}

// Apply carries out one step now. speedup converts a capacity override's
// "for" from trace time to wall time.
func (c Control) Apply(ctx context.Context, s Step, speedup float64) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	if s.Sim() {
		if c.Sim == nil {
			return errors.New("no SimControl connection")
		}
		var err error
		switch s.Action {
		case Clear:
			_, err = c.Sim.ClearFaults(ctx, &pb.ClearFaultsRequest{Pool: s.Pool})
		default:
			f := &pb.Fault{Pool: s.Pool}
			switch s.Action {
			case Outage:
				f.Outage = true
			case CapacityLoss:
				f.CapacityLoss = s.Fraction
			case Slowdown:
				f.Slowdown = s.Factor
			case ErrorRate:
				f.ErrorRate = s.Rate
			}
			_, err = c.Sim.InjectFault(ctx, &pb.InjectFaultRequest{Fault: f})
		}
		if err != nil {
			return fmt.Errorf("sim %s: %w", s.Action, err)
		}
		return nil
	}
	if c.Admin == nil {
		return errors.New("no Admin connection")
	}
	actx := c.adminCtx(ctx)
	var err error
	switch s.Action {
	case Drain:
		var resp *pb.DrainResponse
		resp, err = c.Admin.Drain(actx, &pb.DrainRequest{Pool: s.Pool, Force: s.Force})
		if err == nil && !resp.GetApplied() {
			err = fmt.Errorf("not applied: %s", resp.GetSummary())
		}
	case Resume:
		_, err = c.Admin.Resume(actx, &pb.ResumeRequest{Pool: s.Pool})
	case SetWeight:
		_, err = c.Admin.SetWeight(actx, &pb.SetWeightRequest{Pool: s.Pool, Weight: s.Weight})
	case CapacityOverride:
		req := &pb.SetCapacityOverrideRequest{Pool: s.Pool, Limit: s.Limit, Clear: s.ClearOverride}
		if s.For > 0 {
			req.Expires = timestamppb.New(time.Now().Add(time.Duration(float64(s.For) / speedup)))
		}
		_, err = c.Admin.SetCapacityOverride(actx, req)
	case SetPolicy:
		_, err = c.Admin.SetPolicy(actx, &pb.SetPolicyRequest{Policy: s.Policy})
	default:
		err = fmt.Errorf("unknown action %q", s.Action)
	}
	if err != nil {
		return fmt.Errorf("admin %s: %w", s.Action, err)
	}
	return nil
}

// SetPolicy switches the router's policy and returns the previous one.
func (c Control) SetPolicy(ctx context.Context, policy string) (string, error) {
	if c.Admin == nil {
		return "", errors.New("set policy: no Admin connection")
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	resp, err := c.Admin.SetPolicy(c.adminCtx(ctx), &pb.SetPolicyRequest{Policy: policy})
	if err != nil {
		return "", fmt.Errorf("set policy %q: %w", policy, err)
	}
	return resp.GetPrevious(), nil
}

// ClearFaults clears every simulated fault.
func (c Control) ClearFaults(ctx context.Context) error {
	if c.Sim == nil {
		return errors.New("clear faults: no SimControl connection")
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	if _, err := c.Sim.ClearFaults(ctx, &pb.ClearFaultsRequest{}); err != nil {
		return fmt.Errorf("clear faults: %w", err)
	}
	return nil
}

// Snapshot is the admin state of the pools a scenario changes, taken before a
// run so that Restore can put it back between --compare runs.
type Snapshot struct {
	pools map[string]*pb.PoolStatus
}

// Take records the current state of every pool the scenario's admin steps name.
// It returns nil (nothing to restore) when the scenario has no admin steps.
func (c Control) Take(ctx context.Context, sc *Scenario) (*Snapshot, error) {
	if sc == nil || !sc.UsesAdmin() {
		return nil, nil
	}
	if c.Admin == nil {
		return nil, errors.New("snapshot: no Admin connection")
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	resp, err := c.Admin.ListPools(c.adminCtx(ctx), &pb.ListPoolsRequest{})
	if err != nil {
		return nil, fmt.Errorf("snapshot pools: %w", err)
	}
	touched := map[string]bool{}
	for _, s := range sc.Steps {
		if !s.Sim() && s.Pool != "" {
			touched[s.Pool] = true
		}
	}
	snap := &Snapshot{pools: map[string]*pb.PoolStatus{}}
	for _, p := range resp.GetPools() {
		if touched[p.GetName()] {
			snap.pools[p.GetName()] = p
		}
	}
	return snap, nil
}

// Restore puts back the drain state, weight and capacity override of the
// pools in snap, changing only what differs from now (an override's expiry is
// not restored).
func (c Control) Restore(ctx context.Context, snap *Snapshot) error {
	if snap == nil {
		return nil
	}
	lctx, cancel := context.WithTimeout(ctx, c.timeout())
	resp, err := c.Admin.ListPools(c.adminCtx(lctx), &pb.ListPoolsRequest{})
	cancel()
	if err != nil {
		return fmt.Errorf("restore: list pools: %w", err)
	}
	var errs []error
	for _, now := range resp.GetPools() {
		was, ok := snap.pools[now.GetName()]
		if !ok {
			continue
		}
		name := now.GetName()
		var steps []Step
		if now.GetWeight() != was.GetWeight() {
			steps = append(steps, Step{Action: SetWeight, Pool: name, Weight: was.GetWeight()})
		}
		switch {
		case was.GetDrained() && !now.GetDrained():
			steps = append(steps, Step{Action: Drain, Pool: name, Force: true})
		case !was.GetDrained() && now.GetDrained():
			steps = append(steps, Step{Action: Resume, Pool: name})
		}
		switch {
		case now.GetCapacityOverride() == was.GetCapacityOverride():
		case was.GetCapacityOverride() > 0:
			steps = append(steps, Step{Action: CapacityOverride, Pool: name, Limit: was.GetCapacityOverride()})
		default:
			steps = append(steps, Step{Action: CapacityOverride, Pool: name, ClearOverride: true})
		}
		for _, s := range steps {
			if err := c.Apply(ctx, s, 1); err != nil {
				errs = append(errs, fmt.Errorf("restore %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}
