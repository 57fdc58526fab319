// Package scenario reads scenario files (YAML) and carries them out during a
// replay: at given offsets of trace time, simulated pools fail, lose
// capacity, slow down or return errors (switchyard.v1.SimControl), and the
// router drains, resumes, re-weights or overrides pools or changes policy
// (switchyard.v1.Admin), so that a shortage is rehearsed the same way every time.
//
// Offsets are trace time: the trace's own clock, divided by --speedup like the
// arrivals, so a step "at: 10m" always lands on the same requests.
package scenario

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Action names.
const (
	Outage           = "outage"
	CapacityLoss     = "capacity_loss"
	Slowdown         = "slowdown"
	ErrorRate        = "error_rate"
	Clear            = "clear"
	Drain            = "drain"
	Resume           = "resume"
	SetWeight        = "set_weight"
	CapacityOverride = "capacity_override"
	SetPolicy        = "set_policy"
)

// Scenario is a parsed, validated scenario file.
type Scenario struct {
	Name        string
	Description string
	// Steps in order of At (file order among equal offsets).
	Steps []Step
	// File is the path it was read from.
	File string
}

// Step is one action.
type Step struct {
	Line   int
	At     time.Duration // trace time
	Action string
	Pool   string
	// Fraction of batch slots lost (capacity_loss), 0..1.
	Fraction float64
	// Factor multiplies prefill and decode time (slowdown), >= 1.
	Factor float64
	// Rate is the probability a call fails (error_rate), 0..1.
	Rate float64
	// Force drains even without fleet headroom (drain).
	Force bool
	// Weight (set_weight), >= 0.
	Weight float64
	// Limit is the overriding max concurrent requests (capacity_override).
	Limit int32
	// For is how long an override lasts, in trace time (0: until cleared).
	For time.Duration
	// ClearOverride removes an override (capacity_override with clear: true).
	ClearOverride bool
	// Policy to switch to (set_policy).
	Policy string
}

// Sim reports whether the step goes to SimControl (else Admin).
func (s Step) Sim() bool {
	switch s.Action {
	case Outage, CapacityLoss, Slowdown, ErrorRate, Clear:
		return true
	}
	return false
}

// Detail is a short human description of the step's parameters.
func (s Step) Detail() string {
	switch s.Action {
	case CapacityLoss:
		return fmt.Sprintf("fraction %g", s.Fraction)
	case Slowdown:
		return fmt.Sprintf("factor %g", s.Factor)
	case ErrorRate:
		return fmt.Sprintf("rate %g", s.Rate)
	case Drain:
		if s.Force {
			return "force"
		}
	case SetWeight:
		return fmt.Sprintf("weight %g", s.Weight)
	case CapacityOverride:
		if s.ClearOverride {
			return "clear"
		}
		if s.For > 0 {
			return fmt.Sprintf("limit %d for %v", s.Limit, s.For)
		}
		return fmt.Sprintf("limit %d", s.Limit)
	case SetPolicy:
		return s.Policy
	}
	return ""
}

// UsesAdmin reports whether any step needs the Admin service.
func (sc *Scenario) UsesAdmin() bool {
	for _, s := range sc.Steps {
		if !s.Sim() {
			return true
		}
	}
	return false
}

// maxSteps bounds a scenario file.
const maxSteps = 10_000

// actionKeys lists, per action, the keys it takes beyond at, action and pool.
var actionKeys = map[string][]string{
	Outage:           nil,
	CapacityLoss:     {"fraction"},
	Slowdown:         {"factor"},
	ErrorRate:        {"rate"},
	Clear:            nil,
	Drain:            {"force"},
	Resume:           nil,
	SetWeight:        {"weight"},
	CapacityOverride: {"limit", "for", "clear"},
	SetPolicy:        {"policy"},
}

