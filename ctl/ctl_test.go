package ctl

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/switchyard-dev/switchyard/backends/sim"
	"github.com/switchyard-dev/switchyard/internal/syncbuf"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/routertest"
)

// testFleetYAML: pool c alone serves m-solo, so draining it is refused
// without --force; a and b share m-big with c.
const testFleetYAML = `
models:
  - {name: m-big, max_input_tokens: 4096, max_output_tokens: 512}
  - {name: m-solo, max_input_tokens: 4096, max_output_tokens: 512}
pools:
  - {name: a, cloud: aws, region: us-east-1, accelerator: h100, models: [m-big], endpoints: [sim], limits: {max_concurrent: 8}, cost_per_million_tokens: 0.9}
  - {name: b, cloud: gcp, region: europe-west4, accelerator: tpu-v5e, models: [m-big], endpoints: [sim], limits: {max_concurrent: 8}, cost_per_million_tokens: 0.45}
  - {name: c, cloud: azure, region: eastus, accelerator: b200, models: [m-big, m-solo], endpoints: [sim], limits: {max_concurrent: 4}, cost_per_million_tokens: 1.4}
routing:
  policy: switchyard
sim:
  time_scale: 50
`

var poolNames = []string{"a", "b", "c"}

type routerOpts struct {
	store capacity.Store
	creds grpc.ServerOption
	// host, when set, serves the simulated pools (faults can be injected).
	host *sim.Host
}

// startRouter serves a router with the Admin API on a loopback port, built
// the way gateway builds it, and returns its address.
func startRouter(t *testing.T, o routerOpts) string {
	t.Helper()
	var extra []grpc.ServerOption
	if o.creds != nil {
		extra = append(extra, o.creds)
	}
	r := routertest.Start(t, routertest.Options{
		FleetYAML: testFleetYAML, Host: o.host,
		Router: router.Options{
			Store: o.store, Replica: "test-replica", UsageRefresh: 250 * time.Millisecond, // the router's default, as the gateway runs it
			AdminTokens: []config.AdminToken{
				{Name: "ops", Role: "operator", SHA256: router.HashToken("op-secret")},
				{Name: "view", Role: "viewer", SHA256: router.HashToken("view-secret")},
			},
		},
		GRPC: extra,
	})
	return r.Addr
}

