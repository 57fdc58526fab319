package backends

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Load is a backend's own report of how busy it is, the way model servers
// expose queue depth and batch occupancy (the signal the Kubernetes
// inference-extension schedulers and gRPC ORCA load reports carry). It lets
// the router see a pool that lost chips before its clients feel it.
type Load struct {
	// Running sequences, Queued calls waiting for a batch slot, and the
	// Capacity (effective batch) the backend can run at once right now.
	Running, Queued, Capacity int
	// At is when the report was taken or received, by the wall clock
	// (time.Now) of the process running the adapter; the router ages it
	// against its own clock.
	At time.Time
}

// LoadReporter is implemented by backends that know their load. Load must
// not block; ok is false when no report has been seen yet.
type LoadReporter interface {
	Load() (l Load, ok bool)
}

// LoadHeader is the gRPC metadata key (header and trailer) in which native
// backends report their load: "running=R;queued=Q;capacity=C".
const LoadHeader = "x-switchyard-load"

// FormatLoad renders a load report for LoadHeader.
func FormatLoad(l Load) string {
	return fmt.Sprintf("running=%d;queued=%d;capacity=%d", l.Running, l.Queued, l.Capacity)
}

// ParseLoad parses a LoadHeader value. Unknown keys are ignored so the
// format can grow.
func ParseLoad(v string) (Load, error) {
	var l Load
	seen := 0
	for _, part := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return Load{}, fmt.Errorf("load report %s: %s is not key=value", clip(v), clip(part))
		}
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 {
			return Load{}, fmt.Errorf("load report %s: %s=%s is not a count", clip(v), clip(k), clip(val))
		}
		switch k {
		case "running":
			l.Running = n
		case "queued":
			l.Queued = n
		case "capacity":
			l.Capacity = n
		default:
			continue
		}
		seen++
	}
	if seen == 0 {
		return Load{}, fmt.Errorf("load report %s: no known field", clip(v))
	}
	return l, nil
}

// clip quotes at most 64 bytes of a report for an error: a report comes from
// the backend, and an error must not grow with it.
func clip(s string) string {
	if len(s) <= 64 {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:64], len(s))
}
