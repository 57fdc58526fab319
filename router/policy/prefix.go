package policy

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
)

// Prefix keys, after llm-d's prefix-cache scorer: a prompt is cut into
// fixed-size blocks and each block's key hashes the block together with the
// key of the block before it, so two prompts share a key for block i only
// when they share their first i+1 blocks. A router that remembers which pool
// served which keys can then send a prompt where its prefix is likely cached.
const (
	// PrefixBlockBytes is a block's size: 2,048 bytes, 512 tokens by the
	// project's estimate (4 bytes a token) — the block of Mooncake's traces
	// and of the simulator's prefix cache.
	PrefixBlockBytes = 2048
	// MaxPrefixBlocks bounds the blocks hashed per request (64 KiB of prompt):
	// affinity needs the leading blocks, never the whole of a long prompt.
	MaxPrefixBlocks = 32
	// MaxPrefixKeyBytes bounds an explicit prefix key (RoutingHints.prefix_key).
	MaxPrefixKeyBytes = 256
)

var prefixSeed = maphash.MakeSeed()

// PrefixHasher cuts a stream of text into blocks and keeps their chained
// keys. The zero value is ready; Write as many pieces as the prompt has
// (a chat's messages one after another), then Keys.
type PrefixHasher struct {
	h    maphash.Hash
	n    int
	init bool
	keys []uint64
}

// Reset empties the hasher, keeping dst's capacity for the keys.
func (b *PrefixHasher) Reset(dst []uint64) {
	b.keys, b.n, b.init = dst[:0], 0, false
}

// WriteString adds text; only whole blocks get a key.
func (b *PrefixHasher) WriteString(s string) {
	if !b.init {
		b.h.SetSeed(prefixSeed)
		b.init = true
	}
	for len(s) > 0 && len(b.keys) < MaxPrefixBlocks {
		k := min(len(s), PrefixBlockBytes-b.n)
		b.h.WriteString(s[:k])
		b.n += k
		s = s[k:]
		if b.n == PrefixBlockBytes {
			sum := b.h.Sum64()
			b.keys = append(b.keys, sum)
			b.h.Reset()
			var prev [8]byte
			binary.LittleEndian.PutUint64(prev[:], sum)
			b.h.Write(prev[:])
			b.n = 0
		}
	}
}

// Keys returns the keys of the whole blocks written so far.
func (b *PrefixHasher) Keys() []uint64 { return b.keys }

// SessionPrefix is the one key an explicit prefix (session) key stands for:
// calls carrying the same key share it.
func SessionPrefix(key string) uint64 {
	return maphash.String(prefixSeed, "session\x00"+key)
}

// PrefixIndex remembers, per block key, the pools that recently served a
// prompt holding that block: an approximate, bounded picture of each
// pool's prefix cache (it never asks the pools). It holds at most Capacity
// keys, evicting the least recently used, and at most prefixWays pools per
// key (the least recently seen pool gives way). The zero value is ready
// with DefaultPrefixCapacity. Safe for concurrent use.
type PrefixIndex struct {
	// Capacity bounds the keys held (default DefaultPrefixCapacity).
	Capacity int

	mu         sync.Mutex
	m          map[uint64]*prefixEntry
	head, tail *prefixEntry // most recent first
	tick       uint64
}

// DefaultPrefixCapacity is 65,536 keys (each ~100 bytes).
const DefaultPrefixCapacity = 1 << 16

// prefixWays is how many pools one key remembers.
const prefixWays = 4

type prefixEntry struct {
	key        uint64
	pools      [prefixWays]string
	seen       [prefixWays]uint64
	prev, next *prefixEntry
}

// Record notes that pool served a prompt with these leading keys.
func (x *PrefixIndex) Record(keys []uint64, pool string) {
	if len(keys) == 0 || pool == "" {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		x.m = map[uint64]*prefixEntry{}
	}
	capacity := x.Capacity
	if capacity <= 0 {
		capacity = DefaultPrefixCapacity
	}
	x.tick++
	for _, k := range keys {
		e := x.m[k]
		if e == nil {
			if len(x.m) >= capacity {
				old := x.tail
				x.unlink(old)
				delete(x.m, old.key)
			}
			e = &prefixEntry{key: k}
			x.m[k] = e
		} else {
			x.unlink(e)
		}
		x.pushFront(e)
		slot, oldest := -1, 0
		for i := range e.pools {
			if e.pools[i] == pool {
				slot = i
				break
			}
			if e.seen[i] < e.seen[oldest] {
				oldest = i
			}
		}
		if slot < 0 {
			slot = oldest
		}
		e.pools[slot], e.seen[slot] = pool, x.tick
	}
}

// Matched returns how many leading keys pool is remembered to hold.
func (x *PrefixIndex) Matched(keys []uint64, pool string) int {
	if len(keys) == 0 {
		return 0
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for _, k := range keys {
		e := x.m[k]
		if e == nil || !e.holds(pool) {
			break
		}
		n++
	}
	return n
}

// Known reports whether any pool is remembered to hold key.
func (x *PrefixIndex) Known(key uint64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.m[key] != nil
}

// Len is the number of keys held.
func (x *PrefixIndex) Len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.m)
}

func (e *prefixEntry) holds(pool string) bool {
	for i := range e.pools {
		if e.pools[i] == pool && e.seen[i] > 0 {
			return true
		}
	}
	return false
}

func (x *PrefixIndex) unlink(e *prefixEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		x.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		x.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (x *PrefixIndex) pushFront(e *prefixEntry) {
	e.next = x.head
	if x.head != nil {
		x.head.prev = e
	}
	x.head = e
	if x.tail == nil {
		x.tail = e
	}
}
