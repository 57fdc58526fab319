package sim

import (
	"encoding/binary"
	"hash/maphash"
	"sync"

	"github.com/switchyard-dev/switchyard/backends"
)

// Prefix caching, as vLLM's automatic prefix caching and llama.cpp's prompt
// cache do it: the prompt is cut into blocks, each block keyed by a hash of
// its bytes chained with the key of the block before it (so a key stands for
// the whole prefix up to it); a pool keeps a bounded LRU of the blocks it
// computed, and a new prompt's prefill is charged only for the tokens after
// its longest run of cached leading blocks. The count is reported as
// Usage.cached_input_tokens (usage.prompt_tokens_details.cached_tokens over
// HTTP).
const (
	// CacheBlockTokens is a cache block: 512 tokens (Mooncake's block, and
	// the router's prefix-key block), 2,048 bytes by backends.EstimateTokens.
	CacheBlockTokens = 512
	cacheBlockBytes  = CacheBlockTokens * backends.BytesPerToken
	// maxCacheBlocksPerCall bounds the blocks one prompt is hashed into (128K tokens).
	maxCacheBlocksPerCall = 256
	// DefaultCacheBlocksPerSlot sizes a pool's cache by default:
	// MaxBatch × 64 blocks (48 sequences → 3,072 blocks, 1.5M tokens).
	DefaultCacheBlocksPerSlot = 64
)

var cacheSeed = maphash.MakeSeed()

// blockKeys returns the chained keys of text's whole blocks (at most
// maxCacheBlocksPerCall).
func blockKeys(text string) []uint64 {
	n := min(len(text)/cacheBlockBytes, maxCacheBlocksPerCall)
	if n == 0 {
		return nil
	}
	keys := make([]uint64, n)
	var h maphash.Hash
	h.SetSeed(cacheSeed)
	var prev [8]byte
	for i := range n {
		h.Reset()
		h.Write(prev[:])
		h.WriteString(text[i*cacheBlockBytes : (i+1)*cacheBlockBytes])
		keys[i] = h.Sum64()
		binary.LittleEndian.PutUint64(prev[:], keys[i])
	}
	return keys
}

// prefixCache is one pool's bounded LRU of computed blocks. Safe for
// concurrent use.
type prefixCache struct {
	mu         sync.Mutex
	capacity   int
	m          map[uint64]*cacheBlock
	head, tail *cacheBlock // most recently used first
}

type cacheBlock struct {
	key        uint64
	prev, next *cacheBlock
}

func newPrefixCache(capacity int) *prefixCache {
	if capacity <= 0 {
		return nil
	}
	return &prefixCache{capacity: capacity, m: map[uint64]*cacheBlock{}}
}

// use returns how many leading blocks of keys were cached, then makes every
// block of keys the most recently used (the prefill computes the missing ones).
func (c *prefixCache) use(keys []uint64) int {
	if c == nil || len(keys) == 0 {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	hit := 0
	for hit < len(keys) && c.m[keys[hit]] != nil {
		hit++
	}
	for _, k := range keys {
		b := c.m[k]
		if b != nil {
			c.unlink(b)
		} else {
			if len(c.m) >= c.capacity {
				old := c.tail
				c.unlink(old)
				delete(c.m, old.key)
			}
			b = &cacheBlock{key: k}
			c.m[k] = b
		}
		c.pushFront(b)
	}
	return hit
}

// len is the number of blocks held.
func (c *prefixCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

func (c *prefixCache) unlink(b *cacheBlock) {
	if b.prev != nil {
		b.prev.next = b.next
	} else {
		c.head = b.next
	}
	if b.next != nil {
		b.next.prev = b.prev
	} else {
		c.tail = b.prev
	}
	b.prev, b.next = nil, nil
}

func (c *prefixCache) pushFront(b *cacheBlock) {
	b.next = c.head
	if c.head != nil {
		c.head.prev = b
	}
	c.head = b
	if c.tail == nil {
		c.tail = b
	}
}
