package capacity_test

import (
	"testing"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/capacity/capacitytest"
)

func TestMemoryContract(t *testing.T) {
	capacitytest.Run(t, func(t *testing.T, clk clock.Clock) capacity.Store {
		s := capacity.NewMemory(capacity.MemoryOptions{Clock: clk})
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