// tokenFile writes tok to a file and returns its path.
func tokenFile(t *testing.T, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ctl runs switchyardctl against addr with the given token and returns its output.
func ctl(t *testing.T, addr, tok string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	full := append([]string{"--addr", addr, "--token-file", tokenFile(t, tok)}, args...)
	err = Run(context.Background(), full, &out, &errOut)
	return out.String(), errOut.String(), err
}

// mustCtl is ctl that fails the test on error.
func mustCtl(t *testing.T, addr string, args ...string) string {
	t.Helper()
	out, stderr, err := ctl(t, addr, "op-secret", args...)
	if err != nil {
		t.Fatalf("switchyardctl %s: %v\nstderr: %s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// listPools returns the pools as `pools --json` reports them.
func listPools(t *testing.T, addr string) map[string]*pb.PoolStatus {
	t.Helper()
	out := mustCtl(t, addr, "pools", "--json")
	var resp pb.ListPoolsResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("pools --json is not a ListPoolsResponse: %v\n%s", err, out)
	}
	m := map[string]*pb.PoolStatus{}
	for _, p := range resp.GetPools() {
		m[p.GetName()] = p
	}
	return m
}

func TestPoolsTableListsEveryPool(t *testing.T) {
	addr := startRouter(t, routerOpts{})
	out := mustCtl(t, addr, "pools")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2+len(poolNames) {
		t.Fatalf("want header, column names and %d pools, got:\n%s", len(poolNames), out)
	}
	if !strings.Contains(lines[0], "replica test-replica") || !strings.Contains(lines[0], "policy switchyard") || !strings.Contains(lines[0], "counting local") {
		t.Errorf("header line lacks replica, policy or counting mode: %q", lines[0])
	}
	if got := strings.Fields(lines[1]); strings.Join(got, " ") != "NAME CLOUD REGION ACCEL MODELS LIMIT INFLIGHT HEADROOM WEIGHT STATE COST BLOCK" {
		t.Errorf("columns = %v", got)
	}
	for i, name := range poolNames {
		if f := strings.Fields(lines[2+i]); f[0] != name || f[9] != "ok" || f[len(f)-1] != "-" {
			t.Errorf("row %d = %q, want pool %s in state ok, no block (in-memory counting)", i, lines[2+i], name)
		}
	}
	if !strings.Contains(out, "a     aws    us-east-1     h100     m-big         8") {
		t.Errorf("row for a not as expected:\n%s", out)
	}
	if got := len(listPools(t, addr)); got != len(poolNames) {
		t.Errorf("pools --json lists %d pools, want %d", got, len(poolNames))
	}
}

func TestGlobalFlagsBeforeOrAfterCommand(t *testing.T) {
	addr := startRouter(t, routerOpts{})
	tf := tokenFile(t, "op-secret")
	for _, args := range [][]string{
		{"--json", "--addr", addr, "--token-file", tf, "pools"},
		{"pools", "--addr", addr, "--json", "--token-file=" + tf},
	} {
		var out bytes.Buffer
		if err := Run(context.Background(), args, &out, io.Discard); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !json.Valid(out.Bytes()) {
			t.Errorf("%v: output is not one JSON document:\n%s", args, out.String())
		}
	}
}

func TestDegradedCountingWarnsLoudly(t *testing.T) {
	addr := startRouter(t, routerOpts{store: degradedStore{capacity.NewMemory(capacity.MemoryOptions{})}})
	out, stderr, err := ctl(t, addr, "op-secret", "pools")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "WARNING") || !strings.Contains(stderr, "DEGRADED") {
		t.Errorf("no warning on stderr: %q", stderr)
	}
	if !strings.Contains(out, "counting DEGRADED") {
		t.Errorf("header does not show DEGRADED:\n%s", out)
	}
}

// degradedStore reports the degraded counting mode.
type degradedStore struct{ capacity.Store }

func (degradedStore) Status() capacity.Status { return capacity.Status{Mode: capacity.ModeDegraded} }

func TestWeightSet(t *testing.T) {
	addr := startRouter(t, routerOpts{})
	out := mustCtl(t, addr, "weight", "set", "a", "2.5")
	if !strings.Contains(out, "a:") || !strings.Contains(out, "weight 2.5") {
		t.Errorf("weight set output: %q", out)
	}
	if w := listPools(t, addr)["a"].GetWeight(); w != 2.5 {
		t.Errorf("weight of a = %v after weight set, want 2.5", w)
	}
	if w := listPools(t, addr)["b"].GetWeight(); w != 1 {
		t.Errorf("weight of b = %v, want untouched 1", w)
	}
	_, _, err := ctl(t, addr, "op-secret", "weight", "set", "a", "5000")
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "weight") {
		t.Errorf("weight 5000: err = %v, want INVALID_ARGUMENT naming the weight", err)
	}
	var ue *usageError
	if _, _, err := ctl(t, addr, "op-secret", "weight", "set", "a", "heavy"); !errors.As(err, &ue) {
		t.Errorf("non-numeric weight: err = %v, want a usage error", err)
	}
}

func TestDrainDryRunDrainResume(t *testing.T) {
	addr := startRouter(t, routerOpts{})
	out := mustCtl(t, addr, "drain", "a", "--dry-run")
	for _, want := range []string{"dry run", "m-big", "b,c", "fleet has headroom: yes", "nothing changed"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	if listPools(t, addr)["a"].GetDrained() {
		t.Fatal("drain --dry-run drained the pool")
	}

	out = mustCtl(t, addr, "drain", "a")
	if !strings.Contains(out, "drained a") || !strings.Contains(out, "state drained") {
		t.Errorf("drain output:\n%s", out)
	}
	if !listPools(t, addr)["a"].GetDrained() {
		t.Fatal("drain did not drain the pool")
	}
	if table := mustCtl(t, addr, "pools"); !strings.Contains(table, "drained") {
		t.Errorf("pools table does not show the drain:\n%s", table)
	}

	out = mustCtl(t, addr, "resume", "a")
	if !strings.Contains(out, "resumed a") || !strings.Contains(out, "state ok") {
		t.Errorf("resume output: %q", out)
	}
	if listPools(t, addr)["a"].GetDrained() {
		t.Fatal("resume did not resume the pool")
	}
}

func TestDrainRefusedWithoutHeadroomUnlessForced(t *testing.T) {
	addr := startRouter(t, routerOpts{})
	out := mustCtl(t, addr, "drain", "c", "--dry-run")
	if !strings.Contains(out, "fleet has headroom: NO") || !strings.Contains(out, "(none)") {
		t.Errorf("dry run of the only m-solo pool should report no headroom:\n%s", out)
	}
	_, _, err := ctl(t, addr, "op-secret", "drain", "c")
	if status.Code(err) != codes.FailedPrecondition || !strings.HasPrefix(err.Error(), "refused: draining c") || !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), "m-solo") {
		t.Fatalf("drain without headroom: err = %v, want refused with a --force hint", err)
	}
	if listPools(t, addr)["c"].GetDrained() {
		t.Fatal("refused drain drained the pool")
	}
	mustCtl(t, addr, "drain", "--force", "c")
	if !listPools(t, addr)["c"].GetDrained() {
		t.Fatal("drain --force did not drain")
	}
}

