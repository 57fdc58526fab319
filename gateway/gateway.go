// Package gateway is the switchyard router process: it turns a command line
// into a running router and runs it until its context ends.
// cmd/switchyard's main only calls Run and ExitCode; tests call Run
// in-process. Without --config it serves an embedded demo fleet of
// simulated pools on AWS, Google Cloud and Azure with in-memory capacity
// counters.
//
// Run reads top to bottom as the process starts, one step each:
//
//  1. options from flags: parseFlags, newLogger (flags.go);
//  2. the fleet file: process.loadFleet;
//  3. telemetry: process.startTelemetry (grpc.go: the RPC instrumentation);
//  4. stores and router: process.newRouter (stores.go: capacity and control
//     stores; tokens.go: the admin token from the environment);
//  5. listeners: process.listen — the gRPC client port, SimControl
//     (simcontrol.go), metrics and pprof (debug.go), the console
//     (console.go), the HTTP front door (http.go);
//  6. serve until a signal: process.serve — reload on SIGHUP or a change of
//     the fleet file (reload.go), graceful shutdown when ctx ends.
//
// Whatever a step started is stopped on the way out, last first, however
// Run returns.
package gateway

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/bedrock"
	"github.com/switchyard-dev/switchyard/backends/grpcnative"
	"github.com/switchyard-dev/switchyard/backends/openai"
	"github.com/switchyard-dev/switchyard/backends/sim"
	"github.com/switchyard-dev/switchyard/backends/vertex"
	"github.com/switchyard-dev/switchyard/internal/httpedge"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/grpcedge"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// Run starts the router its command line (without the program name)
// describes and blocks until ctx ends, then shuts down gracefully: it
// reports NOT_SERVING, lets in-flight calls finish for up to
// --shutdown-timeout, and stops. Each listener's address is printed on
// stdout as it opens; the log goes to stderr. It returns flag.ErrHelp for
// --help, and an error for a bad flag or fleet file, a listener that cannot
// open, or a server that fails while serving.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	tuneGC()
	p := &process{f: f, log: log, stdout: stdout}
	defer p.stopAll()
	if err := p.loadFleet(); err != nil {
		return err
	}
	if err := p.startTelemetry(ctx); err != nil {
		return err
	}
	if err := p.newRouter(); err != nil {
		return err
	}
	if err := p.listen(); err != nil {
		return err
	}
	return p.serve(ctx)
}

// ExitCode reports err (Run's result) on w and returns the process exit
// status: 0 for nil and for --help (the usage is already printed), 1 with
// "switchyard: " and the error otherwise.
func ExitCode(err error, w io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(w, "switchyard:", err)
	return 1
}

// process is one router process while Run runs: what each step builds for
// the steps after it, and what to stop on the way out. Only Run's goroutine
// uses it.
type process struct {
	f      *flags
	log    *slog.Logger
	stdout io.Writer
	stops  []func() // stopAll runs them last first

	// loadFleet
	fleet     *config.Fleet
	lastMod   time.Time // the fleet file's modification time before it was read
	timeScale float64   // of the simulated pools
	// startTelemetry
	tel           *telemetry.Telemetry
	rpcMetrics    *telemetry.RPCMetrics
	rpcServerOpts []grpc.ServerOption
	rpcDialOpts   []grpc.DialOption
	// newRouter
	simHost *sim.Host
	store   capacity.Store
	rt      *router.Server
	// listen
	creds    []grpc.ServerOption // TLS from --tls-*, nil without
	lis      net.Listener        // the client port (--listen), served by serve
	gs       *grpc.Server
	health   *health.Server
	stopHTTP func(timeout time.Duration)
	serveErr chan error // a server that stopped serving
}

// onStop adds fn to what stopAll runs.
func (p *process) onStop(fn func()) { p.stops = append(p.stops, fn) }

// stopAll stops what the steps started, last first.
func (p *process) stopAll() {
	for i := len(p.stops) - 1; i >= 0; i-- {
		p.stops[i]()
	}
}

// loadFleet reads --config, or takes the embedded demo fleet, and settles
// the simulated pools' time scale (--sim-time-scale over sim.time_scale).
func (p *process) loadFleet() error {
	// The file's modification time before it is read: a change made while
	// the router starts (after the read, before the watcher's first look) is
	// still seen as a change.
	p.lastMod = modTime(p.f.config)
	fleet, err := readFleet(p.f.config)
	if err != nil {
		return err
	}
	p.fleet = fleet
	p.timeScale = fleet.Sim.TimeScale
	if p.f.simTimeScale > 0 {
		p.timeScale = p.f.simTimeScale
	}
	return nil
}

