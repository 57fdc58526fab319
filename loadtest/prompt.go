package loadtest

import (
	"strconv"
	"strings"

	"github.com/switchyard-dev/switchyard/backends"
)

// Prompts synthesises prompt text of an exact token count as the project
// counts tokens (backends.EstimateTokens: four bytes a token). Text is built
// from a fixed word list so it looks like prose to anything that inspects it,
// and each prompt starts with its request number so that prompts do not share
// a prefix by accident. Requests that carry Mooncake hash_ids get one
// deterministic 512-token block per id instead, so requests that share ids
// share a prompt prefix exactly as in the original trace.
//
// A Prompts is safe for concurrent use (it is read-only after NewPrompts).
type Prompts struct {
	filler string // enough prose for the longest prompt
	// salt goes into every request head and block head: runs with
	// different salts share no prompt text, so one run's prompts never
	// find another's in a server's prefix cache.
	salt string
}

// MooncakeBlockTokens is the size of one Mooncake hash_id block.
const MooncakeBlockTokens = 512

var words = strings.Fields(`the router sends each call to the pool that has headroom close to the caller
and when a region runs short at peak the call goes elsewhere before the client sees an error while operators
drain pools set weights and override capacity during a shortage so that clients do not notice`)

// NewPrompts prepares filler text for prompts of up to maxTokens tokens.
func NewPrompts(maxTokens int) *Prompts {
	return &Prompts{filler: prose(0, max(maxTokens, 1)*backends.BytesPerToken)}
}

// Salted returns Prompts whose text carries salt (at most 32 bytes are used).
func (p *Prompts) Salted(salt string) *Prompts {
	if len(salt) > 32 {
		salt = salt[:32]
	}
	return &Prompts{filler: p.filler, salt: salt}
}

// prose returns n bytes of words starting at word seed.
func prose(seed, n int) string {
	var b strings.Builder
	b.Grow(n + 16)
	for i := seed; b.Len() < n; i++ {
		b.WriteString(words[i%len(words)])
		b.WriteByte(' ')
	}
	return b.String()[:n]
}

// Build returns a prompt of exactly tokens tokens (at least 1) for request id.
// tokens must not exceed the maxTokens given to NewPrompts.
func (p *Prompts) Build(id int, tokens int, hashIDs []int64) string {
	tokens = max(tokens, 1)
	n := min(tokens*backends.BytesPerToken, len(p.filler))
	if len(hashIDs) > 0 {
		var b strings.Builder
		b.Grow(n)
		for _, h := range hashIDs {
			if b.Len() >= n {
				break
			}
			b.WriteString(block(h, p.salt))
		}
		if b.Len() < n {
			b.WriteString(p.filler[:n-b.Len()])
		}
		return b.String()[:n]
	}
	head := "[request " + p.salt + strconv.Itoa(id) + "] "
	if len(head) >= n {
		return p.filler[:n]
	}
	return head + p.filler[:n-len(head)]
}

// block is the text of one Mooncake prefix-cache block.
func block(id int64, salt string) string {
	head := "[block " + salt + strconv.FormatInt(id, 10) + "] "
	size := MooncakeBlockTokens * backends.BytesPerToken
	return head + prose(int(uint64(id)%uint64(len(words))), size-len(head))
}
