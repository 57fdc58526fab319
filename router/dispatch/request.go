package dispatch

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/router/policy"
)

// Caller is who makes a call, as an edge read it off its own transport: the
// gRPC edge from the call's metadata, the HTTP edges from their headers.
type Caller struct {
	// APIKey is the tenant credential presented (x-api-key, or the token of
	// "authorization: Bearer"); empty when none was sent.
	APIKey string
}

// Request is one admitted call as the core sees it: what routing, capacity
// and accounting need. The call's payload (prompt, messages, sampling) stays
// with the wiring that built the Request, which hands it to the pool's
// backend in the AttemptFunc; the core never reads it.
type Request struct {
	// ID keys the call's reservation with its tenant (NewRequestID when the
	// client sent none; CheckRequestID for one it sent).
	ID string
	// Tenant is the authenticated caller's tenant ("": anonymous).
	Tenant string
	// Model is the fleet's name of the model.
	Model string
	// Routing is what the policy ranks by (Routing.Model is Model).
	Routing policy.Request
	// InputTokens is the router's estimate of the prompt until an attempt
	// succeeds; Run then sets it to the input the client is charged (the
	// serving backend's own count, less a continuation prefix the router
	// re-sent, where it reported one).
	InputTokens int
	// MaxTokens is the output the call may produce (0 for embeddings).
	MaxTokens int32
	// Needs are the optional backend features the call uses.
	Needs Features
	// Operation is the call's gen_ai.operation.name (chat, text_completion,
	// embeddings), for telemetry.
	Operation string
}

// Features are optional backend capabilities a call may need. A pool whose
// backend lacks one is never sent the call: Run skips it, and when no pool
// serving the model is left the call is refused with an InvalidError naming
// the field, so nothing a client asked for is dropped in silence.
type Features uint8

// The features.
const (
	NeedTools Features = 1 << iota
	NeedResponseFormat
	NeedLogprobs
	NeedEmbeddings
	NeedTopK
)

// field names the request field of the first feature in f, for the error.
func (f Features) field() string {
	switch {
	case f&NeedTools != 0:
		return "tools"
	case f&NeedResponseFormat != 0:
		return "response_format"
	case f&NeedLogprobs != 0:
		return "logprobs"
	case f&NeedEmbeddings != 0:
		return "model"
	case f&NeedTopK != 0:
		return "sampling.top_k"
	}
	return ""
}

// what lists the features in f.
func (f Features) what() string {
	var s []string
	for _, x := range []struct {
		f    Features
		name string
	}{{NeedTools, "tools"}, {NeedResponseFormat, "response_format"}, {NeedLogprobs, "logprobs"}, {NeedEmbeddings, "embeddings"}, {NeedTopK, "top_k"}} {
		if f&x.f != 0 {
			s = append(s, x.name)
		}
	}
	return strings.Join(s, ", ")
}

// Route is where a call went.
type Route struct {
	// Policy is the policy that ranked the pools.
	Policy string
	// Attempts is how many pools the call was sent to; PoolsTried names them in order.
	Attempts   int32
	PoolsTried []string
	// Pool, Cloud, Region and Accelerator describe the pool that served the
	// call (empty when none did).
	Pool, Cloud, Region, Accelerator string
}

// Usage is what one attempt's backend reported it processed.
type Usage struct {
	// InputTokens as the server counted the request it was sent (a
	// continuation's text included); 0 when it gave no count.
	InputTokens int32
	// OutputTokens the attempt produced (for a broken stream, those delivered).
	OutputTokens int32
	// CachedInputTokens of the input served from the server's prefix cache.
	CachedInputTokens int32
}

// Stream is what a streamed call delivered to its client so far, kept by the
// edge's AttemptFunc as chunks go out (Delivered) and read by Run to resume
// the stream on another pool. Used by one call's goroutine only.
type Stream struct {
	text   strings.Builder
	tokens int32
	// toolCall: a piece of a tool call reached the client; the stream is
	// never continued on another pool after that.
	toolCall bool
}

// Delivered records a chunk that reached the client.
func (s *Stream) Delivered(text string, tokens int32, toolCall bool) {
	s.text.WriteString(text)
	s.tokens += tokens
	s.toolCall = s.toolCall || toolCall
}

// Tokens is how many tokens reached the client.
func (s *Stream) Tokens() int32 {
	if s == nil {
		return 0
	}
	return s.tokens
}

// Text is the text that reached the client.
func (s *Stream) Text() string { return s.text.String() }

// Resume is what an attempt that continues a broken stream must not repeat.
type Resume struct {
	// Text and Tokens already reached the client from earlier attempts.
	Text   string
	Tokens int32
}

// MaxRequestIDLen bounds client-chosen request ids (they become capacity-store keys).
const MaxRequestIDLen = 128

// NewRequestID mints a request id: 32 hex digits from crypto/rand.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CheckRequestID refuses a client-chosen request id that could not key a
// reservation: longer than MaxRequestIDLen, or holding a space, a line break
// or a brace (Redis Cluster hash-tag syntax). field names it on the edge's
// wire ("request_id", the x-request-id header).
func CheckRequestID(field, id string) error {
	if len(id) > MaxRequestIDLen || strings.ContainsAny(id, "{}\n\r ") {
		return Invalid(field, "at most %d characters, no spaces or braces", MaxRequestIDLen)
	}
	return nil
}

// remaining is the time left before the deadline dl, as the policy reads it
// (at least a nanosecond: a deadline that passed is still a deadline).
func remaining(dl time.Time) time.Duration { return max(time.Until(dl), time.Nanosecond) }
