package scenario

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	"github.com/switchyard-dev/switchyard/loadtest/testfake"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

func TestLoadExample(t *testing.T) {
	sc, err := Load("../testdata/scenario_shortage.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Name != "us-east-1 shortage" || len(sc.Steps) != 11 || !sc.UsesAdmin() {
		t.Fatalf("parsed %+v", sc)
	}
	s := sc.Steps[2]
	if s.Action != CapacityOverride || s.Pool != "aws-use1-trn2" || s.Limit != 8 || s.For != 10*time.Minute || s.At != 30*time.Second || s.Line != 15 {
		t.Errorf("step 3 = %+v", s)
	}
	if last := sc.Steps[10]; last.Action != SetPolicy || last.Policy != "least_request" {
		t.Errorf("last = %+v", last)
	}
}

func TestParseErrorsHaveLines(t *testing.T) {
	doc := `steps:
  - at: 5s
    action: capacity_loss
    pool: p1
    fraction: 1.5
  - at: soon
    action: outage
  - at: 1m
    action: explode
  - at: 1m
    action: drain
  - at: 2m
    action: slowdown
    factor: 2
    colour: red
  - action: set_weight
    pool: p
    weight: heavy
  - at: 3m
    action: capacity_override
    pool: p
    limit: 4
    clear: true
  - at: 3m
    action: set_policy
`
	_, err := Parse([]byte(doc), "s.yaml")
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		"s.yaml:5: fraction must be in (0, 1]",
		"s.yaml:6: at: \"soon\" is not a duration",
		"s.yaml:8: unknown action \"explode\"",
		"s.yaml:10: drain: missing pool",
		"s.yaml:15: unknown key \"colour\"",
		"s.yaml:18: weight: \"heavy\" is not a number",
		"s.yaml:16: set_weight: missing at",
		"s.yaml:22: capacity_override: give limit or clear: true, not both",
		"s.yaml:24: set_policy: missing policy",
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	for _, bad := range []struct{ doc, want string }{
		{"", "s.yaml:1: empty scenario"},
		{"steps: [", "s.yaml:1: "},
		{"- at: 1s", "s.yaml:1: a scenario is a mapping"},
		{"name: x", "s.yaml:1: no steps"},
		{"steps: {at: 1}", "s.yaml:1: steps must be a list"},
		{"steps:\n  - at: 1s\n    action: outage\n    at: 2s\n", "s.yaml:4: key \"at\" given twice"},
	} {
		if _, err := Parse([]byte(bad.doc), "s.yaml"); err == nil || !strings.HasPrefix(err.Error(), bad.want) {
			t.Errorf("%q: err = %v, want prefix %q", bad.doc, err, bad.want)
		}
	}
}

