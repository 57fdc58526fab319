// Command switchyard is the multi-cloud inference router. Without --config it
// serves an embedded demo fleet of simulated pools on AWS, Google Cloud and
// Azure with in-memory capacity counters.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"

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
	"github.com/switchyard-dev/switchyard/router/policy"
	"github.com/switchyard-dev/switchyard/router/telemetry"
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
	region          string
	simTimeScale    float64
	shutdownTimeout time.Duration
	leaseTTL        time.Duration
	capacityMode    string
	blockTTL        time.Duration
	blockRefresh    time.Duration
	tlsCert         string
	tlsKey          string
	tlsClientCA     string
	watchConfig     time.Duration
	metricsListen   string
	consoleListen   string
	consoleHosts    string
	debugListen     string
	simCtlListen    string
	httpListen      string
	httpOrigins     string
	redisTimeout    time.Duration
	limits          router.GRPCOptions
	maxConns        int
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
	fs.StringVar(&f.policy, "policy", "", "routing policy, overriding the config: "+strings.Join(policy.Builtins().Names(), ", "))
	fs.StringVar(&f.replica, "replica", "", "replica name (default: hostname-pid)")
	fs.StringVar(&f.region, "region", os.Getenv("SWITCHYARD_REGION"), "region this replica runs in; calls without routing.caller_region are routed from it (default $SWITCHYARD_REGION)")
	fs.Float64Var(&f.simTimeScale, "sim-time-scale", 0, "time scale of simulated pools, overriding sim.time_scale (10 = ten times faster)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight calls may run after SIGTERM")
	fs.DurationVar(&f.leaseTTL, "lease-ttl", 15*time.Second, "with --redis and strict counting: how long a slot survives without renewal (a dead replica's slots come back within it)")
	fs.StringVar(&f.capacityMode, "capacity-mode", "", "with a shared store: leased (blocks of slots leased from each pool's home store, no round trip per call) or strict (one Redis reservation per call); default: the fleet file's capacity.mode, else leased")
	fs.DurationVar(&f.blockTTL, "block-ttl", 10*time.Second, "leased counting: how long a block of slots lives without refresh (a dead replica's blocks come back within it; a store restarted empty grants nothing new for that long)")
	fs.DurationVar(&f.blockRefresh, "block-refresh", 500*time.Millisecond, "leased counting: how often each replica refreshes its blocks (one round trip per home store)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "serve TLS with this certificate (PEM)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "private key for --tls-cert (PEM)")
	fs.StringVar(&f.tlsClientCA, "tls-client-ca", "", "require client certificates signed by this CA (PEM)")
	fs.DurationVar(&f.watchConfig, "watch-config", 2*time.Second, "re-read --config when the file changes, checked this often (0: only on SIGHUP)")
	fs.StringVar(&f.metricsListen, "metrics-listen", "127.0.0.1:9464", "serve Prometheus metrics at http://ADDR/metrics (\"off\" disables); traces go where OTEL_TRACES_EXPORTER says (otlp, console, none)")
	fs.StringVar(&f.debugListen, "debug-listen", "", "serve Go's net/http/pprof profiles at http://ADDR/debug/pprof/ (default off; loopback only)")
	fs.StringVar(&f.consoleListen, "console-listen", "127.0.0.1:9465", "serve the operator web console at http://ADDR/ (\"off\" disables; TLS as for --listen)")
	fs.StringVar(&f.consoleHosts, "console-allowed-hosts", "", "comma-separated host names (name or name:port) the console answers to besides its listen address and localhost; requests for any other Host header get 421 (DNS-rebinding defence)")
	fs.IntVar(&f.limits.RecvMargin, "recv-margin", router.DefaultRecvMargin, "bytes a request may hold beyond the largest model's max_input_tokens × 4 (the receive limit of --listen)")
	fs.Func("max-streams-per-connection", fmt.Sprintf("calls one client connection may run at once (default %d)", router.DefaultMaxStreams), func(v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("want a positive number, got %q", v)
		}
		f.limits.MaxStreams = uint32(n)
		return nil
	})
	fs.Func("stream-workers", fmt.Sprintf("goroutines kept waiting to run calls on --listen (default %d; 0: a new goroutine per call)", router.DefaultStreamWorkers), func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1<<16 {
			return fmt.Errorf("want a number from 0 to 65536, got %q", v)
		}
		f.limits.StreamWorkers = n
		if n == 0 {
			f.limits.StreamWorkers = -1
		}
		return nil
	})
	fs.IntVar(&f.maxConns, "max-connections", router.DefaultMaxConnections, "client connections served at once on --listen; more are closed when accepted")
	fs.DurationVar(&f.redisTimeout, "redis-timeout", 150*time.Millisecond, "with --redis: longest a call waits for the shared counters before it is counted locally (degraded mode)")
	fs.StringVar(&f.httpListen, "http-listen", "127.0.0.1:8080", "OpenAI-compatible HTTP API address (/v1/chat/completions, /v1/completions, /v1/models; \"off\" disables); the --tls-* flags apply to it too")
	fs.StringVar(&f.httpOrigins, "http-allowed-origins", "", "comma-separated web origins (https://app.example.com, or * for all) whose pages may call --http-listen from a browser, with CORS; other Origin headers get 403 (the page's own host and localhost on the listen port are allowed); without tenants their hosts are also allowed in Host")
	fs.StringVar(&f.simCtlListen, "sim-control-listen", "", "serve switchyard.v1.SimControl (fault injection into simulated pools) on this address; default off; loopback only unless --tls-cert is set, then every call needs an operator admin token (docs/security.md)")
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
	o := &slog.HandlerOptions{Level: l, ReplaceAttr: readableDurations}
	switch format {
	case "json":
		return slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(w, o))), nil
	case "text":
		return slog.New(telemetry.NewLogHandler(slog.NewTextHandler(w, o))), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", format)
}

