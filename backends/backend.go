// Package backends defines how the router talks to an accelerator pool: the
// Backend interface and a registry of adapters by name. The adapters live in
// subpackages: native gRPC (backends/grpcnative), OpenAI-compatible HTTP
// model servers and hosted APIs (backends/openai), Amazon Bedrock
// (backends/bedrock), Google Vertex AI (backends/vertex) and the simulated
// accelerator (backends/sim); backends/backendtest is their contract suite.
//
// Import direction: backends may import proto/ and the leaf packages of
// internal/ only; never router/ or loadtest/.
package backends

import (
	"context"
	"errors"
	"fmt"

	"github.com/switchyard-dev/switchyard/internal/registry"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Backend is one pool's serving endpoint(s) as the router sees them.
//
// Implementations must be safe for concurrent use by many goroutines. Calls
// must honour ctx: when it is cancelled or its deadline passes, they return
// promptly with ctx's error (or a gRPC status carrying DEADLINE_EXCEEDED or
// CANCELED). Errors should be gRPC statuses (status.Error) so the router can
// tell client faults (INVALID_ARGUMENT) from pool faults (UNAVAILABLE) and
// from shortages (RESOURCE_EXHAUSTED).
//
// Usage (on a response, on a stream's last chunk) is what the server
// processed: input_tokens as the server counted the request it was sent (a
// continuation's text included), or 0 when the server gave no count (the
// router then charges its own estimate, EstimateInputTokens); never an
// adapter's guess.
type Backend interface {
	// Generate runs one completion.
	Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error)
	// GenerateStream runs one completion and calls send for every chunk in
	// order. The last chunk carries usage and finish reason. When send returns
	// an error the stream stops and that error is returned.
	GenerateStream(ctx context.Context, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error) error
	// Check reports whether the backend can serve now (an active health check).
	// It must not block longer than ctx allows.
	Check(ctx context.Context) error
	// Capabilities says what the adapter supports.
	Capabilities() Capabilities
	// Close releases connections. Calls after Close fail.
	Close() error
}

// Capabilities describes optional features of an adapter. The router never
// sends a pool a request using a feature its adapter lacks: it picks another
// pool, and when none serving the model has it the call is refused with
// INVALID_ARGUMENT naming the field (nothing a client sent is dropped).
type Capabilities struct {
	// Continuation: the backend honours GenerateRequest.continuation, so a
	// stream broken on one pool can resume on another from the tokens sent.
	Continuation bool
	// Tools: tools, tool_choice, parallel_tool_calls, tool turns and
	// assistant tool_calls reach the server, and its tool calls come back.
	Tools bool
	// ResponseFormat: response_format (json_object, json_schema) reaches the server.
	ResponseFormat bool
	// Logprobs: logprobs and top_logprobs reach the server and come back.
	Logprobs bool
	// Embeddings: the backend implements Embedder.
	Embeddings bool
	// NoTopK: the server has no top_k, so sampling.top_k cannot reach it
	// (OpenAI and Azure endpoints, TGI, Ollama). The zero value, for every
	// adapter that does not say, is that top_k is passed on.
	NoTopK bool
}

// Embedder is implemented by backends that serve embeddings. Embed returns
// one embedding per input, in input order; usage holds input_tokens (0 when
// the server gave no count). Errors are gRPC statuses as for Backend.
type Embedder interface {
	Embed(ctx context.Context, req *pb.EmbedRequest) (*pb.EmbedResponse, error)
}

// Spec is what an adapter needs to build a Backend for one pool.
type Spec struct {
	// Pool is the pool's name (for errors and logs).
	Pool string
	// Accelerator, e.g. "h100"; used by the simulated adapter.
	Accelerator string
	// Endpoints are adapter-specific addresses (host:port for grpc).
	Endpoints []string
	// MaxConcurrent is the pool's configured concurrency (the simulator sizes its batch from it).
	MaxConcurrent int
	// Options are adapter-specific settings from the fleet config.
	Options map[string]string
}

// Factory builds a Backend from a Spec. It must not block on the network:
// connections are made lazily.
type Factory func(spec Spec) (Backend, error)

// Registry maps adapter names ("grpc", "sim") to factories. It is safe for
// concurrent use; adapters are registered explicitly by the program that
// wires the router, never from init().
type Registry struct {
	factories *registry.Registry[Factory]
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{factories: registry.New[Factory]("backends: adapter")}
}

// ErrUnknownAdapter is returned by New for a name nobody registered.
var ErrUnknownAdapter = errors.New("unknown backend adapter")

// Register adds an adapter. Registering a name twice is a programming error and panics.
func (r *Registry) Register(name string, f Factory) { r.factories.Register(name, f) }

// New builds a Backend with the named adapter.
func (r *Registry) New(adapter string, spec Spec) (Backend, error) {
	f, ok := r.factories.Get(adapter)
	if !ok {
		return nil, fmt.Errorf("pool %q: %w %q (known: %v)", spec.Pool, ErrUnknownAdapter, adapter, r.Names())
	}
	b, err := f(spec)
	if err != nil {
		return nil, fmt.Errorf("pool %q: adapter %q: %w", spec.Pool, adapter, err)
	}
	return b, nil
}

// Names lists registered adapters, sorted.
func (r *Registry) Names() []string { return r.factories.Names() }
