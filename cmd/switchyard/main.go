// Command switchyard is the multi-cloud inference router. Without --config it
// serves an embedded demo fleet of simulated pools on AWS, Google Cloud and
// Azure with in-memory capacity counters.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/grpcnative"
	"github.com/switchyard-dev/switchyard/backends/sim"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "switchyard:", err)
		os.Exit(1)
	}
}

type flags struct {
	listen          string
	config          string
	redis           string
	logLevel        string
	logFormat       string
	policy          string
	replica         string
	simTimeScale    float64
	shutdownTimeout time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	fs := flag.NewFlagSet("switchyard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &flags{}
	fs.StringVar(&f.listen, "listen", "127.0.0.1:50051", "gRPC listen address (Inference, Admin, health, reflection)")
	fs.StringVar(&f.config, "config", "", "fleet config YAML (default: the embedded demo fleet)")
	fs.StringVar(&f.redis, "redis", "", "shared capacity counters: redis://host:port/db, rediss://..., redis+cluster://h1:p1,h2:p2 (empty: in-memory)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "json or text")
	fs.StringVar(&f.policy, "policy", "", "routing policy, overriding the config: switchyard, round_robin, random, least_request")
	fs.StringVar(&f.replica, "replica", "", "replica name (default: hostname-pid)")
	fs.Float64Var(&f.simTimeScale, "sim-time-scale", 0, "time scale of simulated pools, overriding sim.time_scale (10 = ten times faster)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight calls may run after SIGTERM")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return f, nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	o := &slog.HandlerOptions{Level: l}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, o)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", format)
}

func loadFleet(path string) (*config.Fleet, error) {
	if path == "" {
		return config.Demo(), nil
	}
	return config.Load(path)
}

// run starts the router and blocks until ctx ends, then shuts down gracefully.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	fleet, err := loadFleet(f.config)
	if err != nil {
		return err
	}
	if f.replica == "" {
		host, _ := os.Hostname()
		f.replica = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	timeScale := fleet.Sim.TimeScale
	if f.simTimeScale > 0 {
		timeScale = f.simTimeScale
	}

	simHost := sim.NewHost()
	reg := backends.NewRegistry()
	grpcnative.Register(reg, grpcnative.Options{})
	sim.Register(reg, sim.RegistryOptions{Host: simHost, TimeScale: timeScale, QueueLength: fleet.Sim.QueueLength})

	store, err := newStore(ctx, f, log)
	if err != nil {
		return err
	}
	rt, err := router.New(router.Options{
		Fleet: fleet, Store: store, Backends: reg, Policy: f.policy, Logger: log, Replica: f.replica,
	})
	if err != nil {
		_ = store.Close()
		return err
	}
	defer rt.Close()

	lis, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", f.listen, err)
	}
	gs := grpc.NewServer(router.ServerOptions()...)
	rt.Register(gs)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(pb.Inference_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	if len(simHost.Pools()) > 0 {
		pb.RegisterSimControlServer(gs, simHost)
	}
	reflection.Register(gs)

	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()
	log.Info("switchyard serving", "listen", lis.Addr().String(), "fleet", fleet.Source(), "pools", len(fleet.Pools),
		"policy", rt.PolicyName(), "counting", store.Status().Mode.String(), "sim_time_scale", timeScale)
	fmt.Fprintf(stdout, "switchyard listening on %s (%d pools from %s, %s counters, policy %s)\n",
		lis.Addr(), len(fleet.Pools), fleet.Source(), store.Status().Mode, rt.PolicyName())

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case err := <-serveErr:
			return fmt.Errorf("serve: %w", err)
		case <-hup:
			reload(rt, f.config, log)
			continue
		case <-ctx.Done():
		}
		break
	}

	// Graceful shutdown: report NOT_SERVING so load balancers stop sending,
	// let in-flight calls finish, then stop hard after the timeout.
	log.Info("shutting down: letting in-flight calls finish", "timeout", f.shutdownTimeout)
	hs.Shutdown()
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(f.shutdownTimeout):
		log.Warn("shutdown timeout: stopping with calls still in flight")
		gs.Stop()
	}
	return nil
}

func reload(rt *router.Server, path string, log *slog.Logger) {
	if path == "" {
		log.Info("SIGHUP ignored: serving the embedded demo fleet (no --config)")
		return
	}
	fleet, err := config.Load(path)
	if err == nil {
		err = rt.Reload(fleet)
	}
	if err != nil {
		log.Error("config reload rejected; the running config stays", "err", err)
	}
}

func newStore(ctx context.Context, f *flags, log *slog.Logger) (capacity.Store, error) {
	if f.redis == "" {
		return capacity.NewMemory(capacity.MemoryOptions{}), nil
	}
	return nil, fmt.Errorf("--redis: not wired yet")
}
