package trace

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Synthetic generates seeded arrivals: inter-arrival gaps from a gamma
// distribution with mean 1/Rate and coefficient of variation CV (CV 1 is a
// Poisson process; CV > 1 is burstier, CV < 1 smoother), and token lengths
// from log-normal distributions given by mean and standard deviation. The
// same options always give the same requests.
type Synthetic struct {
	opts  SyntheticOptions
	rng   *rand.Rand
	now   time.Duration
	count int
}

var _ Reader = (*Synthetic)(nil)

// SyntheticOptions configures Synthetic. Zero fields take the defaults noted.
type SyntheticOptions struct {
	Rate     float64       // mean arrivals per second (required, > 0)
	Duration time.Duration // arrivals stop at this trace time (required, > 0)
	CV       float64       // burstiness: coefficient of variation of gaps (default 1)
	Seed     uint64        // default 1
	Input    LogNormal     // default mean 2048, sd 1024 (close to the Azure code trace)
	Output   LogNormal     // default mean 128, sd 128
}

// LogNormal is a log-normal distribution given by its mean and standard deviation.
// Samples are rounded and clamped to [1, maxTokens].
type LogNormal struct {
	Mean, SD float64
}

// maxSyntheticRequests bounds a synthetic trace.
const maxSyntheticRequests = 50_000_000

// Validate checks the options after defaults are applied.
func (o *SyntheticOptions) Validate() error {
	o.defaults()
	switch {
	case !(o.Rate > 0) || math.IsInf(o.Rate, 0):
		return fmt.Errorf("synthetic: rate must be > 0 requests/s, got %v", o.Rate)
	case o.Duration <= 0:
		return fmt.Errorf("synthetic: duration must be > 0, got %v", o.Duration)
	case !(o.CV > 0) || o.CV > 100:
		return fmt.Errorf("synthetic: cv must be in (0, 100], got %v", o.CV)
	case o.Rate*o.Duration.Seconds() > maxSyntheticRequests:
		return fmt.Errorf("synthetic: rate × duration is %.0f requests, more than %d", o.Rate*o.Duration.Seconds(), maxSyntheticRequests)
	}
	for _, d := range []struct {
		name string
		ln   LogNormal
	}{{"input", o.Input}, {"output", o.Output}} {
		if !(d.ln.Mean >= 1) || d.ln.Mean > maxTokens || !(d.ln.SD >= 0) || math.IsInf(d.ln.SD, 0) {
			return fmt.Errorf("synthetic: %s tokens need mean in [1, %d] and sd >= 0, got mean %v sd %v", d.name, maxTokens, d.ln.Mean, d.ln.SD)
		}
	}
	return nil
}

func (o *SyntheticOptions) defaults() {
	if o.CV == 0 {
		o.CV = 1
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Input == (LogNormal{}) {
		o.Input = LogNormal{Mean: 2048, SD: 1024}
	}
	if o.Output == (LogNormal{}) {
		o.Output = LogNormal{Mean: 128, SD: 128}
	}
}

// NewSynthetic validates opts and returns a generator.
func NewSynthetic(opts SyntheticOptions) (*Synthetic, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Synthetic{opts: opts, rng: rand.New(rand.NewPCG(opts.Seed, 0x5eed))}, nil
}

// Next implements Reader.
func (s *Synthetic) Next() (Request, error) {
	if s.count > 0 {
		s.now += s.gap()
	}
	if s.now >= s.opts.Duration || s.count >= maxSyntheticRequests {
		return Request{}, io.EOF
	}
	s.count++
	return Request{
		Offset:       s.now,
		InputTokens:  s.tokens(s.opts.Input),
		OutputTokens: s.tokens(s.opts.Output),
	}, nil
}

// gap draws one inter-arrival gap: gamma with shape 1/CV² and mean 1/Rate.
func (s *Synthetic) gap() time.Duration {
	shape := 1 / (s.opts.CV * s.opts.CV)
	g := gamma(s.rng, shape) / (shape * s.opts.Rate)
	return time.Duration(g * float64(time.Second))
}

func (s *Synthetic) tokens(d LogNormal) int {
	v := d.Mean
	if d.SD > 0 {
		sigma2 := math.Log(1 + (d.SD*d.SD)/(d.Mean*d.Mean))
		mu := math.Log(d.Mean) - sigma2/2
		v = math.Exp(mu + math.Sqrt(sigma2)*s.rng.NormFloat64())
	}
	return int(min(max(math.Round(v), 1), maxTokens))
}

// gamma draws from Gamma(shape, 1) (Marsaglia and Tsang; shape < 1 by boosting).
func gamma(rng *rand.Rand, shape float64) float64 {
	if shape < 1 {
		u := rng.Float64()
		for u == 0 {
			u = rng.Float64()
		}
		return gamma(rng, shape+1) * math.Pow(u, 1/shape)
	}
	d := shape - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for i := 0; i < 1000; i++ { // accepts with probability > 0.95 per try
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
	return shape // the mean: unreachable in practice
}

// ParseSynthetic parses a spec such as
// "rate=20,cv=2,seed=7,input=2048/1024,output=128/64,duration=10m"
// (input/output are mean/sd of a log-normal). duration may instead come from
// defaultDuration.
func ParseSynthetic(spec string, defaultDuration time.Duration) (SyntheticOptions, error) {
	o := SyntheticOptions{Duration: defaultDuration}
	for _, kv := range strings.Split(spec, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return o, fmt.Errorf("synthetic spec: %q is not key=value", kv)
		}
		var err error
		switch strings.TrimSpace(k) {
		case "rate":
			o.Rate, err = strconv.ParseFloat(v, 64)
		case "cv":
			o.CV, err = strconv.ParseFloat(v, 64)
		case "seed":
			o.Seed, err = strconv.ParseUint(v, 10, 64)
		case "duration":
			o.Duration, err = time.ParseDuration(v)
		case "input":
			o.Input, err = parseLogNormal(v)
		case "output":
			o.Output, err = parseLogNormal(v)
		default:
			return o, fmt.Errorf("synthetic spec: unknown key %q (known: rate, cv, seed, duration, input, output)", k)
		}
		if err != nil {
			return o, fmt.Errorf("synthetic spec: %s: %w", k, err)
		}
	}
	return o, o.Validate()
}

func parseLogNormal(s string) (LogNormal, error) {
	m, sd, ok := strings.Cut(s, "/")
	if !ok {
		return LogNormal{}, fmt.Errorf("%q is not MEAN/SD", s)
	}
	mean, err := strconv.ParseFloat(m, 64)
	if err != nil {
		return LogNormal{}, err
	}
	dev, err := strconv.ParseFloat(sd, 64)
	if err != nil {
		return LogNormal{}, err
	}
	return LogNormal{Mean: mean, SD: dev}, nil
}