// readableDurations logs a duration as Go writes it ("30s", "1.5ms"), not
// as JSON's integer nanoseconds ("timeout":30000000000).
func readableDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
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
	tuneGC()
	// The file's modification time before it is read: a change made while
	// the router starts (after the read, before the watcher's first look) is
	// still seen as a change.
	lastMod := modTime(f.config)
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

	metricsOn := f.metricsListen != "" && f.metricsListen != "off"
	tel, err := telemetry.New(ctx, telemetry.Options{Replica: f.replica, Console: stdout, Metrics: metricsOn || consoleOn(f)})
	if err != nil {
		return err
	}
	tel.Install()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			log.Warn("telemetry shutdown", "err", err)
		}
	}()
	rpcMetrics, rpcServerOpts, rpcDialOpts, err := rpcInstrumentation(tel)
	if err != nil {
		return err
	}

	simHost := sim.NewHost()
	reg := backends.NewRegistry()
	grpcnative.Register(reg, grpcnative.Options{DialOptions: append(rpcDialOpts, transportDialOptions...)})
	sim.Register(reg, sim.RegistryOptions{Host: simHost, TimeScale: timeScale, QueueLength: fleet.Sim.QueueLength})
	openai.Register(reg, openai.Options{Logger: log})
	bedrock.Register(reg, bedrock.Options{Logger: log})
	vertex.Register(reg, vertex.Options{Logger: log})

	var rtp atomic.Pointer[router.Server]
	store, ctl, closeRedis, err := newStores(f, fleet, log, func(from, to capacity.Mode) {
		if rt := rtp.Load(); rt != nil {
			rt.CountingModeChanged(from, to)
		}
	})
	if err != nil {
		return err
	}
	defer closeRedis()
	var adminTokens []config.AdminToken
	if tok := os.Getenv("SWITCHYARD_ADMIN_TOKEN"); tok != "" {
		if err := checkAdminToken(tok); err != nil {
			_ = store.Close()
			return err
		}
		adminTokens = append(adminTokens, config.AdminToken{Name: "env:SWITCHYARD_ADMIN_TOKEN", Role: "operator", SHA256: router.HashToken(tok)})
	}
	rt, err := router.New(router.Options{
		Fleet: fleet, Store: store, Control: ctl, Backends: reg, Policy: f.policy, Logger: log, Replica: f.replica, Region: f.region, AdminTokens: adminTokens,
		TracerProvider: tel.TracerProvider, MeterProvider: tel.MeterProvider,
	})
	if err != nil {
		_ = store.Close()
		return err
	}
	rtp.Store(rt)
	defer rt.Close()
	creds, err := serverTLS(f)
	if err != nil {
		return err
	}

	lis, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", f.listen, err)
	}
	lis = router.LimitListener(lis, f.maxConns)
	gs := grpc.NewServer(rt.GRPCServerOptions(f.limits, append(append(creds, transportServerOptions...), rpcServerOpts...)...)...)
	defer gs.Stop() // every way out, early errors included: the server's stream workers start with it
	rt.Register(gs)
	rt.RegisterAdmin(gs)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(pb.Inference_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	reflection.Register(gs)
	rpcMetrics.SetServerMethods(gs.GetServiceInfo())

	serveErr := make(chan error, 4)
	simAddr, stopSim, err := serveSimControl(simControlOptions{Listen: f.simCtlListen, Creds: creds, Host: simHost, Router: rt, Log: log}, serveErr)
	if err != nil {
		_ = lis.Close()
		return err
	}
	defer stopSim()
	if simAddr != "" {
		fmt.Fprintf(stdout, "switchyard sim control on %s\n", simAddr)
	}
	if metricsOn {
		mlis, err := net.Listen("tcp", f.metricsListen)
		if err != nil {
			_ = lis.Close()
			return fmt.Errorf("--metrics-listen %s: %w", f.metricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", tel.Handler)
		// Prometheus needs few connections; past the cap a new one takes the
		// place of the oldest (none authenticates here).
		elis := httpedge.NewListener(mlis, httpedge.ListenerOptions{MaxConns: metricsMaxConns, MaxUntrusted: metricsMaxConns})
		mlis = elis
		hsrv := &http.Server{Handler: httpedge.Handler(mux), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
		httpedge.Harden(hsrv, elis, httpedge.ServerOptions{})
		go func() {
			if err := hsrv.Serve(mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("metrics: %w", err)
			}
		}()
		defer hsrv.Close()
		log.Info("metrics serving", "url", "http://"+mlis.Addr().String()+"/metrics")
		fmt.Fprintf(stdout, "switchyard metrics on http://%s/metrics\n", mlis.Addr())
	}
	if f.debugListen != "" && f.debugListen != "off" {
		stopDebug, err := serveDebug(f.debugListen, log)
		if err != nil {
			_ = lis.Close()
			return err
		}
		defer stopDebug()
	}
	stopConsole, err := startConsole(f, rt, tel, log, stdout, serveErr)
	if err != nil {
		_ = lis.Close()
		return err
	}
	defer stopConsole()
	stopHTTP, err := serveHTTP(f, rt, tel, log, stdout, serveErr)
	if err != nil {
		_ = lis.Close()
		return err
	}
	defer stopHTTP(0) // the serve error path; a no-op after a graceful stop
	go func() { serveErr <- gs.Serve(lis) }()
	log.Info("switchyard serving", "listen", lis.Addr().String(), "traces", tel.TracesExporter, "fleet", fleet.Source(), "pools", len(fleet.Pools),
		"policy", rt.PolicyName(), "counting", store.Status().Mode.String(), "sim_time_scale", timeScale)
	fmt.Fprintf(stdout, "switchyard listening on %s (%d pools from %s, %s counters, policy %s)\n",
		lis.Addr(), len(fleet.Pools), fleet.Source(), store.Status().Mode, rt.PolicyName())

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var fileChanged <-chan time.Time
	if f.config != "" && f.watchConfig > 0 {
		t := time.NewTicker(f.watchConfig)
		defer t.Stop()
		fileChanged = t.C
	}
	for {
		select {
		case err := <-serveErr:
			return fmt.Errorf("serve: %w", err)
		case <-hup:
			reload(rt, store, f.config, log)
			continue
		case <-fileChanged:
			if m := modTime(f.config); !m.Equal(lastMod) {
				lastMod = m
				log.Info("config file changed; reloading", "path", f.config)
				reload(rt, store, f.config, log)
			}
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
	go func() {
		httpDone := make(chan struct{})
		go func() { stopHTTP(f.shutdownTimeout); close(httpDone) }()
		gs.GracefulStop()
		<-httpDone
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(f.shutdownTimeout):
		log.Warn("shutdown timeout: stopping with calls still in flight")
		gs.Stop()
	}
	return nil
}

// HTTP/2 flow-control windows of the client port and of the links to native
// backends. Fixed windows turn off grpc-go's bandwidth-delay estimation,
// which sends a PING on received data and reads its ack: frames and
// syscalls on every call of a proxy that only forwards small messages
// (docs/benchmarks.md, "Proxy overhead"). 1 MiB per call and 4 MiB per
// connection are far above any prompt or chunk the router forwards.
const (
	streamWindow = 1 << 20
	connWindow   = 4 << 20
)

var (
	transportServerOptions = []grpc.ServerOption{grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow)}
	transportDialOptions   = []grpc.DialOption{grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow)}
)

// tuneGC lets the heap grow to 5× the live heap between collections (GOGC
// 400) unless GOGC is set: the router's live heap is small and its garbage
// is per-call buffers, so collecting less often costs little memory and
// takes GC off the latency of calls. GOMEMLIMIT, when set, still bounds it.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
}

// serveDebug serves net/http/pprof on a loopback address (profiles show
// the router's internals: never on a public port).
func serveDebug(addr string, log *slog.Logger) (stop func(), err error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("--debug-listen %s: %w", addr, err)
	}
	if !loopbackOnly(addr) {
		return nil, fmt.Errorf("--debug-listen %s: profiles are served on loopback only", addr)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--debug-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	log.Info("profiles serving", "url", "http://"+lis.Addr().String()+"/debug/pprof/")
	return func() { _ = srv.Close() }, nil
}

// rpcInstrumentation returns what the client port (server options) and the
// native backend links (dial options) carry for telemetry: the call-duration
// metrics from interceptors always, and otelgrpc's stats handlers (spans, W3C
// context) only when traces are exported — a stats handler costs grpc-go an
// event per header and message of every call. Health checks and reflection
// are neither measured nor traced.
func rpcInstrumentation(tel *telemetry.Telemetry) (*telemetry.RPCMetrics, []grpc.ServerOption, []grpc.DialOption, error) {
	tracing := tel.TracesExporter != "none"
	m, err := telemetry.NewRPCMetrics(telemetry.RPCMetricsOptions{
		MeterProvider: tel.MeterProvider, Propagator: tel.Propagator, PassTraceContext: !tracing,
		Measured: instrumented,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	srv := []grpc.ServerOption{grpc.ChainUnaryInterceptor(m.UnaryServer), grpc.ChainStreamInterceptor(m.StreamServer)}
	dial := []grpc.DialOption{grpc.WithChainUnaryInterceptor(m.UnaryClient), grpc.WithChainStreamInterceptor(m.StreamClient)}
	if tracing {
		otelOpts := []otelgrpc.Option{
			otelgrpc.WithTracerProvider(tel.TracerProvider), otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
			otelgrpc.WithPropagators(tel.Propagator), otelgrpc.WithFilter(traced),
		}
		srv = append(srv, grpc.StatsHandler(otelgrpc.NewServerHandler(otelOpts...)))
		dial = append(dial, grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelOpts...)))
	}
	return m, srv, dial, nil
}

// instrumented says which RPCs are measured and traced: not health checks
// nor reflection.
func instrumented(fullMethod string) bool {
	return !strings.HasPrefix(fullMethod, "/grpc.health.") && !strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

// traced is instrumented in the form otelgrpc's filter takes.
func traced(info *stats.RPCTagInfo) bool { return instrumented(info.FullMethodName) }

func reload(rt *router.Server, store capacity.Store, path string, log *slog.Logger) {
	if path == "" {
		log.Info("SIGHUP ignored: serving the embedded demo fleet (no --config)")
		return
	}
	fleet, err := config.Load(path)
	if err == nil {
		err = checkHomes(store, fleet, log) // before anything changes
	}
	if err == nil {
		err = rt.Reload(fleet)
	}
	if err == nil {
		err = rehome(store, fleet)
	}
	if err != nil {
		log.Error("config reload rejected; the running config stays", "err", err)
	}
}

func modTime(path string) time.Time {
	if path == "" {
		return time.Time{}
	}
	st, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

// serverTLS returns the TLS server option when --tls-cert is set.
func serverTLS(f *flags) ([]grpc.ServerOption, error) {
	cfg, err := tlsConfig(f)
	if cfg == nil || err != nil {
		return nil, err
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(cfg))}, nil
}

// tlsConfig is the servers' TLS configuration from --tls-cert, --tls-key and
// --tls-client-ca; nil without them.
func tlsConfig(f *flags) (*tls.Config, error) {
	if f.tlsCert == "" && f.tlsKey == "" && f.tlsClientCA == "" {
		return nil, nil
	}
	if f.tlsCert == "" || f.tlsKey == "" {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.tlsClientCA != "" {
		pem, err := os.ReadFile(f.tlsClientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-client-ca %s: no PEM certificate found", f.tlsClientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// metricsMaxConns caps --metrics-listen's connections (httpedge.Listener).
const metricsMaxConns = 64
