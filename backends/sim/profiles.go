package sim

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Profile is one accelerator's serving performance for the reference model
// (a ~70B-parameter dense transformer in BF16, Llama-3.x-70B shaped), on one
// model replica: the smallest usual serving unit of that accelerator that
// holds the weights plus room for KV cache.
//
// The first block of fields are public hardware specifications; the second
// block is derived from them by the formulas in docs/simulator.md (and in
// deriveProfile below). Profiles are values: copying one is safe.
type Profile struct {
	// Name is the accelerator name used in fleet configs, e.g. "h100".
	Name string
	// Description names the part and the replica it models.
	Description string
	// Chips per model replica.
	Chips int
	// HBMGBPerChip is memory capacity per chip (GB).
	HBMGBPerChip float64
	// HBMTBpsPerChip is memory bandwidth per chip (TB/s).
	HBMTBpsPerChip float64
	// BF16TFLOPSPerChip is dense BF16 compute per chip (TFLOPS).
	BF16TFLOPSPerChip float64

	// PrefillTokensPerSec is the prompt-processing rate of one request.
	PrefillTokensPerSec float64
	// DecodeBase is the time per output token at batch size 1.
	DecodeBase time.Duration
	// DecodeSlope is k in decode(b) = DecodeBase × (1 + k·(b−1)): the
	// per-token time grows with every sequence in the batch because each
	// decode step also reads that sequence's KV cache.
	DecodeSlope float64
	// DefaultMaxBatch is how many sequences fit in the replica's spare HBM
	// (KV cache at the reference context length), capped at MaxBatchCap.
	DefaultMaxBatch int
}

// DecodeTokenTime is the real-time duration of one output token when batch
// sequences are decoding together (batch < 1 counts as 1), for the reference
// model (multiply by ModelSizeFactor for other sizes).
func (p Profile) DecodeTokenTime(batch int) time.Duration {
	if batch < 1 {
		batch = 1
	}
	return time.Duration(float64(p.DecodeBase) * (1 + p.DecodeSlope*float64(batch-1)))
}

// PrefillTime is the real-time duration of processing tokens prompt tokens
// for the reference model.
func (p Profile) PrefillTime(tokens int) time.Duration {
	if tokens <= 0 || p.PrefillTokensPerSec <= 0 {
		return 0
	}
	return time.Duration(float64(tokens) / p.PrefillTokensPerSec * float64(time.Second))
}

// Reference model and efficiency assumptions behind every derived figure.
// docs/simulator.md explains each.
const (
	// RefParams is the reference model size (parameters).
	RefParams = 70e9
	// refBytesPerParam: BF16 weights.
	refBytesPerParam = 2
	// refKVBytesPerToken: Llama-3-70B KV cache per token in BF16:
	// 2 (K and V) × 80 layers × 8 KV heads × 128 head dim × 2 bytes.
	refKVBytesPerToken = 2 * 80 * 8 * 128 * 2
	// refContextTokens: mean context (prompt + output) a sequence keeps in KV cache.
	refContextTokens = 4096
	// bandwidthEfficiency: achieved fraction of peak HBM bandwidth in decode
	// (kernel efficiency and tensor-parallel all-reduce overhead).
	bandwidthEfficiency = 0.5
	// prefillMFU: achieved fraction of peak dense BF16 FLOPS in prefill.
	prefillMFU = 0.4
	// usableHBMFraction: memory left for weights + KV cache after the runtime's own use.
	usableHBMFraction = 0.9
	// MaxBatchCap bounds DefaultMaxBatch (serving engines' scheduler limits, e.g. vLLM's max_num_seqs 256).
	MaxBatchCap = 256
)

// hardware is the public-spec part of a profile.
type hardware struct {
	name, desc   string
	chips        int
	hbmGB, hbmTB float64
	bf16TFLOPS   float64
}

// fleetHardware lists the accelerators the simulator knows. Sources are in
// docs/simulator.md.
var fleetHardware = []hardware{
	{"h100", "NVIDIA H100 SXM 80GB, 8-GPU HGX node (p5.48xlarge, a3-highgpu-8g, ND H100 v5)", 8, 80, 3.35, 989},
	{"h200", "NVIDIA H200 SXM 141GB, 8-GPU HGX node (p5e.48xlarge, a3-ultragpu-8g, ND H200 v5)", 8, 141, 4.8, 989},
	{"b200", "NVIDIA B200 180GB, 8-GPU HGX node (p6-b200.48xlarge, a4-highgpu-8g)", 8, 180, 8.0, 2250},
	{"tpu-v5e", "Google Cloud TPU v5e 16GB, v5litepod-16 slice", 16, 16, 0.819, 197},
	{"tpu-v6e", "Google Cloud TPU v6e (Trillium) 32GB, v6e-8 slice", 8, 32, 1.64, 918},
	{"trn2", "AWS Trainium2 96GB, trn2.48xlarge (16 chips)", 16, 96, 2.9, 667},
	{"trn3", "AWS Trainium3 144GB, 16-chip server (assumed, like trn2.48xlarge)", 16, 144, 4.9, 1260},
}

