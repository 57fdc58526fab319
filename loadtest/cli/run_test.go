package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/loadtest"
	"github.com/switchyard-dev/switchyard/loadtest/testfake"
	"github.com/switchyard-dev/switchyard/loadtest/trace"
)

const azureTrace = "../testdata/AzureLLMInferenceTrace_code.csv"

func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err := Run(ctx, args, &out, &errb)
	return out.String(), errb.String(), err
}

func readReport(t *testing.T, path string) loadtest.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep loadtest.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// firstRows reads the first n rows of the real Azure trace.
func firstRows(t *testing.T, n int) []trace.Request {
	t.Helper()
	f, err := trace.Open(trace.FormatAzure, azureTrace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []trace.Request
	for len(rows) < n {
		r, err := f.Next()
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	return rows
}

// TestRunAzureEndToEnd replays the first 300 rows of the real Azure trace at
// speedup 400 against the test fake and checks the reports.
func TestRunAzureEndToEnd(t *testing.T) {
	srv := testfake.Start(t, testfake.Options{MaxInputTokens: 4096})
	dir := t.TempDir()
	jsonPath, htmlPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	const n = 300
	stdout, stderr, err := runCmd(t, "--target", srv.Addr, "--trace", azureTrace, "--format", "azure",
		"--speedup", "400", "--max-requests", "300", "--report-json", jsonPath, "--report-html", htmlPath,
		"--priority-mix", "interactive=0.7,batch=0.3", "--slo-success", "0.99", "--slo-ttft-p99", "10s")
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr)
	}
	rep := readReport(t, jsonPath)
	if len(rep.Runs) != 1 {
		t.Fatalf("runs = %d", len(rep.Runs))
	}
	r := rep.Runs[0]
	if r.Requests.Scheduled != n || r.Requests.Sent != n || r.Requests.OK != n || r.Statuses["OK"] != n || r.SuccessRatio != 1 {
		t.Errorf("requests = %+v statuses = %v ratio %v", r.Requests, r.Statuses, r.SuccessRatio)
	}
	rows := firstRows(t, n)
	capped := 0
	for _, row := range rows {
		if row.InputTokens > 4096 {
			capped++
		}
	}
	if r.Requests.CappedInput != int64(capped) {
		t.Errorf("capped input = %d, want %d", r.Requests.CappedInput, capped)
	}
	// Every call carried its row's token counts (prompt capped to the model's limit).
	calls := srv.Calls()
	if len(calls) != n {
		t.Fatalf("fake saw %d calls", len(calls))
	}
	perPool := map[string]int64{}
	for _, c := range calls {
		perPool[c.Pool]++
		var i int
		if _, err := fmtSscan(c.RequestID, &i); err != nil || i < 0 || i >= n {
			t.Fatalf("request id %q", c.RequestID)
		}
		wantIn := min(rows[i].InputTokens, 4096)
		if c.PromptTokens != wantIn || int(c.MaxTokens) != max(rows[i].OutputTokens, 1) {
			t.Errorf("%s: prompt %d max_tokens %d, want %d and %d", c.RequestID, c.PromptTokens, c.MaxTokens, wantIn, rows[i].OutputTokens)
		}
	}
	var sum int64
	for _, g := range r.Pools {
		if g.Requests != perPool[g.Pool] || g.Cloud == "" || g.Region == "" {
			t.Errorf("pool %+v, fake counted %d", g, perPool[g.Pool])
		}
		sum += g.Requests
	}
	if sum != n || len(r.Pools) != 3 || len(r.Clouds) != 3 {
		t.Errorf("pools sum %d of %d, %d clouds", sum, len(r.Pools), len(r.Clouds))
	}
	if r.Latency["ttft"].Count != n || r.Latency["e2e"].Count != n || r.Latency["itl"].Count == 0 {
		t.Errorf("latency = %+v", r.Latency)
	}
	if len(r.Priorities) != 2 || len(r.Timeline.Windows) == 0 || len(r.SLOs) != 5 || !r.SLOs[0].Met || !r.SLOs[1].Met ||
		r.SLOs[2].Name != "scheduler_lag_p99_ms" || !r.SLOs[2].Met || r.SLOs[3].Name != "client_wait_p99_ms" || !r.SLOs[3].Met || r.SLOs[4].Name != "generator_sched_p99_ms" || !r.SLOs[4].Met || r.Tokens.Output == 0 || r.Tokens.OutputEstimatedCalls != 0 {
		t.Errorf("priorities %+v, windows %d, slos %+v", r.Priorities, len(r.Timeline.Windows), r.SLOs)
	}
	html, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "TTFT percentiles over time", "aws/us-east-1", "aws-use1-trn2", "</html>"} {
		if !bytes.Contains(html, []byte(want)) {
			t.Errorf("html lacks %q", want)
		}
	}
	if bytes.Contains(html, []byte("<script")) {
		t.Error("html has a script")
	}
	for _, want := range []string{"scheduled", "300", "pool aws-use1-trn2", "status OK"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "replaying 300 requests") {
		t.Errorf("stderr: %s", stderr)
	}
}

func fmtSscan(id string, i *int) (int, error) {
	return fmt.Sscanf(strings.TrimPrefix(id, "load-"), "%d", i)
}

