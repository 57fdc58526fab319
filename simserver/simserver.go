// Package simserver is switchyard-sim, the standalone simulator: it serves
// simulated accelerator pools (backends/sim) over gRPC, each pool as
// switchyard.v1.Inference on its own address (the pool's endpoint in the fleet
// config), plus switchyard.v1.SimControl for fault injection on a control
// address. Load testers and operators point a router at it to rehearse
// shortages; see docs/simulator.md. cmd/switchyard-sim's main only calls Run
// and ExitCode; tests call Run in-process.
//
//	switchyard-sim --config fleet.yaml --time-scale 60
//	switchyard-sim --pool use1-h100=h100:48@127.0.0.1:50061 --pool euw4-v5e=tpu-v5e:32@127.0.0.1:50062
//
// It lives outside backends/sim because it reads the router's fleet file
// (router/config), and backends never import router.
package simserver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/switchyard-dev/switchyard/backends/sim"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/config"
)

// ExitCode reports err (Run's result) on w and returns the process exit
// status: 0 for nil, 2 for any failure (the usage printed by --help or a bad
// flag is not repeated).
func ExitCode(err error, w io.Writer) int {
	if err == nil {
		return 0
	}
	if !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(w, "switchyard-sim:", err)
	}
	return 2
}

// poolFlags collects repeated --pool NAME=ACCEL:MAXBATCH@ADDR values.
type poolFlags []poolSpec

type poolSpec struct {
	name, accel string
	maxBatch    int
	addr        string
}

func (f *poolFlags) String() string { return fmt.Sprint(len(*f), " pools") }

func (f *poolFlags) Set(v string) error {
	s, err := parsePoolFlag(v)
	if err != nil {
		return err
	}
	*f = append(*f, s)
	return nil
}

// parsePoolFlag parses NAME=ACCEL:MAXBATCH@ADDR, e.g. use1-h100=h100:48@127.0.0.1:50061.
func parsePoolFlag(v string) (poolSpec, error) {
	bad := func(why string) (poolSpec, error) {
		return poolSpec{}, fmt.Errorf("--pool %q: %s (want NAME=ACCEL:MAXBATCH@HOST:PORT)", v, why)
	}
	name, rest, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return bad("missing NAME=")
	}
	spec, addr, ok := strings.Cut(rest, "@")
	if !ok || !strings.Contains(addr, ":") {
		return bad("missing @HOST:PORT")
	}
	accel, batch, ok := strings.Cut(spec, ":")
	if !ok || accel == "" {
		return bad("missing ACCEL:MAXBATCH")
	}
	n, err := strconv.Atoi(batch)
	if err != nil || n < 0 {
		return bad("MAXBATCH must be a number >= 0 (0 = the accelerator's default)")
	}
	return poolSpec{name: name, accel: accel, maxBatch: n, addr: addr}, nil
}

// settings are the parsed command line.
type settings struct {
	configPath    string
	pools         string
	poolFlags     poolFlags
	controlListen string
	timeScale     float64
	queueLength   int
	seed          int64
	logLevel      string
	grace         time.Duration
	profiles      bool
}

