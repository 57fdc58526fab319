package policy

import (
	"math"
	"sync"
	"time"
)

// The default policy's completion model: per pool, learned online from the
// attempts the router reports (Feedback), how long a call takes there:
//
//	completion = TTFT(uncached prompt tokens) + max_tokens × TPOT(batch share)
//
// TTFT = a + b·tokens (queueing inside the pool, the network and prefill, the
// prefill growing with the prompt the cache does not hold); TPOT = c + d·busy,
// the time per output token growing with the share of the pool's batch in use
// when the call joins it (a decode step reads every running sequence's KV
// cache). Both are least-squares fits over exponentially weighted moments, so
// they follow a pool whose speed changes (a slowdown, lost chips). A
// prediction reads TPOT at the batch share the call will decode at on
// average (decodeBusy), which for a long call is more than the share it joins
// at when the batch happens to be smaller than usual.
type perfTable struct {
	mu    sync.RWMutex
	pools map[string]*poolPerf
}

// perfAlpha is the weight of a new sample in the moving moments.
const perfAlpha = 0.05

// minPerfSamples is how many samples a pool needs before its fit is used.
const minPerfSamples = 8

type poolPerf struct {
	mu         sync.Mutex
	ttft, tpot fit
	// life is the moving mean of a call's time in the pool, in seconds:
	// how fast its batch turns over.
	life float64
}

// decodeBusy is the busy share a call that joins the batch at busy decodes
// maxTokens at, on average. The batch it joins does not stay as it is: it
// turns over about once per call lifetime (life) and tends back to the
// pool's usual occupancy (the moving mean of the busy shares calls joined
// at, tpot.mx). Taking the occupancy to relax exponentially, the mean over
// a decode of D seconds is busy + (usual − busy)·(1 − (1 − e^(−x))/x) with
// x = D/life: a short call sees the batch it joined, a long one the usual
// batch. Only a batch smaller than usual is corrected: a long call joining
// a full batch is not promised that it will empty.
func (p *poolPerf) decodeBusy(busy float64, maxTokens int) float64 {
	usual := p.tpot.mx
	if usual <= busy || p.life <= 0 || maxTokens <= 1 {
		return busy
	}
	x := float64(maxTokens-1) * p.tpot.at(busy) / p.life
	if x < 1e-9 {
		return busy
	}
	return busy + (usual-busy)*(1-(1-math.Exp(-x))/x)
}

// fit is a weighted online linear regression y = a + b·x.
type fit struct {
	n                int
	mx, my, mxx, mxy float64
}

func (f *fit) add(x, y float64) {
	if f.n == 0 {
		f.mx, f.my, f.mxx, f.mxy = x, y, x*x, x*y
	} else {
		a := math.Max(perfAlpha, 1/float64(f.n+1))
		f.mx += a * (x - f.mx)
		f.my += a * (y - f.my)
		f.mxx += a * (x*x - f.mxx)
		f.mxy += a * (x*y - f.mxy)
	}
	f.n++
}

// at predicts y at x: the fitted line, its slope kept non-negative (more
// tokens or a fuller batch never make a call faster).
func (f *fit) at(x float64) float64 {
	v := f.mxx - f.mx*f.mx
	b := 0.0
	if v > 1e-12 {
		b = math.Max(0, (f.mxy-f.mx*f.my)/v)
	}
	return math.Max(0, f.my+b*(x-f.mx))
}

// record learns from one successful attempt.
func (t *perfTable) record(r AttemptResult) {
	if r.Outcome != OutcomeOK || r.TTFT <= 0 {
		return
	}
	t.mu.RLock()
	p := t.pools[r.Pool]
	t.mu.RUnlock()
	if p == nil {
		t.mu.Lock()
		if t.pools == nil {
			t.pools = map[string]*poolPerf{}
		}
		if p = t.pools[r.Pool]; p == nil {
			p = &poolPerf{}
			t.pools[r.Pool] = p
		}
		t.mu.Unlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ttft.add(float64(max(0, r.InputTokens-r.CachedTokens)), r.TTFT.Seconds())
	if p.ttft.n == 1 {
		p.life = r.Duration.Seconds()
	} else {
		p.life += math.Max(perfAlpha, 1/float64(p.ttft.n)) * (r.Duration.Seconds() - p.life)
	}
	if r.OutputTokens >= 2 && r.Duration > r.TTFT {
		p.tpot.add(r.Busy, (r.Duration-r.TTFT).Seconds()/float64(r.OutputTokens-1))
	}
}

// prediction is a pool's predicted completion for one call.
type prediction struct {
	ok               bool // the pool has enough samples
	ttft, tpot, done time.Duration
}

// predict is the completion of a call with uncached prompt tokens and
// maxTokens output on pool, joining its batch at busy share.
func (t *perfTable) predict(pool string, uncached, maxTokens int, busy float64) prediction {
	t.mu.RLock()
	p := t.pools[pool]
	t.mu.RUnlock()
	if p == nil {
		return prediction{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ttft.n < minPerfSamples || p.tpot.n < minPerfSamples {
		return prediction{}
	}
	ttft, tpot := p.ttft.at(float64(uncached)), p.tpot.at(p.decodeBusy(busy, maxTokens))
	done := ttft + float64(max(maxTokens-1, 0))*tpot
	return prediction{ok: true, ttft: secs(ttft), tpot: secs(tpot), done: secs(done)}
}

func secs(s float64) time.Duration { return time.Duration(math.Min(s, 1e6) * float64(time.Second)) }

// deadlineMargin: a pool "meets" a deadline when its predicted completion
// fits in this share of the time left (the prediction is an average).
const deadlineMargin = 0.8