func TestCapacitySetAndClear(t *testing.T) {
	addr := startRouter(t, routerOpts{})
	out := mustCtl(t, addr, "capacity", "set", "a", "2", "--for", "30m")
	if !strings.Contains(out, "limit 2 (configured 8)") {
		t.Errorf("capacity set output: %q", out)
	}
	p := listPools(t, addr)["a"]
	if p.GetLimit() != 2 || p.GetConfiguredLimit() != 8 || p.GetOverrideExpires() == nil {
		t.Fatalf("after capacity set: limit %d configured %d expires %v", p.GetLimit(), p.GetConfiguredLimit(), p.GetOverrideExpires())
	}
	if left := time.Until(p.GetOverrideExpires().AsTime()); left < 29*time.Minute || left > 31*time.Minute {
		t.Errorf("override expires in %s, want about 30m", left)
	}
	if table := mustCtl(t, addr, "pools"); !strings.Contains(table, "override 2 (") {
		t.Errorf("pools table lacks the override:\n%s", table)
	}

	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	mustCtl(t, addr, "capacity", "set", "b", "0", "--until", until)
	if p := listPools(t, addr)["b"]; p.GetLimit() != 0 || p.GetOverrideExpires().AsTime().Format(time.RFC3339) != until {
		t.Errorf("capacity set --until: limit %d expires %v, want 0 until %s", p.GetLimit(), p.GetOverrideExpires().AsTime(), until)
	}

	mustCtl(t, addr, "capacity", "clear", "a")
	if p := listPools(t, addr)["a"]; p.GetLimit() != 8 || p.GetOverrideExpires() != nil {
		t.Errorf("after capacity clear: limit %d expires %v, want 8 and none", p.GetLimit(), p.GetOverrideExpires())
	}

	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	if _, _, err := ctl(t, addr, "op-secret", "capacity", "set", "a", "2", "--until", past); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "past") {
		t.Errorf("--until in the past: err = %v", err)
	}
	var ue *usageError
	if _, _, err := ctl(t, addr, "op-secret", "capacity", "set", "a", "2", "--for", "1m", "--until", until); !errors.As(err, &ue) {
		t.Errorf("--for with --until: err = %v, want a usage error", err)
	}
	if _, _, err := ctl(t, addr, "op-secret", "capacity", "set", "a", "lots"); !errors.As(err, &ue) {
		t.Errorf("non-numeric limit: err = %v, want a usage error", err)
	}
}

func TestPolicySet(t *testing.T) {
	addr := startRouter(t, routerOpts{})
	if out := mustCtl(t, addr, "policy", "set", "round_robin"); strings.TrimSpace(out) != "policy switchyard -> round_robin" {
		t.Errorf("policy set output: %q", out)
	}
	if _, _, err := ctl(t, addr, "op-secret", "policy", "set", "fastest"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("unknown policy: err = %v, want INVALID_ARGUMENT", err)
	}
}

