package loadtest

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/stats"

	"github.com/switchyard-dev/switchyard/internal/clock"
)

// Client-side queueing: a call can wait in the client before its request
// leaves — for a free stream on a gRPC connection (the router allows 256 at a
// time per connection; grpc-go keeps the rest waiting inside NewStream), or
// for an HTTP connection. Neither the router nor the generator's scheduling
// lag sees that time, yet it comes out of the call's deadline. The replayer
// measures it: each call's context carries a send mark, the client transport
// sets it when the request's headers go out (SendTimer for gRPC, an
// httptrace hook in OpenAIClient), and the time from the call's start to the
// mark is its client wait.

// sendMark is when one call's request headers left the client. Transports
// may set it from any goroutine; the first mark wins.
type sendMark struct {
	clk clock.Clock
	mu  sync.Mutex
	at  time.Time
	set bool
}

type sendMarkKey struct{}

func withSendMark(ctx context.Context, m *sendMark) context.Context {
	return context.WithValue(ctx, sendMarkKey{}, m)
}

func (m *sendMark) mark() {
	now := m.clk.Now()
	m.mu.Lock()
	if !m.set {
		m.at, m.set = now, true
	}
	m.mu.Unlock()
}

func (m *sendMark) get() (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.at, m.set
}

// MarkSent records, for the replayed call ctx belongs to, that its request
// headers have left the client. Client transports call it; it does nothing
// on a context that carries no mark. Safe for concurrent use.
func MarkSent(ctx context.Context) {
	if m, ok := ctx.Value(sendMarkKey{}).(*sendMark); ok {
		m.mark()
	}
}

// SendTimer returns a gRPC client stats handler (grpc.WithStatsHandler) that
// marks a call sent when its headers are handed to the connection: grpc-go
// reports that (stats.OutHeader) only after the call got one of the
// connection's streams, so the time before it is the call's client wait.
// Connections a replay uses must be dialled with it and ReplayOptions.ClientMarksSend set.
func SendTimer() stats.Handler { return sendTimer{} }

type sendTimer struct{}

func (sendTimer) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (sendTimer) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if h, ok := s.(*stats.OutHeader); ok && h.Client {
		MarkSent(ctx)
	}
}
func (sendTimer) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (sendTimer) HandleConn(context.Context, stats.ConnStats)                       {}