// aliases maps other spellings to profile names.
var aliases = map[string]string{
	"h100-sxm": "h100", "h200-sxm": "h200",
	"v5e": "tpu-v5e", "tpuv5e": "tpu-v5e", "v6e": "tpu-v6e", "tpuv6e": "tpu-v6e", "trillium": "tpu-v6e",
	"trainium2": "trn2", "trainium3": "trn3",
}

func deriveProfile(h hardware) Profile {
	weights := RefParams * refBytesPerParam
	kvPerSeq := float64(refKVBytesPerToken) * refContextTokens
	bw := float64(h.chips) * h.hbmTB * 1e12 * bandwidthEfficiency // bytes/s achieved
	flops := float64(h.chips) * h.bf16TFLOPS * 1e12 * prefillMFU  // FLOP/s achieved
	spare := float64(h.chips)*h.hbmGB*1e9*usableHBMFraction - weights
	batch := int(spare / kvPerSeq)
	batch = max(1, min(batch, MaxBatchCap))
	return Profile{
		Name:                h.name,
		Description:         h.desc,
		Chips:               h.chips,
		HBMGBPerChip:        h.hbmGB,
		HBMTBpsPerChip:      h.hbmTB,
		BF16TFLOPSPerChip:   h.bf16TFLOPS,
		PrefillTokensPerSec: math.Round(flops / (2 * RefParams)),
		DecodeBase:          time.Duration(weights / bw * float64(time.Second)).Round(time.Microsecond),
		DecodeSlope:         math.Round(kvPerSeq/weights*1e5) / 1e5,
		DefaultMaxBatch:     batch,
	}
}

// profiles is built once from fleetHardware; read-only afterwards.
var profiles = func() map[string]Profile {
	m := make(map[string]Profile, len(fleetHardware))
	for _, h := range fleetHardware {
		m[h.name] = deriveProfile(h)
	}
	return m
}()

// ErrUnknownAccelerator is returned (wrapped) by LookupProfile.
var ErrUnknownAccelerator = errors.New("unknown accelerator")

// LookupProfile returns the profile for an accelerator name (case-insensitive;
// a few aliases such as "trainium2" and "v6e" are accepted).
func LookupProfile(name string) (Profile, error) {
	key := strings.ToLower(strings.TrimSpace(name))
	if a, ok := aliases[key]; ok {
		key = a
	}
	p, ok := profiles[key]
	if !ok {
		return Profile{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownAccelerator, name, strings.Join(ProfileNames(), ", "))
	}
	return p, nil
}

// ProfileNames lists the known accelerators, sorted.
func ProfileNames() []string {
	names := make([]string, 0, len(profiles))
	for n := range profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Profiles returns every known profile, sorted by name.
func Profiles() []Profile {
	out := make([]Profile, 0, len(profiles))
	for _, n := range ProfileNames() {
		out = append(out, profiles[n])
	}
	return out
}

// Model-size scaling bounds: see ModelSizeFactor.
const (
	minModelFactor = 0.2
	maxModelFactor = 8
)

// ModelSizeFactor scales prefill and decode time for a model other than the
// 70B reference. It reads the parameter count from the model name (a number
// followed by "b" as its own name part: "llama-3.1-8b" → 8, "qwen2.5-32b" →
// 32, "llama-3.1-405b" → 405) and returns params/70 clamped to [0.2, 8]: the
// floor stands for per-step costs that do not shrink with the model (kernel
// launches, collectives, scheduling). Names without a size return 1.
func ModelSizeFactor(model string) float64 {
	parts := strings.FieldsFunc(strings.ToLower(model), func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.')
	})
	for _, part := range parts {
		if !strings.HasSuffix(part, "b") {
			continue
		}
		n, err := strconv.ParseFloat(strings.TrimSuffix(part, "b"), 64)
		if err != nil || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
			continue
		}
		return min(maxModelFactor, max(minModelFactor, n*1e9/RefParams))
	}
	return 1
}

// ProfileTable renders the profiles as a Markdown table (used by
// switchyard-sim --profiles and kept in docs/simulator.md).
func ProfileTable() string {
	var b strings.Builder
	b.WriteString("| accelerator | replica | chips | HBM/chip | BW/chip | BF16/chip | prefill tok/s | decode ms/token (b=1) | k | decode ms/token (b=64) | default max batch |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range Profiles() {
		fmt.Fprintf(&b, "| %s | %s | %d | %g GB | %g TB/s | %g TFLOPS | %.0f | %.2f | %g | %.2f | %d |\n",
			p.Name, p.Description, p.Chips, p.HBMGBPerChip, p.HBMTBpsPerChip, p.BF16TFLOPSPerChip,
			p.PrefillTokensPerSec, ms(p.DecodeBase), p.DecodeSlope, ms(p.DecodeTokenTime(64)), p.DefaultMaxBatch)
	}
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
