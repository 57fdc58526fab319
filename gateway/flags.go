package gateway

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/grpcedge"
	"github.com/switchyard-dev/switchyard/router/policy"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// flags are the parsed command line: the process's options.
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
	limits          grpcedge.PortOptions
	maxConns        int
}

// parseFlags parses the command line (without the program name); --help
// returns flag.ErrHelp after printing the usage on stderr.
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
	fs.IntVar(&f.limits.RecvMargin, "recv-margin", grpcedge.DefaultRecvMargin, "bytes a request may hold beyond the largest model's max_input_tokens × 4 (the receive limit of --listen)")
	fs.Func("max-streams-per-connection", fmt.Sprintf("calls one client connection may run at once (default %d)", grpcedge.DefaultMaxStreams), func(v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("want a positive number, got %q", v)
		}
		f.limits.MaxStreams = uint32(n)
		return nil
	})
	fs.Func("stream-workers", fmt.Sprintf("goroutines kept waiting to run calls on --listen (default %d; 0: a new goroutine per call)", grpcedge.DefaultStreamWorkers), func(v string) error {
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
	fs.IntVar(&f.maxConns, "max-connections", grpcedge.DefaultMaxConnections, "client connections served at once on --listen; more are closed when accepted")
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
	if f.replica == "" {
		host, _ := os.Hostname()
		f.replica = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	return f, nil
}

// newLogger is the process's logger from --log-level and --log-format,
// whose records logged with a context carry its request and trace ids
// (telemetry.NewLogHandler).
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

// readFleet reads the fleet file, or returns the embedded demo fleet for "".
func readFleet(path string) (*config.Fleet, error) {
	if path == "" {
		return config.Demo(), nil
	}
	return config.Load(path)
}

// metricsOn says whether --metrics-listen asks for the metrics listener.
func metricsOn(f *flags) bool { return f.metricsListen != "" && f.metricsListen != "off" }
