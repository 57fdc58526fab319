// Command switchyard-load replays real peak traffic open-loop against a
// switchyard router, injects shortages from a scenario file, and reports what
// clients felt; package loadtest/cli holds its command line
// (docs/loadtest.md).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchyard-dev/switchyard/loadtest/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cli.ExitCode(err, os.Stderr))
}
