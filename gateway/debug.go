package gateway

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"time"
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

// metricsMaxConns caps --metrics-listen's connections (httpedge.Listener).
const metricsMaxConns = 64
