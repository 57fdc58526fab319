package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/switchyard-dev/switchyard/router/routertest"
)

// peakRPCs is a server stats handler that keeps the most Generate calls the
// router's handlers ran at once.
type peakRPCs struct {
	mu        sync.Mutex
	now, peak int
}

func (p *peakRPCs) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (p *peakRPCs) HandleRPC(_ context.Context, s stats.RPCStats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch s.(type) {
	case *stats.Begin:
		p.now++
		p.peak = max(p.peak, p.now)
	case *stats.End:
		p.now--
	}
}
func (p *peakRPCs) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (p *peakRPCs) HandleConn(context.Context, stats.ConnStats)                       {}

func (p *peakRPCs) max() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}

// burstTrace writes an Azure-format trace of n calls arriving together,
// each asking for out tokens.
func burstTrace(t *testing.T, n, out int) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("TIMESTAMP,ContextTokens,GeneratedTokens\n")
	for i := range n {
		fmt.Fprintf(&b, "2023-11-16 18:17:03.%07d,200,%d\n", i, out)
	}
	path := filepath.Join(t.TempDir(), "burst.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestConnectionsKeepCallsOutOfTheClientQueue: a real router whose gRPC
// server runs 4 calls at a time per connection gets a burst of 16 long calls.
// Over one connection, 12 of them wait in the client for a stream — the
// router never holds more than 4 — and the load tester measures that wait and
// fails the run's verdict for it. Over --connections 4 the router runs more
// than 4 at once (all 16 unless one ends before the last is sent), and no
// verdict fails: no call waited in the client for 10 % of its timeout.
func TestConnectionsKeepCallsOutOfTheClientQueue(t *testing.T) {
	const calls, perConn = 16, 4
	path := burstTrace(t, calls, 64)
	for _, tc := range []struct {
		conns   string
		wantErr string
	}{
		{conns: "1", wantErr: "client wait"},
		{conns: "4"},
	} {
		t.Run("connections="+tc.conns, func(t *testing.T) {
			peak := &peakRPCs{}
			rt := routertest.Start(t, routertest.Options{TimeScale: 0.5, GRPC: []grpc.ServerOption{grpc.MaxConcurrentStreams(perConn), grpc.StatsHandler(peak)}})
			jsonPath := filepath.Join(t.TempDir(), "r.json")
			_, stderr, err := runCmd(t, "--target", rt.Addr, "--trace", path, "--format", "azure", "--model", "llama-3.1-8b",
				"--max-concurrency", fmt.Sprint(calls), "--connections", tc.conns, "--timeout", "3s",
				"--caller-region", "us-east-1", "--report-json", jsonPath, "--no-progress")
			if tc.wantErr == "" && err != nil {
				t.Fatalf("run: %v\n%s", err, stderr)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(stderr, "waited in the load tester")) {
				t.Fatalf("err = %v, want one naming %q and a warning\nstderr:\n%s", err, tc.wantErr, stderr)
			}
			r := readReport(t, jsonPath).Runs[0]
			wait := r.Latency["client_wait"]
			t.Logf("connections %s: ok %d of %d, e2e p50 %.0fms, client wait p50 %.1fms max %.1fms, router peak %d",
				tc.conns, r.Requests.OK, calls, r.Latency["e2e"].P50, wait.P50, wait.Max, peak.max())
			if r.Requests.OK != calls || wait.Count != calls || r.Config.Connections != mustAtoi(t, tc.conns) {
				t.Fatalf("ok %d, client waits measured %d, connections %d", r.Requests.OK, wait.Count, r.Config.Connections)
			}
			// One connection holds the router at its stream limit; four let
			// it run more than one connection's share (all 16 when none of
			// the calls ends before the last is sent).
			if got := peak.max(); (tc.conns == "1" && got != perConn) || (tc.conns != "1" && got <= perConn) {
				t.Errorf("the router ran at most %d calls at once", got)
			}
		})
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
