package openai

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Resolver looks up the addresses of a DNS name (net.Resolver satisfies it).
// It must honour ctx.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// endpoint is one server of the pool.
type endpoint struct {
	name string // host:port, for errors and logs
	base string // URL prefix of the API, e.g. http://10.0.0.7:8000/v1
	root string // scheme://host:port, for /metrics and /health
	// dnsTarget is the dns:/// endpoint this address was resolved from ("" for URLs).
	dnsTarget string

	outstanding atomic.Int64

	mu sync.Mutex
	// coolUntil: the server said 429/503 with a delay; no calls until then.
	coolUntil time.Time
	// downUntil: the last call failed at the connection; others go first.
	downUntil time.Time
	failures  int
	// load from the last successful scrape.
	running, queued int
	saturated       bool // KV cache full: it cannot take more now
	scrapedAt       time.Time
	// slots the server runs at once (option, llama.cpp's /props, or a share of max_concurrent).
	slots      int
	slotsKnown bool
}

func (e *endpoint) cooling(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return now.Before(e.coolUntil)
}

// refuse records a 429/503 delay.
func (e *endpoint) refuse(until time.Time) {
	e.mu.Lock()
	if until.After(e.coolUntil) {
		e.coolUntil = until
	}
	e.mu.Unlock()
}

// failed records a connection-level failure: the endpoint goes to the back
// of the line for a growing while (200 ms doubling to 10 s).
func (e *endpoint) failed(now time.Time) {
	e.mu.Lock()
	e.failures++
	back := min(200*time.Millisecond<<min(e.failures-1, 6), 10*time.Second)
	e.downUntil = now.Add(back)
	e.mu.Unlock()
}

func (e *endpoint) succeeded() {
	e.mu.Lock()
	e.failures, e.downUntil = 0, time.Time{}
	e.mu.Unlock()
}

// endpointSet holds the pool's current endpoints; dns:/// targets are
// re-resolved and the set replaced, keeping the state of endpoints that stay.
type endpointSet struct {
	cfg      *poolConfig
	resolver Resolver
	cur      atomic.Pointer[[]*endpoint]
	next     atomic.Uint64
	mu       sync.Mutex // serialises resolve
}

func newEndpointSet(cfg *poolConfig, r Resolver) *endpointSet {
	s := &endpointSet{cfg: cfg, resolver: r}
	var eps []*endpoint
	for _, t := range cfg.targets {
		if !t.dynamic() {
			eps = append(eps, s.newEndpoint(t.base, t.root, hostOf(t.root)))
		}
	}
	s.cur.Store(&eps)
	return s
}

func hostOf(root string) string {
	if i := len("https://"); len(root) > i && root[:i] == "https://" {
		return root[i:]
	}
	return root[len("http://"):]
}

func (s *endpointSet) newEndpoint(base, root, name string) *endpoint {
	e := &endpoint{base: base, root: root, name: name}
	if s.cfg.slots > 0 {
		e.slots, e.slotsKnown = s.cfg.slots, true
	}
	return e
}

func (s *endpointSet) list() []*endpoint { return *s.cur.Load() }

func (s *endpointSet) dynamic() bool {
	for _, t := range s.cfg.targets {
		if t.dynamic() {
			return true
		}
	}
	return false
}

// resolveTimeout bounds one round of DNS lookups.
const resolveTimeout = 2 * time.Second

// resolve looks every dns:/// target up again. A name that fails to
// resolve keeps its previous addresses (a DNS hiccup must not empty the pool).
func (s *endpointSet) resolve(ctx context.Context) error {
	if !s.dynamic() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	old := map[string]*endpoint{}
	for _, e := range s.list() {
		old[e.name] = e
	}
	var eps []*endpoint
	var firstErr error
	for _, t := range s.cfg.targets {
		if !t.dynamic() {
			if e, ok := old[hostOf(t.root)]; ok {
				eps = append(eps, e)
			}
			continue
		}
		addrs, err := s.resolver.LookupHost(ctx, t.host)
		if err != nil || len(addrs) == 0 {
			if err == nil {
				err = fmt.Errorf("no addresses")
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("resolve %s: %w", t.host, err)
			}
			for _, e := range old { // keep what it resolved to before
				if e.dnsTarget == t.raw {
					eps = append(eps, e)
				}
			}
			continue
		}
		sort.Strings(addrs)
		for _, a := range addrs {
			if net.ParseIP(a) == nil {
				continue // a resolver answering names is ignored, never dialled blindly
			}
			name := net.JoinHostPort(a, t.port)
			if e, ok := old[name]; ok {
				eps = append(eps, e)
				continue
			}
			root := s.cfg.scheme + "://" + name
			e := s.newEndpoint(root+s.cfg.basePath, root, name)
			e.dnsTarget = t.raw
			eps = append(eps, e)
		}
	}
	s.cur.Store(&eps)
	return firstErr
}