// startTelemetry sets up metrics, traces and the RPC instrumentation of the
// client port and the native backend links; it flushes them on the way out.
func (p *process) startTelemetry(ctx context.Context) error {
	tel, err := telemetry.New(ctx, telemetry.Options{Replica: p.f.replica, Console: p.stdout, Metrics: metricsOn(p.f) || consoleOn(p.f)})
	if err != nil {
		return err
	}
	tel.Install()
	p.tel = tel
	p.onStop(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			p.log.Warn("telemetry shutdown", "err", err)
		}
	})
	p.rpcMetrics, p.rpcServerOpts, p.rpcDialOpts, err = rpcInstrumentation(tel)
	return err
}

// newRouter registers the backend adapters, builds the capacity and control
// stores (newStores), reads the admin token from the environment and builds
// the router, which owns the store from then on.
func (p *process) newRouter() error {
	p.simHost = sim.NewHost()
	reg := backends.NewRegistry()
	grpcnative.Register(reg, grpcnative.Options{DialOptions: append(p.rpcDialOpts, transportDialOptions...)})
	sim.Register(reg, sim.RegistryOptions{Host: p.simHost, TimeScale: p.timeScale, QueueLength: p.fleet.Sim.QueueLength})
	openai.Register(reg, openai.Options{Logger: p.log})
	bedrock.Register(reg, bedrock.Options{Logger: p.log})
	vertex.Register(reg, vertex.Options{Logger: p.log})

	var rtp atomic.Pointer[router.Server]
	store, ctl, closeRedis, err := newStores(p.f, p.fleet, p.log, func(from, to capacity.Mode) {
		if rt := rtp.Load(); rt != nil {
			rt.CountingModeChanged(from, to)
		}
	})
	if err != nil {
		return err
	}
	p.onStop(closeRedis)
	adminTokens, err := envAdminTokens()
	if err != nil {
		_ = store.Close()
		return err
	}
	rt, err := router.New(router.Options{
		Fleet: p.fleet, Store: store, Control: ctl, Backends: reg, Policy: p.f.policy, Logger: p.log, Replica: p.f.replica, Region: p.f.region, AdminTokens: adminTokens,
		TracerProvider: p.tel.TracerProvider, MeterProvider: p.tel.MeterProvider,
	})
	if err != nil {
		_ = store.Close()
		return err
	}
	rtp.Store(rt)
	p.onStop(func() { _ = rt.Close() })
	p.store, p.rt = store, rt
	return nil
}

// listen opens the client port (served by serve) and starts the other
// listeners: SimControl, metrics, pprof, the console and the HTTP front door.
func (p *process) listen() error {
	creds, err := serverTLS(p.f)
	if err != nil {
		return err
	}
	p.creds = creds
	if err := p.listenClientPort(); err != nil {
		return err
	}
	p.serveErr = make(chan error, 4)
	simAddr, stopSim, err := serveSimControl(simControlOptions{Listen: p.f.simCtlListen, Creds: p.creds, Host: p.simHost, Router: p.rt, Log: p.log}, p.serveErr)
	if err != nil {
		return err
	}
	p.onStop(stopSim)
	if simAddr != "" {
		fmt.Fprintf(p.stdout, "switchyard sim control on %s\n", simAddr)
	}
	if err := p.serveMetrics(); err != nil {
		return err
	}
	if p.f.debugListen != "" && p.f.debugListen != "off" {
		stopDebug, err := serveDebug(p.f.debugListen, p.log)
		if err != nil {
			return err
		}
		p.onStop(stopDebug)
	}
	stopConsole, err := p.startConsole()
	if err != nil {
		return err
	}
	p.onStop(stopConsole)
	if p.stopHTTP, err = p.serveHTTP(); err != nil {
		return err
	}
	p.onStop(func() { p.stopHTTP(0) }) // the serve error path; a no-op after a graceful stop
	return nil
}

