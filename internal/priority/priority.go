// Package priority is the one place that names the request priorities:
// metric labels, logs, errors, the CLI's --priority and the load tester's
// priority mix all use these names.
package priority

import (
	"strings"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Classes are the priority classes in order of precedence.
const (
	Interactive = iota
	Standard
	Batch
	Classes
)

// Names are the classes' names, indexed by class.
var Names = [Classes]string{"interactive", "standard", "batch"}

// Class returns p's class; PRIORITY_UNSPECIFIED (and any unknown value) is standard.
func Class(p pb.Priority) int {
	switch p {
	case pb.Priority_PRIORITY_INTERACTIVE:
		return Interactive
	case pb.Priority_PRIORITY_BATCH:
		return Batch
	default:
		return Standard
	}
}

// Name is p's class name ("interactive", "standard", "batch").
func Name(p pb.Priority) string { return Names[Class(p)] }

// Of returns the priority of a class.
func Of(class int) pb.Priority {
	switch class {
	case Interactive:
		return pb.Priority_PRIORITY_INTERACTIVE
	case Batch:
		return pb.Priority_PRIORITY_BATCH
	default:
		return pb.Priority_PRIORITY_STANDARD
	}
}

// Parse reads a class name (any case).
func Parse(s string) (pb.Priority, bool) {
	for c, n := range Names {
		if strings.EqualFold(s, n) {
			return Of(c), true
		}
	}
	return pb.Priority_PRIORITY_UNSPECIFIED, false
}
