package gateway

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/internal/syncbuf"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

const reloadFleet = `models:
  - {name: m, max_input_tokens: 1000, max_output_tokens: 100}
pools:
  - {name: a, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: [sim], limits: {max_concurrent: 4}}
  - {name: b, cloud: gcp, region: us-east4, accelerator: h100, models: [m], endpoints: [sim], limits: {max_concurrent: 4}}
sim: {time_scale: 50}
`

func placements(t *testing.T, inf pb.InferenceClient) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := inf.ListModels(ctx, &pb.ListModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range resp.Models[0].Placements {
		out = append(out, p.Pool)
	}
	return out
}

func waitPlacements(t *testing.T, inf pb.InferenceClient, want string) {
	t.Helper()
	if !testwait.Until(5*time.Second, func() bool { return strings.Join(placements(t, inf), ",") == want }) {
		t.Fatalf("pools %v, want %s", placements(t, inf), want)
	}
}

// startRouterLogging is startRouter keeping the router's log (its stderr),
// so a test can wait for what it logs.
func startRouterLogging(t *testing.T, args ...string) (addr string, log *syncbuf.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out syncbuf.Buffer
	log = &syncbuf.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, append([]string{"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-level", "warn", "--metrics-listen", "off", "--console-listen", "off"}, args...), &out, log)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	})
	addrRe := regexp.MustCompile(`listening on (\S+)`)
	testwait.For(t, 10*time.Second, "the router to say where it listens", func() bool {
		select {
		case err := <-done:
			t.Fatalf("router did not start: %v\n%s", err, log.String())
		default:
		}
		m := addrRe.FindStringSubmatch(out.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return addr, log
}

func TestConfigReloadsOnFileChangeAndSIGHUP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.yaml")
	write := func(s string, mtime time.Time) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour)
	write(reloadFleet, base)
	addr, log := startRouterLogging(t, "--config", path, "--watch-config", "50ms")
	inf := pb.NewInferenceClient(dial(t, addr))
	waitPlacements(t, inf, "a,b")

	// An invalid file is rejected and the running config stays.
	write(strings.Replace(reloadFleet, "max_concurrent: 4}}\n  - {name: b", "max_concurrent: -4}}\n  - {name: b", 1), base.Add(time.Minute))
	if !testwait.Until(20*time.Second, func() bool {
		return strings.Contains(log.String(), "config reload rejected") && strings.Contains(log.String(), "max_concurrent")
	}) {
		t.Fatalf("no rejection of the invalid file in the log:\n%s", log.String())
	}
	waitPlacements(t, inf, "a,b")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := inf.Generate(ctx, &pb.GenerateRequest{Model: "m", Prompt: "still serving?", MaxTokens: 3}); err != nil {
		t.Fatalf("serving after an invalid reload: %v", err)
	}

	// A valid change is picked up from the file.
	oneLess := strings.Replace(reloadFleet, "  - {name: b, cloud: gcp, region: us-east4, accelerator: h100, models: [m], endpoints: [sim], limits: {max_concurrent: 4}}\n", "", 1)
	write(oneLess, base.Add(2*time.Minute))
	waitPlacements(t, inf, "a")

	// SIGHUP re-reads it too, whatever the modification time says.
	write(reloadFleet, base.Add(2*time.Minute))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitPlacements(t, inf, "a,b")
}

// The case through Run, as the binary runs it: eight concurrent calls into a
// one-slot simulated pool after a SIGHUP that shortened the wait queue from
// 100 to 1. One call holds the slot (a 1,000-token completion at real speed,
// about ten seconds), one waits, and the other six are shed at once with
// RESOURCE_EXHAUSTED, as a router started with 1 sheds them; before the fix
// all seven waited for queue_max_wait (30 s).
func TestSIGHUPShortensTheWaitQueue(t *testing.T) {
	fleet := func(queue int) string {
		return "models:\n  - {name: m, max_input_tokens: 1000, max_output_tokens: 1000}\npools:\n" +
			"  - {name: a, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: [sim], limits: {max_concurrent: 1}}\n" +
			"routing: {queue_max_wait: 30s, queue_max_length: " + strconv.Itoa(queue) + "}\n"
	}
	path := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(path, []byte(fleet(100)), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, log := startRouterLogging(t, "--config", path, "--watch-config", "0", "--log-level", "info")
	inf := pb.NewInferenceClient(dial(t, addr))
	waitPlacements(t, inf, "a")

	if err := os.WriteFile(path, []byte(fleet(1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "the reload's log line", func() bool {
		return strings.Contains(log.String(), "queue_max_length 100 -> 1")
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			_, err := inf.Generate(ctx, &pb.GenerateRequest{Model: "m", Prompt: "a long answer, please", MaxTokens: 1000})
			errs <- err
		}()
	}
	var shed []error
	deadline := time.After(5 * time.Second) // the slot holder runs about 10 s, the waiter 30 s
	for len(shed) < 6 {
		select {
		case err := <-errs:
			shed = append(shed, err)
		case <-deadline:
			t.Fatalf("%d calls ended within 5s, want 6 shed at once: %v", len(shed), shed)
		}
	}
	for _, err := range shed {
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "wait queue full (1 calls)") {
			t.Fatalf("shed call: %v, want RESOURCE_EXHAUSTED naming the queue of 1", err)
		}
	}
	select {
	case err := <-errs:
		t.Fatalf("a 7th call ended early (%v): one should hold the slot and one wait", err)
	default:
	}
	cancel()
	for range 2 {
		<-errs
	}
}
