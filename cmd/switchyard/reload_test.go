package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
	deadline := time.Now().Add(5 * time.Second)
	for strings.Join(placements(t, inf), ",") != want {
		if time.Now().After(deadline) {
			t.Fatalf("pools %v, want %s", placements(t, inf), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	addr, _ := startRouter(t, "--config", path, "--watch-config", "50ms")
	inf := pb.NewInferenceClient(dial(t, addr))
	waitPlacements(t, inf, "a,b")

	// An invalid file is rejected and the running config stays.
	write(strings.Replace(reloadFleet, "max_concurrent: 4}}\n  - {name: b", "max_concurrent: -4}}\n  - {name: b", 1), base.Add(time.Minute))
	time.Sleep(300 * time.Millisecond)
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
