// Command switchyard is the multi-cloud inference router; package gateway
// holds its flags, stores, listeners, reload and shutdown.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchyard-dev/switchyard/gateway"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := gateway.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(gateway.ExitCode(err, os.Stderr))
}