func parseFlags(args []string, stderr io.Writer) (*settings, error) {
	s := &settings{}
	fs := flag.NewFlagSet("switchyard-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.configPath, "config", "", "fleet config `file` (router format); its pools with host:port endpoints are served")
	fs.StringVar(&s.pools, "pools", "", "comma-separated pool `names` to serve from --config (default: every pool whose endpoints are host:port)")
	fs.Var(&s.poolFlags, "pool", "serve a pool without a config: `NAME=ACCEL:MAXBATCH@HOST:PORT` (repeatable)")
	fs.StringVar(&s.controlListen, "control-listen", "127.0.0.1:50070", "`address` serving SimControl for every pool (\"off\" disables)")
	fs.Float64Var(&s.timeScale, "time-scale", 0, "simulated `speed-up` (60 = a minute per second); overrides sim.time_scale (default 1)")
	fs.IntVar(&s.queueLength, "queue-length", 0, "waiting calls per pool before RESOURCE_EXHAUSTED; overrides sim.queue_length (default 4 × max batch)")
	fs.Int64Var(&s.seed, "seed", 1, "random `seed` for error-rate draws and synthetic text")
	fs.StringVar(&s.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	fs.DurationVar(&s.grace, "shutdown-grace", 10*time.Second, "how long running calls may finish on SIGINT/SIGTERM")
	fs.BoolVar(&s.profiles, "profiles", false, "print the accelerator profiles as a Markdown table and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if s.timeScale < 0 || s.queueLength < 0 || s.grace < 0 {
		return nil, errors.New("--time-scale, --queue-length and --shutdown-grace must not be negative")
	}
	return s, nil
}

// hosted is one simulated pool and where it is served.
type hosted struct {
	pool   *sim.Pool
	addr   string
	health *health.Server
}

// Run serves the pools its command line (without the program name) names
// until ctx is done, then stops the servers gracefully within
// --shutdown-grace. It reports each pool's and the control listener's
// address on stdout as it starts them, and logs to stderr.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if s.profiles {
		_, err := io.WriteString(stdout, sim.ProfileTable())
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	pools, err := buildPools(s, log)
	if err != nil {
		return err
	}
	host := sim.NewHost()
	for _, h := range pools {
		host.Add(h.pool)
	}
	defer func() {
		for _, h := range pools {
			_ = h.pool.Close()
		}
	}()

	var servers []*grpc.Server
	var listeners []net.Listener
	closeListeners := func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}
	listen := func(addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			closeListeners()
			return nil, fmt.Errorf("listen: %w", err)
		}
		listeners = append(listeners, l)
		return l, nil
	}
	for _, h := range pools {
		l, err := listen(h.addr)
		if err != nil {
			return fmt.Errorf("pool %s: %w", h.pool.Name(), err)
		}
		srv := grpc.NewServer()
		pb.RegisterInferenceServer(srv, sim.NewInferenceServer(h.pool))
		pb.RegisterSimControlServer(srv, host)
		healthpb.RegisterHealthServer(srv, h.health)
		reflection.Register(srv)
		servers = append(servers, srv)
		o := h.pool.Options()
		fmt.Fprintf(stdout, "pool %s (%s, batch %d, queue %d, time scale %g) serving on %s\n",
			o.Name, o.Accelerator, o.MaxBatch, o.QueueLength, o.TimeScale, l.Addr())
	}
	if s.controlListen != "off" && s.controlListen != "" {
		l, err := listen(s.controlListen)
		if err != nil {
			return fmt.Errorf("--control-listen: %w", err)
		}
		srv := grpc.NewServer()
		pb.RegisterSimControlServer(srv, host)
		hs := health.NewServer()
		hs.SetServingStatus("switchyard.v1.SimControl", healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(srv, hs)
		reflection.Register(srv)
		servers = append(servers, srv)
		fmt.Fprintf(stdout, "control serving on %s\n", l.Addr())
	}

	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { errc <- srv.Serve(listeners[i]) }()
	}
	log.Info("switchyard-sim started", "pools", len(pools))

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "grace", s.grace)
	case serveErr = <-errc:
		log.Error("server failed", "err", serveErr)
	}
	shutdown(servers, s.grace)
	if serveErr != nil {
		return fmt.Errorf("serve: %w", serveErr)
	}
	return nil
}

// shutdown stops every server gracefully, forcing the stop after grace.
func shutdown(servers []*grpc.Server, grace time.Duration) {
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan struct{})
			go func() { srv.GracefulStop(); close(done) }()
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-done:
			case <-t.C:
				srv.Stop()
				<-done
			}
		}()
	}
	wg.Wait()
}