// Actions lists the action names, sorted.
func Actions() []string {
	out := make([]string, 0, len(actionKeys))
	for a := range actionKeys {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// Load reads and validates a scenario file.
func Load(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	return Parse(b, path)
}

// Parse validates a scenario document; name prefixes every error ("FILE:LINE: reason").
// All problems found are returned together.
func Parse(data []byte, name string) (*Scenario, error) {
	sc := &Scenario{File: name}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlErr(name, err)
	}
	if len(doc.Content) == 0 {
		return nil, fmt.Errorf("%s:1: empty scenario: want a mapping with steps", name)
	}
	p := &parser{name: name}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: a scenario is a mapping with name, description and steps", name, root.Line)
	}
	var steps *yaml.Node
	p.mapping(root, map[string]func(*yaml.Node){
		"name":        func(n *yaml.Node) { sc.Name = p.str(n, "name") },
		"description": func(n *yaml.Node) { sc.Description = p.str(n, "description") },
		"steps":       func(n *yaml.Node) { steps = n },
	})
	switch {
	case steps == nil:
		p.errf(root, "no steps")
	case steps.Kind != yaml.SequenceNode:
		p.errf(steps, "steps must be a list")
	case len(steps.Content) > maxSteps:
		p.errf(steps, "%d steps, more than %d", len(steps.Content), maxSteps)
	default:
		for _, n := range steps.Content {
			if s, ok := p.step(n); ok {
				sc.Steps = append(sc.Steps, s)
			}
		}
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	sort.SliceStable(sc.Steps, func(i, j int) bool { return sc.Steps[i].At < sc.Steps[j].At })
	return sc, nil
}

type parser struct {
	name string
	errs []error
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s:%d: %s", p.name, n.Line, fmt.Sprintf(format, args...)))
}

// mapping calls fields[key] for each key of n, reporting unknown and repeated keys.
func (p *parser) mapping(n *yaml.Node, fields map[string]func(*yaml.Node)) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		f, ok := fields[k.Value]
		if !ok {
			known := make([]string, 0, len(fields))
			for name := range fields {
				known = append(known, name)
			}
			sort.Strings(known)
			p.errf(k, "unknown key %q (known here: %s)", k.Value, strings.Join(known, ", "))
			continue
		}
		if seen[k.Value] {
			p.errf(k, "key %q given twice", k.Value)
			continue
		}
		seen[k.Value] = true
		f(v)
	}
}

func (p *parser) str(n *yaml.Node, key string) string {
	if n.Kind != yaml.ScalarNode {
		p.errf(n, "%s must be a string", key)
		return ""
	}
	return n.Value
}

func (p *parser) float(n *yaml.Node, key string) float64 {
	if n.Kind == yaml.ScalarNode {
		if v, err := strconv.ParseFloat(n.Value, 64); err == nil && !math.IsNaN(v) && !math.IsInf(v, 0) {
			return v
		}
	}
	p.errf(n, "%s: %q is not a number", key, n.Value)
	return math.NaN()
}

func (p *parser) boolean(n *yaml.Node, key string) bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		p.errf(n, "%s: %q is not true or false", key, n.Value)
	}
	return b
}

// duration accepts "90s", "10m", "1h30m" or a plain number of seconds.
func (p *parser) duration(n *yaml.Node, key string) time.Duration {
	if n.Kind == yaml.ScalarNode {
		if d, err := time.ParseDuration(n.Value); err == nil && d >= 0 {
			return d
		}
		if v, err := strconv.ParseFloat(n.Value, 64); err == nil && v >= 0 && v < 1e9 {
			return time.Duration(v * float64(time.Second))
		}
	}
	p.errf(n, "%s: %q is not a duration >= 0 such as 90s, 10m or 1h30m", key, n.Value)
	return 0
}