// listenClientPort opens --listen and builds its gRPC server: Inference,
// Admin, health and reflection.
func (p *process) listenClientPort() error {
	lis, err := net.Listen("tcp", p.f.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", p.f.listen, err)
	}
	lis = grpcedge.LimitListener(lis, p.f.maxConns)
	p.onStop(func() { _ = lis.Close() }) // when a later step fails before serve; closing it again after Stop is harmless
	gs := grpc.NewServer(grpcedge.ClientPortOptions(p.rt, p.f.limits, append(append(p.creds, transportServerOptions...), p.rpcServerOpts...)...)...)
	p.onStop(gs.Stop) // every way out, early errors included: the server's stream workers start with it
	grpcedge.Register(gs, p.rt)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(pb.Inference_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	reflection.Register(gs)
	p.rpcMetrics.SetServerMethods(gs.GetServiceInfo())
	p.lis, p.gs, p.health = lis, gs, hs
	return nil
}

// serveMetrics serves Prometheus metrics at /metrics on --metrics-listen
// (unless off).
func (p *process) serveMetrics() error {
	if !metricsOn(p.f) {
		return nil
	}
	mlis, err := net.Listen("tcp", p.f.metricsListen)
	if err != nil {
		return fmt.Errorf("--metrics-listen %s: %w", p.f.metricsListen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", p.tel.Handler)
	// Prometheus needs few connections; past the cap a new one takes the
	// place of the oldest (none authenticates here).
	elis := httpedge.NewListener(mlis, httpedge.ListenerOptions{MaxConns: metricsMaxConns, MaxUntrusted: metricsMaxConns})
	mlis = elis
	hsrv := &http.Server{Handler: httpedge.Handler(mux), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	httpedge.Harden(hsrv, elis, httpedge.ServerOptions{})
	go func() {
		if err := hsrv.Serve(mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.serveErr <- fmt.Errorf("metrics: %w", err)
		}
	}()
	p.onStop(func() { _ = hsrv.Close() })
	p.log.Info("metrics serving", "url", "http://"+mlis.Addr().String()+"/metrics")
	fmt.Fprintf(p.stdout, "switchyard metrics on http://%s/metrics\n", mlis.Addr())
	return nil
}

// serve serves the client port until ctx ends or a server fails, reloading
// the fleet file on SIGHUP and, with --watch-config, when its modification
// time changes; when ctx ends it shuts down gracefully.
func (p *process) serve(ctx context.Context) error {
	go func() { p.serveErr <- p.gs.Serve(p.lis) }()
	mode := p.store.Status().Mode
	p.log.Info("switchyard serving", "listen", p.lis.Addr().String(), "traces", p.tel.TracesExporter, "fleet", p.fleet.Source(), "pools", len(p.fleet.Pools),
		"policy", p.rt.PolicyName(), "counting", mode.String(), "sim_time_scale", p.timeScale)
	fmt.Fprintf(p.stdout, "switchyard listening on %s (%d pools from %s, %s counters, policy %s)\n",
		p.lis.Addr(), len(p.fleet.Pools), p.fleet.Source(), mode, p.rt.PolicyName())

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var fileChanged <-chan time.Time
	if p.f.config != "" && p.f.watchConfig > 0 {
		t := time.NewTicker(p.f.watchConfig)
		defer t.Stop()
		fileChanged = t.C
	}
	for {
		select {
		case err := <-p.serveErr:
			return fmt.Errorf("serve: %w", err)
		case <-hup:
			reload(p.rt, p.store, p.f.config, p.log)
		case <-fileChanged:
			if m := modTime(p.f.config); !m.Equal(p.lastMod) {
				p.lastMod = m
				p.log.Info("config file changed; reloading", "path", p.f.config)
				reload(p.rt, p.store, p.f.config, p.log)
			}
		case <-ctx.Done():
			p.shutdown()
			return nil
		}
	}
}

// shutdown reports NOT_SERVING so load balancers stop sending, lets
// in-flight calls finish on the client port and the HTTP front door, then
// stops hard after --shutdown-timeout.
func (p *process) shutdown() {
	timeout := p.f.shutdownTimeout
	p.log.Info("shutting down: letting in-flight calls finish", "timeout", timeout)
	p.health.Shutdown()
	done := make(chan struct{})
	go func() {
		httpDone := make(chan struct{})
		go func() { p.stopHTTP(timeout); close(httpDone) }()
		p.gs.GracefulStop()
		<-httpDone
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		p.log.Warn("shutdown timeout: stopping with calls still in flight")
		p.gs.Stop()
	}
}
