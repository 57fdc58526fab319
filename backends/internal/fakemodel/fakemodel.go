// Package fakemodel is the deterministic "model" behind the local fakes of
// managed cloud endpoints (Bedrock, Vertex AI, Azure OpenAI) that the
// adapters' tests start: the answer to a conversation is a fixed sequence of
// words, so a continuation (the conversation plus the text already produced
// as a trailing assistant turn) can be checked against the uncut answer.
// It models no accelerator; the service behaviour under test (signatures,
// tokens, wire encodings, errors) is in the fakes.
package fakemodel

import (
	"context"
	"hash/fnv"
	"strings"
	"time"
)

var words = strings.Fields(`switch yard rail track signal points engine wagon coupling siding
junction freight shunter lever frog ballast sleeper buffer turntable depot
platform gauge brake whistle tender boiler piston crank axle bogie cab lamp`)

// Token is the i-th token of the answer to key: a space and a word.
func Token(key string, i int) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return " " + words[(int(h.Sum32()%997)+7*i)%len(words)]
}

// Answer is tokens [from, from+n) of the answer to key, joined.
func Answer(key string, from, n int) string {
	var b strings.Builder
	for i := from; i < from+n; i++ {
		b.WriteString(Token(key, i))
	}
	return b.String()
}

// Produced is how many tokens of the answer a prefill (a trailing assistant
// turn continued) already holds: one per word.
func Produced(prefill string) int { return len(strings.Fields(prefill)) }

// InputTokens counts a request's input the way the fakes report it: 4 bytes
// a token, at least 1.
func InputTokens(texts ...string) int {
	n := 0
	for _, t := range texts {
		n += len(t)
	}
	return max(1, (n+3)/4)
}

// Generate emits up to maxTokens tokens of the answer to key after what
// prefill holds, one every delay, and stops early when ctx ends or emit
// fails. It returns how many it emitted.
func Generate(ctx context.Context, key, prefill string, maxTokens int, delay time.Duration, emit func(string) error) (int, error) {
	from := Produced(prefill)
	var t *time.Timer
	if delay > 0 {
		t = time.NewTimer(delay)
		defer t.Stop()
	}
	for i := 0; i < maxTokens; i++ {
		if t != nil {
			select {
			case <-ctx.Done():
				return i, ctx.Err()
			case <-t.C:
				t.Reset(delay)
			}
		} else if err := ctx.Err(); err != nil {
			return i, err
		}
		if err := emit(Token(key, from+i)); err != nil {
			return i, err
		}
	}
	return maxTokens, nil
}