func TestExplainRanksAndSkips(t *testing.T) {
	addr := startRouter(t, routerOpts{})
	out := mustCtl(t, addr, "explain", "--model", "m-big", "--region", "us-east-1", "--priority", "interactive")
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "policy switchyard: 3 eligible, 0 skipped") {
		t.Errorf("explain header: %q", lines[0])
	}
	if got := strings.Fields(lines[1]); strings.Join(got, " ") != "RANK POOL TIER HEADROOM WEIGHT SCORE REASON" {
		t.Errorf("explain columns: %v", got)
	}
	if f := strings.Fields(lines[2]); f[0] != "1" || f[1] != "a" || f[2] != "region" {
		t.Errorf("a caller in us-east-1 should rank pool a first in its region tier:\n%s", out)
	}

	out = mustCtl(t, addr, "explain", "--model", "m-big", "--residency", "eu")
	if !strings.Contains(out, "1 eligible, 2 skipped") || !strings.Contains(out, "SKIPPED") {
		t.Fatalf("EU residency should keep only b:\n%s", out)
	}
	skipped := out[strings.Index(out, "SKIPPED"):]
	for _, name := range []string{"a ", "c "} {
		if !strings.Contains(skipped, "\n"+name) {
			t.Errorf("pool %s not listed as skipped:\n%s", name, out)
		}
	}

	if _, _, err := ctl(t, addr, "op-secret", "explain", "--model", "gpt-9"); status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "gpt-9") {
		t.Errorf("unknown model: err = %v", err)
	}
	var ue *usageError
	if _, _, err := ctl(t, addr, "op-secret", "explain"); !errors.As(err, &ue) {
		t.Errorf("explain without --model: err = %v, want a usage error", err)
	}
	if _, _, err := ctl(t, addr, "op-secret", "explain", "--model", "m-big", "--priority", "urgent"); !errors.As(err, &ue) {
		t.Errorf("bad --priority: err = %v, want a usage error", err)
	}
}

func TestAuditShowsActorAndBeforeAfter(t *testing.T) {
	addr := startRouter(t, routerOpts{})
	if out := mustCtl(t, addr, "audit"); !strings.Contains(out, "no changes recorded") {
		t.Errorf("empty audit: %q", out)
	}
	mustCtl(t, addr, "weight", "set", "b", "0.5")
	mustCtl(t, addr, "capacity", "set", "a", "3")
	out := mustCtl(t, addr, "audit")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("want header and 2 entries:\n%s", out)
	}
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != "TIME ACTOR ACTION POOL BEFORE AFTER" {
		t.Errorf("audit columns: %v", got)
	}
	// Newest first.
	if f := strings.Fields(lines[1]); f[1] != "ops" || f[2] != "capacity_override" || f[3] != "a" || !strings.Contains(lines[1], "limit 8 (config)") || !strings.HasSuffix(lines[1], "limit 3") {
		t.Errorf("capacity entry: %q", lines[1])
	}
	if f := strings.Fields(lines[2]); len(f) != 6 || f[1] != "ops" || f[2] != "set_weight" || f[3] != "b" || f[4] != "1" || f[5] != "0.5" {
		t.Errorf("weight entry: %q", lines[2])
	}
	if out := mustCtl(t, addr, "audit", "--limit", "1"); strings.Count(strings.TrimSpace(out), "\n") != 1 {
		t.Errorf("audit --limit 1:\n%s", out)
	}
}

// waitFor polls cond for up to 5s (testwait.For).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, 5*time.Second, what, cond)
}

