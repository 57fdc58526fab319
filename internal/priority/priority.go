// Package priority is the one place that names the request priorities:
// metric labels, logs, errors, the CLI's --priority and the load tester's
// priority mix all use these names. It imports nothing of the wire: the
// router's core (router/dispatch, router/policy) ranks and queues by Class,
// and each edge maps its wire's value to a Class with FromWire.
package priority

import "strings"

// Class is a priority class. Lower classes take precedence: Interactive
// before Standard before Batch. The zero Class is Standard, so a request that
// names no priority is standard.
type Class int8

// The classes in order of precedence.
const (
	Interactive Class = iota - 1
	Standard
	Batch
)

// Classes is the number of classes; Index numbers them 0..Classes-1 in
// order of precedence, for arrays indexed by class.
const Classes = 3

// Names are the classes' names, by Index.
var Names = [Classes]string{"interactive", "standard", "batch"}

// All are the classes in order of precedence (All[i].Index() == i).
var All = [Classes]Class{Interactive, Standard, Batch}

// Index is c's place in order of precedence, 0 for Interactive; an
// out-of-range class counts as Standard.
func (c Class) Index() int { return int(c.valid()) + 1 }

// String is the class's name; an out-of-range class is "standard".
func (c Class) String() string { return Names[c.Index()] }

// valid maps an out-of-range class to Standard.
func (c Class) valid() Class {
	if c < Interactive || c > Batch {
		return Standard
	}
	return c
}

// Parse reads a class name (any case).
func Parse(s string) (Class, bool) {
	for i, n := range Names {
		if strings.EqualFold(s, n) {
			return All[i], true
		}
	}
	return Standard, false
}

// The wire enum switchyard.v1.Priority numbers its values 0 unspecified, 1
// interactive, 2 standard, 3 batch (proto/switchyard/v1/inference.proto; a
// test holds the two together).
const (
	wireUnspecified = 0
	wireInteractive = 1
	wireStandard    = 2
	wireBatch       = 3
)

// FromWire is the class of the wire enum's value n: unspecified (0) and any
// unknown value are Standard.
func FromWire[N ~int32](n N) Class {
	switch n {
	case wireInteractive:
		return Interactive
	case wireBatch:
		return Batch
	default:
		return Standard
	}
}

// Wire is the wire enum's value of c (never unspecified).
func (c Class) Wire() int32 {
	switch c.valid() {
	case Interactive:
		return wireInteractive
	case Batch:
		return wireBatch
	default:
		return wireStandard
	}
}
