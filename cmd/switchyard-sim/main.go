// Command switchyard-sim serves simulated accelerator pools over gRPC for a
// router to rehearse shortages against; package simserver holds its setup
// (docs/simulator.md).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchyard-dev/switchyard/simserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := simserver.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(simserver.ExitCode(err, os.Stderr))
}