// pick chooses the endpoint with the fewest calls outstanding among those
// not refusing calls, preferring ones whose last call did not fail; ties
// rotate. All endpoints cooling down after a 429/503 is a shortage.
//
// With an affinity key (the prompt's leading blocks, affinityKey) it first
// tries the endpoint the key hashes to (rendezvous hashing), so prompts that
// share a prefix meet in one server's prefix cache, as the router's default
// policy does across pools — as long as that endpoint is up, not refusing,
// and its outstanding calls after this one stay within ⌈1.25 × the mean⌉
// (consistent hashing with bounded loads).
func (s *endpointSet) pick(now time.Time, affinity uint64) (*endpoint, error) {
	eps := s.list()
	if len(eps) == 0 {
		return nil, status.Errorf(codes.Unavailable, "pool %s: no endpoint (dns:/// names resolved to nothing yet)", s.cfg.pool)
	}
	if affinity != 0 && len(eps) > 1 {
		var total int64
		for _, e := range eps {
			total += e.outstanding.Load()
		}
		bound := int64(math.Ceil(1.25 * float64(total+1) / float64(len(eps))))
		var best *endpoint
		var top uint64
		for _, e := range eps {
			e.mu.Lock()
			ok := !now.Before(e.coolUntil) && !now.Before(e.downUntil)
			e.mu.Unlock()
			if h := rendezvous(affinity, e.name); ok && e.outstanding.Load()+1 <= bound && (best == nil || h > top) {
				best, top = e, h
			}
		}
		if best != nil {
			return best, nil
		}
	}
	start := int(s.next.Add(1) % uint64(len(eps)))
	var best *endpoint
	bestDown, bestOut := true, int64(0)
	cooling := 0
	for i := range eps {
		e := eps[(start+i)%len(eps)]
		e.mu.Lock()
		cool, down := now.Before(e.coolUntil), now.Before(e.downUntil)
		e.mu.Unlock()
		if cool {
			cooling++
			continue
		}
		out := e.outstanding.Load()
		if best == nil || (bestDown && !down) || (bestDown == down && out < bestOut) {
			best, bestDown, bestOut = e, down, out
		}
	}
	if best == nil {
		return nil, status.Errorf(codes.ResourceExhausted, "pool %s: all %d endpoints asked to retry later (429/503)", s.cfg.pool, cooling)
	}
	return best, nil
}

// load adds the endpoints' reports up into the pool's (backends.Load). An
// endpoint cooling down after a 429/503 has no capacity until the delay
// passes. ok is false when nothing is known (no scrape yet, no refusal).
func (s *endpointSet) load(now time.Time, fresh time.Duration) (backends.Load, bool) {
	eps := s.list()
	var l backends.Load
	known := false
	for _, e := range eps {
		e.mu.Lock()
		cool := now.Before(e.coolUntil)
		scraped := !e.scrapedAt.IsZero() && now.Sub(e.scrapedAt) <= fresh
		running, queued, sat, slots, at := e.running, e.queued, e.saturated, e.slots, e.scrapedAt
		e.mu.Unlock()
		if slots <= 0 {
			slots = max(1, (s.cfg.maxConcurrent+len(eps)-1)/len(eps))
		}
		out := int(e.outstanding.Load())
		switch {
		case cool:
			known = true
			l.Running += max(out, running)
			l.Queued += queued
			if l.At.IsZero() {
				l.At = now
			}
		case scraped:
			known = true
			l.Running += running
			l.Queued += queued
			if queued > 0 || sat {
				l.Capacity += min(running, slots) // it is full: no room beyond what runs
			} else {
				l.Capacity += slots
			}
			if l.At.IsZero() || at.Before(l.At) {
				l.At = at
			}
		default:
			l.Running += out
			l.Capacity += slots
		}
	}
	return l, known
}

// affinityBlockBytes is the prompt span affinityKey hashes: two 512-token
// blocks by the project's estimate (4 bytes a token).
const affinityBlockBytes = 2 * 2048

// affinityKey is the request's key for endpoint affinity: its explicit
// prefix key, else a hash of the first two blocks of its prompt (or of its
// messages, flattened); 0 (none) for prompts shorter than that.
func affinityKey(req *pb.GenerateRequest) uint64 {
	if k := req.GetRouting().GetPrefixKey(); k != "" {
		return maphash.String(affinitySeed, k) | 1
	}
	var h maphash.Hash
	h.SetSeed(affinitySeed)
	n := 0
	write := func(s string) {
		if n < affinityBlockBytes {
			s = s[:min(len(s), affinityBlockBytes-n)]
			h.WriteString(s)
			n += len(s)
		}
	}
	if p := req.GetPrompt(); p != "" {
		write(p)
	} else {
		for _, m := range req.GetMessages() {
			write(m.GetRole())
			write(": ")
			write(m.GetContent())
			write("\n")
		}
	}
	if n < affinityBlockBytes {
		return 0
	}
	return h.Sum64() | 1
}

var affinitySeed = maphash.MakeSeed()

// rendezvous is the highest-random-weight hash of key and name.
func rendezvous(key uint64, name string) uint64 {
	h := maphash.String(affinitySeed, name) ^ key
	// splitmix64's finaliser
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}
