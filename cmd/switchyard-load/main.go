// Command switchyard-load replays real peak traffic (Azure LLM inference,
// Mooncake, BurstGPT or synthetic arrivals) open-loop against a switchyard
// router, injects shortages from a scenario file, and reports what clients
// felt. See docs/loadtest.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchyard-load:", err)
		os.Exit(1)
	}
}