// TestRunCompareWithScenario runs two policies with a scenario and checks the
// Admin and SimControl calls, the restore between runs, and the report.
func TestRunCompareWithScenario(t *testing.T) {
	srv := testfake.Start(t, testfake.Options{})
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("test-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	scen := filepath.Join(dir, "s.yaml")
	if err := os.WriteFile(scen, []byte(`steps:
  - {at: 5s, action: outage, pool: aws-use1-trn2}
  - {at: 10s, action: drain, pool: azure-eastus-b200}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	jsonPath := filepath.Join(dir, "r.json")
	stdout, stderr, err := runCmd(t, "--target", srv.Addr, "--trace", azureTrace, "--speedup", "400",
		"--max-requests", "100", "--unary", "--scenario", scen, "--admin-token-file", tok,
		"--compare", "switchyard,least_request", "--report-json", jsonPath, "--no-progress")
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr)
	}
	rep := readReport(t, jsonPath)
	if len(rep.Runs) != 2 || rep.Runs[0].Label != "switchyard" || rep.Runs[1].Policy != "least_request" {
		t.Fatalf("runs = %+v", rep.Runs)
	}
	for _, r := range rep.Runs {
		if r.Requests.Scheduled != 100 || len(r.Scenario) != 2 || r.Scenario[0].Error != "" || r.Scenario[1].Error != "" {
			t.Errorf("%s: %+v %+v", r.Label, r.Requests, r.Scenario)
		}
	}
	var methods []string
	for _, c := range srv.Controls() {
		methods = append(methods, c.Method)
	}
	got := strings.Join(methods, " ")
	want := "ClearFaults SetPolicy ListPools InjectFault Drain ListPools Resume ClearFaults " +
		"ClearFaults SetPolicy ListPools InjectFault Drain ListPools Resume ClearFaults SetPolicy"
	if got != want {
		t.Errorf("control calls:\n%s\nwant\n%s", got, want)
	}
	if !strings.Contains(stdout, "switchyard") || !strings.Contains(stdout, "least_request") {
		t.Errorf("side-by-side table:\n%s", stdout)
	}
}

// Without a scenario a comparison only switches policies: no SimControl
// call (a fleet of real servers serves none).
func TestRunCompareWithoutScenarioLeavesSimControlAlone(t *testing.T) {
	srv := testfake.Start(t, testfake.Options{})
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("test-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := runCmd(t, "--target", srv.Addr, "--trace", azureTrace, "--speedup", "400", "--max-requests", "20",
		"--unary", "--admin-token-file", tok, "--compare", "switchyard,round_robin", "--no-progress"); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr)
	}
	var methods []string
	for _, c := range srv.Controls() {
		methods = append(methods, c.Method)
	}
	if got := strings.Join(methods, " "); got != "SetPolicy SetPolicy SetPolicy" {
		t.Errorf("control calls %q, want the two policies and the original one put back", got)
	}
}

func TestRunSLOMissedFailsWithReason(t *testing.T) {
	srv := testfake.Start(t, testfake.Options{})
	_, _, err := runCmd(t, "--target", srv.Addr, "--trace", azureTrace, "--speedup", "1000", "--max-requests", "20",
		"--slo-ttft-p99", "1ns", "--no-progress")
	if err == nil || !strings.Contains(err.Error(), "missed SLO: p99 TTFT") {
		t.Errorf("err = %v", err)
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.csv")
	if err := os.WriteFile(bad, []byte("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,x,1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := testfake.Start(t, testfake.Options{})
	_, stderr, err := runCmd(t, "--target", srv.Addr, "--trace", bad)
	if err == nil || !strings.Contains(err.Error(), "1 bad trace line") || !strings.Contains(stderr, "bad.csv:2: ContextTokens") {
		t.Errorf("err = %v, stderr = %s", err, stderr)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--format", "csv", "--trace", azureTrace}, "--format \"csv\""},
		{[]string{}, "--trace FILE is required"},
		{[]string{"--trace", azureTrace, "--speedup", "0"}, "--speedup"},
		{[]string{"--trace", azureTrace, "--compare", "a,b"}, "--admin-token-file is required"},
		{[]string{"--trace", azureTrace, "--scenario", filepath.Join(dir, "missing.yaml")}, "read scenario"},
		{[]string{"--target", srv.Addr, "--trace", azureTrace, "--model", "gpt-9", "--max-requests", "5"}, "model \"gpt-9\" is not served"},
	} {
		if _, _, err := runCmd(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestRunSynthetic(t *testing.T) {
	srv := testfake.Start(t, testfake.Options{})
	jsonPath := filepath.Join(t.TempDir(), "r.json")
	_, stderr, err := runCmd(t, "--target", srv.Addr, "--format", "synthetic", "--synthetic", "rate=50,cv=2,seed=3,input=256/64,output=16/4",
		"--duration", "4s", "--speedup", "20", "--scale", "1.5", "--report-json", jsonPath, "--no-progress")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	r := readReport(t, jsonPath).Runs[0]
	if r.Requests.Scheduled < 200 || r.Requests.Scheduled > 400 || r.Requests.OK != r.Requests.Scheduled {
		t.Errorf("synthetic run: %+v", r.Requests)
	}
}

// ExitCode is what the process exits with: 0 for success and for -h (the
// usage alone), 1 with the error on stderr for a failed run.
func TestExitCode(t *testing.T) {
	var errOut bytes.Buffer
	_, _, err := runCmd(t, "-h")
	if got := ExitCode(err, &errOut); got != 0 || errOut.Len() != 0 {
		t.Errorf("ExitCode(-h) = %d, stderr %q; want 0 and nothing", got, errOut.String())
	}
	_, _, err = runCmd(t, "--speedup", "0")
	if got := ExitCode(err, &errOut); got != 1 {
		t.Errorf("ExitCode(bad --speedup) = %d, want 1", got)
	}
	if !strings.HasPrefix(errOut.String(), "switchyard-load: ") || !strings.Contains(errOut.String(), "--speedup must be in") {
		t.Errorf("stderr after a bad --speedup: %q", errOut.String())
	}
	if got := ExitCode(nil, io.Discard); got != 0 {
		t.Errorf("ExitCode(nil) = %d, want 0", got)
	}
}