func TestWatchStreamsChangesUntilCanceled(t *testing.T) {
	for _, jsonOut := range []bool{false, true} {
		addr := startRouter(t, routerOpts{})
		ctx, cancel := context.WithCancel(context.Background())
		var out syncbuf.Buffer
		args := []string{"--addr", addr, "--token-file", tokenFile(t, "view-secret"), "watch"}
		if jsonOut {
			args = append(args, "--json")
		}
		done := make(chan error, 1)
		go func() { done <- Run(ctx, args, &out, io.Discard) }()

		waitFor(t, "the hello event", func() bool { return strings.Contains(out.String(), "hello") })
		mustCtl(t, addr, "weight", "set", "c", "3")
		waitFor(t, "the weight event", func() bool { return strings.Contains(out.String(), "-> 3") })
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("watch after cancel: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("watch did not stop on cancel")
		}

		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if jsonOut {
			var kinds []string
			for _, l := range lines {
				var ev pb.Event
				if err := protojson.Unmarshal([]byte(l), &ev); err != nil {
					t.Fatalf("watch --json line %q: %v", l, err)
				}
				kinds = append(kinds, ev.GetKind())
				if ev.GetKind() == "weight" && ev.GetPool() != "c" {
					t.Errorf("weight event for pool %q, want c", ev.GetPool())
				}
			}
			if kinds[0] != "hello" || kinds[len(kinds)-1] != "weight" {
				t.Errorf("event kinds %v", kinds)
			}
			continue
		}
		last := strings.Fields(lines[len(lines)-1])
		if len(last) < 3 || last[1] != "weight" || last[2] != "c" {
			t.Errorf("weight line = %q, want: time weight c detail", lines[len(lines)-1])
		}
		if _, err := time.Parse(time.RFC3339, last[0]); err != nil {
			t.Errorf("event time %q: %v", last[0], err)
		}
	}
}

func TestAuthErrors(t *testing.T) {
	addr := startRouter(t, routerOpts{})

	_, _, err := ctl(t, addr, "wrong-secret", "pools")
	if status.Code(err) != codes.Unauthenticated || !strings.HasPrefix(err.Error(), "authentication failed: unknown token") || !strings.Contains(err.Error(), "SWITCHYARD_ADMIN_TOKEN") {
		t.Errorf("wrong token: err = %v", err)
	}

	// A viewer reads, and may dry-run a drain, but not change anything.
	if _, _, err := ctl(t, addr, "view-secret", "pools"); err != nil {
		t.Errorf("viewer pools: %v", err)
	}
	if _, _, err := ctl(t, addr, "view-secret", "drain", "a", "--dry-run"); err != nil {
		t.Errorf("viewer drain --dry-run: %v", err)
	}
	for _, args := range [][]string{{"weight", "set", "a", "2"}, {"drain", "a"}, {"capacity", "clear", "a"}, {"policy", "set", "random"}} {
		_, _, err := ctl(t, addr, "view-secret", args...)
		if status.Code(err) != codes.PermissionDenied || !strings.HasPrefix(err.Error(), "permission denied: token") || !strings.Contains(err.Error(), "view") {
			t.Errorf("viewer %v: err = %v, want permission denied", args, err)
		}
	}
	if listPools(t, addr)["a"].GetWeight() != 1 {
		t.Error("a viewer changed a weight")
	}

	// No token at all: refused before dialling.
	err = runEnv(context.Background(), environment{getenv: func(string) string { return "" }}, []string{"--addr", addr, "pools"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no admin token") {
		t.Errorf("no token: err = %v", err)
	}
	// Token from the environment, whitespace trimmed.
	env := environment{getenv: func(k string) string {
		if k == "SWITCHYARD_ADMIN_TOKEN" {
			return " op-secret\n"
		}
		return ""
	}}
	if err := runEnv(context.Background(), env, []string{"--addr", addr, "weight", "set", "a", "2"}, io.Discard, io.Discard); err != nil {
		t.Errorf("token from SWITCHYARD_ADMIN_TOKEN: %v", err)
	}
	// An empty token file.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), []string{"--addr", addr, "--token-file", empty, "pools"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty token file: err = %v", err)
	}
}

func TestUnknownPoolIsNamed(t *testing.T) {
	addr := startRouter(t, routerOpts{})
	for _, args := range [][]string{{"weight", "set", "nope", "1"}, {"drain", "nope", "--dry-run"}, {"resume", "nope"}, {"capacity", "set", "nope", "1"}} {
		_, _, err := ctl(t, addr, "op-secret", args...)
		if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), `unknown pool "nope"`) {
			t.Errorf("%v: err = %v, want NOT_FOUND naming the pool", args, err)
		}
	}
}

