package loadtest

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"

	"github.com/switchyard-dev/switchyard/internal/priority"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// PriorityMix assigns priorities to requests in given proportions. The zero
// value sends every request with PRIORITY_UNSPECIFIED (standard).
type PriorityMix struct {
	prios   []pb.Priority
	cumul   []float64 // cumulative weights, normalised to 1
	entries []string
}

// PriorityName is the short name of p ("interactive", "standard", "batch").
func PriorityName(p pb.Priority) string { return priority.FromWire(p).String() }

// ParsePriorityMix parses "interactive=0.7,batch=0.3" (weights need not sum to 1).
func ParsePriorityMix(s string) (PriorityMix, error) {
	var m PriorityMix
	if strings.TrimSpace(s) == "" {
		return m, nil
	}
	seen := map[string]bool{}
	var total float64
	var weights []float64
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return PriorityMix{}, fmt.Errorf("priority mix: %q is not name=weight", kv)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		p, ok := priority.Parse(k)
		if !ok {
			return PriorityMix{}, fmt.Errorf("priority mix: unknown priority %q (known: interactive, standard, batch)", k)
		}
		if seen[k] {
			return PriorityMix{}, fmt.Errorf("priority mix: %q given twice", k)
		}
		seen[k] = true
		w, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(w >= 0) || w > 1e6 {
			return PriorityMix{}, fmt.Errorf("priority mix: %s: weight %q is not a number >= 0", k, v)
		}
		m.prios = append(m.prios, pb.Priority(p.Wire()))
		weights = append(weights, w)
		total += w
	}
	if !(total > 0) {
		return PriorityMix{}, fmt.Errorf("priority mix: weights sum to 0")
	}
	var c float64
	for i, w := range weights {
		c += w / total
		m.cumul = append(m.cumul, c)
		m.entries = append(m.entries, fmt.Sprintf("%s=%.3g", PriorityName(m.prios[i]), w/total))
	}
	m.cumul[len(m.cumul)-1] = 1
	return m, nil
}

// String is the normalised mix, e.g. "batch=0.3,interactive=0.7".
func (m PriorityMix) String() string {
	e := append([]string(nil), m.entries...)
	sort.Strings(e)
	return strings.Join(e, ",")
}

// pick draws a priority.
func (m PriorityMix) pick(rng *rand.Rand) pb.Priority {
	if len(m.prios) == 0 {
		return pb.Priority_PRIORITY_UNSPECIFIED
	}
	u := rng.Float64()
	for i, c := range m.cumul {
		if u < c {
			return m.prios[i]
		}
	}
	return m.prios[len(m.prios)-1]
}