func connect(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestRunTiming drives the example scenario on a fake clock at speedup 10 and
// checks that each step reaches the fake fleet only once its (scaled) offset has passed.
func TestRunTiming(t *testing.T) {
	sc, err := Load("../testdata/scenario_shortage.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := testfake.Start(t, testfake.Options{})
	conn := connect(t, srv.Addr)
	ctl := Control{Sim: pb.NewSimControlClient(conn), Admin: pb.NewAdminClient(conn), AdminToken: "test-token"}
	fake := clock.NewFake(time.Unix(1_700_000_000, 0))
	start := fake.Now()
	done := make(chan int, 1)
	var errs []string
	go func() {
		res := Run(context.Background(), sc, ctl, RunOptions{Clock: fake, Start: start, Speedup: 10})
		for _, r := range res {
			if r.Error != "" {
				errs = append(errs, r.Error)
			}
		}
		done <- len(res)
	}()
	// Steps land at wall 1s, 2s, 3s (two), 4s, 5s, 6s, 7s (two), 8s (two).
	wantAfter := []int{1, 2, 4, 5, 6, 7, 9, 11}
	for i, want := range wantAfter {
		if !fake.WaitForWaiters(1, 10*time.Second) {
			t.Fatalf("step group %d: runner not waiting", i)
		}
		if got := len(srv.Controls()); got != wantAfter[max(i-1, 0)]*boolInt(i > 0) {
			t.Fatalf("before %ds: %d calls, want %d", i+1, got, wantAfter[max(i-1, 0)]*boolInt(i > 0))
		}
		fake.Advance(time.Second)
		testwait.Until(10*time.Second, func() bool { return len(srv.Controls()) >= want })
		if got := len(srv.Controls()); got != want {
			t.Fatalf("after %ds: %d calls, want %d", i+1, got, want)
		}
	}
	select {
	case n := <-done:
		if n != 11 || len(errs) != 0 {
			t.Fatalf("results %d, errors %v", n, errs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not finish")
	}
	calls := srv.Controls()
	methods := make([]string, len(calls))
	for i, c := range calls {
		methods[i] = c.Method
	}
	want := "InjectFault InjectFault SetCapacityOverride SetWeight Drain InjectFault InjectFault ClearFaults Resume SetCapacityOverride SetPolicy"
	if got := strings.Join(methods, " "); got != want {
		t.Errorf("calls:\n%s\nwant\n%s", got, want)
	}
	for _, c := range calls {
		admin := c.Method != "InjectFault" && c.Method != "ClearFaults"
		if admin && c.Auth != "Bearer test-token" {
			t.Errorf("%s without bearer token: %q", c.Method, c.Auth)
		}
	}
	if !strings.Contains(calls[0].Detail, "capacity_loss:0.75") || !strings.Contains(calls[1].Detail, "slowdown:3") ||
		!strings.Contains(calls[6].Detail, "outage:true") || !strings.Contains(calls[4].Detail, "force:true") {
		t.Errorf("details: %q %q %q %q", calls[0].Detail, calls[1].Detail, calls[6].Detail, calls[4].Detail)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestRunReportsUnreachedAndFailedSteps(t *testing.T) {
	sc, err := Parse([]byte("steps:\n  - {at: 0s, action: drain, pool: nope}\n  - {at: 1h, action: outage}\n"), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := testfake.Start(t, testfake.Options{})
	conn := connect(t, srv.Addr)
	ctl := Control{Sim: pb.NewSimControlClient(conn), Admin: pb.NewAdminClient(conn), AdminToken: "test-token"}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res := Run(ctx, sc, ctl, RunOptions{Speedup: 1})
	if len(res) != 2 || !strings.Contains(res[0].Error, "NotFound") || !strings.Contains(res[1].Error, "not reached") {
		t.Errorf("results = %+v", res)
	}
	// A wrong token is refused by the router and reported.
	ctl.AdminToken = "wrong"
	if err := ctl.Apply(context.Background(), Step{Action: Resume, Pool: "aws-use1-trn2"}, 1); err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Errorf("wrong token: %v", err)
	}
}

func TestSnapshotRestore(t *testing.T) {
	sc, err := Load("../testdata/scenario_shortage.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := testfake.Start(t, testfake.Options{})
	conn := connect(t, srv.Addr)
	ctl := Control{Sim: pb.NewSimControlClient(conn), Admin: pb.NewAdminClient(conn), AdminToken: "test-token"}
	ctx := context.Background()
	snap, err := ctl.Take(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []Step{{Action: Drain, Pool: "azure-eastus-b200"}, {Action: SetWeight, Pool: "gcp-usc1-tpu-v6e", Weight: 5}, {Action: CapacityOverride, Pool: "aws-use1-trn2", Limit: 3}} {
		if err := ctl.Apply(ctx, s, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := ctl.Restore(ctx, snap); err != nil {
		t.Fatal(err)
	}
	resp, err := pb.NewAdminClient(conn).ListPools(ctl.adminCtx(ctx), &pb.ListPoolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.GetPools() {
		if p.GetDrained() || p.GetWeight() != 1 || p.GetCapacityOverride() != 0 {
			t.Errorf("pool not restored: %v", p)
		}
	}
}