func TestUnreachableRouter(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	for _, args := range [][]string{{"pools"}, {"watch"}} {
		_, _, err := ctl(t, addr, "op-secret", append(args, "--timeout", "2s")...)
		if err == nil || !strings.HasPrefix(err.Error(), "cannot reach router at "+addr) {
			t.Errorf("%v against a closed port: err = %v", args, err)
		}
		if got := ExitCode(err, io.Discard); got != 1 {
			t.Errorf("exit status %d, want 1", got)
		}
	}
}

func TestTokenHashMatchesRouter(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"token", "hash", "op-secret"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := router.HashToken("op-secret") + "\n"
	if out.String() != want {
		t.Errorf("token hash = %q, want %q", out.String(), want)
	}
	for _, args := range [][]string{{"token", "hash", "-"}, {"token", "hash"}} {
		out.Reset()
		env := environment{getenv: func(string) string { return "" }, stdin: strings.NewReader("op-secret\n")}
		if err := runEnv(context.Background(), env, args, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Errorf("%v from stdin = %q, want %q", args, out.String(), want)
		}
	}
	env := environment{getenv: func(string) string { return "" }, stdin: strings.NewReader("  \n")}
	if err := runEnv(context.Background(), env, []string{"token", "hash", "-"}, io.Discard, io.Discard); err == nil {
		t.Error("empty token hashed without error")
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"weight"},
		{"weight", "get", "a"},
		{"drain"},
		{"drain", "a", "b"},
		{"pools", "extra"},
		{"pools", "--no-such-flag"},
		{"audit", "--limit", "0"},
		{"--timeout", "0s", "pools"},
		{"--tls-cert", "c.pem", "pools"},
	} {
		var stderr bytes.Buffer
		err := Run(context.Background(), args, io.Discard, io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: err = %v, want a usage error", args, err)
			continue
		}
		if got := ExitCode(err, &stderr); got != 2 {
			t.Errorf("%q: exit status %d, want 2", args, got)
		}
		if first, _, _ := strings.Cut(stderr.String(), "\n"); !strings.HasPrefix(first, "switchyardctl: ") {
			t.Errorf("%q: first line %q", args, first)
		}
	}
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"help"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "capacity set POOL LIMIT") {
		t.Errorf("help: err %v, output:\n%s", err, out.String())
	}
	out.Reset()
	if err := Run(context.Background(), []string{"drain", "-h"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "-dry-run") {
		t.Errorf("drain -h: err %v, output:\n%s", err, out.String())
	}
	if got := ExitCode(nil, io.Discard); got != 0 {
		t.Errorf("exit status on success %d", got)
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	addr := startRouter(t, routerOpts{creds: grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))})

	if _, _, err := ctl(t, addr, "op-secret", "pools", "--tls-ca", caFile); err != nil {
		t.Errorf("--tls-ca: %v", err)
	}
	if _, _, err := ctl(t, addr, "op-secret", "pools", "--tls", "--insecure-skip-verify"); err != nil {
		t.Errorf("--insecure-skip-verify: %v", err)
	}
	// System roots do not trust the test certificate.
	if _, _, err := ctl(t, addr, "op-secret", "pools", "--tls"); err == nil || !strings.Contains(err.Error(), "cannot reach router") || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate: err = %v", err)
	}
}

