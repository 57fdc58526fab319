package gateway

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when one of them leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
