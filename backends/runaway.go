package backends

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxTokenBytes is the most bytes of text one output token is taken to
// carry when an adapter counts tokens as they arrive: a delta of n bytes
// counts as at least ceil(n / MaxTokenBytes) tokens, so a backend cannot
// send unbounded text under a small token count. Real tokenizers' tokens
// are a few bytes (the longest are runs of whitespace or punctuation).
const MaxTokenBytes = 64

// DeltaTokens is the tokens one streamed delta of n bytes counts for: one
// (servers send one token per event), or more for a delta longer than
// MaxTokenBytes.
func DeltaTokens(n int) int32 {
	if n <= MaxTokenBytes {
		return 1
	}
	return int32(min((n+MaxTokenBytes-1)/MaxTokenBytes, 1<<30))
}

// RunawayError is an adapter's refusal of a backend answer that exceeded
// what the call allows: more bytes than its max_tokens can produce, or an
// event larger than any one token's. It is UNAVAILABLE (a pool fault, so
// the router tries another pool) and the router records the pool as
// misbehaving (switchyard.backend.overruns, and a warning in the log).
type RunawayError struct {
	// Pool is the pool's name (the router's wrapping names it in messages).
	Pool      string
	MaxTokens int32
	// What was exceeded, e.g. "stream of 98304 bytes".
	What string
}

func (e *RunawayError) Error() string {
	return fmt.Sprintf("backend sent a %s for max_tokens %d (it does not honour max_tokens)", e.What, e.MaxTokens)
}

// GRPCStatus makes the error an UNAVAILABLE status.
func (e *RunawayError) GRPCStatus() *status.Status { return status.New(codes.Unavailable, e.Error()) }