// selfSigned returns a certificate for 127.0.0.1 and its key, PEM encoded.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "switchyard test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// The admin token never goes in plaintext to an address off this host unless
// --insecure says so; loopback addresses and TLS are fine.
func TestPlaintextTokenOnlyToLoopback(t *testing.T) {
	for _, addr := range []string{"10.0.0.7:50051", "switchyard.switchyard:50051", "dns:///switchyard-headless.switchyard:50051", "[2001:db8::1]:50051", "0.0.0.0:50051"} {
		_, _, err := ctl(t, addr, "op-secret", "pools")
		if err == nil || !strings.Contains(err.Error(), "refusing to send the admin token in plaintext") {
			t.Errorf("pools --addr %s without TLS: %v, want a refusal", addr, err)
		}
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:50051", true}, {"localhost:50051", true}, {"[::1]:50051", true}, {"dns:///localhost:50051", true}, {"127.3.2.1:1", true},
		{"10.0.0.7:50051", false}, {"example.com:443", false}, {"dns:///switchyard:50051", false}, {"[::]:50051", false},
	} {
		if got := loopbackTarget(tc.addr); got != tc.want {
			t.Errorf("loopbackTarget(%q) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	// A loopback address works in plaintext, as every other test here shows.
	addr := startRouter(t, routerOpts{})
	if _, _, err := ctl(t, addr, "op-secret", "pools"); err != nil {
		t.Fatalf("loopback plaintext: %v", err)
	}
	// --insecure (or TLS) lets a non-loopback address through the check.
	for _, g := range []globals{{addr: "10.0.0.7:50051", insecure: true}, {addr: "10.0.0.7:50051", tls: true}, {addr: "10.0.0.7:50051", tlsCA: "ca.pem"}} {
		if err := g.plaintextCheck(); err != nil {
			t.Errorf("%+v: %v", g, err)
		}
	}
	if err := (&globals{addr: "10.0.0.7:50051"}).plaintextCheck(); err == nil {
		t.Error("plaintext to 10.0.0.7 passed the check")
	}
}

func TestBlockColumn(t *testing.T) {
	for _, c := range []struct {
		b    *pb.CapacityBlock
		want string
	}{
		{nil, "-"},
		{&pb.CapacityBlock{Home: "default", Granted: 8, Free: 3}, "8 (3 free)@default"},
		{&pb.CapacityBlock{Home: "eu", Granted: 8, Free: 8, Stranded: 5}, "8 (8 free, 5 stranded)@eu"},
		{&pb.CapacityBlock{Home: "us", Learning: true}, "0 (0 free)@us learning"},
	} {
		if got := fmtBlock(c.b); got != c.want {
			t.Errorf("fmtBlock(%v) = %q, want %q", c.b, got, c.want)
		}
	}
}

// TestPoolsShowWhatTheBackendLost: a simulated pool at 10 % of its capacity
// (the simulator's capacity_loss 0.9, as a backend that lost chips reports
// it) shows its effective limit and headroom below half the configured
// limit, the backend's own figures, and a state that says why.
func TestPoolsShowWhatTheBackendLost(t *testing.T) {
	host := sim.NewHost()
	addr := startRouter(t, routerOpts{host: host})
	if _, err := host.InjectFault(context.Background(), &pb.InjectFaultRequest{Fault: &pb.Fault{Pool: "a", CapacityLoss: 0.9}}); err != nil {
		t.Fatal(err)
	}
	var a *pb.PoolStatus
	testwait.For(t, 5*time.Second, "pool a short of capacity", func() bool {
		a = listPools(t, addr)["a"]
		return a.GetBackendLoad() != nil && a.GetBackendLoad().GetCapacity() < 8
	})
	if a.GetConfiguredLimit() != 8 || a.GetLimit() != a.GetBackendLoad().GetCapacity() || a.GetHeadroom()*2 >= a.GetConfiguredLimit() {
		t.Fatalf("pool a at 10%%: limit %d headroom %d configured %d backend %v; want limit = the backend's capacity, headroom < half of 8",
			a.GetLimit(), a.GetHeadroom(), a.GetConfiguredLimit(), a.GetBackendLoad())
	}
	want := fmt.Sprintf("short: backend reports %d of 8", a.GetBackendLoad().GetCapacity())
	if a.GetLimitReason() != want {
		t.Fatalf("limit reason %q, want %q", a.GetLimitReason(), want)
	}
	out := mustCtl(t, addr, "pools")
	if !strings.Contains(out, want) {
		t.Fatalf("pools table does not say %q:\n%s", want, out)
	}
	// The others are whole.
	if b := listPools(t, addr)["b"]; b.GetLimit() != 8 || b.GetLimitReason() != "" {
		t.Fatalf("pool b: limit %d reason %q", b.GetLimit(), b.GetLimitReason())
	}
}