// buildPools makes the pools named by --config/--pools and --pool.
func buildPools(s *settings, log *slog.Logger) ([]*hosted, error) {
	type want struct {
		opts sim.Options
		addr string
	}
	var wants []want
	timeScale, queueLength := s.timeScale, s.queueLength
	if s.configPath != "" {
		fleet, err := config.Load(s.configPath)
		if err != nil {
			return nil, err
		}
		if timeScale == 0 {
			timeScale = fleet.Sim.TimeScale
		}
		if queueLength == 0 {
			queueLength = fleet.Sim.QueueLength
		}
		selected, err := selectPools(fleet, s.pools)
		if err != nil {
			return nil, err
		}
		for _, p := range selected {
			o := sim.Options{
				Name: p.Name, Accelerator: p.Accelerator, MaxBatch: p.Limits.MaxConcurrent,
				Cloud: p.Cloud, Region: p.Region,
			}
			for _, m := range p.Models {
				mc, _ := fleet.Model(m)
				o.Models = append(o.Models, sim.Model{Name: m, MaxInputTokens: mc.MaxInputTokens, MaxOutputTokens: mc.MaxOutputTokens})
			}
			wants = append(wants, want{opts: o, addr: p.Endpoints[0]})
		}
	} else if s.pools != "" {
		return nil, errors.New("--pools needs --config")
	}
	for _, f := range s.poolFlags {
		wants = append(wants, want{opts: sim.Options{Name: f.name, Accelerator: f.accel, MaxBatch: f.maxBatch}, addr: f.addr})
	}
	if len(wants) == 0 {
		return nil, errors.New("nothing to serve: give --config with host:port pool endpoints, or --pool NAME=ACCEL:MAXBATCH@HOST:PORT")
	}
	seen := map[string]bool{}
	out := make([]*hosted, 0, len(wants))
	for _, w := range wants {
		if seen[w.opts.Name] {
			return nil, fmt.Errorf("pool %q given twice", w.opts.Name)
		}
		seen[w.opts.Name] = true
		hs := health.NewServer()
		name := w.opts.Name
		w.opts.TimeScale = timeScale
		w.opts.QueueLength = queueLength
		w.opts.Seed = s.seed
		w.opts.OnFaultChange = func(f *pb.Fault) {
			st := healthpb.HealthCheckResponse_SERVING
			if f.GetOutage() {
				st = healthpb.HealthCheckResponse_NOT_SERVING
			}
			hs.SetServingStatus("", st)
			hs.SetServingStatus("switchyard.v1.Inference", st)
			log.Info("fault changed", "pool", name, "outage", f.GetOutage(), "capacity_loss", f.GetCapacityLoss(),
				"slowdown", f.GetSlowdown(), "error_rate", f.GetErrorRate())
		}
		p, err := sim.NewPool(w.opts)
		if err != nil {
			return nil, err
		}
		hs.SetServingStatus("switchyard.v1.Inference", healthpb.HealthCheckResponse_SERVING)
		out = append(out, &hosted{pool: p, addr: w.addr, health: hs})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pool.Name() < out[j].pool.Name() })
	return out, nil
}

// selectPools picks the named pools, or every pool with host:port endpoints.
func selectPools(fleet *config.Fleet, names string) ([]config.Pool, error) {
	servable := func(p config.Pool) bool {
		return len(p.Endpoints) > 0 && strings.Contains(p.Endpoints[0], ":")
	}
	if names == "" {
		var out []config.Pool
		for _, p := range fleet.Pools {
			if servable(p) {
				out = append(out, p)
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%s: no pool has a host:port endpoint to serve on (use --pools with such pools, or --pool)", fleet.Source())
		}
		return out, nil
	}
	var out []config.Pool
	for _, n := range strings.Split(names, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		p, ok := fleet.Pool(n)
		if !ok {
			return nil, fmt.Errorf("--pools: %s has no pool %q (pools: %s)", fleet.Source(), n, strings.Join(fleet.PoolNames(), ", "))
		}
		if !servable(p) {
			return nil, fmt.Errorf("--pools: pool %q has no host:port endpoint (endpoints %v)", n, p.Endpoints)
		}
		out = append(out, p)
	}
	return out, nil
}