func (p *parser) step(n *yaml.Node) (Step, bool) {
	s := Step{Line: n.Line}
	if n.Kind != yaml.MappingNode {
		p.errf(n, "a step is a mapping with at and action")
		return s, false
	}
	before := len(p.errs)
	// First find the action so that the keys can be checked against it.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "action" {
			s.Action = p.str(n.Content[i+1], "action")
		}
	}
	extra, ok := actionKeys[s.Action]
	if !ok {
		if s.Action == "" {
			p.errf(n, "step has no action (one of %s)", strings.Join(Actions(), ", "))
		} else {
			p.errf(n, "unknown action %q (one of %s)", s.Action, strings.Join(Actions(), ", "))
		}
		return s, false
	}
	var haveAt, havePool bool
	setters := map[string]func(*yaml.Node){
		"at":     func(v *yaml.Node) { s.At, haveAt = p.duration(v, "at"), true },
		"action": func(*yaml.Node) {},
		"pool":   func(v *yaml.Node) { s.Pool, havePool = p.str(v, "pool"), true },
		"note":   func(v *yaml.Node) { p.str(v, "note") },
	}
	present := map[string]*yaml.Node{}
	for _, k := range extra {
		key := k
		setters[key] = func(v *yaml.Node) { present[key] = v }
	}
	p.mapping(n, setters)
	if !haveAt {
		p.errf(n, "%s: missing at (trace-time offset such as 10m)", s.Action)
	}
	need := func(key string) *yaml.Node {
		v, ok := present[key]
		if !ok {
			p.errf(n, "%s: missing %s", s.Action, key)
		}
		return v
	}
	switch s.Action {
	case CapacityLoss:
		if v := need("fraction"); v != nil {
			if s.Fraction = p.float(v, "fraction"); !(s.Fraction > 0 && s.Fraction <= 1) && !math.IsNaN(s.Fraction) {
				p.errf(v, "fraction must be in (0, 1], got %v", s.Fraction)
			}
		}
	case Slowdown:
		if v := need("factor"); v != nil {
			if s.Factor = p.float(v, "factor"); !(s.Factor >= 1 && s.Factor <= 1000) && !math.IsNaN(s.Factor) {
				p.errf(v, "factor must be in [1, 1000], got %v", s.Factor)
			}
		}
	case ErrorRate:
		if v := need("rate"); v != nil {
			if s.Rate = p.float(v, "rate"); !(s.Rate >= 0 && s.Rate <= 1) && !math.IsNaN(s.Rate) {
				p.errf(v, "rate must be in [0, 1], got %v", s.Rate)
			}
		}
	case Drain:
		if v, ok := present["force"]; ok {
			s.Force = p.boolean(v, "force")
		}
	case SetWeight:
		if v := need("weight"); v != nil {
			if s.Weight = p.float(v, "weight"); !(s.Weight >= 0 && s.Weight <= 1e6) && !math.IsNaN(s.Weight) {
				p.errf(v, "weight must be in [0, 1e6], got %v", s.Weight)
			}
		}
	case CapacityOverride:
		if v, ok := present["clear"]; ok {
			s.ClearOverride = p.boolean(v, "clear")
		}
		v, haveLimit := present["limit"]
		switch {
		case s.ClearOverride && haveLimit:
			p.errf(v, "capacity_override: give limit or clear: true, not both")
		case !s.ClearOverride && !haveLimit:
			p.errf(n, "capacity_override: missing limit (or clear: true)")
		case haveLimit:
			l := p.float(v, "limit")
			if l != math.Trunc(l) || l < 0 || l > math.MaxInt32 {
				if !math.IsNaN(l) {
					p.errf(v, "limit must be a whole number >= 0, got %v", v.Value)
				}
			} else {
				s.Limit = int32(l)
			}
		}
		if v, ok := present["for"]; ok {
			s.For = p.duration(v, "for")
		}
	case SetPolicy:
		if v := need("policy"); v != nil {
			if s.Policy = p.str(v, "policy"); s.Policy == "" {
				p.errf(v, "policy is empty")
			}
		}
	}
	if !s.Sim() && s.Action != SetPolicy && (!havePool || s.Pool == "") {
		p.errf(n, "%s: missing pool", s.Action)
	}
	if s.Action == SetPolicy && havePool {
		p.errf(n, "set_policy applies to the whole router: remove pool")
	}
	return s, len(p.errs) == before
}

// yamlErr turns yaml.v3 syntax errors ("yaml: line 3: ...") into "FILE:3: ...".
func yamlErr(name string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		return fmt.Errorf("%s:%s", name, rest)
	}
	return fmt.Errorf("%s:1: %s", name, msg)
}
