// Package clock names the router's time source for the packages that import
// it by this path (router/capacity). It is internal/clock under another name:
// one implementation, one Fake, shared with the load tester.
package clock

import (
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
)

type (
	// Clock is internal/clock.Clock.
	Clock = clock.Clock
	// Real is the wall clock.
	Real = clock.Real
	// Fake is a manually advanced clock for tests.
	Fake = clock.Fake
	// Timer and Ticker are what Clock.NewTimer and Clock.NewTicker return.
	Timer  = clock.Timer
	Ticker = clock.Ticker
)

// NewFake returns a fake clock set to t.
func NewFake(t time.Time) *Fake { return clock.NewFake(t) }
