package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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

// lockedBuffer is a bytes.Buffer safe for the router's writes and the
// test's reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startRouterLogging is startRouter keeping the router's log (its stderr),
// so a test can wait for what it logs.
func startRouterLogging(t *testing.T, args ...string) (addr string, log *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out lockedBuffer
	log = &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-level", "warn", "--metrics-listen", "off", "--console-listen", "off"}, args...), &out, log)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("run did not return")
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
