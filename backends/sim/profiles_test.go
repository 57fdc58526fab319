package sim

import (
	"errors"
	"strings"
	"testing"
)

func TestProfilesKnown(t *testing.T) {
	for _, name := range []string{"trn2", "trn3", "tpu-v5e", "tpu-v6e", "h100", "h200", "b200", "H100", "trainium2", "v6e"} {
		p, err := LookupProfile(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if p.PrefillTokensPerSec <= 0 || p.DecodeBase <= 0 || p.DecodeSlope <= 0 || p.DefaultMaxBatch < 1 || p.DefaultMaxBatch > MaxBatchCap {
			t.Errorf("%s: implausible profile %+v", name, p)
		}
	}
	_, err := LookupProfile("tpu-v9")
	if !errors.Is(err, ErrUnknownAccelerator) || !strings.Contains(err.Error(), "h100") {
		t.Fatalf("unknown accelerator error %v", err)
	}
}

func TestProfilesFollowBandwidth(t *testing.T) {
	// Memory-bound decode: more aggregate HBM bandwidth, faster tokens.
	get := func(n string) Profile { p, _ := LookupProfile(n); return p }
	if !(get("b200").DecodeBase < get("h200").DecodeBase && get("h200").DecodeBase < get("h100").DecodeBase) {
		t.Fatal("decode times do not follow NVIDIA bandwidth order b200 < h200 < h100")
	}
	if get("trn3").DecodeBase >= get("trn2").DecodeBase {
		t.Fatal("trn3 not faster than trn2")
	}
}

func TestProfileTableListsEveryProfile(t *testing.T) {
	tab := ProfileTable()
	for _, n := range ProfileNames() {
		if !strings.Contains(tab, "| "+n+" |") {
			t.Errorf("table misses %s", n)
		}
	}
}

func TestModelSizeFactor(t *testing.T) {
	for model, want := range map[string]float64{
		"llama-3.3-70b":  1,
		"llama-3.1-8b":   0.2, // 8/70 clamped to the floor
		"qwen2.5-35b":    0.5,
		"llama-3.1-405b": 405.0 / 70,
		"mystery":        1,
		"Llama-3.1-70B":  1,
		"big-10000b":     8,
	} {
		if got := ModelSizeFactor(model); got != want {
			t.Errorf("ModelSizeFactor(%q) = %v, want %v", model, got, want)
		}
	}
}
