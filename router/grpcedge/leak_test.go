package grpcedge_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The body test runs this binary as its client (bigClient).
	if addr := os.Getenv(bigClientEnv); addr != "" {
		os.Exit(bigClient(addr, os.Getenv(bigClientEnv+"_KEY")))
	}
	goleak.VerifyTestMain(m)
}
